"""`dr-data assets build`: gather candidate records from the requested sources, probe them in
parallel, write the manifest atomically."""

from __future__ import annotations

import hashlib
import os
from collections import Counter
from pathlib import Path
from typing import Callable

from pydantic import Field

from dr.assets_manifest.builtin.library import (
    DEFAULT_SEED, DEFAULT_TEXTURE_SIZE, builtin_candidates, ensure_library, library_key,
)
from dr.assets_manifest.manifest import AssetRecord, Manifest, write_manifest
from dr.assets_manifest.probe_pool import ProbeJournal, probe_all
from dr.config import CommandConfig, Section
from dr.errors import UserError


class ProbeConfig(Section):
    workers: int = Field(0, ge=0, le=1024, description="probe processes; 0 = one per CPU available")
    timeout_s: float = Field(120.0, gt=0, description="time limit of one asset's probe, seconds")
    max_triangles: int = Field(1_000_000, ge=1, description="objects with more triangles are quarantined")


class BuiltinConfig(Section):
    seed: int = Field(DEFAULT_SEED, ge=0, description="seed of the procedural objects and materials")
    texture_size: int = Field(DEFAULT_TEXTURE_SIZE, ge=16, le=8192, description="side of the procedural textures, pixels")


class AssetsBuildConfig(CommandConfig):
    """Config of `dr-data assets build` and `dr-data assets objaverse`."""

    probe: ProbeConfig = ProbeConfig()
    builtin: BuiltinConfig = BuiltinConfig()


def available_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def journal_path(cache: Path, out: Path) -> Path:
    """Probe journal of one output manifest, in the cache folder."""
    return cache / "probe-journal" / (hashlib.sha256(str(out.absolute()).encode()).hexdigest()[:20] + ".jsonl")


def check_unique(records: list[AssetRecord]) -> None:
    dup = [i for i, n in Counter(r.id for r in records).items() if n > 1]
    if dup:
        raise UserError(f"asset id {dup[0]!r} comes from two sources; give each folder once")


def build_manifest(
    candidates: list[AssetRecord],
    cfg: AssetsBuildConfig,
    out: Path,
    cache: Path,
    on_done: Callable[[AssetRecord, bool], None] | None = None,
    on_start: Callable[[int], None] | None = None,
) -> Manifest:
    """Probe ``candidates`` and write the manifest to ``out``; return it.

    Built-in assets are generated first (in the cache) if missing. Probe results are journaled
    in the cache folder, so running the same build again redoes only assets whose files changed.
    """
    check_unique(candidates)
    if any(r.uri.startswith("builtin://") for r in candidates):
        ensure_library(cache, cfg.builtin.seed, cfg.builtin.texture_size)
    on_start and on_start(len(candidates))
    journal = ProbeJournal(journal_path(cache, out), cfg.probe.model_dump(exclude={"workers", "timeout_s"}))
    records = probe_all(
        candidates,
        max_triangles=cfg.probe.max_triangles,
        timeout_s=cfg.probe.timeout_s,
        workers=cfg.probe.workers or available_cpus(),
        cache=str(cache),
        journal=journal,
        on_done=on_done,
    )
    manifest = Manifest(records)
    write_manifest(manifest, out)
    return manifest


def builtin_manifest_path(cache: Path, cfg: AssetsBuildConfig) -> Path:
    """Where `assets build --builtin` writes by default, and where commands look for it."""
    return cache / "manifests" / f"builtin-{library_key(cfg.builtin.seed, cfg.builtin.texture_size)}.jsonl"


def load_or_build_manifest(manifest: Path | None, cache_dir: Path | None, progress=None):
    """The manifest at ``manifest``, or the built-in one (built into the cache on first use).
    ``progress``, if given, is a context-manager factory yielding (on_start, on_done) for that build
    (the command line's bar; this layer shows nothing itself)."""
    from contextlib import nullcontext

    from dr.assets_manifest.manifest import load_manifest
    from dr.cache import cache_dir as resolve_cache

    if manifest is not None:
        return load_manifest(manifest)
    cache = resolve_cache(cache_dir)
    cfg = AssetsBuildConfig()
    path = builtin_manifest_path(cache, cfg)
    if not path.is_file():
        with (progress() if progress is not None else nullcontext((None, None))) as (on_start, on_done):
            ensure_builtin_manifest(cache, cfg, on_done=on_done, on_start=on_start)
    return load_manifest(path)


def ensure_builtin_manifest(cache: Path, cfg: AssetsBuildConfig | None = None,
                            on_done: Callable[[AssetRecord, bool], None] | None = None,
                            on_start: Callable[[int], None] | None = None) -> Path:
    """The built-in manifest's path, building it first if it is not in the cache."""
    cfg = cfg or AssetsBuildConfig()
    path = builtin_manifest_path(cache, cfg)
    if not path.is_file():
        build_manifest(builtin_candidates(cfg.builtin.seed, cfg.builtin.texture_size), cfg, path, cache,
                       on_done=on_done, on_start=on_start)
    return path
