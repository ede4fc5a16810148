"""Fitting the tiny base's VAE to rendered passes, so that decode(encode(x)) is close to x.

A random VAE makes every learning figure of the tiny base meaningless: the renderers would learn
latents that decode to noise. ``fit_vae`` trains SVD's VAE class as an autoencoder (L1 + MSE
reconstruction and a small KL term) on the training views of every pass of the given clips;
``reconstruction_psnr`` reports, per pass, the PSNR of decode(encode(x)) in the [0, 1] view.
"""

from __future__ import annotations

import math
from typing import Iterable, Sequence

import torch

from dr.models.pipelines import decode_latents, encode_frames
from dr.train.data import clip_view, _rng
from dr.shards.reader import Sample

VIEW_PASSES = ("rgb", "basecolor", "normal", "depth", "roughness", "metallic")


def pass_views(samples: Iterable[Sample], frames: int, size: int, seed: int = 0) -> dict[str, torch.Tensor]:
    """{pass: (N, T, 3, size, size)} training views of the clips (one window each)."""
    out: dict[str, list[torch.Tensor]] = {p: [] for p in VIEW_PASSES}
    for s in samples:
        v = clip_view(s, frames, size, size, _rng(seed, s.key), None)
        for p in VIEW_PASSES:
            out[p].append(v[p])
    return {p: torch.stack(x) for p, x in out.items() if x}


def fit_vae(vae, views: dict[str, torch.Tensor], steps: int, lr: float = 1e-3, batch: int = 4,
            kl_weight: float = 1e-6, seed: int = 0, on_step=None) -> list[float]:
    """Train ``vae`` in place on clips of every pass; returns the loss per step."""
    clips = torch.cat(list(views.values()))                      # (N, T, 3, H, W)
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(vae.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / 5) * (0.1 + 0.9 * (1 - s / steps)))
    vae.train()
    losses = []
    t = clips.shape[1]
    for step in range(steps):
        idx = torch.randint(0, clips.shape[0], (batch,), generator=gen)
        x = clips[idx].flatten(0, 1)
        post = vae.encode(x).latent_dist
        z = post.mean + post.std * torch.randn(post.mean.shape, generator=gen)
        y = vae.decode(z, num_frames=t).sample
        rec = (y - x).abs().mean() + ((y - x) ** 2).mean()
        kl = post.kl().mean() / x[0].numel()
        loss = rec + kl_weight * kl
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        losses.append(float(loss.detach()))
        if on_step is not None:
            on_step(step + 1, steps, losses[-1])
    vae.eval()
    return losses


@torch.no_grad()
def reconstruction_psnr(vae, views: dict[str, torch.Tensor], passes: Sequence[str] = VIEW_PASSES) -> dict[str, float]:
    """Per pass: PSNR (dB) of decode(encode(x)) against x, both mapped to [0, 1]."""
    out = {}
    for p in passes:
        x = views[p]
        y = decode_latents(vae, encode_frames(vae, x), chunk=x.shape[1]).clamp(-1, 1)
        mse = float((((y - x) / 2) ** 2).mean())
        out[p] = 10 * math.log10(1.0 / max(mse, 1e-12))
    return out
