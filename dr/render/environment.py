"""The env map a clip stores: the HDRI as the scene sees it (times its strength), at He x 2He."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from dr.shards.envmap import HALF_MAX


def stored_env(hdri: np.ndarray, strength: float, height: int) -> np.ndarray:
    """(He, 2He, 3) float16: ``strength * hdri``, made finite and non-negative, area-averaged
    down to He = min(height, source height) rows (never upsampled)."""
    import cv2

    img = np.nan_to_num(np.asarray(hdri, dtype=np.float32), nan=0.0, posinf=HALF_MAX, neginf=0.0)
    img = np.maximum(img, 0.0)
    He = min(int(height), img.shape[0])
    if img.shape[:2] != (He, 2 * He):
        img = cv2.resize(img, (2 * He, He), interpolation=cv2.INTER_AREA)
    return np.clip(img * np.float32(strength), 0.0, HALF_MAX).astype(np.float16)


def load_stored_env(path: Path, strength: float, height: int) -> np.ndarray:
    from dr.assets_manifest.hdr_image import read_hdr

    return stored_env(read_hdr(path), strength, height)
