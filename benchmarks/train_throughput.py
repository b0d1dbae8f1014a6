"""Training throughput: images/s, time per epoch, peak memory, FLOPs and share of matmul peak.

    python benchmarks/train_throughput.py                    # every preset, on CUDA if present
    python benchmarks/train_throughput.py --presets cpu --amp off bf16 --naive
    python benchmarks/train_throughput.py --presets cpu --set model.patch_size=2 --naive --compile

For each preset it times the training step of train.py (`training_step` below: train.py's
`train_step` and `update_ema`, written out because a benchmark imports no script; a test checks
that the two leave bit-identical weights; batches cut from an in-memory tensor) after a warm-up,
and prints one table row. It also measures the
machine's matmul peak (a large square fp32 and bf16 matrix product) and reports the share of it
that training reaches: model FLOPs per image (derived from the shapes, forward and backward, see
`model_flops_per_image`) times images/s, over the peak.

`--naive` adds a row for a straightforward implementation of the same model size, as a
reference point: a torch DataLoader over torchvision's MNIST-style PIL images with ToTensor and
Normalize per sample, separate Q, K and V projections and attention written out as
softmax(Q K^T / sqrt(d)) V with the N x N matrix materialised. It does the same work per step
(the training step and the EMA update) and runs in the same command, right after the others, so
the ratio is measured under the same conditions.

`--profile K` also runs 10 steps of each row under torch.profiler and, after the table, lists the
K operators that took the most time of their own (self time, per step and as a share of the
step): where the time goes, for instance where bf16 loses it to fp32 on a CPU.

`--compile` adds a row per preset and amp setting with the model wrapped in `torch.compile` (the
compilation happens in the untimed warm-up). `--set section.field=value` changes the preset for
every row, for instance `--set model.patch_size=2` to see how the levers fare with 196 tokens.

Each row runs in a fresh subprocess so that peak memory (CPU: peak resident set size;
CUDA: torch.cuda.max_memory_allocated) belongs to that row alone.
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import time
from pathlib import Path

from common import ROOT  # beside this file in benchmarks/; puts the project on the path


def matmul_peak_gflops(device, dtype, n_max: int = 2048, seconds: float = 1.0) -> float:
    """Measured rate of a large square matrix product on random data, in GFLOP/s. The side
    doubles from 256 up to n_max (large enough to fill a GPU or a CPU's matrix units) while the
    next size's product (8x the work) would still take under `seconds`; then products of the last
    size are timed for about `seconds`. A slow kernel (bf16 on a CPU without bf16 instructions
    runs at a few GFLOP/s) so stops at a small side in seconds, not minutes."""
    import torch

    n = 256
    while True:
        a = torch.randn(n, n, device=device, dtype=dtype)
        b = torch.randn(n, n, device=device, dtype=dtype)
        a @ b  # warm-up: kernel selection, allocation
        sync(device)
        t = time.perf_counter()
        a @ b
        sync(device)
        one = time.perf_counter() - t
        if n >= n_max or 8 * one > seconds:
            break
        n *= 2
    reps = max(2, math.ceil(seconds / max(one, 1e-9)))
    t = time.perf_counter()
    for _ in range(reps):
        a @ b
    sync(device)
    return 2 * n**3 * reps / (time.perf_counter() - t) / 1e9


def sync(device) -> None:
    import torch

    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def model_flops_per_image(m) -> float:
    """Matmul FLOPs of one training step per image, derived from the shapes of a ModelConfig.

    Forward: 2 FLOPs per multiply-add of every matmul (patch embedding, timestep MLP, each block's
    adaLN, QKV, Q K^T, A V, output projection and MLP, the final layer); backward is counted as
    twice the forward (a gradient for the input and one for the weights), so a step is 3x the
    forward, the convention of model-FLOPs utilisation. Derived by hand rather than read from
    torch.utils.flop_counter, whose count of the fused attention kernel differs between torch
    versions (some count its backward's recomputation, some skip the kernel); the tests check
    this formula against the counter on benchmarks/naive_dit.py, whose plain matmuls every
    version counts alike. Norms, softmax and activations are left out (a few percent here)."""
    from time_emb import FREQUENCY_DIM

    N = (m.image_size // m.patch_size) ** 2  # tokens
    D, P = m.hidden_size, m.patch_size**2 * m.in_channels  # width, pixels per patch
    mlp_hidden = int(D * m.mlp_ratio)
    per_block = (2 * D * 6 * D  # adaLN modulation, once per image
                 + 2 * N * D * 3 * D  # QKV projection
                 + 2 * 2 * N * N * D  # Q K^T and A V over all heads
                 + 2 * N * D * D  # attention output projection
                 + 2 * 2 * N * D * mlp_hidden)  # the MLP's two layers
    forward = (2 * N * P * D  # patch embedding
               + 2 * (FREQUENCY_DIM * D + D * D)  # the timestep MLP
               + m.depth * per_block
               + 2 * D * 2 * D + 2 * N * D * P)  # final layer: adaLN, then tokens to pixels
    return 3.0 * forward


def apply_overrides(cfg, overrides: list[str]):
    """Set `section.field=value` entries on a Config, each value parsed as its field's type. Each
    section is rebuilt once with all its new fields (dataclasses.replace), and then the whole
    config is checked (Config.check), so the checks run on the final combination: a patch size
    that does not divide 28 or a rate of 0 is refused here, not deep inside the model or the
    timing, while width 64 with 4 heads may be set in either order."""
    import dataclasses

    from support.cli import UserError

    changes: dict[str, dict] = {}
    for item in overrides:
        key, sep, value = item.partition("=")
        section, _, name = key.partition(".")
        target = getattr(cfg, section, None)
        if not sep or not dataclasses.is_dataclass(target) or not hasattr(target, name):
            sys.exit(f"--set {item!r}: expected section.field=value, e.g. model.patch_size=2")
        kind = type(getattr(target, name))
        try:
            if kind is bool and value.lower() not in ("true", "false"):
                raise ValueError("expected true or false")
            changes.setdefault(section, {})[name] = value.lower() == "true" if kind is bool else kind(value)
        except ValueError as e:
            sys.exit(f"--set {item!r}: {e}")
    for section, fields in changes.items():
        try:
            setattr(cfg, section, dataclasses.replace(getattr(cfg, section), **fields))
        except UserError as e:
            sys.exit(f"--set {' '.join(f'{section}.{k}={v}' for k, v in fields.items())}: {e}")
    try:  # the checks a section runs only when asked (a rate, a step count), and their fit
        cfg.check()
    except UserError as e:
        sys.exit(f"--set {' '.join(overrides)}: {e}")
    return cfg


def make_optimizer(model, cfg):
    """train.py's optimiser: AdamW with one fused kernel for every tensor."""
    import torch

    return torch.optim.AdamW(model.parameters(), lr=cfg.train.lr,
                             weight_decay=cfg.train.weight_decay, fused=True)


def training_step(model, ema, diffusion, optimizer, x0, y, cfg, step: int, bf16: bool,
                  train_model=None) -> float:
    """One step of train.py at the peak learning rate: the noise-prediction loss (DDPM Algorithm
    1, min-SNR weighted), its gradient clipped, the AdamW step, then the EMA update with the
    decay of this step (its warm-up included). train_model is what the step calls (a compiled
    wrapper of `model`); returns the loss."""
    import torch

    with torch.autocast(x0.device.type, dtype=torch.bfloat16, enabled=bf16):
        loss = diffusion.training_loss(model if train_model is None else train_model,
                                       x0, y, cfg.train.min_snr_gamma)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if cfg.train.grad_clip > 0:
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.train.grad_clip)
    optimizer.step()
    decay = cfg.train.ema_decay
    if cfg.train.ema_warmup:
        decay = min(decay, (1 + step) / (10 + step))
    with torch.no_grad():
        for e, p in zip(ema.parameters(), model.parameters()):
            e.lerp_(p.detach(), 1.0 - decay)
    return loss.item()


def run_row(preset: str, amp: str, naive: bool, compile_model: bool, overrides: list[str],
            device_name: str | None, seconds: float, profile_top: int = 0) -> dict:
    """Time one configuration; runs inside its own subprocess (see main)."""
    import copy
    import resource

    import torch

    from config import get_preset
    from dataset import InMemoryBatches
    from diffusion import GaussianDiffusion
    from dit import DiT
    from support.cli import use_bf16

    device = torch.device(device_name or ("cuda" if torch.cuda.is_available() else "cpu"))
    cfg = apply_overrides(get_preset(preset), overrides)
    bf16 = use_bf16(amp, device)
    torch.manual_seed(0)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    diffusion = GaussianDiffusion.from_config(cfg.diffusion)
    B = cfg.train.batch_size
    # Random uint8 "digits": throughput does not depend on the pixel values, and the download-free
    # benchmark runs anywhere. 60,000 of them, like MNIST.
    images = torch.randint(0, 256, (60_000, 28, 28), dtype=torch.uint8)
    labels = torch.randint(0, 10, (60_000,))

    if naive:
        from naive_dit import NaiveDiT, naive_batches

        model = NaiveDiT(cfg.model).to(device)
        batches = naive_batches(images, labels, B)
    else:
        model = DiT(cfg.model).to(device)
        batches = (b for epoch in range(1000) for b in InMemoryBatches(images, labels, B, device).epoch(epoch))
    ema = copy.deepcopy(model).requires_grad_(False)
    optimizer = make_optimizer(model, cfg)
    flops = model_flops_per_image(cfg.model)
    # As in train.py: the compiled module shares its parameters with `model`, which the EMA reads.
    step_model = torch.compile(model) if compile_model else model

    def step(i):
        x0, y = next(batches)
        x0, y = x0.to(device, non_blocking=True), y.to(device, non_blocking=True)
        training_step(model, ema, diffusion, optimizer, x0, y, cfg, i, bf16, step_model)

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    for i in range(3):  # warm-up: allocator, kernels, data pipeline
        step(i)
    sync(device)
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds or n < 3:
        step(3 + n)
        n += 1
    sync(device)
    elapsed = time.perf_counter() - t0
    ips = n * B / elapsed
    if device.type == "cuda":
        peak_mb = torch.cuda.max_memory_allocated(device) / 2**20
    else:
        peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kB on Linux
    profile = profile_step(step, 3 + n, device, profile_top) if profile_top else []
    name = preset + ("*" if overrides else "") + (" (naive)" if naive else "") + \
        (" (compile)" if compile_model else "")
    return {"preset": name, "device": str(device),
            "amp": "bf16" if bf16 else "fp32", "batch": B, "images_per_sec": ips,
            "epoch_sec": 60_000 / ips, "peak_mb": peak_mb, "gflop_per_image": flops / 1e9,
            "achieved_gflops": flops * ips / 1e9,
            "params_m": sum(p.numel() for p in model.parameters()) / 1e6, "profile": profile}


def profile_step(step, first: int, device, top: int,
                 steps: int = 10) -> list[tuple[str, float, float]]:
    """Run `steps` training steps under torch.profiler; return the `top` operators by self time
    as (name, milliseconds per step, share of all self time). Self time excludes the operators an
    operator calls, so the shares add up to at most 1 and nothing is counted twice."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    cuda = torch.device(device).type == "cuda"
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    with profile(activities=activities) as prof:
        for i in range(steps):
            step(first + i)
        sync(device)
    events = prof.key_averages()

    def self_us(e):  # GPU time on CUDA (the CPU only launches kernels there), else CPU time
        if cuda:
            return getattr(e, "self_device_time_total", getattr(e, "self_cuda_time_total", 0.0))
        return e.self_cpu_time_total

    total = sum(self_us(e) for e in events) or 1.0
    ranked = sorted(events, key=self_us, reverse=True)[:top]
    return [(e.key, self_us(e) / steps / 1e3, self_us(e) / total) for e in ranked]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--presets", nargs="+", default=["tiny", "cpu", "gpu"])
    p.add_argument("--amp", nargs="+", default=["auto"], choices=["auto", "bf16", "off"])
    p.add_argument("--naive", action="store_true", help="add the naive implementation's row")
    p.add_argument("--compile", action="store_true", help="add rows with the model torch.compile'd")
    p.add_argument("--set", nargs="+", action="extend", default=[], metavar="SECTION.FIELD=VALUE",
                   help="override the presets in every row, e.g. model.patch_size=2")
    p.add_argument("--device", default=None)
    p.add_argument("--seconds", type=float, default=20.0, help="timed seconds per row")
    p.add_argument("--profile", type=int, default=0, metavar="K",
                   help="after the table, each row's K operators with the most self time")
    p.add_argument("--json", metavar="FILE", help="also write the rows to FILE as a JSON list")
    p.add_argument("--row", help=argparse.SUPPRESS)  # internal: run one row, print JSON
    args = p.parse_args()

    if args.row:
        preset, amp, naive, compile_model = args.row.split(",")
        print(json.dumps(run_row(preset, amp, naive == "1", compile_model == "1", args.set,
                                 args.device, args.seconds, args.profile)))
        return

    import torch

    from config import get_preset
    from support.cli import pick_device

    for preset in args.presets:  # a bad --set fails here, once, not in every row's subprocess
        apply_overrides(get_preset(preset), args.set)
    device = pick_device(args.device)
    print(f"device: {device} ({torch.cuda.get_device_name(device) if device.type == 'cuda' else 'CPU'}), "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    peaks = {dt: matmul_peak_gflops(device, getattr(torch, dt)) for dt in ["float32", "bfloat16"]}
    print(f"measured matmul peak: fp32 {peaks['float32']:.0f} GFLOP/s, bf16 {peaks['bfloat16']:.0f} GFLOP/s")
    if args.set:
        print(f"every preset with: {' '.join(args.set)} (marked *)")
    rows = [(preset, amp, "0", "0") for preset in args.presets for amp in args.amp]
    if args.compile:
        rows += [(preset, amp, "0", "1") for preset in args.presets for amp in args.amp]
    if args.naive:
        rows += [(preset, "off", "1", "0") for preset in args.presets]
    header = (f"| {'preset':<16} | {'amp':<4} | {'batch':>5} | {'params':>7} | {'images/s':>8} | "
              f"{'s/epoch':>7} | {'peak MB':>7} | {'GFLOP/img':>9} | {'GFLOP/s':>7} | {'% of peak':>9} |")
    print(header)
    print("|" + "|".join("-" * (len(c)) for c in header.split("|")[1:-1]) + "|")
    profiles, results = [], []
    for preset, amp, naive, compile_model in rows:
        cmd = [sys.executable, __file__, "--row", f"{preset},{amp},{naive},{compile_model}",
               "--seconds", str(args.seconds), "--profile", str(args.profile)]
        cmd += ["--device", str(device)] if args.device else []
        cmd += ["--set", *args.set] if args.set else []
        res = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
        if res.returncode != 0:
            print(f"| {preset:<16} | failed: {res.stderr.strip().splitlines()[-1][:80]} |")
            continue
        r = json.loads(res.stdout.strip().splitlines()[-1])
        results.append(r)
        peak = peaks["bfloat16" if r["amp"] == "bf16" else "float32"]
        print(f"| {r['preset']:<16} | {r['amp']:<4} | {r['batch']:>5} | {r['params_m']:>6.2f}M | "
              f"{r['images_per_sec']:>8.0f} | {r['epoch_sec']:>7.0f} | {r['peak_mb']:>7.0f} | "
              f"{r['gflop_per_image']:>9.3f} | {r['achieved_gflops']:>7.1f} | "
              f"{100 * r['achieved_gflops'] / peak:>8.1f}% |")
        profiles.append((f"{r['preset']}, {r['amp']}", r["profile"]))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    for name, ops in profiles:
        if ops:
            print(f"\n{name}: the {len(ops)} operators with the most self time "
                  f"(ms per step, share of the step)")
            for op, ms, share in ops:
                print(f"  {op:<40} {ms:>8.2f} ms {100 * share:>6.1f}%")


if __name__ == "__main__":
    main()
