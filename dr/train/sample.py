"""``dr-train sample``: run a trained renderer on one clip and keep what it made beside the truth.

The clip is viewed as in evaluation (its middle frames, the centre crop at the training size). The
forward renderer renders it under its own env map or another HDRI (turned with the clip's
cam_to_env, as its own would be); the inverse renderer decomposes its rgb. Both results come back
as Samples in DESIGN's units, so dr.shards.preview draws them like any clip: ``<clip>-truth`` (the
path-traced view) and ``<clip>-<kind>`` (the model's, with the inputs it was given).
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import torch

from dr.models.pipelines import display_to_linear
from dr.shards.reader import Sample, iter_shard
from dr.train.data import GBUFFERS, READ_PASSES, clip_view, is_held_out, list_clips
from dr.train.evaluate import Centre, forward_metrics, inverse_metrics, truth


def find_clip(sources, key: str) -> Sample:
    """The clip ``key`` of the first source that holds it (its passes and env map); KeyError if none does."""
    for url, keys in list_clips(sources):
        if key in keys:
            return next(iter_shard(url, passes=READ_PASSES, with_env=True, keys={key}))
    raise KeyError(key)


def _view_sample(key: str, t: dict[str, torch.Tensor], src: Sample, start: int, frames: int) -> Sample:
    passes = {p: t[p].numpy().astype(np.float32) for p in ("basecolor", "roughness", "metallic", "normal", "depth")}
    passes["rgb"] = display_to_linear(t["rgb"].numpy())
    passes["mask"] = t["mask"].numpy()[..., None].astype(np.float32)
    meta = {**src.meta, "frames": frames}
    sl = slice(start, start + frames)
    return Sample(key=key, meta=meta, passes=passes, env=src.env,
                  c2w=None if src.c2w is None else src.c2w[sl],
                  intrinsics=None if src.intrinsics is None else src.intrinsics[sl],
                  cam_to_env=None if src.cam_to_env is None else src.cam_to_env[sl])


FLICKER_PASSES = {"inverse": ("basecolor", "normal", "roughness", "metallic"), "forward": ("rgb",)}


def sample_clip(kind: str, pipeline, clip: Sample, data_cfg, frames: int, steps: int = 20, seed: int = 0,
                env: np.ndarray | None = None, window: int | None = None, overlap: int = 6,
                carry: float = 0.0) -> tuple[Sample, Sample, dict[str, float]]:
    """(truth, result, metrics): the clip's view at the training size, the model's output for it and
    dr-train eval's metrics of the output, with the flicker (image_metrics.flicker) of the output's
    passes as '<pass>_flicker' beside the truth's as '<pass>_flicker_truth' (depth is left out: the
    model's is relative). ``env`` (H, W, 3 linear) replaces the clip's env map for the forward renderer;
    ``window``, ``overlap`` and ``carry`` as dr.models.pipelines.run_windows."""
    from dr.train.image_metrics import flicker

    if clip.passes["rgb"].shape[0] < frames:
        raise ValueError(f"clip {clip.key} has {clip.passes['rgb'].shape[0]} frames; --frames {frames} asks for more")
    if env is not None:
        clip = replace(clip, env=np.asarray(env, np.float32))
    env_size = (data_cfg.env_height, data_cfg.env_width) if kind == "forward" else None
    v = clip_view(clip, frames, data_cfg.height, data_cfg.width, Centre(), env_size)
    start = Centre().integers(0, clip.passes["rgb"].shape[0] - frames + 1)
    t = truth(v)
    true = _view_sample(f"{clip.key}-truth", t, clip, start, frames)
    g = torch.Generator().manual_seed(seed)
    made = dict(t)
    windows = {"window": window, "overlap": overlap, "carry": carry}
    if kind == "inverse":
        out = pipeline(v["rgb"][None], num_inference_steps=steps, generator=g, **windows)
        made.update({p: torch.from_numpy(x[0]) for p, x in out.items()})
        metrics = inverse_metrics(made, t)
    else:
        out = pipeline({p: v[p][None] for p in GBUFFERS}, v["env"][None], num_inference_steps=steps, generator=g,
                       **windows)
        made["rgb"] = torch.from_numpy(out[0])
        metrics = forward_metrics(made["rgb"], t)
    for p in FLICKER_PASSES[kind]:
        metrics[f"{p}_flicker"], metrics[f"{p}_flicker_truth"] = flicker(made[p]), flicker(t[p])
    return true, _view_sample(f"{clip.key}-{kind}", made, clip, start, frames), metrics


def held_out_clips(sources, fraction: float, n: int) -> list[Sample]:
    """The first ``n`` held-out clips of ``sources`` (shard order)."""
    out: list[Sample] = []
    for url, keys in list_clips(sources):
        want = [k for k in keys if is_held_out(k, fraction)][: n - len(out)]
        if want:
            out.extend(iter_shard(url, passes=READ_PASSES, with_env=True, keys=set(want)))
        if len(out) >= n:
            break
    return out


def write_step_samples(kind: str, pipeline, clips: list[Sample], data_cfg, out, steps: int, seed: int) -> dict:
    """Previews of ``clips`` (truth beside the model's result) in ``out`` with their metrics in
    ``out/metrics.json``; returns {clip id: metrics}."""
    import json

    from dr.files import write_text_atomic
    from dr.shards.preview import write_previews

    pairs, metrics = [], {}
    for clip in clips:
        true, made, metrics[clip.key] = sample_clip(kind, pipeline, clip, data_cfg, data_cfg.frames, steps=steps,
                                                    seed=seed)
        pairs += [true, made]
    write_previews(pairs, out, frames=min(6, data_cfg.frames), title=f"held-out clips at {out.name}")
    write_text_atomic(out / "metrics.json", json.dumps(metrics, indent=1, sort_keys=True) + "\n")
    return metrics
