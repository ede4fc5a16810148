"""Real Cycles renders (64x64, few samples) checked against analytic geometry, known materials
and the sky they were lit by."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

import render_scenes as RS
from dr.render.errors import AssetError, ClipTimeout, WorkerCrashed
from dr.render.settings import RenderSettings
from dr.render.worker import RenderWorker, WorkerLimits
from dr.shards.envmap import sample_env
from dr.shards.reader import iter_samples
from dr.shards.schema import member_suffixes
from dr.shards.writer import ShardWriter

SETTINGS = RenderSettings(samples=16, denoiser="none", max_bounces=2, adaptive_threshold=0.0)


@pytest.fixture(scope="module")
def sky_path(tmp_path_factory):
    p = tmp_path_factory.mktemp("sky") / "smooth_sky.exr"
    RS.write_exr(p, RS.sky())
    return p


def _job(spec, tmp: Path, settings=SETTINGS):
    return {"key": spec.clip_id, "spec": spec.to_json(), "settings": settings.model_dump(mode="json"),
            "staging": str(tmp / "staging"), "log": str(tmp / "logs" / f"{spec.clip_id}.log"), "run_id": "test"}


@pytest.fixture(scope="module")
def ball_path(tmp_path_factory):
    p = tmp_path_factory.mktemp("ball") / "banded_ball.glb"
    RS.write_banded_ball(p)
    return p


@pytest.fixture(scope="module")
def rendered(tmp_path_factory, builtin_manifest, sky_path, ball_path, cache_dir):
    """The test scene rendered once through the worker and read back from a real shard."""
    tmp = tmp_path_factory.mktemp("render")
    spec = RS.test_spec(builtin_manifest, sky_path, ball_path, frames=3)
    with RenderWorker(cache_dir, tmp / "tmp", threads=2) as w:
        res = w.render(_job(spec, tmp))
    d = Path(res["dir"])
    with ShardWriter(tmp / "shards") as sw:
        sw.add(spec.clip_id, {s: d / s for s in member_suffixes()})
    sample = next(iter_samples(str(tmp / "shards")))
    return spec, sample, res


# --- analytic ray casting -------------------------------------------------------------------

OFFSETS = [(0.0, 0.0), (-0.75, -0.75), (0.75, -0.75), (-0.75, 0.75), (0.75, 0.75)]  # pixel filter reach


def rays(spec, t, dx=0.0, dy=0.0):
    """World-space origin and unit directions (H, W, 3) through pixel centres (+ offset)."""
    K, c2w = spec.K(t), spec.c2w(t)
    r, c = np.meshgrid(np.arange(spec.height) + 0.5 + dy, np.arange(spec.width) + 0.5 + dx, indexing="ij")
    d_cam = np.stack([(c - K[0, 2]) / K[0, 0], -(r - K[1, 2]) / K[1, 1], -np.ones_like(c)], axis=-1)
    d = d_cam @ c2w[:3, :3].T
    return c2w[:3, 3], d / np.linalg.norm(d, axis=-1, keepdims=True)


def hit_sphere(o, d, centre, radius):
    oc = o - centre
    b = d @ oc
    disc = b * b - (oc @ oc - radius * radius)
    s = -b - np.sqrt(np.maximum(disc, 0))
    return np.where((disc > 0) & (s > 0), s, np.inf)


def hit_plane(o, d, half):
    with np.errstate(divide="ignore", invalid="ignore"):
        s = -o[2] / d[..., 2]
    p = o + s[..., None] * d
    ok = (s > 0) & (np.abs(p[..., 0]) < half) & (np.abs(p[..., 1]) < half)
    return np.where(ok, s, np.inf)


def hit_box(o, d, M):
    """Ray distance to the box M @ [-1, 1]^3 (M affine)."""
    Minv = np.linalg.inv(M)
    ol = Minv[:3, :3] @ o + Minv[:3, 3]
    dl = d @ Minv[:3, :3].T
    with np.errstate(divide="ignore", invalid="ignore"):
        t1, t2 = (-1 - ol) / dl, (1 - ol) / dl
    tmin = np.nanmax(np.minimum(t1, t2), axis=-1)
    tmax = np.nanmin(np.maximum(t1, t2), axis=-1)
    return np.where((tmax >= tmin) & (tmin > 0), tmin, np.inf)  # distances in units of |dl|: same as d (M has no shear)




def classify(spec, t):
    """Per pixel: which surface every ray of the pixel's filter footprint hits first
    ('sphere', 'cube', 'ground', 'ball', 'sky'), or None where they disagree."""
    labels = None
    for dx, dy in OFFSETS:
        o, d = rays(spec, t, dx, dy)
        dist = np.stack([hit_sphere(o, d, RS.sphere_centre(t), RS.SPHERE["radius"]), hit_box(o, d, RS.cube_matrix()),
                         hit_plane(o, d, RS.GROUND_M / 2),
                         hit_sphere(o, d, RS.ball_centre(), RS.BALL["radius"])], axis=-1)
        first = np.argmin(dist, axis=-1)
        lab = np.where(np.isinf(dist.min(axis=-1)), 4, first)
        labels = lab if labels is None else np.where(labels == lab, labels, -1)
    names = np.array(["sphere", "cube", "ground", "ball", "sky", None], dtype=object)
    return names[np.where(labels < 0, 5, labels)]


def analytic_depth_normal(spec, t, what):
    o, d = rays(spec, t)
    w2c = np.linalg.inv(spec.c2w(t))
    if what == "sphere":
        s = hit_sphere(o, d, RS.sphere_centre(t), RS.SPHERE["radius"])
        n = (o + s[..., None] * d - RS.sphere_centre(t)) / RS.SPHERE["radius"]
    else:
        s = hit_plane(o, d, RS.GROUND_M / 2)
        n = np.broadcast_to([0.0, 0.0, 1.0], d.shape)
    depth = s * -(d @ w2c[:3, :3].T)[..., 2]
    with np.errstate(invalid="ignore"):  # rays that miss give inf * 0
        return depth, n @ w2c[:3, :3].T


# --- the tests ---------------------------------------------------------------------------

def test_rendered_sample_is_complete(rendered):
    spec, s, res = rendered
    T = spec.frames
    for name, (C, dtype) in {"rgb": (3, np.float16), "basecolor": (3, np.float16), "roughness": (1, np.float16),
                             "metallic": (1, np.float16), "normal": (3, np.float16), "depth": (1, np.float16),
                             "mask": (1, np.uint8)}.items():
        assert s.passes[name].shape == (T, 64, 64, C) and s.passes[name].dtype == dtype, name
        assert np.isfinite(s.passes[name].astype(np.float32)).all()
    assert s.env.shape == (64, 128, 3) and s.c2w.shape == (T, 4, 4) and s.cam_to_env.shape == (T, 3, 3)
    bg = s.passes["mask"][..., 0] == 0
    for name in ("basecolor", "roughness", "metallic", "normal", "depth"):
        assert not s.passes[name][bg].any(), f"{name} is not 0 on the background"
    m = s.meta
    assert m["renderer"]["device"] == "cpu" and m["renderer"]["samples"] == 16 and m["source"] == "synthetic"
    assert m["material_fallbacks"] == [] and {t["material"] for t in m["material_taps"]} >= {"banded"}
    assert all(v >= 0 for v in m["timings_s"].values())
    assert {a["id"] for a in m["assets"]} >= {"test:object/banded_ball", "test:hdri/smooth_sky"}
    # Blender's glTF import puts the ball where the spec's normalization expects it
    (check,) = m["asset_import_checks"]
    assert check["agrees"] and abs(check["rest_min_z_m"]) < 1e-3 and check["rest_height_m"] == pytest.approx(1.0, abs=2e-3)


def _median_abs(x, truth):
    return float(np.median(np.abs(np.asarray(x, np.float32) - np.asarray(truth, np.float32))))


def test_material_aovs_equal_the_known_parameters(rendered):
    spec, s, _ = rendered
    for t in range(spec.frames):
        lab = classify(spec, t)
        for name, truth in (("sphere", RS.SPHERE), ("cube", RS.CUBE)):
            px = lab == name
            assert px.sum() > 20, (name, t)
            assert _median_abs(s.passes["basecolor"][t][px], truth["basecolor"]) < 1e-3, (name, t)
            assert _median_abs(s.passes["roughness"][t][px][:, 0], truth["roughness"]) < 1e-3, (name, t)
            assert _median_abs(s.passes["metallic"][t][px][:, 0], truth["metallic"]) < 1e-3, (name, t)


def test_packed_metallic_roughness_texture_of_a_gltf_object(rendered):
    """The glTF ball's packed metallic-roughness texture: its x > 0 half (in its own frame) is
    roughness 0.2 / metallic 1, the other half 0.8 / 0; the base colour is the factor."""
    spec, s, _ = rendered
    got, truth = [], []
    for t in range(spec.frames):
        px = classify(spec, t) == "ball"
        o, d = rays(spec, t)
        dist = hit_sphere(o, d, RS.ball_centre(), RS.BALL["radius"])
        x = (o + dist[..., None] * d - RS.ball_centre())[..., 0]
        px &= np.abs(x) > 0.06  # away from the seam between the halves
        metal = x[px] > 0
        got.append(np.stack([s.passes["roughness"][t][px][:, 0], s.passes["metallic"][t][px][:, 0]], -1))
        truth.append(np.stack([np.where(metal, 0.2, 0.8), np.where(metal, 1.0, 0.0)], -1))
        assert _median_abs(s.passes["basecolor"][t][px], RS.BALL["basecolor"]) < 1e-3
    got, truth = np.concatenate(got), np.concatenate(truth)
    assert len(got) > 60 and 0.2 < (truth[:, 1] == 1).mean() < 0.8, "both halves must be seen"
    for half in (truth[:, 1] == 1, truth[:, 1] == 0):
        assert _median_abs(got[half], truth[half]) < 1e-3


def test_normals_and_depth_match_analytic_geometry(rendered):
    spec, s, _ = rendered
    for t in range(spec.frames):
        lab = classify(spec, t)
        for what in ("sphere", "ground"):
            px = lab == what
            depth, n_true = analytic_depth_normal(spec, t, what)
            d = s.passes["depth"][t][..., 0].astype(np.float64)
            rel = np.abs(d[px] - depth[px]) / depth[px]
            assert np.median(rel) < 0.005, (what, t, np.median(rel))
            if what == "sphere":
                n = s.passes["normal"][t].astype(np.float64)[px]
                cos = np.clip(np.sum(n * n_true[px], axis=-1) / np.linalg.norm(n, axis=-1), -1, 1)
                assert np.degrees(np.median(np.arccos(cos))) < 1.0, t


def test_a_projected_world_point_lands_where_it_was_rendered(rendered):
    """Frame t's c2w and K (as stored in the shard) put the sphere's nearest point on the pixel
    that shows it at its depth, and the rendered disc where the analytic one is: the centroid of
    the metallic pass (1 on the metal sphere, 0 on the dielectric ground around it) equals the
    centroid of the sphere's exact pixel coverage (a symmetric pixel filter keeps centroids)."""
    from dr.scenes.geometry import project

    spec, s, _ = rendered
    for t in range(spec.frames):
        c2w, K = s.c2w[t].astype(np.float64), s.intrinsics[t].astype(np.float64)
        centre, eye = RS.sphere_centre(t), c2w[:3, 3]
        front = centre + RS.SPHERE["radius"] * (eye - centre) / np.linalg.norm(eye - centre)
        col, row, depth = project(front[None], c2w, K)
        r, c = int(row[0]), int(col[0])
        assert s.passes["mask"][t, r, c, 0] == 1 and s.passes["metallic"][t, r, c, 0] > 0.99
        assert abs(float(s.passes["depth"][t, r, c, 0]) - depth[0]) / depth[0] < 0.01

        n = 8  # exact coverage by 8x8 rays per pixel
        cover = np.zeros((64, 64))
        for i in range(n):
            for j in range(n):
                o, d = rays(spec, t, (j + 0.5) / n - 0.5, (i + 0.5) / n - 0.5)
                dist = np.stack([hit_sphere(o, d, centre, RS.SPHERE["radius"]), hit_box(o, d, RS.cube_matrix()),
                                 hit_sphere(o, d, RS.ball_centre(), RS.BALL["radius"])], -1)
                cover += (np.argmin(dist, -1) == 0) & np.isfinite(dist[..., 0])
        cover /= n * n
        window = cover > 0
        for _ in range(3):
            window |= np.roll(window, 1, 0) | np.roll(window, -1, 0) | np.roll(window, 1, 1) | np.roll(window, -1, 1)
        lab = classify(spec, t)
        assert not np.isin(lab[window], ["cube", "ball"]).any()
        metal = np.where(window, s.passes["metallic"][t][..., 0].astype(np.float64), 0.0)
        rr, cc = np.mgrid[0:64, 0:64] + 0.5
        for w in (cover, metal):
            assert w.sum() > 50
        got = np.array([(metal * rr).sum(), (metal * cc).sum()]) / metal.sum()
        want = np.array([(cover * rr).sum(), (cover * cc).sum()]) / cover.sum()
        assert np.abs(got - want).max() < 0.1, (t, got, want)


