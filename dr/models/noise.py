"""The input noise of single-step renderers (Ouroboros): Gaussian, multi-resolution (pyramid) or none.

A single-step renderer sees its noisy-latent channels at the largest noise level only, so what those
channels hold is a choice: white Gaussian noise (what the multi-step model was trained on), pyramid
noise (white noise plus upsampled coarser noise, each level ``discount`` times the last, at a random
scale factor in [2, 4) per level, renormalised to unit variance per sample: low-frequency content that
the network must look through) or zeros (deterministic: the same input always gives the same output).
"""

from __future__ import annotations

from typing import Literal, Sequence

import torch

InputNoise = Literal["gaussian", "pyramid", "zero"]
KINDS: tuple[str, ...] = ("gaussian", "pyramid", "zero")


def pyramid_noise(shape: Sequence[int], generator: torch.Generator | None = None, discount: float = 0.9,
                  levels: int = 10) -> tuple[torch.Tensor, int]:
    """(noise of ``shape`` (..., h, w) with unit variance, the number of coarser levels added).

    Level i (1..levels) is white noise at (h, w) / r_i (r_i = prod of i scale factors drawn from
    [2, 4)), bilinearly upsampled and weighted discount**i; levels stop before one would be smaller
    than 1 x 1. The sum is divided by its own standard deviation."""
    *lead, h, w = (int(s) for s in shape)
    flat = int(torch.tensor(lead).prod()) if lead else 1
    noise = torch.randn(flat, 1, h, w, generator=generator)
    scale, used = 1.0, 0
    for i in range(1, levels + 1):
        scale *= 2.0 + 2.0 * float(torch.rand(1, generator=generator))
        sh, sw = int(h / scale), int(w / scale)
        if sh < 1 or sw < 1:
            break
        coarse = torch.randn(flat, 1, sh, sw, generator=generator)
        noise = noise + discount ** i * torch.nn.functional.interpolate(coarse, size=(h, w), mode="bilinear",
                                                                        align_corners=False)
        used = i
    noise = noise.reshape(*lead, h, w) if lead else noise.reshape(h, w)
    return noise / noise.std(), used


def input_noise(kind: str, shape: Sequence[int], generator: torch.Generator | None = None) -> torch.Tensor:
    """One clip's input noise, ``shape`` (T, C, h, w), float32 on the CPU."""
    if kind == "gaussian":
        return torch.randn(tuple(shape), generator=generator)
    if kind == "pyramid":
        return pyramid_noise(shape, generator)[0]
    if kind == "zero":
        return torch.zeros(tuple(shape))
    raise ValueError(f"input noise {kind!r}: one of {', '.join(KINDS)}")
