"""Tests of the four samplers against exact answers: an oracle that knows x0, and Gaussian data
whose optimal noise prediction is known in closed form."""

import pytest
import torch

from diffusion import SAMPLERS, GaussianDiffusion
from helpers import SmoothEps, X0Oracle, linear_schedule

FAST_SAMPLERS = [s for s in SAMPLERS if s != "ddpm"]


@pytest.fixture(scope="module")
def diffusion():
    return GaussianDiffusion()


class GaussianOracle:
    """The exact noise prediction when the data is N(mu, s^2) in every pixel, independently.

    x_t = sqrt(a) x0 + sqrt(1 - a) eps is then Gaussian with variance a s^2 + 1 - a, and
    E[eps | x_t] = sqrt(1 - a) (x_t - sqrt(a) mu) / (a s^2 + 1 - a)   (a = alpha-bar_t).
    """

    def __init__(self, diffusion, mu, s):
        self.a = diffusion.alphas_cumprod.double()
        self.mu, self.s = mu, s

    def forward_with_cfg(self, x, t, y, cfg_scale):
        a = self.a[t].reshape(-1, 1, 1, 1).to(x.dtype)
        return (1 - a).sqrt() * (x - a.sqrt() * self.mu) / (a * self.s**2 + 1 - a)


def oracle_path(sampler, x_T, x0, ts, replay):
    """The states a sampler must visit with the x0 oracle, x_T first and x0 last, in float64 from
    the paper's schedule (a = alpha-bar), not diffusion.py's. The deterministic samplers solve the
    probability-flow ODE, whose solution keeps the one noise eps_T that x_T holds:
    x_t = sqrt(a_t) x0 + sqrt(1 - a_t) eps_T, with eps_T = (x_T - sqrt(a_T) x0) / sqrt(1 - a_T).
    DDPM draws fresh noise z at every step but the last (`replay`: a generator in the state the
    sampler's was, so that it gives the same draws after x_T), and the noise part e = x - sqrt(a) x0
    of its state follows Eq. 7's posterior around the true x0:
    e_{t-1} = sqrt(alpha_t) (1 - a_{t-1}) / (1 - a_t) e_t + sqrt(beta-tilde_t) z."""
    betas, alphas, a = linear_schedule()
    e = x_T - a[ts[0]].sqrt() * x0
    if sampler != "ddpm":
        eps_T = e / (1 - a[ts[0]]).sqrt()
        return [a[t].sqrt() * x0 + (1 - a[t]).sqrt() * eps_T for t in ts] + [x0]
    path = [x_T]
    for t in ts[:-1]:
        z = torch.randn(x_T.shape, generator=replay, dtype=torch.float64)
        ratio = (1 - a[t - 1]) / (1 - a[t])
        e = alphas[t].sqrt() * ratio * e + (ratio * betas[t]).sqrt() * z
        path.append(a[t - 1].sqrt() * x0 + e)
    return path + [x0]


@pytest.mark.parametrize("sampler, steps", [(s, n) for s in FAST_SAMPLERS for n in [1, 2, 5, 7, 20, 100]]
                         + [("ddpm", 1000)])
