"""Display and training-time views of the passes (DESIGN.md section 2). Pure numpy.

- depth -> [-1, 1] by the 2% / 98% quantiles of the clip's surface pixels (near -1, far +1), clipped
- normal -> n as stored (already in [-1, 1])
- basecolor / roughness / metallic -> x * 2 - 1, single channels repeated to 3
- rgb -> a display image: exposure-normalised so the clip's 99th percentile of luminance maps to
  0.9 (one scale for the whole clip, so brightness changes between frames are kept), clamped,
  sRGB-encoded. The views here are in [-1, 1]; ``to_unit`` maps one to [0, 1] for images.
"""

from __future__ import annotations

import numpy as np

from dr.srgb import linear_to_srgb

LUMA = np.array([0.2126, 0.7152, 0.0722], dtype=np.float32)


def depth_view(depth: np.ndarray, mask: np.ndarray, lo_q: float = 0.02, hi_q: float = 0.98) -> np.ndarray:
    """(T,H,W,1) depth -> (T,H,W,3) in [-1, 1]; background (mask 0) -> +1 (far)."""
    d = np.asarray(depth, dtype=np.float32)
    m = np.asarray(mask).astype(bool)
    surf = d[m]
    if surf.size == 0:
        return np.ones((*d.shape[:-1], 3), np.float32)
    near, far = np.quantile(surf, [lo_q, hi_q])
    x = 2.0 * (d - near) / max(float(far - near), 1e-6) - 1.0
    x = np.where(m, np.clip(x, -1.0, 1.0), 1.0)
    return np.repeat(x, 3, axis=-1).astype(np.float32)


def material_view(x: np.ndarray) -> np.ndarray:
    """basecolor (3 channels) or roughness / metallic (1 channel) -> x * 2 - 1 with 3 channels."""
    x = np.asarray(x, dtype=np.float32) * 2.0 - 1.0
    return np.repeat(x, 3, axis=-1) if x.shape[-1] == 1 else x


def rgb_display(rgb: np.ndarray, percentile: float = 99.0, white: float = 0.9) -> np.ndarray:
    """(T,H,W,3) linear HDR -> display sRGB in [0, 1] (see the module docstring)."""
    x = np.asarray(rgb, dtype=np.float32)
    lum = x @ LUMA
    ref = float(np.percentile(lum, percentile)) if lum.size else 1.0
    scale = white / ref if ref > 1e-8 else 1.0
    return linear_to_srgb(np.clip(x * scale, 0.0, 1.0)).astype(np.float32)


def to_unit(view: np.ndarray) -> np.ndarray:
    """A [-1, 1] view -> [0, 1]."""
    return (np.asarray(view, dtype=np.float32) + 1.0) * 0.5


def to_uint8(x: np.ndarray) -> np.ndarray:
    return (np.clip(x, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
