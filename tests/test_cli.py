"""The dr-data command line as users run it: real processes, exit codes, stdout and stderr."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from dr.config import config_hash, resolve_config
from dr.scenes.config import ScenesSampleConfig
from dr.scenes.sampler import sample_scene
from conftest import run_cli


def _listing(path):
    return sorted(str(p.relative_to(path)) for p in path.rglob("*"))


@pytest.mark.parametrize("args, says", [
    (["scenes", "sample", "--index", "-1"], "--index"),
    (["scenes", "sample", "--seed", "-5"], "--seed"),
    (["scenes", "sample", "--preset", "huge"], "unknown preset 'huge'"),
    (["scenes", "sample", "--set", "scene.frames"], "malformed --set"),
    (["scenes", "sample", "--set", "scene.frames=zero"], "scene.frames"),
    (["scenes", "sample", "--set", "scene.nope=1"], "unknown key scene.nope"),
    (["scenes", "sample", "--manifest", "MISSING.jsonl"], "does not exist"),
    (["scenes", "sample", "--manifest", "EMPTY.jsonl"], "lists no assets"),
    (["scenes", "sample", "--manifest", "GARBAGE.jsonl"], "line 1 is not an asset record"),
    (["scenes", "sample", "--config", "MISSING.yaml"], "does not exist"),
    (["scenes", "sample", "--n", "0"], "--n"),
    (["scenes", "sample", "--n", "3", "--out", "EMPTY.jsonl/x.jsonl"], "is a file, not a folder"),
    (["scenes", "sample", "--set", "preset=tiny"], "--preset NAME"),
    (["scenes", "sample", "--set", "scene.materials.roughness=[0, 2]"], "roughness"),
    (["scenes", "sample", "--set", "scene.camera.fov_deg=[.nan, .nan]"], "finite"),
    (["scenes", "sample", "--set", "scene.objects.asset_size_m=[0, 0]"], "asset_size_m"),
    (["scenes", "sample", "--manifest", "BUILTIN", "--n", "2", "--out", "x.jsonl", "--set", "scene.camera.min_height_m=100",
      "--set", "scene.objects.max_attempts=2"], "cannot be met"),
    (["scenes", "sample", "--manifest", "BUILTIN", "--set", "scene.objects.primitives_per_scene=[3, 3]",
      "--set", "scene.objects.primitive_size_m=[3, 3]", "--set", "scene.objects.max_attempts=3"], "cannot be met"),
    (["assets", "build"], "nothing to build"),
    (["assets", "build", "--materials", "MISSING"], "--out FILE is required"),
    (["assets", "build", "--materials", "MISSING", "--out", "m.jsonl"], "materials folder"),
    (["assets", "build", "--hdris", "EMPTYDIR", "--out", "m.jsonl"], "no .exr or .hdr files"),
    (["assets", "build", "--objaverse-cache", "EMPTYDIR", "--out", "m.jsonl"], "not an Objaverse cache"),
    (["assets", "build", "--builtin", "--out", "EMPTYDIR"], "is a folder"),
    (["assets", "build", "--builtin", "--set", "probe.timeout_s=-1"], "probe.timeout_s"),
    (["assets", "build", "--bogus"], "No such option"),
    (["assets", "show", "MISSING.jsonl"], "does not exist"),
    (["assets", "show", "EMPTY.jsonl"], "lists no assets"),
    (["assets", "objaverse", "--all-objects", "--download-dir", "dl"], "--limit"),
])
def test_bad_input_is_one_line_exit_2_and_writes_nothing(tmp_path, builtin_manifest, args, says):
    work = tmp_path / "work"
    work.mkdir()
    (work / "EMPTY.jsonl").write_text("")
    (work / "GARBAGE.jsonl").write_text('{"id": 3}\n')
    (work / "EMPTYDIR").mkdir()
    args = [str(builtin_manifest.path) if a == "BUILTIN" else a for a in args]
    before = _listing(work)
    cache = tmp_path / "fresh-cache"  # a cache of its own: bad input must not create it either
    r = run_cli(*args, cwd=work, env={"DR_CACHE_DIR": str(cache)})
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert r.stderr.count("\n") == 1 and r.stderr.startswith("error: "), r.stderr
    assert says in r.stderr
    assert "Traceback" not in r.stderr + r.stdout and r.stdout == ""
    assert _listing(work) == before and not cache.exists()


def test_help_explains_options_with_units_and_defaults():
    top = run_cli("--help")
    assert top.returncode == 0 and "assets" in top.stdout and "scenes" in top.stdout
    sample = " ".join(run_cli("scenes", "sample", "--help").stdout.split())
    for text in ("--seed", "--index", "--preset", "512x512", "--set", "--print-config", "--manifest", "default: 0"):
        assert text in sample, text
    build = " ".join(run_cli("assets", "build", "--help").stdout.split())
    for text in ("seconds", "--max-triangles", "--workers", "--objaverse-cache", "--materials", "--hdris"):
        assert text in build, text
    assert run_cli("assets").returncode == 0  # a group alone shows its help


def test_print_config_is_the_effective_config_and_hash():
    r = run_cli("scenes", "sample", "--preset", "tiny", "--set", "scene.frames=6", "--print-config")
    assert r.returncode == 0
    cfg = resolve_config(ScenesSampleConfig, preset="tiny", sets=["scene.frames=6"])
    assert r.stdout.rstrip().endswith(f"# config hash: {config_hash(cfg)}")
    assert "frames: 6  # frames per clip" in r.stdout and "width: 64  # image width, pixels" in r.stdout
    # the scene section's hash is the one a SceneSpec sampled with these settings carries
    spec = json.loads(run_cli("scenes", "sample", "--preset", "tiny", "--set", "scene.frames=6").stdout)
    assert f"# scene section hash: {spec['scene_config_hash']}" in r.stdout


def test_sample_prints_the_same_spec_as_the_library(builtin_manifest, tmp_path):
    r = run_cli("scenes", "sample", "--seed", "4", "--index", "9")
    assert r.returncode == 0, r.stderr
    cfg = resolve_config(ScenesSampleConfig).scene
    assert json.loads(r.stdout) == json.loads(sample_scene(cfg, builtin_manifest, 4, 9).to_json())
    out = tmp_path / "many.jsonl"
    r = run_cli("scenes", "sample", "--seed", "4", "--index", "7", "--n", "5", "--out", str(out), "--preset", "tiny",
                "--manifest", str(builtin_manifest.path))
    assert r.returncode == 0, r.stderr
    tiny = resolve_config(ScenesSampleConfig, preset="tiny").scene
    assert out.read_text().splitlines() == [sample_scene(tiny, builtin_manifest, 4, k).to_json() for k in range(7, 12)]
    assert "wrote 5 scene specs" in " ".join(r.stderr.split())


def test_show_prints_counts(builtin_manifest):
    r = run_cli("assets", "show", str(builtin_manifest.path), env={"COLUMNS": "120"})
    assert r.returncode == 0
    rows = {tuple(c.strip() for c in line.strip("│┃ ").split("│")) for line in r.stdout.splitlines() if "│" in line}
    assert ("material", "builtin", "24", "0") in rows and ("hdri", "builtin", "8", "0") in rows
    j = json.loads(run_cli("assets", "show", "--json").stdout)  # default: the built-in manifest
    assert j["ok"] == len(builtin_manifest) and j["quarantined"] == 0


def test_importing_the_package_stays_light():
    code = ("import sys, dr, dr.cli.data_app, dr.scenes.sampler, dr.assets_manifest.build; "
            "heavy = {'bpy', 'torch', 'ray', 'trimesh', 'cv2', 'OpenEXR'} & set(sys.modules); print(sorted(heavy))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_out_folders_are_made(tmp_path, builtin_manifest):
    out = tmp_path / "new" / "deeper" / "s.jsonl"
    r = run_cli("scenes", "sample", "--n", "2", "--out", str(out), "--preset", "tiny", "--manifest", str(builtin_manifest.path))
    assert r.returncode == 0, r.stderr
    assert len(out.read_text().splitlines()) == 2 and [p.name for p in out.parent.iterdir()] == ["s.jsonl"]


def test_the_cluster_extra_installs_what_ray_client_addresses_need():
    # README: `--ray-address ray://head:10001`; Ray refuses it without its client extra (grpcio), which
    # an install of `.[cluster]` alone must bring, not another extra by chance
    import importlib.metadata

    from packaging.requirements import Requirement

    reqs = [Requirement(r) for r in importlib.metadata.requires("dr")]
    ray = [r for r in reqs if r.name == "ray" and r.marker and r.marker.evaluate({"extra": "cluster"})]
    assert ray and "client" in ray[0].extras, ray
    from ray.client_builder import ClientBuilder

    assert ClientBuilder("ray://127.0.0.1:1").address == "ray://127.0.0.1:1"  # no dependency error
