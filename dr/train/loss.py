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


# Pixel-space losses of the single-step renderers (Ouroboros), on decoded views (B, T, C, H, W) with a
# surface mask (B, T, 1, H, W) of 0/1: each is a mean over the mask's pixels.

def _masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    m = mask.expand_as(x).to(x.dtype)
    return (x * m).sum() / m.sum().clamp_min(1.0)


def mse_loss(pred: torch.Tensor, true: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return _masked_mean((pred - true) ** 2, mask)


def angle_loss(pred: torch.Tensor, true: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean angle (radians) between the normalised predicted normals and the true ones; the cosine is
    kept inside (-1, 1) so that the gradient stays finite where they agree."""
    p = pred / pred.norm(dim=2, keepdim=True).clamp_min(1e-6)
    t = true / true.norm(dim=2, keepdim=True).clamp_min(1e-6)
    cos = (p * t).sum(2, keepdim=True).clamp(-1 + 1e-6, 1 - 1e-6)
    return _masked_mean(torch.acos(cos), mask)


def ssi_depth_loss(pred: torch.Tensor, true: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Scale-and-shift invariant depth error: per clip, the least-squares a, b mapping the prediction
    (its channel mean) onto the truth over the mask, then the mean squared residual."""
    x, y = pred.mean(2, keepdim=True), true.mean(2, keepdim=True)
    m = mask.to(x.dtype)
    dims = tuple(range(1, x.ndim))
    n = m.sum(dims).clamp_min(1.0)
    mx, my = (x * m).sum(dims) / n, (y * m).sum(dims) / n
    shape = (-1,) + (1,) * (x.ndim - 1)
    dx, dy = (x - mx.reshape(shape)) * m, (y - my.reshape(shape)) * m
    a = (dx * dy).sum(dims) / (dx * dx).sum(dims).clamp_min(1e-8)
    residual = a.reshape(shape) * dx - dy
    return ((residual ** 2).sum(dims) / n).mean()


def pass_loss(name: str, pred: torch.Tensor, true: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """A single-step renderer's pixel loss of pass ``name``: the normal angle, scale-and-shift invariant
    depth, the squared error for the others."""
    if name == "normal":
        return angle_loss(pred, true, mask)
    if name == "depth":
        return ssi_depth_loss(pred, true, mask)
    return mse_loss(pred, true, mask)
