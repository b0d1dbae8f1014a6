"""Draw the lesson's pictures: the forward process, the tokens, attention, the adaLN-Zero gates,
the loss, and the sampling animation.

    python figures.py                                    # every picture, from the shipped weights
    python figures.py --checkpoint runs/default/model.pth    # from your own run (its log.csv too)
    python figures.py --only forward tokens              # the maths alone: no checkpoint needed
    python figures.py --checkpoint runs/latent/model.pth --out-dir images/latent   # a latent model

Writes into --out-dir (default images/): forward.png and tokens.png (the maths: no model),
attention.png and sampling.gif (drawn by the checkpoint's EMA model), gates.png and loss.png
(from the log.csv beside the checkpoint). For a latent model (train.py --preset latent): its
autoencoder's reconstructions.png and latents.png, then sampling.gif, gates.png and loss.png.
Sample grids, trajectories and guidance strips come from inference.py. The drawing itself is in
pictures.py; this file picks the digit and the model.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from autoencoder import encode_images
from checkpoint import (checkpoint_config, load_autoencoder, load_model, read_checkpoint, read_log,
                        use_bf16)
from config import AMP_CHOICES, UserError, get_preset, pick_device, run_reporting_user_errors
from dataset import load_mnist, resolve_data_dir, to_model_range
from diffusion import GaussianDiffusion
from pictures import (ATTENTION_TIMESTEPS, attention_panels, class_labels, generate,
                      sampling_frames, save_attention, save_forward_process, save_gates_plot,
                      save_gif, save_latent_channels, save_loss_plot, save_reconstructions,
                      save_tokens)

SHIPPED = "pretrained/model.pth"  # the default run's EMA weights (README, "Weights that ship")
PICTURES = ("forward", "tokens", "attention", "gates", "loss", "sampling")  # of a pixel model
LATENT_PICTURES = ("reconstructions", "latents", "gates", "loss", "sampling")  # of a latent one


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="Draw the README's pictures of how a DiT works.",
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--checkpoint", default=SHIPPED)
    p.add_argument("--log", default=None, help="the run's log.csv (default: beside --checkpoint)")
    p.add_argument("--only", nargs="+", choices=sorted(set(PICTURES + LATENT_PICTURES)),
                   default=None, help="default: every picture of the checkpoint's kind")
    p.add_argument("--out-dir", default="images")
    p.add_argument("--data-dir", default=None, help="folder holding MNIST/raw/ (the digit shown)")
    p.add_argument("--digit", type=int, default=0, help="index of the MNIST test digit shown")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default=None, help="cuda or cpu (default: cuda when present)")
    p.add_argument("--amp", choices=AMP_CHOICES, default="auto", help="bf16 autocast for sampling")
    return p


def run(args: argparse.Namespace) -> None:
    out = Path(args.out_dir)
    images, labels = load_mnist(resolve_data_dir(args.data_dir), train=False)
    if not 0 <= args.digit < len(images):
        raise UserError(f"--digit must be 0 to {len(images) - 1}, got {args.digit}")
    x0, label = to_model_range(images[args.digit : args.digit + 1])[0], int(labels[args.digit])
    wanted = set(args.only or PICTURES)
    model = cfg = autoencoder = None
    if args.only is None or wanted - {"forward", "tokens"}:  # the maths alone needs no checkpoint
        cfg = checkpoint_config(read_checkpoint(args.checkpoint), args.checkpoint)
        kind, allowed = ("latent", LATENT_PICTURES) if cfg.autoencoder else ("pixel", PICTURES)
        wanted = set(args.only or allowed)
        if wanted - set(allowed):
            raise UserError(f"{', '.join(sorted(wanted - set(allowed)))} cannot be drawn for "
                            f"{args.checkpoint}, a {kind} model: choose from {', '.join(allowed)}")
    if wanted & {"attention", "sampling", "reconstructions", "latents"}:
        device = pick_device(args.device)
        model, cfg = load_model(args.checkpoint, device)
        autoencoder = load_autoencoder(args.checkpoint, cfg, device)  # None for pixels
    cfg = cfg or get_preset("cpu")  # the maths pictures use the default's patch and width
    diffusion = GaussianDiffusion.from_config(cfg.diffusion)
    drawn = []

    if "forward" in wanted:
        save_forward_process(diffusion, x0, cfg.train.min_snr_gamma, out / "forward.png")
        drawn.append("forward.png")
    if "tokens" in wanted:
        save_tokens(x0, cfg.model.patch_size, cfg.model.hidden_size, out / "tokens.png")
        drawn.append("tokens.png")
    if "attention" in wanted:
        x_t, maps, query = attention_panels(model, diffusion, x0, label, seed=args.seed)
        save_attention(x_t, maps, query, ATTENTION_TIMESTEPS, cfg.model.patch_size,
                       out / "attention.png")
        drawn.append("attention.png")
    if "sampling" in wanted:
        g = torch.Generator(device).manual_seed(args.seed)
        labels = class_labels(cfg.model.num_classes, 2, device)  # two of each digit
        _, states, x0_preds = generate(model, diffusion, labels, cfg, g, use_bf16(args.amp, device),
                                       return_intermediates=True, autoencoder=autoencoder)
        save_gif(sampling_frames(states, x0_preds, nrow=4), out / "sampling.gif")
        drawn.append("sampling.gif")
    if wanted & {"reconstructions", "latents"}:
        digits = images[args.digit : args.digit + 8]  # eight test digits from --digit on
        z = encode_images(autoencoder, digits, args.seed)  # (8, C, h, w), scaled
        if "reconstructions" in wanted:
            save_reconstructions(to_model_range(digits), autoencoder.to_pixels(z).cpu(),
                                 tuple(z.shape[1:]), out / "reconstructions.png")
            drawn.append("reconstructions.png")
        if "latents" in wanted:
            save_latent_channels(to_model_range(digits[:4]), z[:4].cpu(), out / "latents.png")
            drawn.append("latents.png")
    if wanted & {"gates", "loss"}:
        log = Path(args.log) if args.log else Path(args.checkpoint).parent / "log.csv"
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
    return run_reporting_user_errors(run, build_parser().parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
