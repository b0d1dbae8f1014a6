"""The latent preset's autoencoder, measured: latent shape, KL weight and width (issue 22).

    python benchmarks/latent_shapes.py                                 # every trial, ~20 CPU min
    python benchmarks/latent_shapes.py --trials c4-kl1e-3 c2-kl1e-3    # some of them

Each trial trains `autoencoder.train_autoencoder` on the 60,000 training digits with the preset's
settings but one changed (one epoch each), then reports: its training time, the mean squared
error of the 10,000 test digits through it (pixels in [-1, 1]), the scale factor, the median
posterior sigma (how much noise the KL term keeps in each latent), and the MNIST-FD and class
accuracy of the reconstructions of 1,000 training digits (100 of each) beside the score of those
1,000 digits themselves: the decoder's best, and so the floor of a latent DiT that uses it.
Rows are appended to --csv as they finish; a trial already in it is skipped.
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from pathlib import Path

from common import MnistJudge  # beside this file in benchmarks/
from csv_rows import append_row, read_rows

# name -> the fields of AutoencoderConfig that differ from the preset's
TRIALS = {
    "c4-kl1e-3": {},  # the preset: 4 x 8 x 8, KL weight 1e-3, width 32
    "c2-kl1e-3": {"latent_channels": 2},
    "c8-kl1e-3": {"latent_channels": 8},
    "c4-kl1e-4": {"kl_weight": 1e-4},
    "c4-kl1e-2": {"kl_weight": 1e-2},
    "c4-kl1e-3-w16": {"channels": 16},
}
FIELDS = ["trial", "latent_channels", "latent_dims", "kl_weight", "channels", "params", "train_s",
          "test_mse", "scale_factor", "median_sigma", "recon_mnist_fd", "recon_accuracy",
          "real_mnist_fd"]


def balanced(labels, per_class: int = 100):
    """Indices of the first per_class training digits of each class (1,000 for MNIST)."""
    import torch

    return torch.cat([(labels == k).nonzero()[:per_class, 0] for k in range(10)])


def run_trial(name: str, images, labels, test_images, judge: MnistJudge) -> dict:
    import torch

    from autoencoder import encode_images, train_autoencoder
    from config import get_preset
    from dataset import to_model_range

    cfg = dataclasses.replace(get_preset("latent").autoencoder, **TRIALS[name])
    started = time.time()
    model, _ = train_autoencoder(images, cfg, torch.device("cpu"), seed=0)
    seconds = time.time() - started
    with torch.no_grad():
        x = to_model_range(test_images)
        test_mse = (model.to_pixels(encode_images(model, test_images)) - x).pow(2).mean().item()
        sigma = torch.cat([model.encode(chunk)[1].mul(0.5).exp().flatten()
                           for chunk in x.split(1000)]).median().item()
        idx = balanced(labels)
        recon = model.to_pixels(encode_images(model, images[idx]))
    scores = judge.score(recon, labels[idx])
    real = judge.score(images[idx], labels[idx])
    return {"trial": name, "latent_channels": cfg.latent_channels,
            "latent_dims": cfg.latent_channels * 64, "kl_weight": cfg.kl_weight,
            "channels": cfg.channels, "params": sum(p.numel() for p in model.parameters()),
            "train_s": round(seconds, 1), "test_mse": round(test_mse, 5),
            "scale_factor": round(model.scale_factor.item(), 4), "median_sigma": round(sigma, 4),
            "recon_mnist_fd": round(scores["mnist_fd"], 2),
            "recon_accuracy": round(scores["class_accuracy"], 3),
            "real_mnist_fd": round(real["mnist_fd"], 2)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--trials", nargs="+", default=list(TRIALS), choices=list(TRIALS))
    p.add_argument("--csv", default="benchmarks/latent_shapes.csv")
    p.add_argument("--data-dir", default=None)
    args = p.parse_args()

    from dataset import load_mnist, resolve_data_dir

    data_dir = resolve_data_dir(args.data_dir)
    images, labels = load_mnist(data_dir, train=True)
    test_images, _ = load_mnist(data_dir, train=False)
    judge = MnistJudge(args.data_dir)
    path = Path(args.csv)
    done = {r["trial"] for r in read_rows(path)}
    for name in args.trials:
        if name in done:
            continue
        row = run_trial(name, images, labels, test_images, judge)
        print(row, flush=True)
        append_row(path, FIELDS, row)


if __name__ == "__main__":
    main()
