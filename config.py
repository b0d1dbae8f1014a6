"""One typed configuration for the whole project: model, diffusion, training and sampling.

Every field says why it has its value, in the manner of nanoGPT's `GPTConfig`. Scripts start
from a named preset (`tiny`, `cpu`, `gpu`) and override single fields from the command line;
the checkpoint carries the whole config as plain Python types (`Config.to_dict`), so that
inference rebuilds exactly the model that was trained (`Config.from_dict`) and no script
retypes a hyperparameter.

References:
  DiT:  Peebles & Xie, "Scalable Diffusion Models with Transformers", 2023 (arXiv:2212.09748)
  DDPM: Ho, Jain & Abbeel, "Denoising Diffusion Probabilistic Models", 2020 (arXiv:2006.11239)
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any


class UserError(Exception):
    """A mistake the user can fix (bad flag value, missing file); scripts print it as one line."""


def pick_device(flag: str | None = None):
    """The torch device to run on: the flag if given, else CUDA when present, else the CPU."""
    import torch

    try:
        device = torch.device(flag or ("cuda" if torch.cuda.is_available() else "cpu"))
    except RuntimeError:
        raise UserError(f"unknown device {flag!r}: use cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"--device {flag} asked for, but PyTorch sees no CUDA GPU: use --device cpu")
    if device.type not in ("cpu", "cuda"):
        raise UserError(f"device {flag!r} is not supported here: use cpu or cuda")
    return device


@dataclass
class ModelConfig:
    image_size: int = 28  # MNIST digits are 28 x 28 pixels
    in_channels: int = 1  # grayscale
    patch_size: int = 7  # 28 / 7 = 4 x 4 = 16 tokens: on a CPU, far more learning per minute than
    #                      p = 4 (49 tokens) or p = 2 (196) in our 6-minute trials (benchmarks/README.md)
    # Width and depth: within the previous default's 9.5 minutes, a small, fast network that sees
    # more images wins, down to a point. MNIST-FD on the 2-core Xeon, 1,000 DDIM-50 samples at the
    # default eta 1 and guidance 1.6, seeds 0 and 1: width 96 depth 4 for 16 epochs 30.7 and 31.9,
    # width 128 depth 4 for 11 epochs 34.5 and 31.8. At eta 0 and guidance 1.75 (seed 0), width 192
    # depth 6 for 5 epochs (4.2M parameters, the previous default) 128.7, width 64 depth 4 for 22
    # epochs 55.3, width 96 31.0 (benchmarks/README.md, issue 14).
    hidden_size: int = 96  # token width D
    depth: int = 4  # number of DiT blocks
    num_heads: int = 4  # head width D / heads = 24
    mlp_ratio: float = 4.0  # MLP hidden width = 4 D, as in ViT and DiT
    num_classes: int = 10  # the digits 0-9; index 10 is the "null" class for guidance
    class_dropout_prob: float = 0.1  # DiT's value: 10% of labels dropped so the same network
    #                                  also learns the unconditional model that guidance needs

    def __post_init__(self) -> None:
        for name in ["image_size", "in_channels", "patch_size", "hidden_size", "depth",
                     "num_heads", "num_classes"]:
            if getattr(self, name) <= 0:
                raise UserError(f"--{name.replace('_', '-')} must be positive, got {getattr(self, name)}")
        if self.mlp_ratio <= 0:
            raise UserError(f"--mlp-ratio must be positive, got {self.mlp_ratio}")
        if self.image_size % self.patch_size != 0:
            raise UserError(
                f"patch size {self.patch_size} does not divide image size {self.image_size}: "
                "choose one of 1, 2, 4, 7, 14, 28 for MNIST"
            )
        if self.hidden_size % self.num_heads != 0:
            raise UserError(
                f"hidden size {self.hidden_size} is not divisible by {self.num_heads} heads: "
                "pick a hidden size that is a multiple of the number of heads"
            )
        if self.hidden_size % 4 != 0:
            raise UserError(
                f"hidden size {self.hidden_size} must be a multiple of 4 for the 2D sin-cos "
                "position embedding"
            )


@dataclass
class DiffusionConfig:
    num_timesteps: int = 1000  # T = 1000 as in DDPM (section 4) and DiT
    beta_start: float = 1e-4  # DDPM's linear schedule, beta_1 = 1e-4 ...
    beta_end: float = 0.02  # ... to beta_T = 0.02: alpha-bar_T ~ 4e-5, so x_T is nearly pure noise


@dataclass
class TrainConfig:
    batch_size: int = 64  # on 2 CPU cores, 1.8x the updates of batch 128 in the same 9 minutes:
    #                        MNIST-FD 66.5 against 102.1 (the 4.2M model; benchmarks/README.md)
    lr: float = 4e-3  # AdamW peak rate; small models tolerate far more than DiT's 1e-4
    weight_decay: float = 0.0  # DiT trains without weight decay
    # Steps of linear learning-rate warm-up (0 = the full rate from the first step). For the
    # previous default (4.2M parameters) 200 steps of warm-up cost more than they saved: class
    # accuracy 0.959 against 0.986 without, full-length runs on the 2-core EPYC (commit dfb4f6f).
    # Larger models may still want it (the gpu preset, 32M parameters, keeps 500).
    warmup_steps: int = 0
    # Cosine decay of the rate to 0 over the run (epochs or max_steps): the last steps are small
    # and average out their noise, so the raw weights end as good as the EMA (MNIST-FD 76.1,
    # against 127.6 for the raw weights of a constant rate; benchmarks/README.md).
    lr_decay: bool = True
    # Passes over the 60,000 training images: 16 x 937 = 14,992 steps, 9 minutes on the 2-core
    # Xeon, where the previous default (5 epochs of a 4.2M-parameter model) took 9.6.
    epochs: int = 16
    max_steps: int = 0  # if > 0, the run's length in optimiser steps, replacing `epochs`
    time_limit: float = 0.0  # if > 0, stop after this many minutes of training (over resumes)
    grad_clip: float = 1.0  # clip the gradient norm: one bad batch cannot wreck the weights
    ema_decay: float = 0.9999  # DiT's EMA decay, reached only after the warm-up below
    ema_warmup: bool = True  # decay = min(ema_decay, (1 + step) / (10 + step)): a short run's EMA
    #                          follows the weights instead of staying near the random start
    min_snr_gamma: float = 5.0  # min-SNR-gamma loss weighting (Hang et al. 2023, gamma = 5 as
    #                             there); 0 = plain MSE. Steers effort to the noisy steps where the
    #                             digit's class is decided
    seed: int = 0  # one seed for weights, batches and noise: runs are reproducible
    log_every: int = 50  # steps between rows of the loss log
    sample_every: int = 0  # steps between sample grids; 0 = at the end of every epoch
    checkpoint_every: int = 500  # steps between checkpoints (and one at the end)


@dataclass
class SampleConfig:
    sampler: str = "ddim"  # DDIM reaches DDPM-like quality in ~50 steps instead of 1000
    steps: int = 50  # sampler steps for DDIM, PLMS and DPM-Solver++ (DDPM always uses all T)
    # DDIM's noise (Song et al. 2021, Eq. 16): 0 = deterministic, 1 = fresh noise at each step as
    # in DDPM. The fresh noise lets each step correct some of the earlier steps' errors: with eta 0
    # the default's strokes were grainy and broken at the patch borders, with eta 1 they are
    # smooth, and over two seeds MNIST-FD fell from 34.3 to 31.3 at about the same class accuracy
    # (eta 0 at guidance 1.75 against eta 1 at 1.6; benchmarks/README.md)
    eta: float = 1.0
    cfg_scale: float = 1.6  # classifier-free guidance; 1 = plain conditional model. Chosen by a
    #                         sweep on the default model, two seeds: more guidance raises class
    #                         accuracy and makes the digits alike, which MNIST-FD punishes; 1.5
    #                         read 0.977 of seed 0's digits right, 1.6 0.987 (benchmarks/README.md)


@dataclass
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    diffusion: DiffusionConfig = field(default_factory=DiffusionConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    sample: SampleConfig = field(default_factory=SampleConfig)
    preset: str = "cpu"  # the name of the preset this config started from (for logs only)

    def to_dict(self) -> dict[str, Any]:
        """Plain nested dict of ints, floats, bools and strings: safe for weights_only loading."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Config":
        """Inverse of `to_dict`. An unknown key is an error, never silently dropped."""
        sections = {"model": ModelConfig, "diffusion": DiffusionConfig,
                    "train": TrainConfig, "sample": SampleConfig}
        kwargs: dict[str, Any] = {}
        for key, value in d.items():
            if key in sections:
                kwargs[key] = sections[key](**value)
            elif key == "preset":
                kwargs[key] = value
            else:
                raise KeyError(f"unknown config section {key!r}")
        return cls(**kwargs)