def test_background_is_the_env_map_along_each_ray(rendered):
    """rgb on the sky equals env looked up through cam_to_env[t] (rotating world, every frame),
    and would not with the world turned the other way."""
    spec, s, _ = rendered
    env = s.env.astype(np.float32)
    errs, wrong = [], []
    for t in range(spec.frames):
        px = classify(spec, t) == "sky"
        assert px.sum() > 100
        assert (s.passes["mask"][t][..., 0][px] == 0).all()
        o, d = rays(spec, t)
        d_cam = d @ spec.c2w(t)[:3, :3]  # world -> camera
        ref = sample_env(env, d_cam @ s.cam_to_env[t].T.astype(np.float64))
        rgb = s.passes["rgb"][t].astype(np.float32)
        errs.append(np.abs(rgb[px] - ref[px]) / ref[px])
        R = s.cam_to_env[t].astype(np.float64)
        turned = np.array([[1, 0, 0], [0, 1, 0], [0, 0, 1.0]])
        a = np.radians(2 * (10.0 + RS.SKY_TURN_DEG * t))
        turned[:2, :2] = [[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]]  # the opposite turn
        wrong_ref = sample_env(env, d_cam @ (turned @ R).T)
        wrong.append(np.abs(rgb[px] - wrong_ref[px]) / wrong_ref[px])
    errs, wrong = np.concatenate(errs), np.concatenate(wrong)
    assert np.median(errs) < 0.01, np.median(errs)
    assert np.median(wrong) > 10 * np.median(errs)


