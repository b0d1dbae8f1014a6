"""Tests of the diffusion maths against closed forms and oracles."""

import pytest
import torch

from config import ModelConfig
from diffusion import GaussianDiffusion
from dit import DiT
from helpers import SmoothEps, X0Oracle, linear_schedule


@pytest.fixture
def diffusion():
    return GaussianDiffusion()


def test_schedule_alpha_bar_is_running_product(diffusion):
    betas = torch.linspace(1e-4, 0.02, 1000, dtype=torch.float64)
    prod, expected = 1.0, []
    for b in betas.tolist():
        prod *= 1 - b
        expected.append(prod)
    assert torch.allclose(diffusion.alphas_cumprod.double(), torch.tensor(expected, dtype=torch.float64),
                          rtol=1e-6)
    assert torch.allclose(diffusion.betas.double(), betas, rtol=1e-6)
    assert diffusion.alphas_cumprod[-1] < 1e-4  # x_T is (almost) pure noise


def test_posterior_variance_matches_formula(diffusion):
    betas = torch.linspace(1e-4, 0.02, 1000, dtype=torch.float64)
    a = torch.cumprod(1 - betas, dim=0)
    for t in [1, 2, 10, 500, 999]:
        expected = (1 - a[t - 1]) / (1 - a[t]) * betas[t]
        assert diffusion.posterior_variance[t].item() == pytest.approx(expected.item(), rel=1e-5)
    assert diffusion.posterior_variance[0].item() == 0.0


def test_q_sample_mean_and_variance(diffusion):
    torch.manual_seed(0)
    n = 200_000
    x0 = torch.tensor([0.8, -0.3, 0.0]).reshape(1, 3, 1, 1).expand(n, 3, 1, 1)
    for t_val in [0, 100, 500, 999]:
        t = torch.full((n,), t_val, dtype=torch.long)
        x_t = diffusion.q_sample(x0, t, torch.randn_like(x0))
        a = diffusion.alphas_cumprod[t_val]
        assert torch.allclose(x_t.mean(0).flatten(), a.sqrt() * x0[0].flatten(), atol=0.01)
        assert torch.allclose(x_t.var(0).flatten(), (1 - a).expand(3), atol=0.01)


def test_q_sample_closed_form_matches_step_by_step_chain(diffusion):
    # Adding noise one step at a time (x_t = sqrt(alpha_t) x_{t-1} + sqrt(beta_t) z) gives the same
    # distribution as the one-shot Eq. 4.
    torch.manual_seed(1)
    n, t_val = 100_000, 300
    x = torch.full((n,), 0.5)
    for s in range(t_val + 1):
        x = diffusion.alphas[s].sqrt() * x + diffusion.betas[s].sqrt() * torch.randn(n)
    a = diffusion.alphas_cumprod[t_val]
    assert x.mean().item() == pytest.approx((a.sqrt() * 0.5).item(), abs=0.01)
    assert x.var().item() == pytest.approx((1 - a).item(), abs=0.01)
    # and q_sample, the one-shot jump itself, draws the same distribution
    jumped = diffusion.q_sample(torch.full((n, 1, 1, 1), 0.5), torch.full((n,), t_val),
                                torch.randn(n, 1, 1, 1)).flatten()
    assert jumped.mean().item() == pytest.approx(x.mean().item(), abs=0.01)
    assert jumped.var().item() == pytest.approx(x.var().item(), abs=0.01)


def test_heldout_losses_split_by_noise_level_lowest_t_first(diffusion):
    # A model whose error grows with t: eps_theta = t / 100 everywhere, so each image's noise MSE
    # is about (t / 100)^2 + 1, and each range of t must report its own images' MSE, in order.
    class ErrorGrowsWithT(torch.nn.Module):
        def forward(self, x, t, y):
            return (t.float() / 100).view(-1, 1, 1, 1).expand_as(x)

    b = diffusion.heldout_losses(ErrorGrowsWithT(), torch.zeros(250, 1, 28, 28),
                                 torch.zeros(250, dtype=torch.long))["bucket_mse"]
    assert all(u < v for u, v in zip(b, b[1:])), b
    assert b[0] == pytest.approx(1 + 0.5**2, abs=0.2)
    assert b[-1] == pytest.approx(1 + 9.5**2, rel=0.02)


