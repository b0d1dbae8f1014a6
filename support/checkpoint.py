"""Checkpoints for every script: atomic files, safe loading, the training log, random state.

`train.py` writes a checkpoint, `inference.py` and `figures.py` sample from it and benchmarks read
it back; all of them go through this module, so that no script imports another (as DiT's
`download.py` serves both of its sample scripts). A checkpoint is a dict of tensors and plain
Python types:

    {"model", "ema": state dicts, "optimizer": its state dict, "config": Config.to_dict(),
     "step", "epoch", "train_seconds", "rng": one RNG state per process, "log_window": per
     process the [sum of losses, steps] since the last log row, "world_size", "bf16"}

and, from a fifth of the way through the run (TrainConfig.weak_model_at), "weak_ema": the EMA's
state dict as it was at step "weak_ema_step", the weak model that autoguidance guides away from
(dit.Autoguided).

A latent model (the `latent` preset) also carries "autoencoder", the state dict of its first stage
with the scale factor, so that its samples can be decoded to pixels (autoencoder.py reads it).

The shipped weights (`ship_weights`, pretrained/model.pth) keep only {"ema" in half precision,
"config", "step", "source"} and the weak model ("weak_ema" in half precision, "weak_ema_step"):
enough to sample. Either way `torch.load(..., weights_only=True)`
reads it without running any pickled code, and the script rebuilds the model from the stored
config (nanoGPT's `GPTConfig(**checkpoint['model_args'])`): no script retypes a hyperparameter.
"""

from __future__ import annotations

import csv
import io
import itertools
import os
import pickle
import sys
from pathlib import Path
from typing import Callable

import torch

from support.cli import UserError


# ------------------------------------------------------------------------------ atomic files

_temporaries = itertools.count()  # numbers atomic_write's temporaries within this process


def atomic_write(path: str | Path, write: Callable, text: bool = False, fsync: bool = True) -> None:
    """Call write(f) on a hidden temporary file beside `path`, then rename it over `path`
    (os.replace is atomic). A crash or SIGKILL mid-write leaves the previous file intact, and a
    folder listing that skips hidden files never sees half a file. The temporary's name is this
    writer's own (process id and a counter), so two writers of one file never write into the same
    temporary: the last rename wins, with a whole file. A write that raises removes its temporary;
    one killed outright leaves it, hidden (`train.py --overwrite` and `--resume` delete those of
    their folder: remove_temporaries).
    With fsync the data reaches the disk before the rename, so a power cut cannot leave an empty
    file under the final name; fsync=False skips that wait for many small files that can be made
    again (benchmarks/README.md, "Sampling speed", the paragraph after the table)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{next(_temporaries)}.tmp")
    try:
        with open(tmp, "w" if text else "wb", **({"newline": ""} if text else {})) as f:
            write(f)
            if fsync:
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:  # Ctrl-C and SystemExit too: the old file stays, the half-file goes
        tmp.unlink(missing_ok=True)
        raise


def keep_or_warn(path: str | Path, write: Callable, what: str, advice: str) -> bool:
    """atomic_write for a file that only saves time later (a cache, a trained helper network): one
    that cannot be written (a read-only folder, a file in the way) costs the file, not the work
    that made it. Prints a warning with `advice` and returns False then."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, write)
        return True
    except OSError as e:
        print(f"warning: could not keep {what} at {path} ({e.strerror or e}); {advice}",
              file=sys.stderr)
        return False


def save_checkpoint(path: str | Path, state: dict) -> None:
    atomic_write(path, lambda f: torch.save(state, f))


def remove_temporaries(out_dir: str | Path) -> int:
    """Delete the hidden half-written files that a run killed mid-save leaves in its folder and
    its samples/ (atomic_write's .*.tmp: a checkpoint's is as large as the checkpoint). Called only
    by the run that owns the folder, before it writes anything, so no writer of them is alive.
    Returns how many files it deleted."""
    out_dir = Path(out_dir)
    stale = [*out_dir.glob(".*.tmp"), *(out_dir / "samples").glob(".*.tmp")]
    for path in stale:
        path.unlink()
    return len(stale)


