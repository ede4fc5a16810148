"""`dr-train` throughput, all measured in one run on this machine.

    python bench/bench_train.py [--data RUN] [--base DIR] [--preset cpu-demo] [--steps 6] [--svd]

Without --data and --base it makes its own: `dr-data generate --n 16` at the preset and `dr-train
init-tiny` (VAE left random: timing only) in a temporary folder.

1. data loader: training views per second of ClipDataset through a DataLoader with the preset's
   workers (what the trainer reads), from the shards (EXR decode, resize, env encodings) and from the
   latent cache, against the views per second a training step consumes; the share of a step spent
   waiting for data from a real `train()` run's metrics (data_wait).
2. steps: seconds per optimiser step of the inverse and the forward renderer on prefetched batches
   (no data wait), with the VAE encoding the passes in the step and with cached latents; the ratio is
   the latent cache's speed-up of the step.
3. --svd (CUDA only): one optimiser step of the inverse renderer at SVD's size (its UNet and VAE
   configs, random weights: timing only) at 512x512x24 frames, batch 1 (five passes): bf16 and fp32,
   gradient checkpointing on and off; seconds per step and peak GPU memory.

Exits 0 whatever the figures.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def cli(*args: str) -> None:
    r = subprocess.run([sys.executable, "-m", *args], cwd=REPO, capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit(f"{' '.join(args[:3])} failed: {r.stderr.strip()[-2000:]}")


def loader_rate(ds, workers: int, batch: int, n: int) -> float:
    """Views per second of the DataLoader after its first batch (workers started, buffers filled)."""
    import torch

    from dr.train.data import collate

    dl = torch.utils.data.DataLoader(ds, batch_size=batch, num_workers=workers, collate_fn=collate,
                                     prefetch_factor=4 if workers else None)
    it = iter(dl)
    next(it)
    t0 = time.perf_counter()
    for _ in range(n):
        next(it)
    dt = time.perf_counter() - t0
    del it
    return n * batch / dt


def step_time(kind: str, pipe, cfg, batches: list[dict], steps: int) -> float:
    """Median seconds of an optimiser step over the prefetched ``batches`` (cycled)."""
    from accelerate import Accelerator

    from dr.train.objectives import make_objective
    from dr.train.trainer import optimiser, optimiser_step, trained_modules

    acc = Accelerator(cpu=True)
    objective = make_objective(kind, pipe, cfg)
    params, opt, sched = optimiser(cfg, trained_modules(kind, pipe).values())
    objective.train()
    times = []
    for s in range(steps + 1):
        t0 = time.perf_counter()
        optimiser_step(acc, objective, opt, sched, params, [batches[s % len(batches)]], 0, s, 1.0)
        times.append(time.perf_counter() - t0)
    times = sorted(times[1:])  # the first step warms up
    return times[len(times) // 2]


def svd_step(precision: str, checkpointing: bool) -> tuple[float, float]:
    """(seconds per step, peak GiB) of one inverse-renderer step at SVD's size on the GPU."""
    import torch
    from diffusers import AutoencoderKLTemporalDecoder, EulerDiscreteScheduler, UNetSpatioTemporalConditionModel

    from dr.models.base import SVD_SCHEDULER, Base
    from dr.models.build import new_inverse_renderer
    from dr.train.objectives import InverseObjective
    from dr.train.trainer import clip_generators

    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    base = Base(UNetSpatioTemporalConditionModel(), AutoencoderKLTemporalDecoder(),
                EulerDiscreteScheduler(**SVD_SCHEDULER), "svd-config")
    pipe = new_inverse_renderer(base).to("cuda")
    if checkpointing:
        pipe.unet.enable_gradient_checkpointing()
    obj = InverseObjective(pipe)
    obj.train()
    params = list(pipe.unet.parameters()) + list(pipe.pass_embedding.parameters())
    opt = torch.optim.AdamW(params, lr=1e-5)
    batch = {"key": ["a"]}
    for p in ("rgb", "basecolor", "metallic", "roughness", "normal", "depth"):
        batch[p] = torch.rand(1, 24, 3, 512, 512, device="cuda") * 2 - 1
    dtype = {"bf16": torch.bfloat16, "fp32": torch.float32}[precision]
    times = []
    for s in range(3):
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        with torch.autocast("cuda", dtype=dtype, enabled=dtype != torch.float32):
            loss = obj(batch, clip_generators(0, s, 0, 0, 1))
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    peak = torch.cuda.max_memory_allocated() / 2**30
    del pipe, obj, opt, params, base
    return min(times[1:]), peak


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", help="a run of `dr-data generate` (default: 16 clips made here)")
    ap.add_argument("--base", help="a base folder (default: a tiny one made here, VAE random)")
    ap.add_argument("--preset", default="cpu-demo", help="training preset (default cpu-demo)")
    ap.add_argument("--steps", type=int, default=6, help="optimiser steps timed per case (default 6)")
    ap.add_argument("--svd", action="store_true", help="also time an SVD-sized step (CUDA only)")
    args = ap.parse_args()

    import torch

    from dr.config import resolve_config
    from dr.models.base import load_base
    from dr.models.build import new_forward_renderer, new_inverse_renderer
    from dr.train.config import TrainConfig
    from dr.train.data import ClipDataset, collate
    from dr.train.latent_cache import caches_for, downsampling, write_cache

    work = Path(tempfile.mkdtemp(prefix="bench-train-"))
    os.environ.setdefault("DR_CACHE_DIR", str(work / "cache"))
    try:
        data = args.data
        if data is None:
            data = str(work / "run")
            ray_tmp = tempfile.mkdtemp(prefix="drray-", dir="/tmp")
            os.environ["DR_RAY_TEMP_DIR"] = ray_tmp
            cli("dr.cli.data_app", "generate", "--n", "16", "--preset", args.preset, "--out", data,
                "--clips-per-shard", "4")
            shutil.rmtree(ray_tmp, ignore_errors=True)
        base_dir = args.base
        if base_dir is None:
            cli("dr.cli.train_app", "init-tiny", "--out", str(work / "models"), "--data", data, "--vae-steps", "0")
            base_dir = str(work / "models" / "svd")
        cfg = resolve_config(TrainConfig, args.preset, None, [])
        d = cfg.data
        base = load_base(base_dir)
        print(f"bench_train: preset {args.preset} ({d.height}x{d.width}, {d.frames} frames, batch {d.batch_size}, "
              f"{d.workers} data worker(s)), {torch.get_num_threads()} torch threads, data {data}")

        # latent cache for the data (a temporary copy of the run when it is the user's, so nothing is left there)
        if args.data is not None:
            shutil.copytree(Path(args.data) / "shards", work / "copy" / "shards")
            data = str(work / "copy")
        write_cache([data], base.vae, d.height, d.width)
        _, latents = caches_for([data], base.vae, d.height, d.width)
        f = downsampling(base.vae)

        rows = {}
        for kind in ("inverse", "forward"):
            env = (d.env_height, d.env_width) if kind == "forward" else None

            def ds(cached: bool):
                return ClipDataset([data], d.frames, d.height, d.width, env, seed=0, holdout_fraction=0.0,
                                   shuffle_buffer=d.shuffle_buffer, latents=latents if cached else None,
                                   latent_factor=f)

            n = max(4, 2 * args.steps)
            rate_px, rate_lat = loader_rate(ds(False), d.workers, d.batch_size, n), \
                loader_rate(ds(True), d.workers, d.batch_size, n)
            it_px, it_lat = iter(ds(False)), iter(ds(True))
            px = [collate([next(it_px) for _ in range(d.batch_size)]) for _ in range(2)]
            lat = [collate([next(it_lat) for _ in range(d.batch_size)]) for _ in range(2)]
            make = (lambda: new_forward_renderer(base, cfg.model.env_stem_channels)) if kind == "forward" \
                else (lambda: new_inverse_renderer(base))
            s_px = step_time(kind, make(), cfg, px, args.steps)
            s_lat = step_time(kind, make(), cfg, lat, args.steps)
            rows[kind] = (rate_px, rate_lat, s_px, s_lat)

        print("\n1. data loader (views/s) against what a step consumes (views/s = batch / step time)")
        print("   renderer  shards  cache  step needs  loader/need (shards, cache)")
        for kind, (rp, rl, sp, sl) in rows.items():
            need_px, need_lat = d.batch_size / sp, d.batch_size / sl
            print(f"   {kind:8s}  {rp:6.2f}  {rl:5.1f}  {need_px:6.2f} / {need_lat:5.2f}  "
                  f"{rp / need_px:5.1f}x, {rl / need_lat:5.1f}x")
        print("\n2. seconds per optimiser step (prefetched batches)")
        print("   renderer  VAE in step  cached latents  speed-up")
        for kind, (_, _, sp, sl) in rows.items():
            print(f"   {kind:8s}  {sp:11.3f}  {sl:14.3f}  {sp / sl:7.2f}x")

        # the data wait of a real run (metrics.jsonl's data_wait: share of wall time in next(batch))
        from dr.train.trainer import read_metrics, train

        out = work / "train-inverse"
        wait_cfg = resolve_config(TrainConfig, args.preset, None,
                                  [f"train.max_steps={2 * args.steps}", f"train.log_every={args.steps}",
                                   f"train.checkpoint_every={10 * args.steps}"])
        train("inverse", new_inverse_renderer(base), wait_cfg, [data], out, latents=None)
        waits = [r["data_wait"] for r in read_metrics(out)][1:]
        print(f"\n   a real inverse run from the shards, steps {args.steps + 1}..{2 * args.steps}: waiting for data "
              f"{100 * sum(waits) / max(1, len(waits)):.2f}% of the wall time (limit 5%)")

        if args.svd:
            if not torch.cuda.is_available():
                print("\n3. --svd: no CUDA device here; skipped")
            else:
                print(f"\n3. inverse renderer at SVD's size, 512x512x24, batch 1 (five passes), "
                      f"{torch.cuda.get_device_name()}")
                print("   precision  checkpointing  s/step  peak GiB")
                for prec in ("bf16", "fp32"):
                    for ck in (True, False):
                        try:
                            s, gib = svd_step(prec, ck)
                            print(f"   {prec:9s}  {str(ck):13s}  {s:6.2f}  {gib:8.1f}")
                        except torch.cuda.OutOfMemoryError:
                            print(f"   {prec:9s}  {str(ck):13s}  out of memory")
                            torch.cuda.empty_cache()
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
