"""The run engine's executors (dr.pipeline.executor): the driver gets the same run from Ray and
from the in-process executor, whatever the number of clips per task, and a task lost on the way
(a worker's death) is retried without changing a byte."""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from pathlib import Path

import pytest

from conftest import run_cli
from dr.config import resolve_config
from dr.pipeline import engine
from dr.pipeline import generate as g
from dr.pipeline.config import GenerateConfig
from dr.pipeline.executor import InProcessExecutor, TaskFailed, TaskKind, TaskLost

N, K = 40, 8  # clips, clips per shard


def request(out: Path, *sets: str) -> g.Request:
    cfg = resolve_config(GenerateConfig, "tiny", None, ["run.retry_backoff_s=0", *sets])
    return g.Request(n=N, out=str(out), cfg=cfg, clips_per_shard=K, dry_run=True)


def shard_digests(run: Path) -> dict[str, str]:
    index = json.loads((run / "shards" / "index.json").read_text())
    return {e["name"]: e["sha256"] for e in index["shards"]}


@pytest.fixture(scope="module")
def ray_run(builtin_manifest, tmp_path_factory):
    """The reference: a dry run through the CLI on a local Ray, one clip per task (as before
    clips were batched)."""
    ray_tmp = tempfile.mkdtemp(prefix="drray-", dir="/tmp")
    try:
        out = tmp_path_factory.mktemp("ray") / "run"
        r = run_cli("generate", "--n", str(N), "--out", str(out), "--preset", "tiny", "--clips-per-shard", str(K),
                    "--dry-run", "--set", "run.clips_per_task=1", env={"DR_RAY_TEMP_DIR": ray_tmp}, timeout=600)
        assert r.returncode == 0, r.stderr[-2000:]
        yield out
    finally:
        shutil.rmtree(ray_tmp, ignore_errors=True)


