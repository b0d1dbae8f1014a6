"""One typed configuration for the whole project: model, diffusion, training and sampling.

Every field says why it has its value, in the manner of nanoGPT's `GPTConfig`. Scripts start
from a named preset (`tiny`, `cpu`, `gpu`) and override single fields from the command line
(`add_override_flags` and `Config.from_args`, at the end of this file);
the checkpoint carries the whole config as plain Python types (`Config.to_dict`), so that
inference rebuilds exactly the model that was trained (`Config.from_dict`) and no script
retypes a hyperparameter.

References:
  DiT:  Peebles & Xie, "Scalable Diffusion Models with Transformers", 2023 (arXiv:2212.09748)
  DDPM: Ho, Jain & Abbeel, "Denoising Diffusion Probabilistic Models", 2020 (arXiv:2006.11239)
"""

from __future__ import annotations

import argparse
import dataclasses
from dataclasses import dataclass, field
from typing import Any


class UserError(Exception):
    """A mistake the user can fix (bad flag value, missing file); scripts print it as one line."""


def run_reporting_user_errors(run, args) -> int:
    """A script's run(args) as its exit status: 0, or 1 with a UserError printed as one line on
    stderr ("error: ... what to do"), never a traceback for a user's mistake."""
    import sys

    try:
        run(args)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


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
    #                      p = 4 (49 tokens) or p = 2 (196) (benchmarks/README.md, "How the
    #                      previous default was chosen", and trial 13 of "Sample quality")
    # Width and depth: at a fixed CPU budget a small, fast network that sees more images wins, down
    # to a point (benchmarks/README.md, "Sample quality at the default's training time").
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
    batch_size: int = 64  # on 2 CPU cores, more updates per minute beat bigger batches
    #                        (benchmarks/README.md, "Sample quality", trials 1 and 3)
    lr: float = 4e-3  # AdamW peak rate; small models tolerate far more than DiT's 1e-4
    weight_decay: float = 0.0  # DiT trains without weight decay
    # Steps of linear learning-rate warm-up (0 = the full rate from the first step): at this size
    # the warm-up cost more than it saved (benchmarks/README.md, "Levers"). Larger models may still
    # want it (the gpu preset keeps 500).
    warmup_steps: int = 0
    # Cosine decay of the rate over the run (epochs or max_steps), towards 0 one step after the
    # last: the last steps are small and average out their noise, so the raw weights end nearly as
    # good as the EMA (benchmarks/README.md, "Sample quality", trial 7).
    lr_decay: bool = True
    epochs: int = 16  # passes over the 60,000 images, 16 x 937 = 14,992 steps: what fits the
    #                   default's CPU budget (README, Results)
    max_steps: int = 0  # if > 0, the run's length in optimiser steps, replacing `epochs`
    time_limit: float = 0.0  # if > 0, stop after this many minutes of training (over resumes)
    grad_clip: float = 1.0  # clip the gradient norm: one bad batch cannot wreck the weights
    ema_decay: float = 0.9999  # DiT's EMA decay: the cap of the warm-up below, which reaches it only
    #                            at step ~90,000 (the default ends at step 14,992 with 0.9994)
    ema_warmup: bool = True  # decay = min(ema_decay, (1 + step) / (10 + step)): a short run's EMA
    #                          follows the weights instead of staying near the random start
    min_snr_gamma: float = 5.0  # min-SNR-gamma loss weighting (Hang et al. 2023, gamma = 5 as
    #                             there); 0 = plain MSE. Steers effort to the noisy steps where the
    #                             digit's class is decided
    seed: int = 0  # one seed for weights, batches and noise: runs are reproducible
    log_every: int = 50  # steps between rows of the loss log
    eval_every: int = 500  # steps between held-out losses: a forward pass over eval_images
    eval_images: int = 1000  # held-out test digits, 100 per tenth of the range of t
    sample_every: int = 0  # steps between sample grids; 0 = at the end of every epoch
    checkpoint_every: int = 500  # steps between checkpoints (and one at the end)

    def check(self) -> None:
        """A UserError naming the flag of the first value that cannot train."""
        for name in ["epochs", "batch_size", "log_every", "checkpoint_every", "eval_every",
                     "eval_images"]:
            if getattr(self, name) <= 0:
                raise UserError(f"--{flag(name)} must be positive, got {getattr(self, name)}")
        for name in ["max_steps", "sample_every", "warmup_steps", "time_limit"]:
            if getattr(self, name) < 0:
                raise UserError(f"--{flag(name)} must be 0 or more, got {getattr(self, name)}")
        if not self.lr > 0:
            raise UserError(f"--lr must be positive, got {self.lr}")
        if not 0 <= self.ema_decay < 1:
            raise UserError(f"--ema-decay must be in [0, 1), got {self.ema_decay}")


