"""Sample digits from a trained DiT: a grid, pictures that teach, or image files for scoring.

    python inference.py                                  # 10 x 10 grid, row k = digit k
    python inference.py --labels 3 1 4 --cfg-scale 4     # rows for the digits 3, 1 and 4
    python inference.py --sampler ddpm                   # 1000-step ancestral sampling
    python inference.py --trajectory                     # x_t from noise to digit, and the
                                                         # predicted clean digit at each step
    python inference.py --guidance-strip                 # each digit at guidance 0, 1, 2, 4, 8
    python inference.py --num-per-class 100 --out-dir images/fake   # 1,000 PNGs for fid_computer.py

The model is rebuilt from the config stored in the checkpoint (checkpoint.py), with the EMA
weights (they give cleaner samples than the raw weights; DiT section 4). Sampling itself is in
diffusion.py; this file batches, draws and saves.
"""

from __future__ import annotations

import argparse
import copy
import os
import shutil
import sys
from pathlib import Path

import torch
from tqdm.auto import tqdm

from checkpoint import AMP_CHOICES, load_model, out_of_memory_as_error, use_bf16
from config import Config, UserError, pick_device
from dataset import LABELLED_NAME, labelled_file_name, to_uint8
from diffusion import SAMPLERS, GaussianDiffusion
from dit import DiT

DEFAULT_CHECKPOINT = "runs/default/model.pth"  # where `python train.py` writes with no flags


# ------------------------------------------------------------------------------ sampling

def check_sampling_args(cfg: Config, sampler: str, steps: int, eta: float, cfg_scale: float,
                        labels: list[int] | None = None) -> None:
    T = cfg.diffusion.num_timesteps
    if sampler not in SAMPLERS:
        raise UserError(f"unknown sampler {sampler!r}: choose one of {', '.join(SAMPLERS)}")
    if not 1 <= steps <= T:
        raise UserError(f"--steps must be between 1 and {T} (the model's T), got {steps}")
    if eta < 0:
        raise UserError(f"--eta must be 0 or more, got {eta}")
    if cfg_scale < 0:
        raise UserError(f"--cfg-scale must be 0 or more (1 = no guidance), got {cfg_scale}")
    for label in labels or []:
        if not 0 <= label < cfg.model.num_classes:
            raise UserError(f"label {label} is not a digit: labels must be 0 to "
                            f"{cfg.model.num_classes - 1}")


def apply_sampling_flags(cfg: Config, sampler: str | None = None, steps: int | None = None,
                         eta: float | None = None, cfg_scale: float | None = None) -> None:
    """Override the checkpoint's sampler settings with the flags that were given (None = keep)."""
    s = cfg.sample
    s.sampler = sampler if sampler is not None else s.sampler
    s.steps = steps if steps is not None else s.steps
    s.eta = eta if eta is not None else s.eta
    s.cfg_scale = cfg_scale if cfg_scale is not None else s.cfg_scale


def class_labels(num_classes: int, per_class: int, device=None) -> torch.Tensor:
    """0, 0, ..., 1, 1, ..., 9: per_class labels of each class, class-major (grid row k = digit k)."""
    return torch.arange(num_classes, device=device).repeat_interleave(per_class)


def generate(model: DiT, diffusion: GaussianDiffusion, labels: torch.Tensor, cfg: Config,
             generator: torch.Generator | None = None, bf16: bool = False,
             return_intermediates: bool = False, progress: bool = False):
    """Sample one image per label with the sampler settings in cfg.sample; values in [-1, 1]."""
    m, s = cfg.model, cfg.sample
    shape = (len(labels), m.in_channels, m.image_size, m.image_size)
    device = labels.device
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
        return diffusion.sample(model, shape, labels, sampler=s.sampler, steps=s.steps, eta=s.eta,
                                cfg_scale=s.cfg_scale, generator=generator,
                                return_intermediates=return_intermediates, progress=progress)


def sample_class_grid(model: DiT, diffusion: GaussianDiffusion, cfg: Config, per_class: int,
                      device, generator=None, bf16: bool = False,
                      digits: list[int] | None = None) -> torch.Tensor:
    """per_class samples of each digit, digit-major: with nrow=per_class, row k shows digit k."""
    digits = list(range(cfg.model.num_classes)) if digits is None else digits
    labels = torch.tensor(digits, device=device).repeat_interleave(per_class)  # row k = digits[k]
    return generate(model, diffusion, labels, cfg, generator, bf16)


