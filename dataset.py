"""MNIST as tensors in memory, and shuffled batches cut from them.

torchvision reads (and, when online, downloads) the four original IDX files once; after that the
60,000 training digits live in one uint8 tensor of 60000 x 28 x 28 = 47 MB, on the training device
(CPU memory or the GPU). A batch is then a single index operation plus a scale to [-1, 1], instead
of 60,000 PIL conversions per epoch through a DataLoader. That keeps the data path trivial and on
the training device. Measured with `benchmarks/train_throughput.py --naive` on 2 cores, a naive
version (this pipeline per sample through a DataLoader, plus attention written out) trained 7%
slower for a model of 16 tokens (width 192, depth 6) and 1.9x slower for one of 196 (patch 2, width
64, depth 4) (benchmarks/README.md, "Against a naive implementation").

Where the data lives: `--data-dir`, else the environment variable DIT_DATA_DIR, else `./data`.
torchvision expects the files in `<data dir>/MNIST/raw/`; when they are there nothing is downloaded.
"""

from __future__ import annotations

import hashlib
import math
import os
from pathlib import Path
from typing import Iterator
from urllib.error import URLError

import torch

from support.cli import UserError

DATA_DIR_ENV = "DIT_DATA_DIR"  # environment variable that names the data directory
DEFAULT_DATA_DIR = "data"  # git-ignored folder in the project
# The four original files and their MD5s, as published with MNIST and checked by torchvision.
MNIST_FILES = {
    "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
    "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
    "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
    "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
}


def resolve_data_dir(flag: str | None = None) -> Path:
    """The data directory: the flag if given, else $DIT_DATA_DIR, else ./data."""
    return Path(flag or os.environ.get(DATA_DIR_ENV) or DEFAULT_DATA_DIR)


