"""Improved precision and recall (Kynkaanniemi et al. 2019, arXiv:1904.06991): how much of what a
generator draws looks real, and how much of what is real it can draw.

A Frechet distance folds two questions into one number: are the samples good (fidelity), and do
they cover every way a digit can look (variety)? A model that draws only the commonest shapes of
each digit, well, can score a fair FD and still miss half of what real digits look like. These
two numbers answer the questions apart, in the same feature space as MNIST-FD:

  * Each set of features is turned into a manifold: the union of balls around each of its points,
    each ball's radius the distance to that point's k-th nearest neighbour in its own set
    (section 3 of the paper, k = 3 as there).
  * precision = the share of generated points that fall inside the real manifold;
    recall    = the share of real points that fall inside the generated manifold.

A set of blurry or broken digits loses precision; a set that draws only some digits, or only one
way of writing each, loses recall. Both are estimated from samples: compare them at equal numbers
of images, and with what real digits score against real digits (benchmarks/fid_floor.py).
"""

from __future__ import annotations

import numpy as np
import torch

K = 3  # the paper's k: small enough to follow the data's shape, large enough not to be noise


def knn_radii(features: torch.Tensor, k: int = K, chunk: int = 1000) -> torch.Tensor:
    """The distance of each point (N, d) to its k-th nearest neighbour among the others: (N,).
    Computed a chunk of rows at a time, so that 10,000 points need no 10,000 x 10,000 matrix."""
    if len(features) <= k:
        raise ValueError(f"{len(features)} points have no {k}-th nearest neighbour among the "
                         "others")
    radii = []
    for rows in features.split(chunk):
        d = torch.cdist(rows, features)  # (chunk, N); each row's own point is at distance 0
        # the (k+1)-th smallest distance skips the point itself
        radii.append(d.kthvalue(k + 1, dim=1).values)
    return torch.cat(radii)


def inside(points: torch.Tensor, centres: torch.Tensor, radii: torch.Tensor,
           chunk: int = 1000) -> torch.Tensor:
    """Whether each of `points` (M, d) lies inside at least one ball (centres (N, d), radii
    (N,)): (M,) booleans."""
    return torch.cat([(torch.cdist(rows, centres) <= radii[None, :]).any(dim=1)
                      for rows in points.split(chunk)])


def coverage(points: torch.Tensor, centres: torch.Tensor, radii: torch.Tensor,
             chunk: int = 1000) -> float:
    """The share of `points` (M, d) inside at least one ball (centres (N, d), radii (N,))."""
    return inside(points, centres, radii, chunk).double().mean().item()


def as_float64(features: np.ndarray | torch.Tensor) -> torch.Tensor:
    """Features as a float64 tensor: distances between features far from the origin and close
    together need its 16 digits (float32's 7 would blur them)."""
    return torch.as_tensor(np.asarray(features), dtype=torch.float64)


def precision_recall(real: np.ndarray | torch.Tensor, fake: np.ndarray | torch.Tensor,
                     k: int = K) -> tuple[float, float]:
    """(precision, recall) of fake features (M, d) against real features (N, d), in float64."""
    real, fake = as_float64(real), as_float64(fake)
    precision = coverage(fake, real, knn_radii(real, k))
    recall = coverage(real, fake, knn_radii(fake, k))
    return precision, recall


def real_groups(num_real: int, num: int, seed: int = 0) -> list[torch.Tensor]:
    """Indices that cut a real set of num_real points into groups of num, shuffled with a fixed
    seed (the num_real % num left over are not used); one group of all of them when num_real <=
    num. Shuffled, so that a set stored in label order (all 0s first) gives every group some of
    every digit, and seeded, so that the same sets score the same (with the same NumPy)."""
    if num_real <= num:
        return [torch.arange(num_real)]
    order = torch.as_tensor(np.random.default_rng(seed).permutation(num_real))
    return list(order[: num_real // num * num].split(num))


def precision_recall_in_groups(real: np.ndarray | torch.Tensor, fake: np.ndarray | torch.Tensor,
                               real_labels: torch.Tensor | None = None,
                               k: int = K) -> tuple[float, float, dict[int, float] | None]:
    """(precision, recall, recall per label) of fake features (M, d) against a real set larger
    than it, such as the 10,000 MNIST test digits against 1,000 generated ones. The paper compares
    sets of equal size (a ball's radius shrinks as its set grows denser), so the real set is cut
    into groups of M (real_groups) and each group is compared with the whole generated set:
      precision = the mean over the groups of the share of generated points in the group's
                  manifold;
      recall    = the share of the grouped real points in the generated manifold (one manifold
                  for every group, and groups of equal size: the mean of the groups' recalls); with
                  real_labels (N,) the same share for each label's real points: which digits the
                  generator lacks ways of writing. A label absent from the groups has no entry.
    Every group, not one: against the MNIST test set at 1,000 generated digits, one group's
    precision and recall vary by about 0.01 with the group drawn, the mean over all ten groups'
    by 0.003 and 0 (benchmarks/README.md, "Precision and recall against every test digit")."""
    real, fake = as_float64(real), as_float64(fake)
    groups = real_groups(len(real), len(fake))
    precision = float(np.mean([coverage(fake, real[g], knn_radii(real[g], k)) for g in groups]))
    used = torch.cat(groups)
    covered = inside(real[used], fake, knn_radii(fake, k))
    per_label = None
    if real_labels is not None:
        labels = torch.as_tensor(real_labels).cpu()[used]
        per_label = {c: covered[labels == c].double().mean().item()
                     for c in labels.unique().tolist()}
    return precision, covered.double().mean().item(), per_label
