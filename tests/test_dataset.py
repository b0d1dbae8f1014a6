"""Tests of the MNIST loader and the in-memory batches."""

import pytest
import torch

from support.cli import UserError
from dataset import (DATA_DIR_ENV, InMemoryBatches, damaged_files, load_mnist,
                     resolve_data_dir, to_model_range, to_uint8)
from helpers import needs_real_mnist, write_tiny_mnist


def test_reads_tiny_idx_mnist(tmp_path):
    write_tiny_mnist(tmp_path, n_train=50, n_test=20)
    images, labels = load_mnist(tmp_path, train=True, download=False)
    assert images.shape == (50, 28, 28) and images.dtype == torch.uint8
    assert labels.tolist() == [i % 10 for i in range(50)]
    assert (images[3, 4:24, 8:10] == 255).all()  # digit 3's band
    test_images, _ = load_mnist(tmp_path, train=False, download=False)
    assert test_images.shape == (20, 28, 28)


def test_scaled_to_minus_one_one():
    images = torch.tensor([[[0, 255], [128, 51]]], dtype=torch.uint8)
    x = to_model_range(images)
    assert x.shape == (1, 1, 2, 2) and x.dtype == torch.float32
    assert x.min() == -1.0 and x.max() == 1.0
    assert torch.equal(to_uint8(x)[:, 0], images)  # the inverse is exact on uint8 values
    # a sampler's output can leave [-1, 1]: clipped, then rounded to the nearest level
    clipped = to_uint8(torch.tensor([-3.0, -1.0, 0.999, 1.0, 1.5, 7.0]))
    assert clipped.tolist() == [0, 0, 255, 255, 255, 255]
    assert to_uint8(torch.tensor([-1 + 1.4 / 127.5, -1 + 1.6 / 127.5])).tolist() == [1, 2]


def test_empty_directory_gives_clear_error(tmp_path):
    with pytest.raises(UserError, match=r"MNIST not found in .*MNIST.raw.*--data-dir"):
        load_mnist(tmp_path, download=False)


@pytest.mark.parametrize("cut", [
    lambda whole: whole[:-100],  # a copy that stopped early
    lambda whole: whole + bytes(7),  # one with bytes left over
    lambda whole: whole[:10],  # stopped inside the header: torchvision fails differently
    lambda whole: b"",  # an empty file
])
def test_cut_short_files_are_called_damaged_not_missing(tmp_path, cut):
    raw = write_tiny_mnist(tmp_path, n_train=50, n_test=20) / "MNIST" / "raw"
    whole = (raw / "train-images-idx3-ubyte").read_bytes()
    (raw / "train-images-idx3-ubyte").write_bytes(cut(whole))
    # no .gz beside it (write_tiny_mnist writes none), so the originals must be copied in
    with pytest.raises(UserError, match=r"damaged.*: train-images-idx3-ubyte cut short or corrupt; "
                                        r"delete it and copy the original .gz files in again"):
        load_mnist(tmp_path, download=False)
    (raw / "train-images-idx3-ubyte").write_bytes(whole)  # whole again: it loads
    assert damaged_files(raw) == []
    assert load_mnist(tmp_path, download=False)[0].shape == (50, 28, 28)


def test_a_gz_that_is_not_the_original_is_named(tmp_path):
    raw = write_tiny_mnist(tmp_path, n_train=50, n_test=20) / "MNIST" / "raw"
    for name in ["train-images-idx3-ubyte", "train-labels-idx1-ubyte"]:
        (raw / name).unlink()
    (raw / "train-images-idx3-ubyte.gz").write_bytes(b"\x1f\x8b\x08" + bytes(50))  # a gz header
    with pytest.raises(UserError, match=r"damaged.*: train-images-idx3-ubyte.gz cut short.*"
                                        r"delete it and copy the original .gz files in again"):
        load_mnist(tmp_path, download=False)


