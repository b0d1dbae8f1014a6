"""What the scripts share: checkpoints, the training log, atomic files, random state, precision,
memory errors.

`train.py` writes a checkpoint, `inference.py` samples from it and benchmarks read it back; all of
them go through this module, so that no script imports another (as DiT's `download.py` serves
both of its sample scripts). A checkpoint is a dict of tensors and plain Python types:

    {"model", "ema": state dicts, "optimizer": its state dict, "config": Config.to_dict(),
     "step", "epoch", "train_seconds", "rng": one RNG state per process, "world_size", "bf16"}

A latent model (the `latent` preset) also carries "autoencoder", the state dict of its first stage
with the scale factor, so that its samples can be decoded to pixels (`load_autoencoder`); the
autoencoder alone, as train.py saves it to reuse, is {"autoencoder", "config", "seconds"}.

The shipped weights (`ship_weights`, pretrained/model.pth) keep only {"ema" in half precision,
"config", "step", "source"}: enough to sample. Either way `torch.load(..., weights_only=True)`
reads it without running any pickled code, and the model
is rebuilt from the stored config (nanoGPT's `GPTConfig(**checkpoint['model_args'])`): no script
retypes a hyperparameter.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import os
import pickle
from contextlib import contextmanager
from pathlib import Path
from typing import Callable

import torch

from autoencoder import Autoencoder
from config import AMP_CHOICES, AutoencoderConfig, Config, UserError
from dit import DiT


# ------------------------------------------------------------------------------ atomic files

def atomic_write(path: str | Path, write: Callable, text: bool = False, fsync: bool = True) -> None:
    """Call write(f) on a hidden temporary file beside `path`, then rename it over `path`
    (os.replace is atomic). A crash or SIGKILL mid-write leaves the previous file intact, and a
    folder listing that skips hidden files never sees half a file. With fsync the data reaches
    the disk before the rename, so a power cut cannot leave an empty file under the final name;
    fsync=False skips that wait for many small files that can be made again (benchmarks/README.md,
    "Sampling speed", the paragraph after the table)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w" if text else "wb", **({"newline": ""} if text else {})) as f:
        write(f)
        if fsync:
            f.flush()
            os.fsync(f.fileno())
    os.replace(tmp, path)


def save_checkpoint(path: str | Path, state: dict) -> None:
    atomic_write(path, lambda f: torch.save(state, f))


# ------------------------------------------------------------------------------ the training log

def write_log(rows: list[dict], path: str | Path) -> None:
    """log.csv, one row per logged step: its columns are the keys of the rows in order of first
    appearance; a row without a column (the held-out loss is measured less often) leaves it empty."""
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
    with open(path, newline="") as f:
        rows = [{k: int(v) if k in ("step", "epoch") else float(v) for k, v in r.items() if v != ""}
                for r in csv.DictReader(f)]
    return [r for r in rows if up_to_step is None or r["step"] <= up_to_step]


# ------------------------------------------------------------------------------ reading checkpoints

