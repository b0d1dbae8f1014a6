"""Tests of train.py: checkpoints, exact resume, crash safety, DDP, and bad input."""

import contextlib
import csv
import io
import math
import os
import signal
import subprocess
import sys
import time
import types
from pathlib import Path

import pytest
import torch

import train
from config import PRESETS, get_preset
from dataset import load_mnist
from diffusion import GaussianDiffusion
from helpers import load_model, record_calls, train_config, write_tiny_mnist
from support.checkpoint import read_checkpoint, read_log, ship_weights

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    return write_tiny_mnist(tmp_path_factory.mktemp("mnist"), n_train=64, n_test=32)


def run_train(tiny_data, out_dir, *extra):
    args = ["--preset", "tiny", "--data-dir", str(tiny_data), "--out-dir", str(out_dir), *extra]
    return train.main(args)


def test_the_optimizer_steps_at_the_rate_lr_at_gives(tiny_data, tmp_path):
    # The log's lr column is lr_at computed again; this reads the rate the optimiser was given.
    from config import Config

    assert run_train(tiny_data, tmp_path, "--max-steps", "5") == 0
    ckpt = torch.load(tmp_path / "model.pth", weights_only=True)
    cfg = Config.from_dict(ckpt["config"])
    used = ckpt["optimizer"]["param_groups"][0]["lr"]
    assert used == pytest.approx(train.lr_at(4, cfg, 5)) and used < cfg.train.lr  # in the warm-up


def tiny_dit(seed: int = 0):
    """A fresh DiT of the tiny preset, and that preset's config."""
    from dit import DiT

    cfg = get_preset("tiny")
    torch.manual_seed(seed)
    return DiT(cfg.model), cfg


def test_gradients_are_clipped_to_grad_clip():
    model, cfg = tiny_dit()
    cfg.train.grad_clip = 1e-4  # far below a fresh model's gradient norm
    optimizer = train.make_optimizer(model, cfg)
    x0 = torch.rand(8, 1, 28, 28) * 2 - 1
    train.train_step(model, GaussianDiffusion(), optimizer, x0, torch.arange(8), cfg, 1e-3, False)
    grads = torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])
    assert grads.norm().item() == pytest.approx(1e-4, rel=1e-3)  # .grad keeps the clipped one


def test_the_optimiser_steps_with_the_clipped_gradient():
    """Clipping must come before optimizer.step(): with plain SGD at rate 1 the weights move by
    exactly the clipped gradient, whose norm is grad_clip (a clip after the step leaves .grad
    clipped but the weights moved by the whole gradient)."""
    model, cfg = tiny_dit()
    cfg.train.grad_clip = 1e-2  # far below a fresh model's gradient norm
    before = [p.detach().clone() for p in model.parameters()]
    optimizer = torch.optim.SGD(model.parameters(), lr=0.0)
    x0 = torch.rand(8, 1, 28, 28, generator=torch.Generator().manual_seed(0)) * 2 - 1
    train.train_step(model, GaussianDiffusion(), optimizer, x0, torch.arange(8), cfg, 1.0, False)
    moved = torch.cat([(p.detach() - b).flatten() for p, b in zip(model.parameters(), before)])
    assert moved.norm().item() == pytest.approx(1e-2, rel=1e-2)


def test_train_step_minimises_the_min_snr_weighted_loss_of_the_config():
    """train_step's loss is the diffusion loss with the config's min_snr_gamma, not plain MSE."""
    model, cfg = tiny_dit()
    cfg.train.min_snr_gamma = 0.5
    diffusion = GaussianDiffusion()
    x0 = torch.rand(16, 1, 28, 28, generator=torch.Generator().manual_seed(0)) * 2 - 1
    y = torch.arange(16) % 10
    optimizer = torch.optim.SGD(model.parameters(), lr=0.0)
    torch.manual_seed(3)  # the same t, noise and dropped labels for the step and the two below
    loss = train.train_step(model, diffusion, optimizer, x0, y, cfg, 0.0, False)  # rate 0: unmoved
    torch.manual_seed(3)
    weighted = diffusion.training_loss(model, x0, y, 0.5).item()
    torch.manual_seed(3)
    plain = diffusion.training_loss(model, x0, y, 0.0).item()
    assert weighted != pytest.approx(plain, rel=1e-3)  # the weighting matters on this batch
    assert loss == pytest.approx(weighted, rel=1e-5)


def ctrl_c_after(steps: int, signum: int = signal.SIGINT):
    """train.train_step that presses Ctrl-C (or sends `signum`) to this process right after its
    `steps`-th step (the handler of train.py only notes it, so the run saves and returns 130, or
    128 + signum)."""
    real_step, calls = train.train_step, []

    def step_then_ctrl_c(*args, **kwargs):
        loss = real_step(*args, **kwargs)
        calls.append(1)
        if len(calls) == steps:
            os.kill(os.getpid(), signum)
        return loss

    return step_then_ctrl_c


def test_train_writes_checkpoint_pictures_and_log(tiny_data, tmp_path):
    # two epochs of 4 steps (64 images, batches of 16)
    assert run_train(tiny_data, tmp_path, "--max-steps", "8") == 0
    ckpt = torch.load(tmp_path / "model.pth", weights_only=True)
    assert ckpt["step"] == 8 and ckpt["epoch"] == 2  # epochs completed
    assert ckpt["config"]["preset"] == "tiny"
    for name in ["loss.png", "log.csv", "samples/final.png", "samples/step_0000004.png"]:
        assert (tmp_path / name).stat().st_size > 0, name
    # a grid at the end of each epoch but the last, whose grid is final.png
    assert sorted(p.name for p in (tmp_path / "samples").iterdir()) == [
        "final.png", "step_0000004.png"]
    rows = (tmp_path / "log.csv").read_text().splitlines()
    assert rows[0].startswith("step,epoch,loss") and len(rows) == 1 + 8
    # each row's epoch is that of the step's batch, counted from 0
    assert [r["epoch"] for r in read_log(tmp_path / "log.csv")] == [0] * 4 + [1] * 4


def test_keep_every_keeps_those_steps_checkpoints_beside_the_latest(tiny_data, tmp_path):
    # checkpoint_every is 50 in the tiny preset, so only --keep-every and the end save here
    assert run_train(tiny_data, tmp_path, "--max-steps", "5", "--keep-every", "2") == 0
    kept = sorted(p.name for p in tmp_path.glob("step_*.pth"))
    assert kept == ["step_0000002.pth", "step_0000004.pth"]
    final = torch.load(tmp_path / "model.pth", weights_only=True)
    for name, step in zip(kept, [2, 4]):
        ckpt = torch.load(tmp_path / name, weights_only=True)
        assert ckpt["step"] == step and ckpt["config"] == final["config"]
        assert not torch.equal(ckpt["ema"]["final_layer.linear.weight"],
                               final["ema"]["final_layer.linear.weight"])  # earlier weights
    assert final["step"] == 5


