"""Tests of support/checkpoint.py's atomic writes, its checks on reading and the weights it ships,
and of support/cli.py's out-of-memory message and bf16 policy. (Reading and writing whole
checkpoints is also tested through train.py and inference.py.)"""

import os

import pytest
import torch

from support.checkpoint import atomic_write, read_checkpoint, save_checkpoint, ship_weights
from support.cli import UserError, out_of_memory_as_error, use_bf16


@pytest.mark.parametrize("failure", [OSError("disk full"), KeyboardInterrupt("Ctrl-C")])
def test_atomic_write_replaces_whole_files_and_keeps_the_old_one_on_failure(tmp_path, failure):
    path = tmp_path / "log.csv"
    atomic_write(path, lambda f: f.write("a,b\n1,2\n"), text=True)
    assert path.read_text() == "a,b\n1,2\n"

    def half_then_crash(f):
        f.write(b"half of a new fi")
        raise failure

    with pytest.raises(type(failure), match=str(failure)):
        atomic_write(path, half_then_crash)
    assert path.read_text() == "a,b\n1,2\n"  # the previous version, whole
    assert [p.name for p in tmp_path.iterdir()] == ["log.csv"]  # and the half-file removed


def test_two_writers_of_one_file_each_write_a_whole_file(tmp_path):
    # Another writer of the same file starts and finishes while this one is half-way through
    # (two processes saving one log): each writes into its own temporary, the last rename wins,
    # and what is left is one whole version, not a splice of both.
    path = tmp_path / "log.csv"

    def interrupted(f):
        f.write("first half, ")
        atomic_write(path, lambda g: g.write("the other writer's file"), text=True)
        assert path.read_text() == "the other writer's file"
        f.write("second half")

    atomic_write(path, interrupted, text=True)
    assert path.read_text() == "first half, second half"
    assert [p.name for p in tmp_path.iterdir()] == ["log.csv"]


def test_checkpoints_reach_the_disk_before_they_replace_the_old_one(tmp_path, monkeypatch):
    """A checkpoint is flushed to the disk (fsync) before the rename, so a power cut cannot leave
    a renamed but empty file; logs, rewritten often, may skip it."""
    synced = []
    real_fsync = os.fsync

    def fsync_while_the_old_file_stands(fd):
        # At the moment of the fsync the final name must still hold the old checkpoint.
        synced.append(torch.load(tmp_path / "a.pth", weights_only=True)["x"].tolist())
        real_fsync(fd)

    save_checkpoint(tmp_path / "a.pth", {"x": torch.zeros(2)})  # the old one, before the spy
    monkeypatch.setattr(os, "fsync", fsync_while_the_old_file_stands)
    save_checkpoint(tmp_path / "a.pth", {"x": torch.ones(2)})
    assert synced == [[0.0, 0.0]]  # synced once, before the rename
    assert torch.load(tmp_path / "a.pth", weights_only=True)["x"].tolist() == [1.0, 1.0]
    atomic_write(tmp_path / "b.txt", lambda f: f.write("x"), text=True, fsync=False)
    assert len(synced) == 1


def training_checkpoint(path, **without):
    """A small checkpoint with what train.py saves, the raw weights apart from the EMA's."""
    raw = {"weight": torch.randn(2, 2), "bias": torch.zeros(2)}
    state = {"model": raw, "ema": {k: v + 1 for k, v in raw.items()},
             "optimizer": {"state": {}, "param_groups": []}, "config": {"preset": "tiny"},
             "step": 10, "rng": {"torch": torch.get_rng_state()},
             "weak_ema": {k: v - 1 for k, v in raw.items()}, "weak_ema_step": 2}
    for key in without:
        del state[key]
    save_checkpoint(path, state)
    return state


def test_resuming_needs_the_random_state_sampling_does_not(tmp_path):
    training_checkpoint(tmp_path / "c.pth", rng=True)
    read_checkpoint(tmp_path / "c.pth")  # enough to sample
    with pytest.raises(UserError, match="missing rng"):
        read_checkpoint(tmp_path / "c.pth", with_training_state=True)


