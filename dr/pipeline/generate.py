"""`dr-data generate`: a number and a manifest in, a folder of validated shards out.

The driver plans the run (fixed before work starts), reads its state from the markers (so a
re-run resumes), and keeps a bounded number of render tasks in flight on Ray. It is the only
writer of run.json, plan, index.json, stats.json and quarantine.jsonl; tasks write clips, logs
and markers. A shard is assembled as soon as all of its clips are done.
"""

from __future__ import annotations

import heapq
import importlib.metadata
import json
import math
import os
import platform
import socket
import sys
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from dr.errors import UserError
from dr.pipeline import markers as mk
from dr.pipeline.clip_task import MANIFEST_NAME
from dr.pipeline.config import GenerateConfig, identity, identity_diff
from dr.pipeline.plan import Plan, index_of, read_plan_header, write_plan
from dr.pipeline.run_store import RunStore, StorageError, is_storage_error
from dr.shards.writer import INDEX_NAME, shard_name

RUN_JSON = "run.json"
STATS_JSON = "stats.json"
DRIVER_JSON = "driver.json"
QUARANTINE = "quarantine.jsonl"
HEARTBEAT_S = 15.0
STALE_S = 90.0


class RunAborted(Exception):
    """The run stopped before it was complete (too many failures, storage full, a bug in a task)."""


@dataclass
class Request:
    n: int
    out: str
    cfg: GenerateConfig
    seed: int = 0
    manifest: str | None = None
    ray_address: str | None = None
    workers: int | None = None
    clips_per_shard: int = 16
    dry_run: bool = False
    cache_dir: Path | None = None
    argv: list[str] = field(default_factory=list)


@dataclass
class Progress:
    total: int
    done: int
    failed: int
    session_done: int
    elapsed_s: float

    @property
    def per_hour(self) -> float:
        return 3600.0 * self.session_done / self.elapsed_s if self.elapsed_s > 0 else 0.0


@dataclass
class Report:
    run: str
    planned: int
    done: int
    lost: list[str]
    shards: int
    bytes: int
    session_done: int
    session_s: float
    failed_attempts: int
    retries: int
    quarantine: dict[str, str]
    resources: str
    stats: dict


def versions() -> dict:
    def v(dist: str) -> str | None:
        try:
            return importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            return None

    import dr

    return {"dr": dr.__version__, "blender": v("bpy"), "ray": v("ray"), "python": platform.python_version()}


# ---------------------------------------------------------------------------------------------
# the run folder

def open_store(out: str) -> RunStore:
    """The run folder's store, checked (without writing anything) to be a folder that can be written."""
    store = RunStore(out)
    if store.local:
        p = store.local_path()
        if p.exists() and not p.is_dir():
            raise UserError(f"--out {str(p)!r} is a file; give a folder")
        parent = p
        while not parent.exists():
            parent = parent.parent
        if not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK):
            raise UserError(f"cannot write to --out {str(p)!r}: {str(parent)!r} is not a writable folder")
    return store


def _load_manifest(req: Request):
    """The manifest the run draws from: --manifest (a path or URL), else the built-in one."""
    from dr.cli.scenes_cmd import load_or_build_manifest

    path = req.manifest
    if path and "://" in path and not path.startswith("file://"):
        from dr.assets_manifest.resolve import resolve_uri
        from dr.cache import cache_dir as resolve_cache

        path = str(resolve_uri(path, resolve_cache(req.cache_dir)))
    return load_or_build_manifest(Path(path.removeprefix("file://")) if path else None, req.cache_dir)


@dataclass
class Setup:
    """A run checked but not yet written: what `inspect` found, what `commit` will write."""

    store: RunStore
    existing: dict | None
    manifest: object
    identity: dict
    plan: Plan


