"""Render one SceneSpec into a staged sample (bpy; runs inside the render worker process).

One Cycles render per frame writes a multilayer EXR holding Combined (rgb), Normal and the AOVs
(basecolor, roughness, metallic, depth, coverage); dr.render.passes turns it into the stored
passes. The sample's members are written as files into ``staging/.<key>.partial/`` and the
folder is renamed to ``staging/<key>/`` when every member is there.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import time
from pathlib import Path
from typing import Callable

import numpy as np

from dr.render.metadata import base_metadata, spec_cameras
from dr.render.settings import RenderSettings
from dr.scenes.spec import SceneSpec
from dr.shards.codec import npy_bytes, npy_zst_bytes
from dr.shards.schema import PASSES, pass_suffix

_device_cache: dict[str, object] = {}


def cycles_seed(spec: SceneSpec) -> int:
    """Cycles' seed for frame 0 of the clip (frame t uses this + t), from the clip's seed path."""
    from dr.scenes.rng import stream_key

    ss = np.random.SeedSequence(spec.seed, spawn_key=stream_key(spec.index, spec.attempt, "cycles"))
    return int(ss.generate_state(1)[0] % (2**31 - 100_000))


def _configure(scene, settings: RenderSettings, with_aovs: bool) -> None:
    scene.render.engine = "CYCLES"
    c = scene.cycles
    c.samples = settings.samples
    c.use_adaptive_sampling = settings.adaptive_threshold > 0
    if settings.adaptive_threshold > 0:
        c.adaptive_threshold = settings.adaptive_threshold
    c.max_bounces = settings.max_bounces
    # the total is the limit; the per-kind limits (default 4 diffuse, 4 glossy) must not cut below it
    c.diffuse_bounces = c.glossy_bounces = c.transmission_bounces = settings.max_bounces
    c.volume_bounces = min(c.volume_bounces, settings.max_bounces)
    c.sample_clamp_direct = 0.0
    c.sample_clamp_indirect = settings.clamp_indirect
    c.use_denoising = settings.denoiser == "oidn"
    if c.use_denoising:
        c.denoiser = "OPENIMAGEDENOISE"
        c.denoising_input_passes = "RGB_ALBEDO_NORMAL"
    c.use_animated_seed = False
    scene.render.film_transparent = False
    scene.render.use_persistent_data = True  # the BVH and images survive from frame to frame
    scene.view_settings.view_transform = "Standard"
    vl = scene.view_layers[0]
    vl.use_pass_combined = True
    vl.use_pass_z = False
    vl.use_pass_normal = with_aovs
    vl.pass_alpha_threshold = 0.5  # where the data passes stop at a surface; the AOV taps gate on it
    im = scene.render.image_settings
    im.media_type = "MULTI_LAYER_IMAGE"
    im.file_format = "OPEN_EXR_MULTILAYER"
    im.color_depth = "32"
    im.exr_codec = "NONE"


def render_clip(job: dict, send: Callable[[tuple], None]) -> dict:
    """Render ``job['spec']`` (JSON) with ``job['settings']``; returns the staged sample's folder,
    timings and what was used. Raises RenderError subclasses for deterministic failures."""
    import bpy

    from dr.render.blender_scene import AssetFiles, build_scene
    from dr.render.devices import apply_device, find_device
    from dr.render.environment import load_stored_env
    from dr.render.errors import AssetError, SystemFailure
    from dr.render.exr import LAYERS, read_layers
    from dr.render.passes import frame_passes

    t_start = time.perf_counter()
    spec = SceneSpec.model_validate_json(job["spec"])
    settings = RenderSettings(**job["settings"])
    with_aovs = job.get("with_aovs", True)
    staging = Path(job["staging"])
    key = spec.clip_id
    partial = staging / f".{key}.partial"
    final = staging / key
    for p in (partial, final):
        shutil.rmtree(p, ignore_errors=True)
    partial.mkdir(parents=True)

    bpy.ops.wm.read_factory_settings(use_empty=True)
    if settings.device not in _device_cache:
        _device_cache[settings.device] = find_device(settings.device)
    device = _device_cache[settings.device]
    scene = bpy.context.scene
    apply_device(scene, device, job["threads"])
    _configure(scene, settings, with_aovs)
    t_setup = time.perf_counter()

    files = AssetFiles(Path(job["cache_dir"]) if job.get("cache_dir") else None)
    hdri_path = files.path(spec.light.hdri)
    # the HDRI is decoded by us first: Blender renders a broken image as black or pink without
    # an error, which would put a wrong clip into the dataset instead of quarantining the file
    try:
        env = load_stored_env(hdri_path, spec.light.strength, settings.env_height)
    except OSError as e:
        if e.errno is None:  # a decoder's complaint about the content (PIL's are OSErrors)
            raise AssetError(f"asset {spec.light.hdri.id}: cannot decode the HDRI: {' '.join(str(e).split())[:300]}",
                             asset_id=spec.light.hdri.id) from None
        raise SystemFailure(f"asset {spec.light.hdri.id}: reading the HDRI failed: {e}") from None
    except Exception as e:  # noqa: BLE001 - the bytes are the manifest's (checked): a bad file
        raise AssetError(f"asset {spec.light.hdri.id}: cannot decode the HDRI: {' '.join(str(e).split())[:300]}",
                         asset_id=spec.light.hdri.id) from None
    built = build_scene(spec, files, hdri_path, with_aovs=with_aovs)
    if job.get("save_blend"):
        bpy.ops.wm.save_as_mainfile(filepath=str(job["save_blend"]), copy=True)
    t_import = time.perf_counter()

    seed0 = cycles_seed(spec)
    wanted = tuple(LAYERS) if with_aovs else ("combined",)
    frames: dict[str, list[np.ndarray]] = {name: [] for name in PASSES}
    trace = post = 0.0
    for t in range(spec.frames):
        scene.frame_set(t)
        scene.cycles.seed = seed0 + t
        exr = partial / f"frame_{t:04d}.exr"
        scene.render.filepath = str(exr)
        a = time.perf_counter()
        bpy.ops.render.render(write_still=True)
        b = time.perf_counter()
        layers = read_layers(exr, scene.view_layers[0].name, wanted)
        exr.unlink()
        if with_aovs:
            for name, arr in frame_passes(layers, spec.c2w(t)).items():
                frames[name].append(arr)
        else:
            frames["rgb"].append(layers["combined"][..., :3].astype(np.float16))
        post += time.perf_counter() - b
        trace += b - a
        send(("frame", t, spec.frames))

    a = time.perf_counter()
    cameras = spec_cameras(spec)
    post += time.perf_counter() - a

    a = time.perf_counter()
    sizes = {}
    for name, arrs in frames.items():
        if arrs:
            data = npy_zst_bytes(np.stack(arrs))
            (partial / pass_suffix(name)).write_bytes(data)
            sizes[name] = len(data)
    sizes["env"] = len(data := npy_zst_bytes(env))
    (partial / "env.npy.zst").write_bytes(data)
    for suffix, arr in cameras.items():
        (partial / suffix).write_bytes(npy_bytes(arr))
    t_write = time.perf_counter() - a

    timings = {"setup": t_setup - t_start, "import": t_import - t_setup, "trace": trace, "post": post,
               "write": t_write}
    meta = clip_metadata(spec, settings, device, job, built, env.shape, [n for n, arrs in frames.items() if arrs],
                         seed0, timings, sizes)
    (partial / "json").write_text(json.dumps(meta, indent=1, sort_keys=True))
    os.replace(partial, final)
    return {"key": key, "dir": str(final), "timings": timings, "device": device.describe(),
            "bytes": sizes, "fallbacks": meta["material_fallbacks"],
            "import_mismatches": [c for c in built.import_checks if not c["agrees"]]}


def clip_metadata(spec: SceneSpec, settings: RenderSettings, device, job: dict, built, env_shape, passes,
                  seed0: int, timings: dict, sizes: dict) -> dict:
    """The sample's metadata (DESIGN.md section 3): the spec's part (dr.render.metadata) and what
    Blender did."""
    import bpy

    import dr

    fallbacks = [{"material": r["material"], "reason": r["fallback"]} for r in built.materials if r["fallback"]]
    notes = [{"material": r["material"], "note": n} for r in built.materials for n in r["notes"]]
    env = {"provenance": "rendered", "height": int(env_shape[0]), "width": int(env_shape[1]),
           "hdri": spec.light.hdri.id, "strength": spec.light.strength, "stored": "strength * HDRI, linear"}
    return {
        **base_metadata(spec, job.get("run_id"), passes, env),
        "renderer": {
            "name": "blender-cycles", "blender_version": bpy.app.version_string, "package_version": dr.__version__,
            "device": device.kind, "device_names": list(device.names), "threads": job["threads"],
            "samples": settings.samples, "adaptive_threshold": settings.adaptive_threshold,
            "max_bounces": settings.max_bounces, "clamp_indirect": settings.clamp_indirect,
            "denoiser": settings.denoiser, "cycles_seed": seed0, "cycles_seed_per_frame": "cycles_seed + t",
            "python": platform.python_version(),
        },
        "depth_units": "metres",
        "material_taps": built.materials,
        "material_fallbacks": fallbacks,
        "material_notes": notes,
        "removed_from_assets": built.removed,
        "asset_import_checks": built.import_checks,
        "timings_s": {k: round(v, 4) for k, v in timings.items()},
        "member_bytes": sizes,
    }
