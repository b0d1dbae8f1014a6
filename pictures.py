"""Digits drawn with a config's sampler, and the pictures made of them: what the scripts share.

`train.py` draws a sample grid after every epoch and plots its loss; `inference.py` draws grids,
denoising trajectories and guidance strips. Both come here, so no script imports another. The
sampling itself is `GaussianDiffusion.sample` (diffusion.py); this module picks the labels, runs
the network at the precision asked for, and lays the results out.

Images are tensors in the model's range [-1, 1]; every picture is a PNG written with
matplotlib (or torchvision's `save_image` for plain grids).
"""

from __future__ import annotations

import copy
from pathlib import Path

import torch

from config import Config
from diffusion import GaussianDiffusion


# ------------------------------------------------------------------------------ drawing digits

def class_labels(num_classes: int, per_class: int, device=None) -> torch.Tensor:
    """0, 0, ..., 1, 1, ..., 9: per_class labels of each class, class-major (grid row k = digit k)."""
    return torch.arange(num_classes, device=device).repeat_interleave(per_class)


def generate(model, diffusion: GaussianDiffusion, labels: torch.Tensor, cfg: Config,
             generator: torch.Generator | None = None, bf16: bool = False,
             return_intermediates: bool = False, progress: bool = False):
    """Sample one image per label with the settings of cfg.sample, the network under bf16
    autocast if asked (checkpoint.use_bf16); values in [-1, 1]. With return_intermediates, also
    the states and predicted clean images of every step (GaussianDiffusion.sample)."""
    m, s = cfg.model, cfg.sample
    shape = (len(labels), m.in_channels, m.image_size, m.image_size)
    with torch.autocast(labels.device.type, dtype=torch.bfloat16, enabled=bf16):
        return diffusion.sample(model, shape, labels, sampler=s.sampler, steps=s.steps, eta=s.eta,
                                cfg_scale=s.cfg_scale, generator=generator,
                                return_intermediates=return_intermediates, progress=progress)


def sample_grid(model, diffusion: GaussianDiffusion, cfg: Config, digits: list[int],
                per_row: int, generator: torch.Generator | None = None,
                bf16: bool = False) -> torch.Tensor:
    """per_row samples of each digit in `digits`, digit-major: saved with nrow=per_row, row k
    shows digits[k]. Returns (len(digits) * per_row, C, H, W) on the model's device."""
    device = next(model.parameters()).device
    labels = torch.tensor(digits, device=device).repeat_interleave(per_row)  # 0, 0, ..., 1, 1, ...
    return generate(model, diffusion, labels, cfg, generator, bf16)


def save_grid(images: torch.Tensor, path: str | Path, nrow: int) -> None:
    """Save images in [-1, 1] as one PNG grid, nrow images per row."""
    from torchvision.utils import save_image

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_image((images.float().cpu() + 1) / 2, path, nrow=nrow, padding=2, pad_value=1.0)


# ------------------------------------------------------------------------------ trajectory

TRAJECTORY_COLUMNS = 10  # states shown per digit: enough to see the digit appear, small enough to read


def shown_columns(num_states: int, columns: int = TRAJECTORY_COLUMNS) -> list[int]:
    """`columns` evenly spaced indices into a trajectory of num_states states, first and last kept."""
    last = num_states - 1
    return sorted({round(i * last / (columns - 1)) for i in range(columns)})


def trajectory_panels(model, diffusion: GaussianDiffusion, cfg: Config, labels: torch.Tensor,
                      generator=None, bf16: bool = False):
    """Sample one image per label, keeping every state, and pick the states to show.

    Returns (states, x0_preds, titles): states and x0_preds (columns, B, C, H, W) on the CPU, where
    state k sits at noise level timesteps[k] of the sampler (state 0 is the noise x_T), x0_preds[k]
    is the clean image the sampler predicted from it at that step, and the last column is the
    finished sample x_0, shown as its own prediction."""
    s = cfg.sample
    _, states, x0_preds = generate(model, diffusion, labels, cfg, generator, bf16,
                                   return_intermediates=True)  # (S + 1, ...) and (S, ...)
    timesteps = diffusion.sampler_timesteps(s.sampler, s.steps)  # (S,): the level of state k
    cols = shown_columns(len(states))  # the last is S, the sample x_0
    titles = ["x_T (noise)"] + [f"t={timesteps[c]}" for c in cols[1:-1]] + ["x_0"]
    return states[cols], torch.cat([x0_preds[cols[:-1]], states[-1:]]), titles


