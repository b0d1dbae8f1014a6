"""Gaussian diffusion: the noise schedule, forward noising, the training loss and the samplers.

One object, `GaussianDiffusion`, owns the schedule; nothing lives at module level. Quantities are
named as in the papers and the code cites the equation it follows:

  DDPM: Ho, Jain & Abbeel, "Denoising Diffusion Probabilistic Models", 2020 (arXiv:2006.11239)
  DDIM: Song, Meng & Ermon, "Denoising Diffusion Implicit Models", 2021 (arXiv:2010.02502)
  Min-SNR: Hang et al., "Efficient Diffusion Training via Min-SNR Weighting Strategy", 2023
  PLMS: Liu et al., "Pseudo Numerical Methods for Diffusion Models on Manifolds", 2022 (PNDM)
  DPM-Solver: Lu et al., "DPM-Solver: A Fast ODE Solver for Diffusion Probabilistic Model Sampling
    in Around 10 Steps", 2022 (arXiv:2206.00927)
  DPM-Solver++: Lu et al., "DPM-Solver++: Fast Solver for Guided Sampling of Diffusion
    Probabilistic Models", 2022 (arXiv:2211.01095)
  Timesteps from T-1: Lin et al., "Common Diffusion Noise Schedules and Sample Steps are
    Flawed", 2024

Notation: x_0 a clean image in [-1, 1], x_t its noised version, eps ~ N(0, I) the noise the model
predicts, beta_t the variance added at step t, alpha_t = 1 - beta_t and alpha-bar_t the product of
the alphas up to t. The papers count steps 1 .. T; the code indexes them 0 .. T-1, so code index t
is the paper's step t + 1 and `alphas_cumprod[t] = prod(alphas[:t + 1])`.

The samplers accept any `model` with a method `forward_with_cfg(x, t, y, cfg_scale) -> eps`
(the DiT of dit.py has it, and so has dit.Autoguided, the DiT with autoguidance), so tests can
plug in an oracle that knows the answer.
"""

from __future__ import annotations

import math
from typing import Callable

import torch
from tqdm.auto import tqdm

from config import SAMPLERS, DiffusionConfig, SampleConfig


