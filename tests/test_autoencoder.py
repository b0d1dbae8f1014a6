"""Tests of the latent preset: the autoencoder, its scale factor, the DiT trained on its latents."""

import dataclasses
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import figures
import inference
import train
from autoencoder import (PAD, Autoencoder, autoencoder_loss, encode_images, fit_scale_factor,
                         kl_divergence, read_autoencoder, sample_latent, train_autoencoder)
from config import AutoencoderConfig, Config, get_preset
from dataset import load_mnist, resolve_data_dir, to_model_range, to_uint8
from diffusion import GaussianDiffusion
from common import load_decoder
from common import load_model as load_sampling_model  # the EMA, with its autoguidance
from helpers import X0Oracle, load_model, needs_real_mnist, optimizer_step_rates, write_tiny_mnist
from support.checkpoint import read_checkpoint, save_checkpoint
from support.cli import UserError
from support.mnist_classifier import classify, load_classifier
from support.sampling import class_labels, generate

ROOT = Path(__file__).resolve().parent.parent
SMALL = AutoencoderConfig(channels=8, epochs=12, batch_size=16, lr=3e-3)
SMALL_NET = AutoencoderConfig(channels=8)  # untrained: for the loss's and decoder's arithmetic


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    return write_tiny_mnist(tmp_path_factory.mktemp("mnist"), n_train=64, n_test=32)


@pytest.fixture(scope="module")
def fake_digits(tiny_data):
    return load_mnist(tiny_data, train=True, download=False)[0]  # uint8 (64, 28, 28)


@pytest.fixture(scope="module")
def latent_run(tiny_data, tmp_path_factory):
    """A latent model trained for 4 steps on the fake digits, with a narrow DiT."""
    out = tmp_path_factory.mktemp("latent")
    assert train.main(latent_args(tiny_data, out, "--max-steps", "4")) == 0
    return out


def latent_args(tiny_data, out, *extra):
    return ["--preset", "latent", "--data-dir", str(tiny_data), "--out-dir", str(out),
            "--hidden-size", "32", "--num-heads", "2", "--depth", "1", "--batch-size", "16",
            "--log-every", "1", "--sample-every", "1000", *extra]


# ------------------------------------------------------------------------------ the autoencoder

def test_reconstruction_error_falls_in_a_short_training(fake_digits):
    x = to_model_range(fake_digits)
    torch.manual_seed(0)
    untrained = autoencoder_loss(Autoencoder(SMALL), x, 0.0, torch.Generator().manual_seed(1))[1]
    model, log = train_autoencoder(fake_digits, SMALL, torch.device("cpu"), progress=False)
    trained = autoencoder_loss(model, x, 0.0, torch.Generator().manual_seed(1))[1]
    assert trained < 0.5 * untrained, (trained, untrained)
    assert log[-1]["reconstruction"] < log[0]["reconstruction"]


def test_training_minimises_the_reconstruction_plus_kl_weight_times_the_kl(fake_digits):
    # The loop must hand the config's weight to the loss: with kl_weight 1 the logged loss is the
    # sum of its two terms (with the KL dropped it would be the reconstruction alone).
    cfg = dataclasses.replace(SMALL, kl_weight=1.0, epochs=1)
    _, log = train_autoencoder(fake_digits, cfg, torch.device("cpu"), progress=False)
    for row in log:
        assert row["kl"] > 1 and row["loss"] == pytest.approx(row["reconstruction"] + row["kl"])


def test_the_autoencoder_trains_along_a_half_cosine_of_its_rate(fake_digits):
    from support.schedule import half_cosine

    with optimizer_step_rates() as seen:
        train_autoencoder(fake_digits, dataclasses.replace(SMALL, epochs=2), torch.device("cpu"),
                          progress=False)
    assert len(seen) > 2
    assert seen == pytest.approx([SMALL.lr * half_cosine(k / len(seen)) for k in range(len(seen))])


