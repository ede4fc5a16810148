from __future__ import annotations

import json
import os
import subprocess
import sys
from functools import lru_cache

import numpy as np
import pytest
import trimesh

from dr.assets_manifest.manifest import Manifest
from dr.assets_manifest.resolve import resolve_uri
from dr.config import resolve_config
from dr.errors import UserError
from dr.scenes.config import SceneConfig, ScenesSampleConfig
from dr.scenes.geometry import project
from dr.scenes.sampler import sample_scene

GLTF_TO_ZUP = np.array([[1, 0, 0], [0, 0, -1], [0, 1, 0]], dtype=np.float64)


def paper() -> SceneConfig:
    return resolve_config(ScenesSampleConfig, preset="paper").scene


def test_same_inputs_same_bytes_different_index_different_spec(builtin_manifest):
    cfg = paper()
    a = sample_scene(cfg, builtin_manifest, 7, 3).to_json()
    assert a == sample_scene(cfg, builtin_manifest, 7, 3).to_json()
    assert a != sample_scene(cfg, builtin_manifest, 7, 4).to_json()
    assert a != sample_scene(cfg, builtin_manifest, 8, 3).to_json()
    assert a != sample_scene(cfg, builtin_manifest, 7, 3, attempt=1).to_json()


def test_bytes_are_the_same_in_another_process_in_reverse_order(builtin_manifest):
    cfg = paper()
    here = [sample_scene(cfg, builtin_manifest, 11, k).to_json() for k in range(12)]
    code = (
        "import sys, json; from dr.assets_manifest.manifest import load_manifest; "
        "from dr.config import resolve_config; from dr.scenes.config import ScenesSampleConfig; "
        "from dr.scenes.sampler import sample_scene; "
        f"m = load_manifest({str(builtin_manifest.path)!r}); cfg = resolve_config(ScenesSampleConfig).scene; "
        "out = {k: sample_scene(cfg, m, 11, k).to_json() for k in reversed(range(12))}; "
        "print(json.dumps([out[k] for k in range(12)]))"
    )
    there = json.loads(subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True,
                                      env={**os.environ, "PYTHONHASHSEED": "999"}).stdout)
    assert there == here


def test_named_streams_are_independent(builtin_manifest):
    """Changing what the light stream draws leaves camera, objects and materials untouched."""
    base = paper()
    other = resolve_config(ScenesSampleConfig, sets=["scene.light.strength=[2.0, 3.0]",
                                                     "scene.light.p_rotate=1.0"]).scene
    for k in range(5):
        a = json.loads(sample_scene(base, builtin_manifest, 0, k).to_json())
        b = json.loads(sample_scene(other, builtin_manifest, 0, k).to_json())
        assert a["camera"] == b["camera"] and a["objects"] == b["objects"] and a["ground"] == b["ground"]
        assert a["light"]["hdri"] == b["light"]["hdri"]
        assert 2.0 <= b["light"]["strength"] <= 3.0


def test_poses_follow_the_conventions(builtin_manifest):
    cfg = paper()
    for k in range(10):
        spec = sample_scene(cfg, builtin_manifest, 1, k)
        target = np.asarray(spec.camera.orbit.target)
        for t in range(spec.frames):
            c2w, K = spec.c2w(t), spec.K(t)
            R = c2w[:3, :3]
            assert np.allclose(R.T @ R, np.eye(3), atol=1e-5) and np.linalg.det(R) == pytest.approx(1, abs=1e-5)
            assert np.allclose(c2w[3], [0, 0, 0, 1])
            # the camera looks at its target: it projects to the principal point (W/2, H/2)
            col, row, depth = project(target[None], c2w, K)
            assert (col[0], row[0]) == pytest.approx((spec.width / 2, spec.height / 2), abs=1e-3) and depth[0] > 0
            # +y of the camera points up in the world (no roll): up vector has positive z
            assert R[2, 1] > 0
            # the field of view across the image is the spec's
            half = np.degrees(np.arctan(spec.width / 2 / K[0, 0]))
            assert 2 * half == pytest.approx(spec.camera.fov_deg, abs=1e-4)
            E = np.asarray(spec.light.env_to_world[t])
            assert np.allclose(E.T @ E, np.eye(3), atol=1e-5)
            assert np.allclose(spec.cam_to_env(t), E.T @ R, atol=1e-9)


