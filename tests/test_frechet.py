"""Tests of support/frechet.py: the Frechet distance against a direct formula and known cases,
the feature statistics, and the refusal of too few images for the features."""

import numpy as np
import pytest
from scipy import linalg

from support import frechet as fr
from support.cli import UserError


def random_gaussian(d: int, seed: int):
    rng = np.random.default_rng(seed)
    a = rng.standard_normal((d, d))
    return rng.standard_normal(d), a @ a.T / d + 0.1 * np.eye(d)  # mean, SPD covariance


def test_frechet_distance_of_a_gaussian_with_itself_is_zero():
    mu, sigma = random_gaussian(20, seed=0)
    assert abs(fr.frechet_distance(mu, sigma, mu, sigma)) < 1e-8


def test_equal_covariances_give_the_squared_distance_of_the_means():
    mu1, sigma = random_gaussian(20, seed=1)
    mu2 = mu1 + np.arange(20) / 10
    assert fr.frechet_distance(mu1, sigma, mu2, sigma) == pytest.approx(np.sum((mu1 - mu2) ** 2),
                                                                         rel=1e-6)


def test_frechet_distance_matches_the_formula_with_scipy_sqrtm():
    mu1, s1 = random_gaussian(30, seed=2)
    mu2, s2 = random_gaussian(30, seed=3)
    direct = np.sum((mu1 - mu2) ** 2) + np.trace(s1 + s2 - 2 * linalg.sqrtm(s1 @ s2).real)
    assert fr.frechet_distance(mu1, s1, mu2, s2) == pytest.approx(direct, rel=1e-8)


def test_feature_statistics_are_the_mean_and_unbiased_covariance():
    x = np.random.default_rng(4).standard_normal((50, 6))
    mu, sigma = fr.feature_statistics(x)
    centred = x - x.mean(axis=0)
    assert np.allclose(mu, x.mean(axis=0))
    assert np.allclose(sigma, centred.T @ centred / (len(x) - 1))


def test_feature_statistics_are_float64():
    """pytorch-fid's statistics are float64: 2^24 + 1 is the first integer float32 rounds."""
    mu, sigma = fr.feature_statistics(np.full((3, 1), 16777217.0, dtype=np.float64))
    assert mu.dtype == np.float64 and float(mu[0]) == 16777217.0
    mu, _ = fr.feature_statistics(np.array([[1.0], [2.0]], dtype=np.float32))
    assert mu.dtype == np.float64


def test_a_complex_square_root_is_a_one_line_error():
    """When S1 S2 has a negative eigenvalue (as rounding leaves it for features that hardly vary)
    its square root is complex and the distance undefined: one line that says why, not a
    traceback from the library."""
    with pytest.raises(UserError, match="Frechet distance is undefined") as e:
        fr.frechet_distance(np.zeros(2), np.diag([1.0, -1.0]), np.zeros(2), np.eye(2))
    assert "\n" not in str(e.value)


def test_too_few_images_for_the_feature_size_is_refused():
    fr.check_enough_images(129, 128, "x", "MNIST-FD", "more")
    with pytest.raises(UserError, match=r"128 images.*at least 129.*singular"):
        fr.check_enough_images(128, 128, "x", "MNIST-FD", "more")
