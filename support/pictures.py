"""Drawing for every script: sample grids, trajectories, guidance strips, the forward process, the
tokens, attention, the animation, the training log's plots and the latent space.

`train.py` plots its loss and gates at every checkpoint, `inference.py` lays out what it sampled,
`figures.py` draws the lesson's pictures; all of them come here, so that no script imports
another. Each function draws what it is handed (tensors, the log's rows, or a diffusion object
whose schedule it reads): nothing here imports a module of the lesson.

Images are tensors in the model's range [-1, 1]; every picture is a PNG of at most 256 colours
written with matplotlib (`save_figure`), or torchvision's `save_image` for plain grids, except
the sampling animation, a GIF (`save_gif`).
"""

from __future__ import annotations

from pathlib import Path

import torch


def save_grid(images: torch.Tensor, path: str | Path, nrow: int) -> None:
    """Save images in [-1, 1] as one PNG grid, nrow images per row."""
    from torchvision.utils import save_image

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_image((images.float().cpu() + 1) / 2, path, nrow=nrow, padding=2, pad_value=1.0)


# ------------------------------------------------------------------------------ trajectory

TRAJECTORY_COLUMNS = 10  # states shown per digit: the digit appears, and each stays readable


def shown_columns(num_states: int, columns: int = TRAJECTORY_COLUMNS) -> list[int]:
    """`columns` evenly spaced indices into a trajectory of num_states states, first and last
    kept."""
    last = num_states - 1
    return sorted({round(i * last / (columns - 1)) for i in range(columns)})


def save_trajectory(states: torch.Tensor, x0_preds: torch.Tensor, titles: list[str],
                    labels: list[int], path: str | Path) -> None:
    """Two rows per digit: the states x_t from noise (left) to digit (right), and under them
    x0-hat, the sampler's prediction of the clean digit at that step
    (sampling.trajectory_panels)."""
    plt = pyplot()
    cell = 0.65  # inches per image: 65 pixels, enough to see the noise give way to a digit
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


# ------------------------------------------------------------------------------ the forward process

FORWARD_TIMESTEPS = (0, 50, 100, 200, 300, 500, 700, 999)  # dense early, where the digit fades


def forward_process(diffusion, x0: torch.Tensor, timesteps=FORWARD_TIMESTEPS,
                    seed: int = 0) -> torch.Tensor:
    """One digit x0 (C, H, W) noised to each of `timesteps` with q_sample and one fixed noise eps,
    so that only t changes along the row: (len(timesteps), C, H, W)."""
    eps = torch.randn(x0.shape, generator=torch.Generator().manual_seed(seed))
    t = torch.tensor(timesteps)
    return diffusion.q_sample(x0.expand(len(t), *x0.shape), t, eps.expand(len(t), *x0.shape))


def save_forward_process(diffusion, x0: torch.Tensor, gamma: float,
                         path: str | Path, timesteps=FORWARD_TIMESTEPS) -> None:
    """Top: the digit at growing t. Bottom: alpha-bar_t and the SNR (log scale) against t, with
    the min-SNR weight: where the signal goes and what min-SNR down-weights."""
    plt = pyplot()
    noised = forward_process(diffusion, x0, timesteps)
    fig = plt.figure(figsize=(9, 5.2))
    grid = fig.add_gridspec(2, len(timesteps), height_ratios=[1, 1.6])
    for i, t in enumerate(timesteps):
        ax = fig.add_subplot(grid[0, i])
        show_digit(ax, noised[i, 0])
        ax.set_title(f"t = {t}\nalpha-bar = {diffusion.alphas_cumprod[t]:.2g}", fontsize=7)
    t = torch.arange(diffusion.num_timesteps)
    half = len(timesteps) // 2
    ax = fig.add_subplot(grid[1, :half])
    ax.plot(t, diffusion.alphas_cumprod, label="alpha-bar_t (signal variance)")
    ax.plot(t, 1 - diffusion.alphas_cumprod, label="1 - alpha-bar_t (noise variance)")
    ax.set_xlabel("t")
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    ax = fig.add_subplot(grid[1, half:])
    ax.plot(t, diffusion.snr, label="SNR_t = alpha-bar / (1 - alpha-bar)")
    name = f"min-SNR weight min(SNR, {gamma:g}) / SNR" if gamma > 0 else "loss weight (plain MSE)"
    ax.plot(t, diffusion.min_snr_weights(gamma), label=name)
    if gamma > 0:
        ax.axhline(gamma, color="gray", lw=0.8, ls="--")
    ax.set_yscale("log")
    ax.set_xlabel("t")
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    fig.suptitle("the forward process q(x_t | x_0): one digit, one noise, growing t", fontsize=10)
    fig.tight_layout()
    save_figure(fig, path)