def inspect(req: Request) -> Setup:
    """Check the request against the run folder without writing anything: the manifest can feed
    the recipe, and an existing run has this same identity. UserError otherwise."""
    from dr.scenes.sampler import check_manifest

    if req.n <= 0:
        raise UserError(f"--n {req.n}: the number of clips must be at least 1")
    store = open_store(req.out)
    try:
        existing = json.loads(store.read_text(RUN_JSON)) if store.exists(RUN_JSON) else None
    except (OSError, ValueError) as e:
        raise UserError(f"cannot read {store.url}/{RUN_JSON}: {e}") from None
    if existing is None and store.local and store.local_path().is_dir() and any(
            p.name not in (".ray", ".staging") for p in store.local_path().iterdir()):
        raise UserError(f"--out {store.url} is not empty and holds no run (no run.json); choose an empty or new folder")
    if existing is not None and req.manifest is None and store.exists(MANIFEST_NAME):
        from dr.assets_manifest.manifest import Manifest, read_records

        tmp = _local_copy(store, MANIFEST_NAME, req)
        manifest = Manifest(read_records(tmp), path=tmp)
    else:
        manifest = _load_manifest(req)
    check_manifest(req.cfg.scene, manifest)
    ident = identity(req.cfg, req.n, req.seed, req.clips_per_shard, manifest.digest(), req.dry_run)
    ident_hash = config_hash_of(ident)
    if existing is not None and existing.get("identity_hash") != ident_hash:
        diff = identity_diff(existing.get("identity", {}), ident)
        raise UserError(f"{store.url} holds a run made with different settings ({'; '.join(diff) or 'unknown'}); "
                        f"resume it with its own settings (see its run.json) or choose another --out")
    return Setup(store, existing, manifest, ident, Plan(req.n, req.seed, req.clips_per_shard, ident_hash))


def commit(setup: Setup, req: Request) -> dict:
    """Write (or update) run.json, the manifest copy and the plan; claim the run for this driver.
    Returns run.json."""
    from dr.config import config_hash

    store, plan, existing = setup.store, setup.plan, setup.existing
    session = {"started": time.time(), "argv": req.argv, "host": socket.gethostname(), "pid": os.getpid(),
               "ray_address": req.ray_address, "workers": req.workers, "versions": versions(),
               "worker": req.cfg.worker.model_dump(mode="json"), "run": req.cfg.run.model_dump(mode="json")}
    run_json = existing or {
        "created": time.time(), "run_id": f"{(req.out.rstrip('/').rsplit('/', 1)[-1] or 'run')}-{plan.identity_hash[:8]}",
        "n": req.n, "seed": req.seed, "clips_per_shard": req.clips_per_shard, "dry_run": req.dry_run,
        "config": req.cfg.model_dump(mode="json"), "config_hash": config_hash(req.cfg),
        "identity": setup.identity, "identity_hash": plan.identity_hash,
        "manifest": {"given": req.manifest or "built-in", "sha256": setup.manifest.digest(), "copy": MANIFEST_NAME},
        "versions": versions(), "sessions": [],
    }
    run_json["sessions"] = (run_json.get("sessions") or [])[-49:] + [session]
    store.makedirs()
    _claim(store)
    if existing is None:
        store.write_text(MANIFEST_NAME, setup.manifest.to_jsonl())
    if read_plan_header(store) != plan.header():
        write_plan(store, plan)  # the plan is a function of the identity: (re)write a missing or damaged one
    store.write_text(RUN_JSON, json.dumps(run_json, indent=1, sort_keys=True) + "\n")
    for sub in ("markers", "shards", "clips", "logs"):
        store.makedirs(sub)
    return run_json


def config_hash_of(data: dict) -> str:
    import hashlib

    return hashlib.sha256(json.dumps(data, sort_keys=True, separators=(",", ":")).encode()).hexdigest()[:16]


