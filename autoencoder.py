"""A small convolutional KL autoencoder for MNIST: the first stage that a latent DiT runs in.

DiT does not denoise pixels: it denoises the latents of a pretrained autoencoder, as latent
diffusion does (Peebles & Xie 2023, section 3.1; Rombach et al. 2022, "High-Resolution Image
Synthesis with Latent Diffusion Models", section 3 and appendix G, the "KL" first stage). The
encoder maps an image to a Gaussian over latents, a mean and a log-variance; training draws a
latent from it (the reparameterisation trick, Kingma & Welling 2014) and asks the decoder to give
the image back, with a small KL term that keeps the latents near N(0, I):

    x (B, 1, 28, 28) --pad to 32--> Encoder --> mean, logvar (B, C, 8, 8)
    z = mean + exp(logvar / 2) * noise          (B, C, 8, 8): C x 8 x 8 = 256 numbers for C = 4
    x-hat = Decoder(z), cropped back to 28 x 28

Then the latent model is trained on z * scale_factor: the factor (1 / the standard deviation of
the training set's latents, measured once and stored with the weights) makes the latents
unit-variance, the scale that the noise schedule assumes of its data. DiT's 0.18215 is the same
number for Stable Diffusion's autoencoder, whose latents have a standard deviation near 5.5.

Letters in shape comments: B batch, C latent channels, H, W sides.
"""

from __future__ import annotations

import math
import time

import torch
import torch.nn as nn
import torch.nn.functional as F
from tqdm.auto import tqdm

from config import AutoencoderConfig

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
        """Images (B, 1, 28, 28) in [-1, 1] -> the posterior's mean and log-variance (B, C, 8, 8)."""
        x = F.pad(x, (PAD, PAD, PAD, PAD), value=-1.0)  # -1 is the background: a black border
        mean, logvar = self.encoder(x).chunk(2, dim=1)
        # Latent diffusion's bounds: exp(logvar / 2) stays finite and above 0 in float32.
        return mean, logvar.clamp(-30.0, 20.0)

    def decode_logits(self, z: torch.Tensor) -> torch.Tensor:
        """Unscaled latents (B, C, 8, 8) -> per-pixel logits (B, 1, 28, 28): the decoder's
        Bernoulli likelihood of each pixel being ink."""
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
    from config import UserError
    from dataset import to_model_range  # the one pixel-range convention

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
                group["lr"] = cfg.lr * 0.5 * (1 + math.cos(math.pi * step / total))
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
    from dataset import to_model_range

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


if __name__ == "__main__":  # a shape check: python autoencoder.py
    ae = Autoencoder(AutoencoderConfig())
    mean, logvar = ae.encode(torch.zeros(2, 1, 28, 28))
    print(f"{sum(p.numel() for p in ae.parameters()):,} parameters; latent {tuple(mean.shape)}; "
          f"reconstruction {tuple(ae.decode(mean).shape)}")
