"""Tests of inference.py: pictures, files for scoring, reproducibility and bad input."""

import pytest
import torch
from PIL import Image

import inference
import train
from helpers import write_tiny_mnist


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    data = write_tiny_mnist(tmp_path_factory.mktemp("mnist"))
    out = tmp_path_factory.mktemp("run")
    assert train.main(["--preset", "tiny", "--data-dir", str(data), "--out-dir", str(out),
                       "--max-steps", "8"]) == 0
    return out / "model.pth"


def test_grid_and_trajectory(checkpoint, tmp_path, capsys):
    grid = tmp_path / "grid.png"
    assert inference.main(["--checkpoint", str(checkpoint), "--output", str(grid),
                           "--trajectory", "--steps", "5"]) == 0
    img = Image.open(grid)
    assert img.size == (10 * 30 + 2, 10 * 30 + 2)  # 10 x 10 images of 28 px with 2 px padding
    traj = checkpoint.parent / "trajectory.png"
    assert traj.stat().st_size > 0
    out = capsys.readouterr().out
    assert str(grid) in out and "trajectory" in out


def test_labels_choose_rows(checkpoint, tmp_path):
    grid = tmp_path / "g.png"
    assert inference.main(["--checkpoint", str(checkpoint), "--output", str(grid),
                           "--labels", "3", "1", "4", "--per-row", "5", "--steps", "3"]) == 0
    assert Image.open(grid).size == (5 * 30 + 2, 3 * 30 + 2)


def test_amp_flag_chooses_sampling_precision(checkpoint, tmp_path, monkeypatch, capsys):
    cpu = torch.device("cpu")
    assert inference.use_bf16_sampling(cpu, "off") is False
    assert inference.use_bf16_sampling(cpu, "bf16") is True
    assert inference.use_bf16_sampling(torch.device("cuda"), "off") is False
    for native in (False, True):  # auto: bf16 only where the CPU has bf16 instructions
        monkeypatch.setattr(inference, "cpu_has_native_bf16", lambda: native)
        assert inference.use_bf16_sampling(cpu) is native
    assert inference.use_bf16_sampling(torch.device("cuda")) is True

    argv = ["--checkpoint", str(checkpoint), "--steps", "3", "--per-row", "2"]
    for amp in ("off", "bf16"):
        assert inference.main(argv + ["--amp", amp, "--output", str(tmp_path / f"{amp}.png")]) == 0
        assert f"bf16 {'on' if amp == 'bf16' else 'off'}" in capsys.readouterr().out
    with pytest.raises(SystemExit) as e:
        inference.main(argv + ["--amp", "fp8"])
    assert e.value.code == 2


def test_class_files_names_sizes_mode_and_seed(checkpoint, tmp_path):
    def write(folder, seed):
        assert inference.main(["--checkpoint", str(checkpoint), "--num-per-class", "3",
                               "--out-dir", str(folder), "--batch-size", "7", "--steps", "4",
                               "--seed", str(seed)]) == 0
        return sorted(folder.iterdir())

    files = write(tmp_path / "a", seed=1)
    assert [f.name for f in files] == [f"{i:05d}_{i // 3}.png" for i in range(30)]
    for f in files:
        img = Image.open(f)
        assert img.size == (28, 28) and img.mode == "L"
    same = write(tmp_path / "b", seed=1)
    other = write(tmp_path / "c", seed=2)
    assert all(a.read_bytes() == b.read_bytes() for a, b in zip(files, same))
    assert any(a.read_bytes() != c.read_bytes() for a, c in zip(files, other))


def test_model_rebuilt_from_checkpoint_config(checkpoint):
    model, cfg = inference.load_model(checkpoint)
    assert cfg.preset == "tiny" and model.config.hidden_size == cfg.model.hidden_size
    ema = torch.load(checkpoint, weights_only=True)["ema"]
    assert torch.equal(model.state_dict()["final_layer.linear.weight"], ema["final_layer.linear.weight"])


@pytest.mark.parametrize("flags, message", [
    (["--labels", "3", "10"], "label 10 is not a digit"),
    (["--labels", "-1"], "label -1 is not a digit"),
    (["--steps", "0"], "--steps must be between 1 and 1000"),
    (["--steps", "-5"], "--steps must be between 1 and 1000"),
    (["--steps", "1001"], "--steps must be between 1 and 1000"),
    (["--cfg-scale", "-2"], "--cfg-scale must be 0 or more"),
    (["--eta", "-0.5"], "--eta must be 0 or more"),
])
def test_bad_sampling_flags(checkpoint, capsys, flags, message):
    assert inference.main(["--checkpoint", str(checkpoint), *flags]) == 1
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_bad_sampler_name_is_argparse_error(checkpoint):
    with pytest.raises(SystemExit) as e:
        inference.main(["--checkpoint", str(checkpoint), "--sampler", "euler"])
    assert e.value.code == 2


def test_missing_checkpoint(tmp_path, capsys):
    assert inference.main(["--checkpoint", str(tmp_path / "none.pth")]) == 1
    assert "no checkpoint at" in capsys.readouterr().err


def test_truncated_checkpoint(checkpoint, tmp_path, capsys):
    bad = tmp_path / "truncated.pth"
    bad.write_bytes(checkpoint.read_bytes()[: checkpoint.stat().st_size // 2])
    assert inference.main(["--checkpoint", str(bad)]) == 1
    assert "corrupt or truncated" in capsys.readouterr().err


def test_garbage_checkpoint(tmp_path, capsys):
    bad = tmp_path / "garbage.pth"
    bad.write_bytes(b"this is not a checkpoint" * 10)
    assert inference.main(["--checkpoint", str(bad)]) == 1
    assert "corrupt or truncated" in capsys.readouterr().err


def test_checkpoint_shapes_not_matching_config(checkpoint, tmp_path, capsys):
    ckpt = torch.load(checkpoint, weights_only=True)
    ckpt["config"]["model"]["hidden_size"] = 64
    bad = tmp_path / "mismatch.pth"
    torch.save(ckpt, bad)
    assert inference.main(["--checkpoint", str(bad)]) == 1
    assert "do not match its config" in capsys.readouterr().err
