"""One clip slot of a run, as a render task executes it (in a Ray worker process, or any process).

The task samples the clip's SceneSpec (a pure function of config, seed, index and attempt, with
the assets that failed in the slot's earlier attempts left out), renders it in this process's
long-lived Blender worker, packs the sample into a one-sample tar, publishes it as
``clips/<key>.tar`` and then writes the clip's done marker. A deterministic failure is recorded
as a failed-attempt marker and the slot is re-sampled with the next attempt number, here, until
it succeeds or ``max_attempts`` is reached. A system failure (crash, timeout, I/O) ends the task
and is returned to the driver, which retries it with backoff. A storage failure (the run folder
is full or read-only) is returned as such: the driver stops the run.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Callable

from dr.pipeline.markers import done_name, failed_name, running_name, write_marker
from dr.pipeline.run_store import RunStore, StorageError, is_storage_error

MANIFEST_NAME = "manifest.jsonl"
# bytes a clip needs in staging besides its passes: EXR of one frame, the env map, slack
_SLACK = 64 * 2**20

_state: dict[str, object] = {}  # per process: the run's manifest and the Blender worker


def spec_asset_ids(spec) -> list[str]:
    """Every manifest asset a SceneSpec draws on (HDRI, ground, objects, primitive textures)."""
    ids = [spec.light.hdri.id, spec.ground.material.material.id]
    for o in spec.objects:
        if o.asset is not None:
            ids.append(o.asset.id)
        if getattr(o.material, "type", None) == "pbr":
            ids.append(o.material.material.id)
    return list(dict.fromkeys(ids))


def _manifest(store: RunStore, cache_dir: Path):
    """The run's own copy of its manifest, loaded once per process."""
    from dr.assets_manifest.manifest import load_manifest

    key = ("manifest", store.url)
    if key not in _state:
        _state[key] = load_manifest(store.local_copy(MANIFEST_NAME, cache_dir))
    return _state[key]


def _worker(cache_dir: Path, tmp: Path, threads: int, worker_cfg: dict):
    """This process's Blender worker; a new one when the GPU Ray gave this task changed."""
    from dr.render.worker import RenderWorker, WorkerLimits

    wanted = (str(cache_dir), str(tmp), threads, os.environ.get("CUDA_VISIBLE_DEVICES"), json.dumps(worker_cfg, sort_keys=True))
    current = _state.get("worker")
    if current is not None and current[0] == wanted:
        return current[1]
    if current is not None:
        current[1].close()
    limits = WorkerLimits(max_clips=worker_cfg["clips_per_worker"], max_rss_mb=worker_cfg["max_rss_mb"],
                          timeout_s=worker_cfg["clip_timeout_s"])
    w = RenderWorker(cache_dir, tmp, threads, limits)
    _state["worker"] = (wanted, w)
    return w


def _check_space(store: RunStore, staging: Path, need: int) -> None:
    for where in {staging, store.local_path() if store.local else staging}:
        free = shutil.disk_usage(where).free
        if free < need:
            raise StorageError(f"only {free / 2**20:.0f} MiB free in {where}; a clip needs about {need / 2**20:.0f} MiB")


def clip_bytes_estimate(scene: dict, render: dict) -> int:
    """A generous bound on the staging space one clip takes (passes raw, one frame's EXR, env)."""
    px = scene["width"] * scene["height"]
    return px * scene["frames"] * 40 + px * 4 * 4 * 16 + render["env_height"] ** 2 * 2 * 6 * 2 + _SLACK


