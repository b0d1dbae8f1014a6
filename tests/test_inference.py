"""Tests of inference.py: pictures, files for scoring, reproducibility and bad input."""

import os
import shutil
from pathlib import Path

import pytest
import torch
from PIL import Image

import inference
import train
from helpers import load_model, record_calls, write_tiny_mnist
from support import sampling
from support.cli import UserError, check_can_write_in
from support.pictures import shown_columns


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
    for name in ["trajectory.png", "guidance.png"]:  # beside the grid
        assert (tmp_path / name).stat().st_size > 0, name
    captured = capsys.readouterr()
    assert str(grid) in captured.out and "trajectory" in captured.out
    assert "guidance strip" in captured.out
    # Long sampling shows progress: a bar over the sampler's steps for the grid, the trajectory
    # and each of the five guidance scales.
    assert captured.err.count("/5 [") >= 7, captured.err[-500:]


def test_the_guidance_strip_is_drawn_without_autoguidance(checkpoint, tmp_path, monkeypatch):
    # Each column of the strip shows one classifier-free guidance scale alone: the plain EMA DiT,
    # not the autoguided model that the grid samples (the fixture keeps a weak model, W 1.5).
    from dit import DiT

    seen = record_calls(monkeypatch, inference, "guidance_strip")
    assert inference.main(["--checkpoint", str(checkpoint), "--output", str(tmp_path / "g.png"),
                           "--guidance-strip", "--steps", "2", "--labels", "3"]) == 0
    assert len(seen) == 1 and type(seen[0]) is DiT


def test_trajectory_and_guidance_strip_follow_the_labels_in_order_and_the_seed(checkpoint, tmp_path,
                                                                              monkeypatch):
    """Row k of the trajectory and of the strip is the k-th of --labels, sampled and titled so
    (not sorted), from the noise of --seed."""
    seen = {name: record_calls(monkeypatch, inference, name, keep) for name, keep in [
        ("trajectory_panels", lambda a, out: (a[3].tolist(), out[0])),
        ("save_trajectory", lambda a, out: a[3]),
        ("guidance_strip", lambda a, out: (a[3], out)),
        ("save_guidance_strip", lambda a, out: a[1])]}
    for seed in ["0", "1"]:
        assert inference.main(["--checkpoint", str(checkpoint), "--output", str(tmp_path / "g.png"),
                               "--labels", "3", "1", "4", "--per-row", "1", "--steps", "2",
                               "--trajectory", "--guidance-strip", "--seed", seed]) == 0
    assert [labels for labels, _ in seen["trajectory_panels"]] == [[3, 1, 4]] * 2
    assert seen["save_trajectory"] == [[3, 1, 4]] * 2
    assert [digits for digits, _ in seen["guidance_strip"]] == [[3, 1, 4]] * 2
    assert seen["save_guidance_strip"] == [[3, 1, 4]] * 2
    for name in ["trajectory_panels", "guidance_strip"]:  # another seed, other noise
        (_, a), (_, b) = seen[name]
        assert not torch.equal(a, b), name


def test_pictures_go_to_runs_not_beside_tracked_weights(checkpoint, tmp_path, monkeypatch, capsys):
    """The shipped weights sit in the tracked pretrained/: sampling from a checkpoint outside
    runs/ writes into runs/samples/, from a run inside runs/ beside it, and a picture's own flag
    puts it where the user says."""
    monkeypatch.chdir(tmp_path)
    outside = tmp_path / "pretrained" / "model.pth"
    outside.parent.mkdir()
    outside.write_bytes(checkpoint.read_bytes())
    assert inference.main(["--checkpoint", str(outside), "--steps", "2", "--per-row", "1",
                           "--trajectory"]) == 0
    assert sorted(p.name for p in outside.parent.iterdir()) == ["model.pth"]
    assert (tmp_path / "runs" / "samples" / "grid.png").is_file()
    assert (tmp_path / "runs" / "samples" / "trajectory.png").is_file()
    inside = tmp_path / "runs" / "mine" / "model.pth"
    inside.parent.mkdir(parents=True)
    inside.write_bytes(checkpoint.read_bytes())
    assert inference.main(["--checkpoint", "runs/mine/model.pth", "--steps", "2", "--per-row", "1",
                           "--guidance-strip", "strip.PNG"]) == 0  # .png in any case
    assert (inside.parent / "grid.png").is_file() and (tmp_path / "strip.PNG").is_file()
    assert not (inside.parent / "guidance.png").exists()
    # printed as the user spelt the checkpoint's path, as for the shipped weights
    assert "grid (10 rows x 1): runs/mine/grid.png\n" in capsys.readouterr().out