def test_overwrite_leaves_nothing_of_the_run_it_replaces(tiny_data, tmp_path, capsys):
    assert run_train(tiny_data, tmp_path, "--max-steps", "6", "--keep-every", "2") == 0
    assert len(list(tmp_path.glob("step_*.pth"))) == 3
    unrelated = tmp_path / "notes.txt"
    unrelated.write_text("mine")
    (tmp_path / ".model.pth.123.0.tmp").write_bytes(b"half of a checkpoint")  # a killed save's
    assert run_train(tiny_data, tmp_path, "--max-steps", "3", "--overwrite") == 0
    out = capsys.readouterr().out
    assert "removed 6 kept checkpoints, sample grids and half-written files" in out
    assert not list(tmp_path.glob("step_*.pth"))  # step 6's would pass for the new run's
    assert not list(tmp_path.glob(".*.tmp"))
    grids = sorted(p.name for p in (tmp_path / "samples").iterdir())
    assert grids == ["final.png"]  # the new run's: 3 steps, so no grid at step 4
    assert torch.load(tmp_path / "model.pth", weights_only=True)["step"] == 3
    assert unrelated.read_text() == "mine"


def test_the_checkpoint_keeps_the_ema_of_a_fifth_of_the_run_as_the_weak_model(tiny_data, tmp_path):
    assert run_train(tiny_data, tmp_path, "--max-steps", "10", "--keep-every", "2") == 0
    final = torch.load(tmp_path / "model.pth", weights_only=True)
    at_two = torch.load(tmp_path / "step_0000002.pth", weights_only=True)
    assert at_two["weak_ema_step"] == final["weak_ema_step"] == 2  # a fifth of 10 steps
    for name, tensor in at_two["ema"].items():  # the EMA as it was at step 2, kept unchanged
        assert torch.equal(final["weak_ema"][name], tensor), name
    assert not torch.equal(final["weak_ema"]["final_layer.linear.weight"],
                           final["ema"]["final_layer.linear.weight"])
    # a run stopped before that step keeps it when resumed, as if never stopped
    assert run_train(tiny_data, tmp_path / "split", "--max-steps", "1") == 0
    assert "weak_ema" not in torch.load(tmp_path / "split" / "model.pth", weights_only=True)
    assert run_train(tiny_data, tmp_path / "split", "--max-steps", "10", "--resume") == 0
    resumed = torch.load(tmp_path / "split" / "model.pth", weights_only=True)
    assert resumed["weak_ema_step"] == 2
    for name, tensor in final["weak_ema"].items():
        assert torch.equal(resumed["weak_ema"][name], tensor), name
    # the shipped weights keep it, in half precision as the EMA
    shipped = ship_weights(tmp_path / "model.pth", tmp_path / "shipped.pth", source="test")
    assert set(shipped) == {"ema", "config", "step", "source", "weak_ema", "weak_ema_step"}
    assert shipped["weak_ema_step"] == 2
    assert torch.equal(shipped["weak_ema"]["final_layer.linear.weight"],
                       final["weak_ema"]["final_layer.linear.weight"].half())
    # a run resumed past that step without one (an earlier version's) keeps none, rather than a
    # later EMA under the weak model's name
    older = torch.load(tmp_path / "split" / "model.pth", weights_only=True)
    del older["weak_ema"], older["weak_ema_step"]
    older["config"]["train"].pop("weak_model_at")
    torch.save(older, tmp_path / "split" / "model.pth")
    assert run_train(tiny_data, tmp_path / "split", "--max-steps", "12", "--resume") == 0
    assert "weak_ema" not in torch.load(tmp_path / "split" / "model.pth", weights_only=True)
    # --weak-model-at 0 keeps none
    assert run_train(tiny_data, tmp_path / "none", "--max-steps", "4", "--weak-model-at", "0") == 0
    assert "weak_ema" not in torch.load(tmp_path / "none" / "model.pth", weights_only=True)


def test_only_the_final_grid_is_guided_away_from_the_weak_model(tiny_data, tmp_path, monkeypatch):
    # the weak model each grid was drawn with (None: the EMA alone)
    weak_models = record_calls(monkeypatch, train, "with_autoguidance", lambda a, out: a[1])
    assert run_train(tiny_data, tmp_path, "--max-steps", "10", "--sample-every", "3") == 0
    assert (tmp_path / "samples" / "step_0000009.png").exists()  # grids at 3, 6 and 9, then final
    assert len(weak_models) == 4
    assert weak_models[:3] == [None] * 3 and weak_models[3] is not None


def test_resume_continues_exactly(tiny_data, tmp_path):
    straight, split = tmp_path / "straight", tmp_path / "split"
    assert run_train(tiny_data, straight, "--max-steps", "7") == 0
    assert run_train(tiny_data, split, "--max-steps", "3") == 0
    assert run_train(tiny_data, split, "--max-steps", "7", "--resume") == 0
    a = torch.load(straight / "model.pth", weights_only=True)
    b = torch.load(split / "model.pth", weights_only=True)
    assert b["step"] == 7
    assert a["weak_ema_step"] == b["weak_ema_step"] == 1  # round(0.2 * 7), before the stop
    for key in ["model", "ema", "weak_ema"]:
        for name, tensor in a[key].items():
            assert torch.equal(tensor, b[key][name]), f"{key}.{name} differs after resume"
    for sa, sb in zip(a["optimizer"]["state"].values(), b["optimizer"]["state"].values()):
        assert torch.equal(sa["exp_avg"], sb["exp_avg"]) and torch.equal(sa["step"], sb["step"])
    log = (split / "log.csv").read_text().splitlines()
    assert [int(r.split(",")[0]) for r in log[1:]] == list(range(1, 8))


def test_resume_refuses_changed_model_flag(tiny_data, tmp_path, capsys):
    assert run_train(tiny_data, tmp_path, "--max-steps", "2") == 0
    assert run_train(tiny_data, tmp_path, "--resume", "--hidden-size", "64") == 1
    assert "--hidden-size 64 differs" in capsys.readouterr().err


def test_resume_refuses_another_precision_or_process_count(tiny_data, tmp_path, capsys):
    """An exact resume needs the arithmetic and the data shards of the run it continues: a run
    trained under bf16 autocast resumes only with it, and one of two processes only with two."""
    assert run_train(tiny_data, tmp_path, "--max-steps", "2", "--amp", "bf16") == 0
    assert torch.load(tmp_path / "model.pth", weights_only=True)["bf16"] is True
    assert run_train(tiny_data, tmp_path, "--max-steps", "3", "--resume") == 1  # fp32 on a CPU
    err = capsys.readouterr().err
    assert "trained with 1 process(es) and bf16 on; resume it the same way" in err
    assert run_train(tiny_data, tmp_path, "--max-steps", "3", "--resume", "--amp", "bf16") == 0
    ckpt = torch.load(tmp_path / "model.pth", weights_only=True)
    assert ckpt["step"] == 3
    ckpt["world_size"] = 2  # as if torchrun had trained it with two processes
    torch.save(ckpt, tmp_path / "model.pth")
    assert run_train(tiny_data, tmp_path, "--max-steps", "4", "--resume", "--amp", "bf16") == 1
    assert "trained with 2 process(es) and bf16 on" in capsys.readouterr().err


