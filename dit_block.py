"""The DiT block with adaLN-Zero conditioning (Peebles & Xie 2023, section 3.2 and Figure 3).

A DiT block is a pre-norm Transformer block whose LayerNorms have no learned scale and shift of
their own. Instead, the conditioning vector c (timestep embedding + label embedding) is mapped by
one linear layer to six vectors per image:

    shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = Linear(SiLU(c))

and the block computes

    x = x + gate_msa * Attention(modulate(LayerNorm(x), shift_msa, scale_msa))
    x = x + gate_mlp * MLP(modulate(LayerNorm(x), shift_mlp, scale_mlp))

with modulate(h, shift, scale) = h * (1 + scale) + shift. "Zero" means that linear layer starts at
zero (see `DiT.initialize_weights` in dit.py): every gate is 0, so each block starts as the identity
and the network is easy to optimise at first; the paper found this beat cross-attention and
in-context conditioning (Figure 5).

Letters used in shape comments: B batch, N tokens, D width, NH heads, Dh = D / NH head width.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """Per-image affine modulation of every token: (B, N, D), (B, D), (B, D) -> (B, N, D)."""
    return x * (1 + scale.unsqueeze(1)) + shift.unsqueeze(1)


class Attention(nn.Module):
    """Multi-head self-attention with one fused QKV projection.

    For each head:  Attention(Q, K, V) = softmax(Q K^T / sqrt(Dh)) V   (Vaswani et al. 2017, Eq. 1)
    The scale is 1 / sqrt(head width Dh), not of the width D or the sequence length N: it keeps the
    logits' variance near 1 when q and k have unit-variance entries.
    """

    def __init__(self, hidden_size: int, num_heads: int):
        super().__init__()
        assert hidden_size % num_heads == 0, "hidden_size must be divisible by num_heads"
        self.num_heads = num_heads
        self.head_dim = hidden_size // num_heads
        self.qkv = nn.Linear(hidden_size, 3 * hidden_size)  # one matmul instead of three
        self.proj = nn.Linear(hidden_size, hidden_size)

    def heads(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """q, k, v of every head from one fused projection: (B, N, D) -> three (B, NH, N, Dh)."""
        B, N, D = x.shape  # batch, tokens, width
        qkv = self.qkv(x).reshape(B, N, 3, self.num_heads, self.head_dim)  # (B, N, 3, NH, Dh)
        return qkv.permute(2, 0, 3, 1, 4).unbind(0)  # (3, B, NH, N, Dh) -> each (B, NH, N, Dh)

    def weights(self, x: torch.Tensor) -> torch.Tensor:
        """The attention weights softmax(q k^T / sqrt(Dh)), written out: (B, NH, N, N), row i
        being where token i looks (each row sums to 1). For looking inside the model; `forward`
        computes the same weighting with a fused kernel that never stores it."""
        q, k, _ = self.heads(x)
        return torch.softmax(q @ k.transpose(-2, -1) / self.head_dim**0.5, dim=-1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, N, D = x.shape  # batch, tokens, width
        q, k, v = self.heads(x)  # each (B, NH, N, Dh)
        # softmax(q k^T / sqrt(Dh)) v; the default scale of scaled_dot_product_attention is
        # exactly 1 / sqrt(q.size(-1)) = 1 / sqrt(Dh). It picks a fused kernel where one exists.
        if q.device.type == "cpu" and q.dtype == torch.bfloat16:
            # Under bf16 autocast on a CPU, the fused kernel's bf16 backward took half the training
            # step (benchmarks/README.md, "Where bf16 loses its time on a CPU"). With 16 tokens
            # its share of the FLOPs is small, so it runs in fp32 (autocast is turned off here,
            # since it would cast the fp32 inputs back to bf16); only its result returns to bf16.
            with torch.autocast("cpu", enabled=False):
                out = F.scaled_dot_product_attention(q.float(), k.float(), v.float())
            out = out.to(q.dtype)
        else:
            out = F.scaled_dot_product_attention(q, k, v)  # (B, NH, N, Dh)
        out = out.transpose(1, 2).reshape(B, N, D)  # (B, N, NH * Dh) = (B, N, D)
        return self.proj(out)


class Mlp(nn.Module):
    """Token-wise feed-forward network: Linear -> GELU -> Linear, hidden width mlp_ratio * D."""

    def __init__(self, hidden_size: int, mlp_ratio: float):
        super().__init__()
        mlp_hidden = int(hidden_size * mlp_ratio)
        self.fc1 = nn.Linear(hidden_size, mlp_hidden)
        self.act = nn.GELU(approximate="tanh")  # DiT's choice: the tanh approximation of GELU,
        #                                          practically the same function
        self.fc2 = nn.Linear(mlp_hidden, hidden_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class DiTBlock(nn.Module):
    """One adaLN-Zero Transformer block. Its weights are set by `DiT.initialize_weights`."""

    def __init__(self, hidden_size: int, num_heads: int, mlp_ratio: float = 4.0):
        super().__init__()
        # No affine parameters: scale and shift come from the conditioning (adaLN) instead.
        # eps = 1e-6 as in DiT.
        self.norm1 = nn.LayerNorm(hidden_size, elementwise_affine=False, eps=1e-6)
        self.attn = Attention(hidden_size, num_heads)
        self.norm2 = nn.LayerNorm(hidden_size, elementwise_affine=False, eps=1e-6)
        self.mlp = Mlp(hidden_size, mlp_ratio)
        # One layer makes all six modulation vectors: shift, scale, gate for attention and MLP.
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(hidden_size, 6 * hidden_size))

    def gates(self, c: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """gate_msa and gate_mlp for conditioning c, each (B, D): how much of the attention and
        of the MLP branch the block adds to its input (both 0 at initialisation)."""
        chunks = self.adaLN_modulation(c).chunk(6, dim=1)
        return chunks[2], chunks[5]

    def attention_weights(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        """The attention weights of this block for tokens x and conditioning c, (B, NH, N, N):
        the attention of `forward`, on the same normalised and modulated tokens."""
        shift_msa, scale_msa = self.adaLN_modulation(c).chunk(6, dim=1)[:2]
        return self.attn.weights(modulate(self.norm1(x), shift_msa, scale_msa))

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        # x: (B, N, D) tokens; c: (B, D) conditioning (timestep + label embedding)
        shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = (
            self.adaLN_modulation(c).chunk(6, dim=1)  # six times (B, D)
        )
        x = x + gate_msa.unsqueeze(1) * self.attn(modulate(self.norm1(x), shift_msa, scale_msa))
        x = x + gate_mlp.unsqueeze(1) * self.mlp(modulate(self.norm2(x), shift_mlp, scale_mlp))
        return x


if __name__ == "__main__":
    block = DiTBlock(hidden_size=64, num_heads=4)
    print(block(torch.randn(2, 196, 64), torch.randn(2, 64)).shape)  # torch.Size([2, 196, 64])
