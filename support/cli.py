"""Command-line plumbing shared by the scripts: user errors, exit status, device and precision, and
train.py's flags that override a preset.

A user's mistake (a missing file, a bad value) is a `UserError`, printed as one line that says what
to do, never a traceback (`exit_status`). The config's own dataclasses and presets stay in
config.py; this module only knows how their fields are spelt on a command line.
"""

from __future__ import annotations

import argparse
import os
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable


class UserError(Exception):
    """A mistake the user can fix (bad flag value, missing file); scripts print it as one line."""


def exit_status(run: Callable[[argparse.Namespace], Any], args: argparse.Namespace) -> int:
    """A script's run(args) as its exit status: run's own status (0 when it returns None), 1 with
    a UserError printed as one line on stderr ("error: ... what to do"), 130 for Ctrl-C before
    the script could stop cleanly."""
    try:
        status = run(args)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted (Ctrl-C)", file=sys.stderr)
        return 130
    return 0 if status is None else status


# ----------------------------------------------------------------------------- device and precision

def pick_device(flag: str | None = None):
    """The torch device to run on: the flag if given, else CUDA when present, else the CPU."""
    import torch

    try:
        device = torch.device(flag or ("cuda" if torch.cuda.is_available() else "cpu"))
    except RuntimeError:
        raise UserError(f"unknown device {flag!r}: use cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"--device {flag} asked for, but PyTorch sees no CUDA GPU: use --device "
                        "cpu")
    if device.type not in ("cpu", "cuda"):
        raise UserError(f"device {flag!r} is not supported here: use cpu or cuda")
    if device.type == "cuda" and (device.index or 0) >= torch.cuda.device_count():
        raise UserError(f"--device {flag}: {gpus_seen()}: pass one of them")
    return device


def gpus_seen() -> str:
    """The CUDA GPUs this process can use, in words: "PyTorch sees 2 CUDA GPUs (cuda:0 to 1)"."""
    import torch

    n = torch.cuda.device_count()
    numbers = f"cuda:0 to {n - 1}" if n > 1 else "cuda:0"
    return f"PyTorch sees {n} CUDA GPU{'' if n == 1 else 's'} ({numbers})"


AMP_CHOICES = ("auto", "bf16", "off")  # --amp: bf16 autocast by device, forced on, or fp32
AMP_HELP = ("bf16 autocast for the network: auto = on Ampere and later GPUs, fp32 on a CPU "
            "(default: auto)")  # every script's --amp; use_bf16 says why


def use_bf16(amp: str, device) -> bool:
    """The project's one bf16 policy, for training and sampling alike: whether the network runs
    under bf16 autocast. "bf16" and "off" (fp32) force it; "auto" is on for CUDA GPUs with bf16
    tensor cores (compute capability 8.0 on, Ampere and later), which run it many times faster
    than fp32, off on older ones (a T4 or V100 has none), and off on every CPU. On a CPU it
    depends on the chip: 0.72x fp32's training speed on a Xeon without AMX, about 1.0x on one
    with AMX, 1.35-1.41x on EPYCs with AVX-512 bf16, and nothing tells them apart cheaply before
    running; where bf16 was faster, its extra training images did not beat fp32 in the digits
    (on one EPYC model, two seeds, with the network's two ends in fp32, dit.DiT.forward; before
    that, its digits had heavier strokes: benchmarks/README.md, "Where bf16 loses its time on a
    CPU", "The hardware" and "The network's two ends in fp32"). Pass `--amp bf16` to try it on
    yours. The samplers' own arithmetic stays in float64 either way."""
    if amp not in AMP_CHOICES:
        raise UserError(f"--amp must be one of {', '.join(AMP_CHOICES)}, got {amp!r}")
    if amp != "auto":
        return amp == "bf16"
    if device.type != "cuda":
        return False
    import torch

    return torch.cuda.get_device_capability(device)[0] >= 8


def is_out_of_memory(e: BaseException) -> bool:
    """True for CUDA's OutOfMemoryError and for the CPU allocator's RuntimeError."""
    import torch

    return isinstance(e, torch.OutOfMemoryError) or (
        isinstance(e, RuntimeError) and ("can't allocate memory" in str(e)
                                         or "out of memory" in str(e).lower()))


@contextmanager
def out_of_memory_as_error(message: str):
    """Turn running out of memory inside the block into a one-line UserError(message), which
    should say what to make smaller; every other error passes through unchanged."""
    try:
        yield
    except RuntimeError as e:  # torch.OutOfMemoryError is a RuntimeError
        if not is_out_of_memory(e):
            raise
        raise UserError(message) from None


def check_can_write_in(folder: str | Path, what: str) -> None:
    """Refuse, before any long work, a folder that cannot be made or written to: the nearest
    part of it that exists must be a folder (mkdir fails on a file in the way) that we may write."""
    folder = Path(folder).resolve()
    nearest = next(p for p in [folder, *folder.parents] if p.exists())
    if not nearest.is_dir():
        raise UserError(f"{what}: {nearest} is a file, not a folder, so nothing can be written "
                        "under it: pass another path")
    if not os.access(nearest, os.W_OK | os.X_OK):
        raise UserError(f"{what}: {nearest} is not writable: pass a path in a folder you can "
                        "write to")


