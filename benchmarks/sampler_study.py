"""The sampler study: MNIST-FD, class accuracy, precision, recall and time of every sampler at
several step counts.

    python benchmarks/sampler_study.py --checkpoint runs/default/model.pth     # ~50 min on 2 cores
    python benchmarks/sampler_study.py --checkpoint runs/default/model.pth --amp off \
        --samplers plms dpm-solver++ --steps 20 50 --out runs/default/sweep_fp32.csv

DDPM runs once, at all T steps (it has no other); DDIM, PLMS and DPM-Solver++ run at each of
`--steps`. Every row samples the same `--num` digits (the same number of each, the same seed, so
the same starting noise) with the checkpoint's guidance unless `--cfg-scale` is given (DDIM at
`--eta`, 0 unless given, so that it is deterministic like PLMS and DPM-Solver++; with
`--guidance-interval`, guided only for t inside it; guided away from the checkpoint's own early
weights as `inference.py` samples, or from `--autoguide`'s model), times the sampling, and scores
the images
in memory with common.MnistJudge (MNIST-FD against the MNIST test set, and class accuracy). With
several `--seed`s each row draws its digits once per seed and reports the mean, since 1,000 digits
score a few MNIST-FD apart from one draw of the noise to the next (benchmarks/README.md, "Variety
and the default"). Writes a CSV (one row per sampler and step
count, with the recall of each digit as `fid_computer.py` splits it, as digit:recall pairs;
rewritten after every row, so an interrupted study keeps what it measured) and, beside it,
a two-panel plot of both scores against the steps (default: sweep.csv and sweep.png beside the
checkpoint).

The network runs under the project's bf16 policy (`--amp`, support.cli.use_bf16); bf16 rounds each
noise prediction to about 3 significant digits, which PLMS, combining four of them with large
coefficients, turns into visible differences: use `--amp off` to compare samplers closely.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import sys
import time
from pathlib import Path

from common import MnistJudge, load_decoder, load_model  # beside this file in benchmarks/

SWEEP_STEPS = (5, 10, 20, 50, 100, 250)  # the step counts for DDIM, PLMS and DPM-Solver++
SWEEP_NUM = 1000  # images per row: 100 per digit, well above the 129 that MNIST-FD needs
COLUMNS = ["sampler", "steps", "num_images", "mnist_fd", "class_accuracy", "seconds", "bf16", "eta",
           "precision", "recall", "cfg_scale", "guidance_t_min", "guidance_t_max", "seeds",
           "mnist_fd_per_seed", "autoguide", "autoguide_scale", "recall_per_digit"]
SCORES = ["mnist_fd", "class_accuracy", "precision", "recall"]  # per draw, averaged over --seed


def build_parser() -> argparse.ArgumentParser:
    from config import SAMPLERS
    from support.cli import AMP_CHOICES, AMP_HELP

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", default="runs/default/model.pth",
                   help="the trained model (default: %(default)s)")
    p.add_argument("--num", type=int, default=SWEEP_NUM,
                   help="images per row, the same number of each digit (default: %(default)s)")
    p.add_argument("--steps", type=int, nargs="+", default=list(SWEEP_STEPS),
                   help="step counts of DDIM, PLMS and DPM-Solver++; DDPM always takes all T "
                        "(default: %(default)s)")
    p.add_argument("--samplers", nargs="+", choices=SAMPLERS, default=list(SAMPLERS),
                   help="default: all")
    p.add_argument("--cfg-scale", type=float, default=None,
                   help="guidance scale, 1 = none (default: the checkpoint's)")
    p.add_argument("--guidance-interval", type=int, nargs=2, metavar=("T_MIN", "T_MAX"),
                   default=None,
                   help="guide only while T_MIN <= t <= T_MAX, the plain conditional model "
                        "elsewhere (Kynkaanniemi et al. 2024; default: guidance at every t)")
    p.add_argument("--autoguide", metavar="CHECKPOINT", default=None,
                   help="a weaker model of the same data (fewer steps, or smaller) to guide away "
                        "from, as Karras et al. 2024 do (dit.Autoguided; default: the "
                        "checkpoint's own early EMA, if it keeps one)")
    p.add_argument("--autoguide-scale", type=float, default=None,
                   help="autoguidance W: 1 = none (default: the checkpoint's)")
    p.add_argument("--eta", type=float, default=0.0,
                   help="DDIM's noise: 0 = deterministic, as the other samplers, so the study "
                        "compares the ODE samplers; 0.7 = the presets' sampling (default: 0)")
    p.add_argument("--amp", choices=AMP_CHOICES, default="auto",
                   help=AMP_HELP)
    p.add_argument("--seed", "--seeds", dest="seeds", type=int, nargs="+", default=[0],
                   help="seeds of the sampling noise, the same for every row; with several, each "
                        "row is the mean of one draw per seed (its seconds the mean per draw): the "
                        "draw alone moves the MNIST-FD of 1,000 digits by up to about 3 "
                        "(default: 0)")
    p.add_argument("--out", default=None, help="CSV path, the plot beside it as .png "
                   "(default: sweep.csv beside a checkpoint in runs/, else runs/sweep/sweep.csv)")
    p.add_argument("--batch-size", type=int, default=100,
                   help="images sampled at once (default: 100, as the study was measured)")
    p.add_argument("--device", default=None, help="cuda or cpu (default: cuda when present)")
    p.add_argument("--data-dir", default=None,
                   help="folder holding MNIST/raw/ and the classifier "
                        "(default: $DIT_DATA_DIR or ./data)")
    return p


class GuidedInInterval:
    """A model whose guidance acts only while t_min <= t <= t_max: the guided noise prediction
    inside the interval, the plain conditional one (scale 1) outside it. Kynkaanniemi et al. 2024
    ("Applying guidance in a limited interval improves sample and distribution quality") found
    guidance harmful at the noisiest steps, where it fixes the layout, and useless at the cleanest.
    Wraps the model for the samplers, which only call `forward_with_cfg`."""

    def __init__(self, model, t_min: int, t_max: int):
        self.model, self.t_min, self.t_max = model, t_min, t_max

    def forward_with_cfg(self, x, t, y, cfg_scale: float):
        inside = self.t_min <= int(t[0]) <= self.t_max  # every image of a batch is at the same t
        return self.model.forward_with_cfg(x, t, y, cfg_scale if inside else 1.0)


def load_weak_model(path: str, cfg, device):
    """The --autoguide model, which must denoise the same images on the same noise schedule."""
    from support.cli import UserError

    if not Path(path).is_file():
        raise UserError(f"--autoguide {path}: no such checkpoint; pass the model.pth of a weaker "
                        "run (fewer steps, or one that train.py --keep-every kept)")
    weak, weak_cfg = load_model(path, device, autoguided=False)  # its plain EMA
    task = [(c.model.image_size, c.model.in_channels, c.model.num_classes, c.autoencoder is None,
             c.diffusion) for c in (weak_cfg, cfg)]
    if task[0] != task[1]:
        raise UserError(f"--autoguide {path} is not a model of the same images and noise schedule "
                        "as --checkpoint: pass a weaker run of the same preset (fewer steps, or "
                        "a smaller --hidden-size or --depth)")
    return weak


def sweep(args: argparse.Namespace) -> Path:
    """Sample, time and score every row; returns the CSV's path."""
    import torch

    from diffusion import GaussianDiffusion
    from dit import Autoguided, with_autoguidance
    from support.checkpoint import outputs_dir
    from support.cli import UserError, out_of_memory_as_error, pick_device, use_bf16
    from support.frechet import check_enough_images
    from support.mnist_classifier import MnistClassifier
    from support.sampling import class_labels, generate

    device = pick_device(args.device)
    checkpoint = Path(args.checkpoint)
    # None keeps the checkpoint's settings; with --autoguide, the plain EMA, guided below
    model, cfg = load_model(checkpoint, device, autoguided=args.autoguide is None,
                            cfg_scale=args.cfg_scale, autoguide_scale=args.autoguide_scale)
    classes, T = cfg.model.num_classes, cfg.diffusion.num_timesteps
    if args.num <= 0 or args.num % classes:
        raise UserError(f"--num must be a positive multiple of {classes}, so that every digit gets "
                        f"as many images, got {args.num}")
    if args.batch_size <= 0:
        raise UserError(f"--batch-size must be positive, got {args.batch_size}")
    if len(set(args.seeds)) < len(args.seeds):
        raise UserError(f"--seed was given a seed twice ({' '.join(map(str, args.seeds))}): the "
                        "same draw would count twice in the mean; pass each seed once")
    check_enough_images(args.num, MnistClassifier.FEATURE_DIMS, f"--num {args.num}", "MNIST-FD",
                        "pass a larger --num")
    interval = args.guidance_interval or [0, T - 1]
    if not 0 <= interval[0] <= interval[1] <= T - 1:
        raise UserError(f"--guidance-interval must be two timesteps 0 <= T_MIN <= T_MAX <= "
                        f"{T - 1}, got {interval[0]} {interval[1]}")
    if args.autoguide is not None:  # another weak model than the checkpoint's own
        model = with_autoguidance(model, load_weak_model(args.autoguide, cfg, device),
                                  cfg.sample.autoguide_scale)
    elif args.autoguide_scale not in (None, 1.0) and not isinstance(model, Autoguided):
        raise UserError(f"--autoguide-scale: {checkpoint} keeps no weak model to guide away from; "
                        "pass one with --autoguide CHECKPOINT")
    autoguide_scale = cfg.sample.autoguide_scale if isinstance(model, Autoguided) else 1.0
    weak_name = (args.autoguide or "its own early EMA") if autoguide_scale != 1.0 else ""
    sampled = model  # the interval, if any, bounds classifier-free guidance only
    if args.guidance_interval is not None:
        sampled = GuidedInInterval(sampled, *interval)
    runs = [(sampler, T if sampler == "ddpm" else steps) for sampler in args.samplers
            for steps in ([T] if sampler == "ddpm" else args.steps)]
    for sampler, steps in runs:  # every bad setting fails now, not after an hour
        dataclasses.replace(cfg.sample, sampler=sampler, steps=steps, eta=args.eta).check(T)
    out = Path(args.out) if args.out else outputs_dir(checkpoint, "sweep") / "sweep.csv"
    out.parent.mkdir(parents=True, exist_ok=True)
    judge = MnistJudge(args.data_dir, device)
    decoder = load_decoder(checkpoint, device)  # a latent model's samples are latents
    diffusion = GaussianDiffusion.from_config(cfg.diffusion)
    labels = class_labels(classes, args.num // classes, device)
    bf16 = use_bf16(args.amp, device)
    autoguided = f", autoguidance {autoguide_scale} from {weak_name}" if weak_name else ""
    print(f"device: {device} | sampler study on {checkpoint}: {args.num} images per row, guidance "
          f"{cfg.sample.cfg_scale} for t in [{interval[0]}, {interval[1]}]{autoguided}, seed "
          f"{' '.join(map(str, args.seeds))}, bf16 {'on' if bf16 else 'off'}")

    rows = []
    for sampler, steps in runs:
        cfg.sample = dataclasses.replace(cfg.sample, sampler=sampler, steps=steps, eta=args.eta)
        draws, seconds = [], 0.0
        for seed in args.seeds:
            g = torch.Generator(device).manual_seed(seed)
            start = time.perf_counter()
            with out_of_memory_as_error(f"sampling ran out of memory on {device}: pass a smaller "
                                        "--batch-size"):
                images = torch.cat([generate(sampled, diffusion, chunk, cfg, g, bf16=bf16,
                                             autoencoder=decoder)
                                    for chunk in labels.split(args.batch_size)])
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            seconds += time.perf_counter() - start
            draws.append(judge.score(images, labels))
            if len(args.seeds) > 1:
                print(f"{'seed ' + str(seed):>19}: " + score_line(draws[-1]), flush=True)
        scores = {k: sum(d[k] for d in draws) / len(draws) for k in SCORES}
        # every draw is compared with the same test digits, so each holds the same digits
        per_digit = {c: sum(d["per_class_recall"][c] for d in draws) / len(draws)
                     for c in draws[0]["per_class_recall"]}
        seconds /= len(draws)  # per draw of --num digits
        rows.append({"sampler": sampler, "steps": steps, "num_images": args.num,
                     **{key: round(scores[key], 4) for key in SCORES},
                     "seconds": round(seconds, 2), "bf16": bf16, "eta": args.eta,
                     "cfg_scale": cfg.sample.cfg_scale,
                     "guidance_t_min": interval[0], "guidance_t_max": interval[1],
                     "seeds": " ".join(map(str, args.seeds)),
                     "mnist_fd_per_seed": " ".join(f"{d['mnist_fd']:.4f}" for d in draws),
                     "autoguide": weak_name,
                     "autoguide_scale": autoguide_scale,
                     "recall_per_digit": " ".join(f"{c}:{r:.3f}" for c, r in per_digit.items())})
        mean = "mean: " if len(args.seeds) > 1 else ""
        print(f"{sampler:>13} {steps:>5} steps: {mean}{score_line(scores)}  {seconds:7.1f} s",
              flush=True)
        write_sweep(rows, out)  # after every row: an interrupted study keeps what it measured
    return out


def score_line(scores: dict) -> str:
    """One draw's (or the mean's) four scores, as every printed row shows them."""
    return (f"MNIST-FD {scores['mnist_fd']:8.3f}  precision {scores['precision']:.3f}  recall "
            f"{scores['recall']:.3f}  class accuracy {scores['class_accuracy']:.4f}")


def write_rows(f, rows: list[dict]) -> None:
    writer = csv.DictWriter(f, fieldnames=COLUMNS)
    writer.writeheader()
    writer.writerows(rows)


def write_sweep(rows: list[dict], out: Path) -> None:
    """The study as a CSV and a two-panel plot: MNIST-FD and class accuracy against steps, one
    line per sampler, DDPM's single point drawn as a horizontal reference line."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from support.checkpoint import atomic_write

    atomic_write(out, lambda f: write_rows(f, rows), text=True)
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    for ax, key, label in [(axes[0], "mnist_fd", "MNIST-FD (lower is better)"),
                           (axes[1], "class_accuracy", "class accuracy")]:
        for sampler in dict.fromkeys(r["sampler"] for r in rows):
            pts = [(r["steps"], r[key]) for r in rows if r["sampler"] == sampler]
            if sampler == "ddpm":
                ax.axhline(pts[0][1], color="gray", ls="--", label=f"DDPM, {pts[0][0]} steps")
            else:
                ax.plot(*zip(*pts), marker="o", label=sampler)
        ax.set_xscale("log")
        ax.set_xlabel("sampling steps")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    axes[0].set_yscale("log")
    axes[1].legend(fontsize=8)
    draws = len(rows[0]["seeds"].split())
    fig.suptitle(f"samplers compared on {rows[0]['num_images']} images each"
                 + (f", the mean of {draws} draws" if draws > 1 else ""), fontsize=10)
    fig.tight_layout()
    fig.savefig(out.with_suffix(".png"), dpi=100)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    from support.cli import UserError

    args = build_parser().parse_args(argv)
    try:
        out = sweep(args)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"sweep: {out} and {out.with_suffix('.png')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
