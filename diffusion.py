"""Gaussian diffusion: the noise schedule, forward noising, the training loss and the samplers.

One object, `GaussianDiffusion`, owns the schedule; nothing lives at module level. Quantities are
named as in the papers and the code cites the equation it follows:

  DDPM: Ho, Jain & Abbeel, "Denoising Diffusion Probabilistic Models", 2020 (arXiv:2006.11239)
  DDIM: Song, Meng & Ermon, "Denoising Diffusion Implicit Models", 2021 (arXiv:2010.02502)
  Min-SNR: Hang et al., "Efficient Diffusion Training via Min-SNR Weighting Strategy", 2023
  Trailing timesteps: Lin et al., "Common Diffusion Noise Schedules and Sample Steps are Flawed", 2024

Notation: x_0 a clean image in [-1, 1], x_t its noised version at step t = 0 .. T-1 (the papers
count 1 .. T; index t here is the paper's t + 1), beta_t the variance added at step t,
alpha_t = 1 - beta_t, alpha-bar_t = alpha_1 * ... * alpha_t, eps ~ N(0, I) the noise the model
predicts.

The samplers accept any `model` with a method `forward_with_cfg(x, t, y, cfg_scale) -> eps`
(the DiT of dit.py has it), so tests can plug in an oracle that knows the answer.
"""

from __future__ import annotations

from typing import Callable

import torch
from tqdm.auto import tqdm

from config import DiffusionConfig


