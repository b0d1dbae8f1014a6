"""Time to quality: train for fixed wall-clock budgets and score 1,000 samples after each.

    python benchmarks/time_to_quality.py                         # cpu preset, 5 10 15 30 minutes
    python benchmarks/time_to_quality.py --budgets 5 10 --out-dir runs/ttq -- --lr 3e-3

One training run, continued budget after budget with `train.py --resume --time-limit`: resuming
is exact (tested), so the checkpoint after the 10-minute budget is what a single 10-minute run
would have written, up to where the clock stops it (the step count varies a little from run to
run with the machine's load). The budgets count training time only (sample grids during training are
turned off here); sampling and scoring happen between budgets, off the clock. After each budget
the EMA model draws `--num` digits (the same number of each, the checkpoint's default sampler and
guidance, a fixed seed) and fid_computer.mnist_scores scores them in memory: MNIST-FD (Frechet
distance of the MNIST classifier's penultimate features to the MNIST test set) and class accuracy
(the share of digits that the classifier reads as the digit asked for).

Arguments after `--` go to train.py unchanged (preset overrides, for instance).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def main() -> None:
    argv = sys.argv[1:]
    extra = argv[argv.index("--") + 1:] if "--" in argv else []
    argv = argv[: argv.index("--")] if "--" in argv else argv
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--preset", default="cpu")
    p.add_argument("--budgets", type=float, nargs="+", default=[5, 10, 15, 30], help="minutes")
    p.add_argument("--out-dir", default="runs/time_to_quality")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--num", type=int, default=1000, help="samples scored after each budget")
    p.add_argument("--seed", type=int, default=0, help="sampling seed")
    p.add_argument("--device", default=None)
    args = p.parse_args(argv)

    import torch

    from config import pick_device

    import train
    from checkpoint import load_model, use_bf16
    from diffusion import GaussianDiffusion
    from fid_computer import mnist_scores
    from inference import class_labels, generate
    from mnist_classifier import load_classifier

    device = pick_device(args.device)
    ckpt = Path(args.out_dir) / train.CHECKPOINT_NAME
    classifier = load_classifier(args.data_dir, device)
    data_flags = ["--data-dir", args.data_dir] if args.data_dir else []
    rows = []
    for i, budget in enumerate(sorted(args.budgets)):
        flags = ["--preset", args.preset, "--out-dir", args.out_dir, "--time-limit", str(budget),
                 "--max-steps", str(10**9), "--sample-every", str(10**9),
                 "--device", str(device), *data_flags, *extra]
        # The first budget starts afresh; the others continue it (the config flags are repeated:
        # train.py accepts them on --resume as long as they agree with the checkpoint).
        flags += ["--resume"] if i > 0 else (["--overwrite"] if ckpt.exists() else [])
        status = train.main(flags)
        if status != 0:
            sys.exit(f"training failed with status {status}")

        state = torch.load(ckpt, map_location="cpu", weights_only=True)
        model, cfg = load_model(ckpt, device)
        diffusion = GaussianDiffusion.from_config(cfg.diffusion)
        labels = class_labels(cfg.model.num_classes, args.num // cfg.model.num_classes, device)
        g = torch.Generator(device).manual_seed(args.seed)
        t = time.perf_counter()
        bf16 = use_bf16("auto", device)
        images = torch.cat([generate(model, diffusion, chunk, cfg, g, bf16=bf16)
                            for chunk in labels.split(250)])  # 250 at a time: bounded memory
        sample_sec = time.perf_counter() - t
        scores = mnist_scores(images, labels.cpu(), data_dir=args.data_dir, device=device,
                              classifier=classifier)
        rows.append((budget, state["step"], state["step"] * cfg.train.batch_size,
                     state["train_seconds"], scores["mnist_fd"], scores["class_accuracy"], sample_sec,
                     f"{cfg.sample.sampler}-{cfg.sample.steps}, cfg {cfg.sample.cfg_scale}"))
        print(f"budget {budget:g} min: MNIST-FD {scores['mnist_fd']:.2f}, "
              f"class accuracy {scores['class_accuracy']:.3f}", flush=True)

    print(f"\ndevice: {device} | preset {args.preset} {' '.join(extra)} | {args.num} samples each")
    print("| budget (min) | steps | images seen | train s | MNIST-FD | class accuracy | sampling s | sampler |")
    print("|---|---|---|---|---|---|---|---|")
    for budget, step, seen, sec, fd, acc, ssec, sampler in rows:
        print(f"| {budget:g} | {step} | {seen:,} | {sec:.0f} | {fd:.2f} | {acc:.3f} | {ssec:.0f} | {sampler} |")


if __name__ == "__main__":
    main()
