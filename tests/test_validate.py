"""`dr-data validate`: a sample that meets the contract passes clean, and each fault, injected one
at a time, is reported by name with its measured number."""

from __future__ import annotations

import json
import tarfile

import numpy as np
import pytest

from conftest import run_app
from dr.shards.codec import npy_bytes, npy_zst_bytes
from dr.shards.reader import Sample
from dr.shards.schema import PASSES, SCHEMA_VERSION, pass_suffix
from dr.shards.validate import check_sample, validate_source, validate_sources
from dr.shards.writer import ShardWriter

T, H, W, HE = 4, 16, 16, 8


def _rot_z(a: float) -> np.ndarray:
    c, s = np.cos(a), np.sin(a)
    return np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]])


def _sphere(key: str = "clip_a") -> tuple[dict, dict]:
    """A unit sphere 3 m in front of a pinhole camera, ray-cast per pixel centre: the passes as
    the renderer stores them (float16, 0 on background), the cameras, the env map and metadata
    shaped like dr.render.clip.clip_metadata's."""
    f = 20.0
    K = np.array([[f, 0, W / 2], [0, f, H / 2], [0, 0, 1]])
    cols, rows = np.meshgrid(np.arange(W) + 0.5, np.arange(H) + 0.5)
    d = np.stack([(cols - W / 2) / f, -(rows - H / 2) / f, -np.ones_like(cols)], -1)  # camera rays, z = -1
    c = np.array([0.0, 0.0, -3.0])
    # |t d - c|^2 = 1 -> t^2 |d|^2 - 2 t d.c + |c|^2 - 1 = 0
    a, b, cc = (d * d).sum(-1), -2 * (d @ c), c @ c - 1
    disc = b * b - 4 * a * cc
    hit = disc >= 0
    t = np.where(hit, (-b - np.sqrt(np.maximum(disc, 0))) / (2 * a), 0)
    p = t[..., None] * d
    n = np.where(hit[..., None], p - c, 0)
    depth = np.where(hit, -p[..., 2], 0)  # planar: distance along -z
    m = hit[..., None]
    base = np.where(m, [0.8, 0.5, 0.2], 0.0)
    shade = np.clip(n @ np.array([0.0, 0.6, 0.8]), 0, None)[..., None]
    rgb = np.where(m, base * shade * 3.0, 0.25)  # background shows the env, as in a render

    def frames(x, dtype):
        return np.repeat(np.asarray(x)[None], T, axis=0).astype(dtype)

    passes = {"rgb": frames(rgb, np.float16), "basecolor": frames(base, np.float16),
              "roughness": frames(np.where(m, 0.4, 0.0), np.float16),
              "metallic": frames(np.where(m, 0.25, 0.0), np.float16), "normal": frames(n, np.float16),
              "depth": frames(depth[..., None], np.float16), "mask": frames(m, np.uint8)}
    c2w = np.tile(np.eye(4), (T, 1, 1))
    c2w[:, :3, :3] = [_rot_z(0.1 * i) for i in range(T)]
    c2w[:, :3, 3] = [[0.1 * i, 0, 1.5] for i in range(T)]
    arrays = {**passes, "env": np.full((HE, 2 * HE, 3), 0.25, np.float16), "c2w": c2w.astype(np.float32),
              "intrinsics": np.tile(K, (T, 1, 1)).astype(np.float32),
              "cam_to_env": np.stack([_rot_z(-0.3) @ _rot_z(0.1 * i) for i in range(T)]).astype(np.float32)}
    meta = {
        "schema_version": SCHEMA_VERSION, "source": "synthetic", "clip_id": key, "run_id": "test_run",
        "seed": 7, "index": 0, "attempt": 0, "spawn_key": [0, 0], "frames": T, "height": H, "width": W, "fps": 24.0,
        "scene_spec": {}, "assets": [],
        "renderer": {"name": "analytic-test", "samples": 1, "denoiser": "none"},
        "passes": {name: {"provenance": "rendered", "dtype": str(p.dtype), "channels": p.channels}
                   for name, p in PASSES.items()},
        "depth_units": "metres", "env": {"height": HE, "width": 2 * HE, "stored": "constant 0.25"},
        "timings_s": {},
    }
    return arrays, meta