def _local_copy(store: RunStore, rel: str, req: Request) -> Path:
    if store.local:
        return store.local_path(rel)
    from dr.cache import cache_dir as resolve_cache

    p = resolve_cache(req.cache_dir) / "runs" / config_hash_of({"url": store.url}) / rel
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_bytes(store.read_bytes(rel))
    return p


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _claim(store: RunStore) -> None:
    """Refuse a run another live driver is working on; then mark it as ours."""
    if store.exists(DRIVER_JSON):
        try:
            d = json.loads(store.read_text(DRIVER_JSON))
        except (ValueError, OSError):
            d = {}
        if d.get("pid") and d.get("pid") != os.getpid() and not d.get("ended"):
            age = time.time() - float(d.get("updated", 0))
            same_host = d.get("host") == socket.gethostname()
            if (same_host and _pid_alive(int(d["pid"]))) or (not same_host and age < STALE_S):
                raise UserError(f"{store.url} is being generated by pid {d['pid']} on {d.get('host')} "
                                f"(heartbeat {age:.0f} s ago); stop it first, or wait {STALE_S:.0f} s if it died")
    _heartbeat(store)


def _heartbeat(store: RunStore, ended: bool = False) -> None:
    mk.write_marker(store, DRIVER_JSON, {"pid": os.getpid(), "host": socket.gethostname(), "updated": time.time(),
                                         "ended": ended})


def read_index(store: RunStore) -> dict:
    rel = f"shards/{INDEX_NAME}"
    if not store.exists(rel):
        return {"schema_version": 1, "shards": [], "samples": 0}
    return json.loads(store.read_text(rel))


def write_index(store: RunStore, index: dict) -> None:
    index["shards"] = sorted(index["shards"], key=lambda s: s["name"])
    index["samples"] = sum(s["samples"] for s in index["shards"])
    store.write_text(f"shards/{INDEX_NAME}", json.dumps(index, indent=1, sort_keys=True) + "\n")


def cleanup_leftovers(store: RunStore) -> None:
    """Remove what an interrupted session left half-done (never anything a marker vouches for)."""
    if not store.local:
        return
    import shutil

    shutil.rmtree(store.local_path(".staging"), ignore_errors=True)
    for sub in ("clips", "shards", "markers", "."):
        d = store.local_path(sub)
        if d.is_dir():
            for p in d.iterdir():
                if p.name.endswith(".partial") or ".tmp-" in p.name:
                    p.unlink(missing_ok=True)


# ---------------------------------------------------------------------------------------------
# stats

def compute_stats(store: RunStore, plan: Plan, state: mk.RunState, index: dict) -> dict:
    """stats.json: counts and per-stage times merged over every done clip (streamed)."""
    stages: dict[str, list[float]] = {}
    devices: dict[str, int] = {}
    total_bytes = 0
    for rec in mk.iter_done_records(store, sorted(state.done)):
        for k, v in {**rec.get("timings", {}), "clip_wall": rec.get("wall_s", 0.0)}.items():
            s = stages.setdefault(k, [0, 0.0, math.inf, 0.0])
            s[0] += 1
            s[1] += float(v)
            s[2] = min(s[2], float(v))
            s[3] = max(s[3], float(v))
        devices[str(rec.get("device"))] = devices.get(str(rec.get("device")), 0) + 1
        total_bytes += int(rec.get("bytes", 0))
    q = state.quarantine
    return {
        "planned": plan.n, "done": len(state.done), "failed_attempts": state.failed_attempts,
        "retries": state.retries, "quarantined_assets": len(q), "shards_planned": plan.shards,
        "shards_written": len(index["shards"]), "samples_in_shards": index.get("samples", 0),
        "clip_bytes": total_bytes,
        "stages_s": {k: {"clips": c, "total": round(t, 3), "mean": round(t / c, 4), "min": round(lo, 4), "max": round(hi, 4)}
                     for k, (c, t, lo, hi) in stages.items()},
        "devices": devices, "updated": time.time(),
    }


