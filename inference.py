"""Sample digits from a trained DiT: a grid, a denoising trajectory, or image files for scoring.

    python inference.py                                  # 10 x 10 grid, row k = digit k
    python inference.py --labels 3 1 4 --cfg-scale 4     # rows for the digits 3, 1 and 4
    python inference.py --sampler ddpm                   # 1000-step ancestral sampling
    python inference.py --trajectory                     # x_t from noise to digit, one row per digit
    python inference.py --num-per-class 100 --out-dir images/fake   # 1,000 PNGs for fid_computer.py

The model is rebuilt from the config stored in the checkpoint, with the EMA weights (they give
cleaner samples than the raw weights; DiT section 4). Sampling itself is in diffusion.py; this file
loads, batches and saves.
"""

from __future__ import annotations

import argparse
import pickle
import sys
from pathlib import Path

import torch
from tqdm.auto import tqdm

from config import Config, UserError, is_out_of_memory, pick_device
from dataset import to_uint8
from diffusion import SAMPLERS, GaussianDiffusion
from dit import DiT

DEFAULT_CHECKPOINT = "runs/default/model.pth"  # where `python train.py` writes with no flags


# ------------------------------------------------------------------------------ checkpoints

def read_checkpoint(path: str | Path, with_training_state: bool = False) -> dict:
    """torch.load with weights_only=True (tensors and plain types only: a pickle that would run
    code is refused), turning every failure into a one-line UserError that says what to do."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"no checkpoint at {path}: run train.py first or pass --checkpoint")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else ""
        raise UserError(f"{path} is not a plain checkpoint (weights_only loading refused it: "
                        f"{first[:120]}); only load checkpoints written by train.py") from None
    except Exception as e:  # noqa: BLE001 - a damaged file fails in many ways (EOFError,
        # RuntimeError from the zip reader, IndexError from the unpickler, ...): all mean "corrupt"
        raise UserError(f"{path} is corrupt or truncated ({type(e).__name__}): retrain, or "
                        "resume from an intact copy") from None
    needed = ["model", "ema", "config"] + (["optimizer", "step", "rng"] if with_training_state else [])
    missing = [k for k in needed if not isinstance(ckpt, dict) or k not in ckpt]
    if missing:
        raise UserError(f"{path} is not a checkpoint of this project (missing {', '.join(missing)})")
    return ckpt


def checkpoint_config(ckpt: dict, path: str | Path) -> Config:
    """The Config stored in a checkpoint, or a UserError if this code cannot read it."""
    try:
        return Config.from_dict(ckpt["config"])
    except (TypeError, KeyError, AttributeError) as e:
        raise UserError(f"{path} has a config this code does not know ({e}): was it written by "
                        "another version of train.py?") from None


def load_weights(module: torch.nn.Module, state: dict, path: str | Path) -> None:
    """load_state_dict, with a UserError when the shapes do not match the stored config."""
    try:
        module.load_state_dict(state)
    except (RuntimeError, ValueError, KeyError) as e:  # optimisers raise ValueError or KeyError
        detail = str(e).strip().splitlines()[-1].strip()[:150]
        raise UserError(f"the weights in {path} do not match its config ({detail}): the file is "
                        "damaged or was edited; retrain it") from None


def load_model(path: str | Path, device: torch.device | str = "cpu",
               use_ema: bool = True) -> tuple[DiT, Config]:
    """Rebuild the DiT from the config inside the checkpoint and load its (EMA) weights."""
    ckpt = read_checkpoint(path)
    cfg = checkpoint_config(ckpt, path)
    model = DiT(cfg.model)
    load_weights(model, ckpt["ema" if use_ema else "model"], path)
    return model.to(device).eval(), cfg


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


def cpu_has_native_bf16() -> bool:
    """Whether this CPU has bf16 instructions (AVX512-BF16 or AMX), read from /proc/cpuinfo
    (Linux). Without them bf16 arithmetic is emulated and slower than fp32."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


AMP_CHOICES = ("auto", "bf16", "off")


def use_bf16_sampling(device: torch.device, amp: str = "auto") -> bool:
    """Whether the network runs under bf16 autocast while sampling. "auto": on CUDA, and on CPUs
    with native bf16 instructions, where it made sampling about 1.3x faster on the project's
    2-core CPU (see README); "bf16" and "off" (fp32) force it. The sampler's own arithmetic stays
    in float64 either way. bf16 rounds each noise prediction to about 3 significant digits, which
    PLMS, combining four of them with large coefficients, turns into visible differences (README,
    sampler study): use "off" when comparing samplers closely."""
    if amp != "auto":
        return amp == "bf16"
    if device.type == "cuda":
        return True
    return device.type == "cpu" and cpu_has_native_bf16()


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