def _encode(arrays: dict, meta: dict) -> dict[str, bytes]:
    """Members in the order the renderer writes them."""
    out = {"json": json.dumps(meta).encode()}
    for name in PASSES:
        if name in arrays:
            out[pass_suffix(name)] = npy_zst_bytes(arrays[name])
    if "env" in arrays:
        out["env.npy.zst"] = npy_zst_bytes(arrays["env"])
    for name in ("c2w", "intrinsics", "cam_to_env"):
        if name in arrays:
            out[f"{name}.npy"] = npy_bytes(arrays[name])
    return out


def _sample(arrays: dict, meta: dict, key: str = "clip_a") -> Sample:
    return Sample(key=key, meta=meta, passes={k: v for k, v in arrays.items() if k in PASSES}, env=arrays.get("env"),
                  c2w=arrays.get("c2w"), intrinsics=arrays.get("intrinsics"), cam_to_env=arrays.get("cam_to_env"))


def _write(shards, number: int, keys=("clip_a", "clip_b")):
    with ShardWriter(shards, number) as w:
        for k in keys:
            w.add(k, _encode(*_sphere(k)))
    return shards / f"shard-{number:06d}.tar"


def _surface_pixel(arrays) -> tuple[int, int, int]:
    t, r, c = np.argwhere(arrays["mask"][..., 0] == 1)[0]
    return int(t), int(r), int(c)


def _background_pixel(arrays) -> tuple[int, int, int]:
    t, r, c = np.argwhere(arrays["mask"][..., 0] == 0)[0]
    return int(t), int(r), int(c)


def test_the_analytic_sphere_is_sound():
    arrays, meta = _sphere()
    m = arrays["mask"][..., 0] == 1
    assert 0.2 < m.mean() < 0.8  # both surface and background are tested
    assert check_sample(_sample(arrays, meta)) == []


def _nan_rgb(a, m):
    a["rgb"][0, 0, 0, 0] = np.nan


def _short_normal(a, m):
    a["normal"][_surface_pixel(a)] *= 0.5


def _basecolor_high(a, m):
    a["basecolor"][_surface_pixel(a) + (1,)] = 1.5


def _roughness_on_background(a, m):
    a["roughness"][_background_pixel(a)] = 0.3


def _mask_two(a, m):
    a["mask"][_surface_pixel(a)] = 2


def _rgb_float32(a, m):
    a["rgb"] = a["rgb"].astype(np.float32)


def _depth_narrow(a, m):
    a["depth"] = a["depth"][:, :, :-1]


def _depth_zero_on_surface(a, m):
    a["depth"][_surface_pixel(a)] = 0


def _no_c2w(a, m):
    del a["c2w"]


def _no_depth(a, m):
    del a["depth"]


def _missing_pass_is_fine_when_recorded(a, m):
    del a["depth"]
    m["passes"]["depth"]["provenance"] = "missing"


def _scaled_c2w(a, m):
    a["c2w"][2, :3, :3] *= 1.01


def _reflected_cam_to_env(a, m):
    a["cam_to_env"][1, :, 0] *= -1


def _intrinsics_bad(a, m):
    a["intrinsics"][:, 1, 1] = -10
    a["intrinsics"][3, 2, 0] = 0.5


def _c2w_last_row(a, m):
    a["c2w"][0, 3, 2] = 1.0


def _env_negative(a, m):
    a["env"][0, 0, 0] = -1


def _env_not_2_to_1(a, m):
    a["env"] = a["env"][:, :HE]


def _wrong_clip_id(a, m):
    m["clip_id"] = "clip_z"


def _frames_mismatch(a, m):
    m["frames"] = T + 1


def _bad_schema_version(a, m):
    m["schema_version"] = 99


