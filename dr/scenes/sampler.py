"""`sample_scene`: the DiffusionRenderer data recipe as a pure function of (config, manifest,
seed, index, attempt).

A ground plane with a PBR material; manifest objects normalised to a random size and resting on
the plane; random cubes, spheres and cylinders with a PBR set or uniform Principled values; an
HDRI with random strength and rotation; a camera orbiting with oscillation and jitter; the
world (light) rotating; objects spinning and sliding on the plane.

Plausibility holds at every frame, by construction and by rejection:

- every object only turns about +Z and slides on the plane, so it always stays inside an
  upright bounding cylinder (radius = its footprint's reach from its axis) standing on z = 0:
  nothing sinks into the plane, and two objects whose cylinders keep ``gap_m`` apart cannot
  interpenetrate;
- the camera stays above ``min_height_m`` and at least ``clearance_m`` outside every cylinder;
- every object's centre projects inside the image (``view_margin`` from the border), in front
  of the camera, and the line of sight to its centre or its top is not blocked by another
  object's cylinder.

A config that cannot be met within ``objects.max_attempts`` layouts raises UserError.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

import numpy as np

from dr.assets_manifest.manifest import AssetRecord, Manifest
from dr.config import config_hash
from dr.errors import UserError
from dr.scenes.config import SceneConfig
from dr.scenes.geometry import affine, intrinsics, look_at, project, rot_y, rot_z, segments_hit_cylinder
from dr.scenes.rng import clip_streams
from dr.scenes.spec import (
    AssetMaterial, AssetRef, Camera, Ground, Light, Motion, Orbit, PrincipledMaterial, SceneObject, SceneSpec,
    TextureMaterial,
)
from dr.srgb import srgb_to_linear

PLACEMENT_TRIES = 60  # positions tried per object before the layout starts over
CAMERA_TRIES = 40  # camera paths tried per layout before the layout starts over
NEAR_M = 0.05  # an object's centre must be this far in front of the camera


@dataclass
class _Obj:
    shape: str
    asset: AssetRecord | None
    size: float
    radius: float  # bounding cylinder
    height: float
    normalization: np.ndarray  # 4x4
    start: np.ndarray | None = None  # (2,)
    end: np.ndarray | None = None
    yaw0: float = 0.0
    sweep: float = 0.0

    def xy(self, tau: np.ndarray) -> np.ndarray:
        """(T, 2) footprint centre over normalised time tau in [0, 1]."""
        return self.start[None, :] + (self.end - self.start)[None, :] * tau[:, None]

    def yaw(self, tau: np.ndarray) -> np.ndarray:
        return self.yaw0 + self.sweep * tau


def _tau(frames: int) -> np.ndarray:
    return np.linspace(0.0, 1.0, frames) if frames > 1 else np.zeros(1)


def _uniform(rng: np.random.Generator, r: tuple[float, float]) -> float:
    return float(rng.uniform(r[0], r[1])) if r[1] > r[0] else float(r[0])


def _ref(rec: AssetRecord) -> AssetRef:
    return AssetRef(id=rec.id, sha256=rec.sha256, uri=rec.uri, files=dict(rec.files))


def _rnd(a, nd: int = 6):
    """Round for the JSON (micrometres, 1e-6 of a matrix entry): compact, and ulp-level
    differences between machines' libm don't reach the bytes."""
    return np.round(np.asarray(a, dtype=np.float64), nd).tolist()


# --- objects -------------------------------------------------------------------------------

def _asset_obj(rng: np.random.Generator, rec: AssetRecord, size_range) -> _Obj:
    (lo, hi) = (np.asarray(rec.stats["bounds_zup"][0]), np.asarray(rec.stats["bounds_zup"][1]))
    longest = float((hi - lo).max())
    size = _uniform(rng, size_range)
    k = size / longest
    centre = np.array([(lo[0] + hi[0]) / 2, (lo[1] + hi[1]) / 2, lo[2]])
    norm = affine(scale=(k, k, k)) @ affine(translation=-centre)
    return _Obj("asset", rec, size, float(rec.stats["radius_xy"]) * k, float(hi[2] - lo[2]) * k, norm)


def _primitive_obj(rng: np.random.Generator, size_range) -> _Obj:
    shape = ("cube", "sphere", "cylinder")[int(rng.integers(3))]
    s = _uniform(rng, size_range)
    if shape == "cube":
        sides = rng.uniform(0.4, 1.0, 3)
        a, b, c = sides / sides.max() * s
        norm = affine(translation=(0, 0, c / 2), scale=(a / 2, b / 2, c / 2))
        return _Obj(shape, None, s, float(np.hypot(a / 2, b / 2)), float(c), norm)
    if shape == "sphere":
        r = s / 2
        return _Obj(shape, None, s, r, s, affine(translation=(0, 0, r), scale=(r, r, r)))
    ratio = float(rng.uniform(0.3, 1.0))
    tall = rng.random() < 0.5
    length, diameter = (s, s * ratio) if tall else (s * ratio, s)
    rho, half = diameter / 2, length / 2
    if rng.random() < 0.7:  # upright
        return _Obj(shape, None, s, rho, length, affine(translation=(0, 0, half), scale=(rho, rho, half)))
    norm = affine(rotation=rot_y(np.pi / 2), translation=(0, 0, rho)) @ affine(scale=(rho, rho, half))
    return _Obj(shape, None, s, float(np.hypot(half, rho)), diameter, norm)


def _in_disc(rng: np.random.Generator, radius: float) -> np.ndarray:
    r = radius * np.sqrt(rng.random())
    a = rng.uniform(0, 2 * np.pi)
    return np.array([r * np.cos(a), r * np.sin(a)])


def _clear(o: _Obj, placed: list[_Obj], tau: np.ndarray, gap: float) -> bool:
    p = o.xy(tau)
    for q in placed:
        d = np.linalg.norm(p - q.xy(tau), axis=1)
        if (d < o.radius + q.radius + gap).any():
            return False
    return True


def _layout(rng: np.random.Generator, cfg: SceneConfig, assets: list[AssetRecord], tau: np.ndarray) -> list[_Obj] | None:
    """Draw objects and place them without overlap at any frame; None if placement failed."""
    oc = cfg.objects
    n_assets = int(rng.integers(oc.assets_per_scene[0], oc.assets_per_scene[1] + 1)) if assets else 0
    n_prims = int(rng.integers(oc.primitives_per_scene[0], oc.primitives_per_scene[1] + 1))
    if n_assets + n_prims == 0:  # a clip needs an object: take one from whichever kind the config allows
        if assets and oc.assets_per_scene[1] > 0:
            n_assets = 1
        else:
            n_prims = 1
    picks = rng.choice(len(assets), size=n_assets, replace=n_assets > len(assets)) if n_assets else []
    objs = [_asset_obj(rng, assets[int(i)], oc.asset_size_m) for i in picks]
    objs += [_primitive_obj(rng, oc.primitive_size_m) for _ in range(n_prims)]
    placed: list[_Obj] = []
    for o in sorted(objs, key=lambda o: -o.radius):  # big ones first pack better
        for _ in range(PLACEMENT_TRIES):
            o.start = _in_disc(rng, oc.placement_radius_m)
            o.end = o.start.copy()
            if rng.random() < oc.p_translate:
                a = rng.uniform(0, 2 * np.pi)
                o.end = o.start + _uniform(rng, oc.translation_m) * np.array([np.cos(a), np.sin(a)])
            o.yaw0 = float(rng.uniform(0, 2 * np.pi))
            o.sweep = float(np.radians(_uniform(rng, oc.rotation_deg))) if rng.random() < oc.p_rotate else 0.0
            if np.linalg.norm(o.end) <= oc.placement_radius_m and _clear(o, placed, tau, oc.gap_m):
                placed.append(o)
                break
        else:
            return None
    return objs  # in draw order: assets, then primitives


# --- camera --------------------------------------------------------------------------------

def _bounding_sphere(objs: list[_Obj], tau: np.ndarray) -> tuple[np.ndarray, float]:
    xy = np.concatenate([o.xy(tau) for o in objs])
    rad = np.concatenate([np.full(len(tau), o.radius) for o in objs])
    lo, hi = (xy - rad[:, None]).min(0), (xy + rad[:, None]).max(0)
    top = max(o.height for o in objs)
    c = np.array([(lo[0] + hi[0]) / 2, (lo[1] + hi[1]) / 2, top / 2])
    r = 0.0
    for o in objs:
        dh = np.linalg.norm(o.xy(tau) - c[:2], axis=1).max() + o.radius
        dv = max(abs(o.height - c[2]), c[2])
        r = max(r, float(np.hypot(dh, dv)))
    return c, r


def _camera_path(rng: np.random.Generator, cfg: SceneConfig, centre: np.ndarray, radius: float, frames: int):
    cc = cfg.camera
    fov = _uniform(rng, cc.fov_deg)
    W, H = cfg.width, cfg.height
    half_small = np.arctan(np.tan(np.radians(fov) / 2) * min(W, H) / max(W, H))
    dist = _uniform(rng, cc.distance_factor) * radius / np.sin(half_small)
    target = centre + rng.uniform(-cc.target_offset_m, cc.target_offset_m, 3)
    target[2] = max(target[2], 0.0)
    el0 = _uniform(rng, cc.elevation_deg)
    az0 = float(rng.uniform(0, 360))
    sweep = _uniform(rng, cc.azimuth_sweep_deg) if rng.random() < cc.p_orbit else 0.0
    osc = _uniform(rng, cc.oscillation_deg) if rng.random() < cc.p_oscillation else 0.0
    osc_phase = float(rng.uniform(0, 2 * np.pi))
    # hand-held shake: three random sinusoids per axis, 0.5 to 3 cycles per clip
    freq = rng.uniform(0.5, 3.0, (3, 3))
    phase = rng.uniform(0, 2 * np.pi, (3, 3))
    t = np.arange(frames) / max(frames, 1)
    tau = _tau(frames)
    az = az0 + sweep * tau + osc * np.sin(2 * np.pi * t + osc_phase)
    el = np.clip(el0 + osc * np.cos(2 * np.pi * t + osc_phase), 1.0, 85.0)
    shake = cc.shake_m / 3 * np.sin(2 * np.pi * freq[None] * t[:, None, None] + phase[None]).sum(axis=2)
    a, e = np.radians(az), np.radians(el)
    eye = target[None] + dist * np.stack([np.cos(e) * np.cos(a), np.cos(e) * np.sin(a), np.sin(e)], -1) + shake
    c2w = look_at(eye, target)
    K = intrinsics(W, H, fov)
    orbit = Orbit(target=tuple(_rnd(target)), radius_m=float(_rnd(dist)), elevation_deg=float(_rnd(el0)),
                  azimuth_start_deg=float(_rnd(az0)), azimuth_sweep_deg=float(_rnd(sweep)),
                  oscillation_deg=float(_rnd(osc)), shake_m=cc.shake_m)
    return fov, c2w, K, orbit


def _camera_ok(cfg: SceneConfig, objs: list[_Obj], c2w: np.ndarray, K: np.ndarray, tau: np.ndarray) -> bool:
    """All frames at once: height, clearance, every object's centre in the image, and a line
    of sight to its centre or its top that no other object's cylinder blocks."""
    cc = cfg.camera
    W, H = cfg.width, cfg.height
    if not np.isfinite(c2w).all():
        return False
    eye = c2w[:, :3, 3]  # (T, 3)
    if (eye[:, 2] < cc.min_height_m).any():
        return False
    xys = [o.xy(tau) for o in objs]  # (T, 2) each
    for o, xy in zip(objs, xys):
        near = np.linalg.norm(eye[:, :2] - xy, axis=1) < o.radius + cc.clearance_m
        if (near & (eye[:, 2] < o.height + cc.clearance_m)).any():
            return False
    # every object's centre at every frame: (T, n, 3)
    centres = np.stack([np.column_stack([xy, np.full(len(tau), o.height / 2)]) for o, xy in zip(objs, xys)], axis=1)
    col, row, depth = project(centres, c2w, K)
    if (depth < NEAR_M).any():
        return False
    mx, my = cc.view_margin * W, cc.view_margin * H
    if (col < mx).any() or (col > W - mx).any() or (row < my).any() or (row > H - my).any():
        return False
    n, T = len(objs), len(tau)
    if n < 2:
        return True
    # lines of sight from the eye to object i's centre and top (k), against every other
    # object j's cylinder, every frame: one vectorised test of shape (pairs, 2, T)
    XY = np.stack(xys)  # (n, T, 2)
    height = np.array([o.height for o in objs])
    radius = np.array([o.radius for o in objs])
    I, J = (x.ravel() for x in np.nonzero(~np.eye(n, dtype=bool)))
    P = len(I)
    z = np.array([0.5, 0.9])[None, :, None] * height[I][:, None, None]  # (P, 2, 1)
    target = np.concatenate([np.broadcast_to(XY[I][:, None], (P, 2, T, 2)),
                             np.broadcast_to(z[..., None], (P, 2, T, 1))], axis=-1)
    hit = segments_hit_cylinder(np.broadcast_to(eye, (P, 2, T, 3)).reshape(-1, 3), target.reshape(-1, 3),
                                np.broadcast_to(XY[J][:, None], (P, 2, T, 2)).reshape(-1, 2),
                                np.repeat(radius[J], 2 * T), np.repeat(height[J], 2 * T)).reshape(P, 2, T)
    blocked = np.zeros((n, 2, T), dtype=bool)
    np.logical_or.at(blocked, I, hit)
    return bool((~blocked).any(axis=1).all())


