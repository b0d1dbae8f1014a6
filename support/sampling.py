"""Digits drawn with a config's sampler settings: what train.py, inference.py and figures.py share.

`train.py` draws a grid after every epoch, `inference.py` grids, trajectories, guidance strips and
image files, `figures.py` the sampling animation; all of them come here, so that no script imports
another. The sampling itself is `GaussianDiffusion.sample` (diffusion.py); this module reads the
sampler's settings from the config, runs the network at the precision asked for and, for a latent
model, decodes what it sampled to pixels.

The model, the diffusion, the config and the autoencoder are passed in by the caller: nothing here
imports a module of the lesson.
"""

from __future__ import annotations

import copy

import torch

from support.pictures import shown_columns


def class_labels(num_classes: int, per_class: int, device=None) -> torch.Tensor:
    """0, 0, ..., 1, 1, ..., 9: per_class labels of each class, class-major (grid row k =
    digit k)."""
    return torch.arange(num_classes, device=device).repeat_interleave(per_class)


def generate(model, diffusion, labels: torch.Tensor, cfg, generator: torch.Generator | None = None,
             bf16: bool = False, return_intermediates: bool = False, progress: bool = False,
             autoencoder=None):
    """Sample one image per label with the settings of cfg.sample (a config.Config), the network
    under bf16 autocast if asked (support.cli.use_bf16); values in [-1, 1]. With
    return_intermediates, also the states and predicted clean images of every step
    (GaussianDiffusion.sample); with progress, a progress bar over the sampler's steps.

    A latent model (cfg.autoencoder set) samples latents and `autoencoder` decodes every one of
    them, intermediates included, so that the caller gets pixels either way. Its x0-hat is not
    clipped to [-1, 1]: that is the range of pixels, while unit-variance latents reach 3 and
    beyond (DiT, too, samples its latents with clip_denoised=False)."""
    m, s = cfg.model, cfg.sample
    latent = cfg.autoencoder is not None
    if latent and autoencoder is None:
        raise ValueError("a latent model samples latents: pass its autoencoder to decode them")
    shape = (len(labels), m.in_channels, m.image_size, m.image_size)
    with torch.autocast(labels.device.type, dtype=torch.bfloat16, enabled=bf16):
        out = diffusion.sample(model, shape, labels, sampler=s.sampler, steps=s.steps, eta=s.eta,
                               cfg_scale=s.cfg_scale, generator=generator, clip_denoised=not latent,
                               return_intermediates=return_intermediates, progress=progress)
    if not latent:
        return out
    if not return_intermediates:
        return autoencoder.to_pixels(out)
    x, states, x0_preds = out  # states (S + 1, B, C, h, w) and x0_preds (S, B, C, h, w), on the CPU

    def decode_all(z):  # (K, B, C, h, w) -> (K, B, 1, 28, 28), 1,000 latents at a time
        pixels = [autoencoder.to_pixels(chunk.to(x.device)).cpu()
                  for chunk in z.flatten(0, 1).split(1000)]
        return torch.cat(pixels).unflatten(0, z.shape[:2])

    return autoencoder.to_pixels(x), decode_all(states), decode_all(x0_preds)


def sample_grid(model, diffusion, cfg, digits: list[int], per_row: int,
                generator: torch.Generator | None = None, bf16: bool = False, autoencoder=None,
                progress: bool = False) -> torch.Tensor:
    """per_row samples of each digit in `digits`, digit-major: saved with nrow=per_row, row k
    shows digits[k]. Returns (len(digits) * per_row, C, H, W) on the model's device."""
    device = next(model.parameters()).device
    labels = torch.tensor(digits, device=device).repeat_interleave(per_row)  # 0, 0, ..., 1, 1, ...
    return generate(model, diffusion, labels, cfg, generator, bf16, progress=progress,
                    autoencoder=autoencoder)


def trajectory_panels(model, diffusion, cfg, labels: torch.Tensor, generator=None,
                      bf16: bool = False, autoencoder=None, progress: bool = False):
    """Sample one image per label, keeping every state, and pick the states to show.

    Returns (states, x0_preds, titles): states and x0_preds (columns, B, C, H, W) on the CPU, where
    state k sits at noise level timesteps[k] of the sampler (state 0 is the noise x_T), x0_preds[k]
    is the clean image the sampler predicted from it at that step, and the last column is the
    finished sample x_0, shown as its own prediction."""
    s = cfg.sample
    _, states, x0_preds = generate(model, diffusion, labels, cfg, generator, bf16,  # (S + 1, ...)
                                   return_intermediates=True, progress=progress,  # (S, ...)
                                   autoencoder=autoencoder)
    timesteps = diffusion.sampler_timesteps(s.sampler, s.steps)  # (S,): the level of state k
    cols = shown_columns(len(states))  # the last is S, the sample x_0
    titles = ["x_T (noise)"] + [f"t={timesteps[c]}" for c in cols[1:-1]] + ["x_0"]
    return states[cols], torch.cat([x0_preds[cols[:-1]], states[-1:]]), titles


GUIDANCE_SCALES = (0.0, 1.0, 2.0, 4.0, 8.0)  # 0 = unconditional, 1 = plain conditional model


def guidance_strip(model, diffusion, cfg, digits: list[int], scales=GUIDANCE_SCALES,
                   seed: int = 0, bf16: bool = False, autoencoder=None,
                   progress: bool = False) -> torch.Tensor:
    """Each digit sampled at each guidance scale from the same starting noise (the generator is
    seeded afresh for every scale), so that only the guidance differs between the columns.
    Returns (len(digits), len(scales), C, H, W) on the CPU, values in [-1, 1]."""
    device = next(model.parameters()).device
    labels = torch.tensor(digits, device=device)
    columns = []
    for scale in scales:
        scaled = copy.deepcopy(cfg)  # the caller's config stays as it was
        scaled.sample.cfg_scale = scale
        g = torch.Generator(device).manual_seed(seed)
        columns.append(generate(model, diffusion, labels, scaled, g, bf16, progress=progress,
                                autoencoder=autoencoder).cpu())
    return torch.stack(columns, dim=1)