FAULTS = [
    (_nan_rgb, f"rgb: 1 of {T * H * W * 3} values (0.0326%) are not finite (NaN or inf)"),
    (_short_normal, "normal: 1 of "),
    (_short_normal, "surface pixels (0.{}) are not unit length (| |n| - 1 | up to 0.5, tolerance 0.01)"),
    (_basecolor_high, "max 1.5)"),
    (_roughness_on_background, "roughness: 1 of "),
    (_roughness_on_background, "background pixels (0."),
    (_mask_two, f"mask: 1 of {T * H * W} values (0.0977%) are not 0 or 1 (e.g. 2)"),
    (_rgb_float32, "rgb dtype is float32, expected float16"),
    (_depth_narrow, f"depth shape is ({T}, {H}, {W - 1}, 1), expected ({T}, {H}, {W}, 1)"),
    (_depth_zero_on_surface, "surface pixels (0.{}) are not > 0 (min 0)"),
    (_no_c2w, "missing member clip_a.c2w.npy"),
    (_no_depth, "missing member clip_a.depth.npy.zst (metadata says rendered)"),
    (_scaled_c2w, f"c2w: rotation part of 1 of {T} frames is not orthonormal (max |R R^T - I| 0.0201 at frame 2"),
    (_reflected_cam_to_env, f"cam_to_env: 1 of {T} frames have determinant -1 (a reflection"),
    (_intrinsics_bad, "intrinsics: fy is not positive (min -10)"),
    (_intrinsics_bad, "intrinsics: last row is not [0, 0, 1] (off by up to 0.5)"),
    (_c2w_last_row, "c2w: last row is not [0, 0, 0, 1] (off by up to 1)"),
    (_env_negative, "env: 1 of 384 values (0.26%) are negative (min -1)"),
    (_env_not_2_to_1, f"env shape is ({HE}, {HE}, 3), expected (He, 2 He, 3)"),
    (_wrong_clip_id, "metadata clip_id is 'clip_z', not the sample key"),
    (_frames_mismatch, f"rgb shape is ({T}, {H}, {W}, 3), expected ({T + 1}, {H}, {W}, 3)"),
    (_frames_mismatch, f"c2w shape is ({T}, 4, 4), expected ({T + 1}, 4, 4)"),
    (_bad_schema_version, f"metadata schema_version is 99, expected {SCHEMA_VERSION}"),
]


@pytest.mark.parametrize("fault, expected", FAULTS, ids=[f"{f.__name__}-{i}" for i, (f, _) in enumerate(FAULTS)])
def test_each_fault_is_named(fault, expected):
    arrays, meta = _sphere()
    fault(arrays, meta)
    problems = check_sample(_sample(arrays, meta))
    pre, _, post = expected.partition("{}")
    assert any(p.startswith("clip_a: ") and pre in p and post in p for p in problems), problems


def test_each_fault_alone_and_nothing_else():
    """A fault is reported once, not echoed by other checks (a short normal is not also a mask fault)."""
    for fault in (_nan_rgb, _short_normal, _basecolor_high, _roughness_on_background, _mask_two, _rgb_float32,
                  _depth_narrow, _no_c2w, _no_depth, _env_negative, _wrong_clip_id, _bad_schema_version):
        arrays, meta = _sphere()
        fault(arrays, meta)
        assert len(check_sample(_sample(arrays, meta))) == 1, fault.__name__
    arrays, meta = _sphere()
    _missing_pass_is_fine_when_recorded(arrays, meta)
    assert check_sample(_sample(arrays, meta)) == []


def test_offender_counts_are_measured():
    arrays, meta = _sphere()
    surf = np.argwhere(arrays["mask"][..., 0] == 1)
    for t, r, c in surf[:10]:
        arrays["normal"][t, r, c] *= 0.98  # off by 0.02, twenty times float16's rounding
    n_surf = len(surf)
    (p,) = check_sample(_sample(arrays, meta))
    assert f"normal: 10 of {n_surf} surface pixels ({100 * 10 / n_surf:.3g}%) are not unit length" in p
    assert "up to 0.02" in p


def test_a_good_run_validates_clean_and_streams(tmp_path):
    run_dir = tmp_path / "run"
    _write(run_dir / "shards", 0, ("clip_a", "clip_b"))
    _write(run_dir / "shards", 1, ("clip_c",))
    seen = []
    report = validate_source(str(run_dir), on_sample=seen.append)
    assert report.ok and report.problems == [] and report.notes == []
    assert (report.shards, report.samples, seen) == (2, 3, ["clip_a", "clip_b", "clip_c"])
    # the same data named as a shards folder, an index.json and one shard (with its index next to it)
    assert validate_source(str(run_dir / "shards")).samples == 3
    assert validate_source(str(run_dir / "shards" / "index.json")).ok
    one = validate_source(str(run_dir / "shards" / "shard-000001.tar"))
    assert one.ok and (one.shards, one.samples, one.notes) == (1, 1, [])
    d = json.loads(report.to_json())
    assert d == {"ok": True, "sources": [str(run_dir)], "shards": 2, "samples": 3, "problems": [], "notes": []}