@pytest.mark.parametrize("steps", [1, 10, 50, 1000])
def test_ddim_eta0_with_oracle_returns_x0(diffusion, steps):
    """Deterministic DDIM with the x0 oracle follows the probability-flow ODE's exact solution,
    which keeps the one noise eps_T that x_T holds: every state k lies at its timestep t_k on
    x_t = sqrt(a_t) x0 + sqrt(1 - a_t) eps_T (a = alpha-bar, from the paper's schedule), every
    step predicts x0, and the last state is x0. The last step returns the oracle's x0 from any
    state, so the final image alone would pass with every intermediate update wrong. Tolerance:
    the states come back in float32 (measured: off by at most 4e-7, x0 predictions 3e-8)."""
    g = torch.Generator().manual_seed(0)
    x0 = torch.rand(4, 1, 28, 28, generator=g, dtype=torch.float64) * 2 - 1
    y = torch.zeros(4, dtype=torch.long)
    out, states, x0_preds = diffusion.sample(X0Oracle(diffusion, x0), x0.shape, y, sampler="ddim",
                                             steps=steps, eta=0.0, generator=g,
                                             return_intermediates=True)
    a = linear_schedule()[2]
    ts = diffusion.sampler_timesteps("ddim", steps)
    assert states.shape[0] == steps + 1 and x0_preds.shape[0] == steps and ts[0] == 999
    eps_T = (states[0].double() - a[999].sqrt() * x0) / (1 - a[999]).sqrt()
    for k, t in enumerate(ts):
        on_path = a[t].sqrt() * x0 + (1 - a[t]).sqrt() * eps_T
        assert (states[k] - on_path).abs().max() < 1e-5, f"state {k} (t = {t}) is off the path"
        assert (x0_preds[k] - x0).abs().max() < 1e-6, f"step {k} (t = {t}) mispredicts x0"
    assert torch.equal(states[-1], out) and (out - x0).abs().max() < 1e-5


def test_ddim_timesteps(diffusion):
    assert diffusion.ddim_timesteps(1) == [999]
    assert diffusion.ddim_timesteps(1000) == list(range(999, -1, -1))
    ts = diffusion.ddim_timesteps(50)
    assert len(ts) == 50 and ts[0] == 999 and ts == sorted(ts, reverse=True) and len(set(ts)) == 50
    for bad in [0, -3, 1001]:
        with pytest.raises(ValueError):
            diffusion.ddim_timesteps(bad)


def test_ddim_eta1_all_steps_uses_ddpm_posterior_variance(diffusion):
    for t in [1, 2, 50, 500, 999]:
        assert diffusion.ddim_sigma(t, t - 1, eta=1.0) ** 2 == pytest.approx(
            diffusion.posterior_variance[t].item(), rel=1e-4)
    assert diffusion.ddim_sigma(0, -1, eta=1.0) == 0.0


@pytest.mark.parametrize("eta", [-0.1, 1.5])
def test_ddim_refuses_eta_outside_0_1(diffusion, eta):
    # above 1 the noise would need more variance than x_(t-1) has: refused, not silently clamped
    x = torch.zeros(1, 1, 4, 4)
    with pytest.raises(ValueError, match="eta must be between 0 and 1"):
        diffusion.ddim_step(x, 500, 480, x, eta)


def test_ddim_eta1_all_steps_follows_ddpm_trajectory(diffusion):
    # With the same noise, DDIM over all T steps with eta = 1 and DDPM ancestral sampling are the
    # same Markov chain: same posterior mean and variance at every step, so the same trajectory.
    model = SmoothEps()
    y = torch.zeros(3, dtype=torch.long)
    shape = (3, 1, 6, 6)
    _, ddpm, _ = diffusion.sample(model, shape, y, sampler="ddpm", return_intermediates=True,
                               generator=torch.Generator().manual_seed(7))
    _, ddim, _ = diffusion.sample(model, shape, y, sampler="ddim", steps=1000, eta=1.0,
                               return_intermediates=True, generator=torch.Generator().manual_seed(7))
    assert ddpm.shape == ddim.shape == (1001, *shape)
    assert (ddpm - ddim).abs().max() < 1e-3
    ddim0 = diffusion.sample(model, shape, y, sampler="ddim", steps=1000, eta=0.0,
                             generator=torch.Generator().manual_seed(7))
    assert (ddpm[-1] - ddim0).abs().max() > 1e-2  # and eta really matters


# ---------------------------------------------------------------- one step against the paper

def smooth_eps(x_t, t):
    """A noise prediction that depends on x_t and t: SmoothEps's, for one batch at timestep t."""
    return SmoothEps().forward_with_cfg(x_t, torch.full((x_t.shape[0],), t), None, 1.0)


