"""Tests of the benchmark scripts' parts: they are run by hand, so these keep them from rotting.
Nothing here times anything: the rows run for a fraction of a second and only their bookkeeping
(FLOPs, overrides, names, the sampler study's CSV and plot) is checked."""

import math
from pathlib import Path

import pytest
import torch

from config import get_preset
import train_throughput as tt  # benchmarks/ is on pytest's path (pyproject.toml)


def test_apply_overrides_parses_each_field_as_its_type():
    cfg = tt.apply_overrides(get_preset("tiny"), ["model.patch_size=2", "train.lr=3e-3",
                                                  "train.ema_warmup=false"])
    assert cfg.model.patch_size == 2 and isinstance(cfg.model.patch_size, int)
    assert cfg.train.lr == 3e-3
    assert cfg.train.ema_warmup is False


def test_apply_overrides_checks_the_combination_not_each_step():
    # 5 heads alone do not divide the cpu preset's width 96; with width 120 they do.
    cfg = tt.apply_overrides(get_preset("cpu"), ["model.num_heads=5", "model.hidden_size=120"])
    assert (cfg.model.hidden_size, cfg.model.num_heads) == (120, 5)
    with pytest.raises(SystemExit, match="not divisible"):
        tt.apply_overrides(get_preset("cpu"), ["model.num_heads=5"])


@pytest.mark.parametrize("item, message", [
    ("model.patch_size", "section.field=value"),
    ("model.no_such_field=1", "section.field=value"),
    ("nosection.x=1", "section.field=value"),
    ("preset.x=1", "section.field=value"),  # a field of Config, not a section
    ("model.patch_size=2.5", "invalid literal"),
    ("train.ema_warmup=maybe", "true or false"),
    ("model.patch_size=5", "does not divide"),  # the section's own check runs
    ("train.lr=-1", "--lr must be positive"),  # and the checks a section runs when asked
    ("sample.steps=0", "--steps must be between 1 and"),
])
def test_apply_overrides_rejects_bad_items(item, message):
    with pytest.raises(SystemExit, match=message):
        tt.apply_overrides(get_preset("tiny"), [item])


class FakeClock:
    """time.perf_counter that advances by `tick` seconds per reading, whatever ran between."""

    def __init__(self, tick: float):
        self.now, self.tick = 0.0, tick

    def perf_counter(self) -> float:
        self.now += self.tick
        return self.now


@pytest.mark.parametrize("tick, side, reps", [(0.25, 256, 4), (0.125, 512, 8), (1 / 64, 512, 64)])
def test_matmul_peak_stops_growing_where_a_product_gets_slow(tick, side, reps, monkeypatch):
    """The side doubles from 256 while 8x one product's time stays within the budget (1 s), up
    to n_max; then `reps` products fill about the budget, and the rate is their FLOPs over the
    time they took (real products, a clock whose every reading is `tick` later, in binary
    fractions so the sums are exact: a product timed at 0.25 s stops at 256 at once, so a slow
    bf16 kernel costs seconds, not minutes)."""
    clock = FakeClock(tick)
    monkeypatch.setattr(tt, "time", clock)
    gflops = tt.matmul_peak_gflops("cpu", torch.float32, n_max=512)
    assert gflops == pytest.approx(2 * side**3 * reps / tick / 1e9)


def test_rows_count_more_flops_for_smaller_patches_and_name_themselves():
    """Patch 2 gives 196 tokens instead of 16: many more FLOPs per image, for both implementations."""
    p7 = tt.run_row("tiny", "off", False, False, [], "cpu", seconds=0.0)
    p2 = tt.run_row("tiny", "off", False, False, ["model.patch_size=2"], "cpu", seconds=0.0)
    naive = tt.run_row("tiny", "off", True, False, ["model.patch_size=2"], "cpu", seconds=0.0)
    assert p7["preset"] == "tiny" and p2["preset"] == "tiny*" and naive["preset"] == "tiny* (naive)"
    assert p2["gflop_per_image"] > 5 * p7["gflop_per_image"]
    # Same model size and maths (so the derived FLOPs are the same): the naive rewrite has exactly
    # as many parameters as the model it rewrites.
    assert naive["params_m"] == p2["params_m"]
    assert p7["images_per_sec"] > 0
    assert p7["profile"] == []  # profiling only when asked


