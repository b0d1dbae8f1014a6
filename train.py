"""Train the class-conditional DiT on MNIST with the noise-prediction loss (DDPM Algorithm 1).

    python train.py                                   # the default `cpu` preset, CUDA if present
    python train.py --preset tiny --max-steps 20      # a smoke test in seconds
    python train.py --resume                          # continue <out-dir>/model.pth exactly
    torchrun --nproc_per_node=2 train.py              # DistributedDataParallel, one process per GPU
                                                      # (or per CPU share, with gloo)

Writes into --out-dir (default runs/default): model.pth (weights, EMA, optimiser, step, RNG states
and the config; see checkpoint.py), samples/ (EMA sample grids, one row per digit), loss.png and
log.csv. The file reads top to bottom: the command line, the pieces of a step (learning rate, EMA,
`train_step`), logs and pictures, then `main`: set up, loop, checkpoint.

References: DDPM (Ho et al. 2020) Algorithm 1; DiT (Peebles & Xie 2023) section 4 for AdamW,
EMA and label dropout; classifier-free guidance (Ho & Salimans 2022); min-SNR weighting
(Hang et al. 2023).
"""

from __future__ import annotations

import argparse
import copy
import csv
import io
import math
import os
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel
from tqdm.auto import tqdm

from checkpoint import (AMP_CHOICES, atomic_write, checkpoint_config, load_weights,
                        out_of_memory_as_error, read_checkpoint, rng_state, save_checkpoint,
                        set_rng_state, use_bf16)
from config import PRESETS, Config, UserError, get_preset, pick_device
from dataset import InMemoryBatches, load_mnist, resolve_data_dir
from diffusion import GaussianDiffusion
from dit import DiT

CHECKPOINT_NAME = "model.pth"


# ------------------------------------------------------------------------------ command line

TRAIN_FLAGS = {  # flag -> help; the value of each is the preset's unless the flag is given
    "epochs": "passes over the training set",
    "max_steps": "stop after this many steps (0 = all epochs)",
    "time_limit": "stop after this many minutes of training, counted over resumes (0 = no limit)",
    "batch_size": "images per optimiser step (per process)",
    "lr": "AdamW learning rate",
    "warmup_steps": "steps of linear learning-rate warm-up (0 = none)",
    "lr_decay": "after any warm-up, the rate falls along a half cosine to 0 at the run's last step "
                "(a resumed run with a new length decays towards its new end)",
    "min_snr_gamma": "min-SNR loss weighting; 0 = plain MSE",
    "ema_decay": "0 = no averaging: sample from the raw weights",
    "ema_warmup": "EMA decay min(decay, (1 + step) / (10 + step)); --no-ema-warmup uses the "
                  "fixed decay from step 0",
    "seed": "seed of the weights, batches and noise",
    "log_every": "steps between rows of log.csv",
    "sample_every": "steps between sample grids (0 = each epoch)",
    "checkpoint_every": "steps between checkpoints",
}
MODEL_FLAGS = {
    "patch_size": "pixels per patch side (28 / p tokens per side)",
    "hidden_size": "token width D",
    "depth": "number of DiT blocks",
    "num_heads": "attention heads (must divide the width)",
    "mlp_ratio": "MLP width / token width",
    "class_dropout_prob": "share of labels dropped, for classifier-free guidance",
}
# What a resumed run may change: how long it goes on and how often it reports.
RESUMABLE_FLAGS = {"epochs", "max_steps", "time_limit", "log_every", "sample_every",
                   "checkpoint_every"}


