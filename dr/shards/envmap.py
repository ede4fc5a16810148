"""The environment-map geometry and the model-facing encodings (DESIGN.md section 2).

Pure, vectorised numpy. A clip stores one equirectangular HDR map ``env`` (He x 2He x 3, linear)
and per frame a rotation ``cam_to_env[t]`` taking camera-space directions (OpenGL axes) to the
map's frame. Equirect convention (Blender's world texture): a direction e (Z up) is at column
u = 0.5 - atan2(ey, ex) / 2pi (mod 1) and row-from-top v = acos(ez) / pi, both in [0, 1) of the
image size; texel (r, c) covers [c, c+1) x [r, r+1) in pixels of u * W, v * H.

The encodings sample the camera-space sphere on an h x w grid: pixel (i, j) looks along
d(i, j) = (sin th sin ph, cos th, sin th cos ph), th = pi (i + .5) / h, ph = pi (2 (j + .5) / w - 1),
so the top row is +y, the centre column +z (behind the camera) and the edges -z (the view
direction). This module lives in dr/shards because readers, the trainer and the renderer all need it.
"""

from __future__ import annotations

import numpy as np

from dr.srgb import linear_to_srgb

HALF_MAX = 65504.0
LOG_MAX = 10000.0


def camera_directions(h: int, w: int) -> np.ndarray:
    """(h, w, 3) float64 unit camera-space directions d(i, j) of the encoding grid."""
    theta = np.pi * (np.arange(h) + 0.5) / h
    phi = np.pi * (2.0 * (np.arange(w) + 0.5) / w - 1.0)
    th, ph = np.meshgrid(theta, phi, indexing="ij")
    return np.stack([np.sin(th) * np.sin(ph), np.cos(th), np.sin(th) * np.cos(ph)], axis=-1)


def direction_to_uv(e: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Equirect (u, v) in [0, 1) of directions e (..., 3) in the map's frame (need not be unit)."""
    e = np.asarray(e, dtype=np.float64)
    n = np.linalg.norm(e, axis=-1)
    u = np.mod(0.5 - np.arctan2(e[..., 1], e[..., 0]) / (2.0 * np.pi), 1.0)
    v = np.arccos(np.clip(e[..., 2] / np.maximum(n, 1e-300), -1.0, 1.0)) / np.pi
    return u, v


def uv_to_direction(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Unit directions (..., 3) in the map's frame at equirect (u, v); inverse of direction_to_uv."""
    az = (0.5 - np.asarray(u, dtype=np.float64)) * 2.0 * np.pi
    pol = np.asarray(v, dtype=np.float64) * np.pi
    return np.stack([np.sin(pol) * np.cos(az), np.sin(pol) * np.sin(az), np.cos(pol)], axis=-1)


def sample_env(env: np.ndarray, directions: np.ndarray) -> np.ndarray:
    """Bilinear lookup of ``env`` (He, We, C) along directions (..., 3) in the map's frame.

    Texel centres sit at +0.5 (as in Cycles' linear image interpolation); columns wrap around,
    rows clamp at the poles. Returns (..., C) float32.
    """
    env = np.asarray(env)
    He, We = env.shape[:2]
    u, v = direction_to_uv(directions)
    x = u * We - 0.5
    y = np.clip(v * He - 0.5, 0.0, He - 1.0)
    x0 = np.floor(x)
    y0 = np.minimum(np.floor(y), He - 2) if He > 1 else np.zeros_like(y)
    fx = (x - x0)[..., None]
    fy = (y - y0)[..., None]
    x0 = x0.astype(np.int64) % We
    x1 = (x0 + 1) % We
    y0 = y0.astype(np.int64)
    y1 = np.minimum(y0 + 1, He - 1)
    e = env.astype(np.float32, copy=False)
    top = e[y0, x0] * (1 - fx) + e[y0, x1] * fx
    bottom = e[y1, x0] * (1 - fx) + e[y1, x1] * fx
    return (top * (1 - fy) + bottom * fy).astype(np.float32)


def env_radiance(env: np.ndarray, cam_to_env: np.ndarray, h: int, w: int) -> np.ndarray:
    """E_t on the h x w encoding grid: (h, w, 3) float32 radiance, made finite and clamped to
    [0, 65504]. ``cam_to_env`` is one frame's 3x3 rotation."""
    d = camera_directions(h, w) @ np.asarray(cam_to_env, dtype=np.float64).T
    E = sample_env(env, d)
    return np.clip(np.nan_to_num(E, nan=0.0, posinf=HALF_MAX, neginf=0.0), 0.0, HALF_MAX)


def reinhard(x: np.ndarray) -> np.ndarray:
    """Extended Reinhard tone curve with white point 16: x (1 + x / 256) / (1 + x)."""
    return x * (1.0 + x / 256.0) / (1.0 + x)


def env_ldr(E: np.ndarray) -> np.ndarray:
    """srgb(clamp(reinhard(E), 0, 1)), float32 in [0, 1]."""
    return linear_to_srgb(np.clip(reinhard(E), 0.0, 1.0)).astype(np.float32)


def env_log(E: np.ndarray) -> np.ndarray:
    """srgb(clamp(log1p(E) / log1p(10000), 0, 1)), float32 in [0, 1]."""
    return linear_to_srgb(np.clip(np.log1p(E) / np.log1p(LOG_MAX), 0.0, 1.0)).astype(np.float32)


def env_nrm(h: int, w: int) -> np.ndarray:
    """d * 0.5 + 0.5: the grid's camera-space directions, float32 in [0, 1]."""
    return (camera_directions(h, w) * 0.5 + 0.5).astype(np.float32)


def encode_env(env: np.ndarray, cam_to_env: np.ndarray, h: int, w: int) -> dict[str, np.ndarray]:
    """The three encodings of one frame: {'env_ldr', 'env_log', 'env_nrm'}, each (h, w, 3) float32."""
    E = env_radiance(env, cam_to_env, h, w)
    return {"env_ldr": env_ldr(E), "env_log": env_log(E), "env_nrm": env_nrm(h, w)}
