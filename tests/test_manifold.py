"""Tests of support/manifold.py, improved precision and recall: against a brute-force computation
written out here, and on sets whose answer is known (the same distribution; half the classes
missing; points off the data)."""

import numpy as np
import pytest
import torch

from support.manifold import (knn_radii, precision_recall, precision_recall_in_groups,
                              real_groups)


def brute_force(real: np.ndarray, fake: np.ndarray, k: int) -> tuple[float, float]:
    """The paper's definition with plain loops: the k-th nearest other point of each point, then
    for each point of one set whether any ball of the other set holds it."""
    def radii(x):
        return [sorted(np.linalg.norm(x[i] - x[j]) for j in range(len(x)) if j != i)[k - 1]
                for i in range(len(x))]

    def share_inside(points, centres, r):
        return np.mean([any(np.linalg.norm(p - c) <= rc for c, rc in zip(centres, r))
                        for p in points])

    return share_inside(fake, real, radii(real)), share_inside(real, fake, radii(fake))


def clusters(n_per: int, classes: list[int], seed: int, spread: float = 1.0) -> np.ndarray:
    """Points around one centre per class (10 classes, 8 dimensions): a stand-in for digits."""
    rng = np.random.default_rng(seed)
    centres = np.random.default_rng(0).standard_normal((10, 8)) * 6
    return np.concatenate([centres[c] + spread * rng.standard_normal((n_per, 8)) for c in classes])


@pytest.mark.parametrize("k", [1, 3])
def test_agrees_with_brute_force_on_a_small_case(k):
    rng = np.random.default_rng(1)
    real, fake = rng.standard_normal((40, 5)), rng.standard_normal((30, 5)) * 1.3 + 0.4
    got = precision_recall(real, fake, k=k)
    assert got == pytest.approx(brute_force(real, fake, k), abs=1e-12)
    assert 0 < got[0] < 1 and 0 < got[1] < 1  # a case where neither is trivially 0 or 1


def test_radii_skip_the_point_itself_and_work_in_chunks():
    x = torch.tensor([[0.0], [1.0], [3.0], [6.0]], dtype=torch.float64)
    assert knn_radii(x, k=1).tolist() == [1.0, 1.0, 2.0, 3.0]
    assert knn_radii(x, k=2, chunk=3).tolist() == [3.0, 2.0, 3.0, 5.0]
    with pytest.raises(ValueError, match="no 3-th nearest"):
        knn_radii(x[:3], k=3)


def test_balls_are_closed():
    """The paper's balls include their boundary: a generated point exactly k-th-neighbour
    distance from a real point is inside (distances of whole numbers are exact)."""
    real = np.array([[0.0], [1.0], [2.0], [3.0], [10.0]])
    fake = np.array([[-1.0], [20.0]])  # -1 lies on the boundary of 0's ball of radius 1
    assert precision_recall(real, fake, k=1) == (0.5, 1.0)


def test_features_are_compared_in_float64():
    """Features far from the origin (as a network's can be) and close together: the answer must
    not change when every feature is shifted by a million, which float32's 7 digits would blur."""
    real = np.array([[0.0], [1.0], [2.0], [3.0], [10.0]])
    fake = np.array([[-1.5], [20.0], [2.5], [31.0]])
    want = precision_recall(real, fake, k=1)
    assert want == (0.25, 1.0)
    shifted = precision_recall(1e6 + 1e-2 * real, 1e6 + 1e-2 * fake, k=1)
    assert shifted == want


def test_the_same_distribution_scores_high_on_both():
    real, fake = clusters(100, list(range(10)), seed=1), clusters(100, list(range(10)), seed=2)
    precision, recall = precision_recall(real, fake)
    assert precision > 0.85 and recall > 0.85


def test_half_the_classes_missing_loses_recall_not_precision():
    """A generator that draws only digits 0-4, each well: what it draws is real (precision stays),
    but half of what is real it never draws (recall halves)."""
    real = clusters(100, list(range(10)), seed=1)
    full = precision_recall(real, clusters(100, list(range(10)), seed=2))
    half = precision_recall(real, clusters(200, list(range(5)), seed=2))
    assert half[0] == pytest.approx(full[0], abs=0.06)
    assert half[1] < 0.55 < full[1]