def write_quarantine(store: RunStore, quarantine: dict[str, str]) -> None:
    """quarantine.jsonl: the manifest records of the assets this run quarantined, with reasons
    (manifest lines: they can be merged into the source manifest)."""
    if not quarantine:
        return
    from dr.assets_manifest.manifest import AssetRecord

    lines = {}
    for line in store.read_text(MANIFEST_NAME).splitlines():
        if not line.strip():
            continue
        rec = json.loads(line)
        if rec["id"] in quarantine:
            lines[rec["id"]] = json.dumps(AssetRecord(**rec).quarantine(quarantine[rec["id"]]).model_dump(mode="json"),
                                          sort_keys=True, separators=(",", ":"))
    store.write_text(QUARANTINE, "".join(lines[k] + "\n" for k in sorted(lines)))


# ---------------------------------------------------------------------------------------------
# the executor

class _Driver:
    def __init__(self, req: Request, store: RunStore, plan: Plan, run_json: dict, state: mk.RunState,
                 on_progress: Callable[[Progress], None] | None, on_note: Callable[[str], None] | None):
        self.req, self.store, self.plan, self.state = req, store, plan, state
        self.cfg = req.cfg
        self.run_id = run_json["run_id"]
        self.on_progress = on_progress or (lambda p: None)
        self.on_note = on_note or (lambda s: None)
        self.index = read_index(store)
        self.indexed = {s["name"] for s in self.index["shards"]}
        self.t0 = time.monotonic()
        self.session_done = 0
        self.lost: set[str] = set()
        self.real_failures = sum(1 for a in state.failed.values() for r in a.values() if not r.get("known_bad"))
        self.limit = max(self.cfg.run.min_failures_to_abort, math.ceil(self.cfg.run.max_failed_fraction * plan.n))
        self.last_beat = 0.0
        self.done_sha: dict[str, str] = {}

    # -- state ----------------------------------------------------------------------------------
    def _lost(self, key: str) -> bool:
        return self.state.next_attempt(key) >= self.cfg.run.max_attempts and key not in self.state.done

    def _shard_ready(self, s: int) -> bool:
        return all(self.plan.key(i) in self.state.done or self.plan.key(i) in self.lost
                   for i in self.plan.shard_indices(s))

    def _progress(self) -> None:
        self.on_progress(Progress(self.plan.n, len(self.state.done), self.state.failed_attempts, self.session_done,
                                  time.monotonic() - self.t0))

    # -- the loop -------------------------------------------------------------------------------
    def run(self, resources, ctx: dict) -> None:
        import ray

        from dr.pipeline.clip_task import run_clip
        from dr.pipeline.shard_merge import merge_shard

        clip_remote = ray.remote(run_clip).options(
            num_cpus=resources.threads, num_gpus=1 if resources.gpu else 0, max_retries=0, name="dr-render-clip")
        merge_remote = ray.remote(merge_shard).options(num_cpus=0, max_retries=2, name="dr-merge-shard")

        self.lost = {self.plan.key(i) for i in range(self.plan.n) if self._lost(self.plan.key(i))}
        todo = deque(i for i in range(self.plan.n)
                     if self.plan.key(i) not in self.state.done and self.plan.key(i) not in self.lost)
        tries: dict[int, int] = {}
        delayed: list[tuple[float, int]] = []
        in_flight: dict = {}  # ref -> ("clip", index, started) | ("merge", shard)
        merging: set[int] = set()
        max_in_flight = resources.workers * self.cfg.run.in_flight_per_worker
        deadline_s = self.cfg.worker.clip_timeout_s * self.cfg.run.max_attempts + 600.0
        pending_shards = [s for s in range(self.plan.shards) if shard_name(s) not in self.indexed]
        self._progress()

        def submit_ready_merges() -> None:
            for s in list(pending_shards):
                if s not in merging and self._shard_ready(s):
                    keys = [self.plan.key(i) for i in self.plan.shard_indices(s) if self.plan.key(i) in self.state.done]
                    shas = self._shas(keys)
                    if not keys:
                        pending_shards.remove(s)
                        continue
                    ref = merge_remote.remote(self.store.url, s, keys, shas,
                                              str(self.req.cache_dir) if self.req.cache_dir else None)
                    in_flight[ref] = ("merge", s, keys)
                    merging.add(s)

        submit_ready_merges()
        while todo or delayed or in_flight:
            now = time.monotonic()
            clips_in_flight = sum(1 for v in in_flight.values() if v[0] == "clip")
            while clips_in_flight < max_in_flight and (todo or (delayed and delayed[0][0] <= now)):
                i = heapq.heappop(delayed)[1] if delayed and delayed[0][0] <= now else todo.popleft()
                key = self.plan.key(i)
                ref = clip_remote.remote(ctx, i, self.state.next_attempt(key), tries.get(i, 0),
                                         self.state.excluded_assets(key), self.state.quarantine)
                in_flight[ref] = ("clip", i, now)
                clips_in_flight += 1
            if not in_flight:
                time.sleep(min(1.0, max(0.0, delayed[0][0] - time.monotonic())) if delayed else 0.0)
                continue
            ready, _ = ray.wait(list(in_flight), num_returns=1, timeout=1.0)
            for ref in ready:
                what = in_flight.pop(ref)
                if what[0] == "merge":
                    self._merged(ref, what, merging, pending_shards, todo)
                else:
                    self._clip_done(ref, what[1], tries, delayed)
            for ref, what in list(in_flight.items()):
                if what[0] == "clip" and time.monotonic() - what[2] > deadline_s:
                    ray.cancel(ref, force=True)
            submit_ready_merges()
            if time.monotonic() - self.last_beat > HEARTBEAT_S:
                self.last_beat = time.monotonic()
                _heartbeat(self.store)
                self.store.write_text(STATS_JSON, json.dumps(self._quick_stats(), indent=1, sort_keys=True) + "\n")

    def _shas(self, keys: list[str]) -> dict[str, str]:
        missing = [k for k in keys if k not in self.done_sha]
        for rec in mk.iter_done_records(self.store, missing):
            self.done_sha[rec["key"]] = rec["sha256"]
        return {k: self.done_sha.get(k, "") for k in keys}

    def _quick_stats(self) -> dict:
        return {"planned": self.plan.n, "done": len(self.state.done), "failed_attempts": self.state.failed_attempts,
                "retries": self.state.retries, "shards_written": len(self.index["shards"]), "updated": time.time(),
                "complete": False}

    def _merged(self, ref, what, merging: set[int], pending_shards: list[int], todo: deque) -> None:
        import ray

        from dr.pipeline.shard_merge import ClipDataError, clip_rel

        _, s, keys = what
        merging.discard(s)
        try:
            entry = ray.get(ref)
        except Exception as e:  # noqa: BLE001 - sorted out below
            cause = getattr(e, "cause", None) or e
            if isinstance(cause, ClipDataError):
                # the clip's data is gone or damaged: forget that it was done, render it again
                self.on_note(f"{cause}; rendering clip {cause.key} again")
                self.store.remove([mk.done_name(cause.key), clip_rel(cause.key)])
                self.state.done.discard(cause.key)
                self.done_sha.pop(cause.key, None)
                todo.appendleft(index_of(cause.key))
                return
            if is_storage_error(cause):
                raise RunAborted(f"cannot write shard {shard_name(s)} to {self.store.url}: {cause}") from None
            raise RunAborted(f"assembling {shard_name(s)} failed: {type(cause).__name__}: {cause}") from None
        self.index["shards"] = [x for x in self.index["shards"] if x["name"] != entry["name"]] + [entry]
        write_index(self.store, self.index)
        self.indexed.add(entry["name"])
        pending_shards.remove(s)
        self.store.remove([clip_rel(k) for k in keys])

    def _clip_done(self, ref, index: int, tries: dict[int, int], delayed: list) -> None:
        import ray

        key = self.plan.key(index)
        try:
            out = ray.get(ref)
        except (ray.exceptions.WorkerCrashedError, ray.exceptions.NodeDiedError, ray.exceptions.TaskCancelledError,
                ray.exceptions.ObjectLostError, ray.exceptions.RaySystemError, ray.exceptions.OutOfMemoryError,
                ray.exceptions.LocalRayletDiedError) as e:
            out = {"system": {"kind": "ray", "reason": f"{type(e).__name__}: {' '.join(str(e).split())[:300]}",
                              "attempt": self.state.next_attempt(key)}, "failures": [], "done": None, "storage": None}
        except ray.exceptions.RayTaskError as e:
            cause = getattr(e, "cause", None)
            if cause is not None and is_storage_error(cause):
                raise RunAborted(f"cannot write to {self.store.url}: {cause}") from None
            raise RunAborted(f"render task for clip {key} failed with a bug: "
                             f"{type(cause).__name__ if cause else 'error'}: {' '.join(str(cause or e).split())[:300]} "
                             f"(see {self.store.url}/logs)") from None
        if out.get("storage"):
            raise RunAborted(out["storage"])
        for f in out["failures"]:
            self.state.record_failure(key, f)
            if not f.get("known_bad"):
                self.real_failures += 1
                self.on_note(f"clip {key} attempt {f['attempt']} failed ({f['kind']}): {f['reason']}")
        if out["done"]:
            self.state.done.add(key)
            self.done_sha[key] = out["done"]["sha256"]
            self.session_done += 1
        elif out["system"]:
            sysf = out["system"]
            t = tries.get(index, 0)
            mk.write_marker(self.store, mk.retry_name(key, sysf.get("attempt", 0), t), {"key": key, **sysf})
            self.state.retries += 1
            if t < self.cfg.run.max_retries:
                tries[index] = t + 1
                wait = self.cfg.run.retry_backoff_s * 2 ** t
                self.on_note(f"clip {key}: {sysf['reason']}; retry {t + 1}/{self.cfg.run.max_retries} in {wait:g} s")
                heapq.heappush(delayed, (time.monotonic() + wait, index))
            else:
                tries.pop(index, None)
                rec = {**sysf, "key": key, "index": index, "attempt": self.state.next_attempt(key),
                       "reason": f"{sysf['reason']} (after {t + 1} tries)", "asset_id": None}
                mk.write_marker(self.store, mk.failed_name(key, rec["attempt"]), rec)
                self.state.record_failure(key, rec)
                self.real_failures += 1
                self.on_note(f"clip {key} attempt {rec['attempt']} gave up after {t + 1} system failures")
                if not self._lost(key):
                    heapq.heappush(delayed, (time.monotonic(), index))
        if not out["done"] and self._lost(key):
            self.lost.add(key)
            self.on_note(f"clip slot {key} is lost: {self.cfg.run.max_attempts} attempts failed")
        if self.real_failures > self.limit:
            raise RunAborted(f"{self.real_failures} clip attempts failed, more than the run tolerates ({self.limit}: "
                             f"run.max_failed_fraction {self.cfg.run.max_failed_fraction:g} of {self.plan.n}, at least "
                             f"run.min_failures_to_abort {self.cfg.run.min_failures_to_abort}); see "
                             f"`dr-data status {self.store.url}`")
        self._progress()