def test_kl_term_is_the_closed_form_of_a_gaussian_against_the_standard_normal():
    g = torch.Generator().manual_seed(0)
    mean, logvar = torch.randn(3, 4, 8, 8, generator=g), torch.randn(3, 4, 8, 8, generator=g)
    posterior = torch.distributions.Normal(mean, (0.5 * logvar).exp())
    prior = torch.distributions.Normal(torch.zeros_like(mean), torch.ones_like(mean))
    expected = torch.distributions.kl_divergence(posterior, prior).flatten(1).sum(dim=1)
    torch.testing.assert_close(kl_divergence(mean, logvar), expected)
    assert torch.equal(kl_divergence(torch.zeros(2, 4), torch.zeros(2, 4)), torch.zeros(2))


def test_loss_is_reconstruction_plus_weighted_kl(fake_digits):
    model = Autoencoder(SMALL)
    x = to_model_range(fake_digits[:8])
    loss, rec, kl = autoencoder_loss(model, x, 0.25, torch.Generator().manual_seed(0))
    torch.testing.assert_close(loss, rec + 0.25 * kl)
    logits, mean, logvar = model(x, torch.Generator().manual_seed(0))
    ink = (x + 1) / 2  # Bernoulli likelihood of each pixel's ink, written out
    bce = -(ink * torch.log(torch.sigmoid(logits)) + (1 - ink) * torch.log(1 - torch.sigmoid(logits)))
    torch.testing.assert_close(rec, bce.flatten(1).sum(1).mean(), rtol=1e-4, atol=1e-3)


def test_scale_factor_makes_the_training_latents_unit_variance(fake_digits):
    torch.manual_seed(0)
    model = Autoencoder(SMALL).eval()
    scale = fit_scale_factor(model, fake_digits, seed=3)
    latents = encode_images(model, fake_digits, seed=3)
    assert scale != 1.0
    assert latents.std().item() == pytest.approx(1.0, abs=1e-5)
    assert model.state_dict()["scale_factor"].item() == pytest.approx(scale)  # saved with it


def test_reparameterised_draws_have_the_posterior_s_mean_and_spread():
    """z = mean + exp(logvar / 2) * noise: a draw from N(mean, sigma^2), sigma the square root
    of the variance exp(logvar) (200,000 draws: the spread is known to within 1%)."""
    mean, logvar = torch.full((200_000,), 0.5), torch.full((200_000,), math.log(4.0))
    z = sample_latent(mean, logvar, torch.Generator().manual_seed(0))
    assert z.mean().item() == pytest.approx(0.5, abs=0.02)
    assert z.std().item() == pytest.approx(2.0, rel=0.02)


def test_latents_are_one_posterior_draw_times_the_scale_and_decoding_undoes_it(fake_digits):
    """to_latent draws z from the encoder's posterior and multiplies by scale_factor; to_pixels
    divides it out before decoding (a factor other than 1, so that forgetting it shows)."""
    torch.manual_seed(0)
    model = Autoencoder(SMALL).eval()
    model.scale_factor.fill_(2.5)
    x = to_model_range(fake_digits[:4])
    with torch.no_grad():
        mean, logvar = model.encode(x)
        z = model.to_latent(x, torch.Generator().manual_seed(7))
        noise = torch.randn(mean.shape, generator=torch.Generator().manual_seed(7))
        torch.testing.assert_close(z, (mean + (0.5 * logvar).exp() * noise) * 2.5)
        torch.testing.assert_close(model.to_pixels(z), model.decode(z / 2.5))


def test_fitting_the_scale_twice_gives_the_same_factor(fake_digits):
    """fit_scale_factor measures the unscaled latents, whatever factor the model held before."""
    torch.manual_seed(0)
    model = Autoencoder(SMALL).eval()
    first = fit_scale_factor(model, fake_digits, seed=3)
    assert fit_scale_factor(model, fake_digits, seed=3) == pytest.approx(first, rel=1e-6)
    assert encode_images(model, fake_digits, seed=3).std().item() == pytest.approx(1.0, abs=1e-5)