def load_mnist(data_dir: str | Path, train: bool = True,
               download: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """Return (images, labels): uint8 (N, 28, 28) in 0..255 and int64 (N,) in 0..9.

    Downloads into `<data_dir>/MNIST/raw/` when the files are missing and `download` is true.
    Raises UserError with what to do when MNIST is neither there nor downloadable.
    """
    from torchvision.datasets import MNIST  # imported here: torchvision is slow to import

    data_dir = Path(data_dir)
    raw = data_dir / "MNIST" / "raw"
    try:
        ds = MNIST(str(data_dir), train=train, download=download)
    except Exception as e:  # noqa: BLE001 - a damaged file fails in many ways: a RuntimeError,
        # or a ValueError or AssertionError from the reader of a header cut short
        # torchvision's download error is "Error downloading X:", then one line per mirror:
        # its first line and its last say what failed and why
        lines = [line.strip() for line in str(e).splitlines() if line.strip()]
        reason = " ".join(dict.fromkeys([lines[0], lines[-1]])) if lines else type(e).__name__
        damaged = damaged_files(raw)
        if damaged:  # the files are there but cut short: "not found" would send the user astray
            # an unpacked file comes back from its .gz, if that is there and whole
            unpacks = all(not name.endswith(".gz") and (raw / f"{name}.gz").is_file()
                          and f"{name}.gz" not in damaged for name in damaged)
            fix = (": the next run unpacks the .gz files again" if unpacks else " and copy the "
                   "original .gz files in again (with internet they are downloaded again)")
            raise UserError(f"MNIST in {raw} is damaged ({reason}): {', '.join(damaged)} cut short "
                            f"or corrupt; delete {'it' if len(damaged) == 1 else 'them'}{fix}"
                            ) from None
        if not isinstance(e, (RuntimeError, URLError, OSError)):
            raise  # not a missing or damaged file: a bug, to be seen whole
        how = "could not be downloaded" if download else "downloading is off"
        raise UserError(
            f"MNIST not found in {raw} and {how} ({reason}): copy the four MNIST files "
            f"(train-images-idx3-ubyte.gz etc.) into {raw}, or point --data-dir / ${DATA_DIR_ENV} "
            "to a folder that has MNIST/raw/ in it"
        ) from None
    return ds.data, ds.targets


def damaged_files(raw: Path) -> list[str]:
    """The MNIST files in `raw` that are there but not whole: a .gz whose MD5 is not the
    original's, or an unpacked file shorter or longer than its own header says."""
    damaged = []
    for packed, md5 in MNIST_FILES.items():
        if (raw / packed).is_file():
            if hashlib.md5((raw / packed).read_bytes()).hexdigest() != md5:
                damaged.append(packed)
        unpacked = raw / packed.removesuffix(".gz")
        if unpacked.is_file() and not _idx_is_whole(unpacked):
            damaged.append(unpacked.name)
    return damaged


def _idx_is_whole(path: Path) -> bool:
    """Whether an unpacked IDX file holds exactly what its header promises. The header is two zero
    bytes, a type byte (8 = uint8), the number of dimensions, then each dimension as a 4-byte
    big-endian integer; one byte per value follows."""
    with open(path, "rb") as f:
        magic = f.read(4)
        if len(magic) < 4 or magic[:3] != bytes([0, 0, 8]):
            return False
        dims = f.read(4 * magic[3])
    if len(dims) < 4 * magic[3]:
        return False
    sizes = [int.from_bytes(dims[i : i + 4], "big") for i in range(0, len(dims), 4)]
    return path.stat().st_size == 4 + len(dims) + math.prod(sizes)


def to_model_range(images: torch.Tensor) -> torch.Tensor:
    """uint8 (N, H, W) in 0..255 -> float32 (N, 1, H, W) in [-1, 1], the range the model sees."""
    return images.unsqueeze(1).float().div(127.5).sub(1.0)


def to_uint8(x: torch.Tensor) -> torch.Tensor:
    """Model range [-1, 1] (clipped) -> uint8 0..255, the inverse of `to_model_range`."""
    return ((x.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)


class InMemoryBatches:
    """Shuffled batches from images and labels held in memory, on `device`.

    Each epoch's order is a permutation drawn from (seed, epoch) alone, so a resumed run replays
    the same order and can skip the batches it has already seen. With several processes
    (DistributedDataParallel) every rank draws the same permutation and takes every
    world_size-th index from it, so the shards never overlap.
    """

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, batch_size: int,
                 device: torch.device | str = "cpu", seed: int = 0, rank: int = 0,
                 world_size: int = 1):
        if len(images) == 0:
            raise UserError("the training set is empty: check --data-dir")
        # uint8 digits (N, 28, 28): 47 MB for all of MNIST; or the latent preset's float latents
        # (N, C, h, w), already in the range the model sees
        self.images = images.to(device)
        self.labels = labels.to(device)
        self.batch_size = batch_size
        self.seed, self.rank, self.world_size = seed, rank, world_size
        self.per_rank = len(images) // world_size
        if self.per_rank < batch_size:
            raise UserError(f"batch size {batch_size} is larger than the {self.per_rank} training "
                            "images per process: pass a smaller --batch-size")

    def __len__(self) -> int:
        """Batches per epoch (the last, incomplete batch is dropped: every step sees a full
        batch)."""
        return self.per_rank // self.batch_size

    def epoch(self, epoch: int, skip: int = 0) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Yield (x, y) with x float (B, 1, 28, 28) in [-1, 1] (or (B, C, h, w) latents) and y
        int64 (B,), skipping the first `skip` batches (to resume in the middle of an epoch)."""
        # 1,000,003 is larger than any epoch count, so distinct (seed, epoch) pairs never give the
        # same generator seed.
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        order = torch.randperm(len(self.images), generator=g)
        # this rank's shard: every world_size-th image from its rank on
        order = order[self.rank : self.per_rank * self.world_size : self.world_size]
        order = order.to(self.images.device)
        for i in range(skip, len(self)):
            idx = order[i * self.batch_size : (i + 1) * self.batch_size]
            x = self.images[idx]
            yield (to_model_range(x) if x.dtype == torch.uint8 else x), self.labels[idx]

    def stream(self, step: int = 0) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """The batches of optimiser steps step, step + 1, ... epoch after epoch, without end: a
        run resumed at `step` sees exactly the batches that a run from step 0 sees from there."""
        epoch, skip = divmod(step, len(self))
        while True:
            yield from self.epoch(epoch, skip)
            epoch, skip = epoch + 1, 0