def test_a_resumed_run_may_change_how_long_and_how_often_but_nothing_else():
    """With --resume, every flag of RESUMABLE_FLAGS may take a new value, and any other flag only
    the run's own (given again, it changes nothing and is accepted)."""
    from support.cli import RESUMABLE_FLAGS, UserError, config_from_args

    new = {"epochs": "3", "max_steps": "9", "time_limit": "2.5", "log_every": "7",
           "eval_every": "11", "sample_every": "13", "checkpoint_every": "17", "keep_every": "19"}
    assert set(new) == RESUMABLE_FLAGS
    flags = [x for name, value in new.items() for x in (f"--{name.replace('_', '-')}", value)]
    cfg = config_from_args(train.parse_args(["--resume", *flags]), PRESETS,
                           resumed=get_preset("tiny"))
    for name, value in new.items():
        assert getattr(cfg.train, name) == type(getattr(cfg.train, name))(value), name
    same = ["--batch-size", "16", "--lr", str(get_preset("tiny").train.lr), "--hidden-size", "32"]
    cfg = config_from_args(train.parse_args(["--resume", *same]), PRESETS,
                           resumed=get_preset("tiny"))
    assert cfg == get_preset("tiny")
    with pytest.raises(UserError, match="--batch-size 8 differs from the run being resumed"):
        config_from_args(train.parse_args(["--resume", "--batch-size", "8"]), PRESETS,
                         resumed=get_preset("tiny"))


def test_resuming_a_run_with_no_steps_left_says_how_to_train_on(tiny_data, tmp_path, capsys):
    assert run_train(tiny_data, tmp_path, "--max-steps", "3") == 0
    before = (tmp_path / "model.pth").read_bytes()
    final = (tmp_path / "samples" / "final.png").stat().st_mtime_ns
    capsys.readouterr()
    assert run_train(tiny_data, tmp_path, "--resume") == 0  # finished: left as it is
    # a run of --max-steps ignores --epochs, so the advice names --max-steps
    assert ("nothing to train; to train on, resume with a larger --max-steps (or --max-steps 0 "
            "and a larger --epochs)") in capsys.readouterr().out
    assert run_train(tiny_data, tmp_path, "--resume", "--max-steps", "2") == 1  # ends before
    assert "past this run's end at step 2" in capsys.readouterr().err
    assert (tmp_path / "model.pth").read_bytes() == before
    assert (tmp_path / "samples" / "final.png").stat().st_mtime_ns == final
    assert run_train(tiny_data, tmp_path, "--resume", "--max-steps", "4") == 0
    # a run of --epochs (no --max-steps) is that many epochs of 4 steps, and says so when done
    by_epochs = tmp_path / "epochs"
    assert run_train(tiny_data, by_epochs, "--epochs", "2", "--sample-every", "1000000") == 0
    assert torch.load(by_epochs / "model.pth", weights_only=True)["step"] == 8
    capsys.readouterr()
    assert run_train(tiny_data, by_epochs, "--resume") == 0
    assert ("is finished (step 8 of 8): nothing to train; to train on, resume with a larger "
            "--epochs or --max-steps") in capsys.readouterr().out


@pytest.mark.parametrize("again, message", [
    (["--max-steps", "2"], "already exists: pass --resume"),  # a second run into the same folder
    (["--resume", "--overwrite"], "pass one of them"),
])
def test_a_refused_second_run_leaves_the_checkpoint_alone(tiny_data, tmp_path, capsys, again,
                                                          message):
    assert run_train(tiny_data, tmp_path, "--max-steps", "2") == 0
    before = (tmp_path / "model.pth").read_bytes()
    assert run_train(tiny_data, tmp_path, *again) == 1
    assert message in capsys.readouterr().err
    assert (tmp_path / "model.pth").read_bytes() == before


def test_sigkill_mid_run_leaves_intact_checkpoint(tiny_data, tmp_path):
    cmd = [sys.executable, str(ROOT / "train.py"), "--preset", "tiny", "--data-dir", str(tiny_data),
           "--out-dir", str(tmp_path), "--max-steps", "100000", "--checkpoint-every", "1",
           "--sample-every", "1000000"]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    ckpt = tmp_path / "model.pth"
    deadline = time.time() + 60
    while time.time() < deadline and not ckpt.exists():
        time.sleep(0.1)
    time.sleep(1.0)  # now it is saving a checkpoint every step: kill it in the middle of that
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    state = read_checkpoint(ckpt, with_training_state=True)  # loads: the file is intact
    step = state["step"]
    assert step >= 1
    assert run_train(tiny_data, tmp_path, "--resume", "--max-steps", str(step + 3),
                     "--checkpoint-every", "1", "--sample-every", "1000000") == 0
    assert torch.load(ckpt, weights_only=True)["step"] == step + 3


CRASH_IN_THIRD_SAVE = """
import io, os, sys, torch
sys.path.insert(0, sys.argv.pop(1))
import train
real_save, calls = torch.save, []


def crashing_save(obj, f, *args, **kwargs):
    calls.append(1)
    if len(calls) == 3:  # write half of the third checkpoint, then die like SIGKILL: no cleanup
        buf = io.BytesIO()
        real_save(obj, buf)
        f.write(buf.getvalue()[: len(buf.getvalue()) // 2])
        f.flush()
        os._exit(137)
    return real_save(obj, f, *args, **kwargs)
torch.save = crashing_save
sys.exit(train.main(sys.argv[1:]))
"""


def run_until_it_dies(script, tiny_data, out_dir):
    """Run a script that patches train.py to die mid-save (exit 137, like SIGKILL): a tiny run of
    10 steps with a checkpoint every 2."""
    cmd = [sys.executable, "-c", script, str(ROOT), "--preset", "tiny", "--data-dir",
           str(tiny_data), "--out-dir", str(out_dir), "--max-steps", "10", "--checkpoint-every",
           "2", "--sample-every", "1000000"]
    res = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert res.returncode == 137, res.stderr[-2000:]


def test_crash_in_the_middle_of_a_save_keeps_the_previous_checkpoint(tiny_data, tmp_path):
    # Deterministic twin of the SIGKILL test: the process dies exactly halfway through writing.
    run_until_it_dies(CRASH_IN_THIRD_SAVE, tiny_data, tmp_path)
    assert list(tmp_path.glob(".model.pth.*.tmp"))  # the half-written file is the temporary one
    assert read_checkpoint(tmp_path / "model.pth", with_training_state=True)["step"] == 4
    assert run_train(tiny_data, tmp_path, "--resume", "--max-steps", "6") == 0
    assert torch.load(tmp_path / "model.pth", weights_only=True)["step"] == 6
    assert not list(tmp_path.glob(".*.tmp"))  # the resumed run cleared the dead save's half-file


KILLED_BETWEEN_LOG_AND_CHECKPOINT = """
import os, sys
sys.path.insert(0, sys.argv.pop(1))
import train
done = []


def dies_after_the_fifth_write(write):
    def wrapped(*args, **kwargs):
        write(*args, **kwargs)
        done.append(1)
        if len(done) == 5:  # the third save's first file written, its second not: SIGKILL here
            os._exit(137)
    return wrapped
train.write_log = dies_after_the_fifth_write(train.write_log)
train.save_checkpoint = dies_after_the_fifth_write(train.save_checkpoint)
sys.exit(train.main(sys.argv[1:]))
"""


