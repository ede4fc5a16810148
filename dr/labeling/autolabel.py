"""Labels of real clips (DESIGN section 2, "Real clips"): the inverse renderer's five passes and
DiffusionLight's lighting, as one shard sample.

Models are loaded once per process (``models``) and kept for every later clip the process labels:
the labelling tasks of a run run in long-lived worker processes, so a process loads its weights
once. The lighting is estimated once per video, from its middle frame at the resolution of the
image folder used (undistorted like the clips, not cropped), and shared by its segments through
cam_to_env = M R_ref^T R_t.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np

from dr.labeling.chrome_ball import M_CAM_TO_ENV
from dr.labeling.dl3dv import Clip, Scene, segment_clip
from dr.shards.schema import PASSES, SCHEMA_VERSION

LABELLED = ("basecolor", "roughness", "metallic", "normal", "depth")
DEPTH_FLOOR = 1e-3  # relative depth is positive: the nearest estimate is floored here

_models: dict = {}


@dataclass
class Models:
    inverse: object | None  # an InverseRendererPipeline
    painter: object | None  # a dr.models.light.BallPainter
    device: str
    dtype: str


def models(inverse: str | None, light: str | None, device: str, threads: int | None = None,
           cache_dir: str | None = None) -> Models:
    """This process's models for (inverse, light, device), loaded on first use."""
    import torch

    key = (inverse, light, device)
    if _models.get("key") == key:
        return _models["models"]
    _models.clear()
    if threads and device == "cpu":
        torch.set_num_threads(int(threads))
    dtype = torch.float16 if device.startswith("cuda") else torch.float32
    inv = painter = None
    if inverse is not None:
        from dr.models.pipelines import load_renderer

        inv = load_renderer("inverse", inverse).to(device, dtype)
    if light is not None:
        from dr.models.light import BallPainter

        painter = BallPainter.from_folder(light, device=device, dtype=dtype, cache_dir=cache_dir)
    m = Models(inv, painter, device, str(dtype).removeprefix("torch."))
    _models.update(key=key, models=m)
    return m


def ref_frame(scene: Scene) -> int:
    """The frame a video's lighting is estimated from: its middle one."""
    return len(scene.frames) // 2


def estimate_scene_light(painter, scene: Scene, light: dict):
    """DiffusionLight on the scene's reference frame (``light``: the config's light section)."""
    from dr.labeling.light import estimate_light
    from dr.models.light import PaintSettings

    hf, wf = round(scene.camera.h / scene.factor), round(scene.camera.w / scene.factor)
    frame = segment_clip(scene, ref_frame(scene), 1, 1, hf, wf)
    settings = PaintSettings(**{k: (tuple(v) if k == "evs" else v) for k, v in light.items()
                                if k in PaintSettings.__dataclass_fields__})
    return estimate_light(painter, frame.rgb[0].astype(np.float32), frame.K[0].astype(np.float64), settings,
                          light["env_height"], light["unwrap"])


def cam_to_env(clip: Clip, scene: Scene) -> np.ndarray:
    """(T, 3, 3) float32: M R_ref^T R_t, the reference being the video's middle frame."""
    R_ref = np.asarray(scene.frames[ref_frame(scene)].c2w, dtype=np.float64)[:3, :3]
    R = np.asarray(clip.c2w, dtype=np.float64)[:, :3, :3]
    return (M_CAM_TO_ENV @ R_ref.T @ R).astype(np.float32)


def inverse_passes(pipe, rgb: np.ndarray, inverse: dict, seed: int) -> dict[str, np.ndarray]:
    """The five passes of a clip ``rgb`` (T, H, W, 3) linear, in DESIGN's units and dtypes; the display view
    the renderer was trained on (dr.shards.views.rgb_display) goes in."""
    import torch

    from dr.shards.views import rgb_display

    view = torch.from_numpy(rgb_display(rgb.astype(np.float32)) * 2.0 - 1.0).permute(0, 3, 1, 2)[None]
    gen = torch.Generator("cpu").manual_seed(int(seed))
    out = pipe(view.to(pipe.unet.dtype), passes=LABELLED, num_inference_steps=inverse.get("steps"), generator=gen,
               window=inverse.get("window"), overlap=inverse["overlap"], carry=inverse["carry"])
    passes = {}
    for name in LABELLED:
        x = out[name][0]
        if name == "normal":
            x = x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-6)
        elif name == "depth":
            x = np.clip(x, DEPTH_FLOOR, 1.0)
        else:
            x = np.clip(x, 0.0, 1.0)
        passes[name] = x.astype(PASSES[name].dtype)
    return passes


def sample_members(key: str, run_id: str, clip: Clip, scene: Scene, passes: dict | None, env: np.ndarray | None,
                   labelling: dict, extra: dict) -> dict[str, bytes]:
    """The shard members of one real clip (DESIGN section 3, source real). ``passes``/``env`` None:
    not labelled (a dry run: the clip's rgb and cameras only)."""
    from dr.shards.codec import npy_bytes, npy_zst_bytes
    from dr.shards.schema import pass_suffix

    T, H, W = clip.rgb.shape[:3]
    prov = {"rgb": "captured", "mask": "missing", **{p: "estimated" if passes else "missing" for p in LABELLED}}
    meta = {
        "schema_version": SCHEMA_VERSION, "source": "real", "clip_id": key, "run_id": run_id,
        "frames": int(T), "height": int(H), "width": int(W),
        "source_video": {"scene": scene.id, "image_dir": scene.image_dir.name, "factor": scene.factor,
                         "start": clip.start, "frames": clip.frames, "portrait": scene.portrait},
        "world": "source", "depth_kind": "relative", "labelling": labelling,
        "passes": {n: {"provenance": prov[n], "dtype": str(PASSES[n].dtype), "channels": PASSES[n].channels}
                   for n in PASSES},
        "env": ({"provenance": "estimated", "height": int(env.shape[0]), "width": int(env.shape[1]),
                 "frame": "reference camera, Z up (DESIGN section 2)",
                 "reference_frame": scene.frames[ref_frame(scene)].name} if env is not None
                else {"provenance": "missing"}),
        **extra,
    }
    members = {"json": json.dumps(meta, sort_keys=True).encode(), pass_suffix("rgb"): npy_zst_bytes(clip.rgb)}
    if passes:
        for name in LABELLED:
            members[pass_suffix(name)] = npy_zst_bytes(passes[name])
        members[pass_suffix("mask")] = npy_zst_bytes(np.ones((T, H, W, 1), np.uint8))
    if env is not None:
        members["env.npy.zst"] = npy_zst_bytes(np.clip(env, 0.0, 65504.0).astype(np.float16))
    members["c2w.npy"] = npy_bytes(clip.c2w.astype(np.float32))
    members["intrinsics.npy"] = npy_bytes(clip.K.astype(np.float32))
    members["cam_to_env.npy"] = npy_bytes(cam_to_env(clip, scene))
    return members
