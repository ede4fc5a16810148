"""What a synthetic sample says about itself (DESIGN section 3), from its SceneSpec: the part of
the metadata that a render and a dry run share, and the cameras. No bpy: the dry run builds its
samples with these in the driver's workers, the render worker adds what Blender did."""

from __future__ import annotations

import json

import numpy as np

from dr.scenes.spec import SceneSpec
from dr.shards.schema import PASSES, SCHEMA_VERSION


def spec_assets(spec: SceneSpec) -> list[dict]:
    """Every asset the clip draws on, with its role and sha256."""
    assets = [{"role": "hdri", "id": spec.light.hdri.id, "sha256": spec.light.hdri.sha256},
              {"role": "ground", "id": spec.ground.material.material.id, "sha256": spec.ground.material.material.sha256}]
    for o in spec.objects:
        if o.asset is not None:
            assets.append({"role": f"object:{o.name}", "id": o.asset.id, "sha256": o.asset.sha256})
        m = o.material
        if getattr(m, "type", None) == "pbr":
            assets.append({"role": f"material:{o.name}", "id": m.material.id, "sha256": m.material.sha256})
    return assets


def base_metadata(spec: SceneSpec, run_id: str | None, rendered: list[str], env: dict) -> dict:
    """The spec-derived metadata of a synthetic sample. ``rendered``: the passes it holds (the
    others are marked missing); ``env``: what is said of its env map (with ``provenance``)."""
    return {
        "schema_version": SCHEMA_VERSION,
        "source": "synthetic",
        "clip_id": spec.clip_id,
        "run_id": run_id,
        "seed": spec.seed,
        "index": spec.index,
        "attempt": spec.attempt,
        "spawn_key": list(spec.spawn_key),
        "frames": spec.frames,
        "height": spec.height,
        "width": spec.width,
        "fps": spec.fps,
        "scene_spec": json.loads(spec.to_json()),
        "assets": spec_assets(spec),
        "passes": {name: {"provenance": "rendered" if name in rendered else "missing",
                          "dtype": str(PASSES[name].dtype), "channels": PASSES[name].channels}
                   for name in PASSES},
        "env": env,
    }


def spec_cameras(spec: SceneSpec) -> dict[str, np.ndarray]:
    """The camera members of the sample: c2w (T,4,4), intrinsics (T,3,3), cam_to_env (T,3,3), float32."""
    return {"c2w.npy": np.asarray(spec.camera.c2w, dtype=np.float32),
            "intrinsics.npy": np.asarray(spec.camera.intrinsics, dtype=np.float32),
            "cam_to_env.npy": np.stack([spec.cam_to_env(t) for t in range(spec.frames)]).astype(np.float32)}