def test_a_kill_between_the_log_and_the_checkpoint_loses_no_log_rows(tiny_data, tmp_path):
    # Each save writes log.csv and model.pth, one after the other. Killed between them, the
    # resumed run must still log every step once: the log may run ahead of the checkpoint
    # (read_log drops the extra rows) but must not fall behind it.
    run_until_it_dies(KILLED_BETWEEN_LOG_AND_CHECKPOINT, tiny_data, tmp_path)
    assert run_train(tiny_data, tmp_path, "--resume", "--max-steps", "10") == 0
    assert [row["step"] for row in read_log(tmp_path / "log.csv")] == list(range(1, 11))


def test_sigint_saves_and_exits_cleanly(tiny_data, tmp_path):
    cmd = [sys.executable, str(ROOT / "train.py"), "--preset", "tiny", "--data-dir", str(tiny_data),
           "--out-dir", str(tmp_path), "--max-steps", "1000000", "--checkpoint-every", "1000000",
           "--sample-every", "1000000"]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env)
    for line in proc.stdout:  # wait until training is under way
        if line.startswith("preset tiny"):
            break
    time.sleep(1.0)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "Traceback" not in err
    assert "--resume" in out
    assert torch.load(tmp_path / "model.pth", weights_only=True)["step"] > 0
    assert (tmp_path / "log.csv").exists()


def test_checkpoint_is_weights_only_loadable_and_malicious_pickle_refused(tiny_data, tmp_path):
    assert run_train(tiny_data, tmp_path, "--max-steps", "2") == 0
    torch.load(tmp_path / "model.pth", weights_only=True)  # plain types only

    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    evil = tmp_path / "evil.pth"
    torch.save({"model": Evil(), "ema": {}, "config": {}}, evil)
    from support.cli import UserError
    with pytest.raises(UserError, match="weights_only"):
        read_checkpoint(evil)
    assert not marker.exists()


def test_nan_loss_stops_and_keeps_last_good_checkpoint(tiny_data, tmp_path, monkeypatch, capsys):
    real_step = train.train_step
    calls = []

    def step_then_nan(*args, **kwargs):
        calls.append(1)
        loss = real_step(*args, **kwargs)
        return float("nan") if len(calls) >= 5 else loss

    monkeypatch.setattr(train, "train_step", step_then_nan)
    status = run_train(tiny_data, tmp_path, "--max-steps", "20", "--checkpoint-every", "2")
    assert status == 1
    err = capsys.readouterr().err
    assert "loss is nan at step 5" in err and "last good checkpoint" in err and "(step 4)" in err
    # the advice is a new run: a resumed one may not change its rate, and fp32 has no --amp off
    assert "Start a new run (--overwrite) with a lower --lr:" in err and "--amp" not in err
    assert torch.load(tmp_path / "model.pth", weights_only=True)["step"] == 4
    # An --overwrite run that fails before its first checkpoint must not offer the model.pth of
    # the run it replaces as its own good checkpoint.
    calls.clear()
    assert run_train(tiny_data, tmp_path, "--max-steps", "20", "--checkpoint-every", "10",
                     "--overwrite") == 1
    err = capsys.readouterr().err
    assert "this run wrote no checkpoint yet" in err and "last good checkpoint" not in err


