"""Sample digits from a trained DiT: a grid, pictures that teach, or image files for scoring.

    python inference.py                                  # grid of runs/default, row k = digit k
    python inference.py --checkpoint pretrained/model.pth    # the shipped weights: no training
    python inference.py --labels 3 1 4 --cfg-scale 4     # rows for the digits 3, 1 and 4
    python inference.py --sampler ddpm                   # 1000-step ancestral sampling
    python inference.py --trajectory                     # x_t from noise to digit, and the
                                                         # predicted clean digit at each step
    python inference.py --guidance-strip                 # each digit at guidance 0, 1, 2, 4, 8
    python inference.py --trajectory my_trajectory.png   # the picture where you say
    python inference.py --num-per-class 100 --out-dir images/fake   # 1,000 PNGs for fid_computer.py

The model is rebuilt from the config stored in the checkpoint, with the EMA weights (what DiT
samples with, section 4), and samples with the checkpoint's sampler
settings unless a flag changes them: classifier-free guidance and, when the checkpoint keeps the
early weights to guide away from, autoguidance (dit.Autoguided). A latent model (`train.py
--preset latent`) samples latents, and the autoencoder stored in its checkpoint turns them into
pixels, so every flag works the same for it. The grid goes beside the checkpoint when it is a run
of yours in runs/, else into runs/samples/ (nothing is written into the tracked pretrained/ unless
a flag says so), and the other pictures beside the grid unless their flag names a file. Sampling
itself is in diffusion.py; support/sampling.py reads the config's settings and support/pictures.py
lays the results out.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from pathlib import Path

import torch
from tqdm.auto import tqdm

from autoencoder import Autoencoder, autoencoder_of
from config import SAMPLERS, Config
from dataset import to_uint8
from diffusion import GaussianDiffusion
from dit import Autoguided, DiT, load_ema
from support.checkpoint import outputs_dir, read_checkpoint
from support.cli import (AMP_CHOICES, AMP_HELP, UserError, check_can_write_in, exit_status, flag,
                         out_of_memory_as_error, pick_device, use_bf16)
from support.image_files import FAKE_DIR, LABELLED_NAME, labelled_file_name
from support.pictures import save_grid, save_guidance_strip, save_trajectory
from support.sampling import (GUIDANCE_SCALES, class_labels, generate, guidance_strip, sample_grid,
                              trajectory_panels)

DEFAULT_CHECKPOINT = "runs/default/model.pth"  # where `python train.py` writes with no flags


# ------------------------------------------------------------------------------ files for scoring

def write_class_images(model: DiT | Autoguided, diffusion: GaussianDiffusion, cfg: Config,
                       per_class: int, out_dir: str | Path, device, batch_size: int = 500,
                       seed: int = 0, bf16: bool = False, progress: bool = True,
                       autoencoder: Autoencoder | None = None) -> list[Path]:
    """Write per_class images of every digit as 28 x 28 grayscale PNGs named <index>_<label>.png.

    The images go into a hidden sibling folder that replaces out_dir only when it is complete:
    an interrupted run leaves the previous set as it was, and a smaller run never leaves older
    images beside its own (fid_computer.py would score them all). A folder holding anything but
    such PNG files (a folder too, whatever its name) is refused rather than deleted."""
    from PIL import Image

    out_dir = Path(out_dir).resolve()  # resolved: "." has no name to derive the sibling's from
    if out_dir.exists():
        foreign = ([p.name for p in out_dir.iterdir()
                    if not (p.is_file() and LABELLED_NAME.fullmatch(p.name))]
                   if out_dir.is_dir() else [out_dir.name])
        if not out_dir.is_dir() or foreign:
            raise UserError(f"{out_dir} holds {'files' if out_dir.is_dir() else 'a file'} this "
                            f"script did not write (e.g. {foreign[0]!r}), so "
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


# ------------------------------------------------------------------------------ the command line

def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="Sample digits from a trained DiT.")
    p.add_argument("--checkpoint", default=DEFAULT_CHECKPOINT,
                   help=f"a model.pth of train.py, or the shipped pretrained/model.pth (default: "
                        f"{DEFAULT_CHECKPOINT})")
    g = p.add_argument_group("sampling (default: the checkpoint's settings)")
    g.add_argument("--sampler", choices=SAMPLERS)
    g.add_argument("--steps", type=int, help="sampler steps of ddim, plms and dpm-solver++ "
                                             "(ddpm always takes all T)")
    g.add_argument("--eta", type=float, help="ddim's noise: 0 deterministic, 1 DDPM-like")
    g.add_argument("--cfg-scale", type=float,
                   help="classifier-free guidance scale; 1 = none (autoguidance stays on)")
    g.add_argument("--autoguide-scale", type=float,
                   help="autoguidance W, away from the checkpoint's early weights; 1 = none")
    g.add_argument("--seed", type=int, default=0, help="seed of the starting noise (default: 0)")
    g.add_argument("--device", help="cuda or cpu (default: cuda when present)")
    g.add_argument("--amp", choices=AMP_CHOICES, default="auto",
                   help=AMP_HELP)
    g = p.add_argument_group("a grid and pictures (default: a 10 x 10 grid, row k = digit k)")
    g.add_argument("--labels", type=int, nargs="+", help="digits, one grid row each (default: 0-9)")
    g.add_argument("--per-row", type=int, help="samples per digit in the grid (default: 10)")
    g.add_argument("--output", help="grid PNG (default: grid.png beside a checkpoint in runs/, "
                                    "else runs/samples/grid.png)")
    g.add_argument("--trajectory", nargs="?", const=True, metavar="PNG",
                   help="also save the denoising trajectory, x_t and the predicted x_0 at each "
                        "shown step (default file: trajectory.png beside the grid)")
    g.add_argument("--guidance-strip", nargs="?", const=True, metavar="PNG",
                   help="also sample each digit at classifier-free guidance 0, 1, 2, 4 and 8 "
                        "(no autoguidance) from one noise (default file: guidance.png beside "
                        "the grid)")
    g = p.add_argument_group("image files for fid_computer.py")
    g.add_argument("--num-per-class", type=int,
                   help="write this many PNG files per digit into --out-dir instead of a grid "
                        "(they replace the folder's earlier images)")
    g.add_argument("--out-dir", help=f"folder for --num-per-class files (default: {FAKE_DIR})")
    g.add_argument("--batch-size", type=int, help="images sampled at once (default: 500)")
    return p.parse_args(argv)


def check_flags(args: argparse.Namespace, cfg: Config, has_weak: bool) -> None:
    """Refuse the flags that would do nothing (a grid's with --num-per-class, the files' without
    it, a setting the chosen sampler ignores, autoguidance without a weak model), apply the
    sampling flags that were given to cfg.sample, and check every value and every place that will
    be written (--out-dir gets its default here)."""
    def spelt(names):
        return ", ".join(f"--{flag(n)}" for n in names if getattr(args, n) is not None)

    if args.num_per_class is None and spelt(["out_dir", "batch_size"]):
        raise UserError(f"{spelt(['out_dir', 'batch_size'])}: for the image files of "
                        "--num-per-class only; add --num-per-class, or drop them")
    grid = ["labels", "per_row", "output", "trajectory", "guidance_strip"]
    if args.num_per_class is not None and spelt(grid):
        raise UserError(f"--num-per-class writes image files only: drop {spelt(grid)}, or run "
                        "them separately")
    s = cfg.sample
    for name in ["sampler", "steps", "eta", "cfg_scale", "autoguide_scale"]:
        if getattr(args, name) is not None:
            setattr(s, name, getattr(args, name))
    if args.autoguide_scale not in (None, 1.0) and not has_weak:
        raise UserError(f"{args.checkpoint} keeps no weak model to guide away from (it was "
                        "trained with --weak-model-at 0, or by an earlier version): drop "
                        "--autoguide-scale")
    asked = args.cfg_scale not in (None, 1.0) or args.guidance_strip
    # refused when asked for; otherwise at guidance 1, even if the checkpoint kept its preset's
    cfg.drop_guidance_without_null_label(spelt(["cfg_scale", "guidance_strip"]) if asked else "",
                                         args.checkpoint)
    if args.eta is not None and s.sampler != "ddim":
        why = ("its noise is fixed, DDIM's at eta 1" if s.sampler == "ddpm"
               else "it is deterministic")
        raise UserError(f"--eta sets DDIM's noise, and {s.sampler} takes no eta ({why}): drop "
                        "--eta, or pass --sampler ddim")
    if args.steps is not None and s.sampler == "ddpm":
        raise UserError(f"ddpm always takes all {cfg.diffusion.num_timesteps} steps: drop --steps, "
                        "or pass --sampler ddim, plms or dpm-solver++")
    s.check(cfg.diffusion.num_timesteps)
    for label in args.labels or []:
        if not 0 <= label < cfg.model.num_classes:
            raise UserError(f"label {label} is not a digit: labels must be 0 to "
                            f"{cfg.model.num_classes - 1}")
    for name in ["per_row", "batch_size", "num_per_class"]:
        if getattr(args, name) is not None and getattr(args, name) <= 0:
            raise UserError(f"--{flag(name)} must be positive, got {getattr(args, name)}")
    for name in ["output", "trajectory", "guidance_strip"]:  # before the minutes of sampling
        path = getattr(args, name)
        if isinstance(path, str):
            if Path(path).suffix.lower() != ".png":
                raise UserError(f"--{flag(name)} {path}: the picture is a PNG; give a file name "
                                "ending in .png")
            check_can_write_in(Path(path).parent, f"--{flag(name)} {path}")
    if args.num_per_class is not None:  # its images are written beside it first
        args.out_dir = args.out_dir or FAKE_DIR  # (write_class_images)
        check_can_write_in(Path(args.out_dir).resolve().parent, f"--out-dir {args.out_dir}")
    elif not isinstance(args.output, str):  # the grid, and a default trajectory, go here
        folder = outputs_dir(args.checkpoint, "samples")
        check_can_write_in(folder, f"the grid's folder {folder} (or pass --output)")


def run(args: argparse.Namespace) -> None:
    device = pick_device(args.device)
    checkpoint = read_checkpoint(args.checkpoint)  # tensors and plain types only (weights_only)
    cfg = Config.from_dict(checkpoint["config"], source=args.checkpoint)  # nothing is retyped
    check_flags(args, cfg, "weak_ema" in checkpoint)
    # the EMA DiT, and the model to sample with: the EMA guided away from the weak model, if any
    ema, model = load_ema(checkpoint, cfg, args.checkpoint, device)
    autoencoder = autoencoder_of(checkpoint, cfg.autoencoder, args.checkpoint, device)  # or None
    s = cfg.sample
    diffusion = GaussianDiffusion.from_config(cfg.diffusion)
    bf16 = use_bf16(args.amp, device)
    how = {"ddpm": f"{cfg.diffusion.num_timesteps} steps", "ddim": f"{s.steps} steps, eta {s.eta}"}
    guided = (f", autoguidance {s.autoguide_scale} (from the EMA at step "
              f"{checkpoint['weak_ema_step']})" if model is not ema else "")
    print(f"device: {device} | {s.sampler} with {how.get(s.sampler, f'{s.steps} steps')}, "
          f"guidance {s.cfg_scale}{guided} | seed {args.seed} | bf16 {'on' if bf16 else 'off'}"
          + (" | latent model, decoded by its autoencoder" if autoencoder is not None else ""))

    if args.num_per_class is not None:
        out_dir, batch_size = args.out_dir, args.batch_size or 500  # out_dir: set by check_flags
        with out_of_memory_as_error(f"sampling ran out of memory on {device}: pass a smaller "
                                    "--batch-size"):
            paths = write_class_images(model, diffusion, cfg, args.num_per_class, out_dir, device,
                                       batch_size, args.seed, bf16, autoencoder=autoencoder)
        print(f"wrote {len(paths)} images to {out_dir}")
        return

    digits = args.labels if args.labels is not None else list(range(cfg.model.num_classes))
    per_row, folder = args.per_row or 10, outputs_dir(args.checkpoint, "samples")
    with out_of_memory_as_error(f"sampling ran out of memory on {device}: pass a smaller "
                                "--per-row or fewer --labels"):
        g = torch.Generator(device).manual_seed(args.seed)
        grid = sample_grid(model, diffusion, cfg, digits, per_row, g, bf16, autoencoder,
                           progress=True)
        out = Path(args.output) if args.output else folder / "grid.png"
        save_grid(grid, out, nrow=per_row)
        print(f"grid ({len(digits)} rows x {per_row}): {out}")
        if args.trajectory is not None:
            path = (out.parent / "trajectory.png" if args.trajectory is True
                    else Path(args.trajectory))
            g = torch.Generator(device).manual_seed(args.seed)
            panels = trajectory_panels(model, diffusion, cfg, torch.tensor(digits, device=device),
                                       g, bf16, autoencoder, progress=True)
            save_trajectory(*panels, digits, path)
            print(f"trajectory: {path}")
        if args.guidance_strip is not None:
            path = (out.parent / "guidance.png" if args.guidance_strip is True
                    else Path(args.guidance_strip))
            # classifier-free guidance alone, so that each column shows only its scale
            strip = guidance_strip(ema, diffusion, cfg, digits, GUIDANCE_SCALES, args.seed, bf16,
                                   autoencoder, progress=True)
            save_guidance_strip(strip, digits, GUIDANCE_SCALES, path)
            print(f"guidance strip (scales {', '.join(f'{x:g}' for x in GUIDANCE_SCALES)}): {path}")


def main(argv: list[str] | None = None) -> int:
    return exit_status(run, parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