def test_profile_lists_the_step_s_operators_by_self_time():
    """--profile K: K operators of the real training step, the costliest first, whose shares of
    the step's self time are fractions that add up to at most 1 (self time counts nothing twice)."""
    ops = tt.run_row("tiny", "off", False, False, [], "cpu", seconds=0.0, profile_top=20)["profile"]
    assert len(ops) == 20
    names = [name for name, _, _ in ops]
    ms = [t for _, t, _ in ops]
    shares = [share for _, _, share in ops]
    assert ms == sorted(ms, reverse=True) and ms[-1] > 0
    assert all(0 < share <= 1 for share in shares) and sum(shares) <= 1 + 1e-9
    # distinct operators, and the step's matrix products (aten::addmm, aten::mm) among them: the
    # tiny model's operators cost about alike, so on a busy machine the top 5 need not hold one
    assert len(set(names)) == 20 and any("mm" in name for name in names), names


@pytest.mark.parametrize("preset, overrides", [("tiny", []), ("tiny", ["model.patch_size=2"]),
                                               ("cpu", []), ("cpu", ["model.mlp_ratio=2"])])
def test_derived_flops_match_the_flop_counter_on_plain_matmuls(preset, overrides):
    """The hand-derived FLOPs of a training step against torch's FLOP counter on the naive model,
    whose attention is plain matmuls (bmm) that every torch version counts alike. The derivation
    leaves out the input gradient that the first layers do not need, so it may be a little high."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from diffusion import GaussianDiffusion
    from naive_dit import NaiveDiT

    cfg = tt.apply_overrides(get_preset(preset), overrides)
    m, B = cfg.model, 4
    model = NaiveDiT(m)
    x = torch.randn(B, m.in_channels, m.image_size, m.image_size)
    y = torch.randint(0, 10, (B,))
    with FlopCounterMode(display=False) as counter:
        GaussianDiffusion.from_config(cfg.diffusion).training_loss(model, x, y).backward()
    counted = counter.get_total_flops() / B
    derived = tt.model_flops_per_image(m)
    assert counted <= derived <= 1.03 * counted, (counted, derived)


def test_the_timed_step_is_train_py_s_step(tmp_path):
    """train_throughput.training_step writes train.py's step out (a benchmark imports no script):
    from the same weights and draws, three steps of each leave bit-identical weights, EMA and
    optimiser moments."""
    import copy

    import torch

    import train
    from diffusion import GaussianDiffusion
    from dit import DiT

    cfg = get_preset("tiny")
    diffusion = GaussianDiffusion.from_config(cfg.diffusion)
    x0, y = torch.rand(8, 1, 28, 28) * 2 - 1, torch.arange(8)
    runs = []
    for which in ["train.py", "benchmark"]:
        torch.manual_seed(0)
        model = DiT(cfg.model)
        ema = copy.deepcopy(model).requires_grad_(False)
        optimizer = train.make_optimizer(model, cfg) if which == "train.py" else \
            tt.make_optimizer(model, cfg)
        for step in range(3):
            if which == "train.py":
                train.train_step(model, diffusion, optimizer, x0, y, cfg, cfg.train.lr, False)
                train.update_ema(ema, model, train.ema_decay_at(step, cfg))
            else:
                tt.training_step(model, ema, diffusion, optimizer, x0, y, cfg, step, False)
        runs.append((model.state_dict(), ema.state_dict(), optimizer.state_dict()["state"]))
    (m1, e1, o1), (m2, e2, o2) = runs
    assert all(torch.equal(m1[k], m2[k]) and torch.equal(e1[k], e2[k]) for k in m1)
    assert all(torch.equal(o1[i]["exp_avg_sq"], o2[i]["exp_avg_sq"]) for i in o1)
    assert not torch.equal(m1["final_layer.linear.weight"], DiT(cfg.model).final_layer.linear.weight)


def test_each_lever_changes_exactly_one_setting_of_the_default():
    import dataclasses

    import levers
    from helpers import train_config

    def settings(flags):
        cfg = train_config(*(flags))
        return {**dataclasses.asdict(cfg.train), **dataclasses.asdict(cfg.model)}

    default = settings([])
    for name, (flags, _) in levers.LEVERS.items():
        changed = {k for k, v in settings(flags).items() if v != default[k]}
        assert len(changed) == (0 if name == "default" else 1), (name, changed)
    assert len({levers.slug(name) for name in levers.LEVERS}) == len(levers.LEVERS)


def test_levers_runs_the_documented_commands_and_keeps_finished_rows(tmp_path, monkeypatch, capsys):
    import common
    import levers

    calls = []

    def fake_run(script, argv):
        calls.append(("train" if script == "train.py" else script, argv))
        if script == "train.py":
            return 0
        out = Path(argv[argv.index("--out") + 1])
        if "lr_2e-3" in str(out):
            return 1  # the third lever's scoring fails
        out.write_text("sampler,steps,num_images,mnist_fd,class_accuracy,seconds,bf16\n"
                       "ddim,50,130,123.4,0.5,1.0,True\n")
        return 0

    monkeypatch.setattr(common, "run_script", fake_run)
    for name in ["default", "no min-SNR", "lr 2e-3"]:
        (tmp_path / levers.slug(name)).mkdir()
    status = levers.main(["--levers", "default", "no min-SNR", "no min-SNR", "lr 2e-3",
                          "--steps", "7", "--num", "130", "--out-dir", str(tmp_path)])
    assert status == 1
    run_dir = str(tmp_path / "no_min-SNR")
    assert calls[2] == ("train", ["--max-steps", "7", "--sample-every", str(10**9), "--out-dir",
                                  run_dir, "--overwrite", "--min-snr-gamma", "0"])
    assert calls[3] == ("benchmarks/sampler_study.py", ["--checkpoint", str(Path(run_dir, "model.pth")),
                                  "--samplers", "ddim", "--steps", "50", "--num", "130",
                                  "--out", str(Path(run_dir, "sweep.csv"))])
    assert len(calls) == 6  # the repeated lever ran once; the failing one was trained and scored
    out, err = capsys.readouterr()
    assert "| default | `(none)` | 123.4 | 0.500 |" in out
    assert "| no min-SNR | `--min-snr-gamma 0` | 123.4 | 0.500 |" in out
    assert "scoring 'lr 2e-3' failed" in err


@pytest.mark.parametrize("argv, message", [
    (["--num", "129"], "at least 130"),
    (["--num", "135"], "multiple of 10"),
    (["--steps", "0"], "--steps must be positive"),
])
def test_levers_rejects_bad_sizes_before_training(argv, message, capsys):
    import levers
    with pytest.raises(SystemExit):
        levers.main(argv)
    assert message in capsys.readouterr().err


# ------------------------------------------------------------------------------ sampler study

@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory):
    """A tiny fake MNIST with its classifier, and a tiny model trained for 5 steps on it (its
    weak model for autoguidance is the EMA at step 1, a fifth of the run)."""
    import train
    from dataset import load_mnist
    from helpers import write_tiny_mnist
    from support.mnist_classifier import load_classifier

    data = write_tiny_mnist(tmp_path_factory.mktemp("tiny"), n_train=64, n_test=150)
    load_classifier(data, load_mnist, "cpu", progress=False)
    out = tmp_path_factory.mktemp("run")
    assert train.main(["--preset", "tiny", "--max-steps", "5", "--out-dir", str(out),
                       "--data-dir", str(data)]) == 0
    return out / "model.pth", data


def test_sampler_study_writes_csv_and_plot(tiny_checkpoint, tmp_path, monkeypatch):
    import sampler_study
    from support.cli import use_bf16
    from support.cli import pick_device

    checkpoint, data = tiny_checkpoint
    monkeypatch.chdir(tmp_path)  # nothing is written outside tmp_path
    out = tmp_path / "sweep.csv"
    status = sampler_study.main(["--checkpoint", str(checkpoint), "--data-dir", str(data),
                                 "--num", "130", "--steps", "2", "4", "--out", str(out),
                                 "--samplers", "ddim", "plms", "dpm-solver++"])
    assert status == 0
    rows = out.read_text().splitlines()
    assert rows[0] == ("sampler,steps,num_images,mnist_fd,class_accuracy,seconds,bf16,eta,"
                       "precision,recall,cfg_scale,guidance_t_min,guidance_t_max,seeds,"
                       "mnist_fd_per_seed,autoguide,autoguide_scale,recall_per_digit")
    runs = [tuple(r.split(",")[:3]) for r in rows[1:]]
    # DDPM (1000 steps) is left out to keep the test fast; it runs through the same code
    assert runs == [("ddim", "2", "130"), ("ddim", "4", "130"),
                    ("plms", "2", "130"), ("plms", "4", "130"), ("dpm-solver++", "2", "130"),
                    ("dpm-solver++", "4", "130")]
    for r in rows[1:]:
        fd, acc, sec = map(float, r.split(",")[3:6])
        assert fd > 0 and 0 <= acc <= 1 and sec > 0
        assert r.split(",")[6] == str(use_bf16("auto", pick_device(None)))
        assert r.split(",")[7] == "0.0"  # the study compares the deterministic samplers
        assert all(0 <= float(v) <= 1 for v in r.split(",")[8:10])  # precision, recall
        assert r.split(",")[10:13] == ["1.2", "0", "999"]  # the tiny preset's guidance, every t
        assert r.split(",")[13] == "0" and float(r.split(",")[14]) == float(r.split(",")[3])
        assert r.split(",")[15:17] == ["its own early EMA", "1.5"]  # the checkpoint's autoguidance
        per_digit = dict(pair.split(":") for pair in r.split(",")[17].split())
        assert list(per_digit) == [str(c) for c in range(10)]
        assert all(0 <= float(v) <= 1 for v in per_digit.values())
    assert out.with_suffix(".png").stat().st_size > 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sweep.csv", "sweep.png"]


def test_sampler_study_with_several_seeds_reports_the_mean_of_their_draws(tiny_checkpoint,
                                                                          tmp_path, capsys):
    import csv

    import sampler_study

    checkpoint, data = tiny_checkpoint

    def study(*seeds):
        out = tmp_path / f"seeds_{'_'.join(seeds)}.csv"
        assert sampler_study.main(["--checkpoint", str(checkpoint), "--data-dir", str(data),
                                   "--num", "130", "--steps", "3", "--samplers", "ddim", "--eta",
                                   "1", "--out", str(out), "--seed", *seeds]) == 0
        with open(out) as f:
            return next(csv.DictReader(f))

    one, two, both = study("0"), study("1"), study("0", "1")
    again = study("1")  # the same seed draws the same digits (only the time may differ)
    assert {k: v for k, v in again.items() if k != "seconds"} == {
        k: v for k, v in two.items() if k != "seconds"}
    assert one["mnist_fd"] != two["mnist_fd"]  # two draws of the noise, two scores
    assert both["seeds"] == "0 1"
    assert [float(v) for v in both["mnist_fd_per_seed"].split()] == pytest.approx(
        [float(one["mnist_fd"]), float(two["mnist_fd"])], abs=1e-4)
    for key in ["mnist_fd", "class_accuracy", "precision", "recall"]:
        assert float(both[key]) == pytest.approx((float(one[key]) + float(two[key])) / 2, abs=1e-4)

    printed = capsys.readouterr().out
    assert "seed 0: MNIST-FD" in printed and "seed 1: MNIST-FD" in printed
    assert "3 steps: mean: MNIST-FD" in printed


def test_sampler_study_averages_each_digits_recall_over_the_draws(tiny_checkpoint, tmp_path,
                                                                  monkeypatch):
    import csv

    import sampler_study

    checkpoint, data = tiny_checkpoint
    draws = iter([{0: 0.2, 1: 0.4}, {0: 0.6, 1: 1.0}])  # what the judge reads in each draw

    def judged(judge, images, labels):
        return {"mnist_fd": 1.0, "precision": 1.0, "recall": 1.0, "class_accuracy": 1.0,
                "per_class_recall": next(draws)}
    monkeypatch.setattr(sampler_study.MnistJudge, "score", judged)
    out = tmp_path / "sweep.csv"
    assert sampler_study.main(["--checkpoint", str(checkpoint), "--data-dir", str(data),
                               "--num", "130", "--steps", "2", "--samplers", "ddim", "--out",
                               str(out), "--seed", "0", "1"]) == 0
    with open(out) as f:
        assert next(csv.DictReader(f))["recall_per_digit"] == "0:0.400 1:0.700"


@pytest.fixture(scope="module")
def tiny_latent_checkpoint(tiny_checkpoint, tmp_path_factory):
    """A tiny latent model (its autoencoder and a narrow DiT, 2 steps) on tiny_checkpoint's fake
    MNIST, which has its classifier: (the checkpoint, the data folder)."""
    import train

    _, data = tiny_checkpoint
    out = tmp_path_factory.mktemp("latent")
    assert train.main(["--preset", "latent", "--data-dir", str(data), "--out-dir", str(out),
                       "--hidden-size", "32", "--num-heads", "2", "--depth", "1",
                       "--batch-size", "16", "--max-steps", "2", "--sample-every", "1000"]) == 0
    return out / "model.pth", data


def test_sampler_study_decodes_a_latent_models_samples_before_scoring(tiny_latent_checkpoint,
                                                                      tmp_path, monkeypatch):
    """A latent model samples 4 x 8 x 8 latents; the study scores the digits its autoencoder
    decodes from them, as inference.py writes them."""
    import sampler_study

    checkpoint, data = tiny_latent_checkpoint
    scored = []
    score = sampler_study.MnistJudge.score
    monkeypatch.setattr(sampler_study.MnistJudge, "score",
                        lambda judge, images, labels: scored.append(images.shape)
                        or score(judge, images, labels))
    assert sampler_study.main(["--checkpoint", str(checkpoint), "--data-dir", str(data),
                               "--num", "130", "--steps", "2", "--samplers", "ddim",
                               "--out", str(tmp_path / "sweep.csv")]) == 0
    assert scored == [(130, 1, 28, 28)]  # pixels, not latents
    assert float((tmp_path / "sweep.csv").read_text().splitlines()[1].split(",")[3]) > 0


def test_fid_floor_scores_the_same_digits_through_a_latent_models_autoencoder(
        tiny_latent_checkpoint, tiny_checkpoint, capsys):
    import fid_floor

    checkpoint, data = tiny_latent_checkpoint
    fid_floor.main(["--sizes", "40", "--seeds", "0", "--data-dir", str(data),
                    "--through", str(checkpoint)])
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| 40 ")]
    assert [row.split("|")[1].strip() for row in rows] == ["40 real", "40 autoencoded"]
    real, autoencoded = (float(row.split("|")[3]) for row in rows)
    assert real != autoencoded  # the decoded digits are scored, not the real ones again
    per_digit = [float(r) for r in rows[0].split("|")[7].split()]  # the recall of each digit
    assert len(per_digit) == 10 and all(0 <= r <= 1 for r in per_digit)
    with pytest.raises(SystemExit, match="a model of pixels"):
        fid_floor.main(["--sizes", "40", "--data-dir", str(data),
                        "--through", str(tiny_checkpoint[0])])
    with pytest.raises(SystemExit, match="no checkpoint at nowhere.pth: --through needs a latent"):
        fid_floor.main(["--sizes", "40", "--data-dir", str(data), "--through", "nowhere.pth"])


def test_fid_floor_draws_only_the_classes_asked_for(tmp_path, monkeypatch, capsys):
    import fid_floor

    from helpers import write_tiny_mnist

    data = write_tiny_mnist(tmp_path, n_train=60, n_test=20)
    scored = []

    class RecordingJudge:  # stands in for the classifier: what reaches it is what is tested
        def __init__(self, data_dir):
            pass

        def score(self, digits, labels):
            scored.append((digits.shape, sorted(set(labels.tolist()))))
            return {"mnist_fd": 1.0, "precision": 1.0, "recall": 1.0, "class_accuracy": 1.0,
                    "per_class_recall": {0: 0.5, 3: 1.0}}  # the test digits it met lack 8 others

    monkeypatch.setattr(fid_floor, "MnistJudge", RecordingJudge)
    fid_floor.main(["--sizes", "10", "--seeds", "0", "1", "--data-dir", str(data),
                    "--classes", "3", "7"])
    assert scored == [((10, 28, 28), [3, 7])] * 2  # 12 threes and sevens in the set, 10 drawn
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| 10 ")]
    assert rows[0].split("|")[7].split() == ["0.50", "-", "-", "1.00"] + ["-"] * 6  # in 0-9 order
    with pytest.raises(SystemExit, match="hold only 12 training digits"):
        fid_floor.main(["--sizes", "13", "--data-dir", str(data), "--classes", "3", "7"])
    scored.clear()
    fid_floor.main(["--sizes", "30", "--seeds", "0", "--data-dir", str(data)])
    assert scored == [((30, 28, 28), list(range(10)))]  # all ten by default


def test_guidance_in_an_interval_guides_inside_it_and_not_outside():
    import torch

    from config import ModelConfig
    from dit import DiT
    from sampler_study import GuidedInInterval

    torch.manual_seed(0)
    model = DiT(ModelConfig(patch_size=7, hidden_size=32, depth=2, num_heads=2)).eval()
    for p in model.parameters():  # adaLN-Zero starts at zero: make the label matter
        torch.nn.init.normal_(p, std=0.1)
    x, y = torch.randn(3, 1, 28, 28), torch.tensor([1, 5, 7])
    wrapped = GuidedInInterval(model, 200, 700)
    with torch.no_grad():
        for t, inside in [(199, False), (200, True), (450, True), (700, True), (701, False)]:
            tt = torch.full((3,), t)
            got = wrapped.forward_with_cfg(x, tt, y, 3.0)
            guided, plain = model.forward_with_cfg(x, tt, y, 3.0), model(x, tt, y)
            assert not torch.allclose(guided, plain)  # else the test could not tell them apart
            assert torch.equal(got, guided if inside else plain), t


def test_sampler_study_guides_in_the_interval_it_is_given(tiny_checkpoint, tmp_path, monkeypatch):
    import sampler_study
    from dit import DiT

    calls = []  # (t, scale) of every guided noise prediction the study asks the network for
    original = DiT.cfg_predictions  # with or without autoguidance, each step's guided pass

    def recorded(self, x, t, y, cfg_scale):
        calls.append((int(t[0]), cfg_scale))
        return original(self, x, t, y, cfg_scale)

    monkeypatch.setattr(DiT, "cfg_predictions", recorded)
    checkpoint, data = tiny_checkpoint
    out = tmp_path / "sweep.csv"
    status = sampler_study.main(["--checkpoint", str(checkpoint), "--data-dir", str(data),
                                 "--num", "130", "--steps", "4", "--samplers", "ddim", "--out",
                                 str(out), "--cfg-scale", "2.5",
                                 "--guidance-interval", "300", "800"])
    assert status == 0
    assert out.read_text().splitlines()[1].split(",")[10:13] == ["2.5", "300", "800"]
    # DDIM-4 visits t = 999, 666, 333, 0: guided at the two inside the interval only
    assert sorted(set(calls)) == [(0, 1.0), (333, 2.5), (666, 2.5), (999, 1.0)]


def test_sampler_study_autoguides_as_the_checkpoint_says_or_as_asked(tiny_checkpoint, tmp_path,
                                                                     monkeypatch):
    import csv

    import sampler_study
    from dit import Autoguided

    autoguided_calls = []
    original = Autoguided.forward_with_cfg

    def recorded(self, x, t, y, cfg_scale):
        autoguided_calls.append((int(t[0]), self.scale, cfg_scale))
        return original(self, x, t, y, cfg_scale)

    monkeypatch.setattr(Autoguided, "forward_with_cfg", recorded)
    checkpoint, data = tiny_checkpoint

    def study(name, *extra):
        out = tmp_path / f"{name}.csv"
        assert sampler_study.main(["--checkpoint", str(checkpoint), "--data-dir", str(data),
                                   "--num", "130", "--steps", "3", "--samplers", "ddim",
                                   "--device", "cpu", "--amp", "off", "--out", str(out),
                                   *extra]) == 0
        with open(out) as f:
            return next(csv.DictReader(f))

    plain = study("plain", "--autoguide-scale", "1")
    assert (plain["autoguide"], plain["autoguide_scale"]) == ("", "1.0")
    assert autoguided_calls == []
    # by default, away from the checkpoint's own weak model with its W and guidance (1.5 and 1.2):
    # each of DDIM-3's steps, for both batches of 100 and 30, went through the autoguided
    # prediction, and the digits differ from the plain model's
    own = study("own")
    assert (own["autoguide"], own["autoguide_scale"]) == ("its own early EMA", "1.5")
    assert len(autoguided_calls) == 2 * 3
    assert {(s, g) for _, s, g in autoguided_calls} == {(1.5, 1.2)}
    assert float(own["mnist_fd"]) != pytest.approx(float(plain["mnist_fd"]), abs=1e-3)
    # the model as its own weaker version: eps_cfg + (W - 1) * 0, the same digits as without
    same = study("self", "--autoguide", str(checkpoint), "--autoguide-scale", "3")
    assert (same["autoguide"], same["autoguide_scale"]) == (str(checkpoint), "3.0")
    assert float(same["mnist_fd"]) == pytest.approx(float(plain["mnist_fd"]), abs=1e-3)
    # a model guided away from an untrained one of the same shape draws other digits
    other = study("weak", "--autoguide", str(untrained_checkpoint(checkpoint, tmp_path)))
    assert other["autoguide_scale"] == "1.5"
    assert float(other["mnist_fd"]) != pytest.approx(float(plain["mnist_fd"]), abs=1e-3)


def untrained_checkpoint(checkpoint, tmp_path, **diffusion):
    """The checkpoint with its EMA weights re-drawn at random (adaLN-Zero's zeros included, so
    that it predicts something else), and its diffusion config changed by `diffusion`."""
    import torch

    ckpt = torch.load(checkpoint, weights_only=True)
    torch.manual_seed(1)
    ckpt["ema"] = {k: torch.randn_like(v) * 0.1 if v.is_floating_point() else v
                   for k, v in ckpt["ema"].items()}
    ckpt["config"]["diffusion"].update(diffusion)
    del ckpt["weak_ema"], ckpt["weak_ema_step"]  # it keeps no weak model of its own
    path = tmp_path / "untrained.pth"
    torch.save(ckpt, path)
    return path


@pytest.mark.parametrize("argv, message", [
    (["--autoguide-scale", "2", "NO_WEAK"], "keeps no weak model"),
    (["--autoguide", "CKPT", "--autoguide-scale", "-1"], "--autoguide-scale must be 0 or more"),
    (["--autoguide", "OTHER_T"], "is not a model of the same images and noise schedule"),
    (["--autoguide", "nowhere.pth"], "--autoguide nowhere.pth: no such checkpoint"),
])
def test_sampler_study_rejects_bad_autoguidance(tiny_checkpoint, argv, message, tmp_path, capsys):
    import sampler_study

    checkpoint, data = tiny_checkpoint
    argv = [str(checkpoint) if a == "CKPT" else a for a in argv]
    if "OTHER_T" in argv:
        argv[argv.index("OTHER_T")] = str(untrained_checkpoint(checkpoint, tmp_path,
                                                               num_timesteps=500))
    if "NO_WEAK" in argv:  # the study of a checkpoint that keeps no weak model
        argv.remove("NO_WEAK")
        checkpoint = untrained_checkpoint(checkpoint, tmp_path)
    status = sampler_study.main(["--checkpoint", str(checkpoint), "--data-dir", str(data), *argv])
    assert status == 1 and message in capsys.readouterr().err


@pytest.mark.parametrize("interval", [["800", "300"], ["-1", "500"], ["0", "1000"]])
def test_sampler_study_rejects_an_interval_outside_the_timesteps(tiny_checkpoint, interval, capsys):
    import sampler_study

    checkpoint, data = tiny_checkpoint
    status = sampler_study.main(["--checkpoint", str(checkpoint), "--data-dir", str(data),
                                 "--guidance-interval", *interval])
    assert status == 1
    assert "--guidance-interval must be two timesteps 0 <= T_MIN <= T_MAX <= 999" in (
        capsys.readouterr().err)


def test_sampler_study_refuses_a_seed_given_twice(tiny_checkpoint, capsys):
    import sampler_study

    checkpoint, data = tiny_checkpoint
    status = sampler_study.main(["--checkpoint", str(checkpoint), "--data-dir", str(data),
                                 "--num", "130", "--steps", "3", "--seeds", "0", "1", "0"])
    assert status == 1
    assert "--seed was given a seed twice (0 1 0)" in capsys.readouterr().err


def test_sampler_study_rejects_bad_steps(tiny_checkpoint, capsys):
    import sampler_study

    checkpoint, data = tiny_checkpoint
    status = sampler_study.main(["--checkpoint", str(checkpoint), "--data-dir", str(data),
                                 "--steps", "0"])
    assert status == 1 and "--steps must be between 1 and 1000" in capsys.readouterr().err
    status = sampler_study.main(["--checkpoint", str(checkpoint), "--data-dir", str(data),
                                 "--eta", "-1"])
    assert status == 1 and "--eta must be between 0 and 1" in capsys.readouterr().err


def test_a_model_without_dropped_labels_is_sampled_and_studied_without_guidance(tiny_checkpoint,
                                                                             tmp_path, capsys):
    """Its null label never trained: load_model samples it at guidance 1 even where the checkpoint
    kept its preset's scale, and the studies refuse a --cfg-scale for it, as inference.py does."""
    import sampler_study
    from common import load_model

    checkpoint, data = tiny_checkpoint
    ckpt = torch.load(checkpoint, weights_only=True)
    assert ckpt["config"]["sample"]["cfg_scale"] != 1.0
    _, cfg = load_model(checkpoint)
    assert cfg.sample.cfg_scale == ckpt["config"]["sample"]["cfg_scale"]  # trained with dropout
    ckpt["config"]["model"]["class_dropout_prob"] = 0.0
    no_null = tmp_path / "no_null.pth"
    torch.save(ckpt, no_null)
    _, cfg = load_model(no_null)
    assert cfg.sample.cfg_scale == 1.0
    assert load_model(no_null, cfg_scale=1.0)[1].sample.cfg_scale == 1.0
    status = sampler_study.main(["--checkpoint", str(no_null), "--data-dir", str(data),
                                 "--cfg-scale", "2"])
    err = capsys.readouterr().err
    assert status == 1 and "trained with --class-dropout-prob 0" in err and "drop --cfg-scale" in err