def test_oracle_x0_is_returned_exactly(diffusion, sampler, steps):
    """With the x0 oracle every state is known (oracle_path): each must be on that path at its own
    timestep, and every step, not only the last, must predict x0 itself. The last step returns
    the oracle's x0 from any state, so the final image alone would hide a wrong intermediate
    update, an error that a later step cancels, or a state paired with the wrong timestep.
    Tolerances: the states come back in float32 (measured: off by at most 3e-7, and 1.4e-6 after
    DDPM's 1000 steps; x0 predictions 3e-8)."""
    g = torch.Generator().manual_seed(steps)
    x0 = torch.rand(3, 1, 28, 28, generator=g, dtype=torch.float64) * 2 - 1  # the data range
    replay = torch.Generator().set_state(g.get_state())  # the draws the sampler is about to make
    x_T = torch.randn(x0.shape, generator=replay, dtype=torch.float64)
    out, states, x0_preds = diffusion.sample(X0Oracle(diffusion, x0), x0.shape,
                                             torch.zeros(3, dtype=torch.long), sampler=sampler,
                                             steps=steps, eta=0.0, generator=g,
                                             return_intermediates=True)
    ts = diffusion.sampler_timesteps(sampler, steps)
    assert states.shape[0] == len(ts) + 1 and x0_preds.shape[0] == len(ts)
    assert torch.equal(states[0], x_T.float()) and torch.equal(states[-1], out)
    for k, want in enumerate(oracle_path(sampler, x_T, x0, ts, replay)):
        t = ts[k] if k < len(ts) else "-1, x0"
        assert (states[k] - want).abs().max() < 1e-5, f"state {k} (t = {t}) is off the path"
    for k, t in enumerate(ts):
        assert (x0_preds[k] - x0).abs().max() < 1e-6, f"step {k} (t = {t}) mispredicts x0"
    assert (out - x0).abs().max() < 1e-5


def test_timestep_schedules(diffusion):
    for steps in [1, 2, 7, 20, 50, 1000]:
        for sampler in FAST_SAMPLERS:
            ts = diffusion.sampler_timesteps(sampler, steps)
            assert len(ts) == steps and ts[0] == 999
            assert all(a > b for a, b in zip(ts, ts[1:])), "strictly decreasing"
            assert steps == 1 or ts[-1] == 0
    assert diffusion.sampler_timesteps("ddpm", 7) == list(range(999, -1, -1))
    # log-SNR spacing: equal steps in lambda = log(alpha / sigma), up to integer rounding
    lam = diffusion.snr.double().log() / 2
    ts = diffusion.logsnr_timesteps(10)
    gaps = [(lam[b] - lam[a]).item() for a, b in zip(ts, ts[1:])]
    assert max(gaps) - min(gaps) < 0.2 * (sum(gaps) / len(gaps))


def test_logsnr_timesteps_stay_distinct_where_the_log_snr_jumps():
    # a schedule whose lambda_t jumps from 9 to -4 at t = 500: most targets round to one side of
    # the jump, and the rule that keeps the steps strictly decreasing must still hold
    diffusion = GaussianDiffusion()
    lam = torch.cat([torch.linspace(10, 9, 500), torch.linspace(-4, -5, 500)]).double()
    diffusion.snr = (2 * lam).exp().float()
    ts = diffusion.logsnr_timesteps(20)
    assert len(ts) == 20 and ts[0] == 999 and ts[-1] == 0
    assert all(a > b for a, b in zip(ts, ts[1:])), ts


def test_ddim_timesteps_are_the_nearest_integers_to_even_spacing(diffusion):
    """Evenly spaced from T-1 to 0 means t_i = round((T-1) - i (T-1) / (S-1)) for every step
    count, not only those (like 50 or 1000) where the spacing happens to be a whole number."""
    for steps in range(2, 60):
        stride = 999 / (steps - 1)
        ts = diffusion.ddim_timesteps(steps)
        assert all(abs(t - (999 - i * stride)) <= 0.5 for i, t in enumerate(ts)), steps


@pytest.mark.parametrize("sampler", SAMPLERS)
def test_clip_denoised_keeps_every_prediction_in_the_data_range(diffusion, sampler):
    """A model whose clean image lies outside [-1, 1] (an oracle of x0 = 3): with clip_denoised
    every step's x0 prediction is clipped to the data range, so the sampler ends on the clipped
    image, 1 everywhere; without it the sampler follows the oracle to 3."""
    x0 = torch.full((2, 1, 3, 3), 3.0, dtype=torch.float64)
    y = torch.zeros(2, dtype=torch.long)
    for clip, want in [(True, 1.0), (False, 3.0)]:
        out, _, x0_preds = diffusion.sample(X0Oracle(diffusion, x0), x0.shape, y, sampler=sampler,
                                            steps=5, eta=0.0, clip_denoised=clip,
                                            generator=torch.Generator().manual_seed(0),
                                            return_intermediates=True)
        assert x0_preds.abs().max().item() == pytest.approx(want, abs=1e-5)
        assert torch.allclose(out, torch.full_like(out, want), atol=1e-4)


