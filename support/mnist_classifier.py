"""A small MNIST classifier: the feature network of MNIST-FD and the judge of class accuracy.

fid_computer.py compares generated digits with the test set in the 128-dim penultimate features of
this network (MNIST-FD) and asks it which digit each image shows (class accuracy); the benchmarks
do the same in memory (`mnist_scores`). It is trained once on the MNIST training set, in about a
minute on a CPU, to about 99% test accuracy (benchmarks/README.md, "The MNIST classifier"), and
kept as `<data dir>/mnist_classifier.pth`, next to the digits it learnt from.

A Frechet distance in the features of a domain classifier instead of Inception is TF-GAN's
"Frechet classifier distance"; asking a trained classifier about conditional samples is the idea
of the Inception Score (Salimans et al. 2016, arXiv:1606.03498).
"""

from __future__ import annotations

import pickle
import time
import zipfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from tqdm.auto import tqdm

from support.checkpoint import keep_or_warn
from support.cli import UserError
from support.frechet import feature_statistics, frechet_distance
from support.manifold import K, precision_recall_in_groups
from support.schedule import half_cosine

CLASSIFIER_FILE = "mnist_classifier.pth"  # in the data directory, next to the digits it learnt from


@dataclass
class ClassifierConfig:
    epochs: int = 5  # fewer passes left test accuracy measurably lower (benchmarks/README.md,
    #                  "The MNIST classifier")
    batch_size: int = 128  # small batches: many Adam steps per epoch
    lr: float = 2e-3  # Adam, cosine-decayed to 0: the decay buys the last few tenths of a percent
    seed: int = 0  # the same weights on every run, so MNIST-FD numbers compare across runs


