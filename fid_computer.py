"""Score generated digits against the MNIST test set: FID, MNIST-FD and class accuracy.

    python fid_computer.py                            # after train.py: all scores on 10,000 images
    python fid_computer.py --metric mnist --num 1000  # the quick MNIST scores only
    python fid_computer.py --regenerate --steps 20    # sample images/fake anew with 20 steps
    python fid_computer.py --fake my_digits/ --metric inception --dims 768

What a run does:
  1. exports the 10,000 MNIST test digits to images/real/ as <index>_<label>.png (once);
  2. samples --num digits, evenly spread over the ten classes, from the checkpoint into images/fake/
     when that folder is missing, when it was sampled with another checkpoint or other settings, or
     with --regenerate (inference.py's load_model and write_class_images do the work);
  3. FID: the Frechet distance between Gaussians fitted to the InceptionV3 pool features (2048
     dims) of the two folders, computed by pytorch-fid, a port of the authors' TensorFlow code;
  4. MNIST-FD: the same distance in the 128-dim penultimate features of a small MNIST classifier
     (trained once on the training set, cached as <data dir>/mnist_classifier.pth), and the class
     accuracy: the share of the images generated for digit k that this classifier reads as k.
The statistics of the real set are cached in images/cache/, keyed by a hash of its files and of
the network's weights, so a second run only processes the generated images.

The Frechet distance between N(mu1, S1) and N(mu2, S2) (Dowson & Landau 1982) is
    d^2 = ||mu1 - mu2||^2 + Tr(S1 + S2 - 2 (S1 S2)^(1/2)).
It needs a full-rank covariance, so at least d + 1 images for d-dim features. Estimated from
samples it is biased upwards, the more so the fewer the images: compare scores only at equal
numbers (measured with benchmarks/fid_floor.py: 10,000 MNIST training digits score MNIST-FD
3.7-4.1 against the test set, 1,000 of them 12-13.5).

Time on the project's 2-core CPU: the Inception network reads about 8 images/s (each 28 x 28 digit
is resized to 299 x 299), so ~20 min per 10,000 images, for the real set only once; sampling the
fakes comes on top. The MNIST scores take seconds; the classifier trains once, in about a minute.
`--metric mnist` is the quick check; a GPU makes the Inception features fast.

References:
  FID:  Heusel et al., "GANs Trained by a Two Time-Scale Update Rule Converge to a Local Nash
        Equilibrium", NeurIPS 2017 (arXiv:1706.08500), the paragraph that defines the FID
  pytorch-fid: M. Seitzer, https://github.com/mseitzer/pytorch-fid (InceptionV3, FID weights)
  Frechet distance of Gaussians: Dowson & Landau, J. Multivariate Analysis 12, 1982
  A Frechet distance in the features of a domain classifier instead of Inception is TF-GAN's
  "Frechet classifier distance"; the class accuracy of conditional samples follows the same idea as
  the Inception Score (Salimans et al. 2016, arXiv:1606.03498): ask a trained classifier.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import pickle
import re
import shutil
import sys
import time
import warnings
import zipfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import NamedTuple
from urllib.error import URLError

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from tqdm.auto import tqdm

from config import UserError, is_out_of_memory, pick_device
from dataset import InMemoryBatches, load_mnist, resolve_data_dir, to_model_range, to_uint8
from diffusion import SAMPLERS, GaussianDiffusion
from inference import (AMP_CHOICES, DEFAULT_CHECKPOINT, apply_sampling_flags, check_sampling_args,
                       class_file_name, class_labels, generate, load_model, use_bf16_sampling,
                       write_class_images)

REAL_DIR = "images/real"  # the exported MNIST test set (git-ignored)
FAKE_DIR = "images/fake"  # generated digits (git-ignored)
CACHE_DIR = "images/cache"  # real-set statistics, one .npz per network and real set (git-ignored)
DEFAULT_NUM = 10_000  # as many generated images as the test set has real ones
CLASSIFIER_FILE = "mnist_classifier.pth"  # in the data directory, next to the digits it learnt from
MANIFEST = ".fid_computer.json"  # hidden file in a folder this script sampled: how it was sampled
LABELLED_NAME = re.compile(r"^(\d+)_(\d+)\.png$")  # inference.class_file_name: 00042_7.png
INCEPTION_DIMS = (64, 192, 768, 2048)  # pytorch-fid's InceptionV3.BLOCK_INDEX_BY_DIM (kept here so
#                                        that --help does not have to import it)


# ------------------------------------------------------------------------------ Frechet distance

def feature_statistics(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean (d,) and covariance (d, d) of features (N, d), as pytorch-fid's
    calculate_activation_statistics computes them (unbiased covariance, float64)."""
    features = np.asarray(features, dtype=np.float64)
    return features.mean(axis=0), np.cov(features, rowvar=False)


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray,
                     sigma2: np.ndarray) -> float:
    """||mu1 - mu2||^2 + Tr(S1 + S2 - 2 (S1 S2)^(1/2)), by pytorch-fid's own function: FID and
    MNIST-FD share one implementation, the one every FID in the literature comes from."""
    from pytorch_fid.fid_score import calculate_frechet_distance

    with warnings.catch_warnings():
        # pytorch-fid 0.3.0 passes sqrtm(disp=False), deprecated in SciPy 1.16 and removed in
        # 1.18; requirements.txt pins scipy<1.18, so the warning tells the reader nothing new.
        warnings.filterwarnings("ignore", message=".*disp.*", category=DeprecationWarning)
        try:
            return float(calculate_frechet_distance(mu1, sigma1, mu2, sigma2))
        except ValueError as e:  # the matrix square root came out complex: degenerate features
            raise UserError(f"the Frechet distance is undefined here ({e}): the features hardly "
                            "vary, e.g. all generated images are nearly the same") from None