def read_checkpoint(path: str | Path, with_training_state: bool = False) -> dict:
    """torch.load with weights_only=True (tensors and plain types only: a pickle that would run
    code is refused), turning every failure into a one-line UserError that says what to do."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"no checkpoint at {path}: run train.py first or pass --checkpoint")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else ""
        raise UserError(f"{path} is not a plain checkpoint (weights_only loading refused it: "
                        f"{first[:120]}); only load checkpoints written by train.py") from None
    except Exception as e:  # noqa: BLE001 - a damaged file fails in many ways (EOFError,
        # RuntimeError from the zip reader, IndexError from the unpickler, ...): all mean "corrupt"
        raise UserError(f"{path} is corrupt or truncated ({type(e).__name__}): retrain, or "
                        "resume from an intact copy") from None
    # Sampling needs the EMA weights and the config (all that the shipped weights hold); resuming
    # needs the rest of the training state too.
    needed = ["ema", "config"] + (["model", "optimizer", "step", "rng"] if with_training_state else [])
    missing = [k for k in needed if not isinstance(ckpt, dict) or k not in ckpt]
    if missing:
        raise UserError(f"{path} is not a checkpoint of this project (missing {', '.join(missing)})")
    return ckpt


def checkpoint_config(ckpt: dict, path: str | Path) -> Config:
    """The Config stored in a checkpoint, or a UserError if this code cannot read it."""
    try:
        return Config.from_dict(ckpt["config"])
    except (TypeError, KeyError, AttributeError) as e:
        raise UserError(f"{path} has a config this code does not know ({e}): was it written by "
                        "another version of train.py?") from None


def load_weights(module: torch.nn.Module | torch.optim.Optimizer, state: dict,
                 path: str | Path) -> None:
    """load_state_dict, with a UserError when the shapes do not match the stored config."""
    try:
        module.load_state_dict(state)
    except (RuntimeError, ValueError, KeyError) as e:  # optimisers raise ValueError or KeyError
        detail = str(e).strip().splitlines()[-1].strip()[:150]
        raise UserError(f"the weights in {path} do not match its config ({detail}): the file is "
                        "damaged or was edited; retrain it") from None


def load_model(path: str | Path, device: torch.device | str = "cpu",
               use_ema: bool = True) -> tuple[DiT, Config]:
    """Rebuild the DiT from the config inside the checkpoint and load its (EMA) weights. Weights
    stored in half precision (the shipped file, `ship_weights`) are widened to float32."""
    ckpt = read_checkpoint(path)
    cfg = checkpoint_config(ckpt, path)
    model = DiT(cfg.model)
    if not use_ema and "model" not in ckpt:
        raise UserError(f"{path} holds only the EMA weights: sample from those instead")
    load_weights(model, ckpt["ema" if use_ema else "model"], path)  # copies cast to float32
    return model.to(device).eval(), cfg


def load_autoencoder(path: str | Path, cfg: Config,
                     device: torch.device | str = "cpu") -> Autoencoder | None:
    """The autoencoder that decodes a latent model's samples, from the model's checkpoint, in
    eval mode; None for a model of pixels. A latent checkpoint without it, or with weights that
    do not fit its config, is a UserError."""
    if cfg.autoencoder is None:
        return None
    ckpt = read_checkpoint(path)
    if "autoencoder" not in ckpt:
        raise UserError(f"{path} is a latent model but holds no autoencoder to decode its samples: "
                        "it is damaged or was written by another version; retrain it with "
                        "python train.py --preset latent")
    autoencoder = Autoencoder(cfg.autoencoder)
    load_weights(autoencoder, ckpt["autoencoder"], path)
    return autoencoder.to(device).eval()


def save_autoencoder(path: str | Path, autoencoder: Autoencoder, seconds: float) -> None:
    """A finished first stage on its own, for a later latent run to reuse (train.py)."""
    save_checkpoint(path, {"autoencoder": autoencoder.state_dict(),
                           "config": dataclasses.asdict(autoencoder.cfg), "seconds": seconds})


def read_autoencoder(path: str | Path, cfg: AutoencoderConfig) -> tuple[Autoencoder, float]:
    """An autoencoder saved by `save_autoencoder` (or the first stage inside a latent model's
    checkpoint), checked against the config it must have; returns it (eval mode) and the seconds
    its training took (0 when unknown)."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"no autoencoder at {path}: pass an autoencoder.pth of a latent run, or "
                        "leave out --autoencoder to train one")
    try:
        saved = torch.load(path, map_location="cpu", weights_only=True)
        fields = saved["config"]
        if "model" in fields:  # a latent model's checkpoint: its first stage
            fields = fields["autoencoder"]
        saved_cfg = AutoencoderConfig(**fields)
    except Exception as e:  # noqa: BLE001 - corrupt, truncated, or not an autoencoder file
        raise UserError(f"{path} holds no readable autoencoder ({type(e).__name__}): pass the "
                        "autoencoder.pth or model.pth of a run of train.py --preset latent, or "
                        "leave out --autoencoder to train one") from None
    if saved_cfg != cfg:
        differ = ", ".join(f"{k} {v} (not {getattr(cfg, k)})"
                           for k, v in dataclasses.asdict(saved_cfg).items() if getattr(cfg, k) != v)
        raise UserError(f"{path} was trained with other autoencoder settings: {differ}; use one "
                        "trained with this run's settings, or train a new one (--overwrite, "
                        "without --autoencoder)")
    autoencoder = Autoencoder(cfg)
    load_weights(autoencoder, saved["autoencoder"], path)
    return autoencoder.eval(), float(saved.get("seconds", 0.0))


def ship_weights(path: str | Path, out: str | Path, source: str) -> dict:
    """The EMA weights of a training checkpoint in half precision, with its config and step and a
    note of where they came from (`source`: the commit and command), written atomically to `out`:
    what a reader needs to sample, at a quarter of the checkpoint's size (no raw weights, no
    optimiser moments). Returns the dict written."""
    ckpt = read_checkpoint(path, with_training_state=True)
    checkpoint_config(ckpt, path)  # refuse a config this code cannot read
    shipped = {"ema": {k: v.half() if v.is_floating_point() else v for k, v in ckpt["ema"].items()},
               "config": ckpt["config"], "step": ckpt["step"], "source": source}
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


# ------------------------------------------------------------------------------ precision

def use_bf16(amp: str, device: torch.device) -> bool:
    """The project's one bf16 policy, for training and sampling alike: whether the network runs
    under bf16 autocast. "bf16" and "off" (fp32) force it; "auto" is on for CUDA, where bf16
    tensor cores run many times faster than fp32, and off on every CPU: a CPU without bf16 matrix
    units (AMX) trains and samples slower in bf16 than in fp32 (benchmarks/README.md, "Where bf16
    loses its time on a CPU"); whether another CPU gains is a matter of measuring it (`--amp
    bf16` and the benchmark scripts). The samplers' own arithmetic stays in float64 either way."""
    if amp not in AMP_CHOICES:
        raise UserError(f"--amp must be one of {', '.join(AMP_CHOICES)}, got {amp!r}")
    if amp != "auto":
        return amp == "bf16"
    return device.type == "cuda"


# ------------------------------------------------------------------------------ memory errors

def is_out_of_memory(e: BaseException) -> bool:
    """True for CUDA's OutOfMemoryError and for the CPU allocator's RuntimeError."""
    return isinstance(e, torch.OutOfMemoryError) or (
        isinstance(e, RuntimeError) and ("can't allocate memory" in str(e)
                                         or "out of memory" in str(e).lower()))


@contextmanager
def out_of_memory_as_error(message: str):
    """Turn running out of memory inside the block into a one-line UserError(message), which
    should say what to make smaller; every other error passes through unchanged."""
    try:
        yield
    except (torch.OutOfMemoryError, RuntimeError) as e:
        if not is_out_of_memory(e):
            raise
        raise UserError(message) from None
