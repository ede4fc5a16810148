"""Evaluation on held-out clips (``dr-train eval``), always beside a trivial baseline.

The held-out clips are those ``is_held_out`` picks with the training run's ``holdout_fraction``:
never trained on. Each is viewed like training data (its middle ``frames`` frames, the centre crop
at the training size). The baseline predicts the training clips' mean for every pixel: the mean base
colour, roughness, metallic, normal direction (normalised) and display rgb, and a constant depth.

- forward: rgb PSNR and SSIM of the display view against the path-traced one; LPIPS is left out
  (its backbone weights are not bundled; the report says so).
- inverse: basecolor PSNR, mean normal angle (degrees), roughness and metallic RMSE, depth AbsRel
  after a least-squares scale and shift; all over surface pixels (mask 1).
- cycle (a forward and an inverse renderer): the same measures of forward(inverse(rgb)) against the rgb
  and of inverse(forward(G-buffers)) against the G-buffers.
"""

from __future__ import annotations

import time
from typing import Sequence

import numpy as np
import torch

from dr.shards.reader import iter_samples
from dr.train import image_metrics as im
from dr.train.data import GBUFFERS, READ_PASSES, clip_view, is_held_out


def _views(sources: Sequence[str], fraction: float, held: bool, frames: int, h: int, w: int, env, limit: int | None):
    out = []
    for src in sources:
        for s in iter_samples(src, passes=READ_PASSES, with_env=env is not None):
            if is_held_out(s.key, fraction) != held:
                continue
            if s.frames < frames:
                raise ValueError(f"clip {s.key} has {s.frames} frames; the model was trained on {frames}")
            # the middle frames and the centre crop: a generator that always draws the middle
            v = clip_view(s, frames, h, w, Centre(), env)
            v["key"] = s.key
            out.append(v)
            if limit is not None and len(out) >= limit:
                return out
    return out


class Centre:
    """Stands in for a Generator in clip_view: every draw is the middle of its range."""

    def integers(self, lo, hi):
        return (hi - 1 - lo) // 2 + lo if hi - lo > 1 else lo


def _unit(view: torch.Tensor) -> torch.Tensor:
    """(T, 3, H, W) in [-1, 1] -> (T, H, W, 3) in [0, 1]."""
    return ((view.clamp(-1, 1) + 1) / 2).permute(0, 2, 3, 1)


def truth(v: dict) -> dict[str, torch.Tensor]:
    """A held-out view in DESIGN's units, (T, H, W, C), and its mask (T, H, W)."""
    return {"rgb": _unit(v["rgb"]), "basecolor": _unit(v["basecolor"]), "roughness": _unit(v["roughness"])[..., :1],
            "metallic": _unit(v["metallic"])[..., :1], "normal": v["normal"].permute(0, 2, 3, 1),
            "depth": v["depth_m"].permute(0, 2, 3, 1), "mask": v["mask"][:, 0] > 0.5}


def baseline_means(train_views: list[dict]) -> dict[str, torch.Tensor]:
    """Per-channel means of the training clips (surface pixels for the G-buffers)."""
    ts = [truth(v) for v in train_views]
    out = {"rgb": torch.cat([t["rgb"].reshape(-1, 3) for t in ts]).mean(0)}
    for p in ("basecolor", "roughness", "metallic", "normal", "depth"):
        out[p] = torch.cat([t[p][t["mask"]] for t in ts]).mean(0)
    out["normal"] = out["normal"] / out["normal"].norm().clamp_min(1e-8)
    return out


def inverse_metrics(pred: dict[str, torch.Tensor], t: dict[str, torch.Tensor]) -> dict[str, float]:
    m = t["mask"]
    return {"basecolor_psnr": im.psnr(pred["basecolor"], t["basecolor"], m),
            "normal_angle_deg": im.angle_deg(pred["normal"], t["normal"], m),
            "roughness_rmse": im.rmse(pred["roughness"], t["roughness"], m),
            "metallic_rmse": im.rmse(pred["metallic"], t["metallic"], m),
            "depth_absrel": im.absrel_fit(pred["depth"], t["depth"], m)}


def forward_metrics(pred: torch.Tensor, t: dict[str, torch.Tensor]) -> dict[str, float]:
    return {"rgb_psnr": im.psnr(pred, t["rgb"]), "rgb_ssim": im.ssim(pred, t["rgb"])}


def _mean(rows: list[dict[str, float]]) -> dict[str, float]:
    return {k: float(np.mean([r[k] for r in rows])) for k in rows[0]} if rows else {}