def test_reads_fsspec_urls(tmp_path):
    import fsspec

    shards = tmp_path / "shards"
    _write(shards, 0)
    mem = fsspec.filesystem("memory")
    for f in shards.iterdir():
        mem.pipe(f"/validate_run/shards/{f.name}", f.read_bytes())
    report = validate_source("memory://validate_run")
    assert report.ok and report.samples == 2
    mem.pipe("/validate_run/shards/shard-000000.tar", (shards / "shard-000000.tar").read_bytes()[:-1024])
    bad = validate_source("memory://validate_run")
    assert any("index.json says" in p.problem for p in bad.problems)


def test_a_bad_sample_in_a_shard_is_reported_with_its_shard_and_key(tmp_path):
    arrays, meta = _sphere("clip_b")
    _nan_rgb(arrays, meta)
    with ShardWriter(tmp_path, 0) as w:
        w.add("clip_a", _encode(*_sphere("clip_a")))
        w.add("clip_b", _encode(arrays, meta))
    report = validate_source(str(tmp_path))
    assert not report.ok and report.samples == 2
    (p,) = report.problems
    assert p.shard.endswith("shard-000000.tar") and p.key == "clip_b" and p.problem.startswith("rgb: 1 of ")


def test_duplicate_key_across_shards(tmp_path):
    _write(tmp_path, 0, ("clip_a", "clip_b"))
    _write(tmp_path, 1, ("clip_c", "clip_a"))
    report = validate_source(str(tmp_path))
    (p,) = report.problems
    assert p.key == "clip_a" and p.shard.endswith("shard-000001.tar")
    assert p.problem == f"duplicate key (also in {tmp_path}/shard-000000.tar)"
    # and across sources given together
    _write(tmp_path / "other", 0, ("clip_b",))
    report = validate_sources([str(tmp_path / "other"), str(tmp_path / "shard-000000.tar")])
    assert [(p.key, p.problem) for p in report.problems] == [
        ("clip_b", f"duplicate key (also in {tmp_path}/other/shard-000000.tar)")]


def test_a_flipped_byte_is_a_sha256_mismatch(tmp_path):
    shard = _write(tmp_path, 0)
    data = bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 0x01
    shard.write_bytes(bytes(data))
    report = validate_source(str(tmp_path))
    assert any(p.problem.startswith("sha256 ") and "differs from index.json's" in p.problem for p in report.problems)


def test_a_truncated_shard_is_a_problem_not_a_crash(tmp_path):
    shard = _write(tmp_path, 0)
    size = shard.stat().st_size
    with tarfile.open(shard) as tar:
        rgb_b = tar.getmember("clip_b.rgb.npy.zst")
    cut = rgb_b.offset_data + 100  # inside a member's data
    with open(shard, "r+b") as f:
        f.truncate(cut)
    report = validate_source(str(tmp_path))
    problems = [p.problem for p in report.problems]
    assert problems[0] == "cannot be read after 1 samples: ReadError: unexpected end of data", problems
    assert problems[1:3] == [f"is {cut} bytes, index.json says {size}", problems[2]]
    assert problems[2].startswith("sha256 ") and len(problems) == 3


def test_a_shard_cut_between_samples_without_an_index(tmp_path):
    """tarfile stops silently at a missing header: the end-of-archive check catches it."""
    shard = _write(tmp_path / "w", 0)
    with tarfile.open(shard) as tar:
        second = next(m for m in tar.getmembers() if m.name.startswith("clip_b."))
    lone = tmp_path / "lone" / "shard-000000.tar"
    lone.parent.mkdir()
    lone.write_bytes(shard.read_bytes()[:second.offset])
    report = validate_source(str(lone))
    assert [n.note for n in report.notes] == [
        "no index.json next to it: bytes, sha256 and keys not checked against an index"]
    end = f"tar ends without its end-of-archive blocks at byte {second.offset} (empty header)"
    assert [p.problem for p in report.problems] == [f"{end}: truncated or corrupt after 1 samples"]
    # the whole shard alone: no index is a note, not a failure
    (tmp_path / "w" / "index.json").unlink()
    alone = validate_source(str(shard))
    assert alone.ok and alone.samples == 2 and len(alone.notes) == 1