def save_grid(images: torch.Tensor, path: str | Path, nrow: int) -> None:
    """Save images in [-1, 1] as one PNG grid, nrow images per row."""
    from torchvision.utils import save_image

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_image((images.float().cpu() + 1) / 2, path, nrow=nrow, padding=2, pad_value=1.0)


TRAJECTORY_COLUMNS = 10  # states shown per digit: enough to see the digit appear, small enough to read


def shown_columns(num_states: int, columns: int = TRAJECTORY_COLUMNS) -> list[int]:
    """`columns` evenly spaced indices into a trajectory of num_states states, first and last kept."""
    last = num_states - 1
    return sorted({round(i * last / (columns - 1)) for i in range(columns)})


def trajectory_panels(model: DiT, diffusion: GaussianDiffusion, cfg: Config, labels: torch.Tensor,
                      generator=None, bf16: bool = False):
    """Sample one image per label, keeping every state, and pick the states to show.

    Returns (states, x0_hat, titles): states and x0_hat (columns, B, C, H, W) on the CPU, where
    state k sits at noise level timesteps[k] of the sampler (state 0 is the noise x_T) and the
    last column is the finished sample x_0, shown as its own prediction."""
    s = cfg.sample
    _, trajectory = generate(model, diffusion, labels, cfg, generator, bf16,
                             return_intermediates=True)  # (S + 1, B, C, H, W)
    timesteps = diffusion.sampler_timesteps(s.sampler, s.steps)  # (S,): the level of state k
    cols = shown_columns(len(trajectory))  # the last is S, the sample x_0
    x0_hat = predict_clean(model, diffusion, trajectory[cols[:-1]],
                           [timesteps[c] for c in cols[:-1]], labels, s.cfg_scale, bf16)
    titles = ["x_T (noise)"] + [f"t={timesteps[c]}" for c in cols[1:-1]] + ["x_0"]
    return trajectory[cols], torch.cat([x0_hat, trajectory[-1:]]), titles


@torch.no_grad()
def predict_clean(model: DiT, diffusion: GaussianDiffusion, states: torch.Tensor,
                  timesteps: list[int], labels: torch.Tensor, cfg_scale: float,
                  bf16: bool = False) -> torch.Tensor:
    """What the network believes the finished digit is, at each state x_t of a trajectory:

        x0_hat = (x_t - sqrt(1 - alpha-bar_t) eps_theta(x_t, t, y)) / sqrt(alpha-bar_t)

    (DDPM Eq. 4 solved for x_0, with the guided noise prediction the sampler used at that step).
    states: (S, B, C, H, W) at noise levels timesteps (S,); returns (S, B, C, H, W) on the CPU."""
    device = labels.device
    out = []
    for x_t, t in zip(states, timesteps):
        x_t = x_t.to(device, torch.float64)  # the samplers' precision
        t_batch = torch.full((len(labels),), t, device=device, dtype=torch.long)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            eps = model.forward_with_cfg(x_t, t_batch, labels, cfg_scale).to(x_t.dtype)
        out.append(diffusion.predict_x0_from_eps(x_t, t_batch, eps).float().cpu())
    return torch.stack(out)


