"""Score a folder of generated digits against the MNIST test set: FID, MNIST-FD, precision and
recall, class accuracy.

    python inference.py --num-per-class 100 --out-dir images/fake   # first, sample 1,000 digits
    python fid_computer.py --metric mnist     # the MNIST scores: offline, seconds (a minute more
                                              # the first time, to train the classifier)
    python fid_computer.py                    # and the FID (made for 10,000: --num-per-class 1000)
    python fid_computer.py --fake my_digits/ --metric inception --dims 768

It scores folders; inference.py samples them. In the order of this file:
  1. the real set: the 10,000 MNIST test digits, exported once to images/real/ as
     <index>_<label>.png. Their statistics are cached in images/cache/ under a hash of the files
     and of the network's weights: another real set or other weights never meet a stale file;
  2. the generated folder (--fake): images of one size, named <index>_<label>.png by inference.py;
  3. FID: the Frechet distance between Gaussians fitted to the InceptionV3 pool features (2048
     dims) of the two sets, computed by pytorch-fid, a port of the authors' TensorFlow code;
  4. MNIST-FD: the same distance in the 128-dim features of a small MNIST classifier
     (support/mnist_classifier.py); in the same features, improved precision and recall
     (support/manifold.py): the share of generated digits that fall among the real ones, and the
     share of real digits that fall among the generated ones (fidelity and variety, which one FD
     mixes), against the real set in groups as large as the generated one; the recall also per
     digit of the real set, to show which digits lack variety; and the class accuracy: the
     share of the images generated for digit k that this classifier reads as k.

The Frechet distance between N(mu1, S1) and N(mu2, S2) (Dowson & Landau 1982; support/frechet.py) is
    d^2 = ||mu1 - mu2||^2 + Tr(S1 + S2 - 2 (S1 S2)^(1/2)).
Estimated from images, it needs at least d + 1 of them for d-dim features (fewer give a singular
covariance, blind to whole directions of the features), and it is biased upwards, the more so
the fewer the images: compare scores only at equal numbers, and with the floor that real digits
score at that number (benchmarks/README.md, "The floor of the scores"). The Inception network
is slow on a CPU, each digit resized to 299 x 299: the real set's statistics are computed once
and cached.

References:
  FID:  Heusel et al., "GANs Trained by a Two Time-Scale Update Rule Converge to a Local Nash
        Equilibrium", NeurIPS 2017 (arXiv:1706.08500), the paragraph that defines the FID
  pytorch-fid: M. Seitzer, https://github.com/mseitzer/pytorch-fid (InceptionV3, FID weights)
  Frechet distance of Gaussians: Dowson & Landau, J. Multivariate Analysis 12, 1982
  Precision and recall: Kynkaanniemi et al., "Improved Precision and Recall Metric for Assessing
        Generative Models", NeurIPS 2019 (arXiv:1904.06991)
"""

from __future__ import annotations

import argparse
import hashlib
import pickle
import sys
import time
import zipfile
from pathlib import Path
from urllib.error import URLError

import numpy as np
import torch
import torch.nn as nn
from tqdm.auto import tqdm

from dataset import load_mnist, resolve_data_dir
from support.checkpoint import atomic_write, keep_or_warn
from support.cli import UserError, exit_status, out_of_memory_as_error, pick_device
from support.frechet import check_enough_images, feature_statistics, frechet_distance
from support.image_files import (FAKE_DIR, ImageFolder, image_files, labelled_file_name,
                                 labels_from_names, read_images)
from support.mnist_classifier import MnistClassifier, classify, load_classifier, mnist_scores

REAL_DIR = "images/real"  # the exported MNIST test set (git-ignored)
CACHE_DIR = "images/cache"  # real-set statistics, one .npz per network and real set (git-ignored)
INCEPTION_DIMS = (64, 192, 768, 2048)  # pytorch-fid's InceptionV3.BLOCK_INDEX_BY_DIM (kept here so
#                                        that --help does not have to import it)


# ------------------------------------------------------------------------------ the real set

