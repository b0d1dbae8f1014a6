"""Sample digits from a trained DiT: a grid, pictures that teach, or image files for scoring.

    python inference.py                                  # 10 x 10 grid, row k = digit k
    python inference.py --labels 3 1 4 --cfg-scale 4     # rows for the digits 3, 1 and 4
    python inference.py --sampler ddpm                   # 1000-step ancestral sampling
    python inference.py --trajectory                     # x_t from noise to digit, and the
                                                         # predicted clean digit at each step
    python inference.py --guidance-strip                 # each digit at guidance 0, 1, 2, 4, 8
    python inference.py --num-per-class 100 --out-dir images/fake   # 1,000 PNGs for fid_computer.py

The model is rebuilt from the config stored in the checkpoint (checkpoint.py), with the EMA
weights (they give cleaner samples than the raw weights; DiT section 4). A latent model
(`train.py --preset latent`) samples latents, and the autoencoder stored in its checkpoint turns
them into pixels, so every flag works the same for it. Sampling itself is in diffusion.py and the
pictures in pictures.py; this file reads the flags and writes the files.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from pathlib import Path

import torch
from tqdm.auto import tqdm

from autoencoder import Autoencoder
from checkpoint import load_autoencoder, load_model, out_of_memory_as_error, use_bf16
from config import (AMP_CHOICES, SAMPLERS, Config, UserError, apply_sampling_flags, pick_device,
                    run_reporting_user_errors)
from dataset import LABELLED_NAME, labelled_file_name, to_uint8
from diffusion import GaussianDiffusion
from dit import DiT
from pictures import (GUIDANCE_SCALES, class_labels, generate, guidance_strip, sample_grid,
                      save_grid, save_guidance_strip, save_trajectory, trajectory_panels)

DEFAULT_CHECKPOINT = "runs/default/model.pth"  # where `python train.py` writes with no flags


# ------------------------------------------------------------------------------ files for scoring

def write_class_images(model: DiT, diffusion: GaussianDiffusion, cfg: Config, per_class: int,
                       out_dir: str | Path, device, batch_size: int = 500, seed: int = 0,
                       bf16: bool = False, progress: bool = True,
                       autoencoder: Autoencoder | None = None) -> list[Path]:
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
            pixels = to_uint8(generate(model, diffusion, batch, cfg, generator, bf16,
                                       autoencoder=autoencoder)).cpu()
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
    autoencoder = load_autoencoder(args.checkpoint, cfg, device)  # None for a model of pixels
    apply_sampling_flags(cfg, args.sampler, args.steps, args.eta, args.cfg_scale, args.labels)
    s = cfg.sample
    if args.per_row <= 0 or args.batch_size <= 0 or args.num_per_class < 0:
        raise UserError("--per-row and --batch-size must be positive, --num-per-class 0 or more")
    diffusion = GaussianDiffusion.from_config(cfg.diffusion)
    bf16 = use_bf16(args.amp, device)
    steps_text = f"{cfg.diffusion.num_timesteps}" if s.sampler == "ddpm" else f"{s.steps}"
    print(f"device: {device} | {s.sampler} with {steps_text} steps, eta {s.eta}, "
          f"guidance {s.cfg_scale} | seed {args.seed} | bf16 {'on' if bf16 else 'off'}"
          + (" | latent model, decoded by its autoencoder" if autoencoder is not None else ""))
    ckpt_dir = Path(args.checkpoint).parent
    digits = args.labels if args.labels is not None else list(range(cfg.model.num_classes))

    with out_of_memory_as_error(f"sampling ran out of memory on {device}: pass a smaller "
                                "--batch-size or --per-row"):
        if args.num_per_class > 0:
            if args.trajectory or args.guidance_strip or args.output:
                raise UserError("--num-per-class writes image files only: drop --trajectory, "
                                "--guidance-strip and --output, or run them separately")
            paths = write_class_images(model, diffusion, cfg, args.num_per_class, args.out_dir,
                                       device, args.batch_size, args.seed, bf16,
                                       autoencoder=autoencoder)
            print(f"wrote {len(paths)} images to {args.out_dir}")
            return
        g = torch.Generator(device).manual_seed(args.seed)
        grid = sample_grid(model, diffusion, cfg, digits, args.per_row, g, bf16, autoencoder)
        out = Path(args.output) if args.output else ckpt_dir / "grid.png"
        save_grid(grid, out, nrow=args.per_row)
        print(f"grid ({len(digits)} rows x {args.per_row}): {out}")
        if args.trajectory:
            g = torch.Generator(device).manual_seed(args.seed)
            panels = trajectory_panels(model, diffusion, cfg, torch.tensor(digits, device=device),
                                       g, bf16, autoencoder)
            path = ckpt_dir / "trajectory.png"
            save_trajectory(*panels, digits, path)
            print(f"trajectory: {path}")
        if args.guidance_strip:
            strip = guidance_strip(model, diffusion, cfg, digits, GUIDANCE_SCALES, args.seed, bf16,
                                   autoencoder)
            path = ckpt_dir / "guidance.png"
            save_guidance_strip(strip, digits, GUIDANCE_SCALES, path)
            print(f"guidance strip (scales {', '.join(f'{x:g}' for x in GUIDANCE_SCALES)}): {path}")


def main(argv: list[str] | None = None) -> int:
    return run_reporting_user_errors(run, build_parser().parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
