"""Folders of digits as image files: names that carry the label, and reading them back with checks.

Digits saved as PNGs (the exported MNIST test set, the samples of `inference.py --num-per-class`)
are named `<index>_<label>.png`, so that the label travels with the file; `read_images` reads such
a folder back, with the checks a folder a person filled needs (only images, all of one size).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from support.cli import UserError

FAKE_DIR = "images/fake"  # generated digits: inference.py --num-per-class writes them here and
#                            fid_computer.py scores them from here (git-ignored)

# What labelled_file_name writes (00042_7.png), matched whole (fullmatch: a name may not go on
# after ".png", not even with a newline) and in ASCII digits only (\d would take any script's).
LABELLED_NAME = re.compile(r"(\d+)_(\d+)\.png", re.ASCII)


def labelled_file_name(index: int, label: int) -> str:
    """`<5-digit index>_<label>.png`, e.g. 00042_7.png: the name of a digit saved as an image (the
    exported test set, the samples of inference.py), from which fid_computer.py reads the label."""
    return f"{index:05d}_{label}.png"


def image_files(folder: str | Path) -> list[Path]:
    """The files of a folder, sorted by name ([] if there is no such folder); hidden files, such
    as the temporary files of a write in progress, do not count."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))


@dataclass
class ImageFolder:
    """The checked images of one folder, sorted by file name."""
    path: Path
    files: list[Path]
    pixels: torch.Tensor  # uint8 (N, H, W), grayscale 0..255
    labels: torch.Tensor | None  # int64 (N,) read from <index>_<label>.png; None if names lack them
    no_labels_reason: str = ""  # why labels is None


def labels_from_names(files: list[Path], num_classes: int = 10) -> tuple[torch.Tensor | None, str]:
    """Labels parsed from <index>_<label>.png names, or (None, why) if any name has none."""
    labels = []
    for f in files:
        m = LABELLED_NAME.fullmatch(f.name)
        if m is None or int(m.group(2)) >= num_classes:
            return None, (f"the file names in {f.parent} do not all look like <index>_<digit>.png "
                          f"(e.g. {f.name!r}), so the digit each image was made for is unknown")
        labels.append(int(m.group(2)))
    return torch.tensor(labels), ""


def read_images(folder: str | Path, files: list[Path]) -> ImageFolder:
    """Open every file as a grayscale image. A file that is not an image, or images of different
    sizes, are a UserError naming the file: better than a crash deep inside a DataLoader."""
    from PIL import Image, UnidentifiedImageError

    arrays, first = [], None
    for f in tqdm(files, desc=f"reading {folder}", unit="img", leave=False,
                  disable=len(files) < 5000):
        try:
            with Image.open(f) as img:
                mode = img.mode
                img = img.convert("L")  # reads the pixels; MNIST and our samples are grayscale
        except (UnidentifiedImageError, OSError, ValueError) as e:
            raise UserError(f"{f} is not a readable image ({type(e).__name__}): only images may "
                            f"be in {folder}; move that file out") from None
        if mode in ("I", "F") or mode.startswith("I;"):  # Pillow clips these to 0-255, not scales
            raise UserError(f"{f} has {mode} pixels (16-bit integers or floats), which would be "
                            "read clipped: save the digits as 8-bit images")
        if first is None:
            first = (f, img.size)
        elif img.size != first[1]:
            raise UserError(f"images of mixed sizes in {folder}: {first[0].name} is "
                            f"{first[1][0]} x {first[1][1]} but {f.name} is {img.size[0]} x "
                            f"{img.size[1]}; all images must have the same size")
        arrays.append(np.asarray(img))
    labels, reason = labels_from_names(files)
    return ImageFolder(Path(folder), files, torch.from_numpy(np.stack(arrays)), labels, reason)
