"""The latent preset against the pixel default, measured side by side on one machine (issue 22).

    python benchmarks/latent_vs_pixel.py                      # both presets, seeds 1 and 2
    python benchmarks/latent_vs_pixel.py --presets latent --seeds 2

Each run is what a reader types, timed from the outside: `python train.py --preset P --seed S`
(for the latent preset the wall time includes training the autoencoder and encoding the digits),
then `python inference.py --num-per-class 100` (1,000 digits, the checkpoint's own sampler,
timed: images/s of sampling, the decoder included), then `python fid_computer.py --metric mnist`
(MNIST-FD, precision, recall and class accuracy). The commands run one after another, each with
the machine to itself. A row is appended to --csv as each pair of commands finishes; a (preset,
seed) already in it is skipped, so an interrupted study resumes. The presets of issue 22, before
the pixel default's recipe changed, are in benchmarks/latent_vs_pixel_issue22.csv.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import time
from pathlib import Path

from common import ROOT  # beside this file in benchmarks/; puts the project on the path
from csv_rows import append_row, read_rows

FIELDS = ["preset", "seed", "train_wall_s", "autoencoder_s", "train_images_per_s", "dit_params",
          "autoencoder_params", "sample_images_per_s", "mnist_fd", "precision", "recall",
          "class_accuracy"]


def timed(command: list[str], log: Path) -> tuple[float, str]:
    """Run a command from the project root with its output in `log`; (wall seconds, output)."""
    started = time.time()
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    seconds = time.time() - started
    log.write_text(result.stdout + result.stderr)
    if result.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed ({result.returncode}); see {log}")
    return seconds, result.stdout


# what fid_computer.py --metric mnist prints, one score a line
SCORES = {"mnist_fd": r"(?m)^MNIST-FD: ([\d.]+)", "precision": r"(?m)^precision: ([\d.]+)",
          "recall": r"(?m)^recall: ([\d.]+)", "class_accuracy": r"(?m)^class accuracy: ([\d.]+)"}


def found(pattern: str, text: str) -> float:
    """The first number captured by `pattern` in a command's output (nan if absent)."""
    match = re.search(pattern, text)
    return float(match.group(1)) if match else float("nan")


def run_one(preset: str, seed: int, args) -> dict:
    from support.checkpoint import read_checkpoint

    out = Path(args.out_dir) / f"{preset}-seed{seed}"
    python = sys.executable
    train_s, text = timed([python, "train.py", "--preset", preset, "--seed", str(seed),
                           "--out-dir", str(out), "--overwrite", *args.train_flags],
                          out.with_suffix(".train.log"))
    ckpt = read_checkpoint(out / "model.pth")
    sample_s, _ = timed([python, "inference.py", "--checkpoint", str(out / "model.pth"),
                         "--num-per-class", str(args.per_class), "--out-dir", str(out / "fake")],
                        out.with_suffix(".sample.log"))
    _, scores = timed([python, "fid_computer.py", "--metric", "mnist", "--fake", str(out / "fake")],
                      out.with_suffix(".score.log"))
    return {"preset": preset, "seed": seed, "train_wall_s": round(train_s, 1),
            "autoencoder_s": found(r"autoencoder: trained in (\d+) s", text) if preset == "latent" else 0,
            "train_images_per_s": found(r"\((\d+) images/s\)", text),
            "dit_params": sum(v.numel() for v in ckpt["ema"].values()),
            "autoencoder_params": sum(v.numel() for k, v in ckpt.get("autoencoder", {}).items()
                                      if k != "scale_factor"),
            "sample_images_per_s": round(10 * args.per_class / sample_s, 1),
            **{name: found(pattern, scores) for name, pattern in SCORES.items()}}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--presets", nargs="+", default=["cpu", "latent"])
    p.add_argument("--seeds", nargs="+", type=int, default=[1, 2],
                   help="seed 0 tuned both presets' guidance, so the study leaves it out")
    p.add_argument("--per-class", type=int, default=100, help="samples per digit scored")
    p.add_argument("--out-dir", default="runs/compare")
    p.add_argument("--csv", default="benchmarks/latent_vs_pixel.csv")
    p.add_argument("--train-flags", nargs=argparse.REMAINDER, default=[],
                   help="passed on to train.py (last on the line)")
    args = p.parse_args()
    Path(args.out_dir).mkdir(parents=True, exist_ok=True)
    path = Path(args.csv)
    done = {(r["preset"], int(r["seed"])) for r in read_rows(path)}
    for seed in args.seeds:
        for preset in args.presets:
            if (preset, seed) in done:
                continue
            row = run_one(preset, seed, args)
            print(row, flush=True)
            append_row(path, FIELDS, row)


if __name__ == "__main__":
    main()