def evaluate(kind: str, pipeline, sources: Sequence[str], data_cfg, steps: int | None = None, seed: int = 0,
             baseline_clips: int = 32, max_clips: int | None = None) -> dict:
    """{'kind', 'clips', 'steps', 'seconds_per_clip' (the pipeline's time, clip by clip), 'model': {metric:
    mean}, 'baseline': {...}, 'per_clip': [...], 'skipped': [...]}."""
    env = (data_cfg.env_height, data_cfg.env_width) if kind == "forward" else None
    frac = data_cfg.holdout_fraction
    held = _views(sources, frac, True, data_cfg.frames, data_cfg.height, data_cfg.width, env, max_clips)
    if not held:
        raise ValueError(f"no held-out clips in the data (holdout_fraction {frac})")
    base = baseline_means(_views(sources, frac, False, data_cfg.frames, data_cfg.height, data_cfg.width, None,
                                 baseline_clips))
    steps = pipeline.steps(steps)
    rows, base_rows = [], []
    seconds = 0.0
    for v in held:
        t = truth(v)
        g = torch.Generator().manual_seed(seed)
        const = {p: base[p].expand_as(t[p]) for p in base}
        t0 = time.perf_counter()
        if kind == "inverse":
            out = pipeline(v["rgb"][None], num_inference_steps=steps, generator=g)
            seconds += time.perf_counter() - t0
            pred = {p: torch.from_numpy(x[0]) for p, x in out.items()}
            rows.append({"key": v["key"], **inverse_metrics(pred, t)})
            base_rows.append(inverse_metrics(const, t))
        else:
            out = pipeline({p: v[p][None] for p in GBUFFERS}, v["env"][None], num_inference_steps=steps, generator=g)
            seconds += time.perf_counter() - t0
            rows.append({"key": v["key"], **forward_metrics(torch.from_numpy(out[0]), t)})
            base_rows.append(forward_metrics(const["rgb"], t))
    model = _mean([{k: x for k, x in r.items() if k != "key"} for r in rows])
    return {"kind": kind, "clips": len(held), "steps": steps, "seconds_per_clip": seconds / len(held), "model": model, "baseline": _mean(base_rows),
            "per_clip": rows, "skipped": ["lpips: its backbone weights are not bundled"] if kind == "forward" else []}


def evaluate_cycle(forward, inverse, sources: Sequence[str], data_cfg, seed: int = 0,
                   max_clips: int | None = None) -> dict:
    """The cycle errors of a single- or multi-step forward and inverse renderer pair on the held-out clips:
    'rgb_cycle', forward(inverse(I), E) against the path-traced rgb I (forward_metrics), and
    'gbuffer_cycle', inverse(forward(G, E)) against the true G-buffers G (inverse_metrics); the latents go
    from one renderer to the other as `dr-train cycle` trains them (one VAE). Returns {'clips',
    'rgb_cycle': {metric: mean}, 'gbuffer_cycle': {...}, 'per_clip': [...]}."""
    from dr.models.pipelines import FORWARD_CONDITIONS

    env = (data_cfg.env_height, data_cfg.env_width)
    frac = data_cfg.holdout_fraction
    held = _views(sources, frac, True, data_cfg.frames, data_cfg.height, data_cfg.width, env, max_clips)
    if not held:
        raise ValueError(f"no held-out clips in the data (holdout_fraction {frac})")
    rgb_rows, g_rows = [], []
    for v in held:
        t = truth(v)
        g = torch.Generator().manual_seed(seed)
        passes = inverse(v["rgb"][None], generator=g, output_type="latent")
        cond = torch.cat([passes[p] for p in FORWARD_CONDITIONS], dim=2)
        rgb = forward(None, v["env"][None], generator=g, gbuffer_latents=cond)
        rgb_rows.append({"key": v["key"], **forward_metrics(torch.from_numpy(rgb[0]), t)})
        video = forward({p: v[p][None] for p in GBUFFERS}, v["env"][None], generator=g, output_type="latent")
        out = inverse(None, generator=g, video_latents=video)
        g_rows.append({"key": v["key"], **inverse_metrics({p: torch.from_numpy(x[0]) for p, x in out.items()}, t)})

    def mean(rows):
        return _mean([{k: x for k, x in r.items() if k != "key"} for r in rows])

    return {"clips": len(held), "rgb_cycle": mean(rgb_rows), "gbuffer_cycle": mean(g_rows),
            "per_clip": [{"key": a["key"], "rgb_cycle": {k: x for k, x in a.items() if k != "key"},
                          "gbuffer_cycle": {k: x for k, x in b.items() if k != "key"}}
                         for a, b in zip(rgb_rows, g_rows)]}