def export_real_images(data_dir: str | Path, out_dir: str | Path = REAL_DIR,
                       progress: bool = True) -> int:
    """Write the MNIST test digits into out_dir as <index>_<label>.png; files already there are
    kept as they are (a second run writes nothing). Returns how many files were written."""
    from PIL import Image

    images, labels = load_mnist(data_dir, train=False)  # uint8 (10000, 28, 28), int64 (10000,)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    names = [labelled_file_name(i, label) for i, label in enumerate(labels.tolist())]
    todo = [i for i, name in enumerate(names) if not (out_dir / name).exists()]
    for i in tqdm(todo, desc=f"exporting to {out_dir}", unit="img",
                  disable=not progress or not todo):
        # Atomic: an interrupted export never leaves a truncated PNG that looks finished.
        digit = Image.fromarray(images[i].numpy())
        atomic_write(out_dir / names[i], lambda f: digit.save(f, format="PNG"), fsync=False)
    return len(todo)


def real_image_files(real: str | Path = REAL_DIR, data_dir: str | Path | None = None) -> list[Path]:
    """The files of the real set; the default folder is first filled with the MNIST test set."""
    if Path(real) == Path(REAL_DIR):
        written = export_real_images(resolve_data_dir(str(data_dir) if data_dir else None), real)
        if written:
            print(f"real: exported {written} MNIST test images to {real}")
    files = image_files(real)
    if not files:
        raise UserError((f"no real folder {real}" if not Path(real).is_dir() else
                         f"the real folder {real} is empty") + ": pass a folder of real digits, "
                        f"or drop --real to compare with the MNIST test set ({REAL_DIR})")
    return files


def cache_path(cache_dir: str | Path, name: str, files: list[Path], network: nn.Module) -> Path:
    """cache_dir/real_<name>_<key>.npz, the key a hash of the files (names and contents) and of
    the network's weights: a change of either gives another path, a copy of the set the same."""
    h = hashlib.sha256(name.encode())
    for key, t in network.state_dict().items():
        h.update(key.encode())
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    for f in files:
        data = f.read_bytes()
        h.update(f"\0{f.name}\0{len(data)}\0".encode())
        h.update(data)
    return Path(cache_dir) / f"real_{name}_{h.hexdigest()[:16]}.npz"


def real_statistics(real: str | Path, files: list[Path], network: nn.Module, dims: int,
                    cache_dir: str | Path, batch_size: int,
                    device: torch.device | str) -> dict[str, np.ndarray]:
    """The real set in the network's features, from the cache if there: {"mu", "sigma"}, their
    mean and covariance, and for the MNIST classifier also "features" themselves (N, 128), which
    precision and recall compare point by point (10 MB for the test set; Inception's 2048-dim
    features are not kept)."""
    mnist = isinstance(network, MnistClassifier)
    metric, name = ("MNIST-FD", f"mnist{dims}") if mnist else ("FID", f"inception{dims}")
    path = cache_path(cache_dir, name, files, network)
    if path.is_file():
        try:
            with np.load(path) as z:
                stats = {key: z[key] for key in z.files}
            if not {"mu", "sigma"} <= set(stats):
                raise KeyError("mu, sigma")
            if "features" in stats or not mnist:  # else a cache from before precision and recall
                print(f"real statistics: {path} (cached)")
                return stats
        except (OSError, ValueError, KeyError, zipfile.BadZipFile, EOFError) as e:
            print(f"warning: {path} is damaged ({type(e).__name__}); computing it again",
                  file=sys.stderr)
    check_enough_images(len(files), dims, str(real), metric, "use a larger real set")
    images = read_images(real, files)  # checks every file before the long computation
    print(f"real statistics: {metric} features of {len(files)} images in {real}")
    features = network_features(network, images, dims, batch_size, device)
    stats = dict(zip(["mu", "sigma"], feature_statistics(features)))
    if mnist:
        stats["features"] = features  # float64, as the generated set's: the same distances
    # A file: no ".npz" appended. Not kept, the statistics (minutes with Inception) still score.
    if keep_or_warn(path, lambda f: np.savez(f, **stats), "the real statistics",
                    "they will be computed again next time: pass a writable --cache-dir"):
        print(f"real statistics: saved to {path}")
    return stats


# ----------------------------------------------------------------------------- the generated folder