@needs_real_mnist
def test_a_damaged_unpacked_file_comes_back_from_its_gz(tmp_path):
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for name in ["t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz",
                 "train-labels-idx1-ubyte.gz", "train-images-idx3-ubyte.gz"]:
        (raw / name).write_bytes((resolve_data_dir() / "MNIST" / "raw" / name).read_bytes())
    labels = load_mnist(tmp_path, train=False, download=True)[1]  # unpacks all four, no network
    (raw / "t10k-labels-idx1-ubyte").write_bytes(b"")
    with pytest.raises(UserError, match=r"t10k-labels-idx1-ubyte cut short or corrupt; delete it: "
                                        r"the next run unpacks the .gz files again"):
        load_mnist(tmp_path, train=False, download=True)
    (raw / "t10k-labels-idx1-ubyte").unlink()  # as the message says: and it loads again
    assert torch.equal(load_mnist(tmp_path, train=False, download=True)[1], labels)


def test_data_dir_flag_then_env_then_default(monkeypatch):
    monkeypatch.delenv(DATA_DIR_ENV, raising=False)
    assert str(resolve_data_dir(None)) == "data"
    monkeypatch.setenv(DATA_DIR_ENV, "/somewhere")
    assert str(resolve_data_dir(None)) == "/somewhere"
    assert str(resolve_data_dir("/flag")) == "/flag"


def test_batches_cover_epoch_once_and_are_reproducible():
    images = torch.arange(100, dtype=torch.uint8).reshape(100, 1, 1).expand(100, 28, 28).clone()
    labels = torch.arange(100) % 10
    batches = InMemoryBatches(images, labels, batch_size=16, seed=3)
    assert len(batches) == 6
    seen = torch.cat([to_uint8(x)[:, 0, 0, 0] for x, _ in batches.epoch(0)]).tolist()
    assert len(seen) == 96 and len(set(seen)) == 96  # no image twice in an epoch
    again = torch.cat([to_uint8(x)[:, 0, 0, 0] for x, _ in batches.epoch(0)]).tolist()
    assert seen == again
    other = torch.cat([to_uint8(x)[:, 0, 0, 0] for x, _ in batches.epoch(1)]).tolist()
    assert seen != other
    # skipping resumes the same order
    tail = torch.cat([to_uint8(x)[:, 0, 0, 0] for x, _ in batches.epoch(0, skip=4)]).tolist()
    assert tail == seen[64:]
    for x, y in batches.epoch(0):  # labels travel with their images
        assert torch.equal(to_uint8(x)[:, 0, 0, 0].long() % 10, y)
    reseeded = InMemoryBatches(images, labels, batch_size=16, seed=4)  # another run's order
    assert torch.cat([to_uint8(x)[:, 0, 0, 0] for x, _ in reseeded.epoch(0)]).tolist() != seen


def test_rank_shards_do_not_overlap():
    images = torch.arange(100, dtype=torch.uint8).reshape(100, 1, 1).expand(100, 28, 28).clone()
    labels = torch.zeros(100, dtype=torch.long)
    shards = []
    for rank in range(2):
        b = InMemoryBatches(images, labels, batch_size=10, seed=0, rank=rank, world_size=2)
        shards.append({v for x, _ in b.epoch(0) for v in to_uint8(x)[:, 0, 0, 0].tolist()})
    assert len(shards[0]) == len(shards[1]) == 50
    assert not shards[0] & shards[1]


def test_batch_larger_than_data_is_a_user_error():
    with pytest.raises(UserError, match="--batch-size"):
        InMemoryBatches(torch.zeros(10, 28, 28, dtype=torch.uint8), torch.zeros(10), batch_size=32)


@needs_real_mnist
def test_real_mnist_loads():
    # download=True: with the four .gz files in place torchvision only unpacks them, no network
    images, labels = load_mnist(resolve_data_dir(), train=False, download=True)
    assert images.shape == (10000, 28, 28)
    assert labels.bincount().tolist()[0] == 980
    assert damaged_files(resolve_data_dir() / "MNIST" / "raw") == []  # the originals' MD5s match
