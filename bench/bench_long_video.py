"""Long videos in overlapping windows: flicker with and without the carried latent, in one run.

    python bench/bench_long_video.py --ckpt CKPT --data STATIC_RUN [--frames 16] [--window W]
                                     [--overlap 4] [--carry 0 0.1] [--steps N] [--clips 8]

CKPT is a dr-train checkpoint (forward or inverse; its training run gives the view size). STATIC_RUN
holds clips of static scenes at least --frames long, e.g.

    dr-data generate --n 8 --preset cpu-demo --out static --set scene.frames=16 \\
        --set scene.camera.p_orbit=0 --set scene.camera.p_oscillation=0 --set scene.camera.shake_m=0 \\
        --set scene.objects.p_rotate=0 --set scene.objects.p_translate=0 --set scene.light.p_rotate=0

where nothing moves, so what changes from frame to frame is the renderer's own (and the path tracer's
noise, the truth's flicker). Each clip's middle --frames frames run in windows of --window frames
(default: the model's) sharing --overlap, once per --carry gamma (0: independent windows; Ouroboros
uses 0.1). Prints, per gamma, the mean flicker (mean absolute change between consecutive frames) of
each pass beside the truth's, the accuracy (dr-train eval's metrics) and seconds per clip.

Exits 0 whatever the figures; 2 with one line for bad input.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--ckpt", type=Path, required=True, help="dr-train run, checkpoint or pipeline folder")
    ap.add_argument("--data", required=True, help="run of static clips (see the module doc)")
    ap.add_argument("--frames", type=int, default=16, help="frames per clip to run (default 16)")
    ap.add_argument("--window", type=int, default=None, help="frames per window (default: the model's)")
    ap.add_argument("--overlap", type=int, default=4, help="frames shared by consecutive windows (default 4)")
    ap.add_argument("--carry", type=float, nargs="+", default=[0.0, 0.1], help="gammas to compare (default 0 0.1)")
    ap.add_argument("--steps", type=int, default=None, help="sampling steps (default: the renderer's)")
    ap.add_argument("--clips", type=int, default=8, help="clips to run at most (default 8)")
    ap.add_argument("--seed", type=int, default=0, help="seed of the starting noise (default 0)")
    a = ap.parse_args()

    import numpy as np

    from dr.cli.train_app import _find_checkpoint, _load_pipeline, _run_config
    from dr.errors import UserError
    from dr.shards.reader import iter_samples
    from dr.train.data import READ_PASSES
    from dr.train.sample import FLICKER_PASSES, sample_clip

    try:
        kind, folder, run_dir = _find_checkpoint(a.ckpt)
        cfg = _run_config(run_dir, None, None, None)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    clips = []
    for s in iter_samples(a.data, passes=READ_PASSES, with_env=kind == "forward"):
        if s.frames >= a.frames:
            clips.append(s)
        if len(clips) >= a.clips:
            break
    if not clips:
        print(f"error: {a.data} has no clip of {a.frames} frames or more", file=sys.stderr)
        sys.exit(2)
    pipe = _load_pipeline(kind, folder)
    window = a.window or pipe.num_frames
    if a.frames > window and not 0 <= a.overlap < window:
        print(f"error: --overlap {a.overlap} must be in [0, {window})", file=sys.stderr)
        sys.exit(2)
    steps = pipe.steps(a.steps)
    print(f"{kind} renderer {folder}: {len(clips)} static clips of {a.frames} frames, windows of {window} "
          f"sharing {a.overlap}, {steps} step(s)")
    passes = FLICKER_PASSES[kind]
    for gamma in a.carry:
        rows, t0 = [], time.perf_counter()
        for clip in clips:
            _, _, m = sample_clip(kind, pipe, clip, cfg.data, a.frames, steps=steps, seed=a.seed, window=window,
                                  overlap=a.overlap, carry=gamma)
            rows.append(m)
        dt = (time.perf_counter() - t0) / len(clips)
        mean = {k: float(np.mean([r[k] for r in rows])) for k in rows[0]}
        flick = "  ".join(f"{p} {mean[f'{p}_flicker']:.4f} (truth {mean[f'{p}_flicker_truth']:.4f})" for p in passes)
        acc = "  ".join(f"{k} {v:.3f}" for k, v in mean.items() if "flicker" not in k)
        print(f"carry {gamma:g}: flicker {flick}\n          {acc}  {dt:.2f} s/clip")


if __name__ == "__main__":
    main()
