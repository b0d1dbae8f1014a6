"""Train the class-conditional DiT on MNIST with the noise-prediction loss (DDPM Algorithm 1).

    python train.py                                   # the default `cpu` preset, CUDA if present
    python train.py --preset tiny --max-steps 20      # a smoke test in seconds
    python train.py --resume                          # continue <out-dir>/model.pth exactly
    python train.py --preset latent                   # DiT in an autoencoder's latent space,
                                                      # as the paper runs it (into runs/latent)
    torchrun --nproc_per_node=2 train.py              # DistributedDataParallel, one process per GPU
                                                      # (or per CPU share, with gloo)

Writes into --out-dir (default runs/default, runs/latent for the latent preset): model.pth
(weights, EMA, the early EMA that autoguidance guides away from, optimiser, step, RNG states and
the config; see support/checkpoint.py), samples/
(EMA sample grids, one row per digit), log.csv (the loss averaged since the row before, the
held-out loss by noise level, the adaLN-Zero gates), loss.png and gates.png; with --preset latent
also autoencoder.pth, the first stage (autoencoder.py), trained here before the DiT or reused,
whose latents of the digits, encoded once, are the DiT's data. The file reads as DiT's train.py
does: the pieces of a step (learning rate, EMA, `train_step`) and the log, then `train`: set up,
the loop, checkpoints, and the command line at the end. What only makes it robust (checkpoints,
torchrun, signals, the pictures) comes from support/, one floor down.

References: DDPM (Ho et al. 2020) Algorithm 1; DiT (Peebles & Xie 2023) section 4 for AdamW,
EMA and label dropout; classifier-free guidance (Ho & Salimans 2022); min-SNR weighting
(Hang et al. 2023).
"""

from __future__ import annotations

import argparse
import copy
import math
import sys
import time
from pathlib import Path

import torch
from torch.nn.parallel import DistributedDataParallel
from tqdm.auto import tqdm

from autoencoder import Autoencoder, encode_images, first_stage
from config import PRESETS, Config
from dataset import InMemoryBatches, load_mnist, resolve_data_dir, to_model_range
from diffusion import GaussianDiffusion
from dit import DiT, with_autoguidance
from support.checkpoint import (load_weights, read_checkpoint, read_log, remove_kept_files,
                                remove_temporaries, save_checkpoint, set_rng_state, write_log)
from support.cli import (AMP_CHOICES, AMP_HELP, UserError, add_override_flags, check_can_write_in,
                         config_from_args, exit_status, out_of_memory_as_error, use_bf16)
from support.distributed import (Processes, StopRequests, agree, check_ranks_in_sync, gather,
                                 gather_rng, processes, summed)
from support.pictures import save_gates_plot, save_grid, save_loss_plot
from support.sampling import sample_grid
from support.schedule import half_cosine

CHECKPOINT_NAME = "model.pth"


# ------------------------------------------------------------------------------ the step

def lr_at(step: int, cfg: Config, total_steps: int) -> float:
    """The learning rate of optimiser step `step` (0-based) in a run of total_steps: an optional
    linear warm-up over warmup_steps, then cfg.train.lr, constant as in DiT, or with lr_decay
    falling along a half cosine that would reach 0 one step after the last (the last step taken
    still moves, by lr (1 - cos(pi / n)) / 2 over the n decay steps)."""
    t = cfg.train
    lr = t.lr * min(1.0, (step + 1) / t.warmup_steps) if t.warmup_steps > 0 else t.lr
    if t.lr_decay and total_steps > t.warmup_steps:
        done = min(1.0, max(0, step - t.warmup_steps) / (total_steps - t.warmup_steps))
        lr *= half_cosine(done)
    return lr


def ema_decay_at(step: int, cfg: Config) -> float:
    """EMA decay for this step. With warm-up, min(decay, (1 + step) / (10 + step)): 0.1 at the
    first step and 0.99 from step 890, so the average forgets the random initial weights
    quickly; a fixed 0.9999 would still weigh them 90% after 1,000 steps (0.9999^1000)."""
    decay = cfg.train.ema_decay
    if cfg.train.ema_warmup:
        decay = min(decay, (1 + step) / (10 + step))
    return decay


