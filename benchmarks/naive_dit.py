"""A deliberately straightforward DiT and data pipeline, the reference point for the benchmark.

Same model size and maths as dit.py, written the way a first implementation often is:
  * separate Q, K and V projections, three matmuls instead of one;
  * attention written out as softmax(Q K^T / sqrt(d)) V, materialising the N x N matrix, instead
    of F.scaled_dot_product_attention's fused kernel;
  * a torch DataLoader over PIL images with ToTensor and Normalize per sample, as
    torchvision.datasets.MNIST serves them, instead of batches cut from one in-memory tensor.
Used only by benchmarks/train_throughput.py --naive.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn

from dit import DiT


class NaiveAttention(nn.Module):
    def __init__(self, hidden_size: int, num_heads: int):
        super().__init__()
        self.num_heads, self.head_dim = num_heads, hidden_size // num_heads
        self.q = nn.Linear(hidden_size, hidden_size)
        self.k = nn.Linear(hidden_size, hidden_size)
        self.v = nn.Linear(hidden_size, hidden_size)
        self.proj = nn.Linear(hidden_size, hidden_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, N, D = x.shape  # batch, tokens, width
        NH, Dh = self.num_heads, self.head_dim
        q = self.q(x).reshape(B, N, NH, Dh).transpose(1, 2)  # (B, NH, N, Dh)
        k = self.k(x).reshape(B, N, NH, Dh).transpose(1, 2)
        v = self.v(x).reshape(B, N, NH, Dh).transpose(1, 2)
        attn = torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(Dh), dim=-1)  # (B, NH, N, N)
        return self.proj((attn @ v).transpose(1, 2).reshape(B, N, D))


class NaiveDiT(DiT):
    """dit.DiT with every block's attention replaced by NaiveAttention."""

    def __init__(self, config):
        super().__init__(config)
        for block in self.blocks:
            block.attn = NaiveAttention(config.hidden_size, config.num_heads)
        self.initialize_weights()


def naive_batches(images: torch.Tensor, labels: torch.Tensor, batch_size: int):
    """Endless (x, y) batches through a DataLoader that builds a PIL image per sample."""
    from PIL import Image
    from torch.utils.data import DataLoader, Dataset
    from torchvision import transforms

    class PILDigits(Dataset):
        transform = transforms.Compose([transforms.ToTensor(), transforms.Normalize((0.5,), (0.5,))])

        def __len__(self):
            return len(images)

        def __getitem__(self, i):
            return self.transform(Image.fromarray(images[i].numpy())), int(labels[i])

    loader = DataLoader(PILDigits(), batch_size=batch_size, shuffle=True, drop_last=True)
    while True:
        yield from loader