class GaussianDiffusion:
    """Linear-beta Gaussian diffusion (DDPM section 4) with DDPM and DDIM samplers."""

    def __init__(self, num_timesteps: int = 1000, beta_start: float = 1e-4, beta_end: float = 0.02):
        self.num_timesteps = T = num_timesteps
        # Computed in float64 (products of 1000 numbers near 1 lose digits in float32), stored float32.
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
        """values[t] for a batch of timesteps t (B,), shaped (B, 1, 1, 1) to broadcast against x."""
        out = values.to(t.device)[t].to(x.dtype)
        return out.reshape(t.shape[0], *([1] * (x.dim() - 1)))

    # ---------------------------------------------------------------- forward process and loss

    def q_sample(self, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """Sample x_t ~ q(x_t | x_0) in one shot (DDPM Eq. 4):
        x_t = sqrt(alpha-bar_t) x_0 + sqrt(1 - alpha-bar_t) eps."""
        return (self._gather(self.sqrt_alphas_cumprod, t, x0) * x0
                + self._gather(self.sqrt_one_minus_alphas_cumprod, t, x0) * noise)

    def predict_x0_from_eps(self, x_t: torch.Tensor, t: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        """Invert Eq. 4 for x_0 given the (predicted) noise."""
        return ((x_t - self._gather(self.sqrt_one_minus_alphas_cumprod, t, x_t) * eps)
                / self._gather(self.sqrt_alphas_cumprod, t, x_t))

    def predict_eps_from_x0(self, x_t: torch.Tensor, t: torch.Tensor, x0: torch.Tensor) -> torch.Tensor:
        """Invert Eq. 4 for eps given x_0."""
        return ((x_t - self._gather(self.sqrt_alphas_cumprod, t, x_t) * x0)
                / self._gather(self.sqrt_one_minus_alphas_cumprod, t, x_t))

    def training_loss(
        self, model: Callable, x0: torch.Tensor, y: torch.Tensor, min_snr_gamma: float = 0.0
    ) -> torch.Tensor:
        """DDPM Algorithm 1: t ~ Uniform, eps ~ N(0, I), loss = || eps - eps_theta(x_t, t) ||^2.

        With min_snr_gamma > 0 each image's MSE is weighted by min(SNR_t, gamma) / SNR_t
        (Hang et al. 2023, Eq. 9 for the eps objective): still noise prediction, but the many
        easy, nearly clean timesteps no longer dominate the gradient.
        """
        B = x0.shape[0]
        t = torch.randint(0, self.num_timesteps, (B,), device=x0.device)  # line 3
        noise = torch.randn_like(x0)  # line 4
        x_t = self.q_sample(x0, t, noise)
        eps = model(x_t, t, y).float()  # float32 loss even when the model ran in bf16
        mse = (eps - noise).pow(2).mean(dim=(1, 2, 3))  # line 5, per image, (B,)
        if min_snr_gamma > 0:
            snr = self._gather(self.snr, t, x0).reshape(B)
            mse = mse * snr.clamp(max=min_snr_gamma) / snr
        return mse.mean()

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
                  clip_denoised: bool = True) -> torch.Tensor:
        """One ancestral step x_t -> x_{t-1} (DDPM Algorithm 2, line 4, with sigma_t^2 = beta-tilde_t).

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
            return mean  # Algorithm 2: z = 0 at the last step (and beta-tilde_0 = 0 anyway)
        z = self._noise(x_t.shape, generator, x_t.device)
        return mean + self.posterior_variance[t].item() ** 0.5 * z

    @torch.no_grad()
    def ddpm_sample(self, model, shape, y, cfg_scale: float = 1.0, generator=None,
                    clip_denoised: bool = True, return_intermediates: bool = False,
                    progress: bool = False):
        """DDPM ancestral sampling over all T steps (Algorithm 2)."""
        x = self._noise(shape, generator, y.device)  # line 1: x_T ~ N(0, I)
        trajectory = [x.float().cpu()] if return_intermediates else None
        for t in tqdm(range(self.num_timesteps - 1, -1, -1), desc="DDPM", disable=not progress):
            eps = self._eps(model, x, t, y, cfg_scale)
            x = self.ddpm_step(x, t, eps, generator, clip_denoised)
            if trajectory is not None:
                trajectory.append(x.float().cpu())
        x = x.float()
        return (x, torch.stack(trajectory)) if return_intermediates else x

    def ddim_timesteps(self, steps: int) -> list[int]:
        """`steps` timesteps from T-1 down, evenly spaced, "trailing" (Lin et al. 2024, Table 2):
        the first is always T-1, so even one step starts from pure noise. steps = T gives all."""
        if not 1 <= steps <= self.num_timesteps:
            raise ValueError(f"steps must be between 1 and {self.num_timesteps}, got {steps}")
        stride = self.num_timesteps / steps
        return [round(self.num_timesteps - i * stride) - 1 for i in range(steps)]

    def ddim_sigma(self, t: int, t_prev: int, eta: float) -> float:
        """DDIM Eq. 16: sigma = eta sqrt((1 - a_prev) / (1 - a_t)) sqrt(1 - a_t / a_prev), with
        a = alpha-bar and a_prev = 1 past the last step. eta = 1 between adjacent steps gives
        sigma^2 = beta-tilde_t, the DDPM posterior variance; eta = 0 gives deterministic DDIM."""
        a_t = self.alphas_cumprod[t].item()
        a_prev = self.alphas_cumprod[t_prev].item() if t_prev >= 0 else 1.0
        return eta * ((1 - a_prev) / (1 - a_t) * (1 - a_t / a_prev)) ** 0.5

    def ddim_step(self, x_t: torch.Tensor, t: int, t_prev: int, eps: torch.Tensor, eta: float = 0.0,
                  generator=None, clip_denoised: bool = True) -> torch.Tensor:
        """One DDIM update x_t -> x_{t_prev} (DDIM Eq. 12):

            x_prev = sqrt(a_prev) x0_pred + sqrt(1 - a_prev - sigma^2) eps + sigma z

        where x0_pred = (x_t - sqrt(1 - a_t) eps) / sqrt(a_t) is the "predicted x_0" term.
        """
        # The same stored sqrt(alpha-bar) and sqrt(1 - alpha-bar) as q_sample uses, so that
        # noising and denoising invert each other exactly.
        sqrt_a_t = self.sqrt_alphas_cumprod[t].item()
        sqrt_1m_a_t = self.sqrt_one_minus_alphas_cumprod[t].item()
        sqrt_a_prev = self.sqrt_alphas_cumprod[t_prev].item() if t_prev >= 0 else 1.0
        x0 = (x_t - sqrt_1m_a_t * eps) / sqrt_a_t
        if clip_denoised:
            x0 = x0.clamp(-1, 1)
            eps = (x_t - sqrt_a_t * x0) / sqrt_1m_a_t  # the noise consistent with clipped x_0
        sigma = self.ddim_sigma(t, t_prev, eta)
        x_prev = sqrt_a_prev * x0 + max(1 - sqrt_a_prev**2 - sigma**2, 0.0) ** 0.5 * eps
        if sigma > 0:
            x_prev = x_prev + sigma * self._noise(x_t.shape, generator, x_t.device)
        return x_prev

    @torch.no_grad()
    def ddim_sample(self, model, shape, y, steps: int = 50, eta: float = 0.0, cfg_scale: float = 1.0,
                    generator=None, clip_denoised: bool = True, return_intermediates: bool = False,
                    progress: bool = False):
        """DDIM sampling over `steps` of the T timesteps (DDIM section 4.2)."""
        timesteps = self.ddim_timesteps(steps)
        x = self._noise(shape, generator, y.device)
        trajectory = [x.float().cpu()] if return_intermediates else None
        for i, t in enumerate(tqdm(timesteps, desc="DDIM", disable=not progress)):
            t_prev = timesteps[i + 1] if i + 1 < len(timesteps) else -1
            eps = self._eps(model, x, t, y, cfg_scale)
            x = self.ddim_step(x, t, t_prev, eps, eta, generator, clip_denoised)
            if trajectory is not None:
                trajectory.append(x.float().cpu())
        x = x.float()
        return (x, torch.stack(trajectory)) if return_intermediates else x

    def sample(self, model, shape, y, sampler: str = "ddim", steps: int = 50, eta: float = 0.0,
               cfg_scale: float = 1.0, generator=None, return_intermediates: bool = False,
               progress: bool = False):
        """Draw len(y) images with the named sampler. Returns x_0, or (x_0, trajectory) where the
        trajectory (steps + 1, B, C, H, W) runs from the starting noise to x_0, kept on the CPU."""
        if sampler == "ddpm":
            return self.ddpm_sample(model, shape, y, cfg_scale, generator,
                                    return_intermediates=return_intermediates, progress=progress)
        if sampler == "ddim":
            return self.ddim_sample(model, shape, y, steps, eta, cfg_scale, generator,
                                    return_intermediates=return_intermediates, progress=progress)
        raise ValueError(f"unknown sampler {sampler!r}: choose one of {', '.join(SAMPLERS)}")


SAMPLERS = ("ddpm", "ddim")  # names accepted by GaussianDiffusion.sample