# The Gaussian test. Data N(MU, S^2) per pixel; N_SAMPLES samples drawn from one seeded x_T.
# The deterministic samplers solve the probability-flow ODE, whose exact solution for Gaussian
# data is known: it keeps each sample's standard score, x_0 = MU + S * (x_T - sqrt(a_T) MU) /
# sqrt(a_T S^2 + 1 - a_T). Tolerances: with N_SAMPLES = 20,000 the sample mean and standard
# deviation of the exact answer themselves fluctuate by S / sqrt(N) = 0.0035 and
# S / sqrt(2 N) = 0.0025 (one standard error), so mean and std are checked against the exact
# solution's own statistics for the same x_T, to within 3% of S for the 20-step ODE solvers (their
# discretisation error, measured: DPM-Solver++ ~0.6%, PLMS ~0.5%, DDIM ~13% low on the std, so DDIM
# gets its own looser bound), and DDPM, which draws fresh noise, against MU and S within 5 standard
# errors.
MU, S, N_SAMPLES = 0.2, 0.5, 20_000


def gaussian_run(diffusion, sampler, steps):
    x_T = torch.randn((N_SAMPLES, 1, 1, 1), generator=torch.Generator().manual_seed(0),
                      dtype=torch.float64)
    out = diffusion.sample(GaussianOracle(diffusion, MU, S), x_T.shape,
                           torch.zeros(N_SAMPLES, dtype=torch.long), sampler=sampler, steps=steps,
                           eta=0.0, generator=torch.Generator().manual_seed(0),
                           clip_denoised=False)
    a_T = diffusion.alphas_cumprod.double()[-1]
    exact = MU + S * (x_T - a_T.sqrt() * MU) / (a_T * S**2 + 1 - a_T).sqrt()
    return out.double(), exact


@pytest.mark.parametrize("sampler, std_tol", [("plms", 0.03), ("dpm-solver++", 0.03), ("ddim", 0.2)])
def test_gaussian_data_ode_samplers_at_20_steps(diffusion, sampler, std_tol):
    out, exact = gaussian_run(diffusion, sampler, 20)
    assert abs(out.mean() - exact.mean()) < 0.03 * S
    assert abs(out.std() - exact.std()) < std_tol * S
    assert abs(exact.mean() - MU) < 5 * S / N_SAMPLES**0.5  # the exact answer is the data law


def test_gaussian_data_ddpm(diffusion):
    out, _ = gaussian_run(diffusion, "ddpm", 1000)
    assert abs(out.mean() - MU) < 5 * S / N_SAMPLES**0.5
    assert abs(out.std() - S) < 0.03 * S  # DDPM's fixed variance beta-tilde is itself ~1% off


def test_dpm_solver_closer_to_exact_than_ddim_at_20_steps(diffusion):
    errors = {}
    for sampler in ["ddim", "dpm-solver++"]:
        out, exact = gaussian_run(diffusion, sampler, 20)
        errors[sampler] = (out - exact).abs().mean().item()
    # measured: DDIM 5.6e-2, DPM-Solver++ 5.9e-3, ten times closer; asserted with margin
    assert errors["dpm-solver++"] < errors["ddim"] / 5, errors


@pytest.mark.parametrize("sampler", SAMPLERS)
def test_reproducible_under_seed(diffusion, sampler):
    model = GaussianOracle(diffusion, 0.0, 0.5)
    y = torch.zeros(4, dtype=torch.long)
    runs = [diffusion.sample(model, (4, 1, 3, 3), y, sampler=sampler, steps=10, eta=1.0,
                             generator=torch.Generator().manual_seed(seed)) for seed in (1, 1, 2)]
    assert torch.equal(runs[0], runs[1])
    assert not torch.equal(runs[0], runs[2])


