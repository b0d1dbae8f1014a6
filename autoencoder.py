"""A small convolutional KL autoencoder for MNIST: the first stage that a latent DiT runs in.

The paper's DiT does not denoise pixels (this project's default does): it denoises the latents
of a pretrained autoencoder, as latent diffusion does (Peebles & Xie 2023, section 3.1; Rombach
et al. 2022, "High-Resolution Image Synthesis with Latent Diffusion Models", section 3 and
appendix G, the "KL" first stage). The encoder maps an image to a Gaussian over latents, a mean
and a log-variance; training draws a latent from it (the reparameterisation trick, Kingma &
Welling 2014) and asks the decoder to give the image back, with a small KL term that keeps the
latents near N(0, I):

    x (B, 1, 28, 28) --pad to 32--> Encoder --> mean, logvar (B, C, 8, 8)
    z = mean + exp(logvar / 2) * noise          (B, C, 8, 8): C x 8 x 8 = 256 numbers for C = 4
    x-hat = Decoder(z), cropped back to 28 x 28

Then the latent model is trained on z * scale_factor: the factor (1 / the standard deviation of
the training set's latents, measured once and stored with the weights) makes the latents
unit-variance, about the scale the noise schedule's signal-to-noise ratios were set for (MNIST's
pixels in [-1, 1] have a standard deviation of 0.6): at another scale every t would hold another
ratio. DiT's 0.18215 is the same number for Stable Diffusion's autoencoder, whose latents have a
standard deviation near 5.5.

Letters in shape comments: B batch, C latent channels (cfg.latent_channels), c the convolutions'
width (cfg.channels), H, W sides.
"""

from __future__ import annotations

import dataclasses
import sys
import time
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F
from tqdm.auto import tqdm

from config import AutoencoderConfig
from dataset import to_model_range
from support.checkpoint import load_weights, save_checkpoint
from support.cli import UserError
from support.distributed import barrier
from support.schedule import half_cosine

PAD = 2  # 28 + 2 + 2 = 32 pixels a side, which halves twice to the 8 x 8 latent


