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


def fit_vae(vae, views: dict[str, torch.Tensor], steps: int, lr: float = 1e-3, batch: int = 16, crop: int = 16,
            kl_weight: float = 1e-6, seed: int = 0, on_step=None) -> list[float]:
    """Train ``vae`` in place on random ``crop``-pixel crops of clips of every pass (the VAE is
    convolutional: small crops are cheaper than whole frames and fit as well), then set its
    ``scaling_factor`` to 1 / std of the fitted latents, as Stable Diffusion's was chosen, so the
    diffusion's noise levels mean what they do for SVD. Returns the loss per step."""
    clips = torch.cat(list(views.values()))                      # (N, T, 3, H, W)
    h, w = clips.shape[-2:]
    crop = min(crop, h, w)
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(vae.parameters(), lr=lr)
    # warm-up, then a cosine decay to zero: a constant rate leaves the weights jittering, and the jitter
    # shows as a colour bias even on flat surfaces
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / 20) * 0.5 * (1 + math.cos(math.pi * min(1.0, s / max(1, steps)))))
    vae.train()
    losses = []
    t = clips.shape[1]
    for step in range(steps):
        idx = torch.randint(0, clips.shape[0], (batch,), generator=gen)
        y0 = int(torch.randint(0, h - crop + 1, (1,), generator=gen))
        x0 = int(torch.randint(0, w - crop + 1, (1,), generator=gen))
        x = clips[idx][..., y0:y0 + crop, x0:x0 + crop].flatten(0, 1)
        post = vae.encode(x).latent_dist
        # the posterior's mean, as the pipelines encode (mode()): a random init's std is about 1 and its
        # noise would swamp the reconstruction for hundreds of steps
        y = vae.decode(post.mean, num_frames=t).sample
        rec = (y - x).abs().mean() + ((y - x) ** 2).mean()
        loss = rec + kl_weight * post.kl().mean() / x[0].numel()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        losses.append(float(loss.detach()))
        if on_step is not None:
            on_step(step + 1, steps, losses[-1])
    vae.eval()
    with torch.no_grad():
        z = torch.cat([vae.encode(c).latent_dist.mode() for c in clips[:64]])
    vae.register_to_config(scaling_factor=float(1.0 / z.std().clamp_min(1e-6)))
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
