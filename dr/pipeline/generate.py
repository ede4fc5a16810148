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
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from dr.errors import UserError
from dr.files import nearest_existing
from dr.pipeline import markers as mk
from dr.pipeline.clip_task import MANIFEST_NAME
from dr.pipeline.claim import LOCK_NAME, pid_alive
from dr.pipeline.executor import Executor, RayExecutor, TaskFailed, TaskKind, TaskLost
from dr.pipeline.config import GenerateConfig, device_change, device_kind, identity, identity_diff
from dr.pipeline.plan import Plan, index_of, read_plan_header, write_plan
from dr.pipeline.run_store import RunStore, StorageError, is_storage_error
from dr.shards.writer import INDEX_NAME, finish_index, shard_name

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
    # a context-manager factory yielding (on_start, on_done) for a first build of the built-in manifest
    probe_progress: Callable | None = field(default=None, compare=False, repr=False)


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
        parent = nearest_existing(p)
        if not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK):
            raise UserError(f"cannot write to --out {str(p)!r}: {str(parent)!r} is not a writable folder")
    return store


def _load_manifest(req: Request):
    """The manifest the run draws from: --manifest (a path or URL), else the built-in one."""
    from dr.assets_manifest.build import load_or_build_manifest

    path = req.manifest
    if path and "://" in path and not path.startswith("file://"):
        from dr.assets_manifest.resolve import resolve_uri
        from dr.cache import cache_dir as resolve_cache

        path = str(resolve_uri(path, resolve_cache(req.cache_dir)))
    return load_or_build_manifest(Path(path.removeprefix("file://")) if path else None, req.cache_dir,
                                  req.probe_progress)


@dataclass
class Setup:
    """A run checked but not yet written: what `inspect` found, what `commit` will write."""

    store: RunStore
    existing: dict | None
    manifest: object
    identity: dict
    plan: Plan
    device_kind: str | None = None  # known once Ray has said what the tasks get
    claimed: bool = False  # this driver holds the run's lock (dr.pipeline.claim), which decided the claim


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
            p.name not in (".ray", ".staging") and not p.name.startswith(LOCK_NAME) for p in store.local_path().iterdir()):
        raise UserError(f"--out {store.url} is not empty and holds no run (no run.json); choose an empty or new folder")
    if existing is not None and req.manifest is None and store.exists(MANIFEST_NAME):
        from dr.assets_manifest.manifest import Manifest, read_records

        tmp = store.local_copy(MANIFEST_NAME, req.cache_dir)
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
        "versions": versions(), "device_kind": setup.device_kind, "sessions": [],
    }
    run_json["sessions"] = (run_json.get("sessions") or [])[-49:] + [session]
    store.makedirs()
    _claim(store, locked=store.local or setup.claimed)
    if existing is None:
        store.write_text(MANIFEST_NAME, setup.manifest.to_jsonl())
    if read_plan_header(store) != plan.header():
        # the plan is a function of the identity: (re)write a missing or damaged one
        write_plan(store, plan, req.cache_dir)
    store.write_text(RUN_JSON, json.dumps(run_json, indent=1, sort_keys=True) + "\n")
    for sub in ("markers", "shards", "clips", "logs"):
        store.makedirs(sub)
    return run_json


def config_hash_of(data: dict) -> str:
    import hashlib

    return hashlib.sha256(json.dumps(data, sort_keys=True, separators=(",", ":")).encode()).hexdigest()[:16]


def _claim(store: RunStore, locked: bool = False) -> None:
    """Refuse a run another live driver is working on; then mark it as ours. ``locked``: this
    driver holds the run's lock (dr.pipeline.claim, local runs), which decided that already."""
    if not locked and store.exists(DRIVER_JSON):
        try:
            d = json.loads(store.read_text(DRIVER_JSON))
        except (ValueError, OSError):
            d = {}
        if d.get("pid") and d.get("pid") != os.getpid() and not d.get("ended"):
            age = time.time() - float(d.get("updated", 0))
            same_host = d.get("host") == socket.gethostname()
            if (same_host and pid_alive(int(d["pid"]))) or (not same_host and age < STALE_S):
                raise UserError(f"{store.url} is being generated by pid {d['pid']} on {d.get('host')} "
                                f"(heartbeat {age:.0f} s ago); stop it first, or wait {STALE_S:.0f} s if it died")
    _heartbeat(store)


