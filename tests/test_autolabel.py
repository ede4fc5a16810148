"""`dr-data autolabel` (issue 11) end to end: a DL3DV-layout folder made here from a clip that `dr-data
generate` rendered (its rgb to sRGB PNG through a known OPENCV distortion, its true poses in transforms.json,
at images_4 scale) beside a portrait scene, one with a corrupt frame, one too short and one whose
transforms cannot be read; labelled by an inverse renderer this test trains and by the tiny DiffusionLight
of `dr-train init-tiny`, on Ray, killed with -9 after its first clip and resumed.

The labels are checked against their truths: c2w equals the transforms, K the undistorted pinhole K, rgb
the linearised frames; the passes equal the checkpoint run on those frames by hand, the env DiffusionLight
run by hand on the video's middle frame, and cam_to_env carries a fixed world direction to one env
direction from every frame (the env frame follows the camera as DESIGN says)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest

from conftest import REPO, run_app, run_cli
from test_dl3dv import DIST, Camera, distorted_frame, orbit, pattern, rendered_frame, write_scene

torch = pytest.importorskip("torch")


def _train(*args: str, timeout: float = 900) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "dr.cli.train_app", *args], capture_output=True, text=True,
                          cwd=REPO, timeout=timeout)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A rendered clip (8 frames), its shards, a tiny base with DiffusionLight, an inverse renderer trained
    on the clip for 2 steps, and the DL3DV-layout folder."""
    from dr.config import resolve_config
    from dr.pipeline import generate as g
    from dr.pipeline.config import GenerateConfig
    from dr.pipeline.executor import InProcessExecutor
    from dr.shards.reader import iter_samples

    root = tmp_path_factory.mktemp("autolabel")
    cfg = resolve_config(GenerateConfig, "tiny", None, ["scene.frames=8"])
    g.generate(g.Request(n=1, out=str(root / "synthetic"), cfg=cfg, clips_per_shard=1), executor=InProcessExecutor())
    r = _train("init-tiny", "--out", str(root / "models"), "--data", str(root / "synthetic"), "--vae-steps", "0")
    assert r.returncode == 0, r.stderr[-2000:]
    r = _train("inverse", "--data", str(root / "synthetic"), "--base", str(root / "models" / "svd"), "--out",
               str(root / "inverse"), "--preset", "tiny", "--max-steps", "2", "--set", "train.checkpoint_every=2",
               "--set", "data.holdout_fraction=0")
    assert r.returncode == 0, r.stderr[-2000:]
    sample = next(iter_samples(str(root / "synthetic")))
    scenes = root / "dl3dv"
    # the rendered clip as a DL3DV scene: 4x its size at full resolution, frames in images_4/
    rgb = np.clip(sample.passes["rgb"].astype(np.float64), 0, 1)
    T, H, W = rgb.shape[:3]
    Kc = sample.intrinsics[0].astype(np.float64)
    cam = Camera(w=4 * W, h=4 * H, fx=4 * Kc[0, 0], fy=4 * Kc[1, 1], cx=4 * Kc[0, 2], cy=4 * Kc[1, 2], **DIST)
    write_scene(scenes / "1K" / "rendered", cam, [m.astype(np.float64) for m in sample.c2w],
                [rendered_frame(rgb[t], Kc, cam) for t in range(T)])
    portrait = Camera(w=192, h=256, fx=170.0, fy=171.0, cx=97.0, cy=127.0, **DIST)
    write_scene(scenes / "1K" / "portrait", portrait, orbit(6), [distorted_frame(portrait, 4, pattern)] * 6)
    land = Camera(w=256, h=192, fx=200.0, fy=200.0, cx=128.0, cy=96.0, **DIST)
    write_scene(scenes / "2K" / "corrupt", land, orbit(6), [distorted_frame(land, 4, pattern)] * 6)
    (scenes / "2K" / "corrupt" / "images_4" / "frame_00002.png").write_bytes(b"\x89PNG\r\n\x1a\n not a png")
    write_scene(scenes / "2K" / "short", land, orbit(3), [distorted_frame(land, 4, pattern)] * 3)
    write_scene(scenes / "2K" / "unreadable", land, orbit(6), [distorted_frame(land, 4, pattern)] * 6)
    (scenes / "2K" / "unreadable" / "transforms.json").write_text("{ not json")
    return {"root": root, "scenes": scenes, "sample": sample, "inverse": root / "inverse",
            "light": root / "models" / "diffusionlight"}


def _args(world, out: Path, *extra: str) -> list[str]:
    return ["autolabel", str(world["scenes"]), "--out", str(out), "--inverse", str(world["inverse"]), "--light",
            str(world["light"]), "--preset", "tiny", "--clips-per-shard", "2", "--set", "light.mode=turbo",
            "--set", "light.steps=3", "--set", "inverse.steps=2", "--device", "cpu", *extra]


