"""The config of `dr-data generate`: what a clip is (scene, render) and how the run behaves."""

from __future__ import annotations

from pydantic import Field

from dr.config import CommandConfig, Section, config_hash
from dr.render.settings import RenderSettings, WorkerSettings
from dr.scenes.config import SceneConfig


class RunSettings(Section):
    max_retries: int = Field(3, ge=0, le=100, description="retries of a clip after a system failure (worker or node death, timeout, I/O)")
    retry_backoff_s: float = Field(10.0, ge=0.0, le=3600.0, description="wait before the first retry, seconds; doubled on each further retry")
    max_attempts: int = Field(5, ge=1, le=100, description="re-samples of one clip slot after deterministic failures before it counts as lost")
    max_failed_fraction: float = Field(0.05, ge=0.0, le=1.0, description="abort once failed clip attempts exceed this fraction of N (and min_failures_to_abort)")
    min_failures_to_abort: int = Field(10, ge=1, description="failed clip attempts tolerated whatever N is")
    in_flight_per_worker: int = Field(2, ge=1, le=64, description="render tasks queued per worker, so a worker never waits for the driver")
    clips_per_task: int | None = Field(None, ge=1, le=4096, description="clip slots one task executes; default 1 "
                                       "when rendering (a task takes minutes and is retried whole), 64 on dry runs "
                                       "(a task takes a millisecond, so Ray's own cost per task would dominate)")
    connect_timeout_s: float = Field(30.0, gt=0.0, le=3600.0, description="with --ray-address, how long to try to "
                                     "reach the cluster's address before giving up, seconds")
    gpu_wait_s: float = Field(600.0, ge=0.0, description="on a cluster, how long to wait for a GPU node to join before giving up, seconds")


class GenerateConfig(CommandConfig):
    """Config of `dr-data generate`. ``scene`` and ``render`` decide what clip k is; ``worker``
    and ``run`` decide how the run goes, and may change when a run is resumed."""

    scene: SceneConfig = SceneConfig()
    render: RenderSettings = RenderSettings()
    worker: WorkerSettings = WorkerSettings()
    run: RunSettings = RunSettings()


IDENTITY_SECTIONS = ("scene", "render")


def clip_versions() -> dict:
    """The versions that decide a clip's bytes: dr's and Blender's (the bpy wheel; None where absent)."""
    import importlib.metadata

    import dr

    try:
        blender = importlib.metadata.version("bpy")
    except importlib.metadata.PackageNotFoundError:
        blender = None
    return {"dr": dr.__version__, "blender": blender}


def identity(cfg: GenerateConfig, n: int, seed: int, clips_per_shard: int, manifest_sha256: str, dry_run: bool,
             versions: dict | None = None) -> dict:
    """What makes a run this run: equal identities give the same clips, clip for clip. ``versions``
    defaults to this installation's clip_versions()."""
    from dr.shards.schema import SCHEMA_VERSION

    return {
        "n": n, "seed": seed, "clips_per_shard": clips_per_shard, "manifest_sha256": manifest_sha256,
        "dry_run": dry_run, "schema_version": SCHEMA_VERSION, "versions": versions or clip_versions(),
        **{name: getattr(cfg, name).model_dump(mode="json") for name in IDENTITY_SECTIONS},
        "config_hash": {name: config_hash(getattr(cfg, name)) for name in IDENTITY_SECTIONS},
    }


def identity_diff(old: dict, new: dict, limit: int = 3) -> list[str]:
    """Dotted keys whose values differ between two identities, with both values."""
    out: list[str] = []

    def walk(a, b, path):
        if isinstance(a, dict) and isinstance(b, dict):
            for k in sorted(set(a) | set(b)):
                if k == "config_hash":
                    continue
                walk(a.get(k), b.get(k), f"{path}.{k}" if path else k)
        elif a != b:
            out.append(f"{path}: {a!r} in the run, {b!r} now")

    walk(old, new, "")
    return out[:limit]


def device_kind(gpu: bool, dry_run: bool) -> str:
    """The kind of device a session renders on, as run.json records it: Cycles on GPUs and on CPUs
    do not give the same bytes, so a run is continued on the kind it began on."""
    return "none" if dry_run else ("gpu" if gpu else "cpu")


def device_change(existing: dict | None, kind: str) -> str | None:
    """The difference, worded as identity_diff does, between a run's recorded device kind and this
    session's; None when they agree (or the run records none)."""
    old = (existing or {}).get("device_kind")
    return None if old is None or old == kind else f"device_kind: {old!r} in the run, {kind!r} now"