# --- materials and light -------------------------------------------------------------------

def _primitive_material(rng: np.random.Generator, cfg: SceneConfig, materials: list[AssetRecord]):
    mc = cfg.materials
    if materials and rng.random() < mc.p_primitive_pbr:
        rec = materials[int(rng.integers(len(materials)))]
        return TextureMaterial(material=_ref(rec), tile_m=float(_rnd(_uniform(rng, mc.primitive_tile_m))),
                               rotation_deg=float(_rnd(rng.uniform(0, 360))))
    metallic = min(abs(float(rng.normal(0.0, mc.metallic_sigma))), 1.0)
    if rng.random() < 0.5:
        metallic = 1.0 - metallic
    roughness = _uniform(rng, mc.roughness)
    srgb = rng.uniform(*(mc.metal_srgb if metallic > 0.5 else mc.dielectric_srgb), 3)
    return PrincipledMaterial(basecolor=tuple(_rnd(srgb_to_linear(srgb))), roughness=float(_rnd(roughness)), metallic=float(_rnd(metallic)))


def _usable(manifest: Manifest, kind: str, excluded: frozenset[str] = frozenset()) -> list[AssetRecord]:
    recs = manifest.usable(kind)
    if excluded:
        recs = [r for r in recs if r.id not in excluded]
    if kind == "object":
        recs = [r for r in recs if "bounds_zup" in r.stats and "radius_xy" in r.stats]
    return recs


