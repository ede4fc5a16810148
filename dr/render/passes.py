"""From one frame's render layers (Cycles Combined, Normal and the AOVs) to the passes of
DESIGN.md section 2. Pure numpy.

Every sample that hits a surface adds to the ``coverage`` AOV (1 per sample), so the AOVs of a
pixel are sums weighted by the pixel filter over the samples that hit something; dividing by
coverage gives the surface's filtered value even on silhouettes. A pixel is in the mask when at
least half of its filtered samples hit a surface.
"""

from __future__ import annotations

import numpy as np

from dr.shards.envmap import HALF_MAX

MASK_COVERAGE = 0.5


def frame_passes(layers: dict[str, np.ndarray], c2w: np.ndarray) -> dict[str, np.ndarray]:
    """``layers``: 'combined' (H,W,>=3), 'normal' (H,W,3 world space), 'basecolor' (H,W,>=3),
    'roughness', 'metallic', 'depth', 'coverage' (H,W). ``c2w``: that frame's 4x4.
    Returns the pass arrays (H,W,C) in their stored dtypes."""
    cov = np.asarray(layers["coverage"], dtype=np.float32)
    mask = cov >= MASK_COVERAGE
    inv = np.where(mask, 1.0 / np.maximum(cov, 1e-6), 0.0).astype(np.float32)[..., None]

    def unit(x):
        return np.clip(np.nan_to_num(x), 0.0, 1.0)

    basecolor = unit(np.asarray(layers["basecolor"], np.float32)[..., :3] * inv)
    roughness = unit(np.asarray(layers["roughness"], np.float32)[..., None] * inv)
    metallic = unit(np.asarray(layers["metallic"], np.float32)[..., None] * inv)
    depth = np.clip(np.nan_to_num(np.asarray(layers["depth"], np.float32)[..., None] * inv), 0.0, HALF_MAX)

    R = np.asarray(c2w, dtype=np.float64)[:3, :3]
    n = np.asarray(layers["normal"], dtype=np.float64)[..., :3] @ R  # R^T n, row-wise
    norm = np.linalg.norm(n, axis=-1, keepdims=True)
    ok = mask[..., None] & (norm > 1e-8)
    normal = np.where(ok, n / np.where(norm > 1e-8, norm, 1.0), 0.0)

    rgb = np.asarray(layers["combined"], np.float32)[..., :3]
    rgb = np.clip(np.nan_to_num(rgb, nan=0.0, posinf=HALF_MAX, neginf=0.0), 0.0, HALF_MAX)
    return {
        "rgb": rgb.astype(np.float16),
        "basecolor": basecolor.astype(np.float16),
        "roughness": roughness.astype(np.float16),
        "metallic": metallic.astype(np.float16),
        "normal": normal.astype(np.float16),
        "depth": depth.astype(np.float16),
        "mask": mask[..., None].astype(np.uint8),
    }
