"""One typed configuration for the whole project: model, diffusion, training, sampling and the
latent preset's autoencoder.

Every field says why it has its value, in the manner of nanoGPT's `GPTConfig`; the measurements
behind the values are in benchmarks/README.md, under the section each comment names. Scripts start
from a named preset (`tiny`, `cpu`, `gpu`, `latent`, at the end of this file) and `train.py`'s
flags override single fields. The checkpoint carries the whole config as plain Python types
(`Config.to_dict`), so that inference rebuilds exactly the model that was trained
(`Config.from_dict`) and no script retypes a hyperparameter.

References:
  DiT:  Peebles & Xie, "Scalable Diffusion Models with Transformers", 2023 (arXiv:2212.09748)
  DDPM: Ho, Jain & Abbeel, "Denoising Diffusion Probabilistic Models", 2020 (arXiv:2006.11239)
  Min-SNR: Hang et al., "Efficient Diffusion Training via Min-SNR Weighting Strategy", 2023
  DDIM: Song, Meng & Ermon, "Denoising Diffusion Implicit Models", 2021 (arXiv:2010.02502)
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from support.cli import UserError, flag


def _check_at_least(section: object, names: list[str], least: int = 1, flags: bool = True) -> None:
    """A UserError for the first of `names` whose value in `section` is below `least`, naming
    it as train.py's flag (--batch-size) when it has one, else as the field (image_size)."""
    for name in names:
        value = getattr(section, name)
        if value < least:
            spelt = f"--{flag(name)}" if flags else name
            raise UserError(f"{spelt} must be {'positive' if least else '0 or more'}, got {value}")


@dataclass
class ModelConfig:
    image_size: int = 28  # MNIST digits are 28 x 28 pixels
    in_channels: int = 1  # grayscale
    patch_size: int = 7  # 28 / 7 = 4 x 4 = 16 tokens: a Transformer's cost grows with its tokens,
    #                      and on a CPU p = 7 learnt far more per minute than p = 4 (49 tokens)
    #                      or p = 2 (196) ("How the previous default was chosen")
    # Width and depth: at a fixed CPU budget a small, fast network that sees more images wins, down
    # to a point ("Sample quality at the default's training time").
    hidden_size: int = 96  # token width D
    depth: int = 4  # number of DiT blocks
    num_heads: int = 4  # head width D / heads = 24
    mlp_ratio: float = 4.0  # MLP hidden width = 4 D, as in ViT and DiT
    num_classes: int = 10  # the digits 0-9; index 10 is the "null" class for guidance
    class_dropout_prob: float = 0.1  # DiT's value: 10% of labels dropped so the same network
    #                                  also learns the unconditional model that guidance needs

    def __post_init__(self) -> None:
        self.check()

    def check(self) -> None:
        """A UserError for sizes that cannot make a DiT."""
        _check_at_least(self, ["image_size", "in_channels", "num_classes"], flags=False)
        _check_at_least(self, ["patch_size", "hidden_size", "depth", "num_heads"])
        if self.mlp_ratio <= 0:
            raise UserError(f"--mlp-ratio must be positive, got {self.mlp_ratio}")
        if self.image_size % self.patch_size != 0:
            sides = [p for p in range(1, self.image_size + 1) if self.image_size % p == 0]
            raise UserError(f"patch size {self.patch_size} does not divide the image size "
                            f"{self.image_size}: pass a --patch-size of "
                            f"{', '.join(map(str, sides))}")
        if self.hidden_size % self.num_heads != 0:
            raise UserError(f"hidden size {self.hidden_size} is not divisible by {self.num_heads} "
                            "heads: pass a --hidden-size that is a multiple of --num-heads")
        if self.hidden_size % 4 != 0:
            raise UserError(f"hidden size {self.hidden_size} must be a multiple of 4 for the 2D "
                            "sin-cos position embedding: pass another --hidden-size")


@dataclass
class DiffusionConfig:
    num_timesteps: int = 1000  # T = 1000 as in DDPM (section 4) and DiT
    beta_start: float = 1e-4  # DDPM's linear schedule, beta_1 = 1e-4 ...
    beta_end: float = 0.02  # ... to beta_T = 0.02: alpha-bar_T ~ 4e-5, so x_T is nearly pure noise