@pytest.mark.parametrize("sampler", SAMPLERS)
def test_intermediates(diffusion, sampler):
    model = GaussianOracle(diffusion, 0.0, 0.5)
    y = torch.zeros(2, dtype=torch.long)
    x, states, x0_preds = diffusion.sample(model, (2, 1, 3, 3), y, sampler=sampler, steps=6,
                                           return_intermediates=True,
                                           generator=torch.Generator().manual_seed(0))
    n = 1000 if sampler == "ddpm" else 6
    assert states.shape == (n + 1, 2, 1, 3, 3) and x0_preds.shape == (n, 2, 1, 3, 3)
    assert torch.equal(states[-1], x)
    assert torch.equal(x0_preds[-1], x)  # the last step lands on its own prediction


def test_unknown_sampler(diffusion):
    with pytest.raises(ValueError, match="unknown sampler"):
        diffusion.sample(None, (1, 1, 2, 2), torch.zeros(1, dtype=torch.long), sampler="euler")


# ---------------------------------------------------------------- every step, not only the last

@pytest.mark.parametrize("sampler, eta", [("ddpm", 1.0), ("ddim", 1.0), ("ddim", 0.4)])
def test_stochastic_samplers_predict_x0_at_every_step(diffusion, sampler, eta):
    """With fresh noise the states leave the ODE path, but the oracle still knows x0 exactly, so
    the clean image every step aims at must be x0: the x0 formula and its timestep are right at
    every one of the steps, with any noise the step added before."""
    g = torch.Generator().manual_seed(3)
    x0 = (torch.rand(2, 1, 4, 4, generator=g, dtype=torch.float64) * 2 - 1) * 0.95
    x, _, x0_preds = diffusion.sample(X0Oracle(diffusion, x0), x0.shape,
                                      torch.zeros(2, dtype=torch.long), sampler=sampler, steps=10,
                                      eta=eta, generator=g, return_intermediates=True)
    assert x0_preds.shape[0] == (1000 if sampler == "ddpm" else 10)
    assert (x0_preds - x0).abs().max() < 1e-4
    assert (x - x0).abs().max() < 1e-4


# ---------------------------------------------------------------- the multistep formulas

def eps_at(model, x, t):
    return model.forward_with_cfg(x, torch.full((x.shape[0],), t), None, 1.0)


def plms_reference(model, x_T, ts, a):
    """PLMS written out from PNDM (Liu et al. 2022): the transfer phi of Eq. 11 (the deterministic
    DDIM update) fed with e' from the linear multistep formulas of Eq. 12, a pseudo improved-Euler
    step first (as in the latent-diffusion code). Returns every state, x_T first."""

    def transfer(x, t, t_next, e):
        a_t, a_next = a[t], (a[t_next] if t_next >= 0 else torch.tensor(1.0, dtype=a.dtype))
        return a_next.sqrt() * (x - (1 - a_t).sqrt() * e) / a_t.sqrt() + (1 - a_next).sqrt() * e

    x, history, states = x_T, [], [x_T]  # history: the raw predictions, most recent first
    for t, t_next in zip(ts, ts[1:] + [-1]):
        e = eps_at(model, x, t)
        if not history:
            if t_next < 0:  # a single-step run
                e_prime = e
            else:  # pseudo improved Euler: average with the prediction where the step lands
                e_prime = (e + eps_at(model, transfer(x, t, t_next, e), t_next)) / 2
        elif len(history) == 1:
            e_prime = (3 * e - history[0]) / 2
        elif len(history) == 2:
            e_prime = (23 * e - 16 * history[0] + 5 * history[1]) / 12
        else:
            e_prime = (55 * e - 59 * history[0] + 37 * history[1] - 9 * history[2]) / 24
        x = transfer(x, t, t_next, e_prime)
        history = [e] + history
        states.append(x)
    return states


