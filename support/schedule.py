"""The one learning-rate decay of the project: a half cosine, used by the DiT (train.py), the
autoencoder and the MNIST classifier."""

from __future__ import annotations

import math


def half_cosine(done: float) -> float:
    """0.5 (1 + cos(pi * done)): 1 at the start (done = 0), falling slowly, then fast, then
    slowly again to 0 at the end (done = 1). Multiplied into the peak learning rate."""
    return 0.5 * (1 + math.cos(math.pi * done))