def sample_command(folder: str | Path, metric: str = "mnist") -> str:
    """The inference.py command that fills a folder: 1,000 images are plenty for MNIST-FD's 128
    dims; FID's 2048 need more, and the standard FID compares 10,000 with the 10,000 test digits.
    It samples runs/default's weights, so it says how to name another run's."""
    per_class = 100 if metric == "mnist" else 1000
    return (f"python inference.py --num-per-class {per_class} --out-dir {folder} (with "
            "--checkpoint RUN/model.pth for a run other than runs/default)")


def read_fake_folder(folder: str | Path, metric: str = "mnist") -> ImageFolder:
    """The generated images; none there means nothing was sampled yet: say how to."""
    files = image_files(folder)
    if not files:
        raise UserError(f"no images in {folder}: sample them first with "
                        f"{sample_command(folder, metric)}")
    return read_images(folder, files)


# ------------------------------------------------------------------------------ FID (pytorch-fid)

class InceptionWeightsMissing(UserError):
    """The FID weights of InceptionV3 are neither in the torch hub cache nor downloadable."""


def load_inception(dims: int = 2048, device: torch.device | str = "cpu") -> nn.Module:
    """pytorch-fid's InceptionV3 returning the `dims`-dim features (2048 = the final pool, the
    standard FID). Downloads its weights once into the torch hub cache."""
    from pytorch_fid.inception import FID_WEIGHTS_URL, InceptionV3

    path = Path(torch.hub.get_dir()) / "checkpoints" / FID_WEIGHTS_URL.rsplit("/", 1)[-1]
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


def network_features(network: nn.Module, images: ImageFolder, dims: int, batch_size: int,
                     device: torch.device | str) -> np.ndarray:
    """(N, dims) features of the images: the MNIST classifier's penultimate layer, or pytorch-fid's
    InceptionV3 (which converts each file to RGB in [0, 1] and resizes it to 299 x 299)."""
    if isinstance(network, MnistClassifier):
        check_mnist_size(images.pixels, f"the images in {images.path}")
        return classify(network, images.pixels, batch_size, device)[0]
    from pytorch_fid.fid_score import get_activations

    # num_workers=0: the PNGs are tiny and the network is the cost; workers only add a start-up.
    return get_activations([str(f) for f in images.files], network,
                           min(batch_size, len(images.files)), dims, device, num_workers=0)


# ---------------------------------------------------------------------- the MNIST scores

def check_mnist_size(pixels: torch.Tensor, what: str) -> None:
    """The classifier's fc layer fixes its input to 28 x 28."""
    if tuple(pixels.shape[1:]) != (28, 28):
        raise UserError(f"{what} are {pixels.shape[2]} x {pixels.shape[1]} pixels; the MNIST "
                        "classifier reads 28 x 28 digits")


# ------------------------------------------------------------------------------ main

def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description="FID, MNIST-FD, precision, recall and class accuracy of a folder of generated "
                    "digits against the MNIST test set.",
        epilog=f"Sample the folder first: {sample_command(FAKE_DIR)} (1,000 digits; "
               "--num-per-class 1000 for the standard FID on 10,000).")
    p.add_argument("--metric", choices=["inception", "mnist", "all"], default="all",
                   help="inception = FID; mnist = MNIST-FD, precision, recall and class accuracy; "
                        "default: all")
    p.add_argument("--fake", default=FAKE_DIR,
                   help=f"generated images named <index>_<label>.png (default: {FAKE_DIR})")
    p.add_argument("--real", default=REAL_DIR,
                   help=f"real images (default: {REAL_DIR}, filled with the MNIST test set)")
    p.add_argument("--data-dir", default=None,
                   help="folder holding MNIST/raw/ and the classifier "
                        "(default: $DIT_DATA_DIR or ./data)")
    p.add_argument("--cache-dir", default=CACHE_DIR,
                   help=f"where the real statistics are cached (default: {CACHE_DIR})")
    p.add_argument("--dims", type=int, choices=INCEPTION_DIMS, default=None,
                   help="Inception feature size, for the FID (default: 2048, the pool features "
                        "of the standard FID)")
    p.add_argument("--device", default=None, help="cuda or cpu (default: cuda when present)")
    p.add_argument("--batch-size", type=int, default=100,
                   help="images per batch through Inception (default: 100); the small MNIST "
                        "classifier takes at least 500 at a time")
    return p


