"""Tests of the four samplers against exact answers: an oracle that knows x0, and Gaussian data
whose optimal noise prediction is known in closed form."""

import pytest
import torch

from diffusion import SAMPLERS, GaussianDiffusion
from helpers import X0Oracle

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


@pytest.mark.parametrize("sampler, steps", [(s, n) for s in FAST_SAMPLERS for n in [1, 2, 5, 20, 100]]
                         + [("ddpm", 1000)])
def test_oracle_x0_is_returned_exactly(diffusion, sampler, steps):
    g = torch.Generator().manual_seed(steps)
    x0 = torch.rand(3, 1, 28, 28, generator=g) * 2 - 1
    out = diffusion.sample(X0Oracle(diffusion, x0), x0.shape, torch.zeros(3, dtype=torch.long),
                           sampler=sampler, steps=steps, eta=0.0, generator=g)
    assert (out - x0).abs().max() < 1e-4


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