def check_manifest(cfg: SceneConfig, manifest: Manifest, excluded: frozenset[str] = frozenset()) -> None:
    """UserError unless the manifest (without the ``excluded`` asset ids) can feed this recipe."""
    where = (f" {manifest.path}" if manifest.path else "") + (f" without the {len(excluded)} excluded assets"
                                                               if excluded else "")
    if cfg.objects.assets_per_scene[0] > 0 and not _usable(manifest, "object", excluded):
        raise UserError(f"manifest{where} has no usable object (scene.objects.assets_per_scene asks for at least "
                        f"{cfg.objects.assets_per_scene[0]}); add objects or set scene.objects.assets_per_scene=[0,3]")
    if cfg.objects.primitives_per_scene[1] == 0 and not _usable(manifest, "object", excluded):
        raise UserError(f"manifest{where} has no usable object and scene.objects.primitives_per_scene allows no "
                        f"primitives; add objects or allow primitives")
    if not _usable(manifest, "material", excluded):
        raise UserError(f"manifest{where} has no usable material for the ground plane; add a --materials folder")
    if not _usable(manifest, "hdri", excluded):
        raise UserError(f"manifest{where} has no usable HDRI; add an --hdris folder")


def clip_id(seed: int, index: int) -> str:
    return f"s{seed}_{index:08d}"


