"""Tests of support/mnist_classifier.py: trained once on a tiny fake MNIST, kept atomically, loaded with
weights_only, and a damaged file is a one-line error; its input, its features and the scores
mnist_scores makes of them."""

import numpy as np
import pytest
import torch

import support.checkpoint
import support.mnist_classifier as mc
from support.cli import UserError
from support.frechet import feature_statistics
from dataset import load_mnist, to_model_range
from helpers import optimizer_step_rates, write_tiny_mnist


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A tiny fake MNIST with its classifier already trained and kept (a few steps: seconds)."""
    root = write_tiny_mnist(tmp_path_factory.mktemp("tiny"), n_train=64, n_test=20)
    mc.load_classifier(root, load_mnist, "cpu", progress=False)
    return root


def test_classifier_is_cached_atomically_and_loads_weights_only(tiny, capsys):
    path = tiny / mc.CLASSIFIER_FILE
    state = torch.load(path, weights_only=True)
    assert set(state) >= {"model", "test_accuracy", "config"}
    assert not list(tiny.glob("*.tmp")) and not list(tiny.glob(".*.tmp"))
    mtime = path.stat().st_mtime_ns
    model = mc.load_classifier(tiny, load_mnist, "cpu")
    assert "training" not in capsys.readouterr().out and path.stat().st_mtime_ns == mtime
    assert all(torch.equal(v, state["model"][k]) for k, v in model.state_dict().items())
    feats, preds = mc.classify(model, torch.zeros(3, 28, 28, dtype=torch.uint8))
    assert feats.shape == (3, mc.MnistClassifier.FEATURE_DIMS) and preds.shape == (3,)


def test_a_classifier_that_cannot_be_kept_is_still_used(tmp_path, monkeypatch, capsys):
    """A data folder where the classifier cannot be saved (read-only, shared): a warning, and the
    freshly trained classifier scores anyway."""
    root = write_tiny_mnist(tmp_path, n_train=64, n_test=32)

    def read_only(path, write, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(support.checkpoint, "atomic_write", read_only)
    model = mc.load_classifier(root, load_mnist, "cpu", progress=False)
    assert "could not keep the MNIST classifier" in capsys.readouterr().err
    assert not (root / mc.CLASSIFIER_FILE).exists()
    assert mc.classify(model, torch.zeros(2, 28, 28, dtype=torch.uint8))[1].shape == (2,)


def test_the_classifier_trains_along_a_half_cosine_of_its_rate(tiny):
    from support.schedule import half_cosine

    images, labels = load_mnist(tiny, train=True)
    cfg = mc.ClassifierConfig(epochs=2, batch_size=16)
    with optimizer_step_rates() as seen:
        mc.train_classifier(images, labels, images[:8], labels[:8], cfg=cfg, progress=False)
    assert len(seen) > 2
    assert seen == pytest.approx([cfg.lr * half_cosine(k / len(seen)) for k in range(len(seen))])


def test_damaged_classifier_file_is_a_user_error(tmp_path):
    (tmp_path / mc.CLASSIFIER_FILE).write_bytes(b"not a checkpoint")
    with pytest.raises(UserError, match="delete it"):
        mc.load_classifier(tmp_path, load_mnist)


def test_the_classifiers_input_is_the_models_range():
    pixels = torch.tensor([[[0, 255], [128, 51]]], dtype=torch.uint8)
    x = mc.to_input(pixels)
    assert x.shape == (1, 1, 2, 2) and x.dtype == torch.float32
    assert x.min().item() == -1.0 and x.max().item() == 1.0
    torch.testing.assert_close(x, to_model_range(pixels))


def test_classify_gives_the_pre_relu_features_and_the_heads_digit_in_any_batching():
    torch.manual_seed(0)
    model = mc.MnistClassifier().eval()
    pixels = torch.randint(0, 256, (7, 28, 28), dtype=torch.uint8)
    feats, preds = mc.classify(model, pixels)
    assert feats.dtype == np.float64 and feats.shape == (7, mc.MnistClassifier.FEATURE_DIMS)
    with torch.no_grad():
        want = model.features(mc.to_input(pixels))
        want_preds = model.head(want).argmax(dim=1)
    assert (feats < 0).any()  # taken before the ReLU
    np.testing.assert_allclose(feats, want.double().numpy(), rtol=1e-5, atol=1e-6)
    assert torch.equal(preds, want_preds)
    small_feats, small_preds = mc.classify(model, pixels, batch_size=3)  # batches of 3, 3 and 1
    np.testing.assert_allclose(small_feats, feats, rtol=1e-5, atol=1e-6)
    assert torch.equal(small_preds, preds)


def test_mnist_scores_against_known_features_and_predictions(monkeypatch):
    """With the classifier's answers fixed: the MNIST-FD of a set shifted by 1 in each of the 128
    features is 128 (the same covariance, ||mu1 - mu2||^2 = 128), and the per-class accuracy of
    digit k is the share of the images labelled k that are read as k."""
    g = np.random.default_rng(0)
    real_feats = g.standard_normal((300, 128))
    mu, sigma = feature_statistics(real_feats)
    real = {"mu": mu, "sigma": sigma, "features": real_feats}
    preds = torch.arange(300) % 2  # read as 0, 1, 0, 1, ...
    monkeypatch.setattr(mc, "classify", lambda *args, **kwargs: (real_feats + 1.0, preds))
    labels = torch.zeros(300, dtype=torch.long)  # all asked to be 0
    scores = mc.mnist_scores(None, torch.zeros(300, 28, 28, dtype=torch.uint8), labels, real)
    assert scores["mnist_fd"] == pytest.approx(128.0, abs=1e-3)
    assert scores["class_accuracy"] == pytest.approx(0.5)
    assert scores["per_class_accuracy"] == pytest.approx({0: 0.5})
