"""Render costs on this machine, all measured in one run (Cycles on the CPU unless --device).

    python bench/bench_render.py [--device auto] [--quick]

1. passes: every pass (AOVs + Normal) against an RGB-only render of the same spec, same worker.
2. overhead: one clip at 256x256, 32 samples, 24 frames in a fresh worker; everything that is
   not path tracing (worker start, scene build and asset import, EXR reading and pass assembly,
   compression and the shard) against the path-tracing time.
3. seconds per frame at 256 and 512 pixels, 32 and 128 samples, with and without OIDN.
4. the `paper` preset clip (512x512, 24 frames, 128 samples, OIDN): bytes on disk per pass, and
   the time to decode the whole clip from its shard.
--quick renders fewer frames everywhere (the figures per frame stay comparable; bytes are then
scaled to 24 frames and say so).
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="auto")
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    os.environ.setdefault("DR_CACHE_DIR", tempfile.mkdtemp(prefix="dr-bench-"))
    cache = Path(os.environ["DR_CACHE_DIR"])
    work = Path(tempfile.mkdtemp(prefix="dr-bench-render-"))

    from dr.assets_manifest.build import available_cpus, ensure_builtin_manifest
    from dr.assets_manifest.manifest import load_manifest
    from dr.config import resolve_config
    from dr.render.settings import RenderSettings
    from dr.render.worker import RenderWorker
    from dr.scenes.config import ScenesSampleConfig
    from dr.scenes.sampler import sample_scene
    from dr.shards.reader import iter_samples
    from dr.shards.schema import member_suffixes
    from dr.shards.writer import ShardWriter

    manifest = load_manifest(ensure_builtin_manifest(cache))
    threads = available_cpus()

    def spec(size: int, frames: int, index: int = 0):
        cfg = resolve_config(ScenesSampleConfig, "paper", None, [f"scene.width={size}", f"scene.height={size}",
                                                                 f"scene.frames={frames}"])
        return sample_scene(cfg.scene, manifest, seed=0, index=index)

    def job(sp, settings, tag, **kw):
        return {"key": sp.clip_id, "spec": sp.to_json(), "settings": settings.model_dump(mode="json"),
                "staging": str(work / tag), "log": str(work / "logs" / f"{tag}.log"), "run_id": "bench", **kw}

    print(f"threads {threads}, device {args.device}")

    # 1. all passes against RGB only
    frames = 4 if args.quick else 8
    sp = spec(256, frames)
    st = RenderSettings(device=args.device, samples=32, denoiser="none")
    times = {True: [], False: []}
    with RenderWorker(cache, work / "tmp", threads) as w:
        w.render(job(sp, st, "warm", with_aovs=False))
        for rep in range(2):
            for aovs in ((True, False) if rep == 0 else (False, True)):
                r = w.render(job(sp, st, f"p{aovs}{rep}", with_aovs=aovs))
                times[aovs].append(r["timings"]["trace"] + r["timings"]["post"])
    full, rgb = min(times[True]), min(times[False])
    print(f"\n1. all passes vs RGB only, 256x256, 32 spp, {frames} frames: {full:.2f} s vs {rgb:.2f} s "
          f"(render + EXR read), ratio {full / rgb:.3f}")

    # 2. per-clip overhead in a fresh worker
    frames = 8 if args.quick else 24
    sp = spec(256, frames, index=1)
    t0 = time.perf_counter()
    with RenderWorker(cache, work / "tmp", threads) as w:
        r = w.render(job(sp, st, "overhead"))
    d = Path(r["dir"])
    with ShardWriter(work / "overhead_shards") as sw:
        sw.add(sp.clip_id, {s: d / s for s in member_suffixes()})
    wall = time.perf_counter() - t0
    trace = r["timings"]["trace"]
    print(f"\n2. one clip 256x256, 32 spp, {frames} frames, fresh worker: wall {wall:.2f} s, path tracing {trace:.2f} s, "
          f"overhead {wall - trace:.2f} s = {(wall - trace) / trace:.1%} of path tracing")
    print("   stages: " + ", ".join(f"{k} {v:.2f} s" for k, v in r["timings"].items()))

    # 3. seconds per frame
    frames = 2 if args.quick else 3
    print(f"\n3. seconds per frame (mean of frames 2..{frames}; frame 1 also builds the BVH and loads images)")
    print("   size  samples  denoiser  s/frame  first frame")
    with RenderWorker(cache, work / "tmp", threads) as w:
        for size in (256, 512):
            sp = spec(size, frames, index=2)
            for samples in (32, 128):
                for den in ("none", "oidn"):
                    stamps = []
                    w.render(job(sp, RenderSettings(device=args.device, samples=samples, denoiser=den),
                                 f"s{size}{samples}{den}"),
                             on_event=lambda m: stamps.append(time.perf_counter()) if m[0] in ("started", "frame") else 0)
                    per = [b - a for a, b in zip(stamps, stamps[1:])]
                    rest = per[1:] or per
                    print(f"   {size:4d}  {samples:7d}  {den:8s}  {sum(rest) / len(rest):7.2f}  {per[0]:7.2f}")

    # 4. the paper clip: bytes per pass and decode time
    frames = 4 if args.quick else 24
    sp = spec(512, frames, index=3)
    with RenderWorker(cache, work / "tmp", threads) as w:
        r = w.render(job(sp, RenderSettings(device=args.device, samples=128, denoiser="oidn"), "paper"))
    d = Path(r["dir"])
    with ShardWriter(work / "paper_shards") as sw:
        sw.add(sp.clip_id, {s: d / s for s in member_suffixes()})
    scale = 24 / frames
    total = 0
    print(f"\n4. paper clip (512x512, {frames} frames, 128 spp, OIDN){' scaled to 24 frames' if scale != 1 else ''}: "
          f"bytes per pass on disk (zstd level 3)")
    for s in member_suffixes():
        b = (d / s).stat().st_size
        b = b * scale if s.split(".")[0] not in ("json", "env") else b
        total += b
        print(f"   {s:20s} {b / 2**20:8.2f} MiB")
    print(f"   {'total':20s} {total / 2**20:8.2f} MiB per clip; 150,000 clips: {total * 150000 / 2**40:.1f} TiB")
    t0 = time.perf_counter()
    sample = next(iter_samples(str(work / "paper_shards")))
    dec = time.perf_counter() - t0
    t0 = time.perf_counter()
    for t in range(sample.frames):
        sample.env_encodings(t, 512, 512)
    enc = time.perf_counter() - t0
    print(f"   decode the whole clip from its shard: {dec:.2f} s; env encodings for all {sample.frames} frames at 512x512: "
          f"{enc:.2f} s")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
