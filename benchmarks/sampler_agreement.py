"""Do the samplers solve the same ODE? Pixel differences at many steps, in fp32 and in bf16.

    python benchmarks/sampler_agreement.py                        # runs/default/model.pth
    python benchmarks/sampler_agreement.py --per-class 10 --steps 100

DDIM, PLMS and DPM-Solver++ are all solvers of one probability-flow ODE, started from the same
noise (one seed): with enough steps they must land on the same images. The reference is DDIM
with all T steps in fp32. For each sampler at `--steps`, with the network in fp32 and under bf16
autocast, the script prints the mean and the largest absolute pixel difference from the
reference (pixels in [-1, 1]). A large difference in fp32 would be a bug; a difference that
appears only in bf16 is rounding in the network's noise predictions, amplified by the solver.
"""

from __future__ import annotations

import argparse
import sys
import time

from common import load_model  # beside this file in benchmarks/


def main() -> int:
    from support.cli import exit_status

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", default="runs/default/model.pth")
    p.add_argument("--per-class", type=int, default=5, help="images of each digit")
    p.add_argument("--steps", type=int, default=250, help="steps of the fast samplers")
    p.add_argument("--cfg-scale", type=float, default=None, help="default: the checkpoint's")
    p.add_argument("--device", default=None)
    return exit_status(compare, p.parse_args())


def compare(args: argparse.Namespace) -> None:
    """Print the table of differences from the fp32 DDIM reference."""
    import torch

    from support.cli import pick_device
    from diffusion import GaussianDiffusion
    from support.sampling import class_labels

    device = pick_device(args.device)
    model, cfg = load_model(args.checkpoint, device, cfg_scale=args.cfg_scale)
    diffusion = GaussianDiffusion.from_config(cfg.diffusion)
    scale = cfg.sample.cfg_scale
    labels = class_labels(cfg.model.num_classes, args.per_class, device)
    shape = (len(labels), cfg.model.in_channels, cfg.model.image_size, cfg.model.image_size)
    T = cfg.diffusion.num_timesteps

    def draw(sampler: str, steps: int, bf16: bool) -> torch.Tensor:
        g = torch.Generator(device).manual_seed(0)  # the same starting noise for every run
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            return diffusion.sample(model, shape, labels, sampler=sampler, steps=steps,
                                    cfg_scale=scale, generator=g).cpu()

    print(f"device: {device} | {args.checkpoint} | {len(labels)} images, guidance {scale} | "
          f"reference: ddim with {T} steps, fp32")
    reference = draw("ddim", T, False)
    print(f"| {'sampler':<13} | {'steps':>5} | {'network':<7} | {'mean |diff|':>11} | "
          f"{'max |diff|':>10} | {'seconds':>7} |")
    print(f"|{'-' * 15}|{'-' * 7}|{'-' * 9}|{'-' * 13}|{'-' * 12}|{'-' * 9}|")
    runs = [(s, args.steps, bf16) for bf16 in (False, True) for s in ("ddim", "plms", "dpm-solver++")]
    runs.append(("ddim", T, True))
    for sampler, steps, bf16 in runs:
        t = time.perf_counter()
        diff = (draw(sampler, steps, bf16) - reference).abs()
        print(f"| {sampler:<13} | {steps:>5} | {'bf16' if bf16 else 'fp32':<7} | "
              f"{diff.mean():>11.4f} | {diff.max():>10.3f} | {time.perf_counter() - t:>7.1f} |",
              flush=True)


if __name__ == "__main__":
    sys.exit(main())