@pytest.mark.parametrize("t", [0, 1, 2, 10, 500, 998, 999])
def test_ddpm_step_is_algorithm_2(diffusion, t):
    """Without clipping, one DDPM step is Algorithm 2, line 4, written out here from the paper:
    x_{t-1} = 1 / sqrt(alpha_t) (x_t - beta_t / sqrt(1 - alpha-bar_t) eps) + sigma_t z with
    sigma_t^2 = beta-tilde_t = (1 - alpha-bar_{t-1}) / (1 - alpha-bar_t) beta_t, and z = 0 at the
    last step. The same z: a float64 normal draw from the same seed."""
    betas, alphas, a = linear_schedule()
    x_t = torch.randn(3, 1, 5, 5, generator=torch.Generator().manual_seed(t), dtype=torch.float64)
    eps = smooth_eps(x_t, t)
    x_prev, x0_pred = diffusion.ddpm_step(x_t, t, eps, torch.Generator().manual_seed(99),
                                          clip_denoised=False)
    mean = (x_t - betas[t] / (1 - a[t]).sqrt() * eps) / alphas[t].sqrt()
    if t > 0:
        beta_tilde = (1 - a[t - 1]) / (1 - a[t]) * betas[t]
        z = torch.randn(x_t.shape, generator=torch.Generator().manual_seed(99), dtype=torch.float64)
        expected = mean + beta_tilde.sqrt() * z
    else:
        expected = mean
    assert (x_prev - expected).abs().max() < 1e-6
    assert torch.allclose(x0_pred, (x_t - (1 - a[t]).sqrt() * eps) / a[t].sqrt(), rtol=1e-5)