@dataclass
class TrainConfig:
    batch_size: int = 64  # on 2 CPU cores, more updates per minute beat bigger batches
    #                        ("Sample quality at the default's training time")
    lr: float = 6e-3  # AdamW peak rate; small models tolerate far more than DiT's 1e-4: 6e-3
    #                   learnt a little more than 4e-3 in the same steps; 8e-3 broke down with
    #                   min-SNR gamma 5 and, with gamma 0.5, scored as 6e-3 does ("Variety and the
    #                   default")
    weight_decay: float = 0.0  # DiT trains without weight decay
    # Steps of linear learning-rate warm-up (0 = the full rate from the first step): at this size
    # 500 steps of it gained nothing (the same held-out loss; digits that follow their labels
    # less, 0.975 against 0.982 at the same guidance: "A rate held at its peak" in "Variety and
    # the default"). Larger models may still want it (the gpu preset adds 500, common for
    # Transformers of that size; DiT itself has none).
    warmup_steps: int = 0
    # Cosine decay of the rate over the run (epochs or max_steps), towards 0 one step after the
    # last: the last steps are small and average out their noise, so the raw weights end nearly as
    # good as the EMA ("Sample quality at the default's training time").
    lr_decay: bool = True
    epochs: int = 16  # passes over the 60,000 images: what fits a laptop's lunch break
    #                   (README, "Quick start"; the time per machine in benchmarks/README.md)
    max_steps: int = 0  # if > 0, the run's length in optimiser steps, replacing `epochs`
    time_limit: float = 0.0  # if > 0, stop after this many minutes of training (over resumes)
    grad_clip: float = 1.0  # clip the gradient norm: one bad batch cannot wreck the weights
    ema_decay: float = 0.9999  # DiT's EMA decay: the cap of the warm-up below, which a run as short
    #                            as the default never reaches
    ema_warmup: bool = True  # decay = min(ema_decay, (1 + step) / (10 + step)): a short run's EMA
    #                          follows the weights instead of staying near the random start
    # min-SNR-gamma loss weighting (Hang et al. 2023); 0 = plain MSE. Each t's MSE is weighted by
    # min(SNR, gamma) / SNR, which steers effort from the clean steps to the noisy ones where the
    # digit is decided. 0.5 instead of the paper's 5 weights the noisy steps further: the model
    # follows its label more closely, so it needs less classifier-free guidance, and with
    # autoguidance adding back the variety that costs, it scored best at equal class accuracy
    # (5, 1, 0.5 and 0.25 measured; 0.25 no better; "Variety and the default")
    min_snr_gamma: float = 0.5
    seed: int = 0  # one seed for weights, batches and noise: runs are reproducible on the same
    #                CPU and PyTorch (another CPU's kernels round differently, and thousands of
    #                steps grow that into other weights: "Variety and the default")
    log_every: int = 50  # steps between rows of the loss log
    eval_every: int = 500  # steps between held-out losses: a forward pass over eval_images
    eval_images: int = 1000  # held-out test digits, 100 per tenth of the range of t
    sample_every: int = 0  # steps between sample grids; 0 = at the end of every epoch
    checkpoint_every: int = 500  # steps between checkpoints (and one at the end)
    keep_every: int = 0  # if > 0, also keep every keep_every-th step's checkpoint beside model.pth
    #                      as step_0003000.pth: earlier weights to compare the final ones with, or
    #                      to guide away from (benchmarks/sampler_study.py --autoguide)
    # Autoguidance's weak model (SampleConfig.autoguide_scale): the checkpoint keeps a copy of the
    # EMA as it was at this fraction of the run (step 2,998 of the default's 14,992), free in
    # training time. The EMA at a tenth or two fifths of the run guided worse, at three tenths no
    # better, with gamma 1 and again with gamma 0.5 ("Variety and the default"). 0 = keep none
    weak_model_at: float = 0.2

    def check(self) -> None:
        """A UserError naming the flag of the first value that cannot train."""
        _check_at_least(self, ["epochs", "batch_size", "log_every", "checkpoint_every",
                               "eval_every"])
        _check_at_least(self, ["eval_images"], flags=False)
        _check_at_least(self, ["max_steps", "sample_every", "warmup_steps", "time_limit",
                               "keep_every"], least=0)
        if not self.lr > 0:
            raise UserError(f"--lr must be positive, got {self.lr}")
        if not self.min_snr_gamma >= 0:
            raise UserError(f"--min-snr-gamma must be 0 or more (0 = plain MSE), got "
                            f"{self.min_snr_gamma}")
        if not 0 <= self.ema_decay < 1:
            raise UserError(f"--ema-decay must be in [0, 1), got {self.ema_decay}")
        if not 0 <= self.weak_model_at < 1:
            raise UserError(f"--weak-model-at must be in [0, 1) (a fraction of the run; 0 = no "
                            f"weak model), got {self.weak_model_at}")


