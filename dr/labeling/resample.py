"""Image resampling shared by the labelling steps (undistortion, the mirror-ball unwrap)."""

from __future__ import annotations

import numpy as np


def bilinear(img: np.ndarray, px: np.ndarray, py: np.ndarray) -> np.ndarray:
    """img (H, W, C) at continuous pixel coordinates ``px``, ``py`` (pixel centres at +0.5), edges clamped."""
    H, W = img.shape[:2]
    x = np.clip(px - 0.5, 0.0, W - 1.0)
    y = np.clip(py - 0.5, 0.0, H - 1.0)
    x0 = np.minimum(np.floor(x).astype(int), max(W - 2, 0))
    y0 = np.minimum(np.floor(y).astype(int), max(H - 2, 0))
    fx, fy = (x - x0)[..., None], (y - y0)[..., None]
    x1, y1 = np.minimum(x0 + 1, W - 1), np.minimum(y0 + 1, H - 1)
    return (img[y0, x0] * (1 - fx) + img[y0, x1] * fx) * (1 - fy) + (img[y1, x0] * (1 - fx) + img[y1, x1] * fx) * fy
