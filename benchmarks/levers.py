"""Levers: switch one training choice of the default off (or move it), train, and score.

    python benchmarks/levers.py                          # every lever, 1,000 steps each (~50 min)
    python benchmarks/levers.py --levers default 'no min-SNR' --steps 500

Each lever is a short run of the default preset with one flag changed, trained for the same
number of optimiser steps (no sample grids during training, one at the end), then scored like the
sampler study: `--num` digits (the same number of each, DDIM 50 steps, the checkpoint's guidance
4, seed 0) drawn by the EMA weights and scored by the MNIST classifier (MNIST-FD and class
accuracy) in benchmarks/sampler_study.py. Every row is the pair of commands

    python train.py --max-steps STEPS --sample-every 1000000000 --out-dir OUT/SLUG --overwrite FLAGS
    python benchmarks/sampler_study.py --checkpoint OUT/SLUG/model.pth --samplers ddim --steps 50
        --num NUM --out OUT/SLUG/sweep.csv

each in a process of its own (SLUG is the lever's name with underscores for spaces, e.g.
runs/levers/no_min-SNR), so a row can be rerun by hand. One training seed per row: the `seed 1` row
(the default with another seed) shows how far two runs of the same recipe land apart, which is the
yardstick for the other differences.
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

import common  # beside this file in benchmarks/

# name -> (train.py flags, what the row changes). The default first: every other row is read
# against it and against "seed 1".
LEVERS = {
    "default": ([], "the default recipe (min-SNR, lr 6e-3 from the first step with cosine "
                    "decay, EMA with warm-up)"),
    "seed 1": (["--seed", "1"], "the default with another training seed: the run-to-run spread"),
    "no min-SNR": (["--min-snr-gamma", "0"], "plain noise MSE instead of min-SNR weighting"),
    "lr warm-up": (["--warmup-steps", "200"], "the rate ramps up linearly over the first 200 steps"),
    "lr 2e-3": (["--lr", "2e-3"], "a third of the learning rate"),
    "lr 8e-3": (["--lr", "8e-3"], "4/3 of the learning rate"),
    "constant lr": (["--no-lr-decay"], "no decay: the peak rate to the last step, as in DiT"),
    "no EMA": (["--ema-decay", "0"], "sample from the raw weights"),
    "EMA without warm-up": (["--no-ema-warmup"], "EMA decay 0.9999 from the first step, as in DiT"),
}


def slug(name: str) -> str:
    """A folder name for a lever: 'no min-SNR' -> 'no_min-SNR'."""
    return name.replace(" ", "_")


class LeverFailed(Exception):
    """A run stopped: training or scoring returned a non-zero status."""


def run_lever(name: str, steps: int, num: int, out_dir: Path, data_flags: list[str]) -> dict:
    """Train and score one lever; the scores as a dict (the sweep CSV's one row)."""
    flags, _ = LEVERS[name]
    run_dir = out_dir / slug(name)
    status = common.run_train(["--max-steps", str(steps), "--sample-every", str(10**9), "--out-dir",
                         str(run_dir), "--overwrite", *data_flags, *flags])
    if status != 0:
        raise LeverFailed(f"training '{name}' " + ("was interrupted" if status == 130
                                                   else f"failed with status {status}"))
    csv_path = run_dir / "sweep.csv"
    status = common.run_script("benchmarks/sampler_study.py",
                               ["--checkpoint", str(run_dir / "model.pth"), "--samplers", "ddim",
                                "--steps", "50", "--num", str(num), "--out", str(csv_path),
                                *data_flags])
    if status != 0:
        raise LeverFailed(f"scoring '{name}' failed with status {status}")
    with open(csv_path, newline="") as f:
        return next(csv.DictReader(f))


def print_table(rows: list[tuple[str, dict]], steps: int, num: int) -> None:
    print(f"\nlevers: {steps} steps each, {num} samples, DDIM 50 steps, the default guidance, seed 0")
    print("| run | train.py flags | MNIST-FD | class accuracy | what it changes |")
    print("|---|---|---|---|---|")
    for name, scores in rows:
        flags, what = LEVERS[name]
        print(f"| {name} | `{' '.join(flags) or '(none)'}` | {float(scores['mnist_fd']):.1f} "
              f"| {float(scores['class_accuracy']):.3f} | {what} |")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--levers", nargs="+", choices=list(LEVERS), default=list(LEVERS),
                   metavar="NAME", help="which rows, quoted: " + ", ".join(f"'{n}'" for n in LEVERS))
    p.add_argument("--steps", type=int, default=1000, help="optimiser steps per run")
    p.add_argument("--num", type=int, default=500, help="samples scored per run")
    p.add_argument("--out-dir", default="runs/levers", help="one folder per lever inside")
    p.add_argument("--data-dir", default=None, help="folder holding MNIST/raw/ (as for train.py)")
    args = p.parse_args(argv)
    # Checked before the first run, not after minutes of training.
    if args.steps <= 0:
        p.error(f"--steps must be positive, got {args.steps}")
    from support.mnist_classifier import MnistClassifier
    least = MnistClassifier.FEATURE_DIMS + 1  # fewer images give a singular feature covariance
    least = -(-least // 10) * 10  # and the same number of each of the 10 digits
    if args.num < least or args.num % 10:
        p.error(f"--num must be a multiple of 10 (as many images of each digit) and at least {least} "
                f"(MNIST-FD's covariance needs more images than features), got {args.num}")
    data_flags = ["--data-dir", args.data_dir] if args.data_dir else []

    rows = []
    try:
        for name in dict.fromkeys(args.levers):  # each lever once, in the order given
            rows.append((name, run_lever(name, args.steps, args.num, Path(args.out_dir), data_flags)))
    except LeverFailed as e:
        print_table(rows, args.steps, args.num)  # what was measured before the failure
        print(f"error: {e}; the rows above are complete", file=sys.stderr)
        return 1
    print_table(rows, args.steps, args.num)
    return 0


if __name__ == "__main__":
    sys.exit(main())