def make_optimizer(model: torch.nn.Module, cfg: Config) -> torch.optim.AdamW:
    """AdamW as in DiT. fused=True updates every tensor in one kernel instead of one per tensor,
    a cost that matters more the smaller the batch (benchmarks/README.md, "Sample quality")."""
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
        # t ~ U{0..T-1}, eps ~ N(0, I), x_t = sqrt(alpha-bar_t) x0 + sqrt(1 - alpha-bar_t) eps,
        # loss = |eps - eps_theta(x_t, t, y)|^2
        # (weighted by min(SNR_t, gamma) / SNR_t when min_snr_gamma > 0)
        loss = diffusion.training_loss(model, x0, y, cfg.train.min_snr_gamma)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if cfg.train.grad_clip > 0:
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.train.grad_clip)
    optimizer.step()
    return loss.item()


# ------------------------------------------------------------------------------ set-up and log

def start_or_resume(args: argparse.Namespace, procs: Processes,
                    bf16: bool) -> tuple[Config, dict | None]:
    """The run's config and the checkpoint it resumes (None for a new run), refusing what would
    lose work or break an exact resume."""
    # Before any work (the latent preset trains its autoencoder first): a folder we cannot write.
    check_can_write_in(args.out_dir, f"--out-dir {args.out_dir}")
    ckpt_path = Path(args.out_dir) / CHECKPOINT_NAME
    if not args.resume:
        if ckpt_path.exists() and not args.overwrite:
            raise UserError(f"{ckpt_path} already exists: pass --resume to continue that run, "
                            "--overwrite to replace it, or another --out-dir")
        return config_from_args(args, PRESETS), None
    if args.overwrite:
        raise UserError("--resume continues the run in --out-dir and --overwrite replaces it: "
                        "pass one of them")
    if not ckpt_path.exists():
        raise UserError(f"nothing to resume: no checkpoint at {ckpt_path}; drop --resume to "
                        "start a new run, or pass the --out-dir of the run to continue")
    checkpoint = read_checkpoint(ckpt_path, with_training_state=True)
    resumed = Config.from_dict(checkpoint["config"], source=ckpt_path)
    cfg = config_from_args(args, PRESETS, resumed=resumed)
    # Exact resume needs the same processes and precision: the data shards, each rank's RNG
    # stream and the arithmetic all depend on them.
    was = (checkpoint.get("world_size", 1), checkpoint.get("bf16", bf16))
    if was != (procs.world_size, bf16):
        raise UserError(f"{ckpt_path} was trained with {was[0]} process(es) and bf16 "
                        f"{'on' if was[1] else 'off'}; resume it the same way (torchrun "
                        f"--nproc_per_node, --amp), or start a new run")
    used = checkpoint.get("train_seconds", 0.0) / 60
    if 0 < cfg.train.time_limit <= used:  # else each --resume would add one step and stop
        raise UserError(f"{ckpt_path} has trained {used:.3g} min, its whole --time-limit of "
                        f"{cfg.train.time_limit:g}: resume with a larger --time-limit (0 = none)")
    return cfg, checkpoint


def heldout_digits(test_images: torch.Tensor, test_labels: torch.Tensor, cfg: Config,
                   autoencoder: Autoencoder | None, device) -> tuple[torch.Tensor, torch.Tensor]:
    """(x0, labels) of the first cfg.train.eval_images test digits, as the model's data: pixels
    in [-1, 1], or for a latent model their latents, one seeded draw each as for its training
    images. The log's held-out loss is measured on them."""
    n = cfg.train.eval_images
    if autoencoder is None:
        x0 = to_model_range(test_images[:n]).to(device)
    else:
        x0 = encode_images(autoencoder, test_images[:n], cfg.train.seed)  # on the model's device
    return x0, test_labels[:n].to(device)