def test_out_of_memory_batch_gives_message(tiny_data, tmp_path, monkeypatch, capsys):
    def oom(*args, **kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")

    assert run_train(tiny_data, tmp_path, "--max-steps", "2", "--batch-size", "32") == 0
    capsys.readouterr()
    real_step = train.train_step
    monkeypatch.setattr(train, "train_step", oom)
    fresh = tmp_path / "fresh"
    assert run_train(tiny_data, fresh, "--max-steps", "5", "--batch-size", "32") == 1
    err = capsys.readouterr().err
    assert "batch size 32 does not fit in memory" in err and "pass a smaller --batch-size" in err
    # A resumed run may not change its batch size: the advice is a new run, which it accepts.
    assert run_train(tiny_data, tmp_path, "--max-steps", "5", "--resume") == 1
    err = capsys.readouterr().err
    assert "a resumed run keeps its batch size, so start a new run" in err
    monkeypatch.setattr(train, "train_step", real_step)
    assert run_train(tiny_data, tmp_path / "new", "--max-steps", "2", "--batch-size", "16") == 0


def test_data_dir_without_mnist_offline(tmp_path, monkeypatch, capsys):
    from urllib.error import URLError
    import torchvision.datasets.mnist as tv_mnist

    def offline(*args, **kwargs):
        raise URLError("no network")

    monkeypatch.setattr(tv_mnist, "download_and_extract_archive", offline)
    empty = tmp_path / "empty"
    empty.mkdir()
    assert train.main(["--preset", "tiny", "--data-dir", str(empty), "--out-dir",
                       str(tmp_path / "run")]) == 1
    err = capsys.readouterr().err
    assert "MNIST not found" in err and "--data-dir" in err and "Traceback" not in err
    assert "no network" in err and len(err.strip().splitlines()) == 1  # the why, in one line


@pytest.mark.parametrize("flags, message", [
    (["--batch-size", "0"], "--batch-size must be positive"),
    (["--lr", "-1"], "--lr must be positive"),
    (["--patch-size", "5"], "patch size 5 does not divide the image size 28: pass a --patch-size of 1, 2, 4, 7, 14, 28"),
    (["--batch-size", "1000"], "pass a smaller --batch-size"),
    (["--keep-every", "-1"], "--keep-every must be 0 or more"),
    (["--min-snr-gamma", "-5"], "--min-snr-gamma must be 0 or more (0 = plain MSE)"),
    (["--lr", "0"], "--lr must be positive, got 0.0"),
    (["--eval-every", "0"], "--eval-every must be positive"),
    (["--checkpoint-every", "0"], "--checkpoint-every must be positive"),
    (["--mlp-ratio", "0"], "--mlp-ratio must be positive"),
    (["--hidden-size", "30"], "hidden size 30 must be a multiple of 4"),  # 2 heads divide it
    (["--ema-decay", "1"], "--ema-decay must be in [0, 1), got 1.0"),
    (["--weak-model-at", "1"], "--weak-model-at must be in [0, 1)"),
    (["--class-dropout-prob", "1"], "--class-dropout-prob must be in [0, 1), got 1.0"),
])


def test_bad_flags(tiny_data, tmp_path, capsys, flags, message):
    assert run_train(tiny_data, tmp_path, *flags) == 1
    assert message in capsys.readouterr().err


def test_a_gpu_the_machine_lacks_is_refused_in_one_line(monkeypatch):
    """--device cuda:N past the GPUs PyTorch sees, or more torchrun processes on a machine than
    it has GPUs: a UserError before any work, not "invalid device ordinal" from deep inside."""
    from support.cli import UserError, pick_device
    from support.distributed import setup_processes

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert pick_device("cuda:0") == torch.device("cuda", 0)
    with pytest.raises(UserError, match=r"--device cuda:1: PyTorch sees 1 CUDA GPU \(cuda:0\)"):
        pick_device("cuda:1")
    for name, value in {"WORLD_SIZE": "2", "RANK": "1", "LOCAL_RANK": "1"}.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(UserError, match="process 1 of this machine .* pass a smaller --nproc"):
        setup_processes("cuda")
    # under torchrun each process takes the GPU of its LOCAL_RANK: a GPU named is refused
    with pytest.raises(UserError,
                       match="--device cuda:0: under torchrun each process takes the GPU"):
        setup_processes("cuda:0")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(UserError, match="--device cuda asked for, but PyTorch sees no CUDA GPU"):
        pick_device("cuda")


def test_a_device_that_is_not_a_device_or_not_supported_is_refused_in_one_line():
    from support.cli import UserError, pick_device

    assert pick_device("cpu") == torch.device("cpu")
    with pytest.raises(UserError, match="unknown device 'gpu': use cpu, cuda or cuda:N"):
        pick_device("gpu")
    with pytest.raises(UserError, match="device 'meta' is not supported here: use cpu or cuda"):
        pick_device("meta")


def test_preset_with_resume_picks_the_folder_and_must_match_the_run(tiny_data, tmp_path, capsys):
    """--preset with --resume does something or is refused: it picks the default folder of that
    preset (runs/latent for the latent preset), and a preset other than the run's is an error."""
    assert train.parse_args(["--preset", "latent", "--resume"]).out_dir == "runs/latent"
    assert train.parse_args(["--resume"]).out_dir == "runs/default"
    assert run_train(tiny_data, tmp_path, "--max-steps", "2") == 0
    assert run_train(tiny_data, tmp_path, "--max-steps", "3", "--resume") == 0  # its own: fine
    argv = ["--preset", "cpu", "--data-dir", str(tiny_data), "--out-dir", str(tmp_path),
            "--resume", "--max-steps", "4"]
    assert train.main(argv) == 1
    err = capsys.readouterr().err
    assert "--preset cpu: the run being resumed was trained with preset tiny" in err
    assert train.main(argv[2:]) == 0  # without --preset: the run's own


def test_an_out_dir_that_cannot_be_a_folder_is_refused_before_any_work(tiny_data, tmp_path,
                                                                         capsys, monkeypatch):
    """A file where the run's folder would go: a one-line error before MNIST is even loaded (the
    latent preset would otherwise train its autoencoder for minutes first)."""
    in_the_way = tmp_path / "taken"
    in_the_way.write_text("a file")
    monkeypatch.setattr(train, "load_mnist", lambda *a, **k: pytest.fail("loaded MNIST"))
    assert run_train(tiny_data, in_the_way / "run") == 1
    err = capsys.readouterr().err
    assert f"{in_the_way} is a file, not a folder" in err and "Traceback" not in err
    assert in_the_way.read_text() == "a file"


def test_resume_without_checkpoint(tiny_data, tmp_path, capsys):
    assert run_train(tiny_data, tmp_path, "--resume") == 1
    assert "nothing to resume" in capsys.readouterr().err


@pytest.mark.slow
def test_torchrun_two_gloo_processes_stay_in_sync(tiny_data, tmp_path):
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           str(ROOT / "train.py"), "--preset", "tiny", "--data-dir", str(tiny_data),
           "--out-dir", str(tmp_path), "--max-steps", "3", "--device", "cpu"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    res = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300, env=env)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "weights identical on all 2 ranks: True" in res.stdout
    assert "x 2 processes" in res.stdout
    ckpt = torch.load(tmp_path / "model.pth", weights_only=True)
    assert ckpt["step"] == 3 and len(ckpt["rng"]) == 2
    # each rank draws its own t and noise (seed + rank): the same draws would waste the second
    assert not torch.equal(ckpt["rng"][0]["torch"], ckpt["rng"][1]["torch"])
    assert ckpt["weak_ema_step"] == 1  # kept by the main process, a fifth of the way (rounded)
    assert not torch.equal(ckpt["weak_ema"]["final_layer.linear.weight"],
                           ckpt["ema"]["final_layer.linear.weight"])


AGREE_SCRIPT = """
import sys, torch, torch.distributed as dist
sys.path.insert(0, {root!r})
from support.distributed import Processes, agree
rank = int(sys.argv[1])
dist.init_process_group("gloo", init_method="file://" + {init!r}, rank=rank, world_size=2)
# rank 1 alone was signalled; rank 0 alone ran out of time; no NaN anywhere
print(agree(Processes(torch.device("cpu"), rank, 2), rank == 1, rank == 0, False))
dist.destroy_process_group()
"""


@pytest.mark.slow
def test_ranks_agree_on_each_reason_to_stop_apart(tmp_path):
    """Two gloo processes: each reason to stop (a signal, the time limit, a NaN loss) is shared
    on its own, so that every rank stops after the same step and reports the same reason (a
    rank whose clock ran out first used to make the main one report a Ctrl-C)."""
    script = tmp_path / "agree.py"
    script.write_text(AGREE_SCRIPT.format(root=str(ROOT), init=str(tmp_path / "init")))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    runs = [subprocess.Popen([sys.executable, str(script), str(r)], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True, env=env) for r in (0, 1)]
    outs = [r.communicate(timeout=120) for r in runs]
    assert all(r.returncode == 0 for r in runs), [err[-2000:] for _, err in outs]
    assert [out.strip() for out, _ in outs] == ["(True, True, False)"] * 2


def test_time_limit_counts_over_resumes(tiny_data, tmp_path, capsys):
    flags = ["--max-steps", "1000000", "--sample-every", "1000000", "--checkpoint-every", "1000000"]
    assert run_train(tiny_data, tmp_path, *flags, "--time-limit", "0.02") == 0  # 1.2 s
    first = torch.load(tmp_path / "model.pth", weights_only=True)
    assert "time limit of 0.02 min reached" in capsys.readouterr().out
    assert 1.2 <= first["train_seconds"] < 30 and first["step"] > 0
    # a limit already used up is refused: else each --resume would add one step and stop again
    assert run_train(tiny_data, tmp_path, *flags, "--time-limit", "0.02", "--resume") == 1
    assert "resume with a larger --time-limit" in capsys.readouterr().err
    limit = first["train_seconds"] / 60 + 0.02
    assert run_train(tiny_data, tmp_path, *flags, "--time-limit", f"{limit}", "--resume") == 0
    second = torch.load(tmp_path / "model.pth", weights_only=True)
    assert second["step"] > first["step"] and limit * 60 <= second["train_seconds"] < 60