def test_a_corrupt_member_and_a_missing_member(tmp_path):
    members = _encode(*_sphere("clip_a"))
    members["depth.npy.zst"] = members["depth.npy.zst"][:20]
    del members["intrinsics.npy"]
    with ShardWriter(tmp_path, 0) as w:
        w.add("clip_a", members)
        w.add("clip_b", _encode(*_sphere("clip_b")))
    report = validate_source(str(tmp_path))
    problems = [(p.key, p.problem) for p in report.problems]
    assert problems[0][0] == "clip_a" and problems[0][1].startswith("member clip_a.depth.npy.zst cannot be decoded: ")
    assert ("clip_a", "missing member clip_a.depth.npy.zst (metadata says rendered)") in problems
    assert ("clip_a", "missing member clip_a.intrinsics.npy") in problems
    assert report.samples == 2 and all(k == "clip_a" for k, _ in problems)


def test_index_and_folder_disagree(tmp_path):
    _write(tmp_path, 0, ("clip_a",))
    _write(tmp_path, 1, ("clip_b",))
    _write(tmp_path, 2, ("clip_c",))
    index = json.loads((tmp_path / "index.json").read_text())
    index["shards"] = [e for e in index["shards"] if e["name"] != "shard-000001.tar"]  # an index that missed one
    index["shards"][0]["keys"] = ["clip_a", "clip_x"]
    index["samples"] = 2
    (tmp_path / "index.json").write_text(json.dumps(index))
    (tmp_path / "shard-000002.tar").unlink()
    (tmp_path / "shard-000003.tar.partial").write_bytes(b"\0" * 512)
    report = validate_source(str(tmp_path))
    got = sorted((p.shard.rpartition("/")[2], p.problem) for p in report.problems)
    assert got == [("shard-000000.tar", "keys differ from index.json: missing ['clip_x']"),
                   ("shard-000001.tar", "shard is not listed in index.json"),
                   ("shard-000002.tar", "listed in index.json but not there")]
    assert [(n.shard.rpartition("/")[2], n.note) for n in report.notes] == [
        ("shard-000003.tar.partial", "unfinished shard, not part of the dataset")]
    assert report.samples == 2  # the unlisted shard is still checked


def test_a_run_without_shards_and_shards_without_an_index(tmp_path):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "run.json").write_text("{}")
    empty = validate_source(str(tmp_path / "run"))
    assert empty.ok and empty.shards == 0 and [n.note for n in empty.notes] == ["no shards"]
    _write(tmp_path / "loose", 0, ("clip_a",))
    (tmp_path / "loose" / "index.json").unlink()
    loose = validate_source(str(tmp_path / "loose"))
    assert [p.problem for p in loose.problems] == ["no index.json: the shards cannot be read as a dataset"]
    assert loose.samples == 1
    both = validate_sources([str(tmp_path / "loose"), str(tmp_path / "loose" / "shard-000000.tar")])
    assert both.shards == 1 and "named more than once; checked once" in [n.note for n in both.notes]


def test_neither_shard_nor_folder_is_a_user_error(tmp_path):
    from dr.errors import UserError

    (tmp_path / "notes.txt").write_text("x")
    (tmp_path / "empty").mkdir()
    for p in (tmp_path / "nope", tmp_path / "notes.txt", tmp_path / "empty"):
        with pytest.raises(UserError):
            validate_source(str(p))


# --- the command ------------------------------------------------------------------------------


def _cli(*args: str) -> int:
    return run_app("validate", *args)


def test_cli_exit_codes_and_json(tmp_path, capsys):
    _write(tmp_path / "good" / "shards", 0)
    assert _cli(str(tmp_path / "good")) == 0
    out, err = capsys.readouterr()
    assert out == "" and "valid 2 samples in 1 shards" in err

    arrays, meta = _sphere("clip_a")
    _short_normal(arrays, meta)
    with ShardWriter(tmp_path / "bad", 0) as w:
        w.add("clip_a", _encode(arrays, meta))
    assert _cli(str(tmp_path / "bad"), "--json") == 1
    out, err = capsys.readouterr()
    report = json.loads(out)
    assert report["ok"] is False and report["samples"] == 1
    (p,) = report["problems"]
    assert p["key"] == "clip_a" and p["problem"].startswith("normal: 1 of ") and "up to 0.5" in p["problem"]
    assert "invalid 1 samples in 1 shards: 1 problems" in err and "normal: 1 of" in err

    assert _cli(str(tmp_path / "nope")) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.count("\n") == 1 and err.startswith("error: ") and "not found" in err
