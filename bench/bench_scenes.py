"""Scene specs sampled per second, with every plausibility check the sampler makes.

    python bench/bench_scenes.py [--n 300]

Prints specs/s for each preset (frames differ: paper 24, cpu-demo 8, tiny 4) on the built-in
manifest, and how many layouts and camera paths were drawn per accepted spec.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=300, help="specs per preset")
    args = ap.parse_args()
    os.environ.setdefault("DR_CACHE_DIR", tempfile.mkdtemp(prefix="dr-bench-"))

    from dr.assets_manifest.build import ensure_builtin_manifest
    from dr.assets_manifest.manifest import load_manifest
    from dr.config import resolve_config
    from dr.scenes import sampler
    from dr.scenes.config import ScenesSampleConfig

    manifest = load_manifest(ensure_builtin_manifest(Path(os.environ["DR_CACHE_DIR"])))
    layouts = cameras = 0
    real_layout, real_camera = sampler._layout, sampler._camera_path

    def count_layout(*a, **k):
        nonlocal layouts
        layouts += 1
        return real_layout(*a, **k)

    def count_camera(*a, **k):
        nonlocal cameras
        cameras += 1
        return real_camera(*a, **k)

    sampler._layout, sampler._camera_path = count_layout, count_camera
    rates = {}
    for preset in ("paper", "cpu-demo", "tiny"):
        cfg = resolve_config(ScenesSampleConfig, preset=preset).scene
        layouts = cameras = 0
        t0 = time.perf_counter()
        for k in range(args.n):
            sampler.sample_scene(cfg, manifest, 0, k)
        dt = time.perf_counter() - t0
        rates[preset] = args.n / dt
        print(f"{preset:9s} {cfg.frames:3d} frames: {rates[preset]:7.1f} specs/s  "
              f"({1000 * dt / args.n:.1f} ms each; {layouts / args.n:.2f} layouts and "
              f"{cameras / args.n:.2f} camera paths drawn per spec)")
    print(f"ratio tiny/paper: {rates['tiny'] / rates['paper']:.2f}x (the cost of 6x more frames to check)")
    print(f"150,000 paper specs on one core: {150_000 / rates['paper'] / 60:.1f} min")


if __name__ == "__main__":
    main()
