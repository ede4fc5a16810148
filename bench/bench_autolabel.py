"""How good are autolabel's labels? The closed loop on clips whose truth is known: a synthetic run exported as
DL3DV-style scenes (`dr-data export RUN --format dl3dv`), labelled by `dr-data autolabel`, compared with the
path-traced passes of the same clips, beside the mean baseline of `dr-train eval`.

    python bench/bench_autolabel.py --labels REAL_RUN --truth SYNTH_RUN [--holdout 0.2] [--held-out-only]

Each labelled clip names its scene (the synthetic clip id) and first frame; its truth is that clip's training
view at the label's size and frames (the middle crop, as `dr-train eval` views it). Prints per-pass means for
the labels and for the baseline (the truth run's mean over the clips not held out), the clips compared and
autolabel's seconds per clip (passes) and per video (lighting) from the run's stats.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from dr.shards.reader import iter_samples
from dr.train.data import READ_PASSES, clip_view, is_held_out
from dr.train.evaluate import Centre, baseline_means, inverse_metrics, truth


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--labels", required=True, help="the autolabel run (its scenes exported from --truth)")
    ap.add_argument("--truth", required=True, help="the synthetic run the scenes were exported from")
    ap.add_argument("--holdout", type=float, default=None, help="holdout fraction of the inverse renderer's "
                    "training run (default: the one in the labels' checkpoint run, else 0.125)")
    ap.add_argument("--held-out-only", action="store_true", help="compare only clips the inverse renderer was "
                    "not trained on")
    args = ap.parse_args()
    labels = list(iter_samples(args.labels))
    if not labels:
        raise SystemExit("no labelled clips")
    frac = args.holdout
    if frac is None:
        ckpt = Path(labels[0].meta["labelling"]["inverse"]["checkpoint"])
        run = next((p for p in ckpt.parents if (p / "run.json").is_file()), None)
        frac = json.loads((run / "run.json").read_text())["config"]["data"]["holdout_fraction"] if run else 0.125
    T, H, W = labels[0].passes["rgb"].shape[:3]
    truths = {s.key: s for s in iter_samples(args.truth, passes=READ_PASSES, with_env=False)}
    base_views = [clip_view(s, T, H, W, Centre(), None) for k, s in truths.items() if not is_held_out(k, frac)][:32]
    base = baseline_means(base_views)
    rows, base_rows = [], []
    for s in labels:
        src = s.meta["source_video"]
        t_sample = truths.get(src["scene"])
        if t_sample is None or (args.held_out_only and not is_held_out(src["scene"], frac)):
            continue
        # the truth frames the label covers: the segment's, viewed like a training clip at the label's size
        sub = type(t_sample)(key=t_sample.key, meta={**t_sample.meta, "frames": T},
                             passes={p: a[src["start"]:src["start"] + T] for p, a in t_sample.passes.items()},
                             env=None, c2w=None, intrinsics=None, cam_to_env=None)
        t = truth(clip_view(sub, T, H, W, Centre(), None))
        pred = {p: torch.from_numpy(s.passes[p].astype(np.float32)) for p in ("basecolor", "roughness", "metallic",
                                                                               "normal", "depth")}
        rows.append(inverse_metrics(pred, t))
        base_rows.append(inverse_metrics({p: base[p].expand_as(t[p]) for p in base}, t))
    if not rows:
        raise SystemExit("no labelled clip has its truth in --truth")
    mean = lambda rs: {k: float(np.mean([r[k] for r in rs])) for k in rs[0]}  # noqa: E731
    stats = json.loads((Path(args.labels) / "stats.json").read_text())["stages_s"]
    lights = [json.loads(str(np.load(p)["record"])) for p in sorted((Path(args.labels) / "lights").glob("*.npz"))]
    print(json.dumps({"clips": len(rows), "held_out_only": args.held_out_only, "holdout_fraction": frac,
                      "labels": mean(rows), "baseline": mean(base_rows),
                      "seconds_per_clip_inverse": stats.get("inverse", {}).get("mean"),
                      "seconds_per_video_light": float(np.mean([r["seconds"] for r in lights])) if lights else None},
                     indent=1))


if __name__ == "__main__":
    main()