@pytest.mark.parametrize("flags, message", [
    (["--num-per-class", "2", "--labels", "3"], "drop --labels"),
    (["--num-per-class", "2", "--per-row", "3"], "drop --per-row"),
    (["--num-per-class", "2", "--output", "g.png"], "drop --output"),
    (["--num-per-class", "2", "--guidance-strip"], "drop --guidance-strip"),
    (["--out-dir", "somewhere"], "--out-dir: for the image files of --num-per-class only"),
    (["--batch-size", "8"], "--batch-size: for the image files of --num-per-class only"),
    (["--sampler", "ddpm", "--eta", "0"], "ddpm takes no eta (its noise is fixed, DDIM's at eta 1)"),
    (["--sampler", "plms", "--eta", "1"], "plms takes no eta (it is deterministic)"),
    (["--sampler", "ddpm", "--steps", "20"], "ddpm always takes all 1000 steps: drop --steps"),
])
def test_flags_that_would_do_nothing_are_refused(checkpoint, tmp_path, monkeypatch, capsys, flags,
                                                 message):
    monkeypatch.chdir(tmp_path)
    assert inference.main(["--checkpoint", str(checkpoint), *flags]) == 1
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert list(tmp_path.iterdir()) == []  # nothing was written


def test_a_setting_the_checkpoints_own_sampler_ignores_is_refused(checkpoint, tmp_path, capsys):
    """--eta and --steps are checked against the sampler that will run: the checkpoint's own when
    no --sampler is given."""
    ckpt = torch.load(checkpoint, weights_only=True)
    for sampler, flags, message in [("plms", ["--eta", "0.5"], "plms takes no eta"),
                                    ("ddpm", ["--steps", "20"], "ddpm always takes all 1000")]:
        ckpt["config"]["sample"]["sampler"] = sampler
        torch.save(ckpt, tmp_path / f"{sampler}.pth")
        argv = ["--checkpoint", str(tmp_path / f"{sampler}.pth"),
                "--output", str(tmp_path / "g.png")]
        assert inference.main([*argv, *flags]) == 1
        assert message in capsys.readouterr().err
        assert not (tmp_path / "g.png").exists()
    # with --sampler ddim the flag does something, and is taken
    assert inference.main([*argv, "--sampler", "ddim", "--eta", "0.5", "--steps", "2",
                           "--per-row", "1"]) == 0
    assert "ddim with 2 steps, eta 0.5" in capsys.readouterr().out


@pytest.mark.parametrize("flags", [["--output", "notes.txt/g.png"],
                                   ["--trajectory", "notes.txt/sub/t.png"],
                                   ["--guidance-strip", "notes.txt/s.png"],
                                   ["--num-per-class", "1", "--out-dir", "notes.txt/fake"]])
def test_a_file_in_the_way_of_a_picture_is_refused_before_sampling(checkpoint, tmp_path,
                                                                    monkeypatch, capsys, flags):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "notes.txt").write_text("keep me")

    def no_model(*args, **kwargs):
        raise AssertionError("the model was loaded: the path was checked only after sampling")

    monkeypatch.setattr(inference, "load_ema", no_model)
    assert inference.main(["--checkpoint", str(checkpoint), *flags]) == 1
    err = capsys.readouterr().err
    assert "notes.txt is a file, not a folder" in err and "pass another path" in err
    assert len(err.strip().splitlines()) == 1
    assert [p.name for p in tmp_path.iterdir()] == ["notes.txt"]
    assert (tmp_path / "notes.txt").read_text() == "keep me"


