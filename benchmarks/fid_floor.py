"""The floor of the scores: real MNIST training digits scored as if they were generated.

    python benchmarks/fid_floor.py          # MNIST-FD and class accuracy at 1,000 and 10,000 images

A perfect generator would draw digits exactly like the training set. Its scores against the test
set are not 0: the two sets are different samples, and the Frechet distance estimated from a
finite sample is biased upwards, the more so the fewer the images. So this is what "as good as it
gets" looks like at each size, and generated sets must be compared with the floor at their size.
Draws `--sizes` training digits at random (three seeds each) and scores them in memory with
fid_computer.mnist_scores against the test set in images/real, labels from the training set.
(For the Inception FID floor, export training digits as <index>_<label>.png files and pass their
folder to `fid_computer.py --fake`.)
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--data-dir", default=None)
    args = p.parse_args()

    import torch

    import fid_computer as fc
    from dataset import load_mnist, resolve_data_dir
    from mnist_classifier import load_classifier

    data_dir = resolve_data_dir(args.data_dir)
    images, labels = load_mnist(data_dir, train=True)
    classifier = load_classifier(data_dir)
    print("| real training digits | seed | MNIST-FD | class accuracy |")
    print("|---|---|---|---|")
    for n in args.sizes:
        for seed in args.seeds:
            idx = torch.randperm(len(images), generator=torch.Generator().manual_seed(seed))[:n]
            s = fc.mnist_scores(images[idx], labels[idx], data_dir=data_dir, classifier=classifier)
            row = f"| {n:,} | {seed} | {s['mnist_fd']:.2f} | {s['class_accuracy']:.4f} |"
            print(row, flush=True)


if __name__ == "__main__":
    main()
