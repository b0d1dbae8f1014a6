"""Shared helpers for the tests: a tiny MNIST written in the original IDX format, model stand-ins,
and checkpoints rebuilt as the scripts rebuild them. The model a checkpoint samples with and its
decoder come from benchmarks/common.py (on pytest's path, pyproject.toml), which loads them for
the benchmarks the same way: one loader for both."""

import struct
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch

from dataset import resolve_data_dir

@contextmanager
def optimizer_step_rates():
    """The learning rate of every optimiser step taken inside the block (the first parameter
    group's), read as the step is taken: what a training loop really ran at."""
    from torch.optim.optimizer import register_optimizer_step_pre_hook

    rates = []
    hook = register_optimizer_step_pre_hook(
        lambda optimizer, args, kwargs: rates.append(optimizer.param_groups[0]["lr"]))
    try:
        yield rates
    finally:
        hook.remove()


# For the tests that read the real MNIST (the data folder, or $DIT_DATA_DIR, holding MNIST/raw):
# skipped where it is missing, as on a fresh checkout; .ci/run copies it there, so CI runs them.
needs_real_mnist = pytest.mark.skipif(
    not (resolve_data_dir() / "MNIST" / "raw").exists(),
    reason=f"real MNIST not in {resolve_data_dir() / 'MNIST' / 'raw'} (.ci/run copies it there)")


def write_idx(path: Path, array: torch.Tensor) -> None:
    """Write a uint8 tensor in the IDX format of the MNIST files (big-endian header, raw bytes)."""
    magic = 0x0800 + array.dim()  # 0x08 = unsigned byte, then the number of dimensions
    header = struct.pack(">I", magic) + b"".join(struct.pack(">I", n) for n in array.shape)
    path.write_bytes(header + array.contiguous().numpy().tobytes())


def write_tiny_mnist(root: Path, n_train: int = 64, n_test: int = 32, seed: int = 0) -> Path:
    """Write a fake MNIST (digit k = a bright k-th column band plus noise) into root/MNIST/raw."""
    g = torch.Generator().manual_seed(seed)
    raw = Path(root) / "MNIST" / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    for prefix, n in [("train", n_train), ("t10k", n_test)]:
        labels = torch.arange(n) % 10
        images = torch.randint(0, 40, (n, 28, 28), generator=g)
        for i, k in enumerate(labels.tolist()):
            images[i, 4:24, 2 + 2 * k : 4 + 2 * k] = 255
        write_idx(raw / f"{prefix}-images-idx3-ubyte", images.to(torch.uint8))
        write_idx(raw / f"{prefix}-labels-idx1-ubyte", labels.to(torch.uint8))
    return Path(root)


def linear_schedule(T: int = 1000, beta_start: float = 1e-4, beta_end: float = 0.02):
    """(betas, alphas, alpha-bar) of DDPM's linear schedule in float64, computed here from the
    paper (section 4) and not taken from diffusion.py, for the tests that check its formulas."""
    betas = torch.linspace(beta_start, beta_end, T, dtype=torch.float64)
    alphas = 1 - betas
    return betas, alphas, torch.cumprod(alphas, dim=0)


class SmoothEps:
    """A "model" whose noise prediction depends on x and t (not on y): a fixed smooth function,
    so that multistep formulas combine genuinely different predictions."""

    def forward_with_cfg(self, x, t, y, cfg_scale):
        return torch.tanh(0.7 * x + 0.001 * t.to(x.dtype).reshape(-1, 1, 1, 1)) * 0.9


class X0Oracle:
    """A "model" that knows the clean image x0 and returns the exact noise for any x_t."""

    def __init__(self, diffusion, x0):
        self.diffusion, self.x0 = diffusion, x0

    def forward_with_cfg(self, x, t, y, cfg_scale):
        return self.diffusion.predict_eps_from_x0(x, t, self.x0)


def record_calls(monkeypatch, module, name: str, keep=lambda args, out: args[0]) -> list:
    """Replace module.name by a wrapper that calls the real function and appends keep(args, out)
    to the list returned (by default the first argument: the model a sampler was given)."""
    calls, real = [], getattr(module, name)

    def recording(*args, **kwargs):
        out = real(*args, **kwargs)
        calls.append(keep(args, out))
        return out

    monkeypatch.setattr(module, name, recording)
    return calls


def load_model(path, device="cpu", use_ema=True):
    """(DiT, Config) rebuilt from a checkpoint as inference.py rebuilds it: the stored config,
    then the EMA (or with use_ema=False the raw) weights."""
    from config import Config
    from dit import DiT
    from support.checkpoint import load_weights, read_checkpoint

    checkpoint = read_checkpoint(path, with_training_state=not use_ema)
    cfg = Config.from_dict(checkpoint["config"], source=path)
    model = load_weights(DiT(cfg.model), checkpoint["ema" if use_ema else "model"], path)
    return model.to(device).eval(), cfg


def train_config(*flags):
    """The Config that train.py builds from these command-line flags."""
    import train
    from config import PRESETS
    from support.cli import config_from_args

    return config_from_args(train.parse_args(list(flags)), PRESETS)