def test_killed_worker_fails_the_clip_cleanly_and_the_next_clip_renders(tmp_path, builtin_manifest, sky_path, ball_path,
                                                                        cache_dir):
    spec = RS.test_spec(builtin_manifest, sky_path, ball_path, frames=2, clip_id="doomed")
    spec2 = RS.test_spec(builtin_manifest, sky_path, ball_path, frames=2, clip_id="survivor")
    fast = RenderSettings(samples=1, denoiser="none", max_bounces=0)
    pids = []
    with RenderWorker(cache_dir, tmp_path / "tmp", threads=2) as w:
        def kill_on_first_frame(msg):
            if msg[0] == "started":
                pids.append(msg[1])
            if msg[0] == "frame" and msg[1] == 0:
                os.kill(w.pid, 9)

        with pytest.raises(WorkerCrashed, match="signal 9"):
            w.render(_job(spec, tmp_path, fast), on_event=kill_on_first_frame)
        assert not (tmp_path / "staging" / "doomed").exists()
        assert not (tmp_path / "staging" / ".doomed.partial").exists()
        res = w.render(_job(spec2, tmp_path, fast), on_event=lambda m: pids.append(m[1]) if m[0] == "started" else None)
        assert w.started == 2 and pids[0] != pids[1]
    assert sorted(os.listdir(tmp_path / "staging")) == ["survivor"]
    assert Path(res["dir"]).name == "survivor"