def dpm_solver_2m_reference(model, x_T, ts, a):
    """DPM-Solver++(2M) written out from Lu et al. 2022 ("DPM-Solver++"), Algorithm 2, with
    alpha_t = sqrt(a_t), sigma_t = sqrt(1 - a_t), lambda_t = log(alpha_t / sigma_t); the last
    timestep is followed by the jump to alpha-bar = 1, where x_0 is the data prediction itself.
    Returns every state (x_T first) and every data prediction."""
    alpha, sigma = a.sqrt(), (1 - a).sqrt()
    lam = torch.log(alpha / sigma)
    x, states, preds, prev = x_T, [x_T], [], None
    for i, t in enumerate(ts):
        x0_t = (x - sigma[t] * eps_at(model, x, t)) / alpha[t]  # x_theta(x_t, t)
        preds.append(x0_t)
        if i == len(ts) - 1:
            x = x0_t
        else:
            s = ts[i + 1]
            h = lam[s] - lam[t]
            if prev is None:  # line 3: the first step is first order
                D = x0_t
            else:  # lines 5-7: r_i = h_{i-1} / h_i
                x0_prev, h_prev = prev
                r = h_prev / h
                D = (1 + 1 / (2 * r)) * x0_t - 1 / (2 * r) * x0_prev
            x = sigma[s] / sigma[t] * x - alpha[s] * (torch.exp(-h) - 1) * D
            prev = (x0_t, h)
        states.append(x)
    return states, preds


class UnevenSteps(GaussianDiffusion):
    """The same schedule, sampled at timesteps whose log-SNR gaps differ a lot (ratios r from 0.2
    to 6), so that a multistep formula that mixes up r and 1 / r cannot hide behind r = 1."""

    def sampler_timesteps(self, sampler, steps):
        return [999, 700, 640, 300, 60, 0]


@pytest.mark.parametrize("steps", [3, 10])
def test_plms_matches_pndm_formulas_on_a_smooth_model(diffusion, steps):
    """Every state of PLMS equals PNDM's update written out independently, on a model whose
    predictions change from step to step (the oracle gives the same eps at every step, so it
    cannot tell Adams-Bashforth coefficients that sum to 1 apart)."""
    model = SmoothEps()
    _, states, _ = diffusion.sample(model, (2, 1, 4, 4), torch.zeros(2, dtype=torch.long),
                                    sampler="plms", steps=steps,
                                    generator=torch.Generator().manual_seed(1),
                                    clip_denoised=False, return_intermediates=True)
    ts = diffusion.sampler_timesteps("plms", steps)
    expected = plms_reference(model, states[0].double(), ts, linear_schedule()[2])
    for k, want in enumerate(expected):
        assert (states[k] - want).abs().max() < 1e-5 * (1 + want.abs().max()), f"state {k}"


@pytest.mark.parametrize("schedule", [GaussianDiffusion, UnevenSteps])
def test_dpm_solver_pp_matches_algorithm_2_on_a_smooth_model(schedule):
    """Every state and data prediction of DPM-Solver++ equals DPM-Solver++(2M) written out from
    the paper, first-order first step, second-order steps and the final jump, on the sampler's
    own log-SNR timesteps and on uneven ones."""
    diffusion, model = schedule(), SmoothEps()
    _, states, x0_preds = diffusion.sample(model, (2, 1, 4, 4), torch.zeros(2, dtype=torch.long),
                                           sampler="dpm-solver++", steps=6,
                                           generator=torch.Generator().manual_seed(2),
                                           clip_denoised=False, return_intermediates=True)
    ts = diffusion.sampler_timesteps("dpm-solver++", 6)
    want_states, want_preds = dpm_solver_2m_reference(model, states[0].double(), ts,
                                                      linear_schedule()[2])
    for k, want in enumerate(want_states):
        assert (states[k] - want).abs().max() < 1e-5 * (1 + want.abs().max()), f"state {k}"
    for k, want in enumerate(want_preds):
        assert (x0_preds[k] - want).abs().max() < 1e-5 * (1 + want.abs().max()), f"x0 of step {k}"


