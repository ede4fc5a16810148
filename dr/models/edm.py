"""SVD's EDM preconditioning (v-prediction), shared by the pipelines and the training loss.

For noise level sigma, the network F sees c_in * x_noisy and c_noise = 0.25 ln sigma, and the
denoised estimate is x0 = c_skip * x_noisy + c_out * F, with c_skip = 1 / (sigma^2 + 1),
c_out = -sigma / sqrt(sigma^2 + 1), c_in = 1 / sqrt(sigma^2 + 1) (Karras et al. 2022 with
sigma_data = 1, as diffusers' EulerDiscreteScheduler does for SVD). Training draws
ln sigma ~ N(0.7, 1.6^2) and weights the x0 error by (1 + sigma^2) / sigma^2.
"""

from __future__ import annotations

import torch

P_MEAN = 0.7
P_STD = 1.6
# SVD scheduler's largest noise level: where sampling starts, and the one level a single-step renderer sees
SIGMA_MAX = 700.0


def c_in(sigma: torch.Tensor) -> torch.Tensor:
    return 1.0 / torch.sqrt(sigma**2 + 1.0)


def c_skip(sigma: torch.Tensor) -> torch.Tensor:
    return 1.0 / (sigma**2 + 1.0)


def c_out(sigma: torch.Tensor) -> torch.Tensor:
    return -sigma / torch.sqrt(sigma**2 + 1.0)


def c_noise(sigma: torch.Tensor) -> torch.Tensor:
    return 0.25 * torch.log(sigma)


def loss_weight(sigma: torch.Tensor) -> torch.Tensor:
    return (1.0 + sigma**2) / sigma**2


def sample_sigma(n: int, generator: torch.Generator | None = None, p_mean: float = P_MEAN,
                 p_std: float = P_STD) -> torch.Tensor:
    """n noise levels with ln sigma ~ N(p_mean, p_std^2), float32 on the CPU."""
    return torch.exp(p_mean + p_std * torch.randn(n, generator=generator))


def denoise(model_output: torch.Tensor, noisy: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """x0 from the network's output; sigma broadcasts from the left (shape (B,) for (B, ...))."""
    s = sigma.reshape(-1, *([1] * (noisy.ndim - 1))).to(noisy.dtype)
    return c_skip(s) * noisy + c_out(s) * model_output
