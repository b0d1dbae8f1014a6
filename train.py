"""Train the class-conditional DiT on MNIST with the noise-prediction loss (DDPM Algorithm 1).

    python train.py                                   # the default `cpu` preset, CUDA if present
    python train.py --preset tiny --max-steps 20      # a smoke test in seconds
    python train.py --resume                          # continue <out-dir>/model.pth exactly
    torchrun --nproc_per_node=2 train.py              # DistributedDataParallel, one process per GPU
                                                      # (or per CPU share, with gloo)

Writes into --out-dir (default runs/default): model.pth (weights, EMA, optimiser, step, RNG states
and the config, loadable with torch.load(weights_only=True)), samples/ (EMA sample grids, one row
per digit), loss.png and log.csv. The training step itself is in `train_step`; everything else
is bookkeeping around it.

References: DDPM (Ho et al. 2020) Algorithm 1; DiT (Peebles & Xie 2023) section 4 for AdamW,
EMA and label dropout; classifier-free guidance (Ho & Salimans 2022); min-SNR weighting
(Hang et al. 2023).
"""

from __future__ import annotations

import argparse
import copy
import csv
import math
import os
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel
from tqdm.auto import tqdm

from config import PRESETS, Config, UserError, get_preset, is_out_of_memory, pick_device
from dataset import InMemoryBatches, load_mnist, resolve_data_dir
from diffusion import GaussianDiffusion
from dit import DiT
from inference import (checkpoint_config, load_weights, read_checkpoint, sample_class_grid,
                       save_grid, use_bf16_sampling)

CHECKPOINT_NAME = "model.pth"


# ------------------------------------------------------------------------------ command line

def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="Train a class-conditional DiT on MNIST.",
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--preset", choices=sorted(PRESETS), default="cpu", help="starting config")
    p.add_argument("--out-dir", default="runs/default",
                   help="where model.pth, samples/, loss.png and log.csv go")
    p.add_argument("--data-dir", default=None, help="folder holding MNIST/raw/ (default: $DIT_DATA_DIR or ./data)")
    p.add_argument("--resume", action="store_true", help="continue from <out-dir>/model.pth")
    p.add_argument("--overwrite", action="store_true", help="start afresh even if <out-dir>/model.pth exists")
    p.add_argument("--device", default=None, help="cuda, cuda:1 or cpu (default: cuda when present)")
    p.add_argument("--compile", action="store_true", help="torch.compile the model (slow start, faster steps)")
    p.add_argument("--amp", choices=["auto", "bf16", "off"], default="auto",
                   help="bf16 autocast; auto = on for CUDA, off for the CPU (measured slower there, see README)")
    # Overrides of the preset. None means "keep the preset's value".
    g = p.add_argument_group("training (override the preset)")
    g.add_argument("--epochs", type=int)
    g.add_argument("--max-steps", type=int, help="stop after this many steps (0 = all epochs)")
    g.add_argument("--time-limit", type=float, help="stop after this many minutes of training, "
                   "counted over resumes (0 = no limit)")
    g.add_argument("--batch-size", type=int)
    g.add_argument("--lr", type=float)
    g.add_argument("--warmup-steps", type=int)
    g.add_argument("--min-snr-gamma", type=float, help="min-SNR loss weighting; 0 = plain MSE")
    g.add_argument("--ema-decay", type=float, help="0 = no averaging: sample from the raw weights")
    g.add_argument("--ema-warmup", action=argparse.BooleanOptionalAction,
                   help="EMA decay min(decay, (1 + step) / (10 + step)); --no-ema-warmup uses the "
                   "fixed decay from step 0")
    g.add_argument("--seed", type=int)
    g.add_argument("--log-every", type=int)
    g.add_argument("--sample-every", type=int, help="steps between sample grids (0 = each epoch)")
    g.add_argument("--checkpoint-every", type=int)
    m = p.add_argument_group("model (override the preset)")
    m.add_argument("--patch-size", type=int)
    m.add_argument("--hidden-size", type=int)
    m.add_argument("--depth", type=int)
    m.add_argument("--num-heads", type=int)
    m.add_argument("--mlp-ratio", type=float)
    m.add_argument("--class-dropout-prob", type=float)
    return p


TRAIN_FLAGS = ["epochs", "max_steps", "time_limit", "batch_size", "lr", "warmup_steps", "min_snr_gamma",
               "ema_decay", "ema_warmup", "seed", "log_every", "sample_every", "checkpoint_every"]
MODEL_FLAGS = ["patch_size", "hidden_size", "depth", "num_heads", "mlp_ratio", "class_dropout_prob"]
# What a resumed run may change: how long it goes on and how often it reports.
RESUMABLE_FLAGS = {"epochs", "max_steps", "time_limit", "log_every", "sample_every",
                   "checkpoint_every"}


