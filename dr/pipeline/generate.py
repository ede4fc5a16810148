"""`dr-data generate`: a number and a manifest in, a folder of validated shards out; the render
job on the run engine (dr.pipeline.engine).

The job's part: its items are N clip slots of a seed; its inputs the asset manifest (copied into
the run); its identity the scene and render config, N, seed, clips per shard, the manifest's
sha256, the versions and the device kind; its task renders (or, on a dry run, samples) clips
(dr.pipeline.clip_task); what it quarantines are assets. The driver that plans, claims, keeps
tasks in flight, assembles shards and keeps the stats is the engine's. The driver process is the
only writer of run.json, plan, index.json, stats.json and quarantine.jsonl; tasks write clips,
logs and markers.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import platform
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from dr.errors import UserError
from dr.pipeline import markers as mk
from dr.pipeline.claim import LOCK_NAME
from dr.pipeline.clip_task import MANIFEST_NAME
from dr.pipeline.config import GenerateConfig, identity, identity_diff
from dr.pipeline.engine import (QUARANTINE, RUN_JSON, JobTasks, Progress, Report, claim_by_heartbeat, config_hash_of,
                                open_store, run_job)
from dr.pipeline.executor import Executor
from dr.pipeline.plan import Plan, read_plan_header, write_plan
from dr.pipeline.run_store import RunStore

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


def dist_version(dist: str) -> str | None:
    """The installed version of package ``dist``; None where it is not installed."""
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def versions() -> dict:
    import dr

    return {"dr": dr.__version__, "blender": dist_version("bpy"), "ray": dist_version("ray"),
            "python": platform.python_version()}


# ---------------------------------------------------------------------------------------------
# the run folder

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
    claim_by_heartbeat(store, locked=store.local or setup.claimed)
    if existing is None:
        store.write_text(MANIFEST_NAME, setup.manifest.to_jsonl())
    if read_plan_header(store) != plan.header():
        # the plan is a function of the identity: (re)write a missing or damaged one
        write_plan(store, plan, req.cache_dir)
    store.write_text(RUN_JSON, json.dumps(run_json, indent=1, sort_keys=True) + "\n")
    for sub in ("markers", "shards", "clips", "logs"):
        store.makedirs(sub)
    return run_json


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


def generate(req: Request, on_progress: Callable[[Progress], None] | None = None,
             on_note: Callable[[str], None] | None = None,
             on_start: Callable[[str, "Plan", mk.RunState], None] | None = None,
             executor: Executor | None = None) -> Report:
    """Run (or resume) the run ``req`` describes; returns what it made. Raises UserError on bad
    input and RunAborted when the run cannot be completed. ``executor``: where the tasks run;
    by default Ray (a local one, or req.ray_address), started here and stopped at the end."""
    return run_job(GenerateJob(req), on_progress, on_note, on_start, executor)


@dataclass
class GenerateJob:
    """The render job on the engine (dr.pipeline.engine.Job)."""

    req: Request

    def __post_init__(self) -> None:
        r = self.req
        self.run, self.cache_dir, self.ray_address, self.workers = r.cfg.run, r.cache_dir, r.ray_address, r.workers
        self.device, self.dry_run = r.cfg.render.device, r.dry_run

    def inspect(self) -> Setup:
        return inspect(self.req)

    def commit(self, setup: Setup) -> dict:
        return commit(setup, self.req)

    def tasks(self, setup: Setup, run_json: dict, resources) -> JobTasks:
        from dr.pipeline.clip_task import run_clips

        req = self.req
        ctx = {"run": setup.store.url, "run_id": run_json["run_id"], "seed": req.seed,
               "scene": req.cfg.scene.model_dump(mode="json"), "render": req.cfg.render.model_dump(mode="json"),
               "worker": req.cfg.worker.model_dump(mode="json"), "max_attempts": req.cfg.run.max_attempts,
               "dry_run": req.dry_run, "threads": resources.threads,
               "cache_dir": str(req.cache_dir) if req.cache_dir else None}
        if not resources.gpu and req.cfg.render.device == "auto":
            # tasks that were given no GPU must not find one on their node and take it
            ctx["render"] = {**ctx["render"], "device": "cpu"}
        # a dry-run slot takes milliseconds, so Ray's own cost per task would dominate: 64 per task
        return JobTasks(run_clips, ctx, req.cfg.run.clips_per_task or (64 if req.dry_run else 1),
                        resources.threads, resources.gpu, req.cfg.worker.clip_timeout_s)

    def finish(self, store: RunStore, state: mk.RunState) -> None:
        write_quarantine(store, state.quarantine)