def save_trajectory(states: torch.Tensor, x0_hat: torch.Tensor, titles: list[str],
                    labels: list[int], path: str | Path) -> None:
    """Two rows per digit: the states x_t from noise (left) to digit (right), and under them
    x0_hat, the network's prediction of the clean digit at that step (trajectory_panels)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cell = 0.95  # inches per image
    fig, axes = plt.subplots(2 * len(labels), len(titles), squeeze=False,
                             figsize=(cell * len(titles), cell * 2 * len(labels)))
    for r, label in enumerate(labels):
        for c, title in enumerate(titles):
            for row, image in [(2 * r, states[c, r, 0]), (2 * r + 1, x0_hat[c, r, 0])]:
                ax = axes[row][c]
                ax.imshow(image.clamp(-1, 1).numpy(), cmap="gray", vmin=-1, vmax=1)
                ax.set_xticks([])
                ax.set_yticks([])
            if r == 0:
                axes[0][c].set_title(title, fontsize=8)
        axes[2 * r][0].set_ylabel(f"{label}: x_t", rotation=0, labelpad=18, fontsize=8)
        axes[2 * r + 1][0].set_ylabel("x0-hat", rotation=0, labelpad=18, fontsize=8)
    fig.suptitle("denoising: x_t from pure noise to digit, and under it the predicted x_0",
                 fontsize=9)
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.3 / fig.get_figheight()))  # 0.3 inch for the title
    save_figure(fig, path)


GUIDANCE_SCALES = (0.0, 1.0, 2.0, 4.0, 8.0)  # 0 = unconditional, 1 = plain conditional model


def guidance_strip(model: DiT, diffusion: GaussianDiffusion, cfg: Config, digits: list[int],
                   scales=GUIDANCE_SCALES, seed: int = 0, bf16: bool = False) -> torch.Tensor:
    """Each digit sampled at each guidance scale from the same starting noise (the generator is
    seeded afresh for every scale), so that only the guidance differs between the columns.
    Returns (len(digits), len(scales), C, H, W) on the CPU, values in [-1, 1]."""
    device = next(model.parameters()).device
    labels = torch.tensor(digits, device=device)
    columns = []
    for scale in scales:
        scaled = copy.deepcopy(cfg)
        scaled.sample.cfg_scale = scale
        g = torch.Generator(device).manual_seed(seed)
        columns.append(generate(model, diffusion, labels, scaled, g, bf16).cpu())
    return torch.stack(columns, dim=1)


def save_guidance_strip(images: torch.Tensor, digits: list[int], scales, path: str | Path) -> None:
    """One row per digit, one column per guidance scale."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = {0.0: "unconditional", 1.0: "conditional"}
    fig, axes = plt.subplots(len(digits), len(scales), squeeze=False,
                             figsize=(1.1 * len(scales), 1.1 * len(digits) + 0.4))
    for r, digit in enumerate(digits):
        for c, scale in enumerate(scales):
            ax = axes[r][c]
            ax.imshow(images[r, c, 0].clamp(-1, 1).numpy(), cmap="gray", vmin=-1, vmax=1)
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(f"s = {scale:g}" + (f"\n{names[scale]}" if scale in names else ""),
                             fontsize=8)
            if c == 0:
                ax.set_ylabel(str(digit), rotation=0, labelpad=10)
    fig.suptitle("guidance scale s: same noise, same label", fontsize=9)
    fig.tight_layout()
    save_figure(fig, path)


def save_figure(fig, path: str | Path) -> None:
    import matplotlib.pyplot as plt

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)


def write_class_images(model: DiT, diffusion: GaussianDiffusion, cfg: Config, per_class: int,
                       out_dir: str | Path, device, batch_size: int = 500, seed: int = 0,
                       bf16: bool = False, progress: bool = True) -> list[Path]:
    """Write per_class images of every digit as 28 x 28 grayscale PNGs named <index>_<label>.png.

    The images go into a hidden sibling folder that replaces out_dir only when it is complete:
    an interrupted run leaves the previous set as it was, and a smaller run never leaves older
    images beside its own (fid_computer.py would score them all). A folder holding anything but
    such PNGs is refused rather than deleted."""
    from PIL import Image

    out_dir = Path(out_dir).resolve()  # resolved: "." has no name to derive the sibling's from
    if out_dir.exists():
        foreign = [p.name for p in out_dir.iterdir() if not LABELLED_NAME.match(p.name)]
        if not out_dir.is_dir() or foreign:
            raise UserError(f"{out_dir} holds {'files' if out_dir.is_dir() else 'a file'} this "
                            f"script did not write (e.g. {(foreign or [out_dir.name])[0]!r}), so "
                            "it will not replace it: pass another --out-dir")
    partial = out_dir.with_name(f".{out_dir.name}.partial")
    shutil.rmtree(partial, ignore_errors=True)  # our own leftover from an interrupted run
    partial.mkdir(parents=True)
    labels = class_labels(cfg.model.num_classes, per_class)
    generator = torch.Generator(device).manual_seed(seed)
    names = []
    with tqdm(total=len(labels), desc="images", unit="img", disable=not progress) as bar:
        for start in range(0, len(labels), batch_size):
            batch = labels[start : start + batch_size].to(device)
            pixels = to_uint8(generate(model, diffusion, batch, cfg, generator, bf16)).cpu()
            for i, (img, label) in enumerate(zip(pixels, batch.tolist())):  # img (1, 28, 28)
                names.append(labelled_file_name(start + i, label))
                Image.fromarray(img[0].numpy()).save(partial / names[-1])
            bar.update(len(batch))
    shutil.rmtree(out_dir, ignore_errors=True)  # checked above: only images we wrote
    os.replace(partial, out_dir)
    return [out_dir / name for name in names]


# ------------------------------------------------------------------------------ main

