"""Tests of inference.py: pictures, files for scoring, reproducibility and bad input."""

import pytest
import torch
from PIL import Image

import inference
import pictures
import train
from helpers import write_tiny_mnist


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    data = write_tiny_mnist(tmp_path_factory.mktemp("mnist"))
    out = tmp_path_factory.mktemp("run")
    assert train.main(["--preset", "tiny", "--data-dir", str(data), "--out-dir", str(out),
                       "--max-steps", "8"]) == 0
    return out / "model.pth"


def test_grid_trajectory_and_guidance_strip(checkpoint, tmp_path, capsys):
    grid = tmp_path / "grid.png"
    assert inference.main(["--checkpoint", str(checkpoint), "--output", str(grid),
                           "--trajectory", "--guidance-strip", "--steps", "5"]) == 0
    img = Image.open(grid)
    assert img.size == (10 * 30 + 2, 10 * 30 + 2)  # 10 x 10 images of 28 px with 2 px padding
    for name in ["trajectory.png", "guidance.png"]:
        assert (checkpoint.parent / name).stat().st_size > 0, name
    out = capsys.readouterr().out
    assert str(grid) in out and "trajectory" in out and "guidance strip" in out


def test_trajectory_panels_pair_each_state_with_its_own_timestep(checkpoint):
    """The picture's columns: state k of the sampler sits at noise level timesteps[k], and its
    x0-hat is the (clipped) predict_x0_from_eps of the network's guided prediction at exactly that
    level: the x0 the sampler itself used, with no second pass of the network."""
    from checkpoint import load_model
    from diffusion import GaussianDiffusion

    model, cfg = load_model(checkpoint)
    cfg.sample.steps = 12
    diffusion = GaussianDiffusion.from_config(cfg.diffusion)
    labels = torch.tensor([2, 7])
    states, x0_hat, titles = pictures.trajectory_panels(model, diffusion, cfg, labels,
                                                        torch.Generator().manual_seed(0))
    _, full, _ = pictures.generate(model, diffusion, labels, cfg, torch.Generator().manual_seed(0),
                                   return_intermediates=True)
    timesteps = diffusion.sampler_timesteps("ddim", 12)
    cols = pictures.shown_columns(len(full))
    assert len(cols) == 10 and cols[0] == 0 and cols[-1] == 12
    assert torch.equal(states, full[cols]) and torch.equal(x0_hat[-1], full[-1])
    assert titles == ["x_T (noise)"] + [f"t={timesteps[c]}" for c in cols[1:-1]] + ["x_0"]
    for k, c in enumerate(cols[:-1]):
        t = torch.full((2,), timesteps[c])
        x_t = full[c].double()
        eps = model.forward_with_cfg(x_t, t, labels, cfg.sample.cfg_scale).double()
        expected = diffusion.predict_x0_from_eps(x_t, t, eps).clamp(-1, 1).float()
        assert torch.allclose(x0_hat[k], expected, atol=1e-4)


def test_guidance_strip_uses_one_noise_for_all_scales(checkpoint):
    """A fresh DiT predicts eps = 0 whatever the label (adaLN-Zero), so guidance changes nothing
    and the columns are identical exactly when they start from the same noise."""
    from checkpoint import load_model
    from config import get_preset
    from diffusion import GaussianDiffusion
    from dit import DiT

    cfg = get_preset("tiny")
    cfg.sample.steps = 4
    diffusion = GaussianDiffusion.from_config(cfg.diffusion)
    strip = pictures.guidance_strip(DiT(cfg.model).eval(), diffusion, cfg, [1, 5], scales=(0, 1, 4))
    assert strip.shape == (2, 3, 1, 28, 28)
    for c in range(1, 3):
        assert torch.equal(strip[:, c], strip[:, 0])
    assert not torch.equal(strip[0, 0], strip[1, 0])  # but each digit has its own noise
    # A trained network does respond to the scale; the caller's config is left as it was.
    model, trained_cfg = load_model(checkpoint)
    trained_cfg.sample.steps = 4
    before = trained_cfg.sample.cfg_scale
    strip = pictures.guidance_strip(model, diffusion, trained_cfg, [1, 5], scales=(0, 8))
    assert not torch.equal(strip[:, 0], strip[:, 1])
    assert trained_cfg.sample.cfg_scale == before


def test_labels_choose_rows(checkpoint, tmp_path):
    grid = tmp_path / "g.png"
    assert inference.main(["--checkpoint", str(checkpoint), "--output", str(grid),
                           "--labels", "3", "1", "4", "--per-row", "5", "--steps", "3"]) == 0
    assert Image.open(grid).size == (5 * 30 + 2, 3 * 30 + 2)


def test_amp_flag_chooses_sampling_precision(checkpoint, tmp_path, capsys):
    from checkpoint import use_bf16

    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert use_bf16("off", cpu) is False and use_bf16("off", cuda) is False
    assert use_bf16("bf16", cpu) is True and use_bf16("bf16", cuda) is True
    assert use_bf16("auto", cpu) is False  # fp32 on every CPU, measured faster there
    assert use_bf16("auto", cuda) is True

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
    from checkpoint import load_model
    model, cfg = load_model(checkpoint)
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


def test_class_files_replace_the_folder_whole_and_refuse_foreign_files(checkpoint, tmp_path, capsys):
    folder = tmp_path / "fake"
    argv = ["--checkpoint", str(checkpoint), "--out-dir", str(folder), "--steps", "2"]
    assert inference.main(argv + ["--num-per-class", "3"]) == 0
    assert inference.main(argv + ["--num-per-class", "1"]) == 0  # smaller: no old images left over
    assert sorted(f.name for f in folder.iterdir()) == [f"{i:05d}_{i}.png" for i in range(10)]
    assert [p.name for p in tmp_path.iterdir()] == ["fake"]  # the hidden work folder is gone
    (folder / "notes.txt").write_text("mine")
    assert inference.main(argv + ["--num-per-class", "1"]) == 1
    assert "did not write (e.g. 'notes.txt')" in capsys.readouterr().err
    assert (folder / "notes.txt").read_text() == "mine"
    assert inference.main(argv + ["--num-per-class", "1", "--trajectory"]) == 1
    assert "image files only" in capsys.readouterr().err