def test_the_padding_is_background_and_the_crop_undoes_it():
    """The encoder sees the 28 x 28 digit padded to 32 x 32 with black (-1), the background,
    not 0 (mid grey); the decoder's 32 x 32 output is cropped back by the same PAD on each side,
    so that pixel (i, j) out is pixel (i, j) in."""
    model = Autoencoder(SMALL).eval()
    seen = {}
    model.encoder[0].register_forward_pre_hook(lambda module, inputs: seen.setdefault("x", inputs[0]))
    with torch.no_grad():
        model.encode(torch.full((1, 1, 28, 28), -1.0))
    assert seen["x"].shape[-2:] == (32, 32) and (seen["x"] == -1).all()
    rows = torch.arange(32.0).view(1, 1, 32, 1).expand(1, 1, 32, 32)  # value = row index
    model.decoder.register_forward_hook(lambda module, inputs, out: rows + rows.transpose(2, 3) / 100)
    with torch.no_grad():
        out = model.decode_logits(torch.zeros(1, SMALL.latent_channels, 8, 8))[0, 0]
    assert out.shape == (28, 28)
    assert out[0, 0].item() == pytest.approx(PAD + PAD / 100)
    assert out[-1, -1].item() == pytest.approx(31 - PAD + (31 - PAD) / 100)


def test_log_variance_is_bounded_so_the_spread_stays_finite():
    model = Autoencoder(SMALL).eval()
    with torch.no_grad():
        model.encoder[-1].weight.zero_()
        model.encoder[-1].bias[SMALL.latent_channels:] = 1000.0  # the log-variance half
        _, logvar = model.encode(torch.zeros(1, 1, 28, 28))
        assert torch.isfinite((0.5 * logvar).exp()).all()
        assert torch.isfinite(model.to_latent(torch.zeros(1, 1, 28, 28))).all()


def test_reading_an_autoencoder_runs_no_pickled_code(tmp_path):
    """weights_only loading: a file whose pickle would run a command is refused with a one-line
    error, and the command never runs."""
    marker = tmp_path / "ran"

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    torch.save({"autoencoder": Payload(), "config": vars(AutoencoderConfig())}, tmp_path / "evil.pth")
    with pytest.raises(UserError):
        read_autoencoder(tmp_path / "evil.pth", AutoencoderConfig())
    assert not marker.exists()


def test_too_few_images_for_a_batch_is_a_user_error(fake_digits):
    with pytest.raises(UserError, match="larger than"):
        train_autoencoder(fake_digits[:8], SMALL, torch.device("cpu"), progress=False)


def test_encode_then_decode_keeps_shapes_and_range(fake_digits):
    torch.manual_seed(0)
    model = Autoencoder(AutoencoderConfig(latent_channels=3, channels=8)).eval()
    z = encode_images(model, fake_digits[:5])
    assert z.shape == (5, 3, 8, 8)
    for latents in [z, 1000 * z]:  # even far outside the training latents
        pixels = model.to_pixels(latents)
        assert pixels.shape == (5, 1, 28, 28)
        assert pixels.min() >= -1 and pixels.max() <= 1


# ------------------------------------------------------------------------------ sampling latents

class Identity:
    """A stand-in autoencoder whose "pixels" are the latents themselves."""

    def to_pixels(self, z):
        return z


def test_latent_samples_are_not_clipped_to_the_pixel_range():
    """An oracle whose data sit at 3 (a unit-variance latent reaches that): a latent model's
    sampler must return 3, where the pixel model's x0 clipping would stop at 1."""
    cfg = get_preset("latent")
    cfg.model.image_size, cfg.sample.steps = 2, 20
    diffusion = GaussianDiffusion.from_config(cfg.diffusion)
    x0 = torch.full((2, 4, 2, 2), 3.0)
    labels = torch.tensor([1, 2])
    latent = generate(X0Oracle(diffusion, x0), diffusion, labels, cfg,
                      torch.Generator().manual_seed(0), autoencoder=Identity())
    torch.testing.assert_close(latent, x0, atol=1e-3, rtol=0)
    cfg.autoencoder = None  # the same data read as pixels: clipped
    pixels = generate(X0Oracle(diffusion, x0), diffusion, labels, cfg, torch.Generator().manual_seed(0))
    assert pixels.max() <= 1.0 + 1e-6
    with pytest.raises(ValueError, match="autoencoder"):
        generate(X0Oracle(diffusion, x0), diffusion, labels, get_preset("latent"))