def _preset_tiny() -> Config:
    # A smoke-test model: one training step takes a few milliseconds on a CPU. Used by the tests.
    return Config(
        model=ModelConfig(patch_size=7, hidden_size=32, depth=2, num_heads=2),
        train=TrainConfig(batch_size=16, epochs=1, warmup_steps=10, log_every=1,
                          checkpoint_every=50, min_snr_gamma=0.0),
        sample=SampleConfig(steps=10),
        preset="tiny",
    )


def _preset_cpu() -> Config:
    # The default: sized for a laptop CPU (its numbers are in the README's results table).
    return Config(preset="cpu")


def _preset_gpu() -> Config:
    # A larger model for a GPU: DiT-S-like width and depth.
    return Config(
        model=ModelConfig(patch_size=2, hidden_size=384, depth=12, num_heads=6),
        train=TrainConfig(batch_size=256, lr=3e-4, epochs=30, warmup_steps=500,
                          checkpoint_every=2000, lr_decay=False),  # as DiT: a constant rate
        preset="gpu",
    )


PRESETS = {"tiny": _preset_tiny, "cpu": _preset_cpu, "gpu": _preset_gpu}


def get_preset(name: str) -> Config:
    """A fresh copy of the named preset (each call builds new objects, so callers may edit it)."""
    if name not in PRESETS:
        raise UserError(f"unknown preset {name!r}: choose one of {', '.join(PRESETS)}")
    return PRESETS[name]()
