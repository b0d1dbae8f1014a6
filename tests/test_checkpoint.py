"""Tests of support/checkpoint.py's atomic writes and of support/cli.py's out-of-memory message and
bf16 policy. (Reading and writing whole checkpoints is tested through train.py and inference.py.)"""

import pytest
import torch

from support.checkpoint import atomic_write
from support.cli import UserError, out_of_memory_as_error, use_bf16


def test_atomic_write_replaces_whole_files_and_keeps_the_old_one_on_failure(tmp_path):
    path = tmp_path / "log.csv"
    atomic_write(path, lambda f: f.write("a,b\n1,2\n"), text=True)
    assert path.read_text() == "a,b\n1,2\n"

    def half_then_crash(f):
        f.write(b"half of a new fi")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        atomic_write(path, half_then_crash)
    assert path.read_text() == "a,b\n1,2\n"  # the previous version, whole
    # The leftover is hidden, so folder listings that skip dot-files never take it for a result.
    assert [p.name for p in tmp_path.iterdir() if not p.name.startswith(".")] == ["log.csv"]


def test_out_of_memory_becomes_the_given_one_line_error_and_nothing_else_does():
    for oom in (torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2 GiB"),
                RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried 9 GB")):
        with pytest.raises(UserError, match="pass a smaller --batch-size"):
            with out_of_memory_as_error("batch size 9 does not fit: pass a smaller --batch-size"):
                raise oom
    with pytest.raises(RuntimeError, match="shape mismatch"):
        with out_of_memory_as_error("unused"):
            raise RuntimeError("shape mismatch")


def test_unknown_precision_is_refused():
    with pytest.raises(UserError, match="--amp must be one of auto, bf16, off"):
        use_bf16("fp8", torch.device("cpu"))