def remove_kept_files(out_dir: str | Path) -> int:
    """Delete what a run leaves beside its latest checkpoint: the kept step_*.pth, the sample
    grids (samples/step_*.png, samples/final.png) and its half-written files (remove_temporaries).
    `train.py --overwrite` calls it so that a new run's folder holds nothing of the run it
    replaces but model.pth, log.csv, loss.png and gates.png, which the new run replaces at its
    first checkpoint. Returns how many files it deleted."""
    out_dir = Path(out_dir)
    stale = [*out_dir.glob("step_*.pth"), *(out_dir / "samples").glob("step_*.png"),
             *(out_dir / "samples").glob("final.png")]
    for path in stale:
        path.unlink()
    return len(stale) + remove_temporaries(out_dir)


# ------------------------------------------------------------------------------ the training log

def write_log(rows: list[dict], path: str | Path) -> None:
    """log.csv, one row per logged step: its columns are the keys of the rows in order of first
    appearance; a row without a column (the held-out loss is measured less often) leaves it
    empty."""
    fields = list(dict.fromkeys(key for row in rows for key in row))
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=fields, restval="")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write(path, lambda f: f.write(text.getvalue()), text=True)


def read_log(path: str | Path, up_to_step: int | None = None) -> list[dict]:
    """The rows of a log.csv as dicts of numbers (an empty cell left out), up to a step if given:
    a resumed run keeps the rows of the checkpoint it resumes, not those written after it."""
    path = Path(path)
    if not path.exists():
        return []
    try:
        with open(path, newline="") as f:
            rows = [{k: int(v) if k in ("step", "epoch") else float(v)
                     for k, v in r.items() if v != ""} for r in csv.DictReader(f)]
        if rows and not all("step" in r and "loss" in r for r in rows):
            raise ValueError("a row without a step or a loss")
    except (OSError, ValueError, TypeError, UnicodeDecodeError, csv.Error) as e:
        raise UserError(f"{path} is not a log.csv that train.py wrote ({e}): pass the run's own "
                        "log, or move the damaged file away") from None
    return [r for r in rows if up_to_step is None or r["step"] <= up_to_step]


# ------------------------------------------------------------------------------ reading checkpoints

SHIPPED = "pretrained/model.pth"  # the default run's EMA weights, in the repository
SHIPPED_LATENT = "pretrained/latent/model.pth"  # the latent preset's
RUNS = Path("runs")  # the scripts' outputs go under here unless the user names another place


def outputs_dir(checkpoint: str | Path, elsewhere: str) -> Path:
    """Where what is made from a checkpoint goes: beside it when it is a run in runs/, else
    runs/<elsewhere>/ (the shipped weights live in the tracked pretrained/, which must stay
    clean)."""
    folder = Path(checkpoint).resolve().parent
    runs = RUNS.resolve()
    # the folder as the user spelt it, so that what is printed reads like what was typed
    return Path(checkpoint).parent if folder == runs or runs in folder.parents else RUNS / elsewhere