@dataclass
class AutoencoderConfig:
    """The first stage of the `latent` preset (autoencoder.py): a KL autoencoder whose latents
    the DiT denoises instead of pixels."""
    latent_channels: int = 4  # C of the C x 8 x 8 latent: 256 numbers for 784 pixels. Its
    #                           reconstructions score MNIST-FD 22.4 against 21.9 for the real
    #                           digits; 2 channels lost detail (24.3), 8 added nothing (22.4)
    #                           (benchmarks/README.md, "Latent DiT")
    channels: int = 32  # convolution width at 16 x 16 (twice that at 8 x 8); 16 trains in half the
    #                     time but loses 4.4 MNIST-FD in its reconstructions
    kl_weight: float = 1e-3  # small, so the latent keeps the strokes (1e-2 blurred them: 23.6),
    #                          but not 0: each latent keeps some noise (sigma 0.075; 0.011 at
    #                          1e-4), so nearby latents must decode to nearby digits
    epochs: int = 1  # passes over the 60,000 digits: one already reconstructs within 0.5 MNIST-FD
    #                  of the real digits, and costs about 2.5 of the DiT's epochs in time
    batch_size: int = 64  # as the DiT's
    lr: float = 2e-3  # AdamW, decayed along a half cosine

    def __post_init__(self) -> None:
        for name in ["latent_channels", "channels", "epochs", "batch_size"]:
            if getattr(self, name) <= 0:
                raise UserError(f"autoencoder {name} must be positive, got {getattr(self, name)}")
        if self.channels % 8 != 0:  # GroupNorm with 8 groups
            raise UserError(f"autoencoder channels must be a multiple of 8, got {self.channels}")
        if not (self.kl_weight >= 0 and self.lr > 0):
            raise UserError(f"autoencoder kl_weight must be 0 or more and lr positive, got "
                            f"{self.kl_weight} and {self.lr}")


SAMPLERS = ("ddpm", "ddim", "plms", "dpm-solver++")  # the samplers of diffusion.py


@dataclass
class SampleConfig:
    sampler: str = "ddim"  # one of SAMPLERS; DDIM reaches DDPM-like quality in ~50 steps instead of 1000
    steps: int = 50  # sampler steps for DDIM, PLMS and DPM-Solver++ (DDPM always uses all T)
    # DDIM's noise (Song et al. 2021, Eq. 16): 0 = deterministic, 1 = fresh noise at each step as
    # in DDPM. The fresh noise lets later steps correct some of the earlier steps' errors: with eta 0
    # the default's strokes were grainy and broken at the patch borders, with eta 1 smooth
    # (benchmarks/README.md, "Sample quality", the eta table)
    eta: float = 1.0
    cfg_scale: float = 1.6  # classifier-free guidance; 1 = plain conditional model. More guidance
    #                         reads as the right digit more often but makes the digits alike, which
    #                         MNIST-FD punishes: 1.6 is the least that kept class accuracy at 0.98
    #                         (benchmarks/README.md, "Sample quality", the last table)