def test_autolabel_labels_real_clips_against_their_truths_and_resumes_after_kill_9(world, tmp_path):
    from dr.labeling.autolabel import estimate_scene_light, inverse_passes, ref_frame
    from dr.labeling.dl3dv import load_scene, output_K, segment_clip
    from dr.models.folders import resolve_pipeline
    from dr.models.pipelines import load_renderer
    from dr.pipeline.autolabel_config import AutolabelConfig
    from dr.config import resolve_config
    from dr.shards.reader import iter_samples
    from dr.shards.validate import validate_source

    out = tmp_path / "run"
    ray_tmp = tempfile.mkdtemp(prefix="drray-", dir="/tmp")
    env = {**os.environ, "DR_RAY_TEMP_DIR": ray_tmp}
    try:
        log = open(tmp_path / "first.log", "w")
        proc = subprocess.Popen([sys.executable, "-m", "dr.cli.data_app", *_args(world, out, "--workers", "1")],
                                stdout=log, stderr=subprocess.STDOUT, env=env, cwd=REPO, start_new_session=True)
        import time

        deadline = time.monotonic() + 600
        while not list((out / "markers").glob("*.done.json")) if (out / "markers").is_dir() else True:
            assert proc.poll() is None, (tmp_path / "first.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "no clip was labelled in 600 s"
            time.sleep(0.2)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        log.close()
        before = {p.name: p.read_bytes() for p in (out / "markers").glob("*.done.json")}
        r = run_cli(*_args(world, out), env={"DR_RAY_TEMP_DIR": ray_tmp}, timeout=900)
        assert r.returncode == 0, (r.stdout + r.stderr)[-3000:]
    finally:
        shutil.rmtree(ray_tmp, ignore_errors=True)
    # planned: the rendered scene's 2 segments, the portrait's 2 and the corrupt one's 2: the one that reads the
    # corrupt frame is given up, the other is labelled
    run = json.loads((out / "run.json").read_text())
    assert run["n"] == 6 and run["job"] == "autolabel"
    assert {p.name: p.read_bytes() for p in (out / "markers").glob("*.done.json") if p.name in before} == before
    assert f"this session: {5 - len(before)} clips" in r.stderr + r.stdout, "what was done is not done again"
    quarantine = [json.loads(x) for x in (out / "quarantine.jsonl").read_text().splitlines()]
    reasons = {q["scene"]: q["reason"] for q in quarantine}
    assert set(reasons) == {"2K/corrupt", "2K/short", "2K/unreadable"}, reasons
    assert "cannot be decoded" in reasons["2K/corrupt"] and "fewer than one clip" in reasons["2K/short"]
    assert "cannot be read" in reasons["2K/unreadable"]
    report = validate_source(str(out))
    assert report.ok and report.samples == 5, report.to_json()

    cfg = resolve_config(AutolabelConfig, "tiny", None, ["light.mode=turbo", "light.steps=3", "inverse.steps=2"])
    pipe = load_renderer("inverse", resolve_pipeline(world["inverse"])[0])
    from dr.models.light import BallPainter

    painter = BallPainter.from_folder(str(world["light"]))
    truth_sample = world["sample"]
    seen, lights = set(), {}
    for s in iter_samples(str(out)):
        m = s.meta
        src = m["source_video"]
        assert m["source"] == "real" and m["depth_kind"] == "relative" and m["world"] == "source"
        assert m["passes"]["basecolor"]["provenance"] == "estimated" and m["passes"]["rgb"]["provenance"] == "captured"
        scene = load_scene(world["scenes"] / src["scene"], world["scenes"], covers=(32, 32))
        clip = segment_clip(scene, src["start"], 4, 1, 32, 32)
        seen.add((src["scene"], src["start"]))
        assert np.array_equal(s.passes["rgb"], clip.rgb) and np.array_equal(s.c2w, clip.c2w)
        K = output_K(scene.camera, scene.factor, 32, 32)[0]
        assert np.allclose(s.intrinsics, K[None].astype(np.float32))
        if src["scene"] == "1K/rendered":  # c2w is the transforms', which are the renderer's true poses
            assert np.array_equal(s.c2w, truth_sample.c2w[src["start"]:src["start"] + 4])
        # the passes: the checkpoint run by hand on the same frames with the same seed
        want = inverse_passes(pipe, clip.rgb, cfg.inverse.model_dump(), 0 * 1_000_003 + m["index"])
        for name, a in want.items():
            assert np.abs(s.passes[name].astype(np.float32) - a.astype(np.float32)).max() < 5e-3, name
        assert (s.passes["mask"] == 1).all()
        # the env: DiffusionLight by hand on the video's middle frame (once per video)
        if src["scene"] not in lights:
            lights[src["scene"]] = estimate_scene_light(painter, scene, cfg.light.model_dump())
        est = lights[src["scene"]]
        assert m["env"]["reference_frame"] == scene.frames[ref_frame(scene)].name
        assert np.abs(s.env.astype(np.float32) - est.env).max() < 2e-2 * max(1.0, float(est.env.max()))
        # a fixed world direction lands on one env direction from every frame: R_t^T w in camera t -> env
        w = np.array([0.3, -0.5, 0.81]) / np.linalg.norm([0.3, -0.5, 0.81])
        dirs = np.einsum("tij,tj->ti", s.cam_to_env.astype(np.float64),
                         np.einsum("tji,j->ti", s.c2w[:, :3, :3].astype(np.float64), w))
        assert np.abs(dirs - dirs[0]).max() < 1e-5
    assert seen == {("1K/rendered", 0), ("1K/rendered", 4), ("1K/portrait", 0), ("1K/portrait", 2), ("2K/corrupt", 2)}
    # the reference camera's view direction is the env's +X, its up +Z
    ref = scene.frames[ref_frame(scene)].c2w[:3, :3]
    M = s.cam_to_env[0].astype(np.float64) @ s.c2w[0, :3, :3].T.astype(np.float64)  # = M R_ref^T
    assert np.allclose(M @ (ref @ [0, 0, -1]), [1, 0, 0], atol=1e-5) and np.allclose(M @ (ref @ [0, 1, 0]), [0, 0, 1],
                                                                                        atol=1e-5)
    assert len(list((out / "lights").glob("*.npz"))) == 3  # one estimate per video (the corrupt one's middle frame is whole)


@pytest.mark.parametrize("case, message", [
    ("no models", "give --inverse CKPT"),
    ("scenes not a folder", "is not a folder"),
    ("light not a folder", "--light"),
    ("forward checkpoint", "not an inverse renderer"),
    ("no usable scene", "holds no usable scene"),
    ("multi-step with --single-step", "is a multi-step inverse renderer"),
])
def test_bad_input_is_one_line_and_exit_2(world, tmp_path, capfd, case, message):
    out = tmp_path / "run"
    base = _args(world, out)
    if case == "no models":
        args = ["autolabel", str(world["scenes"]), "--out", str(out), "--preset", "tiny"]
    elif case == "scenes not a folder":
        args = [base[0], str(tmp_path / "nope"), *base[2:]]
    elif case == "light not a folder":
        args = [*base, "--light", str(tmp_path / "nolight")]
    elif case == "forward checkpoint":
        fwd = tmp_path / "fwd"
        from dr.models.base import tiny_base
        from dr.models.build import new_forward_renderer

        new_forward_renderer(tiny_base(0), (16, 32, 32, 32)).save_pretrained(fwd)
        args = [*base, "--inverse", str(fwd)]
    elif case == "multi-step with --single-step":
        args = [*base, "--single-step"]
    else:
        bad = tmp_path / "scenes"
        shutil.copytree(world["scenes"] / "2K" / "short", bad / "short")
        args = [base[0], str(bad), *base[2:]]
    capfd.readouterr()
    rc = run_app(*args)
    err = capfd.readouterr().err
    assert rc == 2, err
    lines = [x for x in err.strip().splitlines() if x.strip()]
    assert len(lines) == 1 and message in lines[0] and "Traceback" not in err, err
    assert not out.exists(), "nothing is written for bad input"


def test_a_dry_run_reads_every_clip_and_a_run_with_other_settings_is_refused(world, tmp_path, capfd, monkeypatch):
    ray_tmp = tempfile.mkdtemp(prefix="drray-", dir="/tmp")
    monkeypatch.setenv("DR_RAY_TEMP_DIR", ray_tmp)
    out = tmp_path / "run"
    try:
        assert run_app(*_args(world, out, "--dry-run")) == 0
    finally:
        shutil.rmtree(ray_tmp, ignore_errors=True)
    capfd.readouterr()
    assert run_app(*_args(world, out, "--dry-run", "--set", "clips.stride=2")) == 2
    err = capfd.readouterr().err
    assert "different settings" in err and "clips.stride" in err
    samples = list(__import__("dr.shards.reader", fromlist=["iter_samples"]).iter_samples(str(out)))
    assert len(samples) == 5 and all(s.meta["passes"]["basecolor"]["provenance"] == "missing" for s in samples)
    assert all(s.env is None and s.meta["env"]["provenance"] == "missing" for s in samples)


def test_help_names_the_light_folder_layout_and_the_config_has_units(capsys):
    assert run_app("autolabel", "--help") == 0
    text = " ".join(capsys.readouterr().out.split())
    for part in ("sdxl/", "controlnet/", "depth/", "lora/exposure/", "lora/turbo/", "'hub'", "--dry-run",
                 "--single-step", "init-tiny", "quarantine.jsonl"):
        assert part in text, part
    assert run_app("autolabel", "x", "--out", "y", "--print-config") == 0
    cfg = capsys.readouterr().out
    for line in ("size: 1024  # side of the letterboxed square the ball is painted in, px", "balls: 30",
                 "segments_per_video: 15", "mode: normal", "unwrap: perspective"):
        assert line in cfg, line