class ResBlock(nn.Module):
    """x + conv(SiLU(GroupNorm(conv(SiLU(GroupNorm(x)))))), the residual unit of latent
    diffusion's autoencoder, at one width."""

    def __init__(self, channels: int):
        super().__init__()
        self.block = nn.Sequential(
            nn.GroupNorm(8, channels), nn.SiLU(), nn.Conv2d(channels, channels, 3, padding=1),
            nn.GroupNorm(8, channels), nn.SiLU(), nn.Conv2d(channels, channels, 3, padding=1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.block(x)


class Autoencoder(nn.Module):
    """Encoder and decoder of a KL autoencoder for 28 x 28 digits, with the latent scale factor.

    Widths: `channels` at 16 x 16, twice that at 8 x 8. Every downsampling is a strided
    convolution, every upsampling a nearest-neighbour doubling followed by a convolution (which
    avoids the checkerboard of transposed convolutions)."""

    def __init__(self, cfg: AutoencoderConfig):
        super().__init__()
        self.cfg = cfg
        c, z = cfg.channels, cfg.latent_channels
        self.encoder = nn.Sequential(
            nn.Conv2d(1, c, 4, stride=2, padding=1),  # (B, c, 16, 16)
            ResBlock(c),
            nn.Conv2d(c, 2 * c, 4, stride=2, padding=1),  # (B, 2c, 8, 8)
            ResBlock(2 * c),
            nn.GroupNorm(8, 2 * c), nn.SiLU(),
            nn.Conv2d(2 * c, 2 * z, 3, padding=1),  # (B, 2C, 8, 8): mean and log-variance
        )
        self.decoder = nn.Sequential(
            nn.Conv2d(z, 2 * c, 3, padding=1),  # (B, 2c, 8, 8)
            ResBlock(2 * c),
            nn.Upsample(scale_factor=2, mode="nearest"),
            nn.Conv2d(2 * c, c, 3, padding=1),  # (B, c, 16, 16)
            ResBlock(c),
            nn.GroupNorm(8, c), nn.SiLU(),
            nn.Upsample(scale_factor=2, mode="nearest"),
            nn.Conv2d(c, 1, 3, padding=1),  # (B, 1, 32, 32)
        )
        # 1 / std of the training set's latents: set by fit_scale_factor, saved in the state dict.
        self.register_buffer("scale_factor", torch.tensor(1.0))

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Images (B, 1, 28, 28) in [-1, 1] -> the posterior's mean and log-variance, each
        (B, C, 8, 8)."""
        x = F.pad(x, (PAD, PAD, PAD, PAD), value=-1.0)  # -1 is the background: a black border
        mean, logvar = self.encoder(x).chunk(2, dim=1)
        # Latent diffusion's bounds: exp(logvar / 2) stays finite and above 0 in float32.
        return mean, logvar.clamp(-30.0, 20.0)

    def decode_logits(self, z: torch.Tensor) -> torch.Tensor:
        """Unscaled latents (B, C, 8, 8) -> per-pixel logits (B, 1, 28, 28): the log-odds of
        each pixel being ink, the parameter of the decoder's Bernoulli likelihood."""
        return self.decoder(z)[:, :, PAD:-PAD, PAD:-PAD]

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Unscaled latents -> images in [-1, 1] (each pixel's ink probability, rescaled)."""
        return torch.sigmoid(self.decode_logits(z)) * 2 - 1

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None):
        """Reconstruct through a sampled latent: returns (logits of x-hat, mean, logvar)."""
        mean, logvar = self.encode(x)
        return self.decode_logits(sample_latent(mean, logvar, generator)), mean, logvar

    @torch.no_grad()
    def to_latent(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Images -> scaled latents, the data of the latent DiT: z * scale_factor, one draw of z."""
        return sample_latent(*self.encode(x), generator) * self.scale_factor

    @torch.no_grad()
    def to_pixels(self, z_scaled: torch.Tensor) -> torch.Tensor:
        """Scaled latents (a latent DiT's samples) -> images in [-1, 1]."""
        return self.decode(z_scaled / self.scale_factor)


def sample_latent(mean: torch.Tensor, logvar: torch.Tensor,
                  generator: torch.Generator | None = None) -> torch.Tensor:
    """z = mean + sigma * noise with noise ~ N(0, I): a draw from N(mean, sigma^2) through which
    gradients reach the mean and the variance (the reparameterisation trick)."""
    noise = torch.randn(mean.shape, generator=generator, device=mean.device, dtype=mean.dtype)
    return mean + torch.exp(0.5 * logvar) * noise


def kl_divergence(mean: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mean, exp(logvar)) || N(0, I)) of each image, summed over its latent: (B,).
    Per dimension the closed form is (mean^2 + sigma^2 - 1 - log sigma^2) / 2."""
    return 0.5 * (mean.pow(2) + logvar.exp() - 1.0 - logvar).flatten(1).sum(dim=1)


def autoencoder_loss(model: Autoencoder, x: torch.Tensor, kl_weight: float,
                     generator: torch.Generator | None = None):
    """The training loss, per image averaged over the batch: the binary cross-entropy of the
    pixels' ink (x in [-1, 1] read as (x + 1) / 2 in [0, 1]) summed over the 784 pixels, a
    Bernoulli likelihood as in Kingma & Welling's MNIST VAE, plus kl_weight times the KL summed
    over the latent. Returns (loss, reconstruction, kl) as tensors."""
    logits, mean, logvar = model(x, generator)
    rec = F.binary_cross_entropy_with_logits(logits, (x + 1) / 2, reduction="none")
    rec = rec.flatten(1).sum(dim=1).mean()
    kl = kl_divergence(mean, logvar).mean()
    return rec + kl_weight * kl, rec, kl


def train_autoencoder(images: torch.Tensor, cfg: AutoencoderConfig, device: torch.device,
                      seed: int = 0, progress: bool = True) -> tuple[Autoencoder, list[dict]]:
    """Train an autoencoder on uint8 digits (N, 28, 28) with AdamW for cfg.epochs passes, then fit
    its scale factor. Returns it in eval mode, and a log of (step, loss, reconstruction, kl)
    rows. Deterministic for a seed on one device."""
    if len(images) < cfg.batch_size:
        raise UserError(f"the autoencoder's batch of {cfg.batch_size} is larger than the "
                        f"{len(images)} training images: use more images")
    torch.manual_seed(seed)
    model = Autoencoder(cfg).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=0.0)
    g = torch.Generator().manual_seed(seed)
    steps_per_epoch = len(images) // cfg.batch_size
    total = cfg.epochs * steps_per_epoch
    log, started = [], time.time()
    with tqdm(total=total, desc="autoencoder", unit="step", disable=not progress,
              dynamic_ncols=True) as bar:
        for step in range(total):
            if step % steps_per_epoch == 0:
                order = torch.randperm(len(images), generator=g)
            i = step % steps_per_epoch
            x = to_model_range(images[order[i * cfg.batch_size : (i + 1) * cfg.batch_size]])
            for group in optimizer.param_groups:  # a half-cosine decay, as the DiT's
                group["lr"] = cfg.lr * half_cosine(step / total)
            loss, rec, kl = autoencoder_loss(model, x.to(device), cfg.kl_weight)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            if step % 50 == 0 or step == total - 1:
                log.append({"step": step + 1, "loss": loss.item(), "reconstruction": rec.item(),
                            "kl": kl.item(), "elapsed_sec": time.time() - started})
                bar.set_postfix(rec=f"{rec.item():.2f}", kl=f"{kl.item():.0f}")
            bar.update(1)
    model.eval()
    fit_scale_factor(model, images, seed)
    return model, log


@torch.no_grad()
def encode_images(model: Autoencoder, images: torch.Tensor, seed: int = 0,
                  batch_size: int = 1000) -> torch.Tensor:
    """uint8 digits (N, 28, 28) -> scaled latents (N, C, 8, 8), float32 on the model's device: one
    draw per image from a generator seeded with `seed`, made once (as fast-DiT extracts its
    features once) so that training reads latents instead of running the encoder every step."""
    device = model.scale_factor.device
    g = torch.Generator(device).manual_seed(seed)
    return torch.cat([model.to_latent(to_model_range(chunk).to(device), g)
                      for chunk in images.split(batch_size)])


@torch.no_grad()
def fit_scale_factor(model: Autoencoder, images: torch.Tensor, seed: int = 0) -> float:
    """Set model.scale_factor to 1 / the standard deviation of the images' latents (all elements,
    one draw each, as `encode_images` makes them), so that the scaled latents have variance 1."""
    model.scale_factor.fill_(1.0)
    latents = encode_images(model, images, seed)
    model.scale_factor.fill_(1.0 / latents.double().std().item())
    return model.scale_factor.item()


# ---------------------------------------------------------------------- the first stage's files

AUTOENCODER_FILE = "autoencoder.pth"  # a latent run's finished first stage, in its --out-dir


def save_autoencoder(path: str | Path, autoencoder: Autoencoder, seconds: float) -> None:
    """A finished first stage on its own, {"autoencoder", "config", "seconds"}, written
    atomically, for a later latent run to reuse."""
    save_checkpoint(path, {"autoencoder": autoencoder.state_dict(),
                           "config": dataclasses.asdict(autoencoder.cfg), "seconds": seconds})


def read_autoencoder(path: str | Path, cfg: AutoencoderConfig) -> tuple[Autoencoder, float]:
    """An autoencoder saved by `save_autoencoder` (or the first stage inside a latent model's
    checkpoint), checked against the config it must have; returns it (eval mode) and the seconds
    its training took (0 when unknown)."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"no autoencoder at {path}: pass an autoencoder.pth of a latent run, or "
                        "leave out --autoencoder to train one")
    try:
        saved = torch.load(path, map_location="cpu", weights_only=True)
        fields = saved["config"]
        if "model" in fields:  # a latent model's checkpoint: its first stage
            fields = fields["autoencoder"]
        saved_cfg = AutoencoderConfig(**fields)
    except Exception as e:  # noqa: BLE001 - corrupt, truncated, or not an autoencoder file
        raise UserError(f"{path} holds no readable autoencoder ({type(e).__name__}): pass the "
                        "autoencoder.pth or model.pth of a run of train.py --preset latent, or "
                        "leave out --autoencoder to train one") from None
    if saved_cfg != cfg:
        differ = ", ".join(f"{k} {v} (not {getattr(cfg, k)})"
                           for k, v in dataclasses.asdict(saved_cfg).items()
                           if getattr(cfg, k) != v)
        raise UserError(f"{path} was trained with other autoencoder settings: {differ}; use one "
                        "trained with this run's settings, or train a new one (--overwrite, "
                        "without --autoencoder)")
    autoencoder = load_weights(Autoencoder(cfg), saved["autoencoder"], path)
    return autoencoder.eval(), float(saved.get("seconds", 0.0))


def autoencoder_of(checkpoint: dict, cfg: AutoencoderConfig | None, path: str | Path,
                   device: torch.device | str = "cpu") -> Autoencoder | None:
    """The autoencoder that decodes a latent model's samples, from the model's checkpoint (a
    dict read by support.checkpoint.read_checkpoint, which made sure a latent model has one), in
    eval mode; None for a model of pixels (cfg: the checkpoint's config.autoencoder, None)."""
    if cfg is None:
        return None
    autoencoder = load_weights(Autoencoder(cfg), checkpoint["autoencoder"], path)
    return autoencoder.to(device).eval()


def first_stage(cfg: AutoencoderConfig, images: torch.Tensor, out_dir: str | Path, procs,
                seed: int = 0, reuse: str | Path | None = None, overwrite: bool = False,
                resumed: dict | None = None) -> Autoencoder:
    """The latent preset's first stage, ready to encode, on procs.device (procs: the run's
    support.distributed.Processes): a resumed run's own (inside its checkpoint `resumed`), the
    file `reuse` names, the one an earlier start left in out_dir (unless overwrite), or a new
    one trained now on the uint8 digits `images` and saved to out_dir/autoencoder.pth, by the
    first process while the others wait, then read by them."""
    device = procs.device
    if resumed is not None:
        if reuse:
            raise UserError("a resumed run decodes with the autoencoder it was trained with: drop "
                            "--autoencoder")
        return autoencoder_of(resumed, cfg, "the resumed checkpoint", device)
    path = Path(reuse) if reuse else Path(out_dir) / AUTOENCODER_FILE
    found = bool(reuse) or (path.exists() and not overwrite)
    barrier(procs)  # every rank has looked for the file before the first one can write it
    if found:
        autoencoder, seconds = read_autoencoder(path, cfg)
        if procs.is_main:
            print(f"autoencoder: {path} (trained in {seconds:.0f} s), reused")
        return autoencoder.to(device)
    if procs.is_main:
        started = time.time()
        try:
            autoencoder, log = train_autoencoder(images, cfg, device, seed)
        except KeyboardInterrupt:  # before the DiT's first checkpoint: --resume has nothing yet
            print(f"the autoencoder was {time.time() - started:.0f} s into its training and is "
                  "not saved: run the same command again (without --resume) to start over",
                  file=sys.stderr)
            raise
        path.parent.mkdir(parents=True, exist_ok=True)
        save_autoencoder(path, autoencoder, time.time() - started)
        print(f"autoencoder: trained in {time.time() - started:.0f} s, reconstruction "
              f"{log[-1]['reconstruction']:.1f} nats/image, KL {log[-1]['kl']:.0f}, scale factor "
              f"{autoencoder.scale_factor.item():.4f}; saved to {path}")
    barrier(procs)  # the others read what the first one wrote
    return autoencoder if procs.is_main else read_autoencoder(path, cfg)[0].to(device)


if __name__ == "__main__":  # a shape check: python autoencoder.py
    ae = Autoencoder(AutoencoderConfig())
    mean, logvar = ae.encode(torch.zeros(2, 1, 28, 28))
    print(f"{sum(p.numel() for p in ae.parameters()):,} parameters; latent {tuple(mean.shape)}; "
          f"reconstruction {tuple(ae.decode(mean).shape)}")