def test_decoded_intermediates_line_up_with_the_sample():
    """With return_intermediates a latent model's states and x0-hats are decoded in order: the
    last state is the returned sample, and each x0-hat is the one the sampler computed."""
    cfg = get_preset("latent")
    cfg.model.image_size, cfg.sample.steps = 2, 5
    diffusion = GaussianDiffusion.from_config(cfg.diffusion)
    x0 = torch.randn(3, 4, 2, 2, generator=torch.Generator().manual_seed(1))
    labels = torch.tensor([1, 2, 3])
    x, states, x0_preds = generate(X0Oracle(diffusion, x0), diffusion, labels, cfg,
                                   torch.Generator().manual_seed(0), return_intermediates=True,
                                   autoencoder=Identity())
    assert states.shape == (6, 3, 4, 2, 2) and x0_preds.shape == (5, 3, 4, 2, 2)
    torch.testing.assert_close(states[-1], x)
    torch.testing.assert_close(x0_preds, x0.expand(5, *x0.shape), atol=1e-4, rtol=0)


# ------------------------------------------------------------------------------ train and infer

def test_latent_checkpoint_loads_weights_only_and_samples_pixels(latent_run, tmp_path):
    ckpt = torch.load(latent_run / "model.pth", weights_only=True)
    assert ckpt["config"]["autoencoder"] is not None and "autoencoder" in ckpt
    model, cfg = load_model(latent_run / "model.pth")
    assert (cfg.model.in_channels, cfg.model.image_size) == (4, 8)
    autoencoder = load_decoder(latent_run / "model.pth")
    images = generate(model, GaussianDiffusion.from_config(cfg.diffusion), torch.tensor([3, 7]),
                      cfg, torch.Generator().manual_seed(0), autoencoder=autoencoder)
    assert images.shape == (2, 1, 28, 28) and images.abs().max() <= 1
    checkpoint = str(latent_run / "model.pth")
    for flags in [["--trajectory", str(tmp_path / "trajectory.png"), "--guidance-strip",
                   "--steps", "5"],
                  ["--sampler", "dpm-solver++", "--steps", "5"], ["--sampler", "plms", "--steps", "5"],
                  ["--num-per-class", "2", "--out-dir", str(tmp_path / "fake"), "--steps", "5"]]:
        assert inference.main(["--checkpoint", checkpoint, "--output", str(tmp_path / "g.png"), *flags]
                              if "--num-per-class" not in flags else
                              ["--checkpoint", checkpoint, *flags]) == 0, flags
    assert len(list((tmp_path / "fake").glob("*.png"))) == 20
    assert (tmp_path / "trajectory.png").stat().st_size > 0
    assert (latent_run / "samples" / "final.png").stat().st_size > 0


def perturbed_copy(path, out):
    """A copy of an autoencoder file whose weights differ from any that training would give."""
    saved = torch.load(path, weights_only=True)
    saved["autoencoder"]["decoder.0.bias"] += 0.5
    save_checkpoint(out, saved)
    return saved["autoencoder"]


def test_latent_run_saves_and_reuses_its_autoencoder(latent_run, tiny_data, tmp_path, capsys):
    assert (latent_run / "autoencoder.pth").is_file()
    given = perturbed_copy(latent_run / "autoencoder.pth", tmp_path / "given.pth")
    capsys.readouterr()
    assert train.main(latent_args(tiny_data, tmp_path / "b", "--max-steps", "1",
                                  "--autoencoder", str(tmp_path / "given.pth"))) == 0
    assert "reused" in capsys.readouterr().out
    used = read_checkpoint(tmp_path / "b" / "model.pth")["autoencoder"]
    assert all(torch.equal(given[k], used[k]) for k in given)
    # a latent model's checkpoint serves as well: its first stage is read from it
    assert train.main(latent_args(tiny_data, tmp_path / "c", "--max-steps", "1",
                                  "--autoencoder", str(tmp_path / "b" / "model.pth"))) == 0
    used = read_checkpoint(tmp_path / "c" / "model.pth")["autoencoder"]
    assert all(torch.equal(given[k], used[k]) for k in given)


