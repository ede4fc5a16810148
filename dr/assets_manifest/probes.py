"""Probes: open an asset the way a renderer would, measure it, or say why it is unusable.

Each probe takes a record (with ``uri`` resolvable to local files) and returns the record with
``sha256``, ``stats`` and ``status`` filled in. A failed check is a quarantine with a one-line
reason, never an exception. They run in worker processes (see probe_pool).
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import numpy as np

from dr.assets_manifest.manifest import AssetRecord
from dr.assets_manifest.resolve import resolve_uri
from dr.files import sha256_file
from dr.srgb import srgb_to_linear

# Bump when a probe measures something new or checks differently: cached probe results of an
# older version are not reused.
PROBE_VERSION = 1

LDR_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".tga", ".webp")


class ProbeFailure(Exception):
    """An asset failed a check; the message is the quarantine reason."""


def probe(record: AssetRecord, max_triangles: int, cache: str | None = None) -> AssetRecord:
    """Probe any record by its kind; quarantine it on any failure."""
    try:
        if record.kind == "object":
            return probe_object(record, max_triangles, cache)
        if record.kind == "material":
            return probe_material(record, cache)
        return probe_hdri(record, cache)
    except ProbeFailure as e:
        return record.quarantine(str(e))
    except FileNotFoundError as e:
        return record.quarantine(f"file not found: {e.filename}")
    except (OSError, MemoryError) as e:
        return record.quarantine(f"cannot read: {type(e).__name__}: {e}")


def _file(record: AssetRecord, cache: str | None) -> Path:
    path = resolve_uri(record.uri, cache)
    if not path.is_file():
        raise ProbeFailure(f"file not found: {path}")
    return path


# --- objects -------------------------------------------------------------------------------

def probe_object(record: AssetRecord, max_triangles: int, cache: str | None = None) -> AssetRecord:
    """Load a GLB/glTF with trimesh and decode its textures; check finite, non-degenerate
    bounds and the triangle budget; measure the bounds in Z-up metres (as Blender's importer places it) and the
    radius of its footprint about the vertical axis through the bounds' centre."""
    import trimesh

    from dr.assets_manifest.builtin.objects import GLTF_TO_ZUP

    path = _file(record, cache)
    digest = sha256_file(path)
    try:
        scene = trimesh.load(str(path), force="scene", process=False)
    except Exception as e:  # trimesh raises many types on corrupt input
        msg = " ".join(str(e).split())[:160] or type(e).__name__
        raise ProbeFailure(f"does not load as glTF: {msg}") from None
    chunks, triangles, instances, textures, decoded = [], 0, 0, set(), set()
    for node in scene.graph.nodes_geometry:
        transform, name = scene.graph[node]
        geom = scene.geometry.get(name)
        if not isinstance(geom, trimesh.Trimesh) or len(geom.faces) == 0:
            continue
        instances += 1
        triangles += len(geom.faces)
        if triangles > max_triangles:
            raise ProbeFailure(f"more than {max_triangles} triangles (over the budget)")
        v = np.asarray(geom.vertices, dtype=np.float64)
        chunks.append(v @ transform[:3, :3].T + transform[:3, 3])
        mat = getattr(geom.visual, "material", None)
        for attr in ("baseColorTexture", "metallicRoughnessTexture", "normalTexture", "emissiveTexture",
                     "occlusionTexture", "image"):
            img = getattr(mat, attr, None)
            if img is not None and hasattr(img, "size") and id(img) not in decoded:
                try:
                    img.load()  # trimesh opens embedded images lazily; the renderer will decode them
                except Exception as e:
                    raise ProbeFailure(f"embedded {attr} does not decode: {' '.join(str(e).split())[:120]}") from None
                decoded.add(id(img))
                textures.add(tuple(int(x) for x in img.size))
    if triangles == 0:
        raise ProbeFailure("has no triangles")
    verts = np.concatenate(chunks) @ GLTF_TO_ZUP.T
    if not np.isfinite(verts).all():
        raise ProbeFailure("has non-finite vertex coordinates")
    lo, hi = verts.min(axis=0), verts.max(axis=0)
    ext = hi - lo
    if ext.max() <= 1e-6 or np.count_nonzero(ext > 1e-6 * ext.max()) < 2:
        raise ProbeFailure(f"has degenerate bounds (extent {np.round(ext, 9).tolist()})")
    centre = (lo + hi) / 2
    radius = float(np.sqrt(((verts[:, :2] - centre[:2]) ** 2).sum(axis=1).max()))
    stats = {
        "file_bytes": path.stat().st_size,
        "triangles": int(triangles),
        "vertices": int(len(verts)),
        "instances": int(instances),
        "bounds_zup": [[_r(x) for x in lo], [_r(x) for x in hi]],
        "radius_xy": _r(radius),
        "textures": sorted([list(t) for t in textures]),
    }
    return record.model_copy(update={"sha256": digest, "stats": stats, "status": "ok", "reason": None})


def _r(x: float, nd: int = 6) -> float:
    return float(round(float(x), nd))


# --- materials -----------------------------------------------------------------------------

def _decode_texture(path: Path) -> np.ndarray:
    """Decode a texture to float64 (H, W, C) in [0, 1] (EXR: as stored); float64 because
    float32 sums drift over megapixels. Raises ProbeFailure."""
    if path.suffix.lower() == ".exr":
        from dr.assets_manifest.hdr_image import ImageDecodeError, read_hdr

        try:
            return read_hdr(path).astype(np.float64)
        except ImageDecodeError as e:
            raise ProbeFailure(f"{path.name}: {e}") from None
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            img.load()
            mode = img.mode
            arr = np.asarray(img)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise ProbeFailure(f"{path.name} does not decode: {' '.join(str(e).split())[:120]}") from None
    scale = 65535.0 if arr.dtype == np.uint16 or mode.startswith("I;16") else (255.0 if arr.dtype == np.uint8 else 1.0)
    arr = arr.astype(np.float64) / scale
    return arr[..., None] if arr.ndim == 2 else arr


def probe_material(record: AssetRecord, cache: str | None = None) -> AssetRecord:
    """Decode every map of a PBR set; record sizes and the mean linear base colour, roughness
    and metallic (from the separate maps or the packed ARM map: R=AO, G=roughness, B=metallic;
    metallic is 0 when the set has no metallic map)."""
    folder = resolve_uri(record.uri, cache)
    if "basecolor" not in record.files:
        raise ProbeFailure("has no base colour map")
    sizes: dict[str, list[int]] = {}
    digests: dict[str, str] = {}
    means: dict[str, Any] = {}
    for role, rel in sorted(record.files.items()):
        path = folder / rel
        if not path.is_file():
            raise ProbeFailure(f"{role} map {rel} not found")
        digests[role] = sha256_file(path)
        arr = _decode_texture(path)
        sizes[role] = [int(arr.shape[1]), int(arr.shape[0])]
        if arr.shape[0] < 4 or arr.shape[1] < 4:
            raise ProbeFailure(f"{role} map {rel} is only {arr.shape[1]}x{arr.shape[0]} pixels")
        if not np.isfinite(arr).all():
            raise ProbeFailure(f"{role} map {rel} has non-finite values")
        if role == "basecolor":
            rgb = arr[..., :3] if arr.shape[-1] >= 3 else np.repeat(arr[..., :1], 3, -1)
            lin = rgb if path.suffix.lower() == ".exr" else srgb_to_linear(rgb)
            means["basecolor"] = [_r(x, 4) for x in lin.reshape(-1, 3).mean(axis=0)]
        elif role in ("roughness", "metallic"):
            means[role] = _r(arr[..., 0].mean(), 4)
        elif role == "arm" and arr.shape[-1] >= 3:
            means.setdefault("roughness", _r(arr[..., 1].mean(), 4))
            means.setdefault("metallic", _r(arr[..., 2].mean(), 4))
    means.setdefault("metallic", 0.0)
    stats = {"textures": sizes, "mean": means}
    digest = hashlib.sha256("".join(f"{k}:{v}\n" for k, v in sorted(digests.items())).encode()).hexdigest()
    return record.model_copy(update={"sha256": digest, "stats": stats, "status": "ok", "reason": None})


# --- HDRIs ---------------------------------------------------------------------------------

NEGATIVE_ENERGY_TOLERANCE = 1e-5


def probe_hdri(record: AssetRecord, cache: str | None = None) -> AssetRecord:
    """Decode an equirectangular map; check it is 2:1, finite and non-negative (up to
    compression noise: negative values carry at most 1e-5 of the energy); record its size,
    peak (largest channel value), mean luminance (Rec. 709, per pixel) and min."""
    from dr.assets_manifest.hdr_image import ImageDecodeError, read_hdr

    path = _file(record, cache)
    digest = sha256_file(path)
    try:
        img = read_hdr(path)
    except ImageDecodeError as e:
        raise ProbeFailure(str(e)) from None
    h, w = img.shape[:2]
    if w != 2 * h:
        raise ProbeFailure(f"is {w}x{h}, not a 2:1 equirectangular map")
    bad = int(np.count_nonzero(~np.isfinite(img)))
    if bad:
        raise ProbeFailure(f"has {bad} non-finite (NaN or Inf) values")
    lum = img[..., :3] @ np.array([0.2126, 0.7152, 0.0722], dtype=np.float32)
    low = float(img.min())
    # Lossy EXR compression (DWA, as in the maps inside bpy) leaves a few tiny negative values
    # next to dark pixels (up to 2.5e-7 of the energy there); loaders clamp them to 0. A map
    # whose negative part carries more energy than that is broken (signed or offset data).
    neg = float(-img[img < 0].sum(dtype=np.float64))
    pos = float(img[img > 0].sum(dtype=np.float64))
    neg_fraction = neg / pos if pos > 0 else (1.0 if neg > 0 else 0.0)
    if neg_fraction > NEGATIVE_ENERGY_TOLERANCE:
        raise ProbeFailure(f"has negative values (min {low:.4g}; {neg_fraction:.2%} of the energy)")
    stats = {"file_bytes": path.stat().st_size, "width": int(w), "height": int(h),
             "peak": _r(img.max(), 4), "mean": _r(lum.mean(), 6), "min": _r(low, 6)}
    return record.model_copy(update={"sha256": digest, "stats": stats, "status": "ok", "reason": None})