# ----------------------------------------------------------------------------- train.py's overrides

def flag(name: str) -> str:
    """The command-line spelling of a config field: batch_size -> batch-size."""
    return name.replace("_", "-")


TRAIN_FLAGS = {  # field of TrainConfig -> help; each flag overrides the preset's value
    "epochs": "passes over the training set",
    "max_steps": "stop after this many steps (0 = all epochs)",
    "time_limit": "stop after this many minutes of training, counted over resumes (0 = no limit)",
    "batch_size": "images per optimiser step (per process)",
    "lr": "AdamW learning rate",
    "warmup_steps": "steps of linear learning-rate warm-up (0 = none)",
    "lr_decay": "after any warm-up, the rate falls along a half cosine towards 0 at the run's end "
                "(a resumed run with a new length decays towards its new end)",
    "min_snr_gamma": "min-SNR loss weighting; 0 = plain MSE",
    "ema_decay": "0 = no averaging: sample from the raw weights",
    "ema_warmup": "EMA decay min(decay, (1 + step) / (10 + step)); --no-ema-warmup uses the "
                  "fixed decay from step 0",
    "seed": "seed of the weights, batches and noise",
    "log_every": "steps between rows of log.csv",
    "eval_every": "steps between held-out losses (and one at the end)",
    "sample_every": "steps between sample grids (0 = each epoch)",
    "checkpoint_every": "steps between checkpoints",
    "weak_model_at": "keep the EMA at this fraction of the run as autoguidance's weak model "
                     "(0 = none)",
    "keep_every": "also keep every K-th step's checkpoint, as step_0003000.pth for step 3000 "
                  "(0 = only the latest)",
}
MODEL_FLAGS = {  # field of ModelConfig -> help
    "patch_size": "pixels per patch side (28 / p tokens per side; latent cells for --preset "
                  "latent)",
    "hidden_size": "token width D",
    "depth": "number of DiT blocks",
    "num_heads": "attention heads (must divide the width)",
    "mlp_ratio": "MLP width / token width",
    "class_dropout_prob": "share of labels dropped, for classifier-free guidance (0 = none: the "
                          "run samples without it)",
}
# What a resumed run may change: how long it goes on and how often it reports.
RESUMABLE_FLAGS = {"epochs", "max_steps", "time_limit", "log_every", "eval_every",
                   "sample_every", "checkpoint_every", "keep_every"}


def add_override_flags(parser: argparse.ArgumentParser, presets: dict[str, Callable]) -> None:
    """--preset, and one flag per field of TRAIN_FLAGS and MODEL_FLAGS. A flag that is not given
    does not appear in the parsed args at all (SUPPRESS), so `config_from_args` keeps the preset's
    value, and --help lists every preset's value instead of one default. `presets` maps a name
    to a function returning a fresh config (config.PRESETS)."""
    parser.add_argument("--preset", choices=sorted(presets), default=None,
                        help="starting config (default: cpu; with --resume, the run's own)")
    for title, section, flags in [("training", "train", TRAIN_FLAGS),
                                  ("model", "model", MODEL_FLAGS)]:
        group = parser.add_argument_group(f"{title} (override the preset; its values in brackets)")
        for name, text in flags.items():
            values = {p: getattr(getattr(presets[p](), section), name) for p in sorted(presets)}
            kind = type(values["cpu"])
            how = {"action": argparse.BooleanOptionalAction} if kind is bool else {"type": kind}
            shown = ", ".join(f"{p} {v}" for p, v in values.items())  # "cpu 16, gpu 30, tiny 1"
            group.add_argument(f"--{flag(name)}", **how, default=argparse.SUPPRESS,
                               help=f"{text} [{shown}]")


def config_from_args(args: argparse.Namespace, presets: dict[str, Callable], resumed=None):
    """The preset named by args.preset (cpu when none is named), or the config of a run being
    resumed, with the override flags that were given applied, then checked (Config.check). A
    resumed run may change only how long it goes on and how often it reports (RESUMABLE_FLAGS),
    and keeps its preset."""
    if resumed is not None and args.preset not in (None, resumed.preset):
        raise UserError(f"--preset {args.preset}: the run being resumed was trained with preset "
                        f"{resumed.preset}; drop --preset, or start a new run with another "
                        "--out-dir")
    cfg = resumed if resumed is not None else presets[args.preset or "cpu"]()
    for name in [*TRAIN_FLAGS, *MODEL_FLAGS]:
        if not hasattr(args, name):  # not given: keep the preset's value
            continue
        value = getattr(args, name)
        section = cfg.model if name in MODEL_FLAGS else cfg.train
        if resumed is not None and name not in RESUMABLE_FLAGS and value != getattr(section, name):
            raise UserError(f"--{flag(name)} {value} differs from the run being resumed "
                            f"({getattr(section, name)}): drop the flag, or start a new run "
                            "with another --out-dir")
        setattr(section, name, value)
    cfg.drop_guidance_without_null_label()
    cfg.check()
    return cfg