@dataclass
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    diffusion: DiffusionConfig = field(default_factory=DiffusionConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    sample: SampleConfig = field(default_factory=SampleConfig)
    # None for a model of pixels; the latent preset's first stage otherwise (autoencoder.py)
    autoencoder: AutoencoderConfig | None = None
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
            elif key == "autoencoder":
                kwargs[key] = None if value is None else AutoencoderConfig(**value)
            elif key == "preset":
                kwargs[key] = value
            else:
                raise KeyError(f"unknown config section {key!r}")
        return cls(**kwargs)

    @classmethod
    def from_args(cls, args: argparse.Namespace, resumed: "Config | None" = None) -> "Config":
        """The preset named by args.preset, or the config of a run being resumed, with the
        override flags of `add_override_flags` that were given applied, then checked. A resumed
        run may change only how long it goes on and how often it reports (RESUMABLE_FLAGS)."""
        cfg = resumed if resumed is not None else get_preset(args.preset)
        for name in [*TRAIN_FLAGS, *MODEL_FLAGS]:
            if not hasattr(args, name):  # not given: keep the preset's value
                continue
            value = getattr(args, name)
            section = cfg.model if name in MODEL_FLAGS else cfg.train
            if resumed is not None and name not in RESUMABLE_FLAGS and value != getattr(section, name):
                raise UserError(f"--{flag(name)} {value} differs from the run being resumed "
                                f"({getattr(section, name)}): drop the flag, or start a new run "
                                "with another --out-dir")
            setattr(section, name, value)
        cfg.model.__post_init__()  # re-check the model's sizes after the overrides
        if cfg.autoencoder is not None and cfg.model.in_channels != cfg.autoencoder.latent_channels:
            raise UserError(f"the DiT takes {cfg.model.in_channels} channels but the autoencoder "
                            f"gives {cfg.autoencoder.latent_channels}: they must be equal")
        if not 0 <= cfg.model.class_dropout_prob < 1:  # 1 would never train the labels
            raise UserError(f"--class-dropout-prob must be in [0, 1), got "
                            f"{cfg.model.class_dropout_prob}")
        cfg.train.check()
        return cfg


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


def _preset_latent() -> Config:
    # DiT as the paper runs it: the same DiT, denoising the 4 x 8 x 8 latents of a small
    # autoencoder (autoencoder.py) instead of pixels. Patch 2, DiT-XL/2's patch, cuts the latent
    # into 4 x 4 = 16 tokens, as many as the pixel default's 7 x 7 patches: the transformer costs
    # the same per image, and what differs is the space it works in (README, "Why DiT works in a
    # latent space"). 12 epochs, not 16: the autoencoder's training and the encoding take about
    # what 3 epochs of the DiT take, so the whole run fits inside the pixel default's wall time.
    # Guidance 1.4: on a 14-epoch trial run, 1.35 was the least that kept class accuracy at 0.98
    # and 1.6 cost 2x in MNIST-FD (benchmarks/README.md, "Latent DiT"); 1.4 leaves a margin.
    return Config(
        model=ModelConfig(image_size=8, in_channels=4, patch_size=2),
        autoencoder=AutoencoderConfig(),
        train=TrainConfig(epochs=12),
        sample=SampleConfig(cfg_scale=1.4),
        preset="latent",
    )


PRESETS = {"tiny": _preset_tiny, "cpu": _preset_cpu, "gpu": _preset_gpu, "latent": _preset_latent}


def get_preset(name: str) -> Config:
    """A fresh copy of the named preset (each call builds new objects, so callers may edit it)."""
    if name not in PRESETS:
        raise UserError(f"unknown preset {name!r}: choose one of {', '.join(PRESETS)}")
    return PRESETS[name]()


# ------------------------------------------------------------------------------ command line

def flag(name: str) -> str:
    """The command-line spelling of a config field: batch_size -> batch-size."""
    return name.replace("_", "-")


TRAIN_FLAGS = {  # field of TrainConfig -> help; each flag overrides the preset's value
    "epochs": "passes over the training set",
    "max_steps": "stop after this many steps (0 = all epochs)",
    "time_limit": "stop after this many minutes of training, counted over resumes (0 = no limit)",
    "batch_size": "images per optimiser step (per process)",
    "lr": "AdamW learning rate",
    "warmup_steps": "steps of linear learning-rate warm-up (0 = none)",
    "lr_decay": "after any warm-up, the rate falls along a half cosine towards 0 at the run's end "
                "(a resumed run with a new length decays towards its new end)",
    "min_snr_gamma": "min-SNR loss weighting; 0 = plain MSE",
    "ema_decay": "0 = no averaging: sample from the raw weights",
    "ema_warmup": "EMA decay min(decay, (1 + step) / (10 + step)); --no-ema-warmup uses the "
                  "fixed decay from step 0",
    "seed": "seed of the weights, batches and noise",
    "log_every": "steps between rows of log.csv",
    "eval_every": "steps between held-out losses (and one at the end)",
    "sample_every": "steps between sample grids (0 = each epoch)",
    "checkpoint_every": "steps between checkpoints",
}
MODEL_FLAGS = {  # field of ModelConfig -> help
    "patch_size": "pixels per patch side (28 / p tokens per side; latent cells for --preset latent)",
    "hidden_size": "token width D",
    "depth": "number of DiT blocks",
    "num_heads": "attention heads (must divide the width)",
    "mlp_ratio": "MLP width / token width",
    "class_dropout_prob": "share of labels dropped, for classifier-free guidance",
}
# What a resumed run may change: how long it goes on and how often it reports.
RESUMABLE_FLAGS = {"epochs", "max_steps", "time_limit", "log_every", "eval_every",
                   "sample_every", "checkpoint_every"}


AMP_CHOICES = ("auto", "bf16", "off")  # --amp: bf16 autocast by device, forced on, or fp32 (checkpoint.use_bf16)


def train_parser() -> argparse.ArgumentParser:
    """train.py's command line: where the run goes and how it runs, then the preset and its
    overrides (add_override_flags)."""
    p = argparse.ArgumentParser(description="Train a class-conditional DiT on MNIST.")
    p.add_argument("--out-dir", default=None,
                   help="where model.pth, samples/, loss.png and log.csv go (default: "
                        "runs/default, or runs/latent for --preset latent)")
    p.add_argument("--data-dir", default=None,
                   help="folder holding MNIST/raw/ (default: $DIT_DATA_DIR or ./data)")
    p.add_argument("--resume", action="store_true", help="continue from <out-dir>/model.pth")
    p.add_argument("--autoencoder", default=None,
                   help="--preset latent: reuse this finished autoencoder.pth (default: the one "
                        "in <out-dir> if there is one, else train a new one there)")
    p.add_argument("--overwrite", action="store_true",
                   help="start afresh even if <out-dir>/model.pth exists")
    p.add_argument("--device", default=None, help="cuda, cuda:1 or cpu (default: cuda when present)")
    p.add_argument("--compile", action="store_true",
                   help="torch.compile the model (slow start, faster steps)")
    p.add_argument("--amp", choices=AMP_CHOICES, default="auto",
                   help="bf16 autocast; auto = on for CUDA, off for the CPU (see "
                        "checkpoint.use_bf16) (default: %(default)s)")
    add_override_flags(p)
    return p


def add_override_flags(parser: argparse.ArgumentParser) -> None:
    """--preset, and one flag per field of TRAIN_FLAGS and MODEL_FLAGS. A flag that is not given
    does not appear in the parsed args at all (SUPPRESS), so `Config.from_args` keeps the preset's
    value, and --help lists every preset's value instead of one default."""
    parser.add_argument("--preset", choices=sorted(PRESETS), default="cpu",
                        help="starting config (default: %(default)s)")
    for title, section, flags in [("training", "train", TRAIN_FLAGS),
                                  ("model", "model", MODEL_FLAGS)]:
        group = parser.add_argument_group(f"{title} (override the preset; its values in brackets)")
        for name, text in flags.items():
            values = {p: getattr(getattr(get_preset(p), section), name) for p in sorted(PRESETS)}
            kind = type(values["cpu"])
            how = {"action": argparse.BooleanOptionalAction} if kind is bool else {"type": kind}
            shown = ", ".join(f"{p} {v}" for p, v in values.items())  # "cpu 16, gpu 30, tiny 1"
            group.add_argument(f"--{flag(name)}", **how, default=argparse.SUPPRESS,
                               help=f"{text} [{shown}]")


def apply_sampling_flags(cfg: Config, sampler: str | None = None, steps: int | None = None,
                         eta: float | None = None, cfg_scale: float | None = None,
                         labels: list[int] | None = None) -> None:
    """Override cfg.sample with the sampling flags that were given (None = keep the checkpoint's),
    then check the result and the labels asked for."""
    s, T = cfg.sample, cfg.diffusion.num_timesteps
    s.sampler = sampler if sampler is not None else s.sampler
    s.steps = steps if steps is not None else s.steps
    s.eta = eta if eta is not None else s.eta
    s.cfg_scale = cfg_scale if cfg_scale is not None else s.cfg_scale
    if s.sampler not in SAMPLERS:
        raise UserError(f"unknown sampler {s.sampler!r}: choose one of {', '.join(SAMPLERS)}")
    if not 1 <= s.steps <= T:
        raise UserError(f"--steps must be between 1 and {T} (the model's T), got {s.steps}")
    if s.eta < 0:
        raise UserError(f"--eta must be 0 or more, got {s.eta}")
    if s.cfg_scale < 0:
        raise UserError(f"--cfg-scale must be 0 or more (1 = no guidance), got {s.cfg_scale}")
    for label in labels or []:
        if not 0 <= label < cfg.model.num_classes:
            raise UserError(f"label {label} is not a digit: labels must be 0 to "
                            f"{cfg.model.num_classes - 1}")