def test_shipped_weights_are_the_ema_and_the_weak_ema_in_half_precision(tmp_path):
    state = training_checkpoint(tmp_path / "c.pth")
    ship_weights(tmp_path / "c.pth", tmp_path / "s.pth", source="test")
    shipped = torch.load(tmp_path / "s.pth", weights_only=True)
    assert "model" not in shipped and "optimizer" not in shipped
    assert shipped["step"] == 10 and shipped["weak_ema_step"] == 2
    for key in ["ema", "weak_ema"]:
        for name, value in shipped[key].items():
            assert value.dtype == torch.float16
            torch.testing.assert_close(value.float(), state[key][name], atol=2e-3, rtol=1e-3)


def test_the_projects_other_files_are_named_for_what_they_are_when_misused(tmp_path):
    # Shipped weights sample but cannot resume (train.py --resume --out-dir pretrained) ...
    training_checkpoint(tmp_path / "c.pth")
    ship_weights(tmp_path / "c.pth", tmp_path / "s.pth", source="test")
    read_checkpoint(tmp_path / "s.pth")  # enough to sample
    with pytest.raises(UserError, match="holds shipped weights .*sample them with inference.py"):
        read_checkpoint(tmp_path / "s.pth", with_training_state=True)
    # ... a latent run's autoencoder.pth is not a DiT ...
    save_checkpoint(tmp_path / "autoencoder.pth", {"autoencoder": {"w": torch.ones(1)},
                                                   "config": {"channels": 32}, "seconds": 1.0})
    with pytest.raises(UserError, match="first stage .*not a DiT: pass the run's model.pth"):
        read_checkpoint(tmp_path / "autoencoder.pth")
    # ... and a missing file offers the shipped weights only where they would do.
    with pytest.raises(UserError, match="sample the shipped weights with --checkpoint"):
        read_checkpoint(tmp_path / "none.pth")
    with pytest.raises(UserError) as refused:
        read_checkpoint(tmp_path / "none.pth", with_training_state=True)
    assert "no checkpoint at" in str(refused.value) and "shipped" not in str(refused.value)


class NotPlain:
    """A class a checkpoint must not hold: unpickling it could run code."""


def test_a_file_that_is_no_plain_checkpoint_is_refused_with_the_unpicklers_reason(tmp_path):
    torch.save({"ema": {}, "config": NotPlain()}, tmp_path / "code.pth")
    with pytest.raises(UserError) as refused:
        read_checkpoint(tmp_path / "code.pth")
    message = str(refused.value)
    assert message.startswith(f"{tmp_path / 'code.pth'} is not a plain checkpoint")
    assert message.endswith("only load checkpoints written by train.py") and "\n" not in message
    reason = message.split("refused it: ", 1)[1].rsplit("); only load", 1)[0]
    assert reason and ". " not in reason  # one sentence: PyTorch's advice around it is left out
    (tmp_path / "notes.pth").write_text("# not a checkpoint at all\n")  # text: not a zip, a pickle
    with pytest.raises(UserError, match="notes.pth is (not a plain checkpoint|corrupt)"):
        read_checkpoint(tmp_path / "notes.pth")


def test_out_of_memory_becomes_the_given_one_line_error_and_nothing_else_does():
    for oom in (torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2 GiB"),
                RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried 9 GB"),
                RuntimeError("CUDA error: Out of memory")):  # in any case
        with pytest.raises(UserError, match="pass a smaller --batch-size"):
            with out_of_memory_as_error("batch size 9 does not fit: pass a smaller --batch-size"):
                raise oom
    with pytest.raises(RuntimeError, match="shape mismatch"):
        with out_of_memory_as_error("unused"):
            raise RuntimeError("shape mismatch")


def test_unknown_precision_is_refused():
    with pytest.raises(UserError, match="--amp must be one of auto, bf16, off"):
        use_bf16("fp8", torch.device("cpu"))


def test_weights_that_miss_a_tensor_or_bring_an_extra_one_are_refused_in_one_line():
    from support.checkpoint import load_weights

    module = torch.nn.Linear(3, 2)
    state = module.state_dict()
    for damaged in [{"weight": state["weight"]}, {**state, "scale": torch.ones(1)}]:
        with pytest.raises(UserError, match="do not match its config") as e:
            load_weights(torch.nn.Linear(3, 2), damaged, "model.pth")
        assert "\n" not in str(e.value)