def run(args: argparse.Namespace) -> None:
    t0 = time.time()
    device = pick_device(args.device)
    if args.batch_size <= 0:
        raise UserError(f"--batch-size must be positive, got {args.batch_size}")
    if args.dims is not None and args.metric == "mnist":
        raise UserError("--dims sets the Inception features of the FID, which --metric mnist does "
                        "not compute: drop --dims, or pass --metric inception or all")
    args.dims = args.dims or 2048

    # 1. The generated folder first, and enough images of the right size for each score's
    #    features: a bad folder fails in seconds, before the real set is exported or a network
    #    is loaded. With --metric all, FID is skipped with a warning where it cannot be computed
    #    (too few images for its features, no weights) and the MNIST scores still come.
    fake = read_fake_folder(args.fake, args.metric)
    more = f"sample more: {sample_command(args.fake, args.metric)}"
    fid_skipped = None  # why FID cannot be computed here, with --metric all
    if args.metric != "mnist":
        try:
            check_enough_images(len(fake.files), args.dims, args.fake, "FID",
                                f"{more}, or pass a smaller --dims (64, 192 or 768)")
        except UserError as e:
            if args.metric == "inception":
                raise
            fid_skipped = e
    if args.metric != "inception":
        check_enough_images(len(fake.files), MnistClassifier.FEATURE_DIMS, args.fake, "MNIST-FD",
                            more)
        check_mnist_size(fake.pixels, f"the images in {args.fake}")
    print(f"device: {device} | metric: {args.metric}")

    # 2. The real set: the MNIST test set, exported once.
    real_files = real_image_files(args.real, args.data_dir)

    # 3. The networks: Inception's weights (downloaded once, if they can be), and the MNIST
    #    classifier (trained once, in about a minute).
    inception = classifier = None
    if args.metric != "mnist" and fid_skipped is None:
        try:
            inception = load_inception(args.dims, device)
        except UserError as e:  # InceptionWeightsMissing
            if args.metric == "inception":
                raise
            fid_skipped = e
    if fid_skipped is not None:
        print(f"warning: FID skipped: {fid_skipped}", file=sys.stderr)
    if args.metric != "inception":
        classifier = load_classifier(resolve_data_dir(args.data_dir), load_mnist, device)
    print(f"scoring {len(fake.files)} images in {args.fake} "
          f"against {len(real_files)} in {args.real}")

    # 4. The scores, one per line: `FID: 12.34` is easy to grep.
    if inception is not None:
        with out_of_memory_as_error(f"the Inception network ran out of memory on {device}: pass "
                                    "a smaller --batch-size"):
            real = real_statistics(args.real, real_files, inception, args.dims, args.cache_dir,
                                   args.batch_size, device)
            fake_features = network_features(inception, fake, args.dims, args.batch_size, device)
        mu, sigma = feature_statistics(fake_features)
        print(f"FID: {frechet_distance(mu, sigma, real['mu'], real['sigma']):.2f}")
    if classifier is not None:
        batch_size = max(args.batch_size, 500)  # the classifier is small: big batches fit anywhere
        real = real_statistics(args.real, real_files, classifier, MnistClassifier.FEATURE_DIMS,
                               args.cache_dir, batch_size, device)
        real_labels = labels_from_names(real_files)[0]  # None for names without a digit
        scores = mnist_scores(classifier, fake.pixels, fake.labels, real, batch_size, device,
                              real_labels)
        print(f"MNIST-FD: {scores['mnist_fd']:.3f}")
        print(f"precision: {scores['precision']:.4f}")
        print(f"recall: {scores['recall']:.4f}")
        if scores["per_class_recall"] is not None:
            print(per_digit("recall", scores["per_class_recall"]))
        if scores["class_accuracy"] is None:
            print(f"warning: class accuracy skipped: {fake.no_labels_reason}", file=sys.stderr)
        else:
            print(f"class accuracy: {scores['class_accuracy']:.4f}")
            print(per_digit("class accuracy", scores["per_class_accuracy"]))
    print(f"done in {time.time() - t0:.0f} s")


def per_digit(name: str, shares: dict[int, float]) -> str:
    """One score split by digit, on one line: `recall per digit: 0: 0.812  1: 0.904 ...`."""
    return f"{name} per digit: " + "  ".join(f"{k}: {v:.3f}" for k, v in shares.items())


def main(argv: list[str] | None = None) -> int:
    return exit_status(run, build_parser().parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