def test_latent_resume_continues_exactly(tiny_data, tmp_path):
    """4 steps straight, or 2 and then 2 more after a resume (a constant rate: the cosine's
    length would change with --max-steps): the same weights, EMA and autoencoder."""
    straight, split = tmp_path / "straight", tmp_path / "split"
    assert train.main(latent_args(tiny_data, straight, "--max-steps", "4", "--no-lr-decay")) == 0
    assert train.main(latent_args(tiny_data, split, "--max-steps", "2", "--no-lr-decay")) == 0
    perturbed_copy(split / "autoencoder.pth", split / "autoencoder.pth")  # resume must not read it
    assert train.main(latent_args(tiny_data, split, "--max-steps", "4", "--resume")) == 0
    a = torch.load(straight / "model.pth", weights_only=True)
    b = torch.load(split / "model.pth", weights_only=True)
    for key in ["model", "ema", "autoencoder"]:
        for name, tensor in a[key].items():
            assert torch.equal(tensor, b[key][name]), f"{key}.{name} differs after resume"


def test_ctrl_c_while_the_autoencoder_trains_says_to_start_over(tiny_data, tmp_path, monkeypatch,
                                                                capsys):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr("autoencoder.train_autoencoder", interrupted)
    assert train.main(latent_args(tiny_data, tmp_path / "run", "--max-steps", "2")) == 130
    err = capsys.readouterr().err
    assert "not saved: run the same command again (without --resume)" in err
    assert "interrupted (Ctrl-C)" in err and not (tmp_path / "run" / "model.pth").exists()


