"""The sRGB transfer function (IEC 61966-2-1), for colours stored sRGB-encoded."""

from __future__ import annotations

import numpy as np


def srgb_to_linear(c) -> np.ndarray:
    """sRGB-encoded values in [0, 1] to linear ones (elementwise, float64)."""
    c = np.asarray(c, dtype=np.float64)
    return np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)


def linear_to_srgb(x) -> np.ndarray:
    """Linear values in [0, 1] to sRGB-encoded ones (elementwise; DESIGN.md section 2's srgb)."""
    x = np.asarray(x)
    return np.where(x <= 0.0031308, 12.92 * x, 1.055 * np.power(np.maximum(x, 0.0031308), 1.0 / 2.4) - 0.055)