def preset_values(section: str, name: str) -> str:
    """'cpu 5, gpu 30, tiny 1': what each preset sets a field to, for --help."""
    return ", ".join(f"{p} {getattr(getattr(get_preset(p), section), name)}" for p in sorted(PRESETS))


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="Train a class-conditional DiT on MNIST.")
    p.add_argument("--preset", choices=sorted(PRESETS), default="cpu",
                   help="starting config (default: %(default)s)")
    p.add_argument("--out-dir", default="runs/default",
                   help="where model.pth, samples/, loss.png and log.csv go (default: %(default)s)")
    p.add_argument("--data-dir", default=None, help="folder holding MNIST/raw/ (default: $DIT_DATA_DIR or ./data)")
    p.add_argument("--resume", action="store_true", help="continue from <out-dir>/model.pth")
    p.add_argument("--overwrite", action="store_true", help="start afresh even if <out-dir>/model.pth exists")
    p.add_argument("--device", default=None, help="cuda, cuda:1 or cpu (default: cuda when present)")
    p.add_argument("--compile", action="store_true", help="torch.compile the model (slow start, faster steps)")
    p.add_argument("--amp", choices=AMP_CHOICES, default="auto",
                   help="bf16 autocast; auto = on for CUDA, off for the CPU (measured slower "
                        "there; see checkpoint.use_bf16) (default: %(default)s)")
    # Overrides of the preset: a flag that is not given does not appear in args at all (SUPPRESS),
    # and --help lists each preset's value instead of a default.
    for title, section, flags in [("training", "train", TRAIN_FLAGS), ("model", "model", MODEL_FLAGS)]:
        g = p.add_argument_group(f"{title} (override the preset; its values in brackets)")
        for name, text in flags.items():
            kind = type(getattr(get_preset("cpu"), section).__dict__[name])
            how = {"action": argparse.BooleanOptionalAction} if kind is bool else {"type": kind}
            g.add_argument(f"--{name.replace('_', '-')}", **how, default=argparse.SUPPRESS,
                           help=f"{text} [{preset_values(section, name)}]")
    return p


def config_from_args(args: argparse.Namespace, base: Config | None = None) -> Config:
    """The preset (or a resumed run's config) with the command-line overrides applied."""
    cfg = base if base is not None else get_preset(args.preset)
    for name in [*TRAIN_FLAGS, *MODEL_FLAGS]:
        if not hasattr(args, name):
            continue
        value = getattr(args, name)
        section = cfg.model if name in MODEL_FLAGS else cfg.train
        if base is not None and name not in RESUMABLE_FLAGS and value != getattr(section, name):
            raise UserError(f"--{name.replace('_', '-')} {value} differs from the run being "
                            f"resumed ({getattr(section, name)}): drop the flag, or start a new "
                            "run with another --out-dir")
        setattr(section, name, value)
    cfg.model.__post_init__()  # re-check the model's sizes after the overrides
    t = cfg.train
    for name in ["epochs", "batch_size", "log_every", "checkpoint_every"]:
        if getattr(t, name) <= 0:
            raise UserError(f"--{name.replace('_', '-')} must be positive, got {getattr(t, name)}")
    for name in ["max_steps", "sample_every", "warmup_steps", "time_limit"]:
        if getattr(t, name) < 0:
            raise UserError(f"--{name.replace('_', '-')} must be 0 or more, got {getattr(t, name)}")
    if not t.lr > 0:
        raise UserError(f"--lr must be positive, got {t.lr}")
    if not 0 <= t.ema_decay < 1:
        raise UserError(f"--ema-decay must be in [0, 1), got {t.ema_decay}")
    if not 0 <= cfg.model.class_dropout_prob < 1:
        raise UserError("--class-dropout-prob must be in [0, 1)")
    return cfg


# ------------------------------------------------------------------------------ processes

@dataclass
class Runtime:
    """Where this process trains and who it is in a distributed run."""
    device: torch.device
    rank: int = 0
    world_size: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def setup_runtime(device_flag: str | None) -> Runtime:
    """One process (plain `python train.py`), or one of several started by torchrun."""
    device = pick_device(device_flag)
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size == 1:
        return Runtime(device)
    # Started by torchrun: it sets RANK, LOCAL_RANK, WORLD_SIZE, MASTER_ADDR and MASTER_PORT.
    rank, local_rank = int(os.environ["RANK"]), int(os.environ["LOCAL_RANK"])
    if device.type == "cuda":
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return Runtime(device, rank, world_size)


def agree(rt: Runtime, stop: bool, nonfinite: bool) -> tuple[bool, bool]:
    """With several processes every rank must stop after the same step, or the next gradient
    all-reduce would wait forever: the ranks share their reasons to stop (a signal, the time
    limit, a NaN loss) and all act on any of them."""
    if rt.world_size == 1:
        return stop, nonfinite
    flags = torch.tensor([float(stop), float(nonfinite)], device=rt.device)
    dist.all_reduce(flags, op=dist.ReduceOp.MAX)
    return bool(flags[0]), bool(flags[1])


