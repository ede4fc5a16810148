"""`dr-data export --format diffusion-renderer`: layout, encodings, resume, bad input."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
from PIL import Image

from conftest import run_app
from dr.pipeline.export import ENV_PASSES, GBUFFER_PASSES, ExportSettings, export_run
from dr.shards.codec import npy_bytes, npy_zst_bytes
from dr.shards.writer import ShardWriter

T, H, W = 3, 8, 10
ENV_RADIANCE = 2.5  # constant radiance of the test env map
NORMALS = np.array([[0.6, 0.0, 0.8], [0.0, -0.28, 0.96], [-0.48, 0.6, 0.64]])


def make_clip(seed: int = 0, T: int = T, H: int = H, W: int = W) -> dict[str, np.ndarray]:
    """A synthetic clip: the top two rows are background (mask 0, passes 0), the rest a plane whose
    depth ramps along columns and frames; three known normals in bands; random materials."""
    rng = np.random.default_rng(seed)
    mask = np.ones((T, H, W, 1), np.uint8)
    mask[:, :2] = 0
    cols = np.arange(W, dtype=np.float32)
    depth = (1.0 + 0.25 * cols[None, None, :] + 0.1 * np.arange(T)[:, None, None]) * np.ones((T, H, W), np.float32)
    normal = NORMALS[np.arange(H) % 3][None, :, None, :] * np.ones((T, H, W, 3))
    passes = {
        "rgb": rng.uniform(0, 4, (T, H, W, 3)) * (1 + np.arange(T))[:, None, None, None],
        "basecolor": rng.uniform(0, 1, (T, H, W, 3)),
        "roughness": rng.uniform(0, 1, (T, H, W, 1)),
        "metallic": rng.uniform(0, 1, (T, H, W, 1)),
        "normal": normal,
        "depth": depth[..., None],
    }
    out = {k: (v * mask).astype(np.float16) for k, v in passes.items()}
    out["mask"] = mask
    return out


def clip_members(key: str, passes: dict[str, np.ndarray]) -> dict[str, bytes]:
    Tn, Hn, Wn = passes["rgb"].shape[:3]
    meta = {"clip_id": key, "run_id": "test_run", "source": "synthetic", "frames": Tn, "height": Hn, "width": Wn,
            "fps": 24, "renderer": {"device": "cpu", "samples": 4, "denoiser": "none"}, "depth_units": "metres"}
    members = {"json": json.dumps(meta).encode()}
    members.update({f"{k}.npy.zst": npy_zst_bytes(v) for k, v in passes.items()})
    members["env.npy.zst"] = npy_zst_bytes(np.full((4, 8, 3), ENV_RADIANCE, np.float16))
    members["c2w.npy"] = npy_bytes(np.tile(np.eye(4, dtype=np.float32), (Tn, 1, 1)))
    members["intrinsics.npy"] = npy_bytes(np.tile(np.eye(3, dtype=np.float32), (Tn, 1, 1)))
    members["cam_to_env.npy"] = npy_bytes(np.tile(np.eye(3, dtype=np.float32), (Tn, 1, 1)))
    return members


def write_run(root, keys=("clip_a", "clip_b"), **size) -> dict[str, dict[str, np.ndarray]]:
    """A run-folder-like ``root/shards`` with one shard of the clips ``keys``; returns their passes."""
    clips = {}
    with ShardWriter(root / "shards", 0) as w:
        for i, k in enumerate(keys):
            clips[k] = make_clip(seed=i, **size)
            w.add(k, clip_members(k, clips[k]))
    return clips


def png(path) -> np.ndarray:
    with Image.open(path) as im:
        assert im.mode == "RGB", f"{path} is {im.mode}"
        return np.asarray(im)


def srgb(x):
    x = np.asarray(x, np.float64)
    return np.where(x <= 0.0031308, 12.92 * x, 1.055 * np.power(np.maximum(x, 1e-12), 1 / 2.4) - 0.055)


def u8(x):
    return np.floor(np.clip(x, 0, 1) * 255 + 0.5).astype(np.uint8)


@pytest.fixture
def run_dir(tmp_path):
    clips = write_run(tmp_path / "run")
    return tmp_path / "run", clips


def test_layout_names_and_counts(run_dir, tmp_path):
    run_path, clips = run_dir
    out = tmp_path / "export"
    res = export_run(str(run_path), out)
    assert res.exported == ["clip_a", "clip_b"] and res.skipped == [] and res.clips == 2
    want = {f"0000.{t:04d}.{p}.png" for t in range(T) for p in GBUFFER_PASSES + ENV_PASSES}
    for k in clips:
        assert {p.name for p in (out / k).iterdir()} == want
    assert sorted(p.name for p in out.iterdir()) == [".export", "clip_a", "clip_b", "export.json"]
    doc = json.loads((out / "export.json").read_text())
    assert doc["format"] == "diffusion-renderer" and doc["source"] == str(run_path)
    assert [c["clip"] for c in doc["clips"]] == ["clip_a", "clip_b"]
    c = doc["clips"][0]
    assert (c["frames"], c["height"], c["width"], c["files"]) == (T, H, W, T * 8)
    assert c["chunks"] == [{"chunk": 0, "frames": T}] and c["env_size"] == [H, W]
    # the loaders' grouping: everything before the first dot of the name, with its folder, is one video
    groups = {f"{k}/{p.name.split('.')[0]}" for k in clips for p in (out / k).iterdir()}
    assert groups == {"clip_a/0000", "clip_b/0000"}


def test_encodings_are_exact(run_dir, tmp_path):
    run_path, clips = run_dir
    out = tmp_path / "export"
    export_run(str(run_path), out)
    doc = json.loads((out / "export.json").read_text())
    for rec in doc["clips"]:
        p = clips[rec["clip"]]
        m = p["mask"][..., 0].astype(bool)
        d = p["depth"][..., 0].astype(np.float32)
        near, far = np.quantile(d[m], [0.02, 0.98])
        assert rec["depth"]["near"] == pytest.approx(near) and rec["depth"]["far"] == pytest.approx(far)
        assert near < far
        for t in range(T):
            f = out / rec["clip"] / f"0000.{t:04d}"
            # normal: round((n + 1) / 2 * 255) of the stored normal; background (n = 0) -> 128
            n = png(f"{f}.normal.png")
            exp = np.rint((p["normal"][t].astype(np.float64) + 1) / 2 * 255)
            assert np.array_equal(n[m[t]], exp[m[t]]) and (n[~m[t]] == 128).all()
            assert n[3, 0].tolist() == [204, 128, 229]  # row 3: (0.6, 0, 0.8) as float16
            # depth: the clip's 2%/98% quantile normalisation, near dark, background far (255)
            dp = png(f"{f}.depth.png")
            x = np.clip(2 * (d[t] - near) / (far - near) - 1, -1, 1)
            assert np.array_equal(dp[..., 0][m[t]], u8((x[m[t]] + 1) / 2))
            assert (dp[~m[t]] == 255).all() and (dp[..., 0] == dp[..., 2]).all()
            # metallic / roughness: 3 equal channels, the value within half a step
            for name in ("metallic", "roughness"):
                v = png(f"{f}.{name}.png")
                assert (v[..., 0] == v[..., 1]).all() and (v[..., 0] == v[..., 2]).all()
                assert np.abs(v[..., 0] / 255.0 - p[name][t, ..., 0].astype(np.float64)).max() <= 0.5 / 255 + 1e-9
                assert (v[~m[t]] == 0).all()
            # basecolor: sRGB-encoded
            bc = png(f"{f}.basecolor.png")
            assert np.array_equal(bc, u8(srgb(p["basecolor"][t].astype(np.float64))))
            # rgb: one exposure per clip (99th percentile of luminance -> 0.9), clamp, sRGB
            rgb = p["rgb"].astype(np.float64)
            scale = 0.9 / np.percentile(rgb @ [0.2126, 0.7152, 0.0722], 99)
            got = png(f"{f}.rgb.png").astype(int)
            assert np.abs(got - u8(srgb(np.clip(rgb[t] * scale, 0, 1)))).max() <= 1
            assert (got[~m[t]] == 0).all()
            # env: constant radiance E -> srgb(reinhard(E)) and srgb(log1p(E) / log1p(10000)) everywhere
            E = ENV_RADIANCE
            ldr, log = png(f"{f}.env_ldr.png"), png(f"{f}.env_log.png")
            assert ldr.shape == (H, W, 3) and log.shape == (H, W, 3)
            assert (ldr == u8(srgb(E * (1 + E / 256) / (1 + E)))).all()
            assert (log == u8(srgb(np.log1p(E) / np.log1p(10000)))).all()


def test_depth_agrees_with_the_training_view(run_dir, tmp_path):
    from dr.shards import views

    run_path, clips = run_dir
    export_run(str(run_path), tmp_path / "e")
    p = clips["clip_b"]
    view = views.depth_view(p["depth"], p["mask"])
    got = np.stack([png(tmp_path / "e" / "clip_b" / f"0000.{t:04d}.depth.png") for t in range(T)])
    assert np.abs(got / 255.0 * 2 - 1 - view).max() <= 1.0 / 255 + 1e-6


def test_chunks_and_env_size(tmp_path):
    write_run(tmp_path / "run", keys=("clip_c",), T=5)
    out = tmp_path / "e"
    export_run(str(tmp_path / "run" / "shards" / "shard-000000.tar"), out,
               ExportSettings(chunk_frames=2, env_size=(4, 8)))
    names = sorted(p.name for p in (out / "clip_c").iterdir())
    prefixes = sorted({n.rsplit(".", 2)[0] for n in names})
    assert prefixes == ["0000.0000", "0000.0001", "0001.0000", "0001.0001", "0002.0000"]
    assert len(names) == 5 * 8
    assert png(out / "clip_c" / "0001.0001.env_log.png").shape == (4, 8, 3)
    assert png(out / "clip_c" / "0001.0001.rgb.png").shape == (H, W, 3)
    rec = json.loads((out / "export.json").read_text())["clips"][0]
    assert rec["chunks"] == [{"chunk": 0, "frames": 2}, {"chunk": 1, "frames": 2}, {"chunk": 2, "frames": 1}]
    # frame 3 of the clip is frame 1 of chunk 1
    export_run(str(tmp_path / "run"), tmp_path / "whole")
    assert np.array_equal(png(out / "clip_c" / "0001.0001.normal.png"),
                          png(tmp_path / "whole" / "clip_c" / "0000.0003.normal.png"))


def test_resume_skips_done_clips_and_replaces_partials(run_dir, tmp_path):
    run_path, _ = run_dir
    out = tmp_path / "export"
    export_run(str(run_path), out)
    a_files = sorted((out / "clip_a").iterdir())
    before = {p: p.stat().st_mtime_ns for p in a_files}
    # clip_b was interrupted: its folder is gone and a partial one is left over
    b_partial = out / "clip_b.partial"
    os.rename(out / "clip_b", b_partial)
    (b_partial / "junk.png").write_bytes(b"not a png")
    (b_partial / "0000.0000.rgb.png").write_bytes(b"truncated")
    res = export_run(str(run_path), out)
    assert res.skipped == ["clip_a"] and res.exported == ["clip_b"]
    assert {p: p.stat().st_mtime_ns for p in sorted((out / "clip_a").iterdir())} == before
    assert not b_partial.exists() and not (out / "clip_b" / "junk.png").exists()
    assert png(out / "clip_b" / "0000.0000.rgb.png").shape == (H, W, 3)
    assert [c["clip"] for c in json.loads((out / "export.json").read_text())["clips"]] == ["clip_a", "clip_b"]
    # all done: nothing is read or written again
    res = export_run(str(run_path), out)
    assert res.exported == [] and res.skipped == ["clip_a", "clip_b"]
    # other settings on the same folder are refused
    from dr.errors import UserError

    with pytest.raises(UserError, match="chunk_frames"):
        export_run(str(run_path), out, ExportSettings(chunk_frames=2))


def _cli(argv, capsys):
    rc = run_app(*argv)
    return rc, capsys.readouterr()


def test_cli_exports_and_refuses_bad_input_in_one_line(run_dir, tmp_path, capsys):
    run_path, _ = run_dir
    out = tmp_path / "cli_out"
    rc, cap = _cli(["export", str(run_path), "--format", "diffusion-renderer", "--out", str(out)], capsys)
    assert rc == 0, cap.err
    assert (out / "clip_a" / "0000.0002.env_ldr.png").is_file() and "exported" in cap.err
    cases = [
        (["export", str(tmp_path / "missing_run"), "--out", str(out)], "does not exist"),
        (["export", str(run_path), "--format", "mitsuba", "--out", str(out)], "choose one of: diffusion-renderer"),
        (["export", str(run_path), "--out", str(out), "--env-size", "512"], "HEIGHTxWIDTH"),
        (["export", str(tmp_path), "--out", str(out)], "no shard"),
        (["export", str(run_path), "--out", str(out / "clip_a" / "0000.0000.rgb.png")], "is a file"),
        (["export", str(run_path), "--out", str(out), "--chunk-frames", "4"], "other settings"),
    ]
    for argv, says in cases:
        rc, cap = _cli(argv, capsys)
        lines = cap.err.strip().splitlines()
        assert rc == 2 and len(lines) == 1 and lines[0].startswith("error: ") and says in lines[0], (argv, cap.err)
    assert not (tmp_path / "missing_run").exists()


def _official_groups(out, mode: str, extensions=(".png", ".jpg", ".jpeg", ".gif", ".tiff", ".bmp")):
    """How the official DiffusionRenderer scripts group an input folder (facts read in their code,
    nv-tlabs/diffusion-renderer utils_rgbx_inference.py and the Cosmos dataset_inference.py): every
    file whose lower-cased name ends with one of ``extensions``; "folder" mode: one video per
    folder; "webdataset": one per path up to the first dot of the file name; frames sorted."""
    import re

    groups: dict[str, list[str]] = {}
    for p in sorted(out.rglob("*")):
        rel = p.relative_to(out).as_posix()
        if not p.is_file() or not rel.lower().endswith(tuple(extensions)):
            continue
        key = os.path.dirname(rel) if mode == "folder" else re.match(r"^((?:.*/|)[^.]+)[.]([^/]*)$", rel).group(1)
        groups.setdefault(key, []).append(rel)
    return {k: sorted(v) for k, v in groups.items()}


def test_export_for_the_official_scripts(tmp_path):
    """--for svd: every chunk holds exactly 24 frames of every pass (SVD's forward renderer indexes
    24 and has no padding), a short clip's last frame repeated and counted; the inverse renderers'
    folder grouping with the extension .rgb.png sees the clip's rgb frames in order; --for cosmos
    cuts long clips into 57-frame chunks."""
    write_run(tmp_path / "run", keys=("clip_s",), T=5)
    out = tmp_path / "svd"
    rc = run_app("export", str(tmp_path / "run"), "--out", str(out), "--for", "svd")
    assert rc == 0
    fwd = _official_groups(out, "webdataset")
    assert list(fwd) == ["clip_s/0000"]
    for label in ("basecolor", "normal", "depth", "roughness", "metallic"):
        files = [f for f in fwd["clip_s/0000"] if f".{label}." in f]
        assert len(files) == 24, label  # what inference_svd_xrgb.py indexes
        assert np.array_equal(png(out / files[23]), png(out / files[4]))  # padding: the last real frame
        assert not np.array_equal(png(out / files[4]), png(out / files[3])) or label in ("depth", "normal")
    rec = json.loads((out / "export.json").read_text())
    assert rec["clips"][0]["chunks"] == [{"chunk": 0, "frames": 5, "padded": 19}]
    assert rec["settings"]["pad_to"] == 24 and rec["settings"]["env_size"] == [512, 512]
    inv = _official_groups(out, "folder", extensions=(".rgb.png",))
    assert list(inv) == ["clip_s"] and len(inv["clip_s"]) == 24
    assert inv["clip_s"][:5] == [f"clip_s/0000.{t:04d}.rgb.png" for t in range(5)]
    # without the extension their folder grouping mixes every pass into one "video"
    assert len(_official_groups(out, "folder")["clip_s"]) == 24 * 8

    write_run(tmp_path / "long", keys=("clip_l",), T=60)
    out = tmp_path / "cosmos"
    assert run_app("export", str(tmp_path / "long"), "--out", str(out), "--for", "cosmos") == 0
    fwd = _official_groups(out, "webdataset")
    assert list(fwd) == ["clip_l/0000", "clip_l/0001"]
    assert [len([f for f in v if ".basecolor." in f]) for v in fwd.values()] == [57, 3]
    rc = run_app("export", str(tmp_path / "long"), "--out", str(tmp_path / "x"), "--for", "sd")
    assert rc == 2


def test_a_dl3dv_export_reads_back_as_the_clip_through_the_real_clip_reader(tmp_path):
    """--format dl3dv: each clip a DL3DV-style scene that dr.labeling.dl3dv reads back at the clip's camera:
    K and c2w exactly, rgb as the display view linearised (8-bit), the downscaled copies by area averaging."""
    from dr.labeling.dl3dv import find_scenes, load_scene, segment_clip
    from dr.shards import views

    clips = {}
    Tn, Hn, Wn = 2, 32, 48
    K = np.array([[40.0, 0, 24.5], [0, 41.0, 15.5], [0, 0, 1]], np.float32)
    c2w = np.stack([np.eye(4, dtype=np.float32)] * Tn)
    c2w[1, :3, 3] = [0.5, -0.25, 2.0]
    with ShardWriter(tmp_path / "run" / "shards", 0) as w:
        for i, k in enumerate(("clip_a", "clip_b")):
            clips[k] = make_clip(seed=i, T=Tn, H=Hn, W=Wn)
            m = clip_members(k, clips[k])
            m["intrinsics.npy"] = npy_bytes(np.stack([K] * Tn))
            m["c2w.npy"] = npy_bytes(c2w)
            w.add(k, m)
    out = tmp_path / "scenes"
    res = export_run(str(tmp_path / "run"), out, ExportSettings(format="dl3dv"))
    assert sorted(res.exported) == ["clip_a", "clip_b"]
    assert [p.name for p in find_scenes(out)] == ["clip_a", "clip_b"]
    for k, passes in clips.items():
        assert sorted(p.name for p in (out / k).iterdir()) == ["images", "images_2", "transforms.json"]
        full = load_scene(out / k, out)
        assert full.factor == 1 and len(full.frames) == Tn
        clip = segment_clip(full, 0, Tn, 1, Hn, Wn)
        assert np.allclose(clip.K[0], K, atol=1e-5) and np.array_equal(clip.c2w, c2w)
        display = views.rgb_display(passes["rgb"].astype(np.float32))
        want = srgb_to_linear(u8(display) / 255.0)
        assert np.abs(clip.rgb.astype(np.float32) - want).max() < 2e-3
        half = load_scene(out / k, out, covers=(Hn // 2, Wn // 2))  # the copy at half size covers it
        assert half.factor == 2
        small = segment_clip(half, 0, Tn, 1, Hn // 2, Wn // 2)
        area = u8(display).astype(np.float64).reshape(Tn, Hn // 2, 2, Wn // 2, 2, 3).mean((2, 4))
        assert np.abs(small.rgb.astype(np.float32) - srgb_to_linear(np.floor(area + 0.5) / 255.0)).max() < 2e-3
        assert np.allclose(small.K[0], [[20.0, 0, 12.25], [0, 20.5, 7.75], [0, 0, 1]], atol=1e-5)


def srgb_to_linear(x):
    from dr.srgb import srgb_to_linear as f

    return f(np.asarray(x, np.float64))