@pytest.mark.parametrize("per_task", [None, 3])
def test_the_in_process_executor_makes_the_run_ray_makes(ray_run, tmp_path, per_task):
    sets = [f"run.clips_per_task={per_task}"] if per_task else []
    out = tmp_path / "run"  # the same folder name: the run id, which samples carry, is the same
    ex = InProcessExecutor()
    rep = g.generate(request(out, *sets), executor=ex)
    assert rep.done == N and rep.shards == N // K and rep.lost == []
    assert "driver's process" in rep.resources
    want = shard_digests(ray_run)
    assert len(want) == N // K
    assert shard_digests(out) == want  # byte for byte, every shard
    # the batching: 64 slots per task by default on dry runs, so one task here
    assert ex.ran["clip"] == (1 if per_task is None else -(-N // 3))
    assert ex.ran["merge"] == N // K
    assert sorted(p.name for p in (out / "markers").glob("*.done.json")) == \
        sorted(p.name for p in (ray_run / "markers").glob("*.done.json"))


class LosesFirstTask(InProcessExecutor):
    """The first clip task "dies" before it runs (its worker was killed): TaskLost."""

    lost = 0

    def _run(self, call):
        if call.kind == "clip" and not self.lost:
            self.lost += 1
            del self._pending[call]
            call.outcome = ("lost", "WorkerCrashedError: the worker died")
            return
        super()._run(call)


def test_a_lost_task_is_retried_and_the_run_is_the_same(ray_run, tmp_path):
    out = tmp_path / "run"
    ex = LosesFirstTask()
    notes: list[str] = []
    rep = g.generate(request(out, "run.clips_per_task=5"), executor=ex, on_note=notes.append)
    assert ex.lost == 1 and rep.done == N and rep.lost == []
    assert rep.retries == 5  # each slot of the lost task
    assert len(list((out / "markers").glob("*.retry.json"))) == 5
    assert any("WorkerCrashedError" in n for n in notes)
    assert shard_digests(out) == shard_digests(ray_run)


def test_in_process_outcomes():
    calls = []

    def flaky(x):
        calls.append(x)
        if len(calls) < 3:
            raise OSError("a transient read error")
        return x * 2

    def buggy():
        raise ValueError("a bug")

    ex = InProcessExecutor()
    ex.define("flaky", TaskKind(flaky, retries=2, retry_on=(OSError,)))
    ex.define("once", TaskKind(flaky))
    ex.define("buggy", TaskKind(buggy, retries=5, retry_on=(OSError,)))
    a = ex.submit("flaky", 21)
    b = ex.submit("buggy")
    assert ex.wait([b, a], timeout=0) == [a]  # submission order
    assert ex.result(a) == 42 and len(calls) == 3  # two retries
    with pytest.raises(TaskFailed) as e:
        ex.result(b)
    assert isinstance(e.value.cause, ValueError) and ex.ran["buggy"] == 1  # not retried: not an OSError
    calls.clear()
    c = ex.submit("once", 1)
    with pytest.raises(TaskFailed):
        ex.result(c)  # no retries asked for
    d = ex.submit("flaky", 1)
    ex.cancel(d)
    with pytest.raises(TaskLost, match="cancelled"):
        ex.result(d)
    assert ex.wait([d], timeout=0) == [d]
    with pytest.raises(KeyError):
        ex.submit("undefined")


def test_the_heartbeat_goes_on_while_a_task_runs_in_the_drivers_process(tmp_path, monkeypatch):
    """A long phase (here a task the in-process executor runs in the driver's own thread) must
    not stop the heartbeat: a second driver would take the run for dead."""
    from dr.pipeline.clip_task import run_clips

    monkeypatch.setattr(engine, "HEARTBEAT_S", 0.1)
    out = tmp_path / "run"
    seen: list[float] = []

    def slow(ctx, slots):
        t_end = time.monotonic() + 1.5
        while time.monotonic() < t_end:
            try:
                seen.append(json.loads((out / engine.DRIVER_JSON).read_text())["updated"])
            except (OSError, ValueError):
                pass
            time.sleep(0.02)
        return run_clips(ctx, slots)

    rep = g.generate(request(out), executor=InProcessExecutor(stand_ins={"clip": slow}))
    assert rep.done == N
    assert len(set(seen)) >= 5, f"{len(set(seen))} heartbeats in 1.5 s at 0.1 s"
    last = json.loads((out / engine.DRIVER_JSON).read_text())
    assert last["ended"] is True  # written after the thread stopped, never overwritten by it


def test_stats_come_from_the_index_not_from_every_marker(tmp_path):
    """Each shard's index entry sums its clips' timings, so the final stats read no done marker of
    a written shard; the figures are those summed from every marker (the old way, a second
    computation)."""
    from dr.pipeline import markers as mk
    from dr.pipeline.plan import Plan
    from dr.pipeline.run_store import RunStore

    out = tmp_path / "run"
    g.generate(request(out), executor=InProcessExecutor())
    store = RunStore(out)
    index = engine.read_index(store)
    assert all(e["stats"]["clips"] == e["samples"] == K for e in index["shards"])
    run = json.loads((out / "run.json").read_text())
    plan = Plan(run["n"], run["seed"], run["clips_per_shard"], run["identity_hash"])
    state = mk.scan(store)
    read: list[int] = []
    real = mk.iter_done_records

    def counting(store_, keys, *a):
        read.append(len(keys))
        return real(store_, keys, *a)

    mk.iter_done_records = counting
    try:
        from_index = engine.compute_stats(store, plan, state, index)
        for e in index["shards"]:
            del e["stats"]  # an index written before entries carried stats
        from_markers = engine.compute_stats(store, plan, state, index)
    finally:
        mk.iter_done_records = real
    assert read == [0, N]
    a, b = from_index, from_markers
    assert a["clip_bytes"] == b["clip_bytes"] > 0 and a["devices"] == b["devices"] == {"none (dry run)": N}
    assert a["stages_s"].keys() == b["stages_s"].keys()
    for k in a["stages_s"]:
        x, y = a["stages_s"][k], b["stages_s"][k]
        assert x["clips"] == y["clips"] == N
        assert x["total"] == pytest.approx(y["total"], abs=1e-3) and x["max"] == pytest.approx(y["max"])


def test_a_dry_run_passes_validate(tmp_path):
    """A dry run's samples are valid samples without pixels: the spec's metadata (built by the
    code that builds a render's), every pass and the env map marked missing, and the cameras,
    which equal the spec's."""
    import numpy as np

    from dr.scenes.spec import SceneSpec
    from dr.shards.reader import iter_samples
    from dr.shards.validate import validate_source

    out = tmp_path / "run"
    g.generate(request(out), executor=InProcessExecutor())
    report = validate_source(str(out))
    assert report.ok, report.problems[:5]
    assert report.samples == N
    for s in iter_samples(str(out)):
        spec = SceneSpec.model_validate(s.meta["scene_spec"])
        assert s.passes == {} and s.env is None and s.meta["dry_run"] is True
        assert all(p["provenance"] == "missing" for p in s.meta["passes"].values())
        assert np.array_equal(s.c2w, np.asarray(spec.camera.c2w, np.float32))
        assert np.allclose(s.cam_to_env[1], spec.cam_to_env(1), atol=1e-6)
        assert s.meta["assets"][0] == {"role": "hdri", "id": spec.light.hdri.id, "sha256": spec.light.hdri.sha256}


def test_training_refuses_a_dry_run(tmp_path):
    from dr.errors import UserError
    from dr.train.run_folder import data_identity

    out = tmp_path / "run"
    g.generate(request(out), executor=InProcessExecutor())
    with pytest.raises(UserError, match="is a dry run"):
        data_identity([str(out)])