def test_the_log_clock_and_the_time_limit_count_each_step_over_resumes(tiny_data, tmp_path,
                                                                       monkeypatch, capsys):
    """With a clock (train.py's time.time) that moves exactly one second per training step:
    log.csv's elapsed_sec is the training time so far, over resumes, and images_per_sec the
    images since the row before over the time since it (16 per step of 16); the time limit stops
    a run after the step that reaches it, counting the time of the run it resumes, and a run
    that has used exactly its limit is refused."""
    clock, real_step = [1000.0], train.train_step

    def one_second_step(*args, **kwargs):
        loss = real_step(*args, **kwargs)
        clock[0] += 1.0
        return loss

    monkeypatch.setattr(train, "time", types.SimpleNamespace(time=lambda: clock[0]))
    monkeypatch.setattr(train, "train_step", one_second_step)
    flags = ["--max-steps", "20", "--log-every", "2", "--sample-every", "1000000"]
    assert run_train(tiny_data, tmp_path, *flags, "--time-limit", "0.1") == 0  # 6 s
    assert "time limit of 0.1 min reached at step 6" in capsys.readouterr().out
    first = torch.load(tmp_path / "model.pth", weights_only=True)
    assert first["step"] == 6 and first["train_seconds"] == 6.0
    assert run_train(tiny_data, tmp_path, *flags, "--time-limit", "0.1", "--resume") == 1
    assert "has trained 0.1 min, its whole --time-limit of 0.1" in capsys.readouterr().err
    assert run_train(tiny_data, tmp_path, *flags, "--time-limit", "0.15", "--resume") == 0  # 9 s
    second = torch.load(tmp_path / "model.pth", weights_only=True)
    assert second["step"] == 9 and second["train_seconds"] == 9.0
    rows = read_log(tmp_path / "log.csv")
    assert [r["step"] for r in rows] == [2, 4, 6, 8]
    assert [r["elapsed_sec"] for r in rows] == [2.0, 4.0, 6.0, 8.0]
    assert [r["images_per_sec"] for r in rows] == [16.0] * 4


def test_sigterm_stops_as_ctrl_c_does_and_leaves_the_handlers_as_they_were(tiny_data, tmp_path,
                                                                          monkeypatch):
    """SIGTERM (a scheduler's stop) is a clean stop too: the step finishes, the checkpoint is
    saved, no grid is drawn even at an epoch's end, and the exit status is 128 + 15; afterwards
    the signal handlers are the ones from before the run."""
    noted = []
    before = signal.signal(signal.SIGTERM, lambda signum, frame: noted.append(signum))
    try:
        handlers = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
        monkeypatch.setattr(train, "train_step", ctrl_c_after(4, signal.SIGTERM))
        assert run_train(tiny_data, tmp_path, "--max-steps", "10") == 128 + signal.SIGTERM
        assert noted == []  # train.py's own handler took it
        assert {s: signal.getsignal(s) for s in handlers} == handlers
    finally:
        signal.signal(signal.SIGTERM, before)
    assert torch.load(tmp_path / "model.pth", weights_only=True)["step"] == 4
    assert not (tmp_path / "samples" / "step_0000004.png").exists()  # an epoch ends at step 4


def test_the_log_looks_inside_the_trained_weights_on_the_test_digits(tiny_data, tmp_path):
    """log.csv's gates and held-out losses are those of the weights being trained (not the EMA),
    on the first test digits (not training digits): computed again here from the checkpoint."""
    assert run_train(tiny_data, tmp_path, "--max-steps", "3", "--sample-every", "1000000") == 0
    last = read_log(tmp_path / "log.csv")[-1]
    model, cfg = load_model(tmp_path / "model.pth", use_ema=False)
    heldout = train.heldout_digits(*load_mnist(tiny_data, train=False), cfg, None, "cpu")
    diffusion = GaussianDiffusion.from_config(cfg.diffusion)
    want = train.looking_inside(model, diffusion, heldout, cfg, with_heldout=True)
    assert "heldout_loss" in want and "gate_attn_0" in want
    assert {k: last[k] for k in want} == pytest.approx(want, rel=1e-6)


def test_ema_flags_reach_the_config():
    assert train_config(*([])).train.ema_warmup is True
    cfg = train_config(*(["--no-ema-warmup", "--ema-decay", "0"]))
    assert cfg.train.ema_warmup is False and cfg.train.ema_decay == 0
    assert train.ema_decay_at(0, cfg) == 0  # decay 0: the EMA is a copy of the weights
    cfg = train_config(*(["--no-ema-warmup"]))
    assert train.ema_decay_at(0, cfg) == cfg.train.ema_decay == 0.9999


def test_no_label_dropout_means_no_classifier_free_guidance():
    """Without dropped labels the null label's embedding never trains, so the run's config samples
    with guidance 1 (the grids, and inference.py's default); autoguidance needs no null label."""
    assert train_config().sample.cfg_scale == 1.2
    cfg = train_config("--class-dropout-prob", "0")
    assert cfg.sample.cfg_scale == 1.0 and cfg.sample.autoguide_scale == 1.5
    assert train_config("--class-dropout-prob", "0.01").sample.cfg_scale == 1.2  # rare, but seen


def test_learning_rate_warm_up_is_linear_then_constant():
    cfg = train_config(*(["--no-lr-decay"]))  # no warm-up, no decay
    assert cfg.train.warmup_steps == 0 and train.lr_at(0, cfg, 10) == cfg.train.lr
    assert train.lr_at(9, cfg, 10) == cfg.train.lr
    cfg = train_config(*(["--warmup-steps", "4", "--lr", "1e-3",
                                                    "--no-lr-decay"]))
    assert [train.lr_at(s, cfg, 10) for s in range(6)] == pytest.approx(
        [2.5e-4, 5e-4, 7.5e-4, 1e-3, 1e-3, 1e-3])


def test_learning_rate_decay_is_a_half_cosine_after_the_warm_up():
    cfg = train_config(*(["--warmup-steps", "2", "--lr", "1e-3",
                                                    "--lr-decay"]))
    # Steps 0 and 1 warm up; then 6 steps fall from the full rate (step 2) towards 0 (step 8).
    lrs = [train.lr_at(s, cfg, 8) for s in range(8)]
    assert lrs[:3] == pytest.approx([5e-4, 1e-3, 1e-3])
    assert lrs[5] == pytest.approx(5e-4)  # half-way down the cosine: half the rate
    assert all(a > b for a, b in zip(lrs[2:], lrs[3:])) and lrs[-1] > 0
    assert train.lr_at(8, cfg, 8) == pytest.approx(0, abs=1e-12)


def test_ema_warm_up_changes_the_average_of_a_real_run(tiny_data, tmp_path):
    assert train.ema_decay_at(0, train_config(*([]))) == 0.1
    emas = []
    for name, flags in [("warm", []), ("cold", ["--no-ema-warmup"])]:
        assert run_train(tiny_data, tmp_path / name, "--max-steps", "2", *flags) == 0
        emas.append(torch.load(tmp_path / name / "model.pth", weights_only=True)["ema"])
    model = torch.load(tmp_path / "cold" / "model.pth", weights_only=True)["model"]
    # Same weights (the flag does not touch training), different averages: without the warm-up
    # the average has barely moved from the initial weights.
    name = next(k for k in model if not torch.equal(model[k], emas[1][k]))
    assert not torch.equal(emas[0][name], emas[1][name])