@pytest.mark.slow
def test_latent_run_under_torchrun_trains_the_autoencoder_once(tiny_data, tmp_path):
    """Two gloo processes: the first trains and saves the autoencoder, the second waits and reads
    it, and both train the DiT on the same latents in step."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           str(ROOT / "train.py"), *latent_args(tiny_data, tmp_path, "--max-steps", "2"),
           "--device", "cpu"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    res = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300, env=env)
    assert res.returncode == 0, res.stderr[-3000:]
    assert res.stdout.count("autoencoder: trained in") == 1
    assert "weights identical on all 2 ranks: True" in res.stdout
    assert "autoencoder" in torch.load(tmp_path / "model.pth", weights_only=True)


def test_latent_run_stops_at_its_time_limit(tiny_data, tmp_path, capsys):
    flags = ["--max-steps", "1000000", "--checkpoint-every", "1000000", "--time-limit", "0.01"]
    assert train.main(latent_args(tiny_data, tmp_path, *flags)) == 0
    assert "time limit of 0.01 min reached" in capsys.readouterr().out
    assert 0 < torch.load(tmp_path / "model.pth", weights_only=True)["step"] < 1000000


def test_latent_checkpoint_without_its_autoencoder_is_one_line(latent_run, tmp_path, capsys):
    ckpt = torch.load(latent_run / "model.pth", weights_only=True)
    del ckpt["autoencoder"]
    save_checkpoint(tmp_path / "no_ae.pth", ckpt)
    assert inference.main(["--checkpoint", str(tmp_path / "no_ae.pth")]) == 1
    err = capsys.readouterr().err.strip()
    assert "holds no autoencoder" in err and "--preset latent" in err and len(err.splitlines()) == 1


def test_latent_checkpoint_with_a_mismatched_autoencoder_is_one_line(latent_run, tmp_path, capsys):
    ckpt = torch.load(latent_run / "model.pth", weights_only=True)
    ckpt["config"]["autoencoder"]["channels"] = 16  # the stored weights are 32 wide
    save_checkpoint(tmp_path / "wrong_ae.pth", ckpt)
    assert inference.main(["--checkpoint", str(tmp_path / "wrong_ae.pth")]) == 1
    err = capsys.readouterr().err.strip()
    assert "do not match its config" in err and len(err.splitlines()) == 1


def test_reused_autoencoder_of_other_settings_is_refused(latent_run, tiny_data, tmp_path, capsys):
    other = Autoencoder(AutoencoderConfig(channels=16))
    path = tmp_path / "other.pth"
    save_checkpoint(path, {"autoencoder": other.state_dict(), "config": vars(other.cfg), "seconds": 1.0})
    assert train.main(latent_args(tiny_data, tmp_path / "c", "--autoencoder", str(path))) == 1
    err = capsys.readouterr().err
    assert "other autoencoder settings: channels 16 (not 32)" in err
    assert not (tmp_path / "c" / "model.pth").exists()


def test_autoencoder_flag_on_a_pixel_preset_is_refused(tiny_data, tmp_path, capsys):
    assert train.main(["--preset", "tiny", "--data-dir", str(tiny_data), "--out-dir", str(tmp_path),
                       "--autoencoder", str(tmp_path / "x.pth")]) == 1
    assert "--autoencoder is for --preset latent" in capsys.readouterr().err


def test_autoencoder_flag_on_a_resumed_run_is_refused(latent_run, tiny_data, capsys):
    assert train.main(latent_args(tiny_data, latent_run, "--resume", "--autoencoder",
                                  str(latent_run / "autoencoder.pth"))) == 1
    assert "drop --autoencoder" in capsys.readouterr().err


def test_figures_draws_the_latent_pictures(latent_run, tiny_data, tmp_path, capsys):
    assert figures.main(["--checkpoint", str(latent_run / "model.pth"), "--data-dir", str(tiny_data),
                         "--out-dir", str(tmp_path)]) == 0
    for name in ["reconstructions.png", "latents.png", "sampling.gif", "gates.png", "loss.png"]:
        assert (tmp_path / name).stat().st_size > 0, name
    assert figures.main(["--checkpoint", str(latent_run / "model.pth"), "--data-dir", str(tiny_data),
                         "--only", "attention"]) == 1
    assert "cannot be drawn" in capsys.readouterr().err


def test_config_round_trip_keeps_the_autoencoder():
    cfg = get_preset("latent")
    assert Config.from_dict(cfg.to_dict()) == cfg
    assert Config.from_dict(get_preset("cpu").to_dict()).autoencoder is None
    with pytest.raises(UserError, match="channels"):
        AutoencoderConfig(channels=12)


def test_shipped_latent_weights_keep_the_autoencoder(latent_run, tmp_path):
    from support.checkpoint import ship_weights

    ship_weights(latent_run / "model.pth", tmp_path / "shipped.pth", source="test")
    model, cfg = load_model(tmp_path / "shipped.pth")
    autoencoder = load_decoder(tmp_path / "shipped.pth")
    images = generate(model, GaussianDiffusion.from_config(cfg.diffusion), torch.tensor([1]), cfg,
                      torch.Generator().manual_seed(0), autoencoder=autoencoder)
    assert images.shape == (1, 1, 28, 28)


# ------------------------------------------------------------------------------ the shipped latent weights

SHIPPED_LATENT = ROOT / "pretrained" / "latent" / "model.pth"


def test_shipped_latent_weights_are_plain_and_carry_their_autoencoder_and_weak_model():
    ckpt = torch.load(SHIPPED_LATENT, weights_only=True)
    assert set(ckpt) == {"ema", "config", "step", "source", "autoencoder", "weak_ema",
                         "weak_ema_step"}
    assert ckpt["weak_ema_step"] == round(ckpt["step"] / 5)  # autoguidance's weak model
    # two DiTs in float16 (the EMA and the weak model, 1.45 MB each) and the float32 autoencoder
    assert SHIPPED_LATENT.stat().st_size <= 4.0e6
    assert ckpt["config"]["preset"] == "latent" and "commit" in ckpt["source"]
    load_model(SHIPPED_LATENT)  # its DiT loads as well
    autoencoder = load_decoder(SHIPPED_LATENT)
    assert autoencoder.scale_factor.item() == pytest.approx(1.17, abs=0.01)  # measured, stored


def test_shipped_autoencoder_gives_back_a_drawn_stroke_on_black():
    """Through the shipped first stage and back, a blank image stays black (-1, not the 0 of a
    decoder that forgot to rescale its [0, 1] ink probabilities) and a bar stays white."""
    autoencoder = load_decoder(SHIPPED_LATENT)
    images = -torch.ones(2, 1, 28, 28)
    images[1, 0, 4:24, 12:16] = 1  # a "1": a white bar 4 pixels wide
    rebuilt = autoencoder.to_pixels(autoencoder.to_latent(images, torch.Generator().manual_seed(0)))
    assert (rebuilt - images).abs().mean() < 0.05  # measured: 0.007
    assert rebuilt[0].max() < -0.9 and rebuilt[1, 0, 6:22, 13:15].min() > 0.9


@pytest.mark.slow
@needs_real_mnist
def test_shipped_latent_weights_draw_the_digits_asked_for():
    """100 decoded samples (10 of each digit, the checkpoint's sampler and autoguidance) read by
    the MNIST classifier as the digit asked for, nearly all of them (0.988 of 1,000)."""
    model, cfg = load_sampling_model(SHIPPED_LATENT)
    autoencoder = load_decoder(SHIPPED_LATENT)
    labels = class_labels(cfg.model.num_classes, 10)
    images = generate(model, GaussianDiffusion.from_config(cfg.diffusion), labels, cfg,
                      torch.Generator().manual_seed(0), autoencoder=autoencoder)
    classifier = load_classifier(resolve_data_dir(), load_mnist, "cpu", progress=False)
    _, preds = classify(classifier, to_uint8(images)[:, 0])
    assert (preds == labels).float().mean().item() >= 0.9


def test_the_kl_term_is_per_image_whatever_the_batch_size():
    """The loss's KL is the mean over the batch of each image's KL: the same batch twice over
    gives the same KL (a sum over the batch would double it, and the weight with it)."""
    torch.manual_seed(0)
    model = Autoencoder(SMALL_NET)
    x = to_model_range(torch.randint(0, 256, (4, 28, 28), dtype=torch.uint8))
    kl = autoencoder_loss(model, x, 1.0, torch.Generator().manual_seed(0))[2]
    kl_twice = autoencoder_loss(model, torch.cat([x, x]), 1.0, torch.Generator().manual_seed(0))[2]
    torch.testing.assert_close(kl_twice, kl)
    with torch.no_grad():
        torch.testing.assert_close(kl, kl_divergence(*model.encode(x)).mean())


def test_decode_is_the_ink_probability_rescaled_to_minus_one_one():
    """decode = 2 sigmoid(logits) - 1, the Bernoulli mean the loss trained: logits log 3 (ink
    probability 3/4) decode to 0.5 (tanh(logits) would give 0.8)."""
    model = Autoencoder(SMALL_NET).eval()
    model.decoder.register_forward_hook(lambda m, i, out: torch.full_like(out, math.log(3.0)))
    with torch.no_grad():
        pixels = model.decode(torch.zeros(1, SMALL_NET.latent_channels, 8, 8))
    torch.testing.assert_close(pixels, torch.full((1, 1, 28, 28), 0.5))


def test_encode_images_draws_fresh_noise_for_every_chunk():
    """One generator for the whole set: the same digit in two chunks gets two different draws
    (a generator seeded again per chunk would repeat the noise of every chunk)."""
    torch.manual_seed(0)
    model = Autoencoder(SMALL_NET).eval()
    digit = torch.randint(0, 256, (1, 28, 28), dtype=torch.uint8)
    z = encode_images(model, digit.expand(4, 28, 28).clone(), seed=0, batch_size=2)
    assert not torch.equal(z[0], z[1])
    assert not torch.equal(z[0], z[2]) and not torch.equal(z[1], z[3])
