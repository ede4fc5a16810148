"""Assets probed per second: the built-in library and a folder of Objaverse-like GLBs, with one
worker and with one per CPU.

    python bench/bench_probe.py [--objects 200]

The GLBs are made here with trimesh, since no download is possible: 1 to 3 meshes of 5k to 82k
triangles and a 1024x1024 base-colour texture each, like a typical Objaverse object; the probe
itself (trimesh load with textures, bounds, sha256) is the real one.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np


def _make_glbs(folder: Path, n: int) -> list:
    import trimesh
    from PIL import Image
    from trimesh.visual import TextureVisuals
    from trimesh.visual.material import PBRMaterial

    from dr.assets_manifest.manifest import AssetRecord

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    recs = []
    for i in range(n):
        sub = int(rng.integers(4, 7))  # icosphere subdivisions 4..6: 5k..82k faces, then a few copies
        parts = []
        for _ in range(int(rng.integers(1, 4))):
            m = trimesh.creation.icosphere(subdivisions=sub).apply_translation(rng.normal(size=3))
            uv = (m.vertices[:, :2] - m.vertices[:, :2].min(0)) / np.ptp(m.vertices[:, :2], axis=0)
            tex = (np.cumsum(rng.normal(size=(1024, 1024, 3)), axis=1) % 255).astype(np.uint8)
            m.visual = TextureVisuals(uv=uv, material=PBRMaterial(baseColorTexture=Image.fromarray(tex)))
            parts.append(m)
        path = folder / f"obj{i:04d}.glb"
        path.write_bytes(trimesh.Scene(parts).export(file_type="glb"))
        recs.append(AssetRecord(id=f"bench:obj{i:04d}", kind="object", source="bench", uri=str(path)))
    return recs


def _rate(recs, workers: int, cache: str) -> tuple[float, int]:
    from dr.assets_manifest.probe_pool import probe_all

    t0 = time.perf_counter()
    out = probe_all(recs, max_triangles=1_000_000, timeout_s=120, workers=workers, cache=cache)
    dt = time.perf_counter() - t0
    assert all(r.status == "ok" for r in out), [r.reason for r in out if r.status != "ok"][:3]
    tris = [r.stats["triangles"] for r in out if "triangles" in r.stats]
    return len(recs) / dt, (sum(tris) / len(tris) if tris else 0)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--objects", type=int, default=200)
    args = ap.parse_args()
    cache = os.environ.setdefault("DR_CACHE_DIR", tempfile.mkdtemp(prefix="dr-bench-"))

    from dr.assets_manifest.build import available_cpus
    from dr.assets_manifest.builtin.library import builtin_candidates, ensure_library

    ensure_library(Path(cache))
    cpus = available_cpus()
    builtin = builtin_candidates()
    with tempfile.TemporaryDirectory() as tmp:
        glbs = _make_glbs(Path(tmp), args.objects)
        for name, recs in (("built-in library", builtin), (f"{args.objects} GLBs", glbs)):
            _rate(recs, cpus, cache)  # warm the page cache so both timed runs read from memory
            one, tris = _rate(recs, 1, cache)
            many, _ = _rate(recs, cpus, cache)
            print(f"{name:18s} {len(recs):4d} assets: {one:6.1f}/s with 1 worker, {many:6.1f}/s with {cpus} "
                  f"(x{many / one:.2f}); objects average {tris / 1000:.0f}k triangles")
        print(f"Objaverse-LVIS (~46k objects) at the GLB rate with {cpus} workers: {46_000 / many / 60:.0f} min")


if __name__ == "__main__":
    main()