@dataclass
class AutoencoderConfig:
    """The first stage of the `latent` preset (autoencoder.py): a KL autoencoder whose latents
    the DiT denoises instead of pixels. The shape, KL weight and width were chosen by the
    quality of the reconstructions and the time to train ("Latent DiT")."""
    latent_channels: int = 4  # C of the C x 8 x 8 latent, 256 numbers for 784 pixels: fewer
    #                           channels lost detail, more added nothing
    channels: int = 32  # convolution width at 16 x 16 (twice that at 8 x 8); half as wide trains in
    #                     half the time but reconstructs worse (MNIST-FD 26.8 against 22.4)
    kl_weight: float = 1e-3  # small, so the latent keeps the strokes (ten times more blurred them),
    #                          but not 0: each latent keeps some noise, so nearby latents must
    #                          decode to nearby digits
    epochs: int = 1  # passes over the 60,000 digits: one reconstructs within 0.5 MNIST-FD of the
    #                  real digits ("Latent DiT"), at the cost of about 3 of the DiT's epochs; more
    #                  were not measured
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
    sampler: str = "ddim"  # one of SAMPLERS; DDIM reaches DDPM-like quality in ~50 steps, not 1000
    steps: int = 50  # sampler steps for DDIM, PLMS and DPM-Solver++ (DDPM always uses all T;
    #                  PLMS makes one network call more, for its first, Heun, step)
    # DDIM's noise (Song et al. 2021, Eq. 16): 0 = deterministic, 1 = fresh noise at each step as
    # in DDPM. Fresh noise lets later steps correct some of the earlier steps' errors: with eta 0
    # the strokes were grainy and broken at the patch borders. At 1 it also acts as extra
    # guidance. With classifier-free guidance alone, 0.7 kept the strokes smooth and tied with 0.5
    # for the best score at equal class accuracy (0.3 and 1 lost); with autoguidance, eta 1 at
    # less guidance scored within the noise of it ("Variety and the default")
    eta: float = 0.7
    cfg_scale: float = 1.2  # classifier-free guidance; 1 = plain conditional model. More guidance
    #                         reads as the right digit more often but makes the digits alike, which
    #                         MNIST-FD and recall punish: with the autoguidance below, about the
    #                         least that kept class accuracy at 0.98 ("Variety and the default")
    # Autoguidance (Karras et al. 2024; dit.Autoguided): W also pushes each prediction away from
    # the weak model's (TrainConfig.weak_model_at), whose errors are the malformed strokes; 1 =
    # none. Unlike more classifier-free guidance, it sharpens the digits without making them
    # alike: with it, the cfg_scale above gave the best MNIST-FD at 0.98 ("Variety and the
    # default"). Used only when the checkpoint keeps a weak model
    autoguide_scale: float = 1.5

    def check(self, num_timesteps: int) -> None:
        """A UserError naming the flag of the first setting that cannot sample."""
        if self.sampler not in SAMPLERS:
            raise UserError(f"unknown sampler {self.sampler!r}: choose one of "
                            f"{', '.join(SAMPLERS)}")
        if not 1 <= self.steps <= num_timesteps:
            raise UserError(f"--steps must be between 1 and {num_timesteps} (the model's T), "
                            f"got {self.steps}")
        if not 0 <= self.eta <= 1:  # above 1, sigma^2 can exceed DDIM's 1 - alpha-bar_(t-1)
            raise UserError(f"--eta must be between 0 and 1, got {self.eta}")
        if self.cfg_scale < 0:
            raise UserError(f"--cfg-scale must be 0 or more (1 = no classifier-free guidance), got "
                            f"{self.cfg_scale}")
        if self.autoguide_scale < 0:
            raise UserError(f"--autoguide-scale must be 0 or more (1 = no autoguidance), got "
                            f"{self.autoguide_scale}")


