"""Sinusoidal timestep embedding followed by a two-layer MLP.

The diffusion timestep t (an integer in [0, T)) is turned into a vector the network can use, as in
the Transformer's position encoding (Vaswani et al. 2017, section 3.5) and DiT's `TimestepEmbedder`
(Peebles & Xie 2023, section 3.2). For frequency dim F = 2 * half:

    freq_i = max_period ** (-i / half),             i = 0 .. half - 1
    emb(t) = [cos(t freq_0), ..., cos(t freq_{half-1}), sin(t freq_0), ..., sin(t freq_{half-1})]

Low i gives fast-changing features (neighbouring t differ), high i slow ones (far-apart t differ),
so every t gets a distinct, smooth code. An MLP then maps it to the model width D.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal embedding of timesteps t, shape (B,) -> (B, dim). `dim` must be even."""
    if dim % 2 != 0:
        raise ValueError(f"embedding dim must be even, got {dim}")
    half = dim // 2
    i = torch.arange(half, dtype=torch.float32, device=t.device)
    freqs = torch.exp(-math.log(max_period) * i / half)  # max_period ** (-i / half), (half,)
    args = t.float()[:, None] * freqs[None, :]  # (B, half)
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)  # (B, dim)


FREQUENCY_DIM = 256  # as in DiT: more frequencies than T = 1000 steps need is harmless


class TimestepEmbedder(nn.Module):
    """t -> sinusoidal features (frequency_dim) -> Linear -> SiLU -> Linear -> (B, hidden_size)."""

    def __init__(self, hidden_size: int, frequency_dim: int = FREQUENCY_DIM):
        super().__init__()
        self.frequency_dim = frequency_dim
        self.mlp = nn.Sequential(
            nn.Linear(frequency_dim, hidden_size),
            nn.SiLU(),
            nn.Linear(hidden_size, hidden_size),
        )

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        return self.mlp(timestep_embedding(t, self.frequency_dim))


if __name__ == "__main__":
    emb = TimestepEmbedder(hidden_size=64)
    print(emb(torch.tensor([0, 500, 999])).shape)  # torch.Size([3, 64])