def config_from_args(args: argparse.Namespace, base: Config | None = None) -> Config:
    """The preset (or a resumed run's config) with the command-line overrides applied."""
    cfg = base if base is not None else get_preset(args.preset)
    for name in TRAIN_FLAGS + MODEL_FLAGS:
        value = getattr(args, name)
        if value is None:
            continue
        section = cfg.train if name in TRAIN_FLAGS else cfg.model
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


# ------------------------------------------------------------------------------ devices

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


def use_bf16(amp_flag: str, device: torch.device) -> bool:
    # On this project's 2-core test CPU, bf16 autocast made training 8% slower for the default
    # model and 30% for the tiny one (benchmarks/train_throughput.py), so "auto" keeps fp32 there.
    if amp_flag == "auto":
        return device.type == "cuda"
    return amp_flag == "bf16"


# ------------------------------------------------------------------------------ EMA and LR

def ema_decay_at(step: int, cfg: Config) -> float:
    """EMA decay for this step. With warm-up, min(decay, (1 + step) / (10 + step)): about 0.1 at
    the start and 0.99 after 1,000 steps, so the average forgets the random initial weights
    quickly; a fixed 0.9999 would need ~10,000 steps to move away from them."""
    decay = cfg.train.ema_decay
    if cfg.train.ema_warmup:
        decay = min(decay, (1 + step) / (10 + step))
    return decay


@torch.no_grad()
def update_ema(ema: torch.nn.Module, model: torch.nn.Module, decay: float) -> None:
    """ema = decay * ema + (1 - decay) * model, parameter by parameter."""
    for e, p in zip(ema.parameters(), model.parameters()):
        e.lerp_(p.detach(), 1.0 - decay)  # e + (1 - decay) (p - e)


def lr_at(step: int, cfg: Config) -> float:
    """cfg.train.lr, constant as in DiT, after an optional linear warm-up over warmup_steps."""
    warmup = cfg.train.warmup_steps
    return cfg.train.lr * min(1.0, (step + 1) / warmup) if warmup > 0 else cfg.train.lr


# ------------------------------------------------------------------------------ checkpoints

