"""Tests of support/mnist_classifier.py: trained once on a tiny fake MNIST, kept atomically, loaded with
weights_only, and a damaged file is a one-line error."""

import pytest
import torch

import support.checkpoint
import support.mnist_classifier as mc
from support.cli import UserError
from dataset import load_mnist
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