def looking_inside(model: DiT, diffusion: GaussianDiffusion, heldout: tuple, cfg: Config,
                   with_heldout: bool) -> dict:
    """The log's view inside the model: each block's mean |gate| (attention and MLP) over every
    digit at ten noise levels, and with_heldout the loss on held-out test digits (overall and per
    tenth of the range of t; GaussianDiffusion.heldout_losses). No random draw is made from the
    training's stream, so logging more or less leaves the training bit-identical."""
    T, classes = cfg.diffusion.num_timesteps, cfg.model.num_classes
    device = heldout[0].device
    t = torch.arange(10, device=device).repeat(classes) * T // 10  # 0, 100, ..., 900 per digit
    y = torch.arange(classes, device=device).repeat_interleave(10)
    row = {}
    for k, (attn, mlp) in enumerate(model.gate_magnitudes(t, y).tolist()):
        row[f"gate_attn_{k}"], row[f"gate_mlp_{k}"] = attn, mlp
    if with_heldout:
        losses = diffusion.heldout_losses(model, *heldout, cfg.train.min_snr_gamma)
        row["heldout_loss"], row["heldout_mse"] = losses["loss"], losses["mse"]
        for b, mse in enumerate(losses["bucket_mse"]):
            row[f"heldout_mse_t{b * T // 10}"] = mse
    return row


def save_samples(ema: DiT, diffusion: GaussianDiffusion, cfg: Config, bf16: bool, path: Path,
                 autoencoder: Autoencoder | None, weak_ema: DiT | None = None) -> Path:
    """Ten EMA samples of each digit (row k = digit k) from the same noise every time, so that
    the grids of successive epochs show the model learning. With the weak model (the final grid),
    guided away from it as inference.py samples; the epochs' grids are the EMA's alone, the same
    kind of picture before and after the weak model is kept, at two network passes per step
    instead of three."""
    g = torch.Generator(next(ema.parameters()).device).manual_seed(cfg.train.seed)
    sampled = with_autoguidance(ema, weak_ema, cfg.sample.autoguide_scale)
    save_grid(sample_grid(sampled, diffusion, cfg, list(range(cfg.model.num_classes)), 10, g, bf16,
                          autoencoder), path, nrow=10)
    return path


# ------------------------------------------------------------------------------ training