def check_enough_images(count: int, dims: int, where: str, metric: str, hint: str) -> None:
    """The covariance of d-dim features from n images has rank at most n - 1: with n < d + 1 it
    is singular, (S1 S2)^(1/2) is ill-defined and the distance means nothing."""
    if count < dims + 1:
        raise UserError(f"{where}: {count} images, but the {metric} with {dims}-dim features "
                        f"needs at least {dims + 1}: the covariance of {dims}-dim features from "
                        f"fewer than {dims + 1} images is singular; {hint}")


# ------------------------------------------------------------------------------ image folders

@dataclass
class ImageFolder:
    """The checked images of one folder, sorted by file name."""
    path: Path
    files: list[Path]
    pixels: torch.Tensor  # uint8 (N, H, W), grayscale 0..255
    labels: torch.Tensor | None  # int64 (N,) read from <index>_<label>.png; None if names lack them
    no_labels_reason: str = ""  # why labels is None


def list_image_files(folder: str | Path, role: str = "image") -> list[Path]:
    """The files of a folder, sorted by name; hidden files (our manifest, half-written temporary
    files) do not count. A missing or empty folder is a UserError."""
    folder = Path(folder)
    if not folder.is_dir():
        raise UserError(f"no {role} folder {folder}" + (": it is a file" if folder.exists() else ""))
    files = sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))
    if not files:
        raise UserError(f"the {role} folder {folder} is empty: it must hold the images to score")
    return files


def labels_from_names(files: list[Path], num_classes: int = 10) -> tuple[torch.Tensor | None, str]:
    """Labels parsed from <index>_<label>.png names, or (None, why) if any name has none."""
    labels = []
    for f in files:
        m = LABELLED_NAME.match(f.name)
        if m is None or int(m.group(2)) >= num_classes:
            return None, (f"the file names in {f.parent} do not all look like <index>_<digit>.png "
                          f"(e.g. {f.name!r}), so the digit each image was made for is unknown")
        labels.append(int(m.group(2)))
    return torch.tensor(labels), ""


def read_images(folder: str | Path, role: str = "image") -> ImageFolder:
    """Open every file as a grayscale image. A file that is not an image, or images of different
    sizes, are a UserError naming the file: better than a crash deep inside a DataLoader."""
    from PIL import Image, UnidentifiedImageError

    folder = Path(folder)
    files = list_image_files(folder, role)
    arrays, first = [], None
    for f in tqdm(files, desc=f"reading {folder}", unit="img", leave=False, disable=len(files) < 5000):
        try:
            with Image.open(f) as img:
                img = img.convert("L")  # reads the pixels; MNIST and our samples are grayscale
        except (UnidentifiedImageError, OSError, ValueError) as e:
            raise UserError(f"{f} is not a readable image ({type(e).__name__}): only images may "
                            f"be in {folder}; move that file out") from None
        if first is None:
            first = (f, img.size)
        elif img.size != first[1]:
            raise UserError(f"images of mixed sizes in {folder}: {first[0].name} is "
                            f"{first[1][0]} x {first[1][1]} but {f.name} is {img.size[0]} x "
                            f"{img.size[1]}; all images must have the same size")
        arrays.append(np.asarray(img))
    labels, reason = labels_from_names(files)
    return ImageFolder(folder, files, torch.from_numpy(np.stack(arrays)), labels, reason)


def files_key(files: list[Path], *parts: str) -> str:
    """A hash over the file names and contents (and `parts`, e.g. the network's weights): any
    change of the set changes the key, and a copy of the same set keeps it."""
    h = hashlib.sha256("\0".join(parts).encode())
    for f in files:
        data = f.read_bytes()
        h.update(f"\0{f.name}\0{len(data)}\0".encode())
        h.update(data)
    return h.hexdigest()[:16]


def weights_id(model: nn.Module) -> str:
    """A hash of a network's weights: statistics computed with other weights are never reused."""
    h = hashlib.sha256()
    for name, t in model.state_dict().items():
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def cached_statistics(cache_file: Path, compute) -> tuple[np.ndarray, np.ndarray]:
    """Load (mu, sigma) from cache_file, or compute them and save them there atomically."""
    if cache_file.is_file():
        try:
            with np.load(cache_file) as z:
                mu, sigma = z["mu"], z["sigma"]
            print(f"real statistics: {cache_file} (cached)")
            return mu, sigma
        except (OSError, ValueError, KeyError, zipfile.BadZipFile, EOFError) as e:
            print(f"warning: {cache_file} is damaged ({type(e).__name__}); computing it again",
                  file=sys.stderr)
    mu, sigma = compute()
    cache_file.parent.mkdir(parents=True, exist_ok=True)
    tmp = cache_file.with_name(cache_file.name + ".tmp")
    with open(tmp, "wb") as f:  # a file object: np.savez would append ".npz" to a path
        np.savez(f, mu=mu, sigma=sigma)
    os.replace(tmp, cache_file)
    print(f"real statistics: saved to {cache_file}")
    return mu, sigma