# ------------------------------------------------------------------------------ tokens

def token_strip(tokens: torch.Tensor, patch_size: int, gap: int = 1) -> torch.Tensor:
    """The tokens of one single-channel digit, (N, p * p) as dit.patchify lists them (token n is
    patch n in row-major order, its pixels row by row), as one row of p x p tiles with `gap`
    pixels of white between them: (p, N * (p + gap) - gap)."""
    p = patch_size
    tiles = [t.reshape(p, p) for t in tokens]
    white = torch.ones(p, gap)
    return torch.cat([piece for tile in tiles for piece in (tile, white)][:-1], dim=1)


def save_tokens(x0: torch.Tensor, tokens: torch.Tensor, code: torch.Tensor, patch_size: int,
                path: str | Path) -> None:
    """Top left: the digit x0 (1, H, W) cut into its p x p patches, numbered in token order. Top
    right: the fixed 2D sin-cos position code added to the tokens, code (N, D). Bottom: the
    tokens (N, p * p) in that order, each a patch of p * p pixels (dit.patchify), before the
    linear map to D channels."""
    plt = pyplot()
    _, H, W = x0.shape
    p, side = patch_size, H // patch_size
    hidden_size = code.shape[1]
    fig = plt.figure(figsize=(9, 5.2))
    grid = fig.add_gridspec(2, 2, height_ratios=[3, 1], width_ratios=[1, 1.6])
    ax = fig.add_subplot(grid[0, 0])
    show_digit(ax, x0[0])
    for k in range(1, side):  # the patch borders
        ax.axhline(k * p - 0.5, color="red", lw=0.8)
        ax.axvline(k * p - 0.5, color="red", lw=0.8)
    for n in range(side * side):
        r, c = divmod(n, side)  # row-major: token n is patch (n // side, n % side)
        ax.text(c * p + 0.3, r * p + 0.3, str(n), color="red", fontsize=7, va="top")
    ax.set_title(f"{H} x {W} digit: {side * side} patches of {p} x {p} pixels", fontsize=8)
    ax = fig.add_subplot(grid[0, 1])
    shown = ax.imshow(code.numpy(), cmap="RdBu", vmin=-1, vmax=1, aspect="auto")
    fig.colorbar(shown, ax=ax, fraction=0.04)
    ax.set_xlabel(f"channel (0-{hidden_size // 2 - 1}: the patch's row, {hidden_size // 2}-"
                  f"{hidden_size - 1}: its column; sines, then cosines)", fontsize=7)
    ax.set_ylabel("token n")
    ax.set_title(f"the 2D sin-cos position code added to each token (N x D = {side * side} x "
                 f"{hidden_size})", fontsize=8)
    ax = fig.add_subplot(grid[1, :])
    ax.imshow(token_strip(tokens, p).clamp(-1, 1).numpy(), cmap="gray", vmin=-1, vmax=1)
    ax.set_xticks([n * (p + 1) + (p - 1) / 2 for n in range(side * side)])
    ax.set_xticklabels(range(side * side), fontsize=7)
    ax.set_yticks([])
    ax.set_xlabel("token n: the sequence the Transformer reads (each patch becomes one D-vector)",
                  fontsize=8)
    fig.tight_layout()
    save_figure(fig, path)


# ------------------------------------------------------------------------------ attention

ATTENTION_TIMESTEPS = (900, 500, 100)  # mostly noise, half way, nearly clean


def save_attention(x_t: torch.Tensor, maps: torch.Tensor, query: int, timesteps, patch_size: int,
                   path: str | Path) -> None:
    """Where one token looks: for each noise level (column group), block (row) and head
    (column), the query token's attention weights over the patch grid, drawn over x_t; the
    query's patch is outlined. Each row of weights sums to 1 (uniform attention is 1 / N); one
    colour scale, from 0 to the largest weight shown, serves every panel."""
    plt = pyplot()
    L, depth, NH, N, _ = maps.shape
    side, p = int(N**0.5), patch_size
    top = maps[..., query, :].max().item()
    fig, axes = plt.subplots(depth, L * NH, squeeze=False,
                             figsize=(0.95 * L * NH, 0.95 * depth + 0.7))
    r, c = divmod(query, side)
    for level in range(L):
        for block in range(depth):
            for head in range(NH):
                ax = axes[block][level * NH + head]
                show_digit(ax, x_t[level])
                weights = maps[level, block, head, query].reshape(side, side)  # where it looks
                ax.imshow(weights.numpy(), cmap="inferno", alpha=0.6, vmin=0, vmax=top,
                          extent=(-0.5, side * p - 0.5, side * p - 0.5, -0.5))
                ax.add_patch(plt.Rectangle((c * p - 0.5, r * p - 0.5), p, p, fill=False,
                                           edgecolor="cyan", lw=1))
                if block == 0:
                    ax.set_title(f"t={timesteps[level]}, head {head}", fontsize=6)
                if level == 0 and head == 0:
                    ax.set_ylabel(f"block {block}", fontsize=7)
    fig.suptitle(f"where token {query} (outlined) looks: each head's attention weights over the "
                 f"{N} patches (black 0, brightest {top:.2f}; uniform would be {1 / N:.3f})",
                 fontsize=8)
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.3 / fig.get_figheight()))
    save_figure(fig, path)