def generate(req: Request, on_progress: Callable[[Progress], None] | None = None,
             on_note: Callable[[str], None] | None = None,
             on_start: Callable[[str, "Plan", mk.RunState], None] | None = None) -> Report:
    """Run (or resume) the run ``req`` describes; returns what it made. Raises UserError on bad
    input and RunAborted when the run cannot be completed."""
    from dr.assets_manifest.build import available_cpus
    from dr.cache import cache_dir as resolve_cache
    from dr.pipeline import ray_cluster

    cache = resolve_cache(req.cache_dir)
    setup = inspect(req)
    store, plan = setup.store, setup.plan
    if setup.existing is not None:
        state = mk.scan(store)
        index = read_index(store)
        if len(state.done) == plan.n and len(index["shards"]) == plan.shards:
            # nothing left to do: no Ray, no writes
            return Report(run=store.url, planned=plan.n, done=plan.n, lost=[], shards=len(index["shards"]),
                          bytes=sum(s["bytes"] for s in index["shards"]), session_done=0, session_s=0.0,
                          failed_attempts=state.failed_attempts, retries=state.retries, quarantine=state.quarantine,
                          resources="nothing to do", stats=json.loads(store.read_text(STATS_JSON))
                          if store.exists(STATS_JSON) else {})
    local_run = store.local_path() if store.local else None
    fresh = local_run is not None and not local_run.exists()
    committed = False
    try:
        local = ray_cluster.start(req.ray_address, ray_cluster.ray_temp_dir(local_run, cache) if not req.ray_address
                                  else cache, num_cpus=None if req.ray_address else available_cpus())
    except OSError as e:
        raise UserError(f"cannot start Ray in {local_run}: {e.strerror or e}") from None
    try:
        resources = ray_cluster.plan_resources(req.cfg.render.device, local, req.workers, req.dry_run,
                                               req.cfg.run.gpu_wait_s)
        try:
            run_json = commit(setup, req)
            committed = True
        except OSError as e:
            raise UserError(f"cannot write to --out {store.url}: {e.strerror or e}") from None
        cleanup_leftovers(store)
        state = mk.scan(store)
        if on_start:
            on_start(resources.describe(), plan, state)
        ctx = {"run": store.url, "run_id": run_json["run_id"], "seed": req.seed,
               "scene": req.cfg.scene.model_dump(mode="json"), "render": req.cfg.render.model_dump(mode="json"),
               "worker": req.cfg.worker.model_dump(mode="json"), "max_attempts": req.cfg.run.max_attempts,
               "dry_run": req.dry_run, "threads": resources.threads,
               "cache_dir": str(req.cache_dir) if req.cache_dir else None}
        if not resources.gpu and req.cfg.render.device == "auto":
            # tasks that were given no GPU must not find one on their node and take it
            ctx["render"] = {**ctx["render"], "device": "cpu"}
        driver = _Driver(req, store, plan, run_json, state, on_progress, on_note)
        finished = False
        try:
            driver.run(resources, ctx)
            finished = True
        finally:
            try:
                index = read_index(store)
                stats = compute_stats(store, plan, state, index)
                stats["complete"] = len(state.done) == plan.n and len(index["shards"]) == plan.shards
                store.write_text(STATS_JSON, json.dumps(stats, indent=1, sort_keys=True) + "\n")
                write_quarantine(store, state.quarantine)
                _heartbeat(store, ended=True)
            except OSError:
                if finished:
                    raise
                # else the run is stopping for a reason already being reported
    except OSError as e:
        if is_storage_error(e):
            raise RunAborted(f"cannot write to {store.url}: {e.strerror or e}") from None
        raise
    except StorageError as e:
        raise RunAborted(str(e)) from None
    finally:
        ray_cluster.stop()
        if fresh and not committed:
            import shutil

            shutil.rmtree(local_run, ignore_errors=True)  # only Ray's temp files were made: leave nothing
    return Report(run=store.url, planned=plan.n, done=len(state.done), lost=sorted(driver.lost),
                  shards=len(index["shards"]), bytes=sum(s["bytes"] for s in index["shards"]),
                  session_done=driver.session_done, session_s=time.monotonic() - driver.t0,
                  failed_attempts=state.failed_attempts, retries=state.retries, quarantine=state.quarantine,
                  resources=resources.describe(), stats=stats)