def train(args: argparse.Namespace, procs: Processes) -> int:
    """Train as process procs.rank of the run; returns the exit status."""
    # Set up: device, config (new or resumed), data, model, EMA, optimiser.
    device, out_dir = procs.device, Path(args.out_dir)
    ckpt_path = out_dir / CHECKPOINT_NAME
    bf16 = use_bf16(args.amp, device)
    cfg, checkpoint = start_or_resume(args, procs, bf16)
    if args.autoencoder and cfg.autoencoder is None:
        raise UserError(f"--autoencoder is for --preset latent; preset {cfg.preset} trains on "
                        "pixels: drop the flag")
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True  # TF32 matmuls on Ampere and newer GPUs
        torch.backends.cudnn.allow_tf32 = True

    data_dir = resolve_data_dir(args.data_dir)
    images, labels = load_mnist(data_dir, train=True)
    test_images, test_labels = load_mnist(data_dir, train=False)  # never trained on
    autoencoder = None
    if cfg.autoencoder is not None:  # the latent preset: the DiT's data are latents, encoded once
        autoencoder = first_stage(cfg.autoencoder, images, out_dir, procs, cfg.train.seed,
                                  reuse=args.autoencoder, overwrite=args.overwrite,
                                  resumed=checkpoint)
        images = encode_images(autoencoder, images, cfg.train.seed)
    heldout = heldout_digits(test_images, test_labels, cfg, autoencoder, device)
    batches = InMemoryBatches(images, labels, cfg.train.batch_size, device, cfg.train.seed,
                              procs.rank, procs.world_size)
    torch.manual_seed(cfg.train.seed)  # the same initial weights on every rank
    model = DiT(cfg.model).to(device)
    ema = copy.deepcopy(model).requires_grad_(False).eval()  # the samples come from the EMA
    torch.manual_seed(cfg.train.seed + procs.rank)  # but each rank draws its own noise and t
    optimizer = make_optimizer(model, cfg)
    diffusion = GaussianDiffusion.from_config(cfg.diffusion)
    step, seconds_before, log_rows = 0, 0.0, []  # steps taken and training time, over resumes
    # Autoguidance's weak model (dit.Autoguided): a copy of the EMA as it was at weak_model_at
    # of the run, kept in every checkpoint from then on. None until then.
    weak_ema, weak_step = None, 0
    # The logged loss is the mean over the steps since the last row (and over every rank's
    # batches): one batch's loss swings by a factor of two with its draw of t, and only the mean
    # draws a readable curve. This rank's sum of losses and count of steps since that row:
    loss_since_log, steps_since_log = 0.0, 0
    if checkpoint is not None:
        for module, key in [(model, "model"), (ema, "ema"), (optimizer, "optimizer")]:
            load_weights(module, checkpoint[key], ckpt_path)
        step, seconds_before = checkpoint["step"], checkpoint.get("train_seconds", 0.0)
        set_rng_state(checkpoint["rng"][procs.rank], device)  # this rank's stream, where it was
        log_rows = read_log(out_dir / "log.csv", step)
        if "weak_ema" in checkpoint:
            weak_ema = load_weights(copy.deepcopy(ema), checkpoint["weak_ema"], ckpt_path)
            weak_step = checkpoint["weak_ema_step"]
        # a run stopped between two rows resumes its window: the next row averages the same
        # steps as a run never stopped (checkpoints of older versions start a new window)
        if "log_window" in checkpoint:
            loss_since_log, steps_since_log = checkpoint["log_window"][procs.rank]
    steps_per_epoch = len(batches)
    total_steps = cfg.train.max_steps or cfg.train.epochs * steps_per_epoch  # max_steps wins
    longer = ("a larger --max-steps (or --max-steps 0 and a larger --epochs)"
              if cfg.train.max_steps else "a larger --epochs or --max-steps")
    if step > total_steps:  # a resumed run asked to end before where it is
        raise UserError(f"{ckpt_path} is at step {step} already, past this run's end at step "
                        f"{total_steps}: to train on, resume with {longer}")
    if checkpoint is not None and step == total_steps:  # finished: leave it as it is
        if procs.is_main:
            print(f"{ckpt_path} is finished (step {step} of {total_steps}): nothing to train; to "
                  f"train on, resume with {longer}")
        return 0
    sample_every = cfg.train.sample_every or steps_per_epoch
    if weak_ema is None:  # 0 with weak_model_at 0: no step is 0, so none is kept
        weak_step = round(cfg.train.weak_model_at * total_steps)
        if weak_step <= step:  # a resumed run already past it (an earlier version's, or longer)
            weak_step = 0

    train_model = model  # what the step calls; DDP and torch.compile wrap the same parameters
    if procs.world_size > 1:
        train_model = DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None)
    if args.compile:
        train_model = torch.compile(train_model)
    if procs.is_main:
        if args.overwrite and (removed := remove_kept_files(out_dir)):
            print(f"--overwrite: removed {removed} kept checkpoints, sample grids and half-written "
                  f"files of the earlier run in {out_dir}")
        elif checkpoint is not None and (removed := remove_temporaries(out_dir)):
            print(f"--resume: removed {removed} half-written files of a save that was cut short "
                  f"in {out_dir}")
        (out_dir / "samples").mkdir(parents=True, exist_ok=True)
        where = f"{device}" + (f" x {procs.world_size} processes" if procs.world_size > 1 else "")
        print(f"device: {where} | bf16 autocast: {'on' if bf16 else 'off'} | "
              f"threads: {torch.get_num_threads()} | seed: {cfg.train.seed}")
        print(f"preset {cfg.preset}: DiT with {sum(p.numel() for p in model.parameters()):,} "
              f"parameters, patch {cfg.model.patch_size}, width {cfg.model.hidden_size}, depth "
              f"{cfg.model.depth}; {len(images):,} images, {steps_per_epoch} steps per epoch, "
              f"{'resuming at step ' + str(step) + ' of ' if step else ''}{total_steps} steps"
              + (f"; autoguidance's weak model: the EMA at step {weak_step}" if weak_step else ""))

    # The loop: one step of Algorithm 1, the EMA, then the log, checkpoint and grid when due.
    # It ends at total_steps, at the time limit, or on a stop request (a signal here or in any
    # other process); a non-finite loss ends the run with an error and no new checkpoint.
    start_step, started, stop, time_is_up = step, time.time(), False, False
    # the step of the checkpoint this run can fall back to: the one it resumed, or its own last
    # (an --overwrite run's folder still holds the replaced run's model.pth until its first)
    saved_step = step if checkpoint is not None else None
    last_log, seen_since_log = started, 0
    batch_stream = batches.stream(step)  # resumes mid-epoch: skips the batches already seen
    bar = tqdm(total=total_steps, initial=step, disable=not procs.is_main, unit="step",
               dynamic_ncols=True)
    # A resumed run keeps its batch size (the data order depends on it): then only a new run helps.
    too_big = (f"batch size {cfg.train.batch_size} does not fit in memory on {device}: "
               + ("pass a smaller --batch-size" if checkpoint is None else
                  "a resumed run keeps its batch size, so start a new run (another --out-dir) "
                  "with a smaller --batch-size, or resume on a device with more memory"))
    with StopRequests() as stops:  # from here on, Ctrl-C asks for a clean stop
        with bar, out_of_memory_as_error(too_big):
            while step < total_steps and not stop:
                epoch, (x0, y) = step // steps_per_epoch, next(batch_stream)
                loss = train_step(train_model, diffusion, optimizer, x0, y, cfg,
                                  lr_at(step, cfg, total_steps), bf16)
                seconds = seconds_before + time.time() - started
                # The main process's clock alone decides: it saves train_seconds, which --resume
                # checks against the limit (another rank's clock runs a little ahead or behind).
                signalled, time_is_up, nonfinite = agree(
                    procs, bool(stops.signals),
                    procs.is_main and 0 < cfg.train.time_limit <= seconds / 60,
                    not math.isfinite(loss))
                stop = signalled or time_is_up
                if nonfinite:
                    last = (f"the last good checkpoint is {ckpt_path} (step {saved_step})"
                            if saved_step is not None else "this run wrote no checkpoint yet")
                    retry = " (or --amp off)" if bf16 else ""
                    raise UserError(f"training stopped: loss is {loss} at step {step + 1}; "
                                    f"{last}. Start a new run (--overwrite) with a lower --lr"
                                    f"{retry}: a resumed run keeps its rate")
                update_ema(ema, model, ema_decay_at(step, cfg))
                step += 1
                if step == weak_step and weak_ema is None:
                    weak_ema = copy.deepcopy(ema)  # the EMA stays as it is from here on
                bar.update(1)
                seen_since_log += x0.shape[0] * procs.world_size
                loss_since_log, steps_since_log = loss_since_log + loss, steps_since_log + 1

                evaluate = step % cfg.train.eval_every == 0 or step == total_steps
                if step % cfg.train.log_every == 0 or evaluate:
                    now = time.time()
                    ips = seen_since_log / max(now - last_log, 1e-9)
                    total, count = summed(procs, loss_since_log, steps_since_log)  # collective
                    mean_loss = total / count
                    log_rows.append({"step": step, "epoch": epoch, "loss": mean_loss,
                                     "lr": lr_at(step - 1, cfg, total_steps),
                                     "images_per_sec": ips, "elapsed_sec": seconds,
                                     **looking_inside(model, diffusion, heldout, cfg, evaluate)})
                    bar.set_postfix(loss=f"{mean_loss:.4f}", img_s=f"{ips:.0f}")
                    last_log, seen_since_log, loss_since_log, steps_since_log = now, 0, 0.0, 0
                keep = cfg.train.keep_every > 0 and step % cfg.train.keep_every == 0
                if step % cfg.train.checkpoint_every == 0 or step == total_steps or stop or keep:
                    # Tensors and plain types only, so that torch.load(weights_only=True) reads it.
                    state = {"model": model.state_dict(), "ema": ema.state_dict(),
                             "optimizer": optimizer.state_dict(), "step": step,
                             "epoch": step // steps_per_epoch, "train_seconds": seconds,
                             "rng": gather_rng(procs),  # called on every rank: a collective
                             "log_window": gather(procs, [loss_since_log, steps_since_log]),
                             "world_size": procs.world_size, "bf16": bf16,
                             "config": cfg.to_dict()}
                    if weak_ema is not None:
                        state["weak_ema"], state["weak_ema_step"] = weak_ema.state_dict(), weak_step
                    if autoencoder is not None:  # what decoding the samples needs
                        state["autoencoder"] = autoencoder.state_dict()
                    if procs.is_main:
                        # The log first: killed between the two, a resumed run drops the rows
                        # past its checkpoint's step (read_log); the other way round it would
                        # lose those since the previous checkpoint.
                        write_log(log_rows, out_dir / "log.csv")
                        save_checkpoint(ckpt_path, state)
                        if keep:  # the same state under a name the next save leaves alone
                            save_checkpoint(out_dir / f"step_{step:07d}.pth", state)
                        save_loss_plot(log_rows, out_dir / "loss.png")
                        save_gates_plot(log_rows, out_dir / "gates.png")
                    saved_step = step
                if (step % sample_every == 0 and step != total_steps and not stop
                        and procs.is_main):
                    path = out_dir / "samples" / f"step_{step:07d}.png"
                    bar.write(f"samples at step {step}: "
                              f"{save_samples(ema, diffusion, cfg, bf16, path, autoencoder)}")

        # The end: every rank holds the same weights; the first one reports and draws.
        check_ranks_in_sync(model, procs)
        if not procs.is_main:
            return 0
        elapsed, done = time.time() - started, step - start_step
        images_per_sec = done * cfg.train.batch_size * procs.world_size / max(elapsed, 1e-9)
        print(f"trained {done} steps in {elapsed:.0f} s ({images_per_sec:.0f} images/s); "
              f"checkpoint: {ckpt_path}")
        if step < total_steps and not time_is_up:  # a signal, here or in another process
            print(f"stopped early at step {step} of {total_steps}: continue with "
                  f"python train.py --resume --out-dir {out_dir}")
            return stops.exit_status()
        if step < total_steps:
            print(f"time limit of {cfg.train.time_limit:g} min reached at step {step}: train on "
                  f"with python train.py --resume --out-dir {out_dir} --time-limit M (M > "
                  f"{cfg.train.time_limit:g}, or 0 for none)")
        final = save_samples(ema, diffusion, cfg, bf16, out_dir / "samples" / "final.png",
                             autoencoder, weak_ema)
        print(f"samples: {final}")
        print(f"loss curve: {out_dir / 'loss.png'}; log: {out_dir / 'log.csv'}")
        return 0