# ------------------------------------------------------------------------------ the real set

def export_real_images(data_dir: str | Path, out_dir: str | Path = REAL_DIR,
                       progress: bool = True) -> int:
    """Write the MNIST test digits into out_dir as <index>_<label>.png; files already there are
    kept as they are (a second run writes nothing). Returns how many files were written."""
    from PIL import Image

    images, labels = load_mnist(data_dir, train=False)  # uint8 (10000, 28, 28), int64 (10000,)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    names = [class_file_name(i, label) for i, label in enumerate(labels.tolist())]
    todo = [i for i, name in enumerate(names) if not (out_dir / name).exists()]
    for i in tqdm(todo, desc=f"exporting to {out_dir}", unit="img", disable=not progress or not todo):
        # Written under a hidden name, then renamed: an interrupted export never leaves a
        # truncated PNG that a later run would take for a finished one.
        tmp = out_dir / f".{names[i]}.tmp"
        Image.fromarray(images[i].numpy()).save(tmp, format="PNG")
        os.replace(tmp, out_dir / names[i])
    return len(todo)


# ------------------------------------------------------------------------------ Inception

class InceptionWeightsMissing(UserError):
    """The FID weights of InceptionV3 are neither in the torch hub cache nor downloadable."""


def inception_weights_path() -> Path:
    """Where torch.hub (and so pytorch-fid) looks for the FID Inception weights."""
    from pytorch_fid.inception import FID_WEIGHTS_URL

    return Path(torch.hub.get_dir()) / "checkpoints" / FID_WEIGHTS_URL.rsplit("/", 1)[-1]


def load_inception(dims: int = 2048, device: torch.device | str = "cpu") -> nn.Module:
    """pytorch-fid's InceptionV3 returning the `dims`-dim features (2048 = the final pool, the
    standard FID). Downloads its weights once into the torch hub cache."""
    from pytorch_fid.inception import FID_WEIGHTS_URL, InceptionV3

    path = inception_weights_path()
    try:
        model = InceptionV3([InceptionV3.BLOCK_INDEX_BY_DIM[dims]])
    except (URLError, OSError) as e:  # offline, proxy, HTTP error: all are OSErrors
        reason = str(e).strip().splitlines()[0][:100] if str(e).strip() else type(e).__name__
        raise InceptionWeightsMissing(
            f"the Inception weights are not in the torch hub cache and could not be downloaded "
            f"({reason}): download {FID_WEIGHTS_URL} on a machine with internet and put it at "
            f"{path}") from None
    except (RuntimeError, EOFError, pickle.UnpicklingError, zipfile.BadZipFile) as e:
        raise InceptionWeightsMissing(
            f"the Inception weights at {path} are damaged ({type(e).__name__}): delete the file "
            f"and run again to download it, or put an intact copy of {FID_WEIGHTS_URL} there"
        ) from None
    return model.to(device).eval()


def inception_statistics(files: list[Path], model: nn.Module, dims: int, batch_size: int,
                         device: torch.device | str) -> tuple[np.ndarray, np.ndarray]:
    """pytorch-fid's statistics of its Inception features of the image files (it converts each
    to RGB, scales to [0, 1] and resizes to 299 x 299 inside the network)."""
    from pytorch_fid.fid_score import calculate_activation_statistics

    # num_workers=0: the PNGs are tiny and the network is the cost; workers only add a start-up.
    return calculate_activation_statistics([str(f) for f in files], model,
                                           min(batch_size, len(files)), dims, device, num_workers=0)


# ------------------------------------------------------------------------------ MNIST classifier

@dataclass
class ClassifierConfig:
    epochs: int = 5  # 99.07% test accuracy after 5 passes (3 gave 98.7-98.9%); ~1 min on 2 cores
    batch_size: int = 128  # small batches: many Adam steps per epoch
    lr: float = 2e-3  # Adam, cosine-decayed to 0: the decay buys the last few tenths of a percent
    seed: int = 0  # the same weights on every run, so MNIST-FD numbers compare across runs


class MnistClassifier(nn.Module):
    """A small LeNet-like CNN for 28 x 28 digits in [-1, 1]:
    conv3x3(16) - pool - conv3x3(32) - pool - fc(128) - fc(10), with BatchNorm and dropout.
    `features` is the 128-dim penultimate layer that MNIST-FD compares.

    16 and 32 channels: twice as many reached the same 99.1% in our runs, in twice the time."""

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


@torch.no_grad()
def classify(model: MnistClassifier, pixels: torch.Tensor, batch_size: int = 500,
             device: torch.device | str = "cpu") -> tuple[np.ndarray, torch.Tensor]:
    """uint8 (N, 28, 28) -> features float64 (N, 128) and predicted digits int64 (N,)."""
    model.eval()
    feats, preds = [], []
    for start in range(0, len(pixels), batch_size):
        x = to_model_range(pixels[start : start + batch_size].to(device))  # (b, 1, 28, 28)
        f = model.features(x)
        feats.append(f.double().cpu())
        preds.append(model.head(f).argmax(dim=1).cpu())
    return torch.cat(feats).numpy(), torch.cat(preds)