# ---------------------------------------------------------------- the grid's rows

class LabelOracle(torch.nn.Module):
    """A "model" whose clean image is label / 10 in every pixel (a module with one unused
    parameter, which tells sample_grid the device)."""

    def __init__(self, diffusion):
        super().__init__()
        self.diffusion = diffusion
        self.unused = torch.nn.Parameter(torch.zeros(1))

    def forward_with_cfg(self, x, t, y, cfg_scale):
        x0 = (y.to(x.dtype) / 10).view(-1, 1, 1, 1).expand_as(x)
        return self.diffusion.predict_eps_from_x0(x, t, x0)


def test_sample_grid_draws_row_k_as_the_k_th_digit_asked_for():
    from config import get_preset
    from support.sampling import sample_grid

    cfg = get_preset("tiny")
    cfg.sample.sampler, cfg.sample.steps = "ddim", 5
    diffusion = GaussianDiffusion.from_config(cfg.diffusion)
    grid = sample_grid(LabelOracle(diffusion), diffusion, cfg, [3, 1, 4], per_row=2,
                       generator=torch.Generator().manual_seed(0))
    means = grid.flatten(1).mean(1)  # row-major: digit 3 twice, then 1 twice, then 4 twice
    torch.testing.assert_close(means, torch.tensor([0.3, 0.3, 0.1, 0.1, 0.4, 0.4]), atol=2e-3,
                               rtol=0)


def test_class_labels_are_class_major():
    from support.sampling import class_labels

    assert class_labels(3, 2).tolist() == [0, 0, 1, 1, 2, 2]  # grid row k is digit k


@pytest.mark.parametrize("eta", [0.0, 1.0])  # neither is SampleConfig's default, 0.7
def test_generate_samples_with_the_configs_eta(eta):
    from config import get_preset
    from support.sampling import generate

    cfg = get_preset("tiny")
    cfg.sample.sampler, cfg.sample.steps, cfg.sample.eta = "ddim", 5, eta
    diffusion = GaussianDiffusion.from_config(cfg.diffusion)
    labels = torch.tensor([1, 2])
    got = generate(SmoothEps(), diffusion, labels, cfg, torch.Generator().manual_seed(0))
    want = diffusion.sample(SmoothEps(), (2, 1, 28, 28), labels, sampler="ddim", steps=5, eta=eta,
                            cfg_scale=cfg.sample.cfg_scale,
                            generator=torch.Generator().manual_seed(0))
    assert torch.equal(got, want)


class MatmulDtype(LabelOracle):
    """LabelOracle that records the dtype its matrix product runs in: float32 unless autocast."""

    def forward_with_cfg(self, x, t, y, cfg_scale):
        self.dtypes.add((x.float().flatten(1) @ torch.ones(x[0].numel(), 1)).dtype)
        return super().forward_with_cfg(x, t, y, cfg_scale)


@pytest.mark.parametrize("bf16", [False, True])
def test_generate_runs_the_network_in_bf16_only_when_asked(bf16):
    from config import get_preset
    from support.sampling import generate

    cfg = get_preset("tiny")
    cfg.sample.sampler, cfg.sample.steps = "ddim", 3
    diffusion = GaussianDiffusion.from_config(cfg.diffusion)
    model = MatmulDtype(diffusion)
    model.dtypes = set()
    generate(model, diffusion, torch.tensor([1, 2]), cfg, torch.Generator().manual_seed(0), bf16=bf16)
    assert model.dtypes == {torch.bfloat16 if bf16 else torch.float32}
