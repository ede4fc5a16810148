"""DiffusionLight's lighting estimate, the parts that are arithmetic (after its paper and repository;
the SDXL inpainting that paints the balls builds on these).

A chrome ball is inpainted into the image at several exposures. The exposures come from one
prompt pair: the prompt and pooled embeddings of PROMPT and PROMPT_DARK are interpolated with
t = EV / MAX_NEGATIVE_EV (EV 0 -> the plain prompt, EV -5 -> the dark one), the exposure LoRA
trained for that continuum doing the rest. The balls of each exposure are aggregated by their
per-pixel median over seeds (the iterative algorithm: a median of balls at full strength, then
balls re-noised from it at a lower strength, their median again). The exposure bracket is merged
into one linear HDR ball (``merge_exposures``), which dr.labeling.chrome_ball unwraps.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

PROMPT = "a perfect mirrored reflective chrome ball sphere"
PROMPT_DARK = "a perfect black dark mirrored reflective chrome ball sphere"
NEGATIVE_PROMPT = "matte, diffuse, flat, dull"
EVS: tuple[float, ...] = (0.0, -2.5, -5.0)
MAX_NEGATIVE_EV = -5.0
GAMMA = 2.4
# Rec. 709 luminance weights of linear rgb
LUMA = np.array([0.212671, 0.715160, 0.072169])


def interpolants(evs: Sequence[float] = EVS, max_negative_ev: float = MAX_NEGATIVE_EV) -> list[float]:
    """t of each exposure: EV / max_negative_ev (0 at EV 0, 1 at the darkest the LoRA was trained for)."""
    if max_negative_ev >= 0:
        raise ValueError(f"max_negative_ev {max_negative_ev} must be negative")
    return [float(ev) / float(max_negative_ev) for ev in evs]


def interpolate_embeddings(normal, dark, normal_pooled, dark_pooled, evs: Sequence[float] = EVS,
                           max_negative_ev: float = MAX_NEGATIVE_EV) -> dict[float, tuple]:
    """{EV: (prompt embeddings, pooled embeddings)}, each normal + t (dark - normal). Works on torch tensors
    and numpy arrays alike."""
    out = {}
    for ev, t in zip(evs, interpolants(evs, max_negative_ev)):
        out[float(ev)] = (normal + t * (dark - normal), normal_pooled + t * (dark_pooled - normal_pooled))
    return out


def median_ball(balls: Sequence[np.ndarray]) -> np.ndarray:
    """The per-pixel median of balls painted with different seeds, (N, H, W, C) -> (H, W, C)."""
    stack = np.stack([np.asarray(b, dtype=np.float32) for b in balls])
    if stack.shape[0] == 0:
        raise ValueError("no balls to aggregate")
    return np.median(stack, axis=0).astype(np.float32)


def merge_exposures(ldr: Mapping[float, np.ndarray], gamma: float = GAMMA) -> np.ndarray:
    """An exposure bracket {EV: (H, W, 3) display image in [0, 1]} -> linear HDR (H, W, 3) float32, in the
    units of the EV 0 image.

    Each image is linearised (x ** gamma) and scaled by 2 ** -EV; its luminance (Rec. 709) is taken.
    Starting from the darkest, each brighter image's luminance replaces the running estimate unless that
    image nears its own clipping level 2 ** -EV (a weight ramping from 0 at 90 % of it to 1 at it) and the
    darker estimate is the larger. The result is the EV 0 image's linear colour rescaled to that luminance."""
    if not ldr:
        raise ValueError("no exposures to merge")
    evs = sorted((float(e) for e in ldr), reverse=True)  # brightest (EV 0) first
    lin = {ev: np.power(np.clip(np.asarray(ldr[ev], dtype=np.float64)[..., :3], 0.0, 1.0), gamma) for ev in evs}
    lum = {ev: (lin[ev] * 2.0 ** -ev) @ LUMA for ev in evs}
    out = lum[evs[-1]]
    for brighter in evs[-2::-1]:  # darkest first: each brighter image in turn
        top = 2.0 ** -brighter
        near_clip = np.clip((lum[brighter] - 0.9 * top) / (0.1 * top), 0.0, 1.0)
        keep = near_clip * (out > lum[brighter])
        out = lum[brighter] * (1.0 - keep) + out * keep
    first = evs[0]
    scaled = lin[first] * 2.0 ** -first
    return (scaled * (out / (lum[first] + 1e-10))[..., None]).astype(np.float32)