# ------------------------------------------------------------------------------ animation

def sampling_frames(states: torch.Tensor, x0_preds: torch.Tensor, nrow: int,
                    frames: int = 26) -> list[torch.Tensor]:
    """Frames of the sampling animation: each is x_t (left) beside x0-hat (right), each a grid of
    the batch with nrow images per row, as uint8 (H, W) in 0..255. states (S + 1, B, C, H, W),
    x0_preds (S, B, C, H, W); `frames` states evenly spaced, first and last kept, the last shown
    beside itself (x_0 is its own prediction)."""
    from torchvision.utils import make_grid

    out = []
    for k in shown_columns(len(states), frames):
        x0_hat = x0_preds[k] if k < len(x0_preds) else states[-1]
        pair = [make_grid((images.clamp(-1, 1) + 1) / 2, nrow=nrow, padding=2, pad_value=1.0)
                for images in (states[k], x0_hat)]  # each (3, H', W') in [0, 1]
        gap = torch.ones(3, pair[0].shape[1], 8)
        out.append((torch.cat([pair[0], gap, pair[1]], dim=2)[0] * 255).round().to(torch.uint8))
    return out


def save_gif(frames: list[torch.Tensor], path: str | Path, ms_per_frame: int = 120) -> None:
    """uint8 (H, W) frames as a looping GIF; the last frame is held for a second."""
    from PIL import Image

    images = [Image.fromarray(f.numpy()) for f in frames]
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    images[0].save(path, save_all=True, append_images=images[1:], loop=0,
                   duration=[ms_per_frame] * (len(images) - 1) + [1000])


# ------------------------------------------------------------------------------ the training log

def bucket_columns(row: dict) -> list[tuple[str, int]]:
    """The log's held-out MSE columns, heldout_mse_t<first t of the range>, as (name, first t)."""
    prefix = "heldout_mse_t"
    return sorted(((k, int(k[len(prefix):])) for k in row if k.startswith(prefix)),
                  key=lambda kv: kv[1])


def save_loss_plot(rows: list[dict], path: str | Path, num_timesteps: int = 1000) -> None:
    """Left: the training loss (train.py logs the mean over the steps since the row before) and
    the held-out loss (the same objective, on test digits the model never trains on) against the
    step. Right: the held-out noise MSE of each tenth of the range of t against the step, where
    the model finds the noise hard and where easy."""
    plt = pyplot()
    held = [r for r in rows if "heldout_loss" in r]
    fig, axes = plt.subplots(1, 2 if held else 1, figsize=(11 if held else 6, 3.8), squeeze=False)
    ax = axes[0][0]
    ax.plot([r["step"] for r in rows], [r["loss"] for r in rows], lw=1, label="training loss")
    if held:
        ax.plot([r["step"] for r in held], [r["heldout_loss"] for r in held], "o-", ms=3,
                label="held-out loss (MNIST test digits)")
        ax.legend(fontsize=8)
    ax.set_xlabel("step")
    ax.set_ylabel("loss (noise MSE, min-SNR weighted if on)")
    ax.set_yscale("log")
    ax.grid(alpha=0.3)
    if held:
        ax = axes[0][1]
        columns = bucket_columns(held[-1])
        cmap = plt.get_cmap("viridis")
        for i, (name, first) in enumerate(columns):
            last = columns[i + 1][1] - 1 if i + 1 < len(columns) else num_timesteps - 1
            ax.plot([r["step"] for r in held], [r[name] for r in held], "o-", ms=2,
                    color=cmap(i / max(1, len(columns) - 1)), label=f"t {first}-{last}")
        ax.set_xlabel("step")
        ax.set_ylabel("held-out noise MSE (unweighted)")
        ax.set_yscale("log")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=6, ncol=2)
        ax.set_title("by noise level: low t (nearly clean) is where the noise is hard to find",
                     fontsize=8)
    fig.tight_layout()
    save_figure(fig, path)


