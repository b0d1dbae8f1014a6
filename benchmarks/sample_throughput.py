"""Sampling throughput: images/s of each sampler at its default number of steps.

    python benchmarks/sample_throughput.py                       # the cpu preset's model
    python benchmarks/sample_throughput.py --checkpoint runs/default/model.pth --num 200
    python benchmarks/sample_throughput.py --samplers ddim --amp off bf16   # fp32 against bf16

Times `GaussianDiffusion.sample` with classifier-free guidance (two network passes per step,
batched into one) on a batch of `--num` images, after one warm-up call. With no checkpoint it
uses a freshly built model of the preset: the speed of sampling does not depend on the weights.
Default steps: DDPM 1000 (it has no other), DDIM 50, PLMS 50, DPM-Solver++ 20.
"""

from __future__ import annotations

import argparse
import time

from common import guidance_label, load_model  # beside this file in benchmarks/

DEFAULT_STEPS = {"ddpm": 1000, "ddim": 50, "plms": 50, "dpm-solver++": 20}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--preset", default="cpu")
    p.add_argument("--checkpoint", default=None, help="time this trained model instead")
    p.add_argument("--num", type=int, default=100, help="images per timed call")
    p.add_argument("--samplers", nargs="+", default=list(DEFAULT_STEPS), choices=list(DEFAULT_STEPS))
    p.add_argument("--device", default=None)
    p.add_argument("--cfg-scale", type=float, default=2.0)
    p.add_argument("--amp", nargs="+", default=["auto"], choices=["auto", "bf16", "off"],
                   help="network precision, one row per sampler and setting (support.cli.use_bf16)")
    args = p.parse_args()

    import torch

    from config import get_preset
    from support.cli import pick_device, use_bf16
    from diffusion import GaussianDiffusion
    from dit import DiT

    device = pick_device(args.device)
    if args.checkpoint:
        model, cfg = load_model(args.checkpoint, device)
    else:
        cfg = get_preset(args.preset)
        model = DiT(cfg.model).to(device).eval()
    diffusion = GaussianDiffusion.from_config(cfg.diffusion)
    labels = torch.arange(args.num, device=device) % 10
    shape = (args.num, 1, cfg.model.image_size, cfg.model.image_size)
    cfg.sample.cfg_scale = args.cfg_scale
    print(f"device: {device} | model: {'checkpoint ' + args.checkpoint if args.checkpoint else 'preset ' + args.preset} "
          f"| {args.num} images per call | {guidance_label(model, cfg)}")
    print(f"| {'sampler':<13} | {'steps':>5} | {'network evals':>13} | {'amp':<4} | {'seconds':>7} | "
          f"{'images/s':>8} |")
    print(f"|{'-' * 15}|{'-' * 7}|{'-' * 15}|{'-' * 6}|{'-' * 9}|{'-' * 10}|")
    for sampler, amp in [(s, a) for s in args.samplers for a in args.amp]:
        bf16 = use_bf16(amp, device)
        steps = DEFAULT_STEPS[sampler]
        evals = steps + 1 if sampler == "plms" else steps  # PLMS's first step is a two-call Heun step

        def run():
            g = torch.Generator(device).manual_seed(0)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
                diffusion.sample(model, shape, labels, sampler=sampler, steps=steps,
                                 cfg_scale=args.cfg_scale, generator=g)
            if device.type == "cuda":
                torch.cuda.synchronize()

        # Warm-up on a small batch, in the same precision: kernels, allocator.
        with torch.no_grad(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            diffusion.sample(model, (2, *shape[1:]), labels[:2], sampler="ddim", steps=2,
                             cfg_scale=args.cfg_scale)
        t = time.perf_counter()
        run()
        sec = time.perf_counter() - t
        print(f"| {sampler:<13} | {steps:>5} | {evals:>13} | {'bf16' if bf16 else 'fp32':<4} | "
              f"{sec:>7.1f} | {args.num / sec:>8.1f} |")


if __name__ == "__main__":
    main()