def sample_scene(config: SceneConfig, manifest: Manifest, seed: int, index: int, attempt: int = 0,
                 excluded: Iterable[str] = ()) -> SceneSpec:
    """The SceneSpec of clip ``index`` (re-sample ``attempt``) of a run with ``seed``, drawn from
    ``manifest`` without the assets ``excluded`` (those that failed the slot's earlier attempts).

    Pure: the same arguments give the same spec, byte for byte, in any process and order. The
    spec records the manifest's own digest (that of the run's manifest.jsonl) and the exclusions.
    Raises UserError if the manifest lacks what the recipe needs or the config cannot be met.
    """
    if seed < 0 or index < 0 or attempt < 0:
        raise UserError("seed, index and attempt must be non-negative integers")
    ex = frozenset(excluded)
    check_manifest(config, manifest, ex)
    assets, materials, hdris = (_usable(manifest, k, ex) for k in ("object", "material", "hdri"))
    rng = clip_streams(seed, index, attempt)
    T = config.frames
    tau = _tau(T)

    for _ in range(config.objects.max_attempts):
        objs = _layout(rng["objects"], config, assets, tau)
        if objs is None:
            continue
        centre, radius = _bounding_sphere(objs, tau)
        for _ in range(CAMERA_TRIES):
            fov, c2w, K, orbit = _camera_path(rng["camera"], config, centre, radius, T)
            if _camera_ok(config, objs, c2w, K, tau):
                break
        else:
            continue
        break
    else:
        raise UserError(
            f"scene config cannot be met: no layout and camera path passed the checks in "
            f"{config.objects.max_attempts} attempts (clip {index}); make objects smaller or fewer, "
            f"or widen scene.objects.placement_radius_m or scene.camera ranges")

    mrng = rng["materials"]
    ground_rec = materials[int(mrng.integers(len(materials)))]
    ground = Ground(size_m=config.ground.size_m, material=TextureMaterial(
        material=_ref(ground_rec), tile_m=float(_rnd(_uniform(mrng, config.ground.tile_m))),
        rotation_deg=float(_rnd(mrng.uniform(0, 360)))))

    scene_objects = []
    counts: dict[str, int] = {}
    for o in objs:
        material = AssetMaterial() if o.shape == "asset" else _primitive_material(mrng, config, materials)
        n = counts.get(o.shape, 0)
        counts[o.shape] = n + 1
        xy, yaw = o.xy(tau), o.yaw(tau)
        transforms = [affine(rotation=rot_z(yaw[t]), translation=(xy[t, 0], xy[t, 1], 0.0)) @ o.normalization
                      for t in range(T)]
        scene_objects.append(SceneObject(
            name=f"{o.shape}_{n}", shape=o.shape, asset=_ref(o.asset) if o.asset else None,
            category=o.asset.category if o.asset else o.shape, material=material,
            size_m=float(_rnd(o.size)), footprint_radius_m=float(_rnd(o.radius)), height_m=float(_rnd(o.height)),
            normalization=_rnd(o.normalization),
            motion=Motion(start_xy=tuple(_rnd(o.start)), end_xy=tuple(_rnd(o.end)),
                          yaw_start_deg=float(_rnd(np.degrees(o.yaw0))), yaw_sweep_deg=float(_rnd(np.degrees(o.sweep)))),
            transforms=[_rnd(m) for m in transforms]))

    lrng = rng["light"]
    lc = config.light
    hdri = hdris[int(lrng.integers(len(hdris)))]
    strength = _uniform(lrng, lc.strength)
    rot0 = float(lrng.uniform(0, 360))
    rsweep = _uniform(lrng, lc.rotation_sweep_deg) if lrng.random() < lc.p_rotate else 0.0
    light = Light(hdri=_ref(hdri), strength=float(_rnd(strength)), rotation_start_deg=float(_rnd(rot0)),
                  rotation_sweep_deg=float(_rnd(rsweep)),
                  env_to_world=[_rnd(rot_z(np.radians(rot0 + rsweep * tau[t]))) for t in range(T)])

    return SceneSpec(
        clip_id=clip_id(seed, index), seed=seed, index=index, attempt=attempt, spawn_key=[index, attempt],
        scene_config_hash=config_hash(config), manifest_sha256=manifest.digest(), excluded_assets=sorted(ex),
        width=config.width, height=config.height, frames=T, fps=config.fps,
        camera=Camera(fov_deg=float(_rnd(fov)), orbit=orbit, c2w=[_rnd(m) for m in c2w],
                      intrinsics=[_rnd(K) for _ in range(T)]),
        light=light, ground=ground, objects=scene_objects)