def test_help_shows_each_presets_value_of_the_override_flags():
    help_text = io.StringIO()
    with pytest.raises(SystemExit), contextlib.redirect_stdout(help_text):
        train.parse_args(["--help"])
    text = " ".join(help_text.getvalue().split())  # undo the line wrapping
    assert "(default: None)" not in text
    assert "[cpu 16, gpu 30, latent 12, tiny 1]" in text  # --epochs
    assert "[cpu True, gpu False, latent True, tiny True]" in text  # --lr-decay, a yes/no flag
    assert "[cpu 7, gpu 2, latent 2, tiny 7]" in text  # --patch-size
    args = train.parse_args([])
    assert not hasattr(args, "epochs") and not hasattr(args, "ema_warmup")  # not given: the preset's


# ------------------------------------------------------------------------------ EMA arithmetic

def test_update_ema_moves_each_weight_by_one_minus_decay():
    """ema <- decay * ema + (1 - decay) * model, on known numbers; the model is left alone."""
    ema, model = torch.nn.Linear(2, 1), torch.nn.Linear(2, 1)
    with torch.no_grad():
        ema.weight.copy_(torch.tensor([[1.0, -2.0]]))
        ema.bias.fill_(0.5)
        model.weight.copy_(torch.tensor([[3.0, 2.0]]))
        model.bias.fill_(-0.5)
    train.update_ema(ema, model, 0.9)
    assert ema.weight.tolist()[0] == pytest.approx([1.2, -1.6])  # 0.9 * 1 + 0.1 * 3, ...
    assert ema.bias.item() == pytest.approx(0.4)
    train.update_ema(ema, model, 0.75)
    assert ema.weight.tolist()[0] == pytest.approx([1.65, -0.7])  # 0.75 * 1.2 + 0.25 * 3, ...
    assert model.weight.tolist()[0] == [3.0, 2.0] and model.bias.item() == -0.5
    train.update_ema(ema, model, 0.0)  # decay 0: a copy
    assert torch.equal(ema.weight, model.weight) and torch.equal(ema.bias, model.bias)


def test_ema_decay_warm_up_values():
    """With the warm-up the decay is min(ema_decay, (1 + step) / (10 + step)) at every step, not
    only the first; without it, ema_decay throughout."""
    cfg = get_preset("cpu")
    cfg.train.ema_decay, cfg.train.ema_warmup = 0.9999, True
    for step, want in [(0, 0.1), (1, 2 / 11), (9, 10 / 19), (90, 0.91), (890, 0.99),
                       (10**6, 0.9999)]:
        assert train.ema_decay_at(step, cfg) == pytest.approx(want), step
    cfg.train.ema_decay = 0.5  # the cap takes over once the warm-up passes it (step 8)
    assert [train.ema_decay_at(s, cfg) for s in (7, 8, 100)] == pytest.approx([8 / 17, 0.5, 0.5])
    cfg.train.ema_warmup = False
    assert [train.ema_decay_at(s, cfg) for s in (0, 5, 1000)] == [0.5, 0.5, 0.5]


def test_training_loop_averages_with_the_decay_of_each_step(tiny_data, tmp_path, monkeypatch):
    """The loop updates the EMA once per step, after the optimiser step, with ema_decay_at of
    that step's 0-based index: 0.1, 2/11, 3/12 for a run's first three steps."""
    real_update, seen = train.update_ema, []

    def spy(ema, model, decay):
        seen.append(decay)
        real_update(ema, model, decay)

    monkeypatch.setattr(train, "update_ema", spy)
    assert run_train(tiny_data, tmp_path, "--max-steps", "3", "--sample-every", "1000000") == 0
    assert seen == pytest.approx([1 / 10, 2 / 11, 3 / 12])


def test_logged_loss_is_the_mean_of_the_steps_since_the_last_row(tiny_data, tmp_path, monkeypatch):
    """log.csv's loss at each row is the mean of the training losses of the steps since the row
    before (7 steps logged every 3: rows at 3, 6 and the last step, 7), not the last batch's."""
    real_step, losses = train.train_step, []

    def spy(*args, **kwargs):
        losses.append(real_step(*args, **kwargs))
        return losses[-1]

    monkeypatch.setattr(train, "train_step", spy)
    assert run_train(tiny_data, tmp_path, "--max-steps", "8", "--log-every", "3",
                     "--sample-every", "1000000") == 0
    rows = list(csv.DictReader((tmp_path / "log.csv").open()))
    assert [int(r["step"]) for r in rows] == [3, 6, 8]
    means = [sum(losses[0:3]) / 3, sum(losses[3:6]) / 3, sum(losses[6:8]) / 2]
    assert [float(r["loss"]) for r in rows] == pytest.approx(means, rel=1e-9)
    assert float(rows[0]["loss"]) != pytest.approx(losses[2], rel=1e-9)  # not the last batch's


def test_a_run_stopped_between_log_rows_resumes_the_same_log(tiny_data, tmp_path, monkeypatch):
    """Ctrl-C after step 5 of a run logged every 4 steps saves the steps since row 4 with the
    checkpoint; after --resume, row 8 averages steps 5-8 as the straight run's does."""
    straight = tmp_path / "straight"
    assert run_train(tiny_data, straight, "--max-steps", "9", "--log-every", "4",
                     "--sample-every", "1000000") == 0
    real_step = train.train_step
    monkeypatch.setattr(train, "train_step", ctrl_c_after(5))
    cut = tmp_path / "cut"
    assert run_train(tiny_data, cut, "--max-steps", "9", "--log-every", "4",
                     "--sample-every", "1000000") == 130
    assert torch.load(cut / "model.pth", weights_only=True)["step"] == 5
    monkeypatch.setattr(train, "train_step", real_step)
    assert run_train(tiny_data, cut, "--max-steps", "9", "--log-every", "4", "--resume",
                     "--sample-every", "1000000") == 0
    a, b = (list(csv.DictReader((d / "log.csv").open())) for d in (straight, cut))
    assert [r["step"] for r in a] == [r["step"] for r in b] == ["4", "8", "9"]
    assert [float(r["loss"]) for r in a] == [float(r["loss"]) for r in b]


def test_learning_rate_cosine_values():
    """After a warm-up of w steps the rate of step s in a run of n is
    lr * (1 + cos(pi (s - w) / (n - w))) / 2, written out here for every step."""
    cfg = get_preset("tiny")
    cfg.train.lr, cfg.train.warmup_steps, cfg.train.lr_decay = 2e-3, 3, True
    n, w = 13, 3
    want = [2e-3 * (s + 1) / w for s in range(w)] + [
        2e-3 * 0.5 * (1 + math.cos(math.pi * (s - w) / (n - w))) for s in range(w, n)]
    assert [train.lr_at(s, cfg, n) for s in range(n)] == pytest.approx(want, rel=1e-12)


# ------------------------------------------------------------------------------ resume after a cut

RESUME_STEPS = 40  # the tiny preset warms up for 10 steps, then decays the rate over the other 30


@pytest.fixture(scope="module")
def straight_40(tiny_data, tmp_path_factory):
    """A straight run of RESUME_STEPS steps, the reference for the interrupted runs below."""
    out = tmp_path_factory.mktemp("straight_40")
    assert run_train(tiny_data, out, "--max-steps", str(RESUME_STEPS),
                     "--sample-every", "1000000") == 0
    return out