class MnistClassifier(nn.Module):
    """A small LeNet-like CNN for 28 x 28 digits in [-1, 1]:
    conv3x3(16) - pool - conv3x3(32) - pool - fc(128) - fc(10), with BatchNorm and dropout.
    `features` is the 128-dim penultimate layer that MNIST-FD compares.

    16 and 32 channels: twice as many reached the same accuracy in twice the time."""

    FEATURE_DIMS = 128

    def __init__(self, num_classes: int = 10):
        super().__init__()
        self.conv = nn.Sequential(
            nn.Conv2d(1, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
            nn.MaxPool2d(2),  # (B, 16, 14, 14)
            nn.Conv2d(16, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(),
            nn.MaxPool2d(2),  # (B, 32, 7, 7)
        )
        self.fc1 = nn.Linear(32 * 7 * 7, self.FEATURE_DIMS)
        self.fc2 = nn.Linear(self.FEATURE_DIMS, num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 1, 28, 28) in [-1, 1] -> (B, 128). Taken before the ReLU: after it, a unit that
        never fires on digits (a third of them did in a first version) has zero variance, and
        the covariance would be singular."""
        h = self.conv(x).flatten(1)  # (B, 32 * 7 * 7)
        return self.fc1(F.dropout(h, 0.25, self.training))

    def head(self, features: torch.Tensor) -> torch.Tensor:
        """(B, 128) features -> logits (B, num_classes)."""
        return self.fc2(F.dropout(F.relu(features), 0.5, self.training))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 1, 28, 28) -> logits (B, num_classes)."""
        return self.head(self.features(x))


def to_input(pixels: torch.Tensor) -> torch.Tensor:
    """uint8 digits (B, 28, 28) in 0..255 -> float (B, 1, 28, 28) in [-1, 1], the classifier's
    input: the range the DiT sees too (dataset.to_model_range), written out here because the
    classifier's weights are tied to it, whatever the model's convention becomes."""
    return pixels.unsqueeze(1).float().div(127.5).sub(1.0)


@torch.no_grad()
def classify(model: MnistClassifier, pixels: torch.Tensor, batch_size: int = 500,
             device: torch.device | str = "cpu") -> tuple[np.ndarray, torch.Tensor]:
    """uint8 (N, 28, 28) -> features float64 (N, 128) and predicted digits int64 (N,)."""
    model.eval()
    feats, preds = [], []
    for start in range(0, len(pixels), batch_size):
        x = to_input(pixels[start : start + batch_size].to(device))  # (b, 1, 28, 28)
        f = model.features(x)
        feats.append(f.double().cpu())
        preds.append(model.head(f).argmax(dim=1).cpu())
    return torch.cat(feats).numpy(), torch.cat(preds)


def train_classifier(images: torch.Tensor, labels: torch.Tensor, test_images: torch.Tensor,
                     test_labels: torch.Tensor, device: torch.device | str = "cpu",
                     cfg: ClassifierConfig | None = None,
                     progress: bool = True) -> tuple[MnistClassifier, float]:
    """Train on uint8 digits (N, 28, 28) and their labels (N,) with Adam, the rate decayed along
    a half cosine; returns the model and its accuracy on the test digits. Each epoch's order is
    a permutation drawn from (seed, epoch) alone, in the same way as dataset.InMemoryBatches."""
    cfg = cfg or ClassifierConfig()
    device = torch.device(device)
    images, labels = images.to(device), labels.to(device)
    batch_size = min(cfg.batch_size, len(images))
    steps_per_epoch = len(images) // batch_size  # the last, incomplete batch is dropped
    total = cfg.epochs * steps_per_epoch
    # Our own RNG stream for the initial weights and dropout: the caller's is left untouched.
    with torch.random.fork_rng(devices=[device.index or 0] if device.type == "cuda" else []):
        torch.manual_seed(cfg.seed)
        model = MnistClassifier().to(device)
        optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr)
        model.train()
        step = 0
        with tqdm(total=total, desc="MNIST classifier", unit="step", disable=not progress) as bar:
            for epoch in range(cfg.epochs):
                g = torch.Generator().manual_seed(cfg.seed * 1_000_003 + epoch)
                order = torch.randperm(len(images), generator=g).to(device)
                for i in range(steps_per_epoch):
                    idx = order[i * batch_size : (i + 1) * batch_size]
                    x, y = to_input(images[idx]), labels[idx]  # (B, 1, 28, 28) in [-1, 1], (B,)
                    for group in optimizer.param_groups:
                        group["lr"] = cfg.lr * half_cosine(step / total)
                    loss = F.cross_entropy(model(x), y)
                    optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                    optimizer.step()
                    step += 1
                    bar.update(1)
                    if step % 50 == 0:
                        bar.set_postfix(loss=f"{loss.item():.3f}")
    _, preds = classify(model, test_images, device=device)
    accuracy = (preds == test_labels).float().mean().item()
    return model.eval(), accuracy


def load_classifier(data_dir: str | Path, load_mnist: Callable, device: torch.device | str = "cpu",
                    progress: bool = True) -> MnistClassifier:
    """The MNIST classifier kept in <data_dir>/mnist_classifier.pth; trained and saved first
    when the file is missing (once; about a minute on a CPU), on the digits that
    load_mnist(data_dir, train) returns (dataset.load_mnist)."""
    path = Path(data_dir) / CLASSIFIER_FILE
    model = MnistClassifier()
    if not path.is_file():
        print(f"training the MNIST classifier for MNIST-FD (once; kept at {path})")
        t0 = time.time()
        model, accuracy = train_classifier(*load_mnist(data_dir, train=True),
                                           *load_mnist(data_dir, train=False), device,
                                           progress=progress)
        state = {"model": {k: v.cpu() for k, v in model.state_dict().items()},
                 "test_accuracy": accuracy, "config": asdict(ClassifierConfig())}
        print(f"MNIST classifier: test accuracy {accuracy:.4f}, trained in "
              f"{time.time() - t0:.0f} s")
        keep_or_warn(path, lambda f: torch.save(state, f), "the MNIST classifier",
                     "it will be trained again next time: make that folder writable")
        return model.to(device).eval()
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        model.load_state_dict(state["model"])
    except (pickle.UnpicklingError, RuntimeError, EOFError, zipfile.BadZipFile, OSError,
            ValueError, KeyError, TypeError) as e:
        raise UserError(f"{path} is not an intact MNIST classifier of this version "
                        f"({type(e).__name__}): delete it and run again to retrain it") from None
    return model.to(device).eval()


# ----------------------------------------------------------------------------- the scores in memory

def mnist_scores(classifier: MnistClassifier, pixels: torch.Tensor, labels: torch.Tensor | None,
                 real: dict[str, np.ndarray], batch_size: int = 500,
                 device: torch.device | str = "cpu",
                 real_labels: torch.Tensor | None = None) -> dict:
    """The scores of generated digits, uint8 (N, 28, 28), in the classifier's features, against
    the real set `real` ({"mu", "sigma", "features"}, classifier_statistics):
      mnist_fd:  the Frechet distance of their Gaussian to the real one (support/frechet.py);
      precision, recall: improved precision and recall with k = 3, against the real set in
                 groups as large as the generated one (manifold.precision_recall_in_groups);
      class_accuracy, per_class_accuracy: the share of them that the classifier reads as the
                 digit in `labels` (None without labels);
      per_class_recall: recall split by the labels of the real digits, `real_labels` (one per
                 real digit, in the real set's order; None without them): which digits lack
                 variety. A digit absent from the real groups has no entry.
    Also "num_images"."""
    if len(pixels) <= K:  # then no digit has a k-th nearest neighbour among the others
        raise UserError(f"{len(pixels)} digits are too few to score: precision and recall need at "
                        f"least {K + 1} (a sound MNIST-FD, 129): generate more digits")
    feats, preds = classify(classifier, pixels, batch_size, device)
    mu, sigma = feature_statistics(feats)
    precision, recall, per_class_recall = precision_recall_in_groups(real["features"], feats,
                                                                     real_labels)
    scores = {"mnist_fd": frechet_distance(mu, sigma, real["mu"], real["sigma"]),
              "precision": precision, "recall": recall, "class_accuracy": None,
              "per_class_accuracy": None, "per_class_recall": per_class_recall,
              "num_images": len(pixels)}
    if labels is not None:
        labels = labels.cpu().long()  # beside the predictions, which classify returns on the CPU
        correct = preds == labels
        scores["class_accuracy"] = correct.float().mean().item()
        scores["per_class_accuracy"] = {k: correct[labels == k].float().mean().item()
                                        for k in labels.unique().tolist()}
    return scores


def classifier_statistics(classifier: MnistClassifier, pixels: torch.Tensor, batch_size: int = 500,
                          device: torch.device | str = "cpu") -> dict[str, np.ndarray]:
    """Real digits (uint8 (N, 28, 28), e.g. the MNIST test set) in the classifier's features, the
    reference of `mnist_scores`: {"mu", "sigma"}, their mean and covariance, and "features"."""
    features = classify(classifier, pixels, batch_size, device)[0]
    mu, sigma = feature_statistics(features)
    return {"mu": mu, "sigma": sigma, "features": features}
