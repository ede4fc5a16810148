"""`dr-data autolabel`: a folder of DL3DV-style scenes in, shards of real clips out (source real,
DESIGN section 2 "Real clips"); the labelling job on the run engine (dr.pipeline.engine).

The job's part: its items are the segments of every usable scene, in scene order (the scene list,
with each scene's frame count, segment starts and first item, is the run's manifest.jsonl, fixed
at the start); its identity the clip, inverse and light config, the scene list's digest, the
inverse checkpoint's and the light folder's digests and the versions; its task labels a batch of
segments (one scene's, as a rule) in a process that keeps its models loaded. A scene that cannot
give clips (unreadable transforms, missing frames, too short) is quarantined when the run is
planned; one whose frames turn out corrupt when its clips are read is quarantined then: its
segments are given up at once (the failure blames the scene, so it counts once toward the abort
threshold) and the run goes on. quarantine.jsonl lists both with reasons.

A video's lighting is estimated once, by the first task that needs it, and kept in
``lights/<scene digest>.npz`` in the run folder, so its other segments (and a resumed run) reuse it.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path

from dr.errors import UserError
from dr.pipeline import markers as mk
from dr.pipeline.autolabel_config import IDENTITY_SECTIONS, AutolabelConfig
from dr.pipeline.config import identity_diff
from dr.pipeline.engine import (QUARANTINE, RUN_JSON, JobTasks, Report, claim_by_heartbeat, config_hash_of, open_store,
                                run_job)
from dr.pipeline.executor import Executor
from dr.pipeline.plan import Plan, read_plan_header, write_plan
from dr.pipeline.run_store import RunStore

SCENES_NAME = "manifest.jsonl"  # the scene list (DESIGN section 4: what the run draws from)
LIGHTS = "lights"


@dataclass
class Request:
    scenes: str
    out: str
    cfg: AutolabelConfig
    inverse: str | None = None
    light: str | None = None
    ray_address: str | None = None
    workers: int | None = None
    clips_per_shard: int = 16
    device: str = "auto"
    single_step: bool = False  # refuse an inverse renderer that is not single-step
    dry_run: bool = False
    cache_dir: Path | None = None
    argv: list[str] = field(default_factory=list)


def versions() -> dict:
    from dr.pipeline.generate import dist_version, versions as run_versions

    return {**{k: x for k, x in run_versions().items() if k != "blender"},
            **{d: dist_version(d) for d in ("torch", "diffusers", "transformers")}}


def scene_digest(scene_id: str) -> str:
    return hashlib.sha256(scene_id.encode()).hexdigest()[:16]


# ---------------------------------------------------------------------------------------------
# the scene list

def scan_scenes(root: Path, cfg: AutolabelConfig) -> tuple[list[dict], list[dict]]:
    """(usable scenes, quarantined scenes) below ``root``, each a manifest row. A usable row: id,
    folder, frames, transforms sha256, segment starts and the index of its first item."""
    from dr.labeling.dl3dv import SceneError, find_scenes, load_scene, plan_segments

    c = cfg.clips
    rows, bad = [], []
    first = 0
    for folder in find_scenes(root):
        sid = folder.relative_to(root).as_posix() if folder != root else folder.name
        try:
            scene = load_scene(folder, root, covers=(c.height, c.width))
            starts = plan_segments(len(scene.frames), c.frames, c.stride, c.segments_per_video)
        except SceneError as e:
            bad.append({"scene": sid, "folder": str(folder), "reason": str(e)})
            continue
        transforms = next(p for p in (folder / "transforms.json", folder / "colmap" / "transforms.json") if p.is_file())
        rows.append({"scene": scene.id, "folder": str(folder), "frames": len(scene.frames),
                     "image_dir": scene.image_dir.name, "starts": starts, "first": first,
                     "transforms_sha256": hashlib.sha256(transforms.read_bytes()).hexdigest()})
        first += len(starts)
    return rows, bad


def scenes_jsonl(rows: list[dict], bad: list[dict]) -> str:
    return "".join(json.dumps(r, sort_keys=True) + "\n" for r in rows + [{**b, "quarantined": True} for b in bad])


def scenes_digest(rows: list[dict]) -> str:
    """What of the scene list decides the clips: ids, frame counts, transforms, segment starts (not the
    folder's absolute path: a moved dataset is the same dataset)."""
    keep = [{k: r[k] for k in ("scene", "frames", "image_dir", "starts", "transforms_sha256")} for r in rows]
    return hashlib.sha256(json.dumps(keep, sort_keys=True).encode()).hexdigest()


def item_of(rows: list[dict], index: int) -> tuple[dict, int]:
    """(scene row, segment start) of item ``index``."""
    import bisect

    k = bisect.bisect_right([r["first"] for r in rows], index) - 1
    r = rows[k]
    return r, r["starts"][index - r["first"]]


# ---------------------------------------------------------------------------------------------
# the run folder

@dataclass
class Setup:
    store: RunStore
    existing: dict | None
    rows: list[dict]
    bad: list[dict]
    inverse: str | None
    light: str | None
    identity: dict
    plan: Plan
    device_kind: str | None = None
    claimed: bool = False


def resolve_models(req: Request) -> tuple[str | None, str | None]:
    """(inverse pipeline folder, light folder or 'hub') of the request, checked; None on a dry run
    where not given. UserError with what to give otherwise."""
    from dr.models.folders import check_light, pipeline_class, resolve_pipeline

    inverse = req.inverse or os.environ.get("DR_AUTOLABEL_INVERSE") or None
    light = req.light or os.environ.get("DR_AUTOLABEL_LIGHT") or None
    if not req.dry_run and (inverse is None or light is None):
        need = [n for n, v in (("--inverse CKPT (a `dr-train inverse` run or checkpoint)", inverse),
                               ("--light DIR (DiffusionLight's models; `dr-train init-tiny` writes a tiny set)", light))
                if v is None]
        raise UserError(f"give {' and '.join(need)}, or set $DR_AUTOLABEL_INVERSE / $DR_AUTOLABEL_LIGHT")
    folder = None
    if inverse is not None:
        try:
            folder, _ = resolve_pipeline(Path(inverse).expanduser().absolute())
        except FileNotFoundError as e:
            raise UserError(f"--inverse: {e}") from None
        cls = pipeline_class(folder)
        if cls != "InverseRendererPipeline":
            raise UserError(f"--inverse {inverse}: {folder} holds a {cls}, not an inverse renderer of `dr-train inverse`")
        if req.single_step and not json.loads((folder / "model_index.json").read_text()).get("single_step"):
            raise UserError(f"--single-step: {folder} is a multi-step inverse renderer; give one fine-tuned by "
                            f"`dr-train inverse --single-step`, or leave --single-step out")
        folder = str(folder)
    if light is not None:
        light = check_light(light)
    return folder, light


def identity(req: Request, rows: list[dict], inverse: str | None, light: str | None) -> dict:
    from dr.models.folders import folder_sha256, light_identity
    from dr.shards.schema import SCHEMA_VERSION

    v = versions()
    return {
        "job": "autolabel", "clips_per_shard": req.clips_per_shard, "dry_run": req.dry_run,
        "schema_version": SCHEMA_VERSION, "scenes_sha256": scenes_digest(rows),
        "inverse_sha256": folder_sha256(Path(inverse)) if inverse else None,
        "light": light_identity(light) if light else None,
        "versions": {k: v[k] for k in ("dr", "torch", "diffusers", "transformers")},
        **{name: getattr(req.cfg, name).model_dump(mode="json") for name in IDENTITY_SECTIONS},
    }


def inspect(req: Request) -> Setup:
    root = Path(req.scenes).expanduser()
    if not root.is_dir():
        raise UserError(f"SCENES {req.scenes!r} is not a folder (give a folder of DL3DV-style scenes: transforms.json "
                        f"and images*/ each)")
    store = open_store(req.out)
    try:
        existing = json.loads(store.read_text(RUN_JSON)) if store.exists(RUN_JSON) else None
    except (OSError, ValueError) as e:
        raise UserError(f"cannot read {store.url}/{RUN_JSON}: {e}") from None
    if existing is None and store.local and store.local_path().is_dir() and any(
            p.name not in (".ray", ".staging") and not p.name.startswith("lock") for p in store.local_path().iterdir()):
        raise UserError(f"--out {store.url} is not empty and holds no run (no run.json); choose an empty or new folder")
    if existing is not None and existing.get("job") != "autolabel":
        raise UserError(f"{store.url} holds a `dr-data {existing.get('job', 'generate')}` run, not an autolabel one; "
                        f"choose another --out")
    inverse, light = resolve_models(req)
    rows, bad = scan_scenes(root.absolute(), req.cfg)
    if not rows:
        why = f"; {len(bad)} quarantined, e.g. {bad[0]['scene']}: {bad[0]['reason']}" if bad else ""
        raise UserError(f"SCENES {req.scenes!r} holds no usable scene (none with transforms.json and frames for one "
                        f"clip){why}")
    ident = identity(req, rows, inverse, light)
    ident_hash = config_hash_of(ident)
    if existing is not None and existing.get("identity_hash") != ident_hash:
        diff = identity_diff(existing.get("identity", {}), ident)
        raise UserError(f"{store.url} holds a run made with different settings ({'; '.join(diff) or 'unknown'}); "
                        f"resume it with its own settings (see its run.json) or choose another --out")
    n = rows[-1]["first"] + len(rows[-1]["starts"])
    return Setup(store, existing, rows, bad, inverse, light, ident,
                 Plan(n, req.cfg.clips.seed, req.clips_per_shard, ident_hash))


def commit(setup: Setup, req: Request) -> dict:
    from dr.config import config_hash

    store, plan, existing = setup.store, setup.plan, setup.existing
    session = {"started": time.time(), "argv": req.argv, "host": socket.gethostname(), "pid": os.getpid(),
               "ray_address": req.ray_address, "workers": req.workers, "versions": versions(),
               "device": req.cfg.device.model_dump(mode="json"), "run": req.cfg.run.model_dump(mode="json")}
    run_json = existing or {
        "job": "autolabel", "created": time.time(),
        "run_id": f"{(req.out.rstrip('/').rsplit('/', 1)[-1] or 'run')}-{plan.identity_hash[:8]}",
        "n": plan.n, "seed": plan.seed, "clips_per_shard": req.clips_per_shard, "dry_run": req.dry_run,
        "scenes": {"given": str(Path(req.scenes).expanduser().absolute()), "usable": len(setup.rows),
                   "quarantined": len(setup.bad), "copy": SCENES_NAME},
        "models": {"inverse": setup.inverse, "light": setup.light},
        "config": req.cfg.model_dump(mode="json"), "config_hash": config_hash(req.cfg),
        "identity": setup.identity, "identity_hash": plan.identity_hash,
        "versions": versions(), "device_kind": setup.device_kind, "sessions": [],
    }
    run_json["sessions"] = (run_json.get("sessions") or [])[-49:] + [session]
    store.makedirs()
    claim_by_heartbeat(store, locked=store.local or setup.claimed)
    store.write_text(SCENES_NAME, scenes_jsonl(setup.rows, setup.bad))
    if read_plan_header(store) != plan.header():
        write_plan(store, plan, req.cache_dir)
    store.write_text(RUN_JSON, json.dumps(run_json, indent=1, sort_keys=True) + "\n")
    for sub in ("markers", "shards", "clips", "logs", LIGHTS):
        store.makedirs(sub)
    return run_json


@dataclass
class AutolabelJob:
    """The labelling job on the engine (dr.pipeline.engine.Job)."""

    req: Request
    work = "labelling"  # what its workers do, as the progress says

    def __post_init__(self) -> None:
        r = self.req
        self.run, self.cache_dir, self.ray_address, self.workers = r.cfg.run, r.cache_dir, r.ray_address, r.workers
        self.device, self.dry_run = r.device, r.dry_run
        self._bad: list[dict] = []

    def inspect(self) -> Setup:
        setup = inspect(self.req)
        self._bad = setup.bad
        return setup

    def commit(self, setup: Setup) -> dict:
        return commit(setup, self.req)

    def tasks(self, setup: Setup, run_json: dict, resources) -> JobTasks:
        c = self.req.cfg
        ctx = {"run": setup.store.url, "run_id": run_json["run_id"], "seed": c.clips.seed,
               "scenes_root": str(Path(self.req.scenes).expanduser().absolute()),
               "clips": c.clips.model_dump(mode="json"), "inverse_cfg": c.inverse.model_dump(mode="json"),
               "light_cfg": c.light.model_dump(mode="json"), "inverse": setup.inverse, "light": setup.light,
               "inverse_sha256": setup.identity["inverse_sha256"],
               "max_attempts": c.run.max_attempts, "dry_run": self.req.dry_run,
               "threads": c.device.threads or resources.threads, "gpu": resources.gpu,
               "cache_dir": str(self.req.cache_dir) if self.req.cache_dir else None}
        per_task = c.run.clips_per_task or c.clips.segments_per_video
        # a clip's labels take seconds to minutes; the lighting of a video once per video more
        timeout = 3600.0 + c.clips.frames * 60.0
        return JobTasks(label_clips, ctx, per_task, resources.threads, resources.gpu, timeout)

    def finish(self, store: RunStore, state: mk.RunState) -> None:
        lines = [json.dumps({"scene": b["scene"], "folder": b["folder"], "reason": b["reason"], "when": "planning"},
                            sort_keys=True) for b in self._bad]
        for aid, why in state.quarantine.items():
            lines.append(json.dumps({"scene": aid.removeprefix("scene:"), "reason": why, "when": "labelling"},
                                    sort_keys=True))
        if lines:
            store.write_text(QUARANTINE, "\n".join(lines) + "\n")


def autolabel(req: Request, on_progress=None, on_note=None, on_start=None, executor: Executor | None = None) -> Report:
    """Run (or resume) the labelling run ``req`` describes; returns what it made (UserError on bad
    input, RunAborted when the run cannot be completed)."""
    return run_job(AutolabelJob(req), on_progress, on_note, on_start, executor)


def quarantined_scenes(store: RunStore) -> list[dict]:
    if not store.exists(QUARANTINE):
        return []
    return [json.loads(line) for line in store.read_text(QUARANTINE).splitlines() if line.strip()]


# ---------------------------------------------------------------------------------------------
# the task

_rows: dict = {}


def _scene_rows(store: RunStore) -> list[dict]:
    if _rows.get("run") != store.url:
        rows = [json.loads(line) for line in store.read_text(SCENES_NAME).splitlines() if line.strip()]
        _rows.update(run=store.url, rows=[r for r in rows if not r.get("quarantined")])
    return _rows["rows"]


def _device(ctx: dict) -> str:
    if ctx["gpu"]:
        return "cuda"
    return "cpu"


def _scene_light(ctx: dict, store: RunStore, scene, m) -> tuple:
    """(env, light record) of a video: read from lights/ or estimated now and kept there."""
    import numpy as np

    from dr.labeling.autolabel import estimate_scene_light

    rel = f"{LIGHTS}/{scene_digest(scene.id)}.npz"
    if store.exists(rel):
        try:
            with np.load(io.BytesIO(store.read_bytes(rel))) as z:
                return z["env"].astype(np.float32), json.loads(str(z["record"]))
        except (OSError, ValueError, KeyError):
            pass  # a damaged file is as good as none: estimate again
    est = estimate_scene_light(m.painter, scene, ctx["light_cfg"])
    record = {"scene": scene.id, "seconds": round(est.seconds, 3), "paintings": est.paintings,
              "seen_fraction": round(float(est.valid.mean()), 4), "device": m.device}
    buf = io.BytesIO()
    np.savez(buf, env=est.env.astype(np.float32), record=np.array(json.dumps(record, sort_keys=True)),
             hdr_ball=est.hdr_ball.astype(np.float32))
    store.write_bytes(rel, buf.getvalue())
    return est.env, record


def label_clip(ctx: dict, index: int, attempt: int, try_: int) -> dict:
    """Label item ``index`` (a segment of a scene): {index, key, attempt, excluded, failures, done,
    system, storage} as the engine's tasks return."""
    from dr.cache import cache_dir as resolve_cache
    from dr.labeling.autolabel import inverse_passes, models, sample_members
    from dr.labeling.dl3dv import SceneError, load_scene, segment_clip
    from dr.pipeline.clip_task import publish_sample, slot_guard
    from dr.pipeline.markers import done_name, failed_name, write_marker
    from dr.scenes.sampler import clip_id

    store = RunStore(ctx["run"])
    cache = resolve_cache(ctx.get("cache_dir"))
    key = clip_id(ctx["seed"], index)
    out = {"index": index, "key": key, "attempt": attempt, "excluded": [], "failures": [], "done": None,
           "system": None, "storage": None}
    record = {"key": key, "index": index, "attempt": attempt, "try": try_, "host": socket.gethostname(),
              "time": time.time()}
    staging = store.scratch(cache, f"{socket.gethostname()}-{os.getpid()}")
    t0 = time.perf_counter()
    with slot_guard(store, key, staging, record, out):
        row, start = item_of(_scene_rows(store), index)
        c = ctx["clips"]
        timings = {}
        try:
            t = time.perf_counter()
            scene = load_scene(Path(row["folder"]), Path(ctx["scenes_root"]), covers=(c["height"], c["width"]))
            clip = segment_clip(scene, start, c["frames"], c["stride"], c["height"], c["width"])
            timings["read"] = time.perf_counter() - t
            passes = env = None
            labelling: dict = {}
            device = "none (dry run)"
            if not ctx["dry_run"]:
                m = models(ctx["inverse"], ctx["light"], _device(ctx), ctx["threads"], ctx.get("cache_dir"))
                device = m.device
                t = time.perf_counter()
                env, light_rec = _scene_light(ctx, store, scene, m)
                timings["light"] = time.perf_counter() - t
                t = time.perf_counter()
                passes = inverse_passes(m.inverse, clip.rgb, ctx["inverse_cfg"], ctx["seed"] * 1_000_003 + index)
                timings["inverse"] = time.perf_counter() - t
                labelling = {"inverse": {"checkpoint": ctx["inverse"], "sha256": ctx["inverse_sha256"],
                                         **ctx["inverse_cfg"], "dtype": m.dtype},
                             "light": {"models": ctx["light"], **ctx["light_cfg"], "estimate": light_rec}}
        except SceneError as e:
            # the scene's own fault: every later attempt would fail the same way, so the slot is given up
            # now, blaming the scene (which quarantines it)
            failure = {**record, "attempt": ctx["max_attempts"] - 1, "kind": "scene", "reason": str(e),
                       "asset_id": f"scene:{row['scene']}"}
            write_marker(store, failed_name(key, failure["attempt"]), failure)
            out["failures"].append(failure)
            out["attempt"] = ctx["max_attempts"]
            return out
        t = time.perf_counter()
        extra = {"seed": ctx["seed"], "index": index, "fps": c["fps"] / c["stride"],
                 "timings_s": {k: round(v, 4) for k, v in timings.items()}}
        members = sample_members(key, ctx["run_id"], clip, scene, passes, env, labelling, extra)
        entry = publish_sample(store, staging, key, members)
        timings["commit"] = time.perf_counter() - t
        out["done"] = {**record, "sha256": entry["sha256"], "bytes": entry["bytes"], "timings": timings,
                       "device": device, "wall_s": time.perf_counter() - t0, "scene": row["scene"], "start": start}
        write_marker(store, done_name(key), out["done"])
    return out


def label_clips(ctx: dict, slots: list) -> list[dict]:
    """Label several items, each slot ``(index, attempt, try, excluded)``, one after another in this
    process (its models loaded once): dr.pipeline.clip_task.run_slots."""
    from dr.pipeline.clip_task import run_slots

    return run_slots(lambda index, attempt, try_, _excluded: label_clip(ctx, index, attempt, try_), slots)