# ------------------------------------------------------------------------------ command line

def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Where the run goes and how it runs, then --preset and one flag per config field it may
    override (support.cli.add_override_flags; --help lists each preset's value)."""
    p = argparse.ArgumentParser(description="Train a class-conditional DiT on MNIST.")
    p.add_argument("--out-dir", default=None,
                   help="where model.pth, samples/, loss.png and log.csv go (default: "
                        "runs/default, or runs/latent for --preset latent)")
    p.add_argument("--data-dir", default=None,
                   help="folder holding MNIST/raw/ (default: $DIT_DATA_DIR or ./data)")
    p.add_argument("--resume", action="store_true", help="continue from <out-dir>/model.pth")
    p.add_argument("--overwrite", action="store_true",
                   help="start afresh even if <out-dir>/model.pth exists (the earlier run's "
                        "step_*.pth and sample grids are deleted)")
    p.add_argument("--autoencoder", default=None,
                   help="--preset latent: reuse this finished autoencoder.pth (default: the one "
                        "in <out-dir> if there is one and not --overwrite, else train a new one "
                        "there)")
    p.add_argument("--device", default=None,
                   help="cuda, cuda:1 or cpu (default: cuda when present)")
    p.add_argument("--compile", action="store_true",
                   help="torch.compile the model (slow start, faster steps)")
    p.add_argument("--amp", choices=AMP_CHOICES, default="auto", help=AMP_HELP)
    add_override_flags(p, PRESETS)
    args = p.parse_args(argv)
    args.out_dir = args.out_dir or ("runs/latent" if args.preset == "latent" else "runs/default")
    return args


def run(args: argparse.Namespace) -> int:
    """train() as this process of the run: the only one for `python train.py`, one of several
    under torchrun; they leave the process group together (support.distributed.processes)."""
    with processes(args.device) as procs:
        return train(args, procs)


def main(argv: list[str] | None = None) -> int:
    """A user's mistake is one line on stderr and exit status 1, never a traceback."""
    return exit_status(run, parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
