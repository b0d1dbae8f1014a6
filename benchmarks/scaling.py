"""DiT's scaling result on MNIST: sample quality against total training compute, per model shape.

    python benchmarks/scaling.py                          # 6 shapes x 3 budgets, about an hour
    python benchmarks/scaling.py --budgets 3 --shapes p7-w64-d2 p7-w96-d4    # a part of it
    python benchmarks/scaling.py --plot-only              # redraw images/scaling.png from the CSV

DiT (Peebles & Xie 2023, Figures 2 and 8) found that at equal training compute a model with more
GFLOPs per image reaches a lower FID: compute spent on a bigger model beats the same compute spent
on more steps of a smaller one. This script asks the same of MNIST on a CPU. Each shape trains from
scratch for each compute budget (total training GFLOPs = GFLOPs per image, forward and backward,
from the shapes as `train_throughput.model_flops_per_image` counts them, times the images seen),
with the default recipe and its full cosine decay over that length; then its EMA draws 1,000 digits
(100 of each, with the sampler settings its checkpoint carries, seed 0; the rows of
benchmarks/scaling.csv were trained at lr 4e-3 and drawn with DDIM, 50 steps, eta 1, guidance 1.6,
the defaults of then: rerun them all before comparing new rows with them) and `common.MnistJudge`
gives MNIST-FD and class accuracy. Each run is `python train.py` with the shape's flags, in a
process of its own.

The compute is counted, not timed: wall time on a shared CPU says little, and the question is
about FLOPs. Rows go to --out (a CSV) as each run finishes; a run already in the CSV is skipped, so an
interrupted study resumes where it stopped. The plot (images/scaling.png): MNIST-FD against total
training GFLOPs, one line per shape, coloured by GFLOPs per image.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from common import MnistJudge, load_model, run_train  # beside this file in benchmarks/
from csv_rows import append_row, read_rows

# name -> (patch, width, depth, heads): patch 7 and 4, widths 64 to 192, depths 2 to 6; the
# default is p7-w96-d4. Heads keep a head width of 16 to 32.
SHAPES = {
    "p7-w64-d2": (7, 64, 2, 4),
    "p7-w96-d4": (7, 96, 4, 4),
    "p7-w128-d4": (7, 128, 4, 4),
    "p7-w192-d6": (7, 192, 6, 6),
    "p4-w64-d4": (4, 64, 4, 4),
    "p4-w96-d4": (4, 96, 4, 4),
}
FIELDS = ["shape", "patch", "width", "depth", "params", "gflop_per_image", "budget_tflop", "steps",
          "images", "total_gflop", "mnist_fd", "class_accuracy"]


def run_one(name: str, budget_tflop: float, args, judge: MnistJudge) -> dict:
    """Train one shape for one compute budget, then sample and score it."""
    import torch

    from config import ModelConfig
    from diffusion import GaussianDiffusion
    from dit import DiT
    from support.sampling import class_labels, generate
    from train_throughput import model_flops_per_image

    patch, width, depth, heads = SHAPES[name]
    flops = model_flops_per_image(ModelConfig(patch_size=patch, hidden_size=width, depth=depth,
                                              num_heads=heads))
    batch = 64  # the default's batch: the budget sets the steps, not the batch
    steps = max(1, round(budget_tflop * 1e12 / (flops * batch)))
    out = Path(args.out_dir) / f"{name}_{budget_tflop:g}tflop"
    status = run_train(["--out-dir", str(out), "--overwrite", "--max-steps", str(steps),
                         "--patch-size", str(patch), "--hidden-size", str(width), "--depth",
                         str(depth), "--num-heads", str(heads), "--batch-size", str(batch),
                         "--sample-every", str(10**9), "--device", "cpu",
                         *(["--data-dir", args.data_dir] if args.data_dir else [])])
    if status != 0:
        sys.exit(f"training {name} at {budget_tflop:g} TFLOP failed with status {status}")
    model, cfg = load_model(out / "model.pth")
    diffusion = GaussianDiffusion.from_config(cfg.diffusion)
    labels = class_labels(cfg.model.num_classes, args.num // cfg.model.num_classes)
    g = torch.Generator().manual_seed(0)
    images = torch.cat([generate(model, diffusion, chunk, cfg, g) for chunk in labels.split(250)])
    scores = judge.score(images, labels)
    return {"shape": name, "patch": patch, "width": width, "depth": depth,
            "params": sum(p.numel() for p in DiT(cfg.model).parameters()),  # not the weak one
            "gflop_per_image": round(flops / 1e9, 5), "budget_tflop": budget_tflop,
            "steps": steps, "images": steps * batch, "total_gflop": round(steps * batch * flops / 1e9),
            "mnist_fd": round(scores["mnist_fd"], 2), "class_accuracy": round(scores["class_accuracy"], 4)}


def plot(rows: list[dict], path: Path) -> None:
    """MNIST-FD against total training GFLOPs (both log scales), one line per shape."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    per_image = {r["shape"]: float(r["gflop_per_image"]) for r in rows}
    low, high = min(per_image.values()), max(per_image.values())
    cmap = plt.get_cmap("viridis")
    for shape in sorted(per_image, key=per_image.get):
        pts = sorted((float(r["total_gflop"]), float(r["mnist_fd"])) for r in rows
                     if r["shape"] == shape)
        shade = 0.5 if high == low else (per_image[shape] - low) / (high - low)
        ax.plot(*zip(*pts), "o-", color=cmap(0.9 * shade),
                label=f"{shape} ({1e3 * per_image[shape]:.0f} MFLOP/img)")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("total training compute (GFLOPs, forward + backward)")
    ax.set_ylabel("MNIST-FD, 1,000 samples (lower is better)")
    ax.set_title("MNIST-FD against training compute, per model shape", fontsize=10)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--shapes", nargs="+", default=list(SHAPES), choices=list(SHAPES))
    p.add_argument("--budgets", nargs="+", type=float, default=[1.5, 3.0, 6.0],
                   help="training compute per run, in TFLOPs (default: 1.5 3 6)")
    p.add_argument("--num", type=int, default=1000, help="samples scored per run")
    p.add_argument("--out", default="benchmarks/scaling.csv", help="the CSV, one row per run")
    p.add_argument("--out-dir", default="runs/scaling", help="holds one run folder per row")
    p.add_argument("--plot", default="images/scaling.png")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--plot-only", action="store_true", help="redraw the plot from the CSV")
    args = p.parse_args()

    out = Path(args.out)
    rows = read_rows(out)
    if not args.plot_only:
        judge = MnistJudge(args.data_dir)
        done = {(r["shape"], float(r["budget_tflop"])) for r in rows}
        for budget in sorted(args.budgets):  # the cheapest runs of every shape first
            for name in args.shapes:
                if (name, budget) in done:
                    continue
                row = run_one(name, budget, args, judge)
                append_row(out, FIELDS, row)  # appended: two parts may run at once
                print(row, flush=True)
        rows = read_rows(out)  # with the rows that other parts wrote meanwhile
    plot(rows, Path(args.plot))
    print(f"table: {out}; plot: {args.plot}")


if __name__ == "__main__":
    main()
