"""The run folder's parts without Ray: the plan, markers and their scan, the store's atomic
writes (local and fsspec), the identity that refuses a different config."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from dr.pipeline import markers as mk
from dr.pipeline.config import GenerateConfig, identity, identity_diff
from dr.pipeline.plan import Plan, index_of, read_plan_header, write_plan
from dr.pipeline.run_store import RunStore


@pytest.fixture(params=["local", "memory"])
def store(request, tmp_path):
    if request.param == "local":
        yield RunStore(str(tmp_path / "run"))
        return
    import fsspec

    fs = fsspec.filesystem("memory")
    root = f"memory://dr-test-{tmp_path.name}"
    yield RunStore(root)
    fs.rm(root.removeprefix("memory://"), recursive=True)


def test_the_plan_puts_clip_k_in_shard_k_div_K_and_writes_every_row(store):
    plan = Plan(n=10, seed=3, clips_per_shard=4, identity_hash="abc")
    assert plan.shards == 3
    assert [plan.shard_of(k) for k in range(10)] == [0, 0, 0, 0, 1, 1, 1, 1, 2, 2]
    assert list(plan.shard_indices(2)) == [8, 9]
    assert index_of(plan.key(7)) == 7 and plan.key(7) == "s3_00000007"
    store.makedirs()
    write_plan(store, plan)
    rows = store.read_text("plan").splitlines()
    assert json.loads(rows[0]) == plan.header() == read_plan_header(store)
    assert [json.loads(r) for r in rows[1:]] == [
        {"index": k, "clip_id": plan.key(k), "seed": 3, "shard": k // 4} for k in range(10)]


def test_markers_scan_gives_done_failed_retries_running_and_quarantine(store):
    store.makedirs("markers")
    mk.write_marker(store, mk.done_name("s0_00000000"), {"key": "s0_00000000", "sha256": "x"})
    mk.write_marker(store, mk.failed_name("s0_00000001", 0),
                    {"key": "s0_00000001", "attempt": 0, "kind": "asset", "asset_id": "obj/a", "reason": "bad glb"})
    mk.write_marker(store, mk.failed_name("s0_00000001", 1),
                    {"key": "s0_00000001", "attempt": 1, "kind": "asset", "asset_id": "hdri/b", "reason": "bad exr"})
    mk.write_marker(store, mk.failed_name("s0_00000002", 0), {"key": "s0_00000002", "attempt": 0, "kind": "asset",
                                                              "asset_id": "obj/a", "reason": "bad glb"})
    mk.write_marker(store, mk.retry_name("s0_00000003", 0, 0), {"key": "s0_00000003", "kind": "crash"})
    mk.write_marker(store, mk.retry_name("s0_00000003", 0, 1), {"key": "s0_00000003", "kind": "timeout"})
    mk.write_marker(store, mk.running_name("s0_00000003"), {"key": "s0_00000003"})
    mk.write_marker(store, mk.running_name("s0_00000000"), {"key": "s0_00000000"})  # stale: it is done
    store.write_text("markers/.s0_00000004.done.json.tmp-1234", "half")  # not a marker
    state = mk.scan(store)
    assert state.done == {"s0_00000000"}
    assert state.next_attempt("s0_00000001") == 2 and state.next_attempt("s0_00000009") == 0
    assert state.excluded_assets("s0_00000001") == ["hdri/b", "obj/a"]
    assert state.failed_attempts == 3 and state.retries == 2 and state.running == {"s0_00000003"}
    assert state.retry_count("s0_00000003") == 2 and state.retry_count("s0_00000000") == 0
    assert state.quarantine == {"hdri/b": "bad exr", "obj/a": "bad glb"}
    recs = list(mk.iter_done_records(store, ["s0_00000000", "s0_00000005"], batch=1))
    assert recs == [{"key": "s0_00000000", "sha256": "x"}]


def test_writes_are_atomic_and_listing_sees_only_whole_files(store, tmp_path):
    store.write_text("a/b.json", "1")
    store.write_text("a/b.json", "2")
    assert store.read_text("a/b.json") == "2" and store.list("a") == ["b.json"]
    src = tmp_path / "local.bin"
    src.write_bytes(b"x" * 5000)
    store.put_file(src, "clips/c.tar", move=True)
    assert not src.exists() and store.read_bytes("clips/c.tar") == b"x" * 5000
    store.remove(["clips/c.tar", "clips/never.tar"])
    assert store.list("clips") == [] and store.list("nothing") == []
    if store.local:
        leftovers = [p.name for p in store.local_path().rglob("*") if ".tmp-" in p.name]
        assert leftovers == []


def test_identity_covers_what_decides_the_clips_and_names_the_difference():
    from dr.config import resolve_config

    tiny = resolve_config(GenerateConfig, "tiny")
    base = identity(tiny, 10, 0, 16, "m" * 64, False)
    assert base == identity(resolve_config(GenerateConfig, "tiny", sets=["run.max_retries=9",
                                                                         "worker.clip_timeout_s=5"]), 10, 0, 16, "m" * 64, False)
    other = identity(resolve_config(GenerateConfig, "tiny", sets=["scene.frames=5"]), 10, 0, 16, "m" * 64, False)
    assert identity_diff(base, other) == ["scene.frames: 4 in the run, 5 now"]
    assert identity_diff(base, identity(tiny, 10, 1, 16, "m" * 64, False)) == ["seed: 0 in the run, 1 now"]
    assert identity_diff(base, identity(tiny, 10, 0, 16, "n" * 64, True))[0].startswith("dry_run")


def test_rays_temp_folder_is_in_the_run_or_the_cache_never_the_system_temp(tmp_path, monkeypatch):
    from dr.errors import UserError
    from dr.pipeline.ray_cluster import ray_temp_dir

    monkeypatch.delenv("DR_RAY_TEMP_DIR", raising=False)
    # paths only: ray_temp_dir creates nothing
    short_run, short_cache = Path("/runs/r"), Path("/cache/c")
    long_run, long_cache = Path("/runs/" + "r" * 60), Path("/cache/" + "c" * 60)
    assert ray_temp_dir(short_run, long_cache) == short_run / ".ray"
    got = ray_temp_dir(long_run, short_cache)
    assert got.parent == short_cache / "ray" and len(str(got)) + 64 <= 107
    with pytest.raises(UserError, match="set DR_RAY_TEMP_DIR"):
        ray_temp_dir(long_run, long_cache)  # was: a folder in the system's temp folder
    monkeypatch.setenv("DR_RAY_TEMP_DIR", str(tmp_path / "mine"))
    assert ray_temp_dir(long_run, long_cache) == tmp_path / "mine"


def test_a_run_is_not_resumed_under_another_dr_or_blender_version_or_device_kind(tmp_path, monkeypatch, builtin_manifest):
    import dr
    from dr.config import resolve_config
    from dr.errors import UserError
    from dr.pipeline import generate as g
    from dr.pipeline.config import device_change, device_kind

    req = g.Request(n=2, out=str(tmp_path / "run"), cfg=resolve_config(GenerateConfig, "tiny"), dry_run=True,
                    manifest=str(builtin_manifest.path))
    setup = g.inspect(req)
    assert setup.identity["versions"]["dr"] == dr.__version__
    setup.device_kind = device_kind(gpu=True, dry_run=False)
    g.commit(setup, req)
    g.inspect(req)  # the same installation resumes
    monkeypatch.setattr(dr, "__version__", dr.__version__ + ".post1")
    with pytest.raises(UserError, match=r"versions\.dr: '.*' in the run, '.*\.post1' now"):
        g.inspect(req)
    monkeypatch.undo()
    import importlib.metadata as md

    real = md.version
    monkeypatch.setattr(md, "version", lambda dist: "9.9.9" if dist == "bpy" else real(dist))
    with pytest.raises(UserError, match=r"versions\.blender: .* in the run, '9\.9\.9' now"):
        g.inspect(req)
    existing = json.loads((tmp_path / "run" / "run.json").read_text())
    assert existing["device_kind"] == "gpu"
    assert device_change(existing, device_kind(gpu=False, dry_run=False)) == "device_kind: 'gpu' in the run, 'cpu' now"
    assert device_change(existing, "gpu") is None