def train_classifier(data_dir: str | Path, device: torch.device | str = "cpu",
                     cfg: ClassifierConfig | None = None,
                     progress: bool = True) -> tuple[MnistClassifier, float]:
    """Train on the MNIST training set; returns the model and its test-set accuracy."""
    cfg = cfg or ClassifierConfig()
    device = torch.device(device)
    images, labels = load_mnist(data_dir, train=True)  # uint8 (60000, 28, 28), int64 (60000,)
    test_images, test_labels = load_mnist(data_dir, train=False)
    batches = InMemoryBatches(images, labels, min(cfg.batch_size, len(images)), device, cfg.seed)
    total = cfg.epochs * len(batches)
    # Our own RNG stream for the initial weights and dropout: the caller's is left untouched.
    with torch.random.fork_rng(devices=[device.index or 0] if device.type == "cuda" else []):
        torch.manual_seed(cfg.seed)
        model = MnistClassifier().to(device)
        optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr)
        model.train()
        step = 0
        with tqdm(total=total, desc="MNIST classifier", unit="step", disable=not progress) as bar:
            for epoch in range(cfg.epochs):
                for x, y in batches.epoch(epoch):  # x (B, 1, 28, 28) in [-1, 1], y (B,)
                    for group in optimizer.param_groups:
                        group["lr"] = cfg.lr * 0.5 * (1 + math.cos(math.pi * step / total))
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


def load_classifier(data_dir: str | Path | None = None, device: torch.device | str = "cpu",
                    progress: bool = True) -> MnistClassifier:
    """The MNIST classifier cached in <data_dir>/mnist_classifier.pth; trained and saved first
    when the file is missing (58 s on the 2-core test CPU, once)."""
    data_dir = resolve_data_dir(str(data_dir) if data_dir is not None else None)
    path = data_dir / CLASSIFIER_FILE
    model = MnistClassifier()
    if not path.is_file():
        print(f"training the MNIST classifier for MNIST-FD (once; cached at {path})")
        t0 = time.time()
        model, accuracy = train_classifier(data_dir, device, progress=progress)
        state = {"model": {k: v.cpu() for k, v in model.state_dict().items()},
                 "test_accuracy": accuracy, "config": asdict(ClassifierConfig())}
        tmp = path.with_name(path.name + ".tmp")  # written aside, then renamed: never half a file
        torch.save(state, tmp)
        os.replace(tmp, path)
        print(f"MNIST classifier: test accuracy {accuracy:.4f}, trained in {time.time() - t0:.0f} s")
        return model.to(device).eval()
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        model.load_state_dict(state["model"])
    except (pickle.UnpicklingError, RuntimeError, EOFError, zipfile.BadZipFile, OSError,
            ValueError, KeyError, TypeError) as e:
        raise UserError(f"{path} is not an intact MNIST classifier of this version "
                        f"({type(e).__name__}): delete it and run again to retrain it") from None
    return model.to(device).eval()


# ------------------------------------------------------------------------------ MNIST scores

def check_mnist_size(pixels: torch.Tensor, what: str) -> None:
    """The classifier's fc layer fixes its input to 28 x 28."""
    if tuple(pixels.shape[1:]) != (28, 28):
        raise UserError(f"{what} are {pixels.shape[2]} x {pixels.shape[1]} pixels; the MNIST "
                        "classifier reads 28 x 28 digits")


def _fake_pixels(fake, labels) -> tuple[torch.Tensor, torch.Tensor | None, str]:
    """(uint8 (N, H, W), labels or None, a name for messages) from a folder or a tensor."""
    if isinstance(fake, ImageFolder):
        return fake.pixels, fake.labels, str(fake.path)
    if isinstance(fake, (str, Path)):
        folder = read_images(fake, "fake")
        return folder.pixels, folder.labels, str(fake)
    x = torch.as_tensor(fake).detach().cpu()
    if x.dim() == 4:  # (N, 1, H, W), as the sampler returns them
        x = x[:, 0]
    if x.dtype != torch.uint8:
        # Rounded to 0..255 exactly as a saved PNG would be: a tensor and its files score the same.
        x = to_uint8(x)
    if labels is not None:
        labels = torch.as_tensor(labels).cpu().long()
        if labels.shape != (len(x),):
            raise UserError(f"{len(x)} images but {labels.numel()} labels")
    return x, labels, "the generated images"


