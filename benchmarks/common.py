"""What the benchmark scripts share: training by train.py's own command line, a model rebuilt from
its checkpoint as inference.py rebuilds it, and the MNIST scores of digits held in memory.

No benchmark imports a script: training runs `python train.py ...` in a process of its own, as a
reader would run it, and everything else comes from the library modules the scripts use.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent  # the project: train.py, config.py, ...
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def run_script(script: str, flags: list[str]) -> int:
    """`python SCRIPT *flags` (a path inside the project) from the project's folder, its output
    shown as it comes; returns its exit status (0, 1 for a user error, 130 when interrupted)."""
    return subprocess.run([sys.executable, str(ROOT / script), *flags], cwd=ROOT).returncode


def run_train(flags: list[str]) -> int:
    """`python train.py *flags`, as a reader runs it (run_script)."""
    return run_script("train.py", flags)


def load_model(path: str | Path, device="cpu", autoguided: bool = True, **sample):
    """(the model to sample with, config) of a checkpoint, rebuilt from its stored config exactly
    as inference.py does it (dit.load_ema): the EMA weights in eval mode, guided away from the
    checkpoint's weak model when it keeps one (with autoguided=False, the plain EMA DiT). `sample`
    sets fields of the config's sampling settings first, as inference.py's flags do (None keeps
    the checkpoint's). A model trained without dropped labels samples unguided by
    classifier-free guidance, and asking it for guidance is refused, as in inference.py."""
    from config import Config
    from dit import load_ema
    from support.checkpoint import read_checkpoint

    checkpoint = read_checkpoint(path)
    cfg = Config.from_dict(checkpoint["config"], source=path)
    asked = sample.get("cfg_scale") not in (None, 1.0)
    cfg.drop_guidance_without_null_label("--cfg-scale" if asked else "", path)
    for name, value in sample.items():
        if value is not None:
            setattr(cfg.sample, name, value)
    cfg.sample.check(cfg.diffusion.num_timesteps)
    ema, model = load_ema(checkpoint, cfg, path, device)
    return (model if autoguided else ema), cfg


def load_decoder(path: str | Path, device="cpu"):
    """The autoencoder that turns a latent model's samples into pixels, from its checkpoint and
    the config stored there, as inference.py reads it (autoencoder.autoencoder_of); None for a
    model of pixels, whose samples are pixels already. Pass it to support.sampling.generate as
    `autoencoder`."""
    from autoencoder import autoencoder_of
    from config import Config
    from support.checkpoint import read_checkpoint

    checkpoint = read_checkpoint(path)
    cfg = Config.from_dict(checkpoint["config"], source=path)
    return autoencoder_of(checkpoint, cfg.autoencoder, path, device)


def guidance_label(model, cfg) -> str:
    """How `model` (from load_model) guides, for a printed row: 'guidance 1.2, autoguidance 1.5',
    or 'guidance 1.6' for a model that samples without autoguidance."""
    from dit import Autoguided

    auto = f", autoguidance {cfg.sample.autoguide_scale:g}" if isinstance(model, Autoguided) else ""
    return f"guidance {cfg.sample.cfg_scale:g}{auto}"


class MnistJudge:
    """MNIST-FD, precision, recall and class accuracy of digits in memory against the MNIST test
    set, in the features
    of the MNIST classifier (trained once into the data folder, as fid_computer.py does). The
    10,000 test digits are the same pixels that fid_computer.py exports to images/real, so the
    scores are the script's."""

    def __init__(self, data_dir: str | None = None, device="cpu"):
        from dataset import load_mnist, resolve_data_dir
        from support.mnist_classifier import classifier_statistics, load_classifier

        data_dir = resolve_data_dir(data_dir)
        self.device = device
        self.classifier = load_classifier(data_dir, load_mnist, device)
        test_images, self.test_labels = load_mnist(data_dir, train=False)
        self.real = classifier_statistics(self.classifier, test_images, device=device)

    def score(self, images, labels=None) -> dict:
        """images: uint8 (N, 28, 28), or floats (N, 1, 28, 28) in [-1, 1] as the samplers return
        them, rounded as a saved PNG would be; labels: the digit each was drawn as (or None)."""
        import torch

        from dataset import to_uint8
        from support.mnist_classifier import mnist_scores

        pixels = images.detach().cpu()
        if pixels.dtype != torch.uint8:
            pixels = to_uint8(pixels)[:, 0]
        labels = None if labels is None else torch.as_tensor(labels).cpu()
        return mnist_scores(self.classifier, pixels, labels, self.real, device=self.device,
                            real_labels=self.test_labels)
