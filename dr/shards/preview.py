"""Contact sheets of a sample: a row per pass (and the env encodings), a column per frame."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from dr.shards import views
from dr.shards.reader import Sample

ROWS = ("rgb", "basecolor", "roughness", "metallic", "normal", "depth", "mask", "env_ldr", "env_log")


def _frames(n: int, max_frames: int) -> list[int]:
    if n <= max_frames:
        return list(range(n))
    return sorted({int(round(x)) for x in np.linspace(0, n - 1, max_frames)})


def contact_sheet(sample: Sample, max_frames: int = 6) -> np.ndarray:
    """(rows * H, cols * W, 3) uint8: rows are the passes present (display views), then
    env_ldr and env_log at the frame's size; columns are up to ``max_frames`` frames."""
    p = sample.passes
    T, H, W = p["rgb"].shape[:3]
    ts = _frames(T, max_frames)
    mask = p.get("mask")
    tiles: dict[str, np.ndarray] = {}
    tiles["rgb"] = views.rgb_display(p["rgb"])
    for name in ("basecolor", "roughness", "metallic"):
        if name in p:
            tiles[name] = views.to_unit(views.material_view(p[name]))
    if "normal" in p:
        tiles["normal"] = views.to_unit(np.asarray(p["normal"], np.float32))
    if "depth" in p and mask is not None:
        tiles["depth"] = views.to_unit(-views.depth_view(p["depth"], mask))  # near bright
    if mask is not None:
        tiles["mask"] = np.repeat(np.asarray(mask, np.float32), 3, axis=-1)
    rows = []
    for name in ROWS:
        if name.startswith("env_"):
            if sample.env is None or sample.cam_to_env is None:
                continue
            row = [sample.env_encodings(t, H, W)[name] for t in ts]
        elif name in tiles:
            row = [tiles[name][t] for t in ts]
        else:
            continue
        rows.append(np.concatenate(row, axis=1))
    return views.to_uint8(np.concatenate(rows, axis=0))


def write_contact_sheet(sample: Sample, path: Path, max_frames: int = 6) -> Path:
    from PIL import Image

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    Image.fromarray(contact_sheet(sample, max_frames)).save(tmp, format="PNG")
    tmp.replace(path)
    return path