def mnist_scores(fake, labels=None, *, data_dir: str | Path | None = None,
                 real: str | Path | None = None, device: torch.device | str = "cpu",
                 classifier: MnistClassifier | None = None, cache_dir: str | Path = CACHE_DIR,
                 batch_size: int = 500) -> dict:
    """MNIST-FD and class accuracy of generated digits.

    fake:   a folder of PNGs (the labels are read from names <index>_<label>.png), or a tensor:
            uint8 (N, 28, 28) in 0..255, or float (N, 1, 28, 28) in [-1, 1] as the sampler gives.
    labels: for a tensor, the digit each image was generated for (None: no class accuracy).
    real:   the reference set: None = the MNIST test set in data_dir, or a folder of PNGs.
    Returns {"mnist_fd", "class_accuracy" (None without labels), "per_class_accuracy" ({digit:
    accuracy}; None without labels), "num_images"}. The real statistics are cached in cache_dir.
    """
    device = torch.device(device)
    classifier = classifier if classifier is not None else load_classifier(data_dir, device)
    pixels, labels, what = _fake_pixels(fake, labels)
    check_mnist_size(pixels, what)
    dims = MnistClassifier.FEATURE_DIMS
    check_enough_images(len(pixels), dims, what, "MNIST-FD", "generate more (--num)")
    real_mu, real_sigma = mnist_real_statistics(classifier, data_dir, real, cache_dir,
                                                batch_size, device)
    feats, preds = classify(classifier, pixels, batch_size, device)
    mu, sigma = feature_statistics(feats)
    scores = {"mnist_fd": frechet_distance(mu, sigma, real_mu, real_sigma),
              "class_accuracy": None, "per_class_accuracy": None, "num_images": len(pixels)}
    if labels is not None:
        correct = preds == labels
        scores["class_accuracy"] = correct.float().mean().item()
        scores["per_class_accuracy"] = {k: correct[labels == k].float().mean().item()
                                        for k in labels.unique().tolist()}
    return scores


def mnist_real_statistics(classifier: MnistClassifier, data_dir=None, real=None,
                          cache_dir: str | Path = CACHE_DIR, batch_size: int = 500,
                          device: torch.device | str = "cpu") -> tuple[np.ndarray, np.ndarray]:
    """Mean and covariance of the classifier features of the real set, cached."""
    dims = MnistClassifier.FEATURE_DIMS
    wid = weights_id(classifier)
    if real is None:  # the test set, straight from the MNIST files
        images, _ = load_mnist(resolve_data_dir(str(data_dir) if data_dir else None), train=False)
        key = hashlib.sha256(wid.encode() + images.numpy().tobytes()).hexdigest()[:16]
        compute_from = lambda: images  # noqa: E731
        what = "the MNIST test set"
    else:
        files = list_image_files(real, "real")
        key = files_key(files, "mnist", wid)
        compute_from = lambda: read_images(real, "real").pixels  # noqa: E731
        what = str(real)

    def compute():
        pixels = compute_from()
        check_mnist_size(pixels, f"the real images in {what}")
        check_enough_images(len(pixels), dims, what, "MNIST-FD", "use a larger real set")
        print(f"real statistics: MNIST classifier features of {what}")
        return feature_statistics(classify(classifier, pixels, batch_size, device)[0])

    return cached_statistics(Path(cache_dir) / f"real_mnist{dims}_{key}.npz", compute)


# ------------------------------------------------------------------------------ generated images

class MinimumImages(NamedTuple):
    """The fewest images a score can use (features + 1), which score needs them, what to do."""
    dims: int
    metric: str
    hint: str


@dataclass
class Sampling:
    """A decision to sample the fake folder anew, with everything needed to do it."""
    model: nn.Module
    cfg: object  # config.Config of the checkpoint, with the sampler flags applied
    manifest: dict  # how the images are made; saved next to them
    reason: str


def _sampling_manifest(checkpoint: Path, cfg, num: int, seed: int, bf16: bool) -> dict:
    s = cfg.sample
    digest = hashlib.sha256(checkpoint.read_bytes()).hexdigest()[:16]
    return {"checkpoint": str(checkpoint), "checkpoint_sha256": digest, "sampler": s.sampler,
            "steps": s.steps, "eta": s.eta, "cfg_scale": s.cfg_scale, "num": num, "seed": seed,
            "bf16": bf16}


def _read_manifest(folder: Path) -> dict | None:
    try:
        return json.loads((folder / MANIFEST).read_text())
    except (OSError, ValueError):
        return None


SAMPLING_FLAGS = ["checkpoint", "sampler", "steps", "cfg_scale", "num", "seed", "amp"]


def seed_of(args: argparse.Namespace) -> int:
    return args.seed if args.seed is not None else 0  # None only tells "not given" apart


def bf16_of(args: argparse.Namespace, device: torch.device) -> bool:
    return use_bf16_sampling(device, args.amp or "auto")