# --- plausibility with the real meshes -----------------------------------------------------

@lru_cache(maxsize=None)
def _asset_mesh(uri: str) -> trimesh.Trimesh:
    mesh = trimesh.load(str(resolve_uri(uri)), force="scene", process=False).to_geometry()
    return trimesh.Trimesh(np.asarray(mesh.vertices) @ GLTF_TO_ZUP.T, mesh.faces, process=False)


@lru_cache(maxsize=None)
def _primitive_mesh(shape: str) -> trimesh.Trimesh:
    if shape == "cube":
        return trimesh.creation.box(extents=(2, 2, 2))
    if shape == "sphere":
        return trimesh.creation.icosphere(subdivisions=3, radius=1.0)
    return trimesh.creation.cylinder(radius=1.0, height=2.0, sections=64)


def _mesh(obj) -> trimesh.Trimesh:
    return _asset_mesh(obj.asset.uri) if obj.shape == "asset" else _primitive_mesh(obj.shape)


def _check_plausible(spec, tol=1e-5):
    """Independent of the sampler's bounding cylinders: the meshes themselves, per frame."""
    # FCL takes rigid transforms only: bake each object's (scaling) normalisation into its mesh,
    # then move it by transforms[t] @ normalization^-1, which must be rigid
    manager = trimesh.collision.CollisionManager()
    meshes, rests = [], []
    for i, o in enumerate(spec.objects):
        m = _mesh(o)
        N = np.asarray(o.normalization)
        rest = trimesh.Trimesh(m.vertices @ N[:3, :3].T + N[:3, 3], m.faces, process=False)
        meshes.append(m)
        rests.append(rest)
        manager.add_object(str(i), rest)
    # test points for visibility: the hull's vertices and a subset of all vertices (real surface points)
    probes = [np.unique(np.vstack([m.convex_hull.vertices, m.vertices[:: max(1, len(m.vertices) // 400)]]), axis=0)
              for m in meshes]
    for t in range(spec.frames):
        c2w, K = spec.c2w(t), spec.K(t)
        eye = c2w[:3, 3]
        assert eye[2] > 0.1, "camera below or on the plane"
        for i, (o, m, pts) in enumerate(zip(spec.objects, meshes, probes)):
            M = np.asarray(o.transforms[t])
            motion = M @ np.linalg.inv(np.asarray(o.normalization))
            assert np.allclose(motion[:3, :3].T @ motion[:3, :3], np.eye(3), atol=1e-4), "motion is not rigid"
            assert abs(motion[2, 3]) < 1e-5 and np.allclose(motion[2, :3], [0, 0, 1], atol=1e-5), "motion leaves the plane"
            manager.set_transform(str(i), motion)
            world = pts @ M[:3, :3].T + M[:3, 3]
            assert world[:, 2].min() > -tol, f"{o.name} sinks into the plane at frame {t}"
            col, row, depth = project(world, c2w, K)
            inside = (depth > 0.01) & (col >= 0) & (col < spec.width) & (row >= 0) & (row < spec.height)
            assert inside.any(), f"{o.name} out of view at frame {t}"
            # the camera is outside the object: outside its own bounding box, mapped to world
            local = np.linalg.solve(M, np.append(eye, 1.0))[:3]
            lo, hi = m.bounds
            assert not ((local > lo) & (local < hi)).all(), f"camera inside {o.name} at frame {t}"
        hit, pairs = manager.in_collision_internal(return_names=True)
        assert not hit, f"objects {sorted(pairs)} interpenetrate at frame {t} of {spec.clip_id}"


def _check_clips(manifest_path: str, seed: int, indices: range) -> tuple[list[str], list[int]]:
    """Sample and check clips; return (failures, object counts). Runs in a worker process."""
    from dr.assets_manifest.manifest import load_manifest

    manifest, cfg = load_manifest(manifest_path), paper()
    failures, counts = [], []
    for k in indices:
        spec = sample_scene(cfg, manifest, seed, k)
        counts.append(len(spec.objects))
        try:
            _check_plausible(spec)
        except AssertionError as e:
            failures.append(f"clip {k}: {str(e).splitlines()[0]}")
    return failures, counts


@pytest.mark.parametrize("n", [300, pytest.param(1000, marks=pytest.mark.slow)])
def test_scenes_are_physically_plausible(builtin_manifest, n):
    """``n`` paper-preset clips (24 frames each), every frame checked with the real meshes in
    trimesh's FCL collision manager; split over the CPUs (BVH builds dominate the time: 0.1 s a clip,
    so 1,000 take about 1.5 minutes on 2 cores: the default run checks 300, `make test-all` 1,000)."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    workers = max(1, min(4, os.cpu_count() or 1))
    chunks = [range(i, n, workers) for i in range(workers)]
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("fork")) as pool:
        results = list(pool.map(_check_clips, [str(builtin_manifest.path)] * workers, [2024] * workers, chunks))
    failures = [f for fs, _ in results for f in fs]
    counts = [c for _, cs in results for c in cs]
    assert not failures, f"{len(failures)} implausible clips, e.g. {failures[:3]}"
    assert len(counts) == n and max(counts) >= 5 and min(counts) <= 2


def _ray_hits(origin: np.ndarray, targets: np.ndarray, tris: np.ndarray) -> np.ndarray:
    """Möller-Trumbore: does the segment origin -> targets[k] cross any triangle (F, 3, 3)
    strictly between its ends? (K,) bool."""
    d = targets - origin  # (K, 3): t in (0, 1) lies between the camera and the point
    hit = np.zeros(len(targets), dtype=bool)
    for chunk in np.array_split(tris, max(1, len(tris) // 4000)):
        v0, e1, e2 = chunk[:, 0], chunk[:, 1] - chunk[:, 0], chunk[:, 2] - chunk[:, 0]
        p = np.cross(d[:, None, :], e2[None])  # (K, F, 3)
        det = np.einsum("kfi,fi->kf", p, e1)
        ok = np.abs(det) > 1e-12
        inv = np.where(ok, 1.0 / np.where(ok, det, 1.0), 0.0)
        s = origin - v0  # (F, 3)
        u = np.einsum("kfi,fi->kf", p, s) * inv
        q = np.cross(s, e1)  # (F, 3)
        v = np.einsum("ki,fi->kf", d, q) * inv
        t = np.einsum("fi,fi->f", e2, q)[None, :] * inv
        hit |= (ok & (u >= 0) & (v >= 0) & (u + v <= 1) & (t > 1e-6) & (t < 1 - 1e-4)).any(axis=1)
    return hit


def test_every_object_is_visible_not_just_in_the_frustum(builtin_manifest):
    """Ray-cast with the real meshes: for every object, some of its surface points in the image
    can be seen, past all the other objects and its own far side."""
    cfg = paper()
    checked = 0
    for k in range(25):
        spec = sample_scene(cfg, builtin_manifest, 77, k)
        meshes = [_mesh(o) for o in spec.objects]
        for t in (0, spec.frames // 2, spec.frames - 1):
            c2w, K = spec.c2w(t), spec.K(t)
            eye = c2w[:3, 3]
            world = []
            for o, m in zip(spec.objects, meshes):
                M = np.asarray(o.transforms[t])
                world.append(m.vertices @ M[:3, :3].T + M[:3, 3])
            for i, (o, m) in enumerate(zip(spec.objects, meshes)):
                col, row, depth = project(world[i], c2w, K)
                inside = np.flatnonzero((depth > 0.01) & (col >= 0) & (col < spec.width) & (row >= 0) & (row < spec.height))
                sample = inside[:: max(1, len(inside) // 64)]
                # every mesh occludes, the object's own too: a point on its far side does not count
                blocked = _ray_hits(eye, world[i][sample], np.concatenate([w[mm.faces] for w, mm in zip(world, meshes)]))
                assert not blocked.all(), f"{o.name} of {spec.clip_id} is hidden at frame {t}"
                checked += 1
    assert checked > 100


def test_the_visibility_check_sees_a_hidden_object():
    """A unit cube right in front of the camera hides a small sphere behind it."""
    cube = trimesh.creation.box(extents=(1, 1, 1))
    eye = np.array([0.0, -5.0, 0.0])
    behind = np.array([[0.0, 2.0, 0.0], [0.1, 2.0, 0.1]])
    beside = np.array([[3.0, 2.0, 0.0]])
    assert _ray_hits(eye, behind, cube.vertices[cube.faces]).all()
    assert not _ray_hits(eye, beside, cube.vertices[cube.faces]).any()


def test_the_collision_check_catches_interpenetration(builtin_manifest):
    """The same check fails on a spec whose objects are pushed into each other or the plane."""
    spec = next(s for k in range(50) if len((s := sample_scene(paper(), builtin_manifest, 5, k)).objects) >= 2)
    a, b = spec.objects[:2]
    moved = b.model_copy(update={"transforms": [
        (np.asarray(a.transforms[t]) @ np.linalg.inv(np.asarray(a.normalization)) @ np.asarray(b.normalization)).tolist()
        for t in range(spec.frames)]})
    with pytest.raises(AssertionError, match="interpenetrate"):
        _check_plausible(spec.model_copy(update={"objects": [a, moved, *spec.objects[2:]]}))
    down = np.eye(4)
    down[2, 3] = -0.05
    sunk = a.model_copy(update={"transforms": [(down @ np.asarray(m)).tolist() for m in a.transforms]})
    with pytest.raises(AssertionError, match="sinks|leaves the plane"):
        _check_plausible(spec.model_copy(update={"objects": [sunk, *spec.objects[1:]]}))


def test_recipe_statistics(builtin_manifest):
    cfg = paper()
    specs = [sample_scene(cfg, builtin_manifest, 3, k) for k in range(400)]
    prims = [o for s in specs for o in s.objects if o.shape != "asset"]
    uniform = [o.material for o in prims if o.material.type == "principled"]
    rough = np.array([m.roughness for m in uniform])
    metal = np.array([m.metallic for m in uniform])
    assert rough.min() < 0.02 and rough.max() > 0.98
    assert metal.min() < 0.01 and metal.max() > 0.99 and ((metal > 0.2) & (metal < 0.8)).any()
    assert 0.15 < np.mean([o.material.type == "pbr" for o in prims]) < 0.45
    assert {o.shape for o in prims} == {"cube", "sphere", "cylinder"}
    assets = [o for s in specs for o in s.objects if o.shape == "asset"]
    per_clip = [sum(o.shape == "asset" for o in s.objects) for s in specs]
    assert set(per_clip) == {1, 2, 3}
    assert len({o.asset.id for o in assets}) >= 25
    assert len({s.light.hdri.id for s in specs}) == 8
    for o in assets:  # normalised to the configured size range
        assert cfg.objects.asset_size_m[0] - 1e-5 <= o.size_m <= cfg.objects.asset_size_m[1] + 1e-5
    sweeps = np.array([s.camera.orbit.azimuth_sweep_deg for s in specs])
    assert 0.5 < np.mean(sweeps != 0) < 0.9
    assert np.mean([s.light.rotation_sweep_deg != 0 for s in specs]) == pytest.approx(0.5, abs=0.1)
    moving = [o for s in specs for o in s.objects if o.motion.start_xy != o.motion.end_xy]
    assert 0.1 < len(moving) / sum(len(s.objects) for s in specs) < 0.3


def test_unsatisfiable_config_is_an_error_not_a_hang(builtin_manifest):
    no_room = resolve_config(ScenesSampleConfig, sets=[  # objects cannot be placed
        "scene.objects.primitives_per_scene=[3, 3]", "scene.objects.primitive_size_m=[2, 2]",
        "scene.objects.placement_radius_m=0.2", "scene.objects.max_attempts=20"]).scene
    with pytest.raises(UserError, match="cannot be met"):
        sample_scene(no_room, builtin_manifest, 0, 0)
    no_view = resolve_config(ScenesSampleConfig, sets=[  # objects fit, no camera path passes
        "scene.camera.min_height_m=50", "scene.objects.max_attempts=5", "scene.frames=240"]).scene
    with pytest.raises(UserError, match="cannot be met"):
        sample_scene(no_view, builtin_manifest, 0, 0)


def _only(manifest: Manifest, kinds: set[str]) -> Manifest:
    return Manifest([r for r in manifest.records if r.kind in kinds])


def test_missing_kinds_are_clear_errors(builtin_manifest):
    cfg = paper()
    with pytest.raises(UserError, match="no usable object"):
        sample_scene(cfg, _only(builtin_manifest, {"material", "hdri"}), 0, 0)
    with pytest.raises(UserError, match="no usable HDRI"):
        sample_scene(cfg, _only(builtin_manifest, {"material", "object"}), 0, 0)
    with pytest.raises(UserError, match="no usable material"):
        sample_scene(cfg, _only(builtin_manifest, {"object", "hdri"}), 0, 0)
    # quarantined objects don't count; primitives alone are allowed when the config says so
    quarantined = Manifest([r.quarantine("test") if r.kind == "object" else r for r in builtin_manifest.records])
    with pytest.raises(UserError, match="no usable object"):
        sample_scene(cfg, quarantined, 0, 0)
    prims_only = resolve_config(ScenesSampleConfig, sets=["scene.objects.assets_per_scene=[0, 0]",
                                                          "scene.objects.primitives_per_scene=[1, 3]"]).scene
    spec = sample_scene(prims_only, quarantined, 0, 0)
    assert spec.objects and all(o.shape != "asset" for o in spec.objects)
    with pytest.raises(UserError, match="non-negative"):
        sample_scene(cfg, builtin_manifest, 0, -1)


def test_asset_normalisation_uses_the_manifest_bounds(builtin_manifest):
    """The box asset (0.8 x 0.5 x 0.3 m) scaled to size s: its rest frame puts the bottom at 0."""
    box = builtin_manifest.get("builtin:object/box")
    only_box = Manifest([box] + [r for r in builtin_manifest.records if r.kind != "object"])
    cfg = resolve_config(ScenesSampleConfig, sets=["scene.objects.assets_per_scene=[1, 1]",
                                                   "scene.objects.primitives_per_scene=[0, 0]"]).scene
    spec = sample_scene(cfg, only_box, 0, 0)
    o = spec.objects[0]
    k = o.size_m / 0.8
    corners = np.array([[x, y, z, 1] for x in (-0.4, 0.4) for y in (-0.25, 0.25) for z in (-0.15, 0.15)])
    rest = corners @ np.asarray(o.normalization).T
    assert rest[:, 2].min() == pytest.approx(0, abs=1e-6) and rest[:, 2].max() == pytest.approx(0.3 * k, abs=1e-5)
    assert o.footprint_radius_m == pytest.approx(np.hypot(0.4, 0.25) * k, abs=1e-5)
    assert o.height_m == pytest.approx(0.3 * k, abs=1e-5)


def test_a_resampled_clip_records_the_runs_manifest_and_what_it_left_out(builtin_manifest, tmp_path):
    """A re-sample without the assets that failed earlier draws as if they were quarantined, but
    its spec names the manifest file the run holds (not a digest of an in-memory copy that
    matches no file) and the exclusions, so the clip can be sampled again from its metadata."""
    import hashlib

    from dr.assets_manifest.manifest import load_manifest

    cfg = paper()
    m = builtin_manifest
    first = sample_scene(cfg, m, 5, 3, 0)
    assert first.excluded_assets == []
    bad = sorted({first.light.hdri.id, first.ground.material.material.id})
    again = sample_scene(cfg, m, 5, 3, 1, excluded=bad)
    written = tmp_path / "manifest.jsonl"
    written.write_text(m.to_jsonl())
    assert again.manifest_sha256 == hashlib.sha256(written.read_bytes()).hexdigest() == m.digest()
    assert again.excluded_assets == bad
    assert again.light.hdri.id not in bad and again.ground.material.material.id not in bad
    # the draw is the one from the manifest with those assets quarantined (a second computation)
    quarantined = Manifest([r.quarantine("x") if r.id in bad else r for r in m.records])
    other = sample_scene(cfg, quarantined, 5, 3, 1)
    assert other.manifest_sha256 != m.digest()
    assert again.model_dump(exclude={"manifest_sha256", "excluded_assets"}) == \
        other.model_dump(exclude={"manifest_sha256", "excluded_assets"})
    # and the metadata reproduces it
    assert sample_scene(cfg, load_manifest(written), again.seed, again.index, again.attempt,
                        again.excluded_assets).to_json() == again.to_json()