@pytest.mark.parametrize("t", [1, 300, 999])
def test_ddpm_step_with_clipping_is_the_posterior_mean_of_the_clipped_x0(diffusion, t):
    """With clipping, the step is DDPM Eq. 7's posterior mean around the clipped prediction,
    mu = sqrt(a_{t-1}) beta_t / (1 - a_t) clip(x0) + sqrt(alpha_t) (1 - a_{t-1}) / (1 - a_t) x_t,
    plus sqrt(beta-tilde_t) z; at these t some predictions lie outside [-1, 1]."""
    betas, alphas, a = linear_schedule()
    x_t = 2 * torch.randn(3, 1, 5, 5, generator=torch.Generator().manual_seed(t),
                          dtype=torch.float64)
    eps = smooth_eps(x_t, t)
    x_prev, x0_pred = diffusion.ddpm_step(x_t, t, eps, torch.Generator().manual_seed(5))
    x0 = (x_t - (1 - a[t]).sqrt() * eps) / a[t].sqrt()
    assert (x0.abs() > 1).any() and torch.allclose(x0_pred, x0.clamp(-1, 1), rtol=1e-5)
    mean = (a[t - 1].sqrt() * betas[t] / (1 - a[t]) * x0.clamp(-1, 1)
            + alphas[t].sqrt() * (1 - a[t - 1]) / (1 - a[t]) * x_t)
    z = torch.randn(x_t.shape, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    expected = mean + ((1 - a[t - 1]) / (1 - a[t]) * betas[t]).sqrt() * z
    assert (x_prev - expected).abs().max() < 1e-6


def ddim_reference(x_t, t, t_prev, eps, eta, z, a, clip):
    """DDIM Eq. 12 with Eq. 16's sigma, written out from the paper (a = alpha-bar, 1 past the
    last step). With clipping, x0 is clipped and eps replaced by the noise that gives x_t from
    the clipped x0 (the same update with the prediction brought back to the data range)."""
    a_t = a[t]
    a_prev = a[t_prev] if t_prev >= 0 else torch.tensor(1.0, dtype=a.dtype)
    sigma = eta * ((1 - a_prev) / (1 - a_t)).sqrt() * (1 - a_t / a_prev).sqrt()
    x0 = (x_t - (1 - a_t).sqrt() * eps) / a_t.sqrt()  # "predicted x_0"
    if clip:
        x0 = x0.clamp(-1, 1)
        eps = (x_t - a_t.sqrt() * x0) / (1 - a_t).sqrt()
    return a_prev.sqrt() * x0 + (1 - a_prev - sigma**2).sqrt() * eps + sigma * z, x0, sigma


@pytest.mark.parametrize("t, t_prev, eta", [(999, 899, 0.0), (700, 500, 0.5), (500, 499, 1.0),
                                            (300, 100, 1.0), (120, 40, 0.3), (40, -1, 0.7)])


@pytest.mark.parametrize("clip", [False, True])
def test_ddim_step_is_eq_12_with_eq_16_sigma(diffusion, t, t_prev, eta, clip):
    """One DDIM step, strided (t_prev < t - 1) or not, deterministic or with noise, equals Eq. 12
    with sigma from Eq. 16, written out independently; the same z from the same seed."""
    a = linear_schedule()[2]
    x_t = 1.5 * torch.randn(3, 1, 5, 5, generator=torch.Generator().manual_seed(t),
                            dtype=torch.float64)
    eps = smooth_eps(x_t, t)
    x_prev, x0_pred = diffusion.ddim_step(x_t, t, t_prev, eps, eta,
                                          torch.Generator().manual_seed(11), clip_denoised=clip)
    z = torch.randn(x_t.shape, generator=torch.Generator().manual_seed(11), dtype=torch.float64)
    expected, x0, sigma = ddim_reference(x_t, t, t_prev, eps, eta, z, a, clip)
    assert diffusion.ddim_sigma(t, t_prev, eta) == pytest.approx(sigma.item(), rel=1e-5, abs=1e-12)
    assert torch.allclose(x0_pred, x0, rtol=1e-5, atol=1e-6)
    assert (x_prev - expected).abs().max() < 1e-5
    if clip and t > 100:
        assert (x0.abs() == 1).any(), "the case must exercise the clipping"


def dit_with_nonzero_output(seed: int = 0) -> DiT:
    """A small DiT whose output is not zero and depends on the label. A fresh DiT outputs exactly
    zero (adaLN-Zero: the modulation layers and the output layer start at zero), which any
    guidance formula maps to zero; here those layers get seeded random weights, and the label
    embeddings a scale (std 1, not 0.02) at which the label changes the noise prediction a lot."""
    model = DiT(ModelConfig(patch_size=7, hidden_size=32, depth=1, num_heads=2)).eval()
    g = torch.Generator().manual_seed(seed)
    zero_init = [block.adaLN_modulation[-1] for block in model.blocks] + [
        model.final_layer.adaLN_modulation[-1], model.final_layer.linear]
    with torch.no_grad():
        for layer in zero_init:
            for p in layer.parameters():
                p.copy_(0.2 * torch.randn(p.shape, generator=g))
        table = model.y_embedder.embedding_table.weight
        table.copy_(torch.randn(table.shape, generator=g))
    return model


class TwoPassGuidance:
    """Classifier-free guidance written out (Ho & Salimans 2022, Eq. 6, with s = 1 + w) from two
    separate forward passes of the DiT: eps_uncond + s (eps_cond - eps_uncond), where eps_cond
    sees the labels y and eps_uncond the null label num_classes."""

    def __init__(self, model: DiT):
        self.model = model

    def forward_with_cfg(self, x, t, y, cfg_scale):
        eps_cond = self.model(x, t, y)
        eps_uncond = self.model(x, t, torch.full_like(y, self.model.config.num_classes))
        return eps_uncond + cfg_scale * (eps_cond - eps_uncond)


@pytest.mark.parametrize("cfg_scale", [0.0, 1.0, 2.0, 3.5])
def test_sample_with_dit_guidance(diffusion, cfg_scale):
    """Sampling with the DiT uses the guided noise eps_uncond + s (eps_cond - eps_uncond): every
    state and x0 prediction equals that of the same sampler, from the same seed, driven by the
    formula computed from two separate passes (TwoPassGuidance). The DiT's own forward_with_cfg
    batches both halves into one pass and has shortcuts for s = 0 and 1, so swapped halves, s on
    the wrong term or a wrong shortcut all show. The model's conditional and unconditional
    predictions differ by ~1 on average (both are ~1), so any of those is far above the
    tolerance; no clipping, which could saturate both runs to the same +-1."""
    model = dit_with_nonzero_output()
    y = torch.tensor([0, 5])
    x = torch.randn(2, 1, 28, 28, generator=torch.Generator().manual_seed(1))
    t = torch.tensor([999, 300])
    with torch.no_grad():
        gap = model(x, t, y) - model(x, t, torch.full_like(y, 10))
    assert gap.abs().mean() > 0.3, "the test needs a model whose label matters"

    def run(m):
        return diffusion.sample(m, (2, 1, 28, 28), y, sampler="ddim", steps=4, eta=1.0,
                                cfg_scale=cfg_scale, generator=torch.Generator().manual_seed(0),
                                clip_denoised=False, return_intermediates=True)

    out, states, x0_preds = run(model)
    _, want_states, want_x0_preds = run(TwoPassGuidance(model))
    assert out.shape == (2, 1, 28, 28) and torch.isfinite(states).all()
    for k, (got, want) in enumerate(zip(states, want_states)):
        assert (got - want).abs().max() < 1e-5 * (1 + want.abs().max()), f"state {k}"
    for k, (got, want) in enumerate(zip(x0_preds, want_x0_preds)):
        assert (got - want).abs().max() < 1e-5 * (1 + want.abs().max()), f"x0 of step {k}"


def test_min_snr_weighting_in_the_loss(diffusion):
    # The loss must weight each image's MSE by min(SNR_t, gamma) / SNR_t: recompute it by hand
    # with the same t and noise (a fixed seed) and a model that always predicts zero.
    class Zero:
        def __call__(self, x, t, y):
            return torch.zeros_like(x)

    x0 = torch.rand(64, 1, 4, 4) * 2 - 1
    y = torch.zeros(64, dtype=torch.long)
    torch.manual_seed(5)
    weighted = diffusion.training_loss(Zero(), x0, y, min_snr_gamma=5.0)
    torch.manual_seed(5)
    plain = diffusion.training_loss(Zero(), x0, y)
    torch.manual_seed(5)
    t = torch.randint(0, 1000, (64,))  # the draws training_loss makes, in the same order
    noise = torch.randn_like(x0)
    snr = diffusion.snr[t]
    per_image = noise.pow(2).mean(dim=(1, 2, 3))
    assert plain.item() == pytest.approx(per_image.mean().item(), rel=1e-5)
    assert weighted.item() == pytest.approx((per_image * snr.clamp(max=5.0) / snr).mean().item(), rel=1e-5)
    assert weighted < plain  # low-noise steps (SNR > 5) are down-weighted


def test_training_overfits_one_batch(diffusion):
    torch.manual_seed(0)
    model = DiT(ModelConfig(patch_size=4, hidden_size=64, depth=2, num_heads=4,
                            class_dropout_prob=0.0))
    # a fixed batch of 8 smooth "images": Gaussian blobs at random places, in [-1, 1]
    centres = torch.rand(8, 2) * 16 + 6
    rows, cols = torch.meshgrid(torch.arange(28.0), torch.arange(28.0), indexing="ij")
    r2 = (rows - centres[:, 0, None, None]) ** 2 + (cols - centres[:, 1, None, None]) ** 2
    x0 = (torch.exp(-r2 / 20) * 2 - 1).unsqueeze(1)  # (8, 1, 28, 28)
    y = torch.arange(8) % 10
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)

    def eval_loss():
        torch.manual_seed(123)  # the same t and noise every time
        with torch.no_grad():
            return sum(diffusion.training_loss(model, x0, y).item() for _ in range(20)) / 20

    before = eval_loss()
    torch.manual_seed(1)
    for _ in range(300):
        loss = diffusion.training_loss(model, x0, y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    after = eval_loss()
    assert before == pytest.approx(1.0, abs=0.05)  # a fresh model predicts eps = 0: loss = E[eps^2]
    assert after < before / 8, (before, after)  # measured: 1.00 -> ~0.05


def test_min_snr_weight_is_one_where_noisy_and_gamma_over_snr_where_clean(diffusion):
    w = diffusion.min_snr_weights(5.0)
    t = torch.arange(1000)
    assert torch.allclose(diffusion._min_snr_weighted(torch.ones(1000), t, 5.0), w)  # the loss's
    assert torch.equal(diffusion.min_snr_weights(0.0), torch.ones(1000))  # plain MSE: all 1
    clean = diffusion.snr > 5
    assert torch.equal(w[~clean], torch.ones_like(w[~clean]))
    assert torch.allclose(w[clean], 5.0 / diffusion.snr[clean])
    assert clean[:130].all() and not clean[130:].any()  # t < 130: the 13% down-weighted


def test_the_defaults_gamma_weighs_fully_from_t_327_as_the_docs_say(diffusion):
    from config import TrainConfig

    gamma = TrainConfig().min_snr_gamma
    assert gamma == 0.5  # the README's section 2 and diffusion.training_loss quote its threshold
    w = diffusion.min_snr_weights(gamma)
    assert torch.equal(w[327:], torch.ones(1000 - 327)) and (w[:327] < 1).all()
    # a lower gamma weighs every step at most as much as a higher one
    assert (w <= diffusion.min_snr_weights(1.0)).all() and w[0] < 1e-4