class GaussianDiffusion:
    """Linear-beta Gaussian diffusion (DDPM section 4) with DDPM, DDIM, PLMS and DPM-Solver++."""

    def __init__(self, num_timesteps: int = 1000, beta_start: float = 1e-4, beta_end: float = 0.02):
        self.num_timesteps = T = num_timesteps
        # Computed in float64 (products of 1000 numbers near 1 lose digits in float32), stored in
        # float32.
        betas = torch.linspace(beta_start, beta_end, T, dtype=torch.float64)
        alphas = 1.0 - betas
        alphas_cumprod = torch.cumprod(alphas, dim=0)  # alpha-bar_t
        alphas_cumprod_prev = torch.cat([torch.ones(1, dtype=torch.float64), alphas_cumprod[:-1]])

        # Posterior q(x_{t-1} | x_t, x_0) = N(mean, variance), DDPM Eq. 6-7:
        #   variance beta-tilde_t = (1 - alpha-bar_{t-1}) / (1 - alpha-bar_t) * beta_t
        #   mean = coef1 * x_0 + coef2 * x_t with
        #   coef1 = sqrt(alpha-bar_{t-1}) beta_t / (1 - alpha-bar_t),
        #   coef2 = sqrt(alpha_t) (1 - alpha-bar_{t-1}) / (1 - alpha-bar_t)
        posterior_variance = betas * (1.0 - alphas_cumprod_prev) / (1.0 - alphas_cumprod)
        posterior_mean_coef1 = betas * alphas_cumprod_prev.sqrt() / (1.0 - alphas_cumprod)
        posterior_mean_coef2 = (1.0 - alphas_cumprod_prev) * alphas.sqrt() / (1.0 - alphas_cumprod)

        f32 = torch.float32
        self.betas = betas.to(f32)
        self.alphas = alphas.to(f32)
        self.alphas_cumprod = alphas_cumprod.to(f32)
        self.alphas_cumprod_prev = alphas_cumprod_prev.to(f32)
        self.sqrt_alphas_cumprod = alphas_cumprod.sqrt().to(f32)
        self.sqrt_one_minus_alphas_cumprod = (1.0 - alphas_cumprod).sqrt().to(f32)
        self.posterior_variance = posterior_variance.to(f32)
        self.posterior_mean_coef1 = posterior_mean_coef1.to(f32)
        self.posterior_mean_coef2 = posterior_mean_coef2.to(f32)
        # Signal-to-noise ratio of x_t: alpha-bar_t / (1 - alpha-bar_t), for min-SNR weighting.
        self.snr = (alphas_cumprod / (1.0 - alphas_cumprod)).to(f32)

    @classmethod
    def from_config(cls, config: DiffusionConfig) -> "GaussianDiffusion":
        return cls(config.num_timesteps, config.beta_start, config.beta_end)

    @staticmethod
    def _gather(values: torch.Tensor, t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """values[t] for a batch of timesteps t (B,), shaped (B, 1, ..., 1), as many dims as x,
        to broadcast against it."""
        out = values.to(t.device)[t].to(x.dtype)
        return out.reshape(t.shape[0], *([1] * (x.dim() - 1)))

    # ---------------------------------------------------------------- forward process and loss

    def q_sample(self, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """Sample x_t ~ q(x_t | x_0) in one shot (DDPM Eq. 4):
        x_t = sqrt(alpha-bar_t) x_0 + sqrt(1 - alpha-bar_t) eps."""
        return (self._gather(self.sqrt_alphas_cumprod, t, x0) * x0
                + self._gather(self.sqrt_one_minus_alphas_cumprod, t, x0) * noise)

    def predict_x0_from_eps(self, x_t: torch.Tensor, t: torch.Tensor,
                            eps: torch.Tensor) -> torch.Tensor:
        """Invert Eq. 4 for x_0 given the (predicted) noise."""
        return ((x_t - self._gather(self.sqrt_one_minus_alphas_cumprod, t, x_t) * eps)
                / self._gather(self.sqrt_alphas_cumprod, t, x_t))

    def predict_eps_from_x0(self, x_t: torch.Tensor, t: torch.Tensor,
                            x0: torch.Tensor) -> torch.Tensor:
        """Invert Eq. 4 for eps given x_0."""
        return ((x_t - self._gather(self.sqrt_alphas_cumprod, t, x_t) * x0)
                / self._gather(self.sqrt_one_minus_alphas_cumprod, t, x_t))

    def training_loss(
        self, model: Callable, x0: torch.Tensor, y: torch.Tensor, min_snr_gamma: float = 0.0
    ) -> torch.Tensor:
        """DDPM Algorithm 1: t ~ Uniform, eps ~ N(0, I), loss = || eps - eps_theta(x_t, t) ||^2.

        With min_snr_gamma > 0 each image's MSE is weighted by min(SNR_t, gamma) / SNR_t
        (Hang et al. 2023, Eq. 9 for the eps objective): still noise prediction, but the nearly
        clean timesteps (SNR_t > gamma: t < 327 with the default's gamma 0.5) are down-weighted
        by gamma / SNR_t. Their noise MSE is SNR_t times their x_0 MSE, so plain MSE asks them
        for ever finer detail of x_0 (their noise is the hardest to find and matters least to a
        sample); the weight caps that factor at gamma.
        """
        B = x0.shape[0]
        t = torch.randint(0, self.num_timesteps, (B,), device=x0.device)  # line 3
        noise = torch.randn_like(x0)  # line 4
        x_t = self.q_sample(x0, t, noise)
        eps = model(x_t, t, y).float()  # float32 loss even when the model ran in bf16
        mse = (eps - noise).pow(2).mean(dim=(1, 2, 3))  # line 5, per image, (B,)
        return self._min_snr_weighted(mse, t, min_snr_gamma).mean()

    def _min_snr_weighted(self, mse: torch.Tensor, t: torch.Tensor, gamma: float) -> torch.Tensor:
        """Per-image losses (B,) times min(SNR_t, gamma) / SNR_t; unchanged for gamma = 0."""
        if gamma <= 0:
            return mse
        snr = self._gather(self.snr, t, mse)  # (B,)
        return mse * snr.clamp(max=gamma) / snr

    def min_snr_weights(self, gamma: float) -> torch.Tensor:
        """The weight that the loss gives each timestep, (T,): min(SNR_t, gamma) / SNR_t, or 1
        everywhere for gamma = 0 (plain MSE), as `_min_snr_weighted` applies it."""
        if gamma <= 0:
            return torch.ones_like(self.snr)
        return self.snr.clamp(max=gamma) / self.snr

    @torch.no_grad()
    def heldout_losses(self, model, x0: torch.Tensor, y: torch.Tensor, min_snr_gamma: float = 0.0,
                       buckets: int = 10, seed: int = 0) -> dict:
        """The loss on held-out images (nanoGPT's `estimate_loss`), and split by noise level.

        Image i gets the timestep floor(i T / B), so each of `buckets` equal ranges of t holds an
        equal share of the images when B is a multiple of `buckets` (a range left empty reports
        nan), and its noise comes from a generator seeded with `seed`: every call draws the same
        (t, eps), so successive evaluations differ only by the weights, and the training's own
        random stream is not touched. The model runs in eval mode (no label
        dropout). Returns {"loss": the training objective (min-SNR weighted if asked), "mse": the
        plain noise MSE, "bucket_mse": the plain noise MSE of each range of t, lowest t first}.
        """
        B = x0.shape[0]
        t = torch.arange(B, device=x0.device) * self.num_timesteps // B  # (B,), evenly over [0, T)
        noise = torch.randn(x0.shape, generator=torch.Generator().manual_seed(seed)).to(x0.device)
        was_training = model.training
        model.eval()
        eps = model(self.q_sample(x0, t, noise), t, y).float()
        model.train(was_training)
        mse = (eps - noise).pow(2).mean(dim=(1, 2, 3))  # (B,)
        bucket = t * buckets // self.num_timesteps  # (B,): which range of t each image is in
        return {"loss": self._min_snr_weighted(mse, t, min_snr_gamma).mean().item(),
                "mse": mse.mean().item(),
                "bucket_mse": [mse[bucket == b].mean().item() for b in range(buckets)]}

    # ---------------------------------------------------------------- samplers

    # The samplers keep x_t in float64. At t = T-1, recovering x_0 divides by
    # sqrt(alpha-bar) ~ 0.006, which magnifies float32 rounding (~6e-8) to ~1e-5; in float64 the
    # samplers are exact to far below what the tests check. The cost is negligible: the model
    # itself still runs in float32 (or bf16), only the few element-wise updates are float64.

    def _eps(self, model, x, t: int, y, cfg_scale: float) -> torch.Tensor:
        t_batch = torch.full((x.shape[0],), t, device=x.device, dtype=torch.long)
        return model.forward_with_cfg(x, t_batch, y, cfg_scale).to(x.dtype)

    @staticmethod
    def _noise(shape, generator, device) -> torch.Tensor:
        return torch.randn(shape, generator=generator, device=device, dtype=torch.float64)

    def ddpm_step(self, x_t: torch.Tensor, t: int, eps: torch.Tensor, generator=None,
                  clip_denoised: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
        """One ancestral step x_t -> x_{t-1} (DDPM Algorithm 2, line 4, with
        sigma_t^2 = beta-tilde_t); returns (x_{t-1}, x0_pred), the clean image the step aimed at.

        Written through the predicted x_0 and the posterior mean (Eq. 7); without clipping this is
        exactly 1/sqrt(alpha_t) (x_t - beta_t / sqrt(1 - alpha-bar_t) eps) of Algorithm 2.
        Clipping x_0 to the data range [-1, 1] keeps early, noisy predictions in bounds.
        """
        tt = torch.full((x_t.shape[0],), t, device=x_t.device, dtype=torch.long)
        x0 = self.predict_x0_from_eps(x_t, tt, eps)
        if clip_denoised:
            x0 = x0.clamp(-1, 1)
        mean = (self._gather(self.posterior_mean_coef1, tt, x_t) * x0
                + self._gather(self.posterior_mean_coef2, tt, x_t) * x_t)
        if t == 0:
            return mean, x0  # Algorithm 2: z = 0 at the last step (and beta-tilde_0 = 0 anyway)
        z = self._noise(x_t.shape, generator, x_t.device)
        return mean + self.posterior_variance[t].item() ** 0.5 * z, x0

    def ddim_timesteps(self, steps: int) -> list[int]:
        """`steps` timesteps evenly spaced from T-1 down to 0, both ends included (for one step,
        just T-1). Starting at T-1 means sampling starts from the noisiest step (alpha-bar ~ 4e-5,
        nearly pure noise), which the original DDIM spacing (0, 20, ..., 980) skips (Lin et al.
        2024); ending at t = 0 means the last model call sees almost no noise, so the final jump
        to x_0 loses nothing. steps = T visits every timestep."""
        if not 1 <= steps <= self.num_timesteps:
            raise ValueError(f"steps must be between 1 and {self.num_timesteps}, got {steps}")
        if steps == 1:
            return [self.num_timesteps - 1]
        stride = (self.num_timesteps - 1) / (steps - 1)
        return [round(self.num_timesteps - 1 - i * stride) for i in range(steps)]

    def logsnr_timesteps(self, steps: int) -> list[int]:
        """`steps` timesteps from T-1 down to 0 evenly spaced in lambda = log(alpha / sigma)
        instead of t: the spacing DPM-Solver recommends for low-resolution images (the first
        DPM-Solver paper, arXiv:2206.00927, section 3.3, and its code's `skip_type='logSNR'`).
        lambda rises steeply near t = 0, so this puts more steps at low noise, where a multistep
        solver would otherwise take one huge step. Rounded to integers and kept strictly
        decreasing."""
        if not 1 <= steps <= self.num_timesteps:
            raise ValueError(f"steps must be between 1 and {self.num_timesteps}, got {steps}")
        if steps == 1:
            return [self.num_timesteps - 1]
        lam = (self.snr.double().log() / 2)  # lambda_t, decreasing in t, (T,)
        targets = torch.linspace(lam[-1].item(), lam[0].item(), steps, dtype=torch.float64)
        ts = [int((lam - v).abs().argmin()) for v in targets]  # nearest integer timestep
        # Keep them strictly decreasing (no timestep visited twice) and within range: step i
        # must leave room for the steps - 1 - i that follow it, all distinct.
        for i in range(steps):
            ts[i] = min(max(ts[i], steps - 1 - i), self.num_timesteps - 1 - i)
            if i > 0:
                ts[i] = min(ts[i], ts[i - 1] - 1)
        return ts

    def ddim_sigma(self, t: int, t_prev: int, eta: float) -> float:
        """DDIM Eq. 16: sigma = eta sqrt((1 - a_prev) / (1 - a_t)) sqrt(1 - a_t / a_prev), with
        a = alpha-bar and a_prev = 1 past the last step. eta = 1 between adjacent steps gives
        sigma^2 = beta-tilde_t, the DDPM posterior variance; eta = 0 gives deterministic DDIM.
        Above 1, sigma^2 can exceed 1 - a_prev, the whole variance that x_(t_prev) may hold."""
        if not 0 <= eta <= 1:
            raise ValueError(f"eta must be between 0 and 1, got {eta}")
        a_t = self.alphas_cumprod[t].item()
        a_prev = self.alphas_cumprod[t_prev].item() if t_prev >= 0 else 1.0
        return eta * ((1 - a_prev) / (1 - a_t) * (1 - a_t / a_prev)) ** 0.5

    def ddim_step(self, x_t: torch.Tensor, t: int, t_prev: int, eps: torch.Tensor, eta: float,
                  generator=None, clip_denoised: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
        """One DDIM update x_t -> x_{t_prev} (DDIM Eq. 12); returns (x_{t_prev}, x0_pred):

            x_prev = sqrt(a_prev) x0_pred + sqrt(1 - a_prev - sigma^2) eps + sigma z

        where x0_pred = (x_t - sqrt(1 - a_t) eps) / sqrt(a_t) is the "predicted x_0" term.
        """
        # The same stored sqrt(alpha-bar) and sqrt(1 - alpha-bar) as q_sample uses, so that
        # noising and denoising invert each other exactly.
        sqrt_a_t = self.sqrt_alphas_cumprod[t].item()
        sqrt_1m_a_t = self.sqrt_one_minus_alphas_cumprod[t].item()
        sqrt_a_prev = self.sqrt_alphas_cumprod[t_prev].item() if t_prev >= 0 else 1.0
        sqrt_1m_a_prev = self.sqrt_one_minus_alphas_cumprod[t_prev].item() if t_prev >= 0 else 0.0
        x0 = (x_t - sqrt_1m_a_t * eps) / sqrt_a_t
        if clip_denoised:
            x0 = x0.clamp(-1, 1)
            eps = (x_t - sqrt_a_t * x0) / sqrt_1m_a_t  # the noise consistent with clipped x_0
        sigma = self.ddim_sigma(t, t_prev, eta)
        # max(..., 0) only for rounding: with eta <= 1 the difference is never below 0
        x_prev = sqrt_a_prev * x0 + max(sqrt_1m_a_prev**2 - sigma**2, 0.0) ** 0.5 * eps
        if sigma > 0:
            x_prev = x_prev + sigma * self._noise(x_t.shape, generator, x_t.device)
        return x_prev, x0

    # ---------------------------------------------------------------- the four samplers
    # Each sampler is a loop that yields (x, x0) after every step: the new state and the clean
    # image x0_pred that the step computed on its way there; `sample` drives it. eps_fn(x, t) is
    # the (guided) model; `pairs` are (t, t_prev) with t_prev = -1 for the last step, to x_0.

    def _ddpm_loop(self, eps_fn, x, pairs, generator, clip_denoised, eta):
        for t, _ in pairs:
            x, x0 = self.ddpm_step(x, t, eps_fn(x, t), generator, clip_denoised)
            yield x, x0

    def _ddim_loop(self, eps_fn, x, pairs, generator, clip_denoised, eta):
        for t, t_prev in pairs:
            x, x0 = self.ddim_step(x, t, t_prev, eps_fn(x, t), eta, generator, clip_denoised)
            yield x, x0

    def _plms_loop(self, eps_fn, x, pairs, generator, clip_denoised, eta):
        """Pseudo linear multistep (PNDM, Liu et al. 2022), in the form of the latent-diffusion
        code: the DDIM update (PNDM's "transfer" phi) fed with a combination of the last noise
        predictions, PNDM's 4-step Adams-Bashforth formula and, until four are known, the
        lower-order ones:

            1 earlier eps:  e' = (3 e_t - e_1) / 2
            2 earlier:      e' = (23 e_t - 16 e_1 + 5 e_2) / 12
            3 or more:      e' = (55 e_t - 59 e_1 + 37 e_2 - 9 e_3) / 24

        The first step has no history and takes a pseudo improved-Euler (Heun) step instead:
        e' = (e_t + e(x_next, t_prev)) / 2, one extra model call. The Heun start and the lower
        orders are the latent-diffusion code's; PNDM itself starts with three pseudo Runge-Kutta
        steps of four calls each. Deterministic (eta is unused).
        The x0 it yields is the one the combined e' gives.
        """
        old_eps: list[torch.Tensor] = []  # most recent first
        for t, t_prev in pairs:
            eps = eps_fn(x, t)
            if not old_eps:
                if t_prev >= 0:
                    x_next, _ = self.ddim_step(x, t, t_prev, eps, 0.0, clip_denoised=clip_denoised)
                    eps_prime = (eps + eps_fn(x_next, t_prev)) / 2
                else:  # a single-step run: nothing to average with
                    eps_prime = eps
            elif len(old_eps) == 1:
                eps_prime = (3 * eps - old_eps[0]) / 2
            elif len(old_eps) == 2:
                eps_prime = (23 * eps - 16 * old_eps[0] + 5 * old_eps[1]) / 12
            else:
                eps_prime = (55 * eps - 59 * old_eps[0] + 37 * old_eps[1] - 9 * old_eps[2]) / 24
            x, x0 = self.ddim_step(x, t, t_prev, eps_prime, 0.0, clip_denoised=clip_denoised)
            old_eps = [eps] + old_eps[:2]
            yield x, x0

    def _log_alpha_over_sigma(self, t: int) -> float:
        """lambda_t = log(alpha_t / sigma_t), with alpha_t = sqrt(alpha-bar_t) and
        sigma_t = sqrt(1 - alpha-bar_t): half the log-SNR, the time variable of DPM-Solver."""
        alpha = self.sqrt_alphas_cumprod[t].item()
        sigma = self.sqrt_one_minus_alphas_cumprod[t].item()
        return math.log(alpha / sigma)

    def _dpm_solver_pp_loop(self, eps_fn, x, pairs, generator, clip_denoised, eta):
        """DPM-Solver++(2M) (Lu et al. 2022, "DPM-Solver++", Algorithm 2), a second-order multistep
        solver of the diffusion ODE written with the data prediction x0_theta. From t to s,
        with h = lambda_s - lambda_t:

            x_s = (sigma_s / sigma_t) x_t - alpha_s (exp(-h) - 1) D

        where D = x0_theta(x_t, t) on the first step (first order, the same as DDIM), and after
        that the extrapolation with the previous prediction, r = h_prev / h:

            D = (1 + 1 / (2 r)) x0_theta(x_t, t) - 1 / (2 r) x0_theta(previous)

        The last step goes to alpha-bar = 1 (sigma = 0, lambda = infinity), where the update is
        just x_0 = x0_theta: first order of necessity, since h is infinite there (r = 0), and the
        correction 1 / (2 r) would be too.
        Deterministic (eta is unused).
        """
        prev_x0, prev_h = None, None
        for t, t_prev in pairs:
            tt = torch.full((x.shape[0],), t, device=x.device, dtype=torch.long)
            x0 = self.predict_x0_from_eps(x, tt, eps_fn(x, t))
            if clip_denoised:
                x0 = x0.clamp(-1, 1)
            if t_prev < 0:
                yield x0, x0
                continue
            h = self._log_alpha_over_sigma(t_prev) - self._log_alpha_over_sigma(t)
            if prev_x0 is None:
                D = x0
            else:
                r = prev_h / h
                D = (1 + 1 / (2 * r)) * x0 - 1 / (2 * r) * prev_x0
            sigmas = self.sqrt_one_minus_alphas_cumprod
            sigma_ratio = sigmas[t_prev].item() / sigmas[t].item()
            alpha_s = self.sqrt_alphas_cumprod[t_prev].item()
            x = sigma_ratio * x - alpha_s * math.expm1(-h) * D
            prev_x0, prev_h = x0, h
            yield x, x0

    @torch.no_grad()
    def sample(self, model, shape, y, sampler: str = SampleConfig.sampler,
               steps: int = SampleConfig.steps, eta: float = SampleConfig.eta,
               cfg_scale: float = SampleConfig.cfg_scale, generator=None,
               clip_denoised: bool = True, return_intermediates: bool = False,
               progress: bool = False):
        """Draw len(y) images of `shape` with the named sampler (see SAMPLERS), guided by cfg_scale.

        The defaults are the config's (SampleConfig), so a direct call draws what the scripts
        draw. DDPM always takes all T steps; the others take `steps` (see sampler_timesteps).
        Returns x_0 (float32), or with return_intermediates (x_0, states, x0_preds), kept on the
        CPU: states (S + 1, B, C, H, W) run from the starting noise x_T to x_0, and x0_preds
        (S, B, C, H, W) holds the clean image that step k predicted from states[k]. Noise comes
        from `generator` (which must live on y's device), so a seeded generator makes the samples
        reproducible.
        """
        if sampler not in SAMPLERS:
            raise ValueError(f"unknown sampler {sampler!r}: choose one of {', '.join(SAMPLERS)}")
        loop = {"ddpm": self._ddpm_loop, "ddim": self._ddim_loop, "plms": self._plms_loop,
                "dpm-solver++": self._dpm_solver_pp_loop}[sampler]
        timesteps = self.sampler_timesteps(sampler, steps)
        pairs = list(zip(timesteps, timesteps[1:] + [-1]))

        def eps_fn(x, t):
            return self._eps(model, x, t, y, cfg_scale)

        x = self._noise(shape, generator, y.device)  # x_T ~ N(0, I) (Algorithm 2, line 1)
        states, x0_preds = [x.float().cpu()] if return_intermediates else [], []
        for x, x0 in tqdm(loop(eps_fn, x, pairs, generator, clip_denoised, eta), total=len(pairs),
                          desc=sampler, disable=not progress, leave=False):
            if return_intermediates:
                states.append(x.float().cpu())
                x0_preds.append(x0.float().cpu())
        x = x.float()
        return (x, torch.stack(states), torch.stack(x0_preds)) if return_intermediates else x

    def sampler_timesteps(self, sampler: str, steps: int) -> list[int]:
        """The timesteps a sampler visits, in order: all T for DDPM, evenly spaced in t from
        T - 1 for DDIM and PLMS (ddim_timesteps: Lin et al.'s trailing spacing, not their papers'
        0, 20, ..., 980), evenly spaced in log-SNR for DPM-Solver++ (its paper's advice for
        low-resolution images; with even t-spacing its last steps are unstable)."""
        if sampler == "ddpm":
            return list(range(self.num_timesteps - 1, -1, -1))
        if sampler == "dpm-solver++":
            return self.logsnr_timesteps(steps)
        return self.ddim_timesteps(steps)