@pytest.mark.parametrize("limits", [WorkerLimits(max_clips=1), WorkerLimits(max_rss_mb=1.0)], ids=["clips", "memory"])
def test_worker_is_recycled(tmp_path, builtin_manifest, sky_path, ball_path, cache_dir, limits):
    fast = RenderSettings(samples=1, denoiser="none", max_bounces=0)
    pids = []
    with RenderWorker(cache_dir, tmp_path / "tmp", threads=2, limits=limits) as w:
        for name in ("first", "second"):
            spec = RS.test_spec(builtin_manifest, sky_path, ball_path, frames=1, clip_id=name)
            w.render(_job(spec, tmp_path, fast), on_event=lambda m: pids.append(m[1]) if m[0] == "started" else None)
        assert w.started == 2 and pids[0] != pids[1]
    assert sorted(os.listdir(tmp_path / "staging")) == ["first", "second"]


def test_a_clip_past_its_time_limit_is_killed(tmp_path, builtin_manifest, sky_path, ball_path, cache_dir):
    spec = RS.test_spec(builtin_manifest, sky_path, ball_path, frames=4, clip_id="slow")
    slow = RenderSettings(samples=64, denoiser="none", adaptive_threshold=0.0)
    with RenderWorker(cache_dir, tmp_path / "tmp", threads=2, limits=WorkerLimits(timeout_s=0.5)) as w:
        with pytest.raises(ClipTimeout, match="0.5 s limit"):
            w.render(_job(spec, tmp_path, slow))
        assert w.pid is None
    assert not any((tmp_path / "staging").glob("*slow*"))


