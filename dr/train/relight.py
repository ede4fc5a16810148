"""``dr-train relight``: DiffusionRenderer's editing applications on one clip (its section 5).

The inverse renderer decomposes the clip's rgb into G-buffers; the lighting is swapped (another HDRI,
or the clip's own turned about the env's up axis) and materials may be edited (roughness or metallic
set to a value on the surface or everywhere); the forward renderer renders the result. The clip is
viewed as in evaluation (its middle frames, the centre crop at the training size).

The G-buffers go from one renderer to the other as latents (both renderers share one VAE, as `dr-train
cycle` requires); an edited pass is decoded, set and encoded again. Lighting: the env map is looked up
through each frame's cam_to_env, so turning the light by theta about +Z (counter-clockwise seen from
above) is cam_to_env' = Rz(-theta) cam_to_env: light that came from direction w comes from Rz(theta) w.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import torch

from dr.models.pipelines import FORWARD_CONDITIONS, decode_latents, encode_frames, to_pass_units
from dr.shards.reader import Sample
from dr.train.data import clip_view
from dr.train.evaluate import Centre, forward_metrics, truth

EDITABLE = ("roughness", "metallic")


@dataclass
class Relit:
    rgb: np.ndarray                   # (T, H, W, 3) the rendered display view in [0, 1]
    passes: dict[str, np.ndarray]     # the G-buffers it was rendered from, DESIGN's units, (T, H, W, C)
    truth: dict[str, torch.Tensor]    # the clip's view (dr.train.evaluate.truth)
    metrics: dict[str, float]         # forward_metrics of rgb against the clip's path-traced rgb
    start: int                        # the first frame of the view in the clip


def rotation_z(deg: float) -> np.ndarray:
    t = np.deg2rad(deg)
    c, s = np.cos(t), np.sin(t)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def parse_materials(items) -> dict[str, float]:
    """['roughness=0.1', ...] -> {'roughness': 0.1}; ValueError naming what is wrong."""
    out = {}
    for item in items or []:
        name, sep, value = str(item).partition("=")
        name = name.strip()
        if not sep or name not in EDITABLE:
            raise ValueError(f"--material {item!r}: give NAME=VALUE with NAME one of {', '.join(EDITABLE)}")
        try:
            v = float(value)
        except ValueError:
            raise ValueError(f"--material {item!r}: {value!r} is not a number") from None
        if not 0.0 <= v <= 1.0:
            raise ValueError(f"--material {item!r}: the value must be in [0, 1]")
        out[name] = v
    return out


def relight(forward, inverse, clip: Sample, data_cfg, frames: int, env: np.ndarray | None = None,
            rotate_deg: float = 0.0, materials: dict[str, float] | None = None, where: str = "surface",
            seed: int = 0) -> Relit:
    """The clip relit (module doc). ``env`` (H, W, 3 linear) replaces its env map; ``materials``
    {roughness|metallic: value in [0, 1]} are set on the surface pixels (``where='surface'``, the clip's
    mask) or on every pixel (``'all'``)."""
    if where not in ("surface", "all"):
        raise ValueError(f"where {where!r}: surface or all")
    if clip.env is None or clip.cam_to_env is None:
        raise ValueError(f"clip {clip.key} has no env map and cam_to_env to relight from")
    total = clip.passes["rgb"].shape[0]
    if total < frames:
        raise ValueError(f"clip {clip.key} has {total} frames; {frames} asked for")
    lit = replace(clip, env=np.asarray(env, np.float32) if env is not None else clip.env,
                  cam_to_env=np.einsum("ij,tjk->tik", rotation_z(-rotate_deg), clip.cam_to_env).astype(np.float32))
    v = clip_view(lit, frames, data_cfg.height, data_cfg.width, Centre(), (data_cfg.env_height, data_cfg.env_width))
    t = truth(v)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        latents = inverse(v["rgb"][None], generator=g, output_type="latent")      # {pass: (1, T, 4, h, w)}
        vae = forward.vae
        mask = v["mask"][None].to(vae.device) > 0.5 if where == "surface" else None
        for name, value in (materials or {}).items():
            view = decode_latents(vae, latents[name]).float().clamp(-1, 1)
            edit = torch.full_like(view, 2.0 * value - 1.0)
            view = torch.where(mask.expand_as(view), edit, view) if mask is not None else edit
            latents[name] = encode_frames(vae, view)
        cond = torch.cat([latents[p] for p in FORWARD_CONDITIONS], dim=2)
        rgb = forward(None, v["env"][None], generator=g, gbuffer_latents=cond)[0]
        passes = {p: to_pass_units(p, decode_latents(vae, latents[p]))[0] for p in latents}
    for name, value in (materials or {}).items():  # what was set is exactly the value
        m = t["mask"].numpy()[..., None] if where == "surface" else np.ones_like(passes[name], bool)
        passes[name] = np.where(m, np.float32(value), passes[name]).astype(np.float32)
    start = Centre().integers(0, total - frames + 1)
    return Relit(rgb=rgb, passes=passes, truth=t, metrics=forward_metrics(torch.from_numpy(rgb), t), start=start)


def preview_samples(res: Relit, clip: Sample, key: str, frames: int, env: np.ndarray | None) -> list[Sample]:
    """[the clip's view as ``<clip>-truth``, the relit one as ``key`` (its rgb and the G-buffers it was
    rendered from; ``env``, where given, as its env map)] for dr.shards.preview."""
    from dr.train.sample import _view_sample

    made = dict(res.truth)
    made.update({p: torch.from_numpy(x) for p, x in res.passes.items()})
    made["rgb"] = torch.from_numpy(res.rgb)
    true = _view_sample(f"{clip.key}-truth", res.truth, clip, res.start, frames)
    relit = _view_sample(key, made, clip, res.start, frames)
    return [true, relit if env is None else replace(relit, env=np.asarray(env, np.float32))]


def write_mp4(path, frames: np.ndarray, fps: float) -> None:
    """(T, H, W, 3) display frames in [0, 1] -> an MPEG-4 video (OpenCV's mp4v), written under a
    temporary name and renamed."""
    import os

    import cv2

    path = str(path)
    tmp = path + ".tmp.mp4"
    h, w = frames.shape[1:3]
    writer = cv2.VideoWriter(tmp, cv2.VideoWriter_fourcc(*"mp4v"), float(fps), (w, h))
    if not writer.isOpened():
        raise OSError(f"OpenCV cannot write an mp4 at {tmp}")
    try:
        for f in frames:
            writer.write(np.ascontiguousarray((np.clip(f, 0, 1) * 255 + 0.5).astype(np.uint8)[..., ::-1]))
    finally:
        writer.release()
    os.replace(tmp, path)