def assert_same_training_state(a_dir: Path, b_dir: Path) -> None:
    """Two runs' final checkpoints hold bit-identical weights, EMA, optimiser state (both Adam
    moments and the step count of every tensor) and RNG state."""
    a = torch.load(a_dir / "model.pth", weights_only=True)
    b = torch.load(b_dir / "model.pth", weights_only=True)
    assert a["step"] == b["step"] == RESUME_STEPS
    for key in ["model", "ema"]:
        assert a[key].keys() == b[key].keys()
        for name, tensor in a[key].items():
            assert torch.equal(tensor, b[key][name]), f"{key}.{name} differs after resume"
    sa, sb = a["optimizer"]["state"], b["optimizer"]["state"]
    assert sa.keys() == sb.keys() and len(sa) > 0
    for i in sa:
        for field in ["exp_avg", "exp_avg_sq", "step"]:
            assert torch.equal(sa[i][field], sb[i][field]), f"optimizer state {i}.{field} differs"
    assert a["optimizer"]["param_groups"] == b["optimizer"]["param_groups"]
    assert len(a["rng"]) == len(b["rng"]) == 1
    assert torch.equal(a["rng"][0]["torch"], b["rng"][0]["torch"]), "RNG state differs"


def assert_cut_mid_decay(first_part_step: int, run_dir: Path) -> None:
    """The first part stopped after the warm-up and well before the end, and the rate of the
    whole (split) run rose over the warm-up, then fell at every step: the decay was on."""
    assert 10 < first_part_step < RESUME_STEPS
    rows = (run_dir / "log.csv").read_text().splitlines()
    header = rows[0].split(",")
    table = [dict(zip(header, r.split(","))) for r in rows[1:]]
    assert [int(r["step"]) for r in table] == list(range(1, RESUME_STEPS + 1))
    lrs = [float(r["lr"]) for r in table]
    assert all(a < b for a, b in zip(lrs[:9], lrs[1:10])), "warm-up over steps 1-10"
    assert lrs[9] == lrs[10] == max(lrs)  # step 11 starts the cosine at the full rate
    assert all(a > b for a, b in zip(lrs[10:], lrs[11:])), "cosine decay"
    assert lrs[-1] < 0.05 * max(lrs)


def test_resume_after_sigint_is_exact_with_cosine_decay(tiny_data, tmp_path, monkeypatch,
                                                        straight_40):
    """Ctrl-C in the middle of a run (in this process, right after step 21, an epoch has 4) makes
    train.main finish the step, save and return 130; --resume then ends bit-identical to the
    straight run, with the learning rate still on the same cosine."""
    real_step = train.train_step
    monkeypatch.setattr(train, "train_step", ctrl_c_after(21))
    assert run_train(tiny_data, tmp_path, "--max-steps", str(RESUME_STEPS),
                     "--sample-every", "1000000") == 130
    cut = torch.load(tmp_path / "model.pth", weights_only=True)["step"]
    assert cut == 21
    monkeypatch.setattr(train, "train_step", real_step)
    assert run_train(tiny_data, tmp_path, "--max-steps", str(RESUME_STEPS), "--resume",
                     "--sample-every", "1000000") == 0
    assert_same_training_state(straight_40, tmp_path)
    assert_cut_mid_decay(cut, tmp_path)


def test_resume_after_time_limit_is_exact_with_cosine_decay(tiny_data, tmp_path, monkeypatch,
                                                            straight_40):
    """A run stopped by --time-limit saves and ends cleanly; --resume (with the limit lifted)
    to the same --max-steps ends bit-identical to the straight run. To cut at a known step
    whatever the machine's load, the limit is a minute, and step 23 moves the clock on by a
    minute instead of sleeping through it (time.time, the clock train.py reads)."""
    real_step, real_time, calls = train.train_step, time.time, []

    def step_then_a_minute_passes_at_23(*args, **kwargs):
        loss = real_step(*args, **kwargs)
        calls.append(1)
        if len(calls) == 23:
            monkeypatch.setattr(time, "time", lambda: real_time() + 61.0)
        return loss

    monkeypatch.setattr(train, "train_step", step_then_a_minute_passes_at_23)
    assert run_train(tiny_data, tmp_path, "--max-steps", str(RESUME_STEPS), "--time-limit", "1",
                     "--sample-every", "1000000") == 0
    first = torch.load(tmp_path / "model.pth", weights_only=True)
    assert first["step"] == 23 and first["train_seconds"] >= 60
    monkeypatch.setattr(time, "time", real_time)
    monkeypatch.setattr(train, "train_step", real_step)
    assert run_train(tiny_data, tmp_path, "--max-steps", str(RESUME_STEPS), "--resume",
                     "--time-limit", "0", "--sample-every", "1000000") == 0
    assert_same_training_state(straight_40, tmp_path)
    assert_cut_mid_decay(first["step"], tmp_path)


# ------------------------------------------------------------------------------ labels are learned

def test_a_briefly_trained_model_draws_the_digit_of_its_label(tmp_path):
    """Train a small DiT for 1,000 steps on the fake digits (digit k = a bright band at columns
    2 + 2k and 3 + 2k), then sample 5 of each digit from its EMA with guidance: the brightest
    band of a sample must sit at its label's columns far more often than chance (10%). Labels
    misaligned with images, an unused label embedding or a guidance mix-up all fall to chance
    (measured: 0.72 of the samples right and the label's band lit in 0.92 of them; with each
    image trained on its batch neighbour's label 0.14 and 0.04, with the label embedding
    zeroed 0.10 and 0.02, with the guidance halves swapped 0.00 and 0.00).
    Width 64, not the tiny preset's 32: a token of 7 x 7 = 49 pixels through 32 features cannot
    even pass the noise through at high t, and that preset samples noise."""
    data = write_tiny_mnist(tmp_path / "mnist", n_train=640, n_test=10)
    run = tmp_path / "run"
    assert train.main(["--preset", "tiny", "--data-dir", str(data), "--out-dir", str(run),
                       "--max-steps", "1000", "--batch-size", "32", "--hidden-size", "64",
                       "--num-heads", "4", "--min-snr-gamma", "5", "--sample-every", "1000000",
                       "--checkpoint-every", "1000000"]) == 0
    model, cfg = load_model(run / "model.pth")  # the EMA weights
    diffusion = GaussianDiffusion.from_config(cfg.diffusion)
    y = torch.arange(10).repeat_interleave(5)
    x = diffusion.sample(model, (50, 1, 28, 28), y, sampler="ddim", steps=20, eta=0.0,
                         cfg_scale=4.0, generator=torch.Generator().manual_seed(0))
    columns = x[:, 0, 4:24, :].mean(dim=1)  # (50, 28): each column over the band's rows
    bands = torch.stack([columns[:, 2 + 2 * k: 4 + 2 * k].mean(dim=1) for k in range(10)], dim=1)
    right = (bands.argmax(dim=1) == y).float().mean().item()
    lit = (bands[torch.arange(50), y] > 0).float().mean().item()  # the label's band is drawn
    assert right >= 0.6 and lit >= 0.8, (right, lit)