def save_trajectory(trajectory: torch.Tensor, labels: list[int], path: str | Path,
                    timesteps: list[int], columns: int = 10) -> None:
    """Plot x_t at `columns` evenly spaced sampler steps, from noise (left) to digit (right)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    S = trajectory.shape[0] - 1  # trajectory: (S + 1, B, C, H, W), index 0 is the noise x_T
    cols = sorted({round(i * S / (columns - 1)) for i in range(columns)})
    fig, axes = plt.subplots(len(labels), len(cols), figsize=(1.1 * len(cols), 1.1 * len(labels)),
                             squeeze=False)
    for r, label in enumerate(labels):
        for c, idx in enumerate(cols):
            ax = axes[r][c]
            ax.imshow(trajectory[idx, r, 0].clamp(-1, 1).numpy(), cmap="gray", vmin=-1, vmax=1)
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:  # trajectory[idx] sits at noise level timesteps[idx]; the last one is x_0
                ax.set_title("x_T (noise)" if idx == 0 else ("x_0" if idx == S else f"t={timesteps[idx]}"),
                             fontsize=8)
            if c == 0:
                ax.set_ylabel(str(label), rotation=0, labelpad=10)
    fig.suptitle("denoising: from x_T (pure noise) to x_0", fontsize=10)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)


def class_file_name(index: int, label: int) -> str:
    """`<5-digit index>_<label>.png`, e.g. 00042_7.png: fid_computer.py reads the label back."""
    return f"{index:05d}_{label}.png"


def write_class_images(model: DiT, diffusion: GaussianDiffusion, cfg: Config, per_class: int,
                       out_dir: str | Path, device, batch_size: int = 500, seed: int = 0,
                       bf16: bool = False, progress: bool = True) -> list[Path]:
    """Write per_class images of every digit as 28 x 28 grayscale PNGs, in batches."""
    from PIL import Image

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    labels = class_labels(cfg.model.num_classes, per_class)
    generator = torch.Generator(device).manual_seed(seed)
    paths = []
    with tqdm(total=len(labels), desc="images", unit="img", disable=not progress) as bar:
        for start in range(0, len(labels), batch_size):
            batch = labels[start : start + batch_size].to(device)
            pixels = to_uint8(generate(model, diffusion, batch, cfg, generator, bf16)).cpu()
            for i, (img, label) in enumerate(zip(pixels, batch.tolist())):
                path = out_dir / class_file_name(start + i, label)
                Image.fromarray(img[0].numpy()).save(path)
                paths.append(path)
            bar.update(len(batch))
    return paths


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
                   help="bf16 autocast for the network: auto = on CUDA and on CPUs with native "
                        "bf16, off = fp32")
    p.add_argument("--output", default=None, help="grid PNG (default: <checkpoint dir>/grid.png)")
    p.add_argument("--trajectory", action="store_true",
                   help="also save the denoising trajectory figure (<checkpoint dir>/trajectory.png)")
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
    bf16 = use_bf16_sampling(device, args.amp)
    steps_text = f"{cfg.diffusion.num_timesteps}" if s.sampler == "ddpm" else f"{s.steps}"
    print(f"device: {device} | {s.sampler} with {steps_text} steps, eta {s.eta}, "
          f"guidance {s.cfg_scale} | seed {args.seed} | bf16 {'on' if bf16 else 'off'}")
    ckpt_dir = Path(args.checkpoint).parent

    try:
        if args.num_per_class > 0:
            paths = write_class_images(model, diffusion, cfg, args.num_per_class, args.out_dir,
                                       device, args.batch_size, args.seed, bf16)
            print(f"wrote {len(paths)} images to {args.out_dir}")
            return
        digits = args.labels if args.labels is not None else list(range(cfg.model.num_classes))
        g = torch.Generator(device).manual_seed(args.seed)
        grid = sample_class_grid(model, diffusion, cfg, args.per_row, device, g, bf16, digits)
        out = Path(args.output) if args.output else ckpt_dir / "grid.png"
        save_grid(grid, out, nrow=args.per_row)
        print(f"grid ({len(digits)} rows x {args.per_row}): {out}")
        if args.trajectory:
            g = torch.Generator(device).manual_seed(args.seed)
            labels = torch.tensor(digits, device=device)
            _, trajectory = generate(model, diffusion, labels, cfg, g, bf16, return_intermediates=True)
            timesteps = diffusion.sampler_timesteps(s.sampler, s.steps)
            path = ckpt_dir / "trajectory.png"
            save_trajectory(trajectory, digits, path, timesteps)
            print(f"trajectory: {path}")
    except (torch.OutOfMemoryError, RuntimeError) as e:
        if not is_out_of_memory(e):
            raise
        raise UserError(f"sampling ran out of memory on {device}: pass a smaller --batch-size "
                        "or --per-row") from None


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
