"""The floor of the scores: real MNIST training digits scored as if they were generated.

    python benchmarks/fid_floor.py    # MNIST-FD, precision, recall, class accuracy at 1,000 and 10,000
    python benchmarks/fid_floor.py --sizes 1000 --through pretrained/latent/model.pth
    python benchmarks/fid_floor.py --sizes 1000 --classes 0 1 2 3 4   # a set with half the kinds

A perfect generator would draw digits exactly like the training set. Its scores against the test
set are not 0: the two sets are different samples, and the Frechet distance estimated from a
finite sample is biased upwards, the more so the fewer the images. So this is what "as good as it
gets" looks like at each size, and generated sets must be compared with the floor at their size.
Draws `--sizes` training digits at random (three seeds each) and scores them in memory with
common.MnistJudge against the MNIST test set, labels from the training set; precision and recall
compare them with groups of as many test digits, as support/mnist_classifier.mnist_scores does for
generated digits (manifold.precision_recall_in_groups), and the recall is also given per digit of
the test digits (a dash for a digit the real set lacks). With `--through` a latent model's
checkpoint, the same digits are also scored after its autoencoder (encoded, then decoded): the floor
of that latent DiT, which can draw no better than its decoder gives back. With `--classes`, the
digits are drawn from those classes only: real digits, all labelled right, that lack the other
kinds, as a model that draws only some shapes would; precision and class accuracy should hold and
recall fall.
(For the Inception FID floor, export training digits as <index>_<label>.png files and pass their
folder to `fid_computer.py --fake`.)
"""

from __future__ import annotations

import argparse
from pathlib import Path

from common import MnistJudge, load_decoder  # beside this file in benchmarks/


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--data-dir", default=None)
    p.add_argument("--through", default=None, metavar="CHECKPOINT",
                   help="a latent model's checkpoint: score the digits through its autoencoder too")
    p.add_argument("--classes", type=int, nargs="+", default=list(range(10)), choices=range(10),
                   metavar="DIGIT",
                   help="draw the training digits from these classes only (default: all ten)")
    args = p.parse_args(argv)

    import torch

    from autoencoder import encode_images
    from dataset import load_mnist, resolve_data_dir

    decoder = None
    if args.through:
        if not Path(args.through).is_file():
            raise SystemExit(f"no checkpoint at {args.through}: --through needs a latent model's "
                             "checkpoint, such as pretrained/latent/model.pth")
        decoder = load_decoder(args.through)
        if decoder is None:
            raise SystemExit(f"{args.through} is a model of pixels: --through needs a latent "
                             "model's checkpoint (train.py --preset latent)")
    images, labels = load_mnist(resolve_data_dir(args.data_dir), train=True)
    kept = torch.isin(labels, torch.tensor(args.classes))
    images, labels = images[kept], labels[kept]
    if max(args.sizes) > len(images):
        raise SystemExit(f"--sizes {max(args.sizes)}: the classes {args.classes} hold only "
                         f"{len(images)} training digits; pass smaller --sizes")
    judge = MnistJudge(args.data_dir)
    print("| training digits | seed | MNIST-FD | precision | recall | class accuracy | "
          "recall per digit, 0-9 |")
    print("|---|---|---|---|---|---|---|")
    for n in args.sizes:
        for seed in args.seeds:
            idx = torch.randperm(len(images), generator=torch.Generator().manual_seed(seed))[:n]
            sets = {"real": images[idx]}
            if decoder is not None:  # encoded with a draw of its own noise, then decoded
                with torch.no_grad():
                    sets["autoencoded"] = decoder.to_pixels(encode_images(decoder, images[idx],
                                                                          seed=seed))
            for name, digits in sets.items():
                s = judge.score(digits, labels[idx])
                split = s.get("per_class_recall") or {}
                per_digit = " ".join(f"{split[k]:.2f}" if k in split else "-" for k in range(10))
                print(f"| {n:,} {name} | {seed} | {s['mnist_fd']:.2f} | {s['precision']:.3f} | "
                      f"{s['recall']:.3f} | {s['class_accuracy']:.4f} | {per_digit} |", flush=True)


if __name__ == "__main__":
    main()
