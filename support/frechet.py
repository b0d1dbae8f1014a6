"""The Frechet distance between two sets of features: what FID and MNIST-FD share.

Each set's features (N, d) are summarised by a Gaussian, their mean and covariance
(`feature_statistics`), and two Gaussians are compared by the Frechet distance (Dowson & Landau
1982), computed by pytorch-fid's function (pytorch-fid ports the reference TensorFlow FID code
and reproduces its numbers closely):

    d^2 = ||mu1 - mu2||^2 + Tr(S1 + S2 - 2 (S1 S2)^(1/2))

The covariance of d-dim features from n images has rank at most n - 1: with fewer than d + 1
images the estimate is singular, blind to whole directions of the features, and the distance
computed from it is not the one between the two sets (`check_enough_images`).
"""

from __future__ import annotations

import warnings

import numpy as np

from support.cli import UserError


def feature_statistics(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean (d,) and covariance (d, d) of features (N, d), as pytorch-fid's
    calculate_activation_statistics computes them (unbiased covariance, float64)."""
    features = np.asarray(features, dtype=np.float64)
    return features.mean(axis=0), np.cov(features, rowvar=False)


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray,
                     sigma2: np.ndarray) -> float:
    """||mu1 - mu2||^2 + Tr(S1 + S2 - 2 (S1 S2)^(1/2)), by pytorch-fid's
    calculate_frechet_distance."""
    from pytorch_fid.fid_score import calculate_frechet_distance

    with warnings.catch_warnings():
        # pytorch-fid 0.3.0 passes sqrtm(disp=False), deprecated in SciPy 1.16 and removed in
        # 1.18; requirements.txt pins scipy<1.18, so the warning tells the reader nothing new.
        warnings.filterwarnings("ignore", message=".*disp.*", category=DeprecationWarning)
        try:
            return float(calculate_frechet_distance(mu1, sigma1, mu2, sigma2))
        except ValueError as e:  # the matrix square root came out complex: degenerate features
            raise UserError(f"the Frechet distance is undefined here ({e}): the features hardly "
                            "vary, e.g. all generated images are nearly the same") from None


def check_enough_images(count: int, dims: int, where: str, metric: str, hint: str) -> None:
    """The covariance of d-dim features from n images has rank at most n - 1: with n < d + 1 it
    is singular, (S1 S2)^(1/2) is ill-defined and the distance means nothing."""
    if count < dims + 1:
        raise UserError(f"{where}: {count} images, but the {metric} with {dims}-dim features "
                        f"needs at least {dims + 1}: the covariance of {dims}-dim features from "
                        f"fewer than {dims + 1} images is singular; {hint}")