def save_trajectory(states: torch.Tensor, x0_preds: torch.Tensor, titles: list[str],
                    labels: list[int], path: str | Path) -> None:
    """Two rows per digit: the states x_t from noise (left) to digit (right), and under them
    x0-hat, the sampler's prediction of the clean digit at that step (trajectory_panels)."""
    plt = pyplot()
    cell = 0.95  # inches per image
    fig, axes = plt.subplots(2 * len(labels), len(titles), squeeze=False,
                             figsize=(cell * len(titles), cell * 2 * len(labels)))
    for r, label in enumerate(labels):
        for c, title in enumerate(titles):
            for row, image in [(2 * r, states[c, r, 0]), (2 * r + 1, x0_preds[c, r, 0])]:
                show_digit(axes[row][c], image)
            if r == 0:
                axes[0][c].set_title(title, fontsize=8)
        axes[2 * r][0].set_ylabel(f"{label}: x_t", rotation=0, labelpad=18, fontsize=8)
        axes[2 * r + 1][0].set_ylabel("x0-hat", rotation=0, labelpad=18, fontsize=8)
    fig.suptitle("denoising: x_t from pure noise to digit, and under it the predicted x_0",
                 fontsize=9)
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.3 / fig.get_figheight()))  # 0.3 inch for the title
    save_figure(fig, path)


# ------------------------------------------------------------------------------ guidance strip

GUIDANCE_SCALES = (0.0, 1.0, 2.0, 4.0, 8.0)  # 0 = unconditional, 1 = plain conditional model


def guidance_strip(model, diffusion: GaussianDiffusion, cfg: Config, digits: list[int],
                   scales=GUIDANCE_SCALES, seed: int = 0, bf16: bool = False) -> torch.Tensor:
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
        columns.append(generate(model, diffusion, labels, scaled, g, bf16).cpu())
    return torch.stack(columns, dim=1)


def save_guidance_strip(images: torch.Tensor, digits: list[int], scales, path: str | Path) -> None:
    """One row per digit, one column per guidance scale."""
    plt = pyplot()
    names = {0.0: "unconditional", 1.0: "conditional"}
    fig, axes = plt.subplots(len(digits), len(scales), squeeze=False,
                             figsize=(1.1 * len(scales), 1.1 * len(digits) + 0.4))
    for r, digit in enumerate(digits):
        for c, scale in enumerate(scales):
            show_digit(axes[r][c], images[r, c, 0])
            if r == 0:
                axes[r][c].set_title(f"s = {scale:g}" + (f"\n{names[scale]}" if scale in names
                                                         else ""), fontsize=8)
            if c == 0:
                axes[r][c].set_ylabel(str(digit), rotation=0, labelpad=10)
    fig.suptitle("guidance scale s: same noise, same label", fontsize=9)
    fig.tight_layout()
    save_figure(fig, path)


# ------------------------------------------------------------------------------ loss curve

def save_loss_plot(rows: list[dict], path: str | Path) -> None:
    """The training loss of log.csv's rows against the step, on a log scale."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot([r["step"] for r in rows], [r["loss"] for r in rows], lw=1)
    ax.set_xlabel("step")
    ax.set_ylabel("training loss (noise MSE)")
    ax.set_yscale("log")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    save_figure(fig, path)


# ------------------------------------------------------------------------------ helpers

def show_digit(ax, image: torch.Tensor) -> None:
    """One (H, W) image in [-1, 1] on a matplotlib axis, black to white, without ticks."""
    ax.imshow(image.clamp(-1, 1).numpy(), cmap="gray", vmin=-1, vmax=1)
    ax.set_xticks([])
    ax.set_yticks([])


def pyplot():
    """matplotlib's pyplot, drawing to files (the Agg backend): no screen needed."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def save_figure(fig, path: str | Path) -> None:
    plt = pyplot()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