def read_checkpoint(path: str | Path, with_training_state: bool = False) -> dict:
    """torch.load with weights_only=True (tensors and plain types only: a pickle that would run
    code is refused), turning every failure into a one-line UserError that says what to do."""
    path = Path(path)
    if not path.is_file():
        # runs/latent is where `python train.py --preset latent` writes: name that command and
        # the latent shipped weights for it, the default's for every other path
        train, shipped = (("python train.py --preset latent", SHIPPED_LATENT)
                          if path.resolve().parent == (RUNS / "latent").resolve()
                          else ("python train.py", SHIPPED))
        # the shipped weights can be sampled (--checkpoint is the flag of every script that
        # samples), not resumed or shipped again
        or_shipped = "" if with_training_state else (f", or sample the shipped weights with "
                                                     f"--checkpoint {shipped}")
        raise UserError(f"no checkpoint at {path}: train one with {train}{or_shipped}")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        # the unpickler's own reason, without PyTorch's advice around it (which suggests loading
        # with weights_only=False: exactly what a file of unknown origin must not get)
        reason = str(e).partition("WeightsUnpickler error:")[2].strip().split("\n")[0]
        reason = reason.split(". ")[0].rstrip(".") or type(e).__name__
        raise UserError(f"{path} is not a plain checkpoint (weights_only loading refused it: "
                        f"{reason}); only load checkpoints written by train.py") from None
    except Exception as e:  # noqa: BLE001 - a damaged file fails in many ways (EOFError,
        # RuntimeError from the zip reader, IndexError from the unpickler, ...): all mean "corrupt"
        raise UserError(f"{path} is corrupt or truncated ({type(e).__name__}): retrain, or "
                        "resume from an intact copy") from None
    # Sampling needs the EMA weights and the config (all that the shipped weights hold), and a
    # latent model its autoencoder, to decode what it samples; resuming needs the rest of the
    # training state too.
    needed = ["ema", "config"]
    if with_training_state:
        needed += ["model", "optimizer", "step", "rng"]
    missing = [k for k in needed if not isinstance(ckpt, dict) or k not in ckpt]
    latent = not missing and isinstance(ckpt["config"], dict) and ckpt["config"].get("autoencoder")
    if latent and "autoencoder" not in ckpt:
        raise UserError(f"{path} is a latent model but holds no autoencoder to decode its samples: "
                        "it is damaged or was written by another version; retrain it with "
                        "python train.py --preset latent")
    if missing and isinstance(ckpt, dict):  # the project's other files, named for what they are
        if "source" in ckpt and "ema" in ckpt:
            raise UserError(f"{path} holds shipped weights (the EMA alone, no training state): "
                            "sample them with inference.py; to train on, train a run of your own")
        if "autoencoder" in ckpt and "ema" not in ckpt:
            raise UserError(f"{path} is a latent run's first stage (its autoencoder), not a DiT: "
                            "pass the run's model.pth")
    if missing:
        raise UserError(f"{path} is not a checkpoint of this project (missing "
                        f"{', '.join(missing)}): it is damaged or was written by another "
                        "version; retrain it")
    return ckpt


def load_weights(module, state: dict, path: str | Path):
    """module.load_state_dict(state) (a model's or an optimiser's), with a UserError when the
    shapes do not match the stored config; returns the module. Weights stored in half precision
    (the shipped file, `ship_weights`) are copied into the module's float32 tensors."""
    try:
        module.load_state_dict(state)
    except (RuntimeError, ValueError, KeyError) as e:  # optimisers raise ValueError or KeyError
        detail = str(e).strip().splitlines()[-1].strip()[:150]
        raise UserError(f"the weights in {path} do not match its config ({detail}): the file is "
                        "damaged or was edited; retrain it") from None
    return module


def _half(state: dict) -> dict:
    """A state dict with its floating-point tensors in half precision."""
    return {k: v.half() if v.is_floating_point() else v for k, v in state.items()}


def ship_weights(path: str | Path, out: str | Path, source: str) -> dict:
    """The EMA weights of a training checkpoint in half precision (and its weak model, if it keeps
    one), with its config and step and a note of where they came from (`source`: the commit and
    command), written atomically to `out`: what a reader needs to sample, without the raw weights
    and the optimiser's moments. Returns the dict written."""
    ckpt = read_checkpoint(path, with_training_state=True)
    shipped = {"ema": _half(ckpt["ema"]), "config": ckpt["config"], "step": ckpt["step"],
               "source": source}
    if "weak_ema" in ckpt:  # autoguidance's weak model
        shipped["weak_ema"] = _half(ckpt["weak_ema"])
        shipped["weak_ema_step"] = ckpt["weak_ema_step"]
    if "autoencoder" in ckpt:  # a latent model's decoder, kept in float32
        shipped["autoencoder"] = ckpt["autoencoder"]
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    save_checkpoint(out, shipped)
    return shipped


# ------------------------------------------------------------------------------ random state

def rng_state(device: torch.device) -> dict:
    """The RNG states a training process draws from: the CPU's, and its GPU's when it has one."""
    state = {"torch": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def set_rng_state(state: dict, device: torch.device) -> None:
    torch.set_rng_state(state["torch"])
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)