def save_checkpoint(path: Path, state: dict) -> None:
    """Write atomically: to a temporary file in the same folder, flushed to the disk, then renamed
    over the old one (os.replace is atomic). A crash, SIGKILL or power cut mid-write leaves the
    previous checkpoint intact."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        torch.save(state, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def rng_state(device: torch.device) -> dict:
    state = {"torch": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def set_rng_state(state: dict, device: torch.device) -> None:
    torch.set_rng_state(state["torch"])
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)


# ------------------------------------------------------------------------------ the step

def train_step(model, diffusion: GaussianDiffusion, optimizer, x0, y, cfg: Config, step: int,
               bf16: bool) -> float:
    """One optimiser step of DDPM Algorithm 1 on a batch; returns the loss."""
    for group in optimizer.param_groups:
        group["lr"] = lr_at(step, cfg)
    with torch.autocast(x0.device.type, dtype=torch.bfloat16, enabled=bf16):
        # t ~ U{0..T-1}, eps ~ N(0, I), x_t = sqrt(a_t) x0 + sqrt(1 - a_t) eps, loss = |eps - eps_theta|^2
        loss = diffusion.training_loss(model, x0, y, cfg.train.min_snr_gamma)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if cfg.train.grad_clip > 0:
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.train.grad_clip)
    optimizer.step()
    return loss.item()


class NonFiniteLoss(Exception):
    pass


# ------------------------------------------------------------------------------ pictures and logs

def save_loss_plot(rows: list[dict], path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = [r["step"] for r in rows]
    losses = [r["loss"] for r in rows]
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot(steps, losses, lw=1)
    ax.set_xlabel("step")
    ax.set_ylabel("training loss (noise MSE)")
    ax.set_yscale("log")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


LOG_FIELDS = ["step", "epoch", "loss", "lr", "images_per_sec", "elapsed_sec"]


def read_log(path: Path, up_to_step: int) -> list[dict]:
    """Rows of an earlier log, up to the checkpoint we resume from (later rows were not saved)."""
    if not path.exists():
        return []
    with open(path, newline="") as f:
        rows = [{k: float(v) if k != "step" and k != "epoch" else int(v) for k, v in r.items()}
                for r in csv.DictReader(f)]
    return [r for r in rows if r["step"] <= up_to_step]


def write_log(rows: list[dict], path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=LOG_FIELDS)
        w.writeheader()
        w.writerows(rows)
    os.replace(tmp, path)


# ------------------------------------------------------------------------------ main

def train(args: argparse.Namespace) -> int:
    rt = setup_runtime(args.device)
    out_dir = Path(args.out_dir)
    ckpt_path = out_dir / CHECKPOINT_NAME

    checkpoint = None
    if args.resume:
        if not ckpt_path.exists():
            raise UserError(f"nothing to resume: no checkpoint at {ckpt_path}; drop --resume to "
                            "start a new run, or pass the --out-dir of the run to continue")
        checkpoint = read_checkpoint(ckpt_path, with_training_state=True)
        cfg = config_from_args(args, base=checkpoint_config(checkpoint, ckpt_path))
    else:
        if ckpt_path.exists() and not args.overwrite:
            raise UserError(f"{ckpt_path} already exists: pass --resume to continue that run, "
                            "--overwrite to replace it, or another --out-dir")
        cfg = config_from_args(args)

    bf16 = use_bf16(args.amp, rt.device)
    if checkpoint is not None:
        # Exact resume needs the same processes and precision: the data shards, each rank's RNG
        # stream and the arithmetic all depend on them.
        was = (checkpoint.get("world_size", 1), checkpoint.get("bf16", bf16))
        if was != (rt.world_size, bf16):
            raise UserError(f"{ckpt_path} was trained with {was[0]} process(es) and bf16 "
                            f"{'on' if was[1] else 'off'}; resume it the same way (torchrun "
                            f"--nproc_per_node, --amp), or start a new run")
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
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.train.lr,
                                  weight_decay=cfg.train.weight_decay)
    diffusion = GaussianDiffusion.from_config(cfg.diffusion)
    step, seconds_before = 0, 0.0  # seconds_before: training time of the runs this one resumes
    log_path = out_dir / "log.csv"
    if checkpoint is not None:
        load_weights(model, checkpoint["model"], ckpt_path)
        load_weights(ema, checkpoint["ema"], ckpt_path)
        load_weights(optimizer, checkpoint["optimizer"], ckpt_path)
        step = checkpoint["step"]
        seconds_before = checkpoint.get("train_seconds", 0.0)
        set_rng_state(checkpoint["rng"][rt.rank], rt.device)
    log_rows = read_log(log_path, step) if checkpoint is not None else []

    steps_per_epoch = len(batches)
    # --max-steps, when set, replaces --epochs as the length of the run.
    total_steps = cfg.train.max_steps or cfg.train.epochs * steps_per_epoch
    sample_every = cfg.train.sample_every or steps_per_epoch

    train_model = model
    if rt.world_size > 1:
        train_model = DistributedDataParallel(model, device_ids=[rt.device.index] if rt.device.type == "cuda" else None)
    if args.compile:
        train_model = torch.compile(train_model)

    if rt.is_main:
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / "samples").mkdir(exist_ok=True)
        n_params = sum(p.numel() for p in model.parameters())
        where = f"{rt.device}" + (f" x {rt.world_size} processes" if rt.world_size > 1 else "")
        print(f"device: {where} | bf16 autocast: {'on' if bf16 else 'off'} | "
              f"threads: {torch.get_num_threads()} | seed: {cfg.train.seed}")
        print(f"preset {cfg.preset}: DiT with {n_params:,} parameters, patch {cfg.model.patch_size}, "
              f"width {cfg.model.hidden_size}, depth {cfg.model.depth}; "
              f"{len(images):,} images, {steps_per_epoch} steps per epoch, "
              f"{'resuming at step ' + str(step) + ' of ' if step else ''}{total_steps} steps")

    def gather_rng() -> list:
        """Every rank's RNG state, so that a resumed distributed run continues each rank's stream."""
        state = rng_state(rt.device)
        if rt.world_size == 1:
            return [state]
        states = [None] * rt.world_size
        dist.all_gather_object(states, state)
        return states

    def checkpoint_state() -> dict:
        return {
            "model": model.state_dict(),
            "ema": ema.state_dict(),
            "optimizer": optimizer.state_dict(),
            "step": step,
            "train_seconds": seconds_before + time.time() - t_start,
            "epoch": step // steps_per_epoch,
            "rng": gather_rng(),
            "world_size": rt.world_size,
            "bf16": bf16,
            "config": cfg.to_dict(),
        }

    def save(state: dict) -> None:
        if rt.is_main:
            save_checkpoint(ckpt_path, state)
            write_log(log_rows, log_path)
            if log_rows:
                save_loss_plot(log_rows, out_dir / "loss.png")

    def save_samples(name: str) -> Path:
        path = out_dir / "samples" / name
        g = torch.Generator(rt.device).manual_seed(cfg.train.seed)
        grid = sample_class_grid(ema, diffusion, cfg, per_class=10, device=rt.device, generator=g,
                                 bf16=use_bf16_sampling(rt.device))
        save_grid(grid, path, nrow=10)
        return path

    stop_requested: list[int] = []  # signals received, filled by the handler installed below
    t_start = time.time()  # when this process began training (reset as the loop starts)

    def time_is_up() -> bool:
        limit = cfg.train.time_limit
        return limit > 0 and seconds_before + time.time() - t_start >= 60 * limit

    def agree(stop: bool, nonfinite: bool) -> tuple[bool, bool]:
        """With several processes every rank must stop after the same step, or the next gradient
        all-reduce would wait forever: the ranks share their reasons to stop (a signal, the time
        limit, a NaN loss) and all act on any of them."""
        if rt.world_size == 1:
            return stop, nonfinite
        flags = torch.tensor([float(stop), float(nonfinite)], device=rt.device)
        dist.all_reduce(flags, op=dist.ReduceOp.MAX)
        return bool(flags[0]), bool(flags[1])

    def train_loop() -> int:
        nonlocal step, t_start
        start_step, t_start = step, time.time()
        t_last, seen_since_log = time.time(), 0
        bar = tqdm(total=total_steps, initial=step, disable=not rt.is_main, dynamic_ncols=True,
                   unit="step")
        stop = False
        try:
            while step < total_steps and not stop:
                epoch, skip = divmod(step, steps_per_epoch)
                for x0, y in batches.epoch(epoch, skip=skip):
                    loss = train_step(train_model, diffusion, optimizer, x0, y, cfg, step, bf16)
                    stop, nonfinite = agree(bool(stop_requested) or time_is_up(), not math.isfinite(loss))
                    if nonfinite:
                        raise NonFiniteLoss(f"loss is {loss} at step {step + 1}")
                    update_ema(ema, model, ema_decay_at(step, cfg))
                    step += 1
                    seen_since_log += x0.shape[0] * rt.world_size
                    bar.update(1)
                    if step % cfg.train.log_every == 0 or step == total_steps:
                        now = time.time()
                        ips = seen_since_log / max(now - t_last, 1e-9)
                        log_rows.append({"step": step, "epoch": epoch, "loss": loss,
                                         "lr": lr_at(step - 1, cfg), "images_per_sec": ips,
                                         "elapsed_sec": seconds_before + now - t_start})
                        bar.set_postfix(loss=f"{loss:.4f}", img_s=f"{ips:.0f}")
                        t_last, seen_since_log = now, 0
                    if step % cfg.train.checkpoint_every == 0:
                        save(checkpoint_state())
                    if step % sample_every == 0 and step != total_steps and rt.is_main and not stop:
                        bar.write(f"samples at step {step}: {save_samples(f'step_{step:07d}.png')}")
                    if step >= total_steps or stop:
                        break
        except NonFiniteLoss as e:
            last = (f"the last good checkpoint is {ckpt_path}" if ckpt_path.exists()
                    else "no checkpoint was written")
            raise UserError(f"training stopped: {e}; {last}. Try a lower --lr or --amp off") from None
        except (torch.OutOfMemoryError, RuntimeError) as e:
            if not is_out_of_memory(e):
                raise
            raise UserError(f"batch size {cfg.train.batch_size} does not fit in memory on "
                            f"{rt.device}: pass a smaller --batch-size") from None
        finally:
            bar.close()

        save(checkpoint_state())
        if rt.world_size > 1:
            check_ranks_in_sync(model, rt)
        if not rt.is_main:
            return 0
        elapsed = time.time() - t_start
        done = step - start_step
        print(f"trained {done} steps in {elapsed:.0f} s "
              f"({done * cfg.train.batch_size * rt.world_size / max(elapsed, 1e-9):.0f} images/s); "
              f"checkpoint: {ckpt_path}")
        if step < total_steps and not time_is_up():  # a signal, here or in another process
            print(f"stopped early at step {step} of {total_steps}: continue with "
                  f"python train.py --resume --out-dir {out_dir}")
            return 128 + (stop_requested[0] if stop_requested else signal.SIGINT)  # 130 for Ctrl-C
        if step < total_steps:
            print(f"time limit of {cfg.train.time_limit:g} min reached at step {step}")
        print(f"samples: {save_samples('final.png')}")
        print(f"loss curve: {out_dir / 'loss.png'}; log: {log_path}")
        return 0

    # Ctrl-C (SIGINT) and SIGTERM finish the current step, then save and exit; a signal during
    # the final save and samples is noted and changes nothing.
    def request_stop(signum, frame):
        stop_requested.append(signum)
    old_handlers = {s: signal.signal(s, request_stop) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        return train_loop()
    finally:
        for s, h in old_handlers.items():
            signal.signal(s, h)


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


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return train(args)
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
