"""benchmarks/gpu_check.sh end to end on the CPU (its --cpu mode: tiny preset, tiny budgets), so
that the script is known to work before any GPU time is spent on it."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import write_tiny_mnist

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_gpu_check_runs_end_to_end_on_the_cpu(tmp_path):
    # 300 test digits: MNIST-FD's 128-dim features need at least 129 real and fake images.
    data = write_tiny_mnist(tmp_path / "data", n_train=320, n_test=300)
    out, work = tmp_path / "out", tmp_path / "work"
    env = {**os.environ, "DIT_DATA_DIR": str(data), "GPU_CHECK_WORK": str(work),
           "TRAIN_MINUTES": "0.05", "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    res = subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu_check.sh"), str(out), "--cpu"],
                         cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    summary = (out / "summary.md").read_text()
    assert res.returncode == 0, summary + res.stdout[-3000:] + res.stderr[-2000:]
    assert "- failed steps: 0" in summary
    lines = summary.splitlines()
    for name in ["machine", "tests", "throughput", "train", "sample", "score"]:
        assert any(line.startswith(f"- {name}") and ": ok in" in line for line in lines), name
    rows = json.loads((out / "throughput.json").read_text())
    assert rows[0]["preset"] == "tiny" and rows[0]["images_per_sec"] > 0
    assert "MNIST-FD:" in summary and "class accuracy:" in summary
    assert len(list((work / "fake").glob("*.png"))) == 200  # 20 per digit
    assert (work / "run" / "model.pth").is_file()
    assert (out / "check.log").stat().st_size > 0