def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="Sample digits from a trained DiT.",
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--checkpoint", default=DEFAULT_CHECKPOINT)
    p.add_argument("--sampler", choices=SAMPLERS, default=None, help="default: the checkpoint's (ddim)")
    p.add_argument("--steps", type=int, default=None, help="sampler steps (DDPM always uses T)")
    p.add_argument("--eta", type=float, default=None, help="DDIM noise: 0 deterministic, 1 DDPM-like")
    p.add_argument("--cfg-scale", type=float, default=None, help="guidance scale; 1 = none")
    p.add_argument("--labels", type=int, nargs="+", default=None, help="digits, one grid row each")
    p.add_argument("--per-row", type=int, default=10, help="samples per digit in the grid")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default=None, help="cuda or cpu (default: cuda when present)")
    p.add_argument("--amp", choices=AMP_CHOICES, default="auto",
                   help="bf16 autocast for the network: auto = on CUDA, fp32 on a CPU "
                        "(see checkpoint.use_bf16)")
    p.add_argument("--output", default=None, help="grid PNG (default: <checkpoint dir>/grid.png)")
    p.add_argument("--trajectory", action="store_true",
                   help="also save the denoising trajectory, x_t and the predicted x_0 at each "
                        "shown step (<checkpoint dir>/trajectory.png)")
    p.add_argument("--guidance-strip", action="store_true",
                   help="also sample each digit at guidance 0, 1, 2, 4 and 8 from one noise "
                        "(<checkpoint dir>/guidance.png)")
    p.add_argument("--num-per-class", type=int, default=0,
                   help="write this many PNG files per digit into --out-dir instead of a grid")
    p.add_argument("--out-dir", default="images/fake", help="folder for --num-per-class files")
    p.add_argument("--batch-size", type=int, default=500, help="images sampled at once")
    return p


def run(args: argparse.Namespace) -> None:
    device = pick_device(args.device)
    model, cfg = load_model(args.checkpoint, device)
    apply_sampling_flags(cfg, args.sampler, args.steps, args.eta, args.cfg_scale)
    s = cfg.sample
    check_sampling_args(cfg, s.sampler, s.steps, s.eta, s.cfg_scale, args.labels)
    if args.per_row <= 0 or args.batch_size <= 0 or args.num_per_class < 0:
        raise UserError("--per-row and --batch-size must be positive, --num-per-class 0 or more")
    diffusion = GaussianDiffusion.from_config(cfg.diffusion)
    bf16 = use_bf16(args.amp, device)
    steps_text = f"{cfg.diffusion.num_timesteps}" if s.sampler == "ddpm" else f"{s.steps}"
    print(f"device: {device} | {s.sampler} with {steps_text} steps, eta {s.eta}, "
          f"guidance {s.cfg_scale} | seed {args.seed} | bf16 {'on' if bf16 else 'off'}")
    ckpt_dir = Path(args.checkpoint).parent
    digits = args.labels if args.labels is not None else list(range(cfg.model.num_classes))

    with out_of_memory_as_error(f"sampling ran out of memory on {device}: pass a smaller "
                                "--batch-size or --per-row"):
        if args.num_per_class > 0:
            if args.trajectory or args.guidance_strip or args.output:
                raise UserError("--num-per-class writes image files only: drop --trajectory, "
                                "--guidance-strip and --output, or run them separately")
            paths = write_class_images(model, diffusion, cfg, args.num_per_class, args.out_dir,
                                       device, args.batch_size, args.seed, bf16)
            print(f"wrote {len(paths)} images to {args.out_dir}")
            return
        g = torch.Generator(device).manual_seed(args.seed)
        grid = sample_class_grid(model, diffusion, cfg, args.per_row, device, g, bf16, digits)
        out = Path(args.output) if args.output else ckpt_dir / "grid.png"
        save_grid(grid, out, nrow=args.per_row)
        print(f"grid ({len(digits)} rows x {args.per_row}): {out}")
        if args.trajectory:
            g = torch.Generator(device).manual_seed(args.seed)
            panels = trajectory_panels(model, diffusion, cfg, torch.tensor(digits, device=device),
                                       g, bf16)
            path = ckpt_dir / "trajectory.png"
            save_trajectory(*panels, digits, path)
            print(f"trajectory: {path}")
        if args.guidance_strip:
            strip = guidance_strip(model, diffusion, cfg, digits, GUIDANCE_SCALES, args.seed, bf16)
            path = ckpt_dir / "guidance.png"
            save_guidance_strip(strip, digits, GUIDANCE_SCALES, path)
            print(f"guidance strip (scales {', '.join(f'{x:g}' for x in GUIDANCE_SCALES)}): {path}")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        run(args)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