def run_clip(ctx: dict, index: int, attempt: int, try_: int, excluded: list[str]) -> dict:
    """Execute clip slot ``index`` from ``attempt`` (see the module docstring); ``excluded``: the
    assets that failed the slot's earlier attempts. Returns {index, key, attempt, excluded,
    failures, done, system, storage}."""
    from dr.cache import cache_dir as resolve_cache
    from dr.errors import UserError
    from dr.scenes.config import SceneConfig
    from dr.scenes.sampler import clip_id, sample_scene

    store = RunStore(ctx["run"])
    cache = resolve_cache(ctx.get("cache_dir"))
    key = clip_id(ctx["seed"], index)
    out = {"index": index, "key": key, "attempt": attempt, "excluded": list(excluded), "failures": [],
           "done": None, "system": None, "storage": None}
    host = socket.gethostname()
    record = {"key": key, "index": index, "attempt": attempt, "try": try_, "host": host}
    staging = store.scratch(cache, f"{socket.gethostname()}-{os.getpid()}")  # this process's clips
    with slot_guard(store, key, staging, record, out):
        manifest = _manifest(store, cache)
        scene_cfg = SceneConfig.model_validate(ctx["scene"])
        excl = list(excluded)
        while True:
            record.update(attempt=attempt, time=time.time())  # in place: the guard reports the latest
            t0 = time.perf_counter()
            try:
                spec = sample_scene(scene_cfg, manifest, ctx["seed"], index, attempt, excl)
            except UserError as e:
                failure = {**record, "kind": "sample", "reason": str(e), "asset_id": None}
            else:
                result = _render(ctx, store, cache, staging, spec, attempt, try_)
                if result.get("system"):
                    out["system"] = {**record, **result["system"]}
                    break
                if result.get("failure") is None:
                    out["done"] = {**record, **result["done"], "wall_s": time.perf_counter() - t0,
                                   "excluded_assets": excl}
                    write_marker(store, done_name(key), out["done"])
                    break
                failure = {**record, **result["failure"]}
            write_marker(store, failed_name(key, attempt), failure)
            out["failures"].append(failure)
            if failure.get("asset_id") and failure["asset_id"] not in excl:
                excl.append(failure["asset_id"])
            attempt += 1
            out["attempt"], out["excluded"] = attempt, list(excl)
            if attempt >= ctx["max_attempts"]:
                break
    return out


@contextmanager
def slot_guard(store: RunStore, key: str, staging: Path, record: dict, out: dict):
    """What every task does around one slot: the running marker and the staging folder first; a storage
    failure (the run folder is full or read-only) or another I/O error raised inside is recorded in
    ``out`` ('storage', or 'system' with ``record`` as it is then: the driver retries with backoff);
    the running marker and the slot's staging removed last."""
    try:
        write_marker(store, running_name(key), {**record, "pid": os.getpid(), "started": time.time()})
        staging.mkdir(parents=True, exist_ok=True)
        yield
    except StorageError as e:
        out["storage"] = str(e)
    except OSError as e:
        if is_storage_error(e):
            out["storage"] = _storage_message(store, e)
        else:  # a network or I/O hiccup: the driver retries with backoff
            out["system"] = {**record, "kind": "system", "reason": _storage_message(store, e)}
    finally:
        try:
            store.remove([running_name(key)])
        except OSError:
            pass
        shutil.rmtree(staging / key, ignore_errors=True)


def run_slots(one: Callable, slots: list) -> list[dict]:
    """``one(index, attempt, try, excluded)`` for each slot, one after another in this process; one
    result per slot, in order. After a storage failure the remaining slots are not started (the
    driver stops the run) and say so."""
    outs: list[dict] = []
    for index, attempt, try_, excluded in slots:
        if outs and outs[-1]["storage"]:
            outs.append({**outs[-1], "index": index, "key": None, "failures": [], "done": None, "system": None})
            continue
        outs.append(one(index, attempt, try_, excluded))
    return outs


def run_clips(ctx: dict, slots: list[tuple[int, int, int, list[str]]]) -> list[dict]:
    """Execute several clip slots, each ``(index, attempt, try, excluded)`` as run_clip takes it (run_slots)."""
    return run_slots(lambda *slot: run_clip(ctx, *slot), slots)


def _storage_message(store: RunStore, e: OSError) -> str:
    return f"cannot write to {store.url}: {e.strerror or e}" + (f" ({e.filename})" if getattr(e, "filename", None) else "")


