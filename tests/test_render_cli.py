"""`dr-data render` as a user runs it: one spec in, a one-clip run folder out."""

from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import run_cli
from dr.shards.reader import iter_samples


@pytest.fixture(scope="module")
def spec_file(tmp_path_factory, builtin_manifest):
    from dr.config import resolve_config
    from dr.scenes.config import ScenesSampleConfig
    from dr.scenes.sampler import sample_scene

    cfg = resolve_config(ScenesSampleConfig, "tiny", None, ["scene.frames=2", "scene.width=48", "scene.height=32"])
    p = tmp_path_factory.mktemp("spec") / "spec.json"
    p.write_text(sample_scene(cfg.scene, builtin_manifest, seed=3, index=1).to_json(indent=2))
    return p


def test_render_writes_a_one_clip_run_and_nothing_in_home(tmp_path, spec_file):
    home = tmp_path / "home"
    home.mkdir()
    out = tmp_path / "out"
    r = run_cli("render", str(spec_file), "--out", str(out), "--preset", "tiny", "--save-blend",
                env={"HOME": str(home), "XDG_CONFIG_HOME": str(home / ".config")})
    assert r.returncode == 0, r.stderr
    assert "on CPU" in r.stderr  # auto reports what it got
    assert list(home.iterdir()) == [], "something was written to the home folder"
    index = json.loads((out / "shards" / "index.json").read_text())
    assert [s["name"] for s in index["shards"]] == ["shard-000000.tar"] and index["samples"] == 1
    assert (out / "preview.png").stat().st_size > 0 and (out / "s3_00000001.blend").is_file()
    assert (out / "logs" / "s3_00000001.log").read_text().count("Saved:") == 2  # Blender's output, per frame
    assert sorted(p.name for p in out.iterdir()) == ["logs", "preview.png", "s3_00000001.blend", "shards"]
    s = next(iter_samples(str(out)))
    assert s.key == "s3_00000001" and s.passes["rgb"].shape == (2, 32, 48, 3)
    assert s.meta["renderer"]["samples"] == 4 and s.meta["renderer"]["device"] == "cpu"
    assert s.meta["scene_spec"] == json.loads(spec_file.read_text())
    assert np.allclose(s.c2w, np.asarray(s.meta["scene_spec"]["camera"]["c2w"], np.float32))
    # the same folder again: refused, nothing touched
    before = (out / "shards" / "shard-000000.tar").read_bytes()
    r = run_cli("render", str(spec_file), "--out", str(out), "--preset", "tiny")
    assert r.returncode == 2 and "already holds a rendered clip" in r.stderr
    assert (out / "shards" / "shard-000000.tar").read_bytes() == before


def test_explicit_gpu_that_is_not_there_fails_in_one_line(tmp_path, spec_file):
    r = run_cli("render", str(spec_file), "--out", str(tmp_path / "o"), "--device", "optix", "--preset", "tiny")
    assert r.returncode == 2
    assert r.stderr.strip().splitlines() == [
        "error: --device optix: Cycles finds no OPTIX device on this machine (only the CPU); use --device auto or --device cpu"]
    assert not (tmp_path / "o" / "shards").exists()


@pytest.mark.parametrize("args, message", [
    (["missing.json"], "spec file"),
    (["BAD"], "is not a valid scene spec"),
    (["MULTI"], "holds 2 scene specs"),
    (["SPEC", "--device", "metal"], "--device 'metal'"),
    (["SPEC", "--set", "render.samples=0"], "render.samples"),
    (["SPEC", "--preset", "huge"], "unknown preset"),
])
def test_bad_input_is_one_line_and_status_2(tmp_path, spec_file, args, message):
    bad = tmp_path / "bad.json"
    bad.write_text('{"clip_id": "x"}')
    multi = tmp_path / "specs.jsonl"
    one = json.dumps(json.loads(spec_file.read_text()))
    multi.write_text(one + "\n" + one + "\n")
    args = [{"SPEC": str(spec_file), "BAD": str(bad), "MULTI": str(multi)}.get(a, a) for a in args]
    r = run_cli("render", *args, "--out", str(tmp_path / "o"))
    assert r.returncode == 2, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and message in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "o").exists()