def save_gates_plot(rows: list[dict], path: str | Path) -> None:
    """Mean |gate| of each block's attention (solid) and MLP (dashed) branch against the step:
    every block starts as the identity (all gates 0, adaLN-Zero) and opens as it learns."""
    plt = pyplot()
    depth = len([k for k in rows[0] if k.startswith("gate_attn_")]) if rows else 0
    if depth == 0:
        return  # a log from before the gates were logged
    fig, ax = plt.subplots(figsize=(6.5, 3.8))
    cmap = plt.get_cmap("plasma")
    steps = [0] + [r["step"] for r in rows]  # step 0: the fresh model, all gates exactly 0
    for k in range(depth):
        color = cmap(0.85 * k / max(1, depth - 1))
        for branch, style in [("attn", "-"), ("mlp", "--")]:
            ax.plot(steps, [0.0] + [r[f"gate_{branch}_{k}"] for r in rows], style, color=color,
                    lw=1.2, label=f"block {k} {'attention' if branch == 'attn' else 'MLP'}")
    ax.set_xlabel("step")
    ax.set_ylabel("mean |gate| over digits and t")
    ax.set_title("adaLN-Zero: every block starts as the identity (gates 0) and opens", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    save_figure(fig, path)


# ------------------------------------------------------------------------------ the latent space

def save_reconstructions(x: torch.Tensor, recon: torch.Tensor, latent_shape: tuple,
                         path: str | Path) -> None:
    """Real digits (top row) above what the autoencoder gives back through its latent of
    latent_shape (C, h, w) (bottom row): what the decoder can draw, and so the best a latent DiT
    can do. x, recon (B, 1, 28, 28)."""
    plt = pyplot()
    fig, axes = plt.subplots(2, len(x), squeeze=False, figsize=(0.8 * len(x), 1.9))
    for i in range(len(x)):
        show_digit(axes[0][i], x[i, 0])
        show_digit(axes[1][i], recon[i, 0])
    axes[0][0].set_ylabel("digit", rotation=0, labelpad=22, fontsize=8)
    axes[1][0].set_ylabel("decoded", rotation=0, labelpad=22, fontsize=8)
    mse = (recon - x).pow(2).mean().item()
    C, h, w = latent_shape
    fig.suptitle(f"through the autoencoder: 784 pixels -> {C} x {h} x {w} = {C * h * w} latent "
                 f"numbers -> 784 pixels\nmean squared error {mse:.4f} (pixels in [-1, 1])",
                 fontsize=8)
    fig.tight_layout()
    save_figure(fig, path)


def save_latent_channels(x: torch.Tensor, z: torch.Tensor, path: str | Path) -> None:
    """One row per digit: the digit, then each channel of its scaled latent z (C, 8, 8) on one
    diverging colour scale (blue negative, red positive): the picture the DiT denoises."""
    plt = pyplot()
    B, C = z.shape[:2]
    limit = z.abs().max().item()
    fig, axes = plt.subplots(B, C + 1, squeeze=False,
                             figsize=(0.95 * (C + 1) + 0.6, 0.95 * B + 0.5))
    for r in range(B):
        show_digit(axes[r][0], x[r, 0])
        for c in range(C):
            image = axes[r][c + 1].imshow(z[r, c].numpy(), cmap="RdBu_r", vmin=-limit, vmax=limit)
            axes[r][c + 1].set_xticks([])
            axes[r][c + 1].set_yticks([])
            if r == 0:
                axes[0][c + 1].set_title(f"channel {c}", fontsize=8)
    axes[0][0].set_title("digit", fontsize=8)
    fig.colorbar(image, ax=axes, shrink=0.6, label="scaled latent")
    fig.suptitle(f"each digit's latent: {C} channels of {z.shape[2]} x {z.shape[3]}, scaled to "
                 "unit variance", fontsize=9)
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
    """Save a figure as a PNG of at most 256 colours: the digits are grey, the plots use a few
    colours, and a palette stores a pixel in one byte instead of four (a trajectory of noisy
    digits shrinks about fourfold; an image with no more than 256 colours is kept exactly)."""
    import io

    from PIL import Image

    plt = pyplot()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    fig.savefig(buffer, dpi=100, format="png")
    plt.close(fig)
    with Image.open(buffer) as image:
        image.convert("RGB").quantize(256).save(path, optimize=True)