def plan_sampling(args: argparse.Namespace, device: torch.device,
                  need: MinimumImages) -> Sampling | None:
    """Decide whether the fake folder is (re)sampled. It is when --regenerate is given, when the
    default folder is missing or empty, or when this script sampled it with another checkpoint or
    other settings (its manifest says so). A folder sampled by someone else is scored as it is."""
    fake_dir = Path(args.fake)
    files = ([p for p in fake_dir.iterdir() if not p.name.startswith(".")]
             if fake_dir.is_dir() else [])
    manifest = _read_manifest(fake_dir) if files else None
    given = [f"--{f.replace('_', '-')}" for f in SAMPLING_FLAGS if getattr(args, f) is not None]
    if files and not args.regenerate and manifest is None:
        if given:
            raise UserError(f"{' '.join(given)} only apply when sampling, but {fake_dir} already "
                            f"holds {len(files)} images that are scored as they are: add "
                            "--regenerate to replace them, or drop the flags")
        return None
    if not files and not args.regenerate and args.fake != FAKE_DIR:
        raise UserError(f"no images in {fake_dir}" + ("" if fake_dir.is_dir() else " (no such folder)")
                        + ": pass a folder of generated PNGs, or add --regenerate to sample "
                        "--num images into it from --checkpoint")
    checkpoint = Path(args.checkpoint or DEFAULT_CHECKPOINT)
    if manifest is not None and not args.regenerate and not checkpoint.exists() and not given:
        print(f"note: no checkpoint at {checkpoint}; scoring the images sampled earlier in {fake_dir}")
        return None
    model, cfg = load_model(checkpoint, device)
    apply_sampling_flags(cfg, args.sampler, args.steps, None, args.cfg_scale)
    s = cfg.sample
    check_sampling_args(cfg, s.sampler, s.steps, s.eta, s.cfg_scale)
    num = args.num if args.num is not None else DEFAULT_NUM
    check_num_per_class(num, cfg.model.num_classes)
    check_enough_images(num, need.dims, f"--num {num}", need.metric, need.hint)
    wanted = _sampling_manifest(checkpoint, cfg, num, seed_of(args), bf16_of(args, device))
    if args.regenerate:
        reason = "--regenerate"
    elif not files:
        reason = f"{fake_dir} is {'empty' if fake_dir.is_dir() else 'missing'}"
    else:
        changed = [k for k in wanted if k != "checkpoint" and manifest.get(k) != wanted[k]]
        if not changed:
            print(f"fake: {len(files)} images in {fake_dir}, sampled earlier with these settings")
            return None
        changed = ", ".join(changed).replace("checkpoint_sha256", "checkpoint")
        reason = f"the settings changed since {fake_dir} was sampled: {changed}"

    # Sampling replaces the folder's images, so it must hold nothing but images we wrote.
    if fake_dir.resolve() == Path(args.real).resolve():
        raise UserError(f"--fake and --real are the same folder ({fake_dir}): sampling would "
                        "replace the real images; pass another --fake")
    foreign = [p.name for p in files if not (p.is_file() and LABELLED_NAME.match(p.name))]
    if foreign:
        raise UserError(f"{fake_dir} holds files this script did not write (e.g. {foreign[0]!r}), "
                        "so it will not delete them to sample anew: pass another --fake folder")
    return Sampling(model, cfg, wanted, reason)


def sample_fakes(plan: Sampling, out_dir: str | Path, device: torch.device, batch_size: int,
                 seed: int) -> None:
    """Sample into a hidden sibling folder, then swap it in: an interrupted run never leaves a
    half-filled folder that a later run would score."""
    shown, out_dir = out_dir, Path(out_dir).resolve()  # resolved: "." has no name to derive from
    partial = out_dir.with_name(f".{out_dir.name}.partial")
    if partial.exists():
        shutil.rmtree(partial)  # our own leftover from an interrupted run
    cfg, s = plan.cfg, plan.cfg.sample
    per_class = plan.manifest["num"] // cfg.model.num_classes
    print(f"sampling {plan.manifest['num']} images ({plan.reason}): {s.sampler}, {s.steps} steps, "
          f"guidance {s.cfg_scale}, seed {seed}, bf16 {'on' if plan.manifest['bf16'] else 'off'}")
    diffusion = GaussianDiffusion.from_config(cfg.diffusion)
    try:
        write_class_images(plan.model, diffusion, cfg, per_class, partial, device, batch_size,
                           seed, bf16=plan.manifest["bf16"])
    except (torch.OutOfMemoryError, RuntimeError) as e:
        if not is_out_of_memory(e):
            raise
        raise UserError(f"sampling ran out of memory on {device}: pass a smaller --batch-size") from None
    (partial / MANIFEST).write_text(json.dumps(plan.manifest, indent=1))
    if out_dir.exists():
        shutil.rmtree(out_dir)  # plan_sampling checked that it holds only our own images
    os.replace(partial, out_dir)
    print(f"fake: wrote {plan.manifest['num']} images to {shown}")


# ------------------------------------------------------------------------------ main