def test_recall_per_label_finds_the_missing_classes_and_averages_to_the_recall():
    """Split by the real points' labels, the recall of the half-missing generator above is near 0
    for the classes it never draws and high for the others, and each share is the brute-force one
    of its class, with unequal counts per class. (300 real points against 300 generated: one
    group, all of them, so precision and recall are the paper's.)"""
    real = clusters(30, list(range(10)), seed=1)
    labels = torch.arange(10).repeat_interleave(30)
    labels[:45] = torch.tensor([0, 1, 2] * 15)  # unequal counts: 15 zeros, 30 ones, 45 twos
    fake = clusters(60, list(range(5)), seed=2)
    precision, recall, split = precision_recall_in_groups(real, fake, labels)
    assert (precision, recall) == pytest.approx(precision_recall(real, fake), abs=1e-12)
    assert list(split) == list(range(10))
    assert all(split[c] > 0.7 for c in range(5)) and all(split[c] < 0.1 for c in range(5, 10))
    for c in (0, 2, 7):
        in_class = (labels == c).numpy()
        covered = brute_force(fake, real[in_class], k=3)[0]  # real points of c in fake's balls
        assert split[c] == pytest.approx(covered, abs=1e-12)


def test_real_groups_cut_a_shuffled_set_into_equal_groups():
    groups = real_groups(23, 5)
    assert [len(g) for g in groups] == [5, 5, 5, 5]  # 23 % 5 = 3 left out
    used = torch.cat(groups)
    assert len(set(used.tolist())) == 20 and used.max() < 23
    assert used.tolist() != sorted(used.tolist())  # shuffled, not the first 20
    assert all(torch.equal(a, b) for a, b in zip(groups, real_groups(23, 5)))  # and seeded
    assert [g.tolist() for g in real_groups(4, 5)] == [[0, 1, 2, 3]]  # fewer real than generated


def test_groups_agree_with_brute_force_on_each_group():
    """Precision is the mean of each group's, recall the share of every grouped real point, per
    label too; each against the brute-force computation of that group."""
    rng = np.random.default_rng(4)
    real, fake = rng.standard_normal((50, 4)), rng.standard_normal((12, 4)) * 1.2 + 0.3
    labels = torch.as_tensor(rng.integers(0, 3, 50))
    precision, recall, split = precision_recall_in_groups(real, fake, labels)
    groups = real_groups(50, 12)
    assert len(groups) == 4
    each = [brute_force(real[g.numpy()], fake, k=3) for g in groups]
    assert precision == pytest.approx(np.mean([p for p, _ in each]), abs=1e-12)
    assert recall == pytest.approx(np.mean([r for _, r in each]), abs=1e-12)
    used = torch.cat(groups).numpy()
    for c in range(3):
        of_c = used[labels[used].numpy() == c]
        assert split[c] == pytest.approx(brute_force(fake, real[of_c], k=3)[0], abs=1e-12)


def test_a_real_set_in_label_order_is_compared_with_every_digit():
    """Real points stored class by class (all the 0s first, as inference.py names its files):
    against 200 generated points of every class, the groups must hold every class too, so that
    precision is high; the first 200 real points alone hold only classes 0 and 1."""
    real = clusters(100, list(range(10)), seed=1)  # in class order
    fake = clusters(20, list(range(10)), seed=2)
    precision, recall, _ = precision_recall_in_groups(real, fake)
    assert precision > 0.8 and recall > 0.6
    assert precision_recall(real[:200], fake)[0] < 0.3  # what comparing with the first N gave


def test_points_off_the_data_lose_precision():
    """Blurred noise: points spread far wider than the data (and between its clusters) mostly fall
    outside the real manifold."""
    real = clusters(100, list(range(10)), seed=1)
    noise = np.random.default_rng(3).standard_normal((1000, 8)) * 12
    precision, _ = precision_recall(real, noise)
    assert precision < 0.3 < precision_recall(real, clusters(100, list(range(10)), seed=2))[0]


def test_symmetric_roles():
    """Precision of fake against real is recall of real against fake, and the other way round."""
    a, b = clusters(30, [0, 1, 2], seed=4), clusters(30, [1, 2, 3], seed=5)
    p, r = precision_recall(a, b)
    assert precision_recall(b, a) == pytest.approx((r, p))
