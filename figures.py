"""Draw the lesson's pictures: the forward process, the tokens, attention, the adaLN-Zero gates,
the loss, and the sampling animation.

    python figures.py                                    # every picture, from the shipped weights
    python figures.py --checkpoint runs/default/model.pth    # from your own run (its log.csv too)
    python figures.py --only forward tokens              # the maths alone: no checkpoint needed
    python figures.py --checkpoint pretrained/latent/model.pth   # a latent model's pictures
    python figures.py --out-dir images                   # redraw the README's own pictures

Writes into --out-dir (default runs/figures/): forward.png and tokens.png (the maths: no model),
attention.png and sampling.gif (drawn by the checkpoint's EMA model, sampled as inference.py
samples it), gates.png and loss.png
(from the log.csv beside the checkpoint). For a latent model (train.py --preset latent): its
autoencoder's reconstructions.png and latents.png, then sampling.gif, gates.png and loss.png.
Sample grids, trajectories and guidance strips come from inference.py. The drawing itself is in
support/pictures.py; this file picks the digit and the model and computes what is drawn.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from autoencoder import autoencoder_of, encode_images
from config import Config, get_preset
from dataset import load_mnist, resolve_data_dir, to_model_range
from diffusion import GaussianDiffusion
from dit import DiT, load_ema, patchify, sincos_pos_embed_2d
from support.checkpoint import SHIPPED, read_checkpoint, read_log
from support.cli import (AMP_CHOICES, AMP_HELP, UserError, check_can_write_in, exit_status, flag,
                         pick_device, use_bf16)
from support.pictures import (ATTENTION_TIMESTEPS, forward_process, sampling_frames, save_attention,
                              save_forward_process, save_gates_plot, save_gif, save_latent_channels,
                              save_loss_plot, save_reconstructions, save_tokens)
from support.sampling import class_labels, generate

PICTURES = ("forward", "tokens", "attention", "gates", "loss", "sampling")  # of a pixel model
LATENT_PICTURES = ("reconstructions", "latents", "gates", "loss", "sampling")  # of a latent one
USES = {  # flag -> the pictures it changes; given for none of the pictures drawn, it is refused
    "log": {"gates", "loss"},
    "data_dir": {"forward", "tokens", "attention", "reconstructions", "latents"},
    "digit": {"forward", "tokens", "attention", "reconstructions", "latents"},
    "seed": {"attention", "sampling", "latents", "reconstructions"},
    "device": {"attention", "sampling", "reconstructions", "latents"},
    "amp": {"sampling"},
}


def attention_panels(model: DiT, diffusion: GaussianDiffusion, x0: torch.Tensor, label: int,
                     timesteps=ATTENTION_TIMESTEPS, seed: int = 0):
    """For one digit x0 (C, H, W) noised to each of `timesteps` (one fixed noise): the noised
    digits (L, H, W), every block's attention (L, depth, NH, N, N; DiT.attention_maps), and the
    query token shown: the patch with the most ink, where the digit is."""
    p = model.config.patch_size
    device = next(model.parameters()).device
    x_t = forward_process(diffusion, x0, timesteps, seed).to(device)  # (L, C, H, W)
    t = torch.tensor(timesteps, device=device)
    y = torch.full_like(t, label)
    maps = torch.stack(model.attention_maps(x_t, t, y), dim=1).cpu()  # (L, depth, NH, N, N)
    ink = patchify((x0[None] + 1) / 2, p)[0].sum(dim=1)  # (N,): bright pixels per patch
    return x_t[:, 0].cpu(), maps, int(ink.argmax())


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="Draw the README's pictures of how a DiT works.")
    p.add_argument("--checkpoint", default=None,
                   help=f"a model.pth of train.py (default: the shipped {SHIPPED})")
    p.add_argument("--only", nargs="+", choices=sorted(set(PICTURES + LATENT_PICTURES)),
                   help="these pictures only (default: every picture of the checkpoint's kind)")
    p.add_argument("--out-dir", default="runs/figures",
                   help="where the pictures go (default: runs/figures; the README's are images/)")
    p.add_argument("--log", default=None,
                   help="the run's log.csv, for gates and loss (default: beside the checkpoint)")
    p.add_argument("--data-dir", default=None,
                   help="folder holding MNIST/raw/, for the digit shown (default: $DIT_DATA_DIR "
                        "or ./data)")
    p.add_argument("--digit", type=int, default=None,
                   help="index of the MNIST test digit shown (default: 0)")
    p.add_argument("--seed", type=int, default=None,
                   help="seed of the noise of attention, sampling, reconstructions and latents "
                        "(default: 0)")
    p.add_argument("--device", default=None, help="cuda or cpu (default: cuda when present)")
    p.add_argument("--amp", choices=AMP_CHOICES, default=None,
                   help=AMP_HELP)
    return p.parse_args(argv)


def run(args: argparse.Namespace) -> None:
    # Which pictures: the maths alone needs no checkpoint; the others are those of its kind.
    path = args.checkpoint or SHIPPED
    wanted = set(args.only or PICTURES)
    # the maths pictures show the default's patch and width
    checkpoint, cfg = None, get_preset("cpu")
    if args.checkpoint or wanted - {"forward", "tokens"}:
        checkpoint = read_checkpoint(path)
        cfg = Config.from_dict(checkpoint["config"], source=path)
        kind, allowed = ("latent", LATENT_PICTURES) if cfg.autoencoder else ("pixel", PICTURES)
        wanted = set(args.only or allowed)
        if wanted - set(allowed):
            raise UserError(f"{', '.join(sorted(wanted - set(allowed)))} cannot be drawn for "
                            f"{path}, a {kind} model: choose from {', '.join(allowed)}")
    for name, pictures in USES.items():
        if getattr(args, name) is not None and not wanted & pictures:
            raise UserError(f"--{flag(name)} changes only {', '.join(sorted(pictures))}, "
                            "none of which is drawn here: drop it")
    digit, seed, out = args.digit or 0, args.seed or 0, Path(args.out_dir)
    check_can_write_in(out, f"--out-dir {args.out_dir}")  # before any model is run
    diffusion = GaussianDiffusion.from_config(cfg.diffusion)
    model = sampled = autoencoder = None
    if wanted & {"attention", "sampling", "reconstructions", "latents"}:
        device = pick_device(args.device)
        model, sampled = load_ema(checkpoint, cfg, path, device)  # sampled: as inference.py does
        autoencoder = autoencoder_of(checkpoint, cfg.autoencoder, path, device)  # or None
    if wanted & USES["digit"]:
        images, labels = load_mnist(resolve_data_dir(args.data_dir), train=False)
        if not 0 <= digit < len(images):
            raise UserError(f"--digit must be 0 to {len(images) - 1}, got {digit}")
        x0, label = to_model_range(images[digit : digit + 1])[0], int(labels[digit])
    drawn = []

    if "forward" in wanted:
        save_forward_process(diffusion, x0, cfg.train.min_snr_gamma, out / "forward.png")
        drawn.append("forward.png")
    if "tokens" in wanted:
        p, side = cfg.model.patch_size, cfg.model.image_size // cfg.model.patch_size
        tokens = patchify(x0[None], p)[0]  # (N, p * p): token n is patch n in row-major order
        code = sincos_pos_embed_2d(cfg.model.hidden_size, side)  # (N, D)
        save_tokens(x0, tokens, code, p, out / "tokens.png")
        drawn.append("tokens.png")
    if "attention" in wanted:
        x_t, maps, query = attention_panels(model, diffusion, x0, label, seed=seed)
        save_attention(x_t, maps, query, ATTENTION_TIMESTEPS, cfg.model.patch_size,
                       out / "attention.png")
        drawn.append("attention.png")
    if "sampling" in wanted:
        g = torch.Generator(device).manual_seed(seed)
        labels = class_labels(cfg.model.num_classes, 2, device)  # two of each digit
        _, states, x0_preds = generate(sampled, diffusion, labels, cfg, g,
                                       use_bf16(args.amp or "auto", device),
                                       return_intermediates=True, progress=True,
                                       autoencoder=autoencoder)
        save_gif(sampling_frames(states, x0_preds, nrow=4), out / "sampling.gif")
        drawn.append("sampling.gif")
    if wanted & {"reconstructions", "latents"}:
        digits = images[digit : digit + 8]  # eight test digits from --digit on
        z = encode_images(autoencoder, digits, seed)  # (8, C, h, w), scaled
        if "reconstructions" in wanted:
            save_reconstructions(to_model_range(digits), autoencoder.to_pixels(z).cpu(),
                                 tuple(z.shape[1:]), out / "reconstructions.png")
            drawn.append("reconstructions.png")
        if "latents" in wanted:
            save_latent_channels(to_model_range(digits[:4]), z[:4].cpu(), out / "latents.png")
            drawn.append("latents.png")
    if wanted & {"gates", "loss"}:
        log = Path(args.log) if args.log else Path(path).parent / "log.csv"
        rows = read_log(log)
        if not rows:
            raise UserError(f"no training log at {log}: pass --log, or train first")
        if "gates" in wanted:
            save_gates_plot(rows, out / "gates.png")
            drawn.append("gates.png")
        if "loss" in wanted:
            save_loss_plot(rows, out / "loss.png", cfg.diffusion.num_timesteps)
            drawn.append("loss.png")
    print(f"drew {', '.join(drawn)} in {out}")


def main(argv: list[str] | None = None) -> int:
    return exit_status(run, parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