def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description="FID, MNIST-FD and class accuracy of generated digits against the MNIST test set.")
    p.add_argument("--metric", choices=["inception", "mnist", "all"], default="all",
                   help="inception = FID; mnist = MNIST-FD and class accuracy; default: all")
    p.add_argument("--data-dir", default=None,
                   help="folder holding MNIST/raw/ and the classifier (default: $DIT_DATA_DIR or ./data)")
    p.add_argument("--real", default=REAL_DIR,
                   help=f"real images (default: {REAL_DIR}, filled with the MNIST test set)")
    p.add_argument("--fake", default=FAKE_DIR,
                   help=f"generated images named <index>_<label>.png (default: {FAKE_DIR})")
    p.add_argument("--cache-dir", default=CACHE_DIR,
                   help=f"where the real statistics are cached (default: {CACHE_DIR})")
    p.add_argument("--dims", type=int, choices=INCEPTION_DIMS, default=2048,
                   help="Inception feature size (default: 2048, the pool features of the standard FID)")
    p.add_argument("--device", default=None, help="cuda or cpu (default: cuda when present)")
    p.add_argument("--batch-size", type=int, default=100,
                   help="images per batch when sampling and extracting features (default: 100)")
    s = p.add_argument_group("sampling (when the fake folder is missing, was sampled with other "
                             "settings, or --regenerate is given)")
    s.add_argument("--regenerate", action="store_true", help="sample the fake images anew")
    s.add_argument("--num", type=int, default=None,
                   help=f"images to sample, a multiple of 10 (default: {DEFAULT_NUM:,})")
    s.add_argument("--checkpoint", default=None, help=f"default: {DEFAULT_CHECKPOINT}")
    s.add_argument("--sampler", choices=SAMPLERS, default=None, help="default: the checkpoint's")
    s.add_argument("--steps", type=int, default=None, help="sampler steps (default: the checkpoint's)")
    s.add_argument("--cfg-scale", type=float, default=None,
                   help="guidance scale, 1 = none (default: the checkpoint's)")
    s.add_argument("--seed", type=int, default=None, help="seed of the sampling noise (default: 0)")
    s.add_argument("--amp", choices=AMP_CHOICES, default=None,
                   help="bf16 autocast while sampling: auto = on CUDA and on CPUs with native bf16, "
                        "off = fp32 (default: auto)")
    w = p.add_argument_group("sampler study (--sweep): MNIST scores and time of every sampler")
    w.add_argument("--sweep", action="store_true",
                   help="score DDPM at T steps and DDIM, PLMS, DPM-Solver++ at --sweep-steps, on "
                        "--num images each (default 1,000), same seed; write CSV and plot")
    w.add_argument("--sweep-steps", type=int, nargs="+", default=list(SWEEP_STEPS),
                   help="step counts for the fast samplers (default: %(default)s)")
    w.add_argument("--sweep-samplers", nargs="+", choices=SAMPLERS, default=list(SAMPLERS),
                   help="samplers in the study (default: all)")
    w.add_argument("--sweep-out", default=None,
                   help="CSV path; the plot goes beside it (default: <checkpoint dir>/sweep.csv)")
    return p


def check_num_per_class(num: int, classes: int) -> None:
    if num <= 0 or num % classes:
        raise UserError(f"--num must be a positive multiple of {classes}, so that every digit gets "
                        f"as many images, got {num}")


SWEEP_STEPS = (5, 10, 20, 50, 100, 250)  # the study's step counts for DDIM, PLMS and DPM-Solver++
SWEEP_NUM = 1000  # images per sampler setting in the study: 100 per digit