def _render(ctx: dict, store: RunStore, cache: Path, staging: Path, spec, attempt: int, try_: int) -> dict:
    """Render and publish one spec. Returns {done: {...}} or {failure: {...}} or {system: {...}}."""
    from dr.render.errors import RenderError
    from dr.shards.schema import member_suffixes

    key = spec.clip_id
    log_rel = f"logs/{key}.a{attempt}.t{try_}.log"
    log = store.local_path(log_rel) if store.local else staging / log_rel
    log.parent.mkdir(parents=True, exist_ok=True)
    if ctx["dry_run"]:
        from dr.render.metadata import base_metadata, spec_cameras
        from dr.shards.codec import npy_bytes

        t = time.perf_counter()
        # a valid sample without pixels: the spec's metadata (every pass and the env map missing)
        # and its cameras, which the spec holds exactly
        meta = {**base_metadata(spec, ctx["run_id"], [], {"provenance": "missing"}), "dry_run": True}
        members = {"json": json.dumps(meta, sort_keys=True).encode(),
                   **{suffix: npy_bytes(arr) for suffix, arr in spec_cameras(spec).items()}}
        timings = {"setup": 0.0, "import": 0.0, "trace": 0.0, "post": 0.0, "write": 0.0}
        device = "none (dry run)"
        log.write_text(f"dry run: {key} attempt {attempt}, no pixels\n")
        timings["setup"] = time.perf_counter() - t
    else:
        _check_space(store, staging, clip_bytes_estimate(ctx["scene"], ctx["render"]))
        worker = _worker(cache, staging / "tmp", ctx["threads"], ctx["worker"])
        job = {"key": key, "spec": spec.to_json(), "settings": ctx["render"], "staging": str(staging),
               "log": str(log), "run_id": ctx["run_id"]}
        try:
            result = worker.render(job)
        except RenderError as e:
            _publish_log(store, log, log_rel)
            # a device that is missing on this node is the node's fault, not the clip's
            if not e.deterministic or e.kind == "device":
                return {"system": {"kind": e.kind, "reason": str(e), "log": log_rel}}
            # a disk that filled up mid-clip looks like a broken clip to Blender: say what it is
            _check_space(store, staging, clip_bytes_estimate(ctx["scene"], ctx["render"]))
            return {"failure": {"kind": e.kind, "reason": str(e), "asset_id": e.asset_id, "log": log_rel}}
        sample_dir = Path(result["dir"])
        members = {s: sample_dir / s for s in member_suffixes() if (sample_dir / s).exists()}
        timings, device = result["timings"], result["device"]
    t = time.perf_counter()
    entry = publish_sample(store, staging, key, members, before=lambda: _publish_log(store, log, log_rel))
    timings = {**timings, "commit": time.perf_counter() - t}
    return {"done": {"sha256": entry["sha256"], "bytes": entry["bytes"], "timings": timings, "device": device,
                     "log": log_rel, "spec_sha256": _sha(spec.to_json())}}


def publish_sample(store: RunStore, staging: Path, key: str, members: dict, before=None) -> dict:
    """Pack one sample into a one-sample tar in ``staging`` and publish it as clips/<key>.tar (``before``:
    called between the two); returns the tar's entry (sha256, bytes)."""
    from dr.shards.writer import SampleTar

    tar_path = staging / f"{key}.tar"
    tar_path.unlink(missing_ok=True)
    tar = SampleTar(tar_path)
    try:
        tar.add(key, members)
        entry = tar.close()
    except BaseException:
        tar.discard()
        raise
    if before is not None:
        before()
    store.put_file(tar_path, f"clips/{key}.tar", move=True)
    return entry


def _publish_log(store: RunStore, log: Path, rel: str) -> None:
    """Remote runs: copy the staged log into the run's logs/ (local runs write it there)."""
    if not store.local and log.exists():
        store.put_file(log, rel, move=True)


def _sha(text: str) -> str:
    import hashlib

    return hashlib.sha256(text.encode()).hexdigest()