def gather_rng(rt: Runtime) -> list:
    """Every rank's RNG state, so that a resumed distributed run continues each rank's stream."""
    state = rng_state(rt.device)
    if rt.world_size == 1:
        return [state]
    states = [None] * rt.world_size
    dist.all_gather_object(states, state)
    return states


def check_ranks_in_sync(model: torch.nn.Module, rt: Runtime) -> None:
    """DDP keeps every rank's weights identical; check it exactly at the end of training."""
    flat = torch.cat([p.detach().reshape(-1) for p in model.parameters()])
    gathered = [torch.empty_like(flat) for _ in range(rt.world_size)]
    dist.all_gather(gathered, flat)
    if rt.is_main:
        same = all(torch.equal(g, gathered[0]) for g in gathered)
        print(f"weights identical on all {rt.world_size} ranks: {same}")
        if not same:
            raise RuntimeError("DDP ranks diverged: their weights differ")


class StopRequests:
    """Ctrl-C (SIGINT) and SIGTERM, while installed, only note the signal: the loop finishes its
    step, saves and exits. A signal during the final save and samples changes nothing."""

    def __init__(self):
        self.signals: list[int] = []

    def __enter__(self) -> "StopRequests":
        self.old = {s: signal.signal(s, self.note) for s in (signal.SIGINT, signal.SIGTERM)}
        return self

    def __exit__(self, *exc) -> None:
        for s, handler in self.old.items():
            signal.signal(s, handler)

    def note(self, signum, frame) -> None:
        self.signals.append(signum)


# ------------------------------------------------------------------------------ the step

def lr_at(step: int, cfg: Config, total_steps: int) -> float:
    """The learning rate of optimiser step `step` (0-based) in a run of total_steps: an optional
    linear warm-up over warmup_steps, then cfg.train.lr, constant as in DiT, or with lr_decay
    falling along a half cosine to 0 at the run's last step."""
    t = cfg.train
    lr = t.lr * min(1.0, (step + 1) / t.warmup_steps) if t.warmup_steps > 0 else t.lr
    if t.lr_decay and total_steps > t.warmup_steps:
        done = min(1.0, max(0, step - t.warmup_steps) / (total_steps - t.warmup_steps))
        lr *= 0.5 * (1 + math.cos(math.pi * done))
    return lr


def ema_decay_at(step: int, cfg: Config) -> float:
    """EMA decay for this step. With warm-up, min(decay, (1 + step) / (10 + step)): about 0.1 at
    the start and 0.99 after 1,000 steps, so the average forgets the random initial weights
    quickly; a fixed 0.9999 would need ~10,000 steps to move away from them."""
    decay = cfg.train.ema_decay
    if cfg.train.ema_warmup:
        decay = min(decay, (1 + step) / (10 + step))
    return decay


def make_optimizer(model: torch.nn.Module, cfg: Config) -> torch.optim.AdamW:
    """AdamW as in DiT. fused=True updates every tensor in one kernel: on the 2-core Xeon an
    update of a 4.2M-parameter model took 2.0 ms instead of 6.9 (benchmarks/README.md), a cost
    that matters more the smaller the batch."""
    return torch.optim.AdamW(model.parameters(), lr=cfg.train.lr,
                             weight_decay=cfg.train.weight_decay, fused=True)


@torch.no_grad()
def update_ema(ema: torch.nn.Module, model: torch.nn.Module, decay: float) -> None:
    """ema = decay * ema + (1 - decay) * model, parameter by parameter."""
    for e, p in zip(ema.parameters(), model.parameters()):
        e.lerp_(p.detach(), 1.0 - decay)  # e + (1 - decay) (p - e)


def train_step(model, diffusion: GaussianDiffusion, optimizer, x0, y, cfg: Config, lr: float,
               bf16: bool) -> float:
    """One optimiser step of DDPM Algorithm 1 on a batch at learning rate lr; returns the loss."""
    for group in optimizer.param_groups:
        group["lr"] = lr
    with torch.autocast(x0.device.type, dtype=torch.bfloat16, enabled=bf16):
        # t ~ U{0..T-1}, eps ~ N(0, I), x_t = sqrt(a_t) x0 + sqrt(1 - a_t) eps, loss = |eps - eps_theta|^2
        loss = diffusion.training_loss(model, x0, y, cfg.train.min_snr_gamma)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if cfg.train.grad_clip > 0:
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.train.grad_clip)
    optimizer.step()
    return loss.item()