def sweep(args: argparse.Namespace) -> None:
    """The sampler study: for DDPM at all T steps and every fast sampler at each --sweep-steps,
    sample --num images (the same seed and labels for every row), score MNIST-FD and class
    accuracy, and time the sampling. Writes a CSV and a plot (score against steps)."""
    device = pick_device(args.device)
    checkpoint = Path(args.checkpoint or DEFAULT_CHECKPOINT)
    model, cfg = load_model(checkpoint, device)
    if args.cfg_scale is not None:
        cfg.sample.cfg_scale = args.cfg_scale
    num = args.num if args.num is not None else SWEEP_NUM
    classes = cfg.model.num_classes
    check_num_per_class(num, classes)
    check_enough_images(num, MnistClassifier.FEATURE_DIMS, f"--num {num}", "MNIST-FD",
                        "pass a larger --num")
    T = cfg.diffusion.num_timesteps
    for steps in args.sweep_steps:
        check_sampling_args(cfg, "ddim", steps, 0.0, cfg.sample.cfg_scale)
    out = Path(args.sweep_out) if args.sweep_out else checkpoint.parent / "sweep.csv"
    out.parent.mkdir(parents=True, exist_ok=True)
    classifier = load_classifier(args.data_dir, device)
    diffusion = GaussianDiffusion.from_config(cfg.diffusion)
    labels = class_labels(classes, num // classes, device)
    runs = [(sampler, T if sampler == "ddpm" else steps) for sampler in args.sweep_samplers
            for steps in (args.sweep_steps if sampler != "ddpm" else [T])]
    bf16 = bf16_of(args, device)
    print(f"device: {device} | sampler study on {checkpoint}: {num} images per row, guidance "
          f"{cfg.sample.cfg_scale}, seed {seed_of(args)}, bf16 {'on' if bf16 else 'off'}")
    rows = []
    for sampler, steps in runs:
        cfg.sample.sampler, cfg.sample.steps, cfg.sample.eta = sampler, steps, 0.0
        g = torch.Generator(device).manual_seed(seed_of(args))
        start = time.perf_counter()
        try:
            images = torch.cat([generate(model, diffusion, chunk, cfg, g, bf16=bf16)
                                for chunk in labels.split(args.batch_size)])
        except (torch.OutOfMemoryError, RuntimeError) as e:
            if not is_out_of_memory(e):
                raise
            raise UserError(f"sampling ran out of memory on {device}: pass a smaller --batch-size") from None
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        seconds = time.perf_counter() - start
        scores = mnist_scores(images, labels.cpu(), data_dir=args.data_dir, device=device,
                              classifier=classifier, cache_dir=args.cache_dir)
        rows.append({"sampler": sampler, "steps": steps, "num_images": num,
                     "mnist_fd": round(scores["mnist_fd"], 4),
                     "class_accuracy": round(scores["class_accuracy"], 4),
                     "seconds": round(seconds, 2), "bf16": bf16})
        print(f"{sampler:>13} {steps:>5} steps: MNIST-FD {scores['mnist_fd']:8.3f}  class accuracy "
              f"{scores['class_accuracy']:.4f}  {seconds:7.1f} s", flush=True)
        write_sweep(rows, out)  # after every row: an interrupted study keeps what it measured
    print(f"sweep: {out} and {out.with_suffix('.png')}")


def write_sweep(rows: list[dict], out: Path) -> None:
    """The study as a CSV and a two-panel plot: MNIST-FD and class accuracy against steps, one
    line per sampler, DDPM's single point drawn as a horizontal reference line."""
    import csv

    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tmp = out.with_name(out.name + ".tmp")
    with open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    os.replace(tmp, out)
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
    fig.suptitle(f"samplers compared on {rows[0]['num_images']} images each", fontsize=10)
    fig.tight_layout()
    fig.savefig(out.with_suffix(".png"), dpi=100)
    plt.close(fig)


def run(args: argparse.Namespace) -> None:
    if args.sweep:
        return sweep(args)
    t0 = time.time()
    device = pick_device(args.device)
    if args.batch_size <= 0:
        raise UserError(f"--batch-size must be positive, got {args.batch_size}")
    use_inception = args.metric in ("inception", "all")
    use_mnist = args.metric in ("mnist", "all")
    data_dir = resolve_data_dir(args.data_dir)
    cache_dir = Path(args.cache_dir)
    print(f"device: {device} | metric: {args.metric} | seed: {seed_of(args)}")

    # The fewest images every asked-for score can work with, and what to do about too few.
    need = MinimumImages(MnistClassifier.FEATURE_DIMS, "MNIST-FD", "pass a larger --num")
    if use_inception and (not use_mnist or args.dims > need.dims):
        need = MinimumImages(args.dims, "FID", "pass a larger --num, a smaller --dims "
                             "(64, 192 or 768), or --metric mnist")

    # 1. The real set: the MNIST test set, exported once.
    real_dir = Path(args.real)
    if args.real == REAL_DIR:
        written = export_real_images(data_dir, real_dir)
        if written:
            print(f"real: exported {written} MNIST test images to {real_dir}")
    real_files = list_image_files(real_dir, "real")
    check_enough_images(len(real_files), need.dims, str(real_dir), need.metric,
                        "use a larger real set")

    # 2. The fake set: checked now if it is there, so that a bad folder fails in seconds.
    plan = plan_sampling(args, device, need)
    fake = None
    if plan is None:
        fake = read_images(args.fake, "fake")
        check_enough_images(len(fake.files), need.dims, args.fake, need.metric, need.hint)
        if use_mnist:  # before a long FID run, not after it
            check_mnist_size(fake.pixels, f"the images in {args.fake}")

    # 3. The networks, before the long sampling: missing Inception weights fail in seconds.
    inception = classifier = None
    if use_inception:
        try:
            inception = load_inception(args.dims, device)
        except InceptionWeightsMissing as e:
            if args.metric == "inception":
                raise
            print(f"warning: FID skipped: {e}", file=sys.stderr)
    if use_mnist:
        classifier = load_classifier(data_dir, device)

    # 4. Sample, if needed.
    if plan is not None:
        sample_fakes(plan, args.fake, device, args.batch_size, seed_of(args))
        fake = read_images(args.fake, "fake")
    print(f"scoring {len(fake.files)} images in {args.fake} against {len(real_files)} in {real_dir}")

    # 5. The scores, one per line: `FID: 12.34` is easy to grep.
    if inception is not None:
        wid = weights_id(inception)

        def real_inception():
            real = read_images(real_dir, "real")  # checks the files before the long computation
            print(f"real statistics: Inception features of {len(real.files)} images (slow on a CPU)")
            return inception_statistics(real.files, inception, args.dims, args.batch_size, device)

        key = files_key(real_files, "inception", str(args.dims), wid)
        real_mu, real_sigma = cached_statistics(cache_dir / f"real_inception{args.dims}_{key}.npz",
                                                real_inception)
        mu, sigma = inception_statistics(fake.files, inception, args.dims, args.batch_size, device)
        print(f"FID: {frechet_distance(mu, sigma, real_mu, real_sigma):.2f}")
    if classifier is not None:
        # The classifier is small: big batches are faster and fit anywhere.
        scores = mnist_scores(fake, real=real_dir, device=device, classifier=classifier,
                              cache_dir=cache_dir, batch_size=max(args.batch_size, 500))
        print(f"MNIST-FD: {scores['mnist_fd']:.3f}")
        if scores["class_accuracy"] is None:
            print(f"warning: class accuracy skipped: {fake.no_labels_reason}", file=sys.stderr)
        else:
            print(f"class accuracy: {scores['class_accuracy']:.4f}")
            print("per digit: " + "  ".join(f"{k}: {a:.3f}" for k, a in
                                            scores["per_class_accuracy"].items()))
    print(f"done in {time.time() - t0:.0f} s")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        run(args)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