def _remote_holder_alive(store: RunStore, holder: dict) -> bool:
    """Whether the driver that wrote the lock record ``holder`` of a run on an object store still
    works on it: its heartbeat (driver.json) says it ended, or is stale, or it claimed long ago
    and never beat: no; on this host, a process that is gone: no."""
    from dr.pipeline.claim import process_start

    if holder.get("host") == socket.gethostname() and isinstance(holder.get("pid"), int):
        start = process_start(holder["pid"])
        if (start is not None and holder.get("start") not in (None, start)) or (start is None and not pid_alive(holder["pid"])):
            return False
    try:
        beat = json.loads(store.read_text(DRIVER_JSON))
    except (OSError, ValueError):
        beat = {}
    mine = (beat.get("pid"), beat.get("host")) == (holder.get("pid"), holder.get("host"))
    if mine and beat.get("ended"):
        return False
    if time.time() - float(holder.get("claimed", 0)) < STALE_S:
        return True  # it has just claimed: its first heartbeat may not be there yet
    return mine and time.time() - float(beat.get("updated", 0)) < STALE_S


def _heartbeat_age(store: RunStore) -> float | None:
    """Seconds since the run's driver last wrote driver.json; None if there is none."""
    try:
        return time.time() - float(json.loads(store.read_text(DRIVER_JSON)).get("updated", 0))
    except (OSError, ValueError, TypeError):
        return None


def _heartbeat(store: RunStore, ended: bool = False) -> None:
    mk.write_marker(store, DRIVER_JSON, {"pid": os.getpid(), "host": socket.gethostname(), "updated": time.time(),
                                         "ended": ended})


class Heartbeat:
    """Writes driver.json every HEARTBEAT_S from a thread while the driver holds the run, so that
    its long phases (a resume's scan of every marker, a slow store, the final stats, a task run in
    the driver's own process) never look like a dead driver."""

    def __init__(self, store: RunStore):
        import threading

        self.store = store
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="dr-heartbeat", daemon=True)

    def __enter__(self) -> "Heartbeat":
        self._thread.start()
        return self

    def _loop(self) -> None:
        while not self._stop.wait(HEARTBEAT_S):
            try:
                _heartbeat(self.store)
            except Exception:  # noqa: BLE001 - a store that fails is the main thread's to report
                pass

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=30.0)


def lost_keys(plan: Plan, index: dict, state: mk.RunState, max_attempts: int) -> list[str]:
    """Clip slots given up: failed ``max_attempts`` times, or missing from a shard already written
    (a written shard is final)."""
    lost = {k for k in state.failed if k not in state.done and state.next_attempt(k) >= max_attempts}
    for entry in index["shards"]:
        s = int(entry["name"][len("shard-"):-len(".tar")])
        lost |= {plan.key(i) for i in plan.shard_indices(s)} - set(entry.get("keys", []))
    return sorted(lost)


def read_index(store: RunStore) -> dict:
    rel = f"shards/{INDEX_NAME}"
    if not store.exists(rel):
        return {"schema_version": 1, "shards": [], "samples": 0}
    return json.loads(store.read_text(rel))


def write_index(store: RunStore, index: dict, cache: Path | None = None) -> None:
    """Publish index.json (``cache``: where a remote run's index is staged)."""
    # streamed: json.dumps of an index that lists 150,000 keys would build ~25 MB of pieces first
    with store.publishing(f"shards/{INDEX_NAME}", cache) as f:
        json.dump(finish_index(index), f, indent=1, sort_keys=True)
        f.write("\n")


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

def new_tally() -> dict:
    """Timings, devices and bytes summed over clips; kept per shard in index.json ("stats")."""
    return {"clips": 0, "stages_s": {}, "devices": {}, "clip_bytes": 0}


def tally_record(tally: dict, rec: dict) -> None:
    """Add one clip's done record (or the part of it the driver keeps) to ``tally``."""
    for k, v in {**(rec.get("timings") or {}), "clip_wall": rec.get("wall_s", 0.0)}.items():
        v = float(v)
        s = tally["stages_s"].setdefault(k, [0, 0.0, v, v])
        s[0] += 1
        s[1] += v
        s[2] = min(s[2], v)
        s[3] = max(s[3], v)
    dev = str(rec.get("device"))
    tally["devices"][dev] = tally["devices"].get(dev, 0) + 1
    tally["clip_bytes"] += int(rec.get("bytes", 0))
    tally["clips"] += 1