# ------------------------------------------------------------------------------ one run's state

@dataclass
class Run:
    """Everything a training run holds. A checkpoint is `checkpoint_state(run)`, and a resumed
    run rebuilds this from one."""
    cfg: Config
    rt: Runtime
    out_dir: Path
    model: DiT
    ema: DiT  # exponential moving average of the weights: the samples come from it
    optimizer: torch.optim.Optimizer
    diffusion: GaussianDiffusion
    bf16: bool
    steps_per_epoch: int
    step: int = 0  # optimiser steps taken, over resumes
    seconds_before: float = 0.0  # training time of the runs this one resumes
    started: float = field(default_factory=time.time)  # when this process began training
    log_rows: list[dict] = field(default_factory=list)

    @property
    def checkpoint_path(self) -> Path:
        return self.out_dir / CHECKPOINT_NAME

    def train_seconds(self) -> float:
        return self.seconds_before + time.time() - self.started

    def time_is_up(self) -> bool:
        limit = self.cfg.train.time_limit
        return limit > 0 and self.train_seconds() >= 60 * limit


def checkpoint_state(run: Run) -> dict:
    """Tensors and plain types only, so that torch.load(weights_only=True) reads it back."""
    return {
        "model": run.model.state_dict(),
        "ema": run.ema.state_dict(),
        "optimizer": run.optimizer.state_dict(),
        "step": run.step,
        "train_seconds": run.train_seconds(),
        "epoch": run.step // run.steps_per_epoch,
        "rng": gather_rng(run.rt),  # on every rank: all_gather_object needs them all
        "world_size": run.rt.world_size,
        "bf16": run.bf16,
        "config": run.cfg.to_dict(),
    }


def save(run: Run) -> None:
    """The checkpoint, log.csv and loss.png, each written atomically (by the first process)."""
    state = checkpoint_state(run)
    if run.rt.is_main:
        save_checkpoint(run.checkpoint_path, state)
        write_log(run.log_rows, run.out_dir / "log.csv")
        if run.log_rows:
            save_loss_plot(run.log_rows, run.out_dir / "loss.png")


# ------------------------------------------------------------------------------ logs and pictures

LOG_FIELDS = ["step", "epoch", "loss", "lr", "images_per_sec", "elapsed_sec"]


def read_log(path: Path, up_to_step: int) -> list[dict]:
    """Rows of an earlier log, up to the checkpoint we resume from (later rows were not saved)."""
    if not path.exists():
        return []
    with open(path, newline="") as f:
        rows = [{k: int(v) if k in ("step", "epoch") else float(v) for k, v in r.items()}
                for r in csv.DictReader(f)]
    return [r for r in rows if r["step"] <= up_to_step]


def write_log(rows: list[dict], path: Path) -> None:
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=LOG_FIELDS)
    writer.writeheader()
    writer.writerows(rows)
    atomic_write(path, lambda f: f.write(text.getvalue()), text=True)


def save_loss_plot(rows: list[dict], path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot([r["step"] for r in rows], [r["loss"] for r in rows], lw=1)
    ax.set_xlabel("step")
    ax.set_ylabel("training loss (noise MSE)")
    ax.set_yscale("log")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def save_samples(run: Run, name: str) -> Path:
    """Ten EMA samples of each digit (row k = digit k) with the config's sampler, from the same
    noise every time: the grids of successive steps show the model learning."""
    from torchvision.utils import save_image

    cfg, device = run.cfg, run.rt.device
    labels = torch.arange(cfg.model.num_classes, device=device).repeat_interleave(10)  # 0,0,..,9
    shape = (len(labels), cfg.model.in_channels, cfg.model.image_size, cfg.model.image_size)
    s = cfg.sample
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=run.bf16):
        x = run.diffusion.sample(run.ema, shape, labels, s.sampler, s.steps, s.eta, s.cfg_scale,
                                 generator=torch.Generator(device).manual_seed(cfg.train.seed))
    path = run.out_dir / "samples" / name
    save_image((x.float().cpu() + 1) / 2, path, nrow=10, padding=2, pad_value=1.0)
    return path


# ------------------------------------------------------------------------------ set-up

