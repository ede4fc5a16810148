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
    gpu_wait_s: float = Field(600.0, ge=0.0, description="on a cluster, how long to wait for a GPU node to join before giving up, seconds")


class GenerateConfig(CommandConfig):
    """Config of `dr-data generate`. ``scene`` and ``render`` decide what clip k is; ``worker``
    and ``run`` decide how the run goes, and may change when a run is resumed."""

    scene: SceneConfig = SceneConfig()
    render: RenderSettings = RenderSettings()
    worker: WorkerSettings = WorkerSettings()
    run: RunSettings = RunSettings()


IDENTITY_SECTIONS = ("scene", "render")


def identity(cfg: GenerateConfig, n: int, seed: int, clips_per_shard: int, manifest_sha256: str, dry_run: bool) -> dict:
    """What makes a run this run: equal identities give the same clips, clip for clip."""
    from dr.shards.schema import SCHEMA_VERSION

    return {
        "n": n, "seed": seed, "clips_per_shard": clips_per_shard, "manifest_sha256": manifest_sha256,
        "dry_run": dry_run, "schema_version": SCHEMA_VERSION,
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