def test_a_mesh_without_material_gets_a_recorded_fallback(tmp_path, builtin_manifest, sky_path, cache_dir):
    """A glTF mesh with no material renders with Blender's default Principled BSDF (base 0.8,
    roughness 0.5, metallic 0); the passes show exactly that and the clip says so."""
    import trimesh

    plain = tmp_path / "plain.glb"
    plain.write_bytes(trimesh.Scene(trimesh.creation.icosphere(subdivisions=4, radius=0.5)).export(file_type="glb"))
    spec = RS.test_spec(builtin_manifest, sky_path, plain, frames=1, clip_id="plain")
    with RenderWorker(cache_dir, tmp_path / "tmp", threads=2) as w:
        res = w.render(_job(spec, tmp_path, RenderSettings(samples=4, denoiser="none", max_bounces=0)))
    assert res["fallbacks"] == [{"material": "dr_no_material",
                                 "reason": "mesh without a material: Blender's default Principled BSDF"}]
    d = Path(res["dir"])
    with ShardWriter(tmp_path / "shards") as sw:
        sw.add("plain", {s: d / s for s in member_suffixes()})
    s = next(iter_samples(str(tmp_path / "shards")))
    px = classify(spec, 0) == "ball"
    assert px.sum() > 20
    assert _median_abs(s.passes["basecolor"][0][px], (0.8, 0.8, 0.8)) < 1e-3
    assert _median_abs(s.passes["roughness"][0][px], 0.5) < 1e-3
    assert _median_abs(s.passes["metallic"][0][px], 0.0) < 1e-3


def test_an_asset_whose_import_disagrees_with_its_probe_fails_as_the_assets_fault(tmp_path, builtin_manifest,
                                                                                   sky_path, cache_dir):
    """The spec places the test ball from its probed bounds (radius 0.5 m); a file whose mesh is twice
    that size imports 2 m tall at rest. Was: recorded in the result and rendered anyway."""
    import trimesh

    big = tmp_path / "big.glb"
    big.write_bytes(trimesh.Scene(trimesh.creation.icosphere(subdivisions=2, radius=1.0)).export(file_type="glb"))
    spec = RS.test_spec(builtin_manifest, sky_path, big, frames=1, clip_id="big")
    with RenderWorker(cache_dir, tmp_path / "tmp", threads=2) as w:
        with pytest.raises(AssetError, match="disagrees with the manifest's probe") as e:
            w.render(_job(spec, tmp_path, RenderSettings(samples=1, denoiser="none", max_bounces=0)))
    assert e.value.asset_id == "test:object/banded_ball" and "height 2.0" in str(e.value)
    assert not any((tmp_path / "staging").glob("*big*"))