def start_or_resume(args: argparse.Namespace, rt: Runtime) -> tuple[Config, dict | None, bool]:
    """The run's config, the checkpoint it resumes (None for a new run) and its bf16 setting,
    refusing what would lose work or break an exact resume."""
    ckpt_path = Path(args.out_dir) / CHECKPOINT_NAME
    if not args.resume:
        if ckpt_path.exists() and not args.overwrite:
            raise UserError(f"{ckpt_path} already exists: pass --resume to continue that run, "
                            "--overwrite to replace it, or another --out-dir")
        return config_from_args(args), None, use_bf16(args.amp, rt.device)
    if not ckpt_path.exists():
        raise UserError(f"nothing to resume: no checkpoint at {ckpt_path}; drop --resume to "
                        "start a new run, or pass the --out-dir of the run to continue")
    checkpoint = read_checkpoint(ckpt_path, with_training_state=True)
    cfg = config_from_args(args, base=checkpoint_config(checkpoint, ckpt_path))
    bf16 = use_bf16(args.amp, rt.device)
    # Exact resume needs the same processes and precision: the data shards, each rank's RNG
    # stream and the arithmetic all depend on them.
    was = (checkpoint.get("world_size", 1), checkpoint.get("bf16", bf16))
    if was != (rt.world_size, bf16):
        raise UserError(f"{ckpt_path} was trained with {was[0]} process(es) and bf16 "
                        f"{'on' if was[1] else 'off'}; resume it the same way (torchrun "
                        f"--nproc_per_node, --amp), or start a new run")
    return cfg, checkpoint, bf16


def restore(run: Run, checkpoint: dict) -> None:
    """Load weights, EMA, optimiser, step, time and this rank's RNG stream from a checkpoint."""
    path = run.checkpoint_path
    load_weights(run.model, checkpoint["model"], path)
    load_weights(run.ema, checkpoint["ema"], path)
    load_weights(run.optimizer, checkpoint["optimizer"], path)
    run.step = checkpoint["step"]
    run.seconds_before = checkpoint.get("train_seconds", 0.0)
    set_rng_state(checkpoint["rng"][run.rt.rank], run.rt.device)
    run.log_rows = read_log(run.out_dir / "log.csv", run.step)


# ------------------------------------------------------------------------------ the loop

def train_loop(run: Run, batches: InMemoryBatches, train_model, total_steps: int,
               stops: StopRequests) -> None:
    """Step until total_steps, the time limit or a stop request (a signal here or in another
    process); with several processes all ranks stop after the same step."""
    cfg, rt = run.cfg, run.rt
    sample_every = cfg.train.sample_every or run.steps_per_epoch
    t_last, seen_since_log = time.time(), 0
    bar = tqdm(total=total_steps, initial=run.step, disable=not rt.is_main, dynamic_ncols=True,
               unit="step")
    stop = False
    with bar:
        while run.step < total_steps and not stop:
            epoch, skip = divmod(run.step, run.steps_per_epoch)
            for x0, y in batches.epoch(epoch, skip=skip):
                loss = train_step(train_model, run.diffusion, run.optimizer, x0, y, cfg,
                                  lr_at(run.step, cfg, total_steps), run.bf16)
                stop, nonfinite = agree(rt, bool(stops.signals) or run.time_is_up(),
                                        not math.isfinite(loss))
                if nonfinite:
                    last = (f"the last good checkpoint is {run.checkpoint_path}"
                            if run.checkpoint_path.exists() else "no checkpoint was written")
                    raise UserError(f"training stopped: loss is {loss} at step {run.step + 1}; "
                                    f"{last}. Try a lower --lr or --amp off")
                update_ema(run.ema, run.model, ema_decay_at(run.step, cfg))
                run.step += 1
                seen_since_log += x0.shape[0] * rt.world_size
                bar.update(1)
                if run.step % cfg.train.log_every == 0 or run.step == total_steps:
                    now = time.time()
                    ips = seen_since_log / max(now - t_last, 1e-9)
                    run.log_rows.append({"step": run.step, "epoch": epoch, "loss": loss,
                                         "lr": lr_at(run.step - 1, cfg, total_steps),
                                         "images_per_sec": ips, "elapsed_sec": run.train_seconds()})
                    bar.set_postfix(loss=f"{loss:.4f}", img_s=f"{ips:.0f}")
                    t_last, seen_since_log = now, 0
                if run.step % cfg.train.checkpoint_every == 0:
                    save(run)
                if run.step % sample_every == 0 and run.step != total_steps and rt.is_main and not stop:
                    bar.write(f"samples at step {run.step}: "
                              f"{save_samples(run, f'step_{run.step:07d}.png')}")
                if run.step >= total_steps or stop:
                    break


