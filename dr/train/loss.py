"""The renderers' training objective: SVD's EDM recipe, x0 error in latent space.

For a clip's target latents x0, draw ln sigma ~ N(0.7, 1.6^2) (SVD's; the caller may shift it) and noise n; the UNet sees
c_in (x0 + sigma n) beside the condition latents, at c_noise; its x0 estimate is
c_skip x_noisy + c_out F, and the loss is (1 + sigma^2) / sigma^2 times the mean squared error.
Every draw comes from the generators the caller passes, one per row of the batch (each seeded by
seed, step and the clip's place in the global batch), so a step's draws for a clip do not depend on
how many processes share the batch.
"""

from __future__ import annotations

import torch

from dr.models import edm
from dr.models.pipelines import added_time_ids


def edm_loss(unet, x0: torch.Tensor, cond: torch.Tensor, context, generators: list[torch.Generator],
             noise_mean: float = edm.P_MEAN, noise_std: float = edm.P_STD) -> torch.Tensor:
    """x0 and cond (B, T, C, h, w) latents; context as the UNet takes it; one generator per row
    (a generator may serve several rows: its draws are taken in row order); ln sigma ~ N(noise_mean,
    noise_std^2). Returns the scalar loss."""
    b = x0.shape[0]
    if len(generators) != b:
        raise ValueError(f"{len(generators)} generators for a batch of {b}")
    sigma = torch.cat([edm.sample_sigma(1, g, noise_mean, noise_std) for g in generators]).to(x0.device)
    noise = torch.stack([torch.randn(x0.shape[1:], generator=g) for g in generators]).to(x0.device, x0.dtype)
    s = sigma.reshape(b, 1, 1, 1, 1).to(x0.dtype)
    noisy = x0 + s * noise
    model_in = torch.cat([edm.c_in(s) * noisy, cond.to(x0.dtype)], dim=2)
    out = unet(model_in, edm.c_noise(sigma).to(x0.dtype), context, added_time_ids(b, x0.device, x0.dtype)).sample
    x0_hat = edm.denoise(out.float(), noisy.float(), sigma)
    per_clip = ((x0_hat - x0.float()) ** 2).flatten(1).mean(1)
    return (edm.loss_weight(sigma) * per_clip).mean()


def dropout_mask(p: float, generators: list[torch.Generator]) -> torch.Tensor:
    """(B,) float: 0 for the clips trained without conditions, 1 for the rest."""
    return torch.cat([(torch.rand(1, generator=g) >= p).float() for g in generators])