def merge_tally(tally: dict, other: dict) -> None:
    for k, (c, t, lo, hi) in other.get("stages_s", {}).items():
        s = tally["stages_s"].setdefault(k, [0, 0.0, lo, hi])
        s[0] += int(c)
        s[1] += float(t)
        s[2] = min(s[2], float(lo))
        s[3] = max(s[3], float(hi))
    for dev, c in other.get("devices", {}).items():
        tally["devices"][dev] = tally["devices"].get(dev, 0) + int(c)
    tally["clip_bytes"] += int(other.get("clip_bytes", 0))
    tally["clips"] += int(other.get("clips", 0))


def compute_stats(store: RunStore, plan: Plan, state: mk.RunState, index: dict) -> dict:
    """stats.json: counts and per-stage times merged over every done clip. A shard's clips are
    summed in its index entry (written with the shard), so only the done markers of clips not in
    a shard yet (or in a shard indexed before entries carried stats) are read."""
    tally = new_tally()
    covered = bytearray(plan.shards)  # 1 for a shard whose entry sums its clips: a byte per shard
    for entry in index["shards"]:
        if isinstance(entry.get("stats"), dict):
            merge_tally(tally, entry["stats"])
            covered[int(entry["name"][len("shard-"):-len(".tar")])] = 1
    rest = sorted(k for k in state.done if not covered[plan.shard_of(index_of(k))])
    for rec in mk.iter_done_records(store, rest):
        tally_record(tally, rec)
    q = state.quarantine
    return {
        "planned": plan.n, "done": len(state.done), "failed_attempts": state.failed_attempts,
        "retries": state.retries, "quarantined_assets": len(q), "shards_planned": plan.shards,
        "shards_written": len(index["shards"]), "samples_in_shards": index.get("samples", 0),
        "clip_bytes": tally["clip_bytes"],
        "stages_s": {k: {"clips": c, "total": round(t, 3), "mean": round(t / c, 4), "min": round(lo, 4), "max": round(hi, 4)}
                     for k, (c, t, lo, hi) in tally["stages_s"].items()},
        "devices": tally["devices"], "updated": time.time(),
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

MAX_MERGES_IN_FLIGHT = 2  # each holds about two clips in memory
INDEX_FLUSH_S = 10.0  # index.json is rewritten at most this often (and at the end)


class _Driver:
    """The loop that keeps render tasks in flight and turns finished shards into index entries."""

    def __init__(self, req: Request, store: RunStore, plan: Plan, run_json: dict, state: mk.RunState,
                 on_progress: Callable[[Progress], None] | None, on_note: Callable[[str], None] | None):
        self.req, self.store, self.plan, self.state = req, store, plan, state
        self.cfg = req.cfg
        self.on_progress = on_progress or (lambda p: None)
        self.on_note = on_note or (lambda s: None)
        self.index = read_index(store)
        self.indexed = {s["name"] for s in self.index["shards"]}
        self.t0 = time.monotonic()
        self.session_done = 0
        self.session_failures = 0  # what the abort threshold counts: this session's new failures
        self.limit = max(self.cfg.run.min_failures_to_abort, math.ceil(self.cfg.run.max_failed_fraction * plan.n))
        self.last_beat = self.last_flush = time.monotonic()
        self.done_rec: dict[str, dict] = {}  # key -> what the shard's entry needs of its done record
        self.lost: set[str] = set()
        self.remaining: dict[int, int] = {}  # shard -> clips still to finish (done or lost)
        self.ready_merges: deque[int] = deque()
        self.unflushed: list[tuple[dict, list[str]]] = []  # merged shards not yet in index.json

    # -- state ----------------------------------------------------------------------------------
    def _is_lost(self, key: str) -> bool:
        return key not in self.state.done and self.state.next_attempt(key) >= self.cfg.run.max_attempts

    def _finished(self, index: int) -> None:
        """Clip ``index`` is done or lost: its shard may be complete."""
        s = self.plan.shard_of(index)
        self.remaining[s] -= 1
        if self.remaining[s] == 0:
            self.ready_merges.append(s)

    def _count_failure(self, record: dict) -> None:
        """A failure counts toward the abort limit unless it blames an asset already quarantined
        (one bad asset fails every clip that draws it; it is one problem)."""
        known = self.state.is_quarantined(record.get("asset_id"))
        self.state.record_failure(record["key"], record)
        if not known:
            self.session_failures += 1

    def _sync_failures(self, key: str) -> None:
        """Read failure records a task wrote before it died (the driver never got its reply)."""
        a = self.state.next_attempt(key)
        while self.store.exists(mk.failed_name(key, a)):
            try:
                self.state.record_failure(key, json.loads(self.store.read_text(mk.failed_name(key, a))))
            except (ValueError, KeyError):
                break
            a += 1

    def _progress(self) -> None:
        self.on_progress(Progress(self.plan.n, len(self.state.done), self.state.failed_attempts, self.session_done,
                                  time.monotonic() - self.t0))

    def _check_abort(self) -> None:
        if self.session_failures > self.limit:
            raise RunAborted(f"{self.session_failures} clip attempts failed in this session, more than the run tolerates "
                             f"({self.limit}: run.max_failed_fraction {self.cfg.run.max_failed_fraction:g} of "
                             f"{self.plan.n}, at least run.min_failures_to_abort {self.cfg.run.min_failures_to_abort}); "
                             f"see `dr-data status {self.store.url}`")

    # -- the loop -------------------------------------------------------------------------------
    def run(self, executor: Executor, resources, ctx: dict) -> None:
        from dr.pipeline.clip_task import run_clips
        from dr.pipeline.shard_merge import clip_rel, merge_shard

        executor.define("clip", TaskKind(run_clips, cpus=resources.threads, gpus=1 if resources.gpu else 0))
        executor.define("merge", TaskKind(merge_shard, cpus=0, retries=2, retry_on=(OSError,)))
        plan, state = self.plan, self.state
        # clips of shards already in the index are final (their clip tars may be left from a
        # session that died between writing the index and removing them)
        todo: deque[int] = deque()
        existing = set(self.store.list("clips"))  # usually (nearly) empty
        leftovers = []
        for s in range(plan.shards):
            keys = [plan.key(i) for i in plan.shard_indices(s)]
            if shard_name(s) in self.indexed:
                leftovers += [clip_rel(k) for k in keys if f"{k}.tar" in existing]
                continue
            self.remaining[s] = 0
            for i, k in zip(plan.shard_indices(s), keys):
                if k in state.done:
                    continue
                if self._is_lost(k):
                    self.lost.add(k)
                    continue
                self.remaining[s] += 1
                todo.append(i)
            if self.remaining[s] == 0:
                self.ready_merges.append(s)
        self.store.remove(leftovers)

        session_tries: dict[int, int] = {}
        delayed: list[tuple[float, int]] = []
        in_flight: dict = {}  # handle -> ("clip", indices, submitted) | ("merge", shard, keys)
        per_task = self.cfg.run.clips_per_task or (64 if self.req.dry_run else 1)
        # in the driver's process a queued task would wait behind the running one: queue none
        max_in_flight = resources.workers * (1 if resources.in_process else self.cfg.run.in_flight_per_worker)
        deadline_s = self.cfg.worker.clip_timeout_s * self.cfg.run.max_attempts + 600.0
        self._progress()
        while todo or delayed or in_flight or self.ready_merges:
            now = time.monotonic()
            tasks = sum(1 for v in in_flight.values() if v[0] == "clip")
            while tasks < max_in_flight and (todo or (delayed and delayed[0][0] <= now)):
                slots = []
                while len(slots) < per_task and (todo or (delayed and delayed[0][0] <= now)):
                    i = heapq.heappop(delayed)[1] if delayed and delayed[0][0] <= now else todo.popleft()
                    key = plan.key(i)
                    slots.append((i, state.next_attempt(key), state.retry_count(key), state.excluded_assets(key)))
                handle = executor.submit("clip", ctx, slots)
                in_flight[handle] = ("clip", [sl[0] for sl in slots], now)
                tasks += 1
            merges = len(in_flight) - tasks
            while merges < MAX_MERGES_IN_FLIGHT and self.ready_merges:
                s = self.ready_merges.popleft()
                keys = [plan.key(i) for i in plan.shard_indices(s) if plan.key(i) in state.done]
                if not keys:  # every clip of the shard was lost
                    continue
                handle = executor.submit("merge", self.store.url, s, keys, self._shas(keys),
                                         str(self.req.cache_dir) if self.req.cache_dir else None)
                in_flight[handle] = ("merge", s, keys)
                merges += 1
            if not in_flight:
                if delayed:
                    time.sleep(min(1.0, max(0.0, delayed[0][0] - time.monotonic())))
                continue
            for handle in executor.wait(list(in_flight), timeout=1.0):
                what = in_flight.pop(handle)
                if what[0] == "merge":
                    self._merged(executor, handle, what, todo)
                else:
                    self._clips_done(executor, handle, what[1], session_tries, delayed)
            for handle, what in list(in_flight.items()):
                if what[0] == "clip" and time.monotonic() - what[2] > deadline_s * len(what[1]):
                    executor.cancel(handle)
            if time.monotonic() - self.last_flush > INDEX_FLUSH_S:
                self.flush_index()
            if time.monotonic() - self.last_beat > HEARTBEAT_S:
                self.last_beat = time.monotonic()
                self.store.write_text(STATS_JSON, json.dumps(self._quick_stats(), indent=1, sort_keys=True) + "\n")
        self.flush_index()

    def flush_index(self) -> None:
        """Record merged shards in index.json, then remove their clips' tars (in that order: a
        driver that dies in between leaves tars that the next session removes)."""
        from dr.pipeline.shard_merge import clip_rel

        self.last_flush = time.monotonic()
        if not self.unflushed:
            return
        names = {e["name"] for e, _ in self.unflushed}
        self.index["shards"] = [x for x in self.index["shards"] if x["name"] not in names] + [e for e, _ in self.unflushed]
        write_index(self.store, self.index, self.req.cache_dir)
        self.indexed |= names
        keys = [k for _, ks in self.unflushed for k in ks]
        self.store.remove([clip_rel(k) for k in keys])
        for k in keys:
            self.done_rec.pop(k, None)
        self.unflushed = []

    def _keep(self, rec: dict) -> None:
        self.done_rec[rec["key"]] = {k: rec.get(k) for k in ("sha256", "timings", "wall_s", "device", "bytes")}

    def _shas(self, keys: list[str]) -> dict[str, str]:
        missing = [k for k in keys if k not in self.done_rec]
        for rec in mk.iter_done_records(self.store, missing):
            self._keep(rec)
        return {k: self.done_rec[k]["sha256"] if k in self.done_rec else "" for k in keys}

    def _quick_stats(self) -> dict:
        return {"planned": self.plan.n, "done": len(self.state.done), "failed_attempts": self.state.failed_attempts,
                "retries": self.state.retries, "shards_written": len(self.index["shards"]), "updated": time.time(),
                "complete": False}

    def _merged(self, executor: Executor, handle, what, todo: deque) -> None:
        from dr.pipeline.shard_merge import ClipDataError, clip_rel

        _, s, keys = what
        try:
            entry = executor.result(handle)
        except (TaskFailed, TaskLost) as e:
            cause = getattr(e, "cause", e)
            if isinstance(cause, ClipDataError):
                # the clip's data is gone or damaged: forget that it was done, render it again
                self.on_note(f"{cause}; rendering clip {cause.key} again")
                self.store.remove([mk.done_name(cause.key), clip_rel(cause.key)])
                self.state.done.discard(cause.key)
                self.done_rec.pop(cause.key, None)
                self.remaining[s] += 1
                todo.appendleft(index_of(cause.key))
                self.session_failures += 1  # a failure, though not one of the slot's attempts
                self._check_abort()
                return
            if is_storage_error(cause):
                raise RunAborted(f"cannot write shard {shard_name(s)} to {self.store.url}: {cause}") from None
            raise RunAborted(f"assembling {shard_name(s)} failed: {type(cause).__name__}: "
                             f"{' '.join(str(cause).split())[:300]}") from None
        tally = new_tally()
        for k in keys:
            if k in self.done_rec:
                tally_record(tally, self.done_rec[k])
        if tally["clips"] == len(keys):  # (else compute_stats reads this shard's markers)
            entry = {**entry, "stats": tally}
        self.unflushed.append((entry, keys))

    def _clips_done(self, executor: Executor, handle, indices: list[int], session_tries: dict[int, int],
                    delayed: list) -> None:
        try:
            outs = executor.result(handle)
        except TaskFailed as e:
            cause = e.cause
            if is_storage_error(cause):
                raise RunAborted(f"cannot write to {self.store.url}: {cause}") from None
            keys = ", ".join(self.plan.key(i) for i in indices[:3]) + (", ..." if len(indices) > 3 else "")
            raise RunAborted(f"render task for clip{'s' * (len(indices) > 1)} {keys} failed with a bug: "
                             f"{type(cause).__name__}: {' '.join(str(cause).split())[:300]} "
                             f"(see {self.store.url}/logs)") from None
        except TaskLost as e:  # worker or node death, cancellation, object loss, ...
            outs = [{"system": {"kind": "ray", "reason": e.reason}, "failures": [], "done": None, "storage": None}
                    for _ in indices]
        for out in outs:
            if out.get("storage"):
                raise RunAborted(out["storage"])
        for index, out in zip(indices, outs):
            self._clip_done(index, out, session_tries, delayed)

    def _clip_done(self, index: int, out: dict, session_tries: dict[int, int], delayed: list) -> None:
        key = self.plan.key(index)
        for f in out["failures"]:
            self._count_failure(f)
            self.on_note(f"clip {key} attempt {f['attempt']} failed ({f['kind']}): {f['reason']}")
        if out["done"]:
            self.state.done.add(key)
            self._keep({**out["done"], "key": key})
            self.session_done += 1
            self._finished(index)
        elif out["system"]:
            self._sync_failures(key)
            sysf = {**out["system"], "key": key, "index": index, "attempt": self.state.next_attempt(key)}
            t = session_tries.get(index, 0)
            mk.write_marker(self.store, mk.retry_name(key, sysf["attempt"], self.state.retry_count(key)), sysf)
            self.state.note_retry(key)
            if t < self.cfg.run.max_retries:
                session_tries[index] = t + 1
                wait = self.cfg.run.retry_backoff_s * 2 ** t
                self.on_note(f"clip {key}: {sysf['reason']}; retry {t + 1}/{self.cfg.run.max_retries} in {wait:g} s")
                heapq.heappush(delayed, (time.monotonic() + wait, index))
            else:
                session_tries.pop(index, None)
                rec = {**sysf, "asset_id": None, "reason": f"{sysf['reason']} (after {t + 1} tries)"}
                mk.write_marker(self.store, mk.failed_name(key, rec["attempt"]), rec)
                self._count_failure(rec)
                self.on_note(f"clip {key} attempt {rec['attempt']} gave up after {t + 1} system failures")
                if not self._is_lost(key):
                    heapq.heappush(delayed, (time.monotonic(), index))
        if not out["done"] and self._is_lost(key) and key not in self.lost:
            self.lost.add(key)
            self._finished(index)
            self.on_note(f"clip slot {key} is lost: {self.cfg.run.max_attempts} attempts failed")
        self._check_abort()
        self._progress()


def generate(req: Request, on_progress: Callable[[Progress], None] | None = None,
             on_note: Callable[[str], None] | None = None,
             on_start: Callable[[str, "Plan", mk.RunState], None] | None = None,
             executor: Executor | None = None) -> Report:
    """Run (or resume) the run ``req`` describes; returns what it made. Raises UserError on bad
    input and RunAborted when the run cannot be completed. ``executor``: where the tasks run;
    by default Ray (a local one, or req.ray_address), started here and stopped at the end."""
    from dr.assets_manifest.build import available_cpus
    from dr.cache import cache_dir as resolve_cache
    from dr.pipeline import ray_cluster

    cache = resolve_cache(req.cache_dir)
    setup = inspect(req)
    store, plan = setup.store, setup.plan
    if setup.existing is not None:
        state = mk.scan(store)
        index = read_index(store)
        if len(index["shards"]) == plan.shards:
            # every shard is written: nothing left to do, so no Ray and no writes
            return Report(run=store.url, planned=plan.n, done=index.get("samples", 0),
                          lost=lost_keys(plan, index, state, req.cfg.run.max_attempts), shards=len(index["shards"]),
                          bytes=sum(s["bytes"] for s in index["shards"]), session_done=0, session_s=0.0,
                          failed_attempts=state.failed_attempts, retries=state.retries, quarantine=state.quarantine,
                          resources="nothing to do", stats=json.loads(store.read_text(STATS_JSON))
                          if store.exists(STATS_JSON) else {})
        del state, index  # read again once the run is claimed; two copies of every key would be held meanwhile
    local_run = store.local_path() if store.local else None
    fresh = local_run is not None and not local_run.exists()
    lock = remote_lock = None
    if local_run is not None:
        from dr.pipeline.claim import claim

        try:  # before anything is written or started: of drivers started at once, one goes on
            lock = claim(local_run, lambda: _heartbeat_age(store), STALE_S)
        except OSError as e:
            raise UserError(f"cannot write to --out {store.url}: {e.strerror or e}") from None
    elif store.object_store:
        from dr.pipeline.claim import claim_object_store

        try:  # a conditional put where the store offers one; else commit's heartbeat check decides
            remote_lock = claim_object_store(store, lambda holder: _remote_holder_alive(store, holder))
        except OSError as e:
            raise UserError(f"cannot write to --out {store.url}: {e.strerror or e}") from None
        setup.claimed = remote_lock is not None
    committed = started_ray = False
    try:
        if setup.existing is None and store.exists(RUN_JSON):
            # another driver made the run and finished between our look and our claim: check against it
            fresh = False  # and nothing here is ours to remove
            claimed = setup.claimed
            setup = inspect(req)
            setup.claimed = claimed
            store, plan = setup.store, setup.plan
        if executor is None:
            started_ray = True  # stopped at the end whatever happens from here (stop is safe before a start)
            try:
                local = ray_cluster.start(req.ray_address, ray_cluster.ray_temp_dir(local_run, cache)
                                          if not req.ray_address else cache,
                                          num_cpus=None if req.ray_address else available_cpus(),
                                          connect_timeout_s=req.cfg.run.connect_timeout_s)
            except OSError as e:
                raise UserError(f"cannot start Ray in {local_run}: {e.strerror or e}") from None
            resources = ray_cluster.plan_resources(req.cfg.render.device, local, req.workers, req.dry_run,
                                                   req.cfg.run.gpu_wait_s)
            executor = RayExecutor()
        else:
            resources = ray_cluster.in_process_resources(req.cfg.render.device, req.dry_run)
        kind = device_kind(resources.gpu, req.dry_run)
        change = device_change(setup.existing, kind)
        if change:
            raise UserError(f"{store.url} holds a run made with different settings ({change}); resume it where it "
                            f"can render on its device kind (--device), or choose another --out")
        setup.device_kind = kind
        try:
            run_json = commit(setup, req)
            committed = True
        except OSError as e:
            raise UserError(f"cannot write to --out {store.url}: {e.strerror or e}") from None
        finished = False
        try:
            with Heartbeat(store):
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
                try:
                    driver.run(executor, resources, ctx)
                    finished = True
                finally:
                    try:
                        index = driver.index  # what index.json holds (flushed entries only)
                        stats = compute_stats(store, plan, state, index)
                        stats["complete"] = len(index["shards"]) == plan.shards
                        store.write_text(STATS_JSON, json.dumps(stats, indent=1, sort_keys=True) + "\n")
                        write_quarantine(store, state.quarantine)
                    except OSError:
                        if finished:
                            raise
                        # else the run is stopping for a reason already being reported
        finally:
            try:
                _heartbeat(store, ended=True)  # after the thread stopped: it is the last word
            except OSError:
                if finished:
                    raise
    except OSError as e:
        if is_storage_error(e):
            raise RunAborted(f"cannot write to {store.url}: {e.strerror or e}") from None
        raise
    except StorageError as e:
        raise RunAborted(str(e)) from None
    finally:
        if started_ray:
            ray_cluster.stop()
        if fresh and not committed:
            import shutil

            # this driver made the folder and holds its lock: only its own lock and Ray's temp files are there
            shutil.rmtree(local_run, ignore_errors=True)
        elif lock is not None:
            from dr.pipeline.claim import release

            release(lock)
        if remote_lock is not None and not committed:
            try:  # the claim ends with this driver: the next one need not wait for it to go stale
                _heartbeat(store, ended=True)
            except OSError:
                pass
    return Report(run=store.url, planned=plan.n, done=index.get("samples", 0), lost=sorted(driver.lost),
                  shards=len(index["shards"]), bytes=sum(s["bytes"] for s in index["shards"]),
                  session_done=driver.session_done, session_s=time.monotonic() - driver.t0,
                  failed_attempts=state.failed_attempts, retries=state.retries, quarantine=state.quarantine,
                  resources=resources.describe(), stats=stats)