@pytest.mark.parametrize("flags, in_the_way", [
    (["--num-per-class", "1"], "images"),  # the default --out-dir, images/fake
    ([], "runs"),  # the default grid's folder, runs/samples for a checkpoint outside runs/
])
def test_the_default_places_are_checked_before_sampling_too(checkpoint, tmp_path, monkeypatch,
                                                            capsys, flags, in_the_way):
    """What is written where no flag names a place is checked as what a flag names."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / in_the_way).write_text("keep me")
    monkeypatch.setattr(inference, "load_ema", lambda *a, **k: pytest.fail("sampled first"))
    assert inference.main(["--checkpoint", str(checkpoint), *flags]) == 1
    err = capsys.readouterr().err
    assert f"{in_the_way} is a file, not a folder" in err and len(err.strip().splitlines()) == 1
    assert (tmp_path / in_the_way).read_text() == "keep me"
    if not flags:  # a grid with its own --output does not need the default folder
        monkeypatch.undo()
        monkeypatch.chdir(tmp_path)
        assert inference.main(["--checkpoint", str(checkpoint), "--output", "g.png"]) == 0
        assert (tmp_path / "g.png").is_file()


def test_an_unwritable_folder_is_refused(tmp_path, monkeypatch):
    """The nearest existing folder must let us write (the check asks os.access for W_OK; the
    tests run as root, who may write anywhere, so a read-only folder is simulated)."""
    read_only = {tmp_path.resolve()}
    monkeypatch.setattr(os, "access", lambda path, mode: not (Path(path).resolve() in read_only
                                                              and mode & os.W_OK))
    with pytest.raises(UserError, match=r"--output x: .* is not writable: pass a path"):
        check_can_write_in(tmp_path / "new" / "deeper", "--output x")
    read_only.clear()
    check_can_write_in(tmp_path / "new" / "deeper", "--output x")  # writable: no complaint
    assert not (tmp_path / "new").exists()  # the check creates nothing


def test_out_dir_needs_a_writable_folder_around_it(checkpoint, tmp_path, monkeypatch, capsys):
    """--num-per-class writes beside --out-dir first, then renames: the folder around it must
    be writable, even when --out-dir itself is."""
    (tmp_path / "fake").mkdir()
    monkeypatch.setattr(os, "access", lambda path, mode: Path(path).resolve() != tmp_path.resolve())
    assert inference.main(["--checkpoint", str(checkpoint), "--num-per-class", "1",
                           "--out-dir", str(tmp_path / "fake")]) == 1
    assert f"{tmp_path.resolve()} is not writable" in capsys.readouterr().err


def test_eta_is_printed_for_ddim_only(checkpoint, tmp_path, capsys):
    argv = ["--checkpoint", str(checkpoint), "--steps", "2", "--per-row", "1",
            "--output", str(tmp_path / "g.png")]
    assert inference.main(argv) == 0
    assert "ddim with 2 steps, eta 0.7" in capsys.readouterr().out  # the checkpoint's eta
    for sampler in ["plms", "dpm-solver++"]:
        assert inference.main(argv + ["--sampler", sampler]) == 0
        out = capsys.readouterr().out
        assert f"{sampler} with 2 steps, guidance" in out and ", eta " not in out


def test_autoguidance_follows_the_checkpoint_unless_a_flag_changes_it(checkpoint, tmp_path, capsys):
    def grid(*flags, ckpt=checkpoint):
        out = tmp_path / f"{len(list(tmp_path.iterdir()))}.png"
        assert inference.main(["--checkpoint", str(ckpt), "--steps", "3", "--per-row", "2",
                               "--output", str(out), *flags]) == 0
        return out.read_bytes(), capsys.readouterr().out

    own, said = grid()  # the tiny preset's W 1.5, away from the EMA at a fifth of its 8 steps
    assert "guidance 1.2, autoguidance 1.5 (from the EMA at step 2)" in said
    plain, said = grid("--autoguide-scale", "1")
    assert "autoguidance 1" not in said and plain != own
    more, said = grid("--autoguide-scale", "2")
    assert "autoguidance 2.0" in said and more not in (own, plain)
    # a checkpoint without a weak model (an earlier version's) samples without autoguidance,
    # and asking for it is refused
    ckpt = torch.load(checkpoint, weights_only=True)
    del ckpt["weak_ema"], ckpt["weak_ema_step"]
    torch.save(ckpt, tmp_path / "no_weak.pth")
    assert grid(ckpt=tmp_path / "no_weak.pth")[0] == plain
    assert grid("--autoguide-scale", "1", ckpt=tmp_path / "no_weak.pth")[0] == plain  # W 1: none
    assert inference.main(["--checkpoint", str(tmp_path / "no_weak.pth"),
                           "--autoguide-scale", "2"]) == 1
    assert "keeps no weak model to guide away from" in capsys.readouterr().err


def test_a_checkpoint_trained_without_dropped_labels_is_not_guided(checkpoint, tmp_path, capsys):
    ckpt = torch.load(checkpoint, weights_only=True)
    ckpt["config"]["model"]["class_dropout_prob"] = 0.0  # as an earlier version saved it: the
    assert ckpt["config"]["sample"]["cfg_scale"] == 1.2  # preset's guidance was kept
    torch.save(ckpt, tmp_path / "no_null.pth")
    argv = ["--checkpoint", str(tmp_path / "no_null.pth"), "--steps", "2", "--per-row", "1"]
    assert inference.main([*argv, "--output", str(tmp_path / "g.png")]) == 0
    assert "guidance 1.0, autoguidance 1.5" in capsys.readouterr().out
    for flags in [["--cfg-scale", "2"], ["--guidance-strip"]]:
        assert inference.main([*argv, *flags]) == 1
        err = capsys.readouterr().err
        assert "trained with --class-dropout-prob 0" in err and f"drop {flags[0]}" in err


def test_help_lists_no_empty_defaults(capsys):
    with pytest.raises(SystemExit):
        inference.main(["--help"])
    assert "(default: None)" not in capsys.readouterr().out


def test_out_of_memory_names_the_flags_of_what_was_sampled(checkpoint, tmp_path, monkeypatch,
                                                          capsys):
    def oom(*args, **kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")

    monkeypatch.setattr(inference, "sample_grid", oom)
    monkeypatch.setattr(inference, "generate", oom)
    assert inference.main(["--checkpoint", str(checkpoint), "--output", str(tmp_path / "g.png")]) == 1
    err = capsys.readouterr().err
    assert "--per-row or fewer --labels" in err and "--batch-size" not in err
    assert inference.main(["--checkpoint", str(checkpoint), "--num-per-class", "1",
                           "--out-dir", str(tmp_path / "f")]) == 1
    assert "pass a smaller --batch-size" in capsys.readouterr().err


def test_trajectory_panels_pair_each_state_with_its_own_timestep(checkpoint):
    """The picture's columns: state k of the sampler sits at noise level timesteps[k], and its
    x0-hat is the (clipped) predict_x0_from_eps of the network's guided prediction at exactly that
    level: the x0 the sampler itself used, with no second pass of the network."""
    from diffusion import GaussianDiffusion

    model, cfg = load_model(checkpoint)
    cfg.sample.steps = 12
    diffusion = GaussianDiffusion.from_config(cfg.diffusion)
    labels = torch.tensor([2, 7])
    states, x0_hat, titles = sampling.trajectory_panels(model, diffusion, cfg, labels,
                                                        torch.Generator().manual_seed(0))
    _, full, _ = sampling.generate(model, diffusion, labels, cfg, torch.Generator().manual_seed(0),
                                   return_intermediates=True)
    timesteps = diffusion.sampler_timesteps("ddim", 12)
    cols = shown_columns(len(full))
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
    from config import get_preset
    from diffusion import GaussianDiffusion
    from dit import DiT

    cfg = get_preset("tiny")
    cfg.sample.steps = 4
    diffusion = GaussianDiffusion.from_config(cfg.diffusion)
    strip = sampling.guidance_strip(DiT(cfg.model).eval(), diffusion, cfg, [1, 5], scales=(0, 1, 4))
    assert strip.shape == (2, 3, 1, 28, 28)
    for c in range(1, 3):
        assert torch.equal(strip[:, c], strip[:, 0])
    assert not torch.equal(strip[0, 0], strip[1, 0])  # but each digit has its own noise
    # A trained network does respond to the scale; the caller's config is left as it was.
    model, trained_cfg = load_model(checkpoint)
    trained_cfg.sample.steps = 4
    before = trained_cfg.sample.cfg_scale
    strip = sampling.guidance_strip(model, diffusion, trained_cfg, [1, 5], scales=(0, 8))
    assert not torch.equal(strip[:, 0], strip[:, 1])
    assert trained_cfg.sample.cfg_scale == before


def test_labels_choose_rows(checkpoint, tmp_path):
    grid = tmp_path / "g.png"
    assert inference.main(["--checkpoint", str(checkpoint), "--output", str(grid),
                           "--labels", "3", "1", "4", "--per-row", "5", "--steps", "3"]) == 0
    assert Image.open(grid).size == (5 * 30 + 2, 3 * 30 + 2)


def test_amp_flag_chooses_sampling_precision(checkpoint, tmp_path, capsys, monkeypatch):
    from support.cli import use_bf16

    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert use_bf16("off", cpu) is False and use_bf16("off", cuda) is False
    assert use_bf16("bf16", cpu) is True and use_bf16("bf16", cuda) is True
    assert use_bf16("auto", cpu) is False  # fp32 on every CPU, measured faster there
    # on CUDA, bf16 where the GPU has bf16 tensor cores (an A100 or H100), not on a T4
    for capability, on in [((8, 0), True), ((9, 0), True), ((7, 5), False)]:
        monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device: capability)
        assert use_bf16("auto", cuda) is on
    monkeypatch.undo()

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
    (["--eta", "-0.5"], "--eta must be between 0 and 1, got -0.5"),
    (["--eta", "1.5"], "--eta must be between 0 and 1, got 1.5"),
    (["--autoguide-scale", "-1"], "--autoguide-scale must be 0 or more"),
    (["--output", "runs/"], "--output runs/: the picture is a PNG"),
    (["--output", "grid.jpg"], "give a file name ending in .png"),
    (["--trajectory", "trajectory"], "--trajectory trajectory: the picture is a PNG"),
    (["--guidance-strip", "strip.txt"], "--guidance-strip strip.txt: the picture is a PNG"),
    (["--per-row", "0"], "--per-row must be positive, got 0"),
    (["--num-per-class", "0"], "--num-per-class must be positive, got 0"),
    (["--num-per-class", "1", "--batch-size", "0"], "--batch-size must be positive, got 0"),
])
def test_bad_sampling_flags(checkpoint, tmp_path, monkeypatch, capsys, flags, message):
    monkeypatch.chdir(tmp_path)
    assert inference.main(["--checkpoint", str(checkpoint), *flags]) == 1
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert list(tmp_path.iterdir()) == []  # refused before anything was written


def test_bad_sampler_name_is_argparse_error(checkpoint):
    with pytest.raises(SystemExit) as e:
        inference.main(["--checkpoint", str(checkpoint), "--sampler", "euler"])
    assert e.value.code == 2


def test_missing_checkpoint_names_the_shipped_weights(tmp_path, capsys):
    assert inference.main(["--checkpoint", str(tmp_path / "none.pth")]) == 1
    err = capsys.readouterr().err
    assert "no checkpoint at" in err and "python train.py" in err
    assert "--checkpoint pretrained/model.pth" in err


@pytest.mark.parametrize("where", ["runs/latent/none.pth", "absolute"])
def test_missing_latent_run_names_the_latent_preset(capsys, where):
    # runs/latent is where the latent preset writes: the message names the command that fills it
    # and the latent shipped weights, not the pixel default's, however the path is spelt
    path = Path("runs/latent/none.pth").resolve() if where == "absolute" else where
    assert inference.main(["--checkpoint", str(path)]) == 1
    err = capsys.readouterr().err
    assert "python train.py --preset latent" in err
    assert "--checkpoint pretrained/latent/model.pth" in err


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


def test_an_interrupted_write_keeps_the_previous_images_and_the_next_run_starts_afresh(tmp_path,
                                                                                      monkeypatch):
    """Ctrl-C half way: the folder keeps its earlier images, the unfinished work is hidden (a
    dot folder), and the next run clears it away and writes, returning the paths it wrote."""
    from config import get_preset

    calls = []

    def fake_generate(model, diffusion, labels, cfg, generator, bf16, autoencoder=None):
        calls.append(len(labels))
        if stop_at == len(calls):
            raise KeyboardInterrupt
        return labels.reshape(-1, 1, 1, 1).float().expand(-1, 1, 28, 28) / 10  # a grey per label

    monkeypatch.setattr(inference, "generate", fake_generate)
    cfg, folder = get_preset("tiny"), tmp_path / "fake"
    write = lambda per_class: inference.write_class_images(None, None, cfg, per_class, folder,
                                                           "cpu", batch_size=5, progress=False)
    stop_at = 0
    paths = write(1)
    assert paths == sorted(folder.iterdir()) and len(paths) == 10
    before = {p.name: p.read_bytes() for p in paths}
    stop_at = len(calls) + 2  # the second batch of the next run
    with pytest.raises(KeyboardInterrupt):
        write(2)
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before
    assert [p.name for p in tmp_path.iterdir() if not p.name.startswith(".")] == ["fake"]
    stop_at = 0
    paths = write(2)
    assert paths == sorted(folder.iterdir()) and len(paths) == 20
    assert [p.name for p in tmp_path.iterdir()] == ["fake"]


def test_class_files_replace_the_folder_whole_and_refuse_foreign_files(checkpoint, tmp_path, capsys):
    folder = tmp_path / "fake"
    argv = ["--checkpoint", str(checkpoint), "--out-dir", str(folder), "--steps", "2"]
    assert inference.main(argv + ["--num-per-class", "3"]) == 0
    assert inference.main(argv + ["--num-per-class", "1"]) == 0  # smaller: no old images left over
    assert sorted(f.name for f in folder.iterdir()) == [f"{i:05d}_{i}.png" for i in range(10)]
    assert [p.name for p in tmp_path.iterdir()] == ["fake"]  # the hidden work folder is gone
    for foreign in ["notes.txt", "00003_3.png.bak"]:  # a name that only starts like ours too
        (folder / foreign).write_text("mine")
        assert inference.main(argv + ["--num-per-class", "1"]) == 1
        assert f"did not write (e.g. {foreign!r})" in capsys.readouterr().err
        assert (folder / foreign).read_text() == "mine"
        (folder / foreign).unlink()
    (folder / "00007_7.png").unlink()
    (folder / "00007_7.png").mkdir()  # a folder named as our images are is not ours to delete
    (folder / "00007_7.png" / "notes.txt").write_text("mine")
    assert inference.main(argv + ["--num-per-class", "1"]) == 1
    assert "did not write (e.g. '00007_7.png')" in capsys.readouterr().err
    assert (folder / "00007_7.png" / "notes.txt").read_text() == "mine"
    shutil.rmtree(folder / "00007_7.png")
    (folder / "notes.txt").write_text("mine")
    assert inference.main(argv + ["--num-per-class", "1", "--trajectory"]) == 1
    assert "image files only" in capsys.readouterr().err
    a_file = tmp_path / "results.txt"
    a_file.write_text("mine")
    assert inference.main(argv[:3] + [str(a_file), "--steps", "2", "--num-per-class", "1"]) == 1
    assert "holds a file this script did not write" in capsys.readouterr().err
    assert a_file.read_text() == "mine"