# ------------------------------------------------------------------------------ main

def train(args: argparse.Namespace, rt: Runtime) -> int:
    cfg, checkpoint, bf16 = start_or_resume(args, rt)
    if rt.device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True  # TF32 matmuls: ~8x fp32 rate on Ampere+
        torch.backends.cudnn.allow_tf32 = True

    images, labels = load_mnist(resolve_data_dir(args.data_dir), train=True)
    batches = InMemoryBatches(images, labels, cfg.train.batch_size, rt.device, cfg.train.seed,
                              rt.rank, rt.world_size)
    torch.manual_seed(cfg.train.seed)  # the same initial weights on every rank
    model = DiT(cfg.model).to(rt.device)
    ema = copy.deepcopy(model).requires_grad_(False).eval()
    torch.manual_seed(cfg.train.seed + rt.rank)  # but each rank draws its own noise and timesteps
    optimizer = make_optimizer(model, cfg)
    run = Run(cfg, rt, Path(args.out_dir), model, ema, optimizer,
              GaussianDiffusion.from_config(cfg.diffusion), bf16, steps_per_epoch=len(batches))
    if checkpoint is not None:
        restore(run, checkpoint)
    # --max-steps, when set, replaces --epochs as the length of the run.
    total_steps = cfg.train.max_steps or cfg.train.epochs * run.steps_per_epoch

    train_model = model  # what the step calls; DDP and torch.compile wrap the same parameters
    if rt.world_size > 1:
        train_model = DistributedDataParallel(
            model, device_ids=[rt.device.index] if rt.device.type == "cuda" else None)
    if args.compile:
        train_model = torch.compile(train_model)

    if rt.is_main:
        (run.out_dir / "samples").mkdir(parents=True, exist_ok=True)
        where = f"{rt.device}" + (f" x {rt.world_size} processes" if rt.world_size > 1 else "")
        print(f"device: {where} | bf16 autocast: {'on' if bf16 else 'off'} | "
              f"threads: {torch.get_num_threads()} | seed: {cfg.train.seed}")
        print(f"preset {cfg.preset}: DiT with {sum(p.numel() for p in model.parameters()):,} "
              f"parameters, patch {cfg.model.patch_size}, width {cfg.model.hidden_size}, depth "
              f"{cfg.model.depth}; {len(images):,} images, {run.steps_per_epoch} steps per epoch, "
              f"{'resuming at step ' + str(run.step) + ' of ' if run.step else ''}{total_steps} steps")

    start_step, run.started = run.step, time.time()
    with StopRequests() as stops:
        with out_of_memory_as_error(f"batch size {cfg.train.batch_size} does not fit in memory "
                                    f"on {rt.device}: pass a smaller --batch-size"):
            train_loop(run, batches, train_model, total_steps, stops)
        save(run)
        if rt.world_size > 1:
            check_ranks_in_sync(model, rt)
        if not rt.is_main:
            return 0
        elapsed, done = time.time() - run.started, run.step - start_step
        print(f"trained {done} steps in {elapsed:.0f} s "
              f"({done * cfg.train.batch_size * rt.world_size / max(elapsed, 1e-9):.0f} images/s); "
              f"checkpoint: {run.checkpoint_path}")
        if run.step < total_steps and not run.time_is_up():  # a signal, here or in another process
            print(f"stopped early at step {run.step} of {total_steps}: continue with "
                  f"python train.py --resume --out-dir {run.out_dir}")
            return 128 + (stops.signals[0] if stops.signals else signal.SIGINT)  # 130 for Ctrl-C
        if run.step < total_steps:
            print(f"time limit of {cfg.train.time_limit:g} min reached at step {run.step}")
        print(f"samples: {save_samples(run, 'final.png')}")
        print(f"loss curve: {run.out_dir / 'loss.png'}; log: {run.out_dir / 'log.csv'}")
        return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return train(args, setup_runtime(args.device))
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:  # Ctrl-C before the training loop began: nothing to save yet
        print("interrupted before training started; nothing was saved", file=sys.stderr)
        return 130
    finally:
        if dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()


if __name__ == "__main__":
    sys.exit(main())
