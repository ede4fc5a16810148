"""A video's lighting from one of its frames: DiffusionLight (dr.models.light paints the balls) ->
the exposure bracket merged to HDR (dr.models.diffusionlight) -> the ball unwrapped to an
equirectangular map in the env frame of real clips (dr.labeling.chrome_ball).

The frame (linear rgb, as real clips store it) is encoded to sRGB (DiffusionLight paints into
photographs), scaled so its longer side is the painter's size and letterboxed with black to a
square. The ball sits at the square's centre; its camera is the frame's K taken through the same
scale and padding, so the perspective unwrap sees the ball where the frame's lens put it. The
map is in the EV 0 image's linear units (relative: a real clip's exposure is unknown).
Directions the unwrap cannot see (behind the ball as seen, or at its grazing rim) get the mean
of their row's seen ones (the map's mean where a whole row is unseen).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from dr.labeling.chrome_ball import ball_to_equirect
from dr.models.diffusionlight import merge_exposures
from dr.srgb import linear_to_srgb

UNWRAPS = ("perspective", "orthographic")


@dataclass
class LightEstimate:
    env: np.ndarray  # (h, 2h, 3) float32, linear, env frame of real clips
    valid: np.ndarray  # (h, 2h) bool: seen on the ball
    balls: dict[float, np.ndarray]  # EV -> (ball, ball, 3) display values in [0, 1]
    hdr_ball: np.ndarray  # (ball, ball, 3) linear
    ball_K: np.ndarray  # (3, 3) the camera of the ball's crop
    seconds: float
    paintings: int  # images the painter made


def letterbox(image: np.ndarray, K: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """(square (size, size, C), K of the square): ``image`` scaled so its longer side is ``size``,
    centred on black. Pixel centres at +0.5, so the scale acts on K's entries as it does on
    pixel coordinates; the padding adds to cx, cy."""
    import cv2

    h, w = image.shape[:2]
    s = size / max(h, w)
    nw, nh = max(1, round(w * s)), max(1, round(h * s))
    scaled = cv2.resize(np.asarray(image, dtype=np.float32), (nw, nh), interpolation=cv2.INTER_AREA if s < 1
                        else cv2.INTER_LINEAR)
    if scaled.ndim == 2:
        scaled = scaled[..., None]
    ox, oy = (size - nw) // 2, (size - nh) // 2
    out = np.zeros((size, size, image.shape[2]), np.float32)
    out[oy:oy + nh, ox:ox + nw] = scaled
    Kl = np.asarray(K, dtype=np.float64).copy()
    Kl[0, 0], Kl[0, 2] = Kl[0, 0] * nw / w, Kl[0, 2] * nw / w + ox
    Kl[1, 1], Kl[1, 2] = Kl[1, 1] * nh / h, Kl[1, 2] * nh / h + oy
    return out, Kl


def fill_unseen(env: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """``env`` with the unseen directions set to their row's seen mean (the seen mean where a row has none)."""
    out = np.array(env, dtype=np.float32, copy=True)
    if valid.all():
        return out
    overall = out[valid].mean(axis=0) if valid.any() else np.zeros(out.shape[-1], np.float32)
    for r in range(out.shape[0]):
        seen = valid[r]
        out[r, ~seen] = out[r, seen].mean(axis=0) if seen.any() else overall
    return out


def unwrap(hdr_ball: np.ndarray, ball_K: np.ndarray | None, height: int) -> tuple[np.ndarray, np.ndarray]:
    """The merged ball (ball, ball, 3), centred in its crop, to (env, valid); ``ball_K`` None: orthographic."""
    b = hdr_ball.shape[0]
    return ball_to_equirect(hdr_ball, (b / 2, b / 2), b / 2, height, K=ball_K)


def estimate_light(painter, rgb: np.ndarray, K: np.ndarray, settings, env_height: int,
                   method: str = "perspective") -> LightEstimate:
    """DiffusionLight on one frame: ``rgb`` (H, W, 3) linear, ``K`` its pinhole camera, ``settings`` a
    dr.models.light.PaintSettings, ``painter`` a BallPainter (or anything with its ``exposures``)."""
    from dr.models.light import ball_box

    if method not in UNWRAPS:
        raise ValueError(f"unwrap {method!r}: one of {', '.join(UNWRAPS)}")
    t0 = time.perf_counter()
    calls0 = getattr(painter, "calls", 0)
    display = linear_to_srgb(np.clip(np.asarray(rgb, dtype=np.float32), 0.0, 1.0))
    square, Kl = letterbox(display, K, settings.size)
    balls = painter.exposures(square, settings)
    hdr = merge_exposures(balls)
    lo, _ = ball_box(settings)
    Kb = Kl.copy()
    Kb[0, 2] -= lo
    Kb[1, 2] -= lo
    env, valid = unwrap(hdr, Kb if method == "perspective" else None, env_height)
    env = np.maximum(fill_unseen(env, valid), 0.0)
    return LightEstimate(env=env.astype(np.float32), valid=valid, balls=balls, hdr_ball=hdr, ball_K=Kb,
                         seconds=time.perf_counter() - t0, paintings=getattr(painter, "calls", 0) - calls0)