def test_latent_shapes_trials_each_change_one_setting_of_the_preset():
    """Each trial of benchmarks/latent_shapes.py differs from the latent preset's autoencoder in
    at most one field, and the first is the preset itself."""
    import dataclasses

    import latent_shapes
    from config import get_preset

    preset = dataclasses.asdict(get_preset("latent").autoencoder)
    trials = list(latent_shapes.TRIALS.values())
    assert trials[0] == {}
    for changed in trials:
        assert len(changed) <= 1 and set(changed) <= set(preset)
        assert all(preset[k] != v for k, v in changed.items())


def test_latent_vs_pixel_reads_the_scripts_output():
    import latent_vs_pixel

    text = ("autoencoder: trained in 134 s, reconstruction 48.2 nats/image\n"
            "trained 11244 steps in 645 s (1115 images/s); checkpoint: x\n")
    assert latent_vs_pixel.found(r"autoencoder: trained in (\d+) s", text) == 134
    assert latent_vs_pixel.found(r"\((\d+) images/s\)", text) == 1115
    scores = ("scoring 1000 images in runs/x/fake (mnist)\nMNIST-FD: 16.077\nprecision: 0.8660\n"
              "recall: 0.7420\nrecall per digit: 0: 0.541  1: 0.746\nclass accuracy: 0.9880\n"
              "class accuracy per digit: 0: 0.980  1: 1.000\n")
    assert {name: latent_vs_pixel.found(pattern, scores)
            for name, pattern in latent_vs_pixel.SCORES.items()} == {
        "mnist_fd": 16.077, "precision": 0.866, "recall": 0.742, "class_accuracy": 0.988}
    assert math.isnan(latent_vs_pixel.found(r"FID: ([\d.]+)", "nothing"))