@dataclass
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    diffusion: DiffusionConfig = field(default_factory=DiffusionConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    sample: SampleConfig = field(default_factory=SampleConfig)
    # None for a model of pixels; the latent preset's first stage otherwise (autoencoder.py)
    autoencoder: AutoencoderConfig | None = None
    preset: str = "cpu"  # the name of the preset this config started from

    def check(self) -> None:
        """Every section's checks, and that the sections fit together (after flags changed them)."""
        self.model.check()
        if not 0 <= self.model.class_dropout_prob < 1:  # 1 would never train the labels
            raise UserError(f"--class-dropout-prob must be in [0, 1), got "
                            f"{self.model.class_dropout_prob}")
        self.train.check()
        self.sample.check(self.diffusion.num_timesteps)
        ae = self.autoencoder
        if ae is not None and self.model.in_channels != ae.latent_channels:
            raise UserError(f"the DiT takes {self.model.in_channels} channels but the autoencoder "
                            f"gives {ae.latent_channels}: they must be equal")

    def drop_guidance_without_null_label(self, asked: str = "", source: object = "") -> None:
        """A model trained with class_dropout_prob 0 never saw the null label, so that row of the
        label table never trained and classifier-free guidance would push along an untrained
        vector: such a model samples at cfg_scale 1 (autoguidance needs no null label). `asked`
        names the flags that asked such a model for guidance anyway (--cfg-scale 2): a UserError
        saying that `source` (its checkpoint) cannot give it."""
        if self.model.class_dropout_prob != 0:
            return
        if asked:
            raise UserError(f"{source} was trained with --class-dropout-prob 0, so its null label "
                            "never learned the unconditional model that classifier-free guidance "
                            f"needs: drop {asked}")
        self.sample.cfg_scale = 1.0

    def to_dict(self) -> dict[str, Any]:
        """Plain nested dict of ints, floats, bools and strings: safe for weights_only loading."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any], source: object = "the checkpoint") -> "Config":
        """Inverse of `to_dict`. An unknown key is an error, never silently dropped: a UserError
        naming `source` (the checkpoint's path) and saying what to do."""
        sections = {"model": ModelConfig, "diffusion": DiffusionConfig,
                    "train": TrainConfig, "sample": SampleConfig}
        try:
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
        except (TypeError, KeyError, AttributeError) as e:
            raise UserError(f"{source} has a config this code does not know ({e}): was it written "
                            "by another version of train.py?") from None


# ------------------------------------------------------------------------------ presets

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
    # The default: sized for a laptop CPU, every field at the value of its dataclass.
    return Config(preset="cpu")


def _preset_gpu() -> Config:
    # A larger model for a GPU: DiT-S's width and depth, DiT's patch 2 and a constant learning
    # rate as in DiT (3e-4 where DiT takes 1e-4, after a 500-step warm-up that DiT does not have).
    return Config(
        model=ModelConfig(patch_size=2, hidden_size=384, depth=12, num_heads=6),
        train=TrainConfig(batch_size=256, lr=3e-4, epochs=30, warmup_steps=500,
                          checkpoint_every=2000, lr_decay=False),
        preset="gpu",
    )


def _preset_latent() -> Config:
    # DiT as the paper runs it: the same DiT, denoising the 4 x 8 x 8 latents of a small
    # autoencoder (autoencoder.py) instead of pixels. Patch 2, DiT-XL/2's patch, cuts the latent
    # into 4 x 4 = 16 tokens, as many as the pixel default's 7 x 7 patches: the Transformer costs
    # the same per image, and what differs is the space it works in (README, "The latent DiT").
    # Fewer epochs than the pixel default, so that the autoencoder's training and the encoding
    # fit inside the pixel default's wall time. The pixel default's learning rate, eta, min-SNR
    # gamma 0.5 and autoguidance by the EMA at a fifth of training: about 10 MNIST-FD and 0.06
    # recall better than gamma 5 without autoguidance ("Pixel or latent"), and on seeds 0-2, each
    # with its own autoencoder, MNIST-FD 17.5-19.4 and recall 0.77-0.80 at class accuracy
    # 0.981-0.988 ("The recipe as the latent preset's", recall then scored against the first
    # test digits; seed 0's is 0.79 against all of them). Less guidance than the pixel default's
    # 1.2: the latent model follows its label more readily, and at 1.2 it already gives recall
    # for accuracy.
    return Config(
        model=ModelConfig(image_size=8, in_channels=4, patch_size=2),
        autoencoder=AutoencoderConfig(),
        train=TrainConfig(epochs=12),
        sample=SampleConfig(cfg_scale=1.15),
        preset="latent",
    )


PRESETS = {"tiny": _preset_tiny, "cpu": _preset_cpu, "gpu": _preset_gpu, "latent": _preset_latent}


def get_preset(name: str) -> Config:
    """A fresh copy of the named preset (each call builds new objects, so callers may edit it)."""
    if name not in PRESETS:
        raise UserError(f"unknown preset {name!r}: choose one of {', '.join(PRESETS)}")
    return PRESETS[name]()
