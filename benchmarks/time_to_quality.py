"""Time to quality: train runs of several lengths and score 1,000 samples of each.

    python benchmarks/time_to_quality.py                       # cpu preset, 2 4 8 16 epochs
    python benchmarks/time_to_quality.py --epochs 2 4 --out-dir runs/ttq -- --lr 3e-3

Each length is its own run from scratch (`train.py --epochs N`), not a checkpoint of one long run:
the default's learning rate decays to zero at the run's last step, so a 4-epoch run ends
differently from the first 4 epochs of an 8-epoch one. The table gives each run's training time
(the loop's clock, without start-up, sample grids or scoring), then its EMA model draws `--num`
digits (the same number of each, the checkpoint's default sampler and guidance, a fixed seed)
and common.MnistJudge scores them in memory: MNIST-FD (Frechet distance of the MNIST
classifier's penultimate features to the MNIST test set) and class accuracy (the share of
digits that the classifier reads as the digit asked for).

A run whose checkpoint already reached its length is scored again, not retrained (so a finished
`python train.py` can be copied in as the default's row). Arguments after `--` go to train.py
unchanged (preset overrides, for instance).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from common import MnistJudge, guidance_label, load_model, run_train  # beside this file


def main() -> None:
    argv = sys.argv[1:]
    extra = argv[argv.index("--") + 1:] if "--" in argv else []
    argv = argv[: argv.index("--")] if "--" in argv else argv
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--preset", default="cpu")
    p.add_argument("--epochs", type=int, nargs="+", default=[2, 4, 8, 16],
                   help="the length of each run, in passes over the training set")
    p.add_argument("--out-dir", default="runs/time_to_quality", help="holds one folder per run")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--num", type=int, default=1000, help="samples scored after each run")
    p.add_argument("--seed", type=int, default=0, help="sampling seed")
    p.add_argument("--device", default=None)
    args = p.parse_args(argv)

    import torch

    from autoencoder import autoencoder_of
    from diffusion import GaussianDiffusion
    from support.cli import pick_device, use_bf16
    from support.sampling import class_labels, generate

    device = pick_device(args.device)
    judge = MnistJudge(args.data_dir, device)
    data_flags = ["--data-dir", args.data_dir] if args.data_dir else []
    rows = []
    for epochs in sorted(args.epochs):
        out = Path(args.out_dir) / f"epochs_{epochs}"
        ckpt = out / "model.pth"
        flags = ["--preset", args.preset, "--out-dir", str(out), "--epochs", str(epochs),
                 "--sample-every", str(10**9), "--device", str(device), *data_flags, *extra]
        # --resume finishes an interrupted run and leaves a finished one as it is.
        status = run_train(flags + (["--resume"] if ckpt.exists() else []))
        if status != 0:
            sys.exit(f"training failed with status {status}")

        state = torch.load(ckpt, map_location="cpu", weights_only=True)
        model, cfg = load_model(ckpt, device)
        diffusion = GaussianDiffusion.from_config(cfg.diffusion)
        labels = class_labels(cfg.model.num_classes, args.num // cfg.model.num_classes, device)
        # None for pixels; the latent preset's decoder, from the checkpoint already read above
        decoder = autoencoder_of(state, cfg.autoencoder, ckpt, device)
        g = torch.Generator(device).manual_seed(args.seed)
        t = time.perf_counter()
        bf16 = use_bf16("auto", device)
        images = torch.cat([generate(model, diffusion, chunk, cfg, g, bf16=bf16,
                                     autoencoder=decoder)
                            for chunk in labels.split(250)])  # 250 at a time: bounded memory
        sample_sec = time.perf_counter() - t
        scores = judge.score(images, labels)
        s = cfg.sample
        eta = f" eta {s.eta:g}" if s.sampler == "ddim" else ""  # DDIM alone takes eta
        rows.append((epochs, state["step"], state["step"] * cfg.train.batch_size,
                     state["train_seconds"], scores["mnist_fd"], scores["class_accuracy"], sample_sec,
                     f"{s.sampler}-{s.steps}{eta}, {guidance_label(model, cfg)}"))
        print(f"{epochs} epochs: MNIST-FD {scores['mnist_fd']:.2f}, "
              f"class accuracy {scores['class_accuracy']:.3f}", flush=True)

    print(f"\ndevice: {device} | preset {args.preset} {' '.join(extra)} | {args.num} samples each")
    print("| epochs | steps | images seen | train s | MNIST-FD | class accuracy | sampling s | sampler |")
    print("|---|---|---|---|---|---|---|---|")
    for epochs, step, seen, sec, fd, acc, ssec, sampler in rows:
        print(f"| {epochs} | {step:,} | {seen:,} | {sec:.0f} | {fd:.2f} | {acc:.3f} | {ssec:.0f} | {sampler} |")


if __name__ == "__main__":
    main()
