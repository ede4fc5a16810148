"""Probe many assets in parallel worker processes, each probe under a time limit.

A probe that runs past the limit is killed with its worker (the pool starts a fresh one) and
its asset quarantined; so is one whose worker dies (a crash inside a decoder). Finished probes
are appended to a journal in the cache folder, keyed by the files' size and mtime and the probe
settings, so an interrupted build (or a rebuild) redoes only what changed.
"""

from __future__ import annotations

import hashlib
import json
import os
from concurrent.futures.process import BrokenProcessPool
from concurrent.futures import TimeoutError as FutureTimeout
from pathlib import Path
from typing import Callable, Iterable

from dr.assets_manifest.manifest import AssetRecord
from dr.assets_manifest.probes import PROBE_VERSION, probe
from dr.assets_manifest.resolve import resolve_uri
from dr.errors import UserError


def _quiet_worker() -> None:
    # C decoders (OpenEXR, libpng, OpenCV) print to fd 2; their reasons come back to us as
    # exceptions, so the worker's own output only clutters the progress display.
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)
    os.dup2(devnull, 2)


def fingerprint(record: AssetRecord, cache: str | None) -> str | None:
    """size:mtime of the record's local files, or None when they are remote or missing (then
    the probe always runs). builtin:// URIs name their content (library version and seed), so
    the URI is the fingerprint."""
    if record.uri.startswith("builtin://"):
        return record.uri
    if "://" in record.uri and not record.uri.startswith(("file://", "blender://")):
        return None
    try:
        base = resolve_uri(record.uri, cache)
        paths = [base / rel for rel in sorted(record.files.values())] if record.files else [base]
        return "|".join(f"{p}:{p.stat().st_size}:{p.stat().st_mtime_ns}" for p in paths)
    except (OSError, UserError):  # missing files; blender:// without bpy installed
        return None


class ProbeJournal:
    """Append-only JSON lines of finished probes: {key, record}. Keys mix the probe version,
    the settings, the record's identity and the fingerprint of its files."""

    def __init__(self, path: Path, settings: dict):
        self.path = path
        self.settings = json.dumps({"v": PROBE_VERSION, **settings}, sort_keys=True)
        self.done: dict[str, AssetRecord] = {}
        if path.is_file():
            with open(path) as f:
                for line in f:
                    try:
                        entry = json.loads(line)
                        self.done[entry["key"]] = AssetRecord.model_validate(entry["record"])
                    except (ValueError, KeyError, TypeError):
                        continue  # a torn last line from an interrupted run
        self._fh = None

    def key(self, record: AssetRecord, fp: str | None) -> str | None:
        if fp is None:
            return None
        ident = record.model_dump_json(include={"id", "kind", "source", "uri", "files", "license", "category"})
        return hashlib.sha256(f"{self.settings}\n{ident}\n{fp}".encode()).hexdigest()

    def add(self, key: str | None, record: AssetRecord) -> None:
        if key is None:
            return
        if self._fh is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._fh = open(self.path, "a")
        self._fh.write(json.dumps({"key": key, "record": record.model_dump(mode="json")}, separators=(",", ":")) + "\n")
        self._fh.flush()

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None


def probe_all(
    records: Iterable[AssetRecord],
    *,
    max_triangles: int,
    timeout_s: float,
    workers: int,
    cache: str | None,
    journal: ProbeJournal | None = None,
    on_done: Callable[[AssetRecord, bool], None] | None = None,
    probe_fn: Callable[..., AssetRecord] = probe,
) -> list[AssetRecord]:
    """Probe ``records`` (already-quarantined ones pass through) and return them probed, in
    input order. ``on_done(record, reused)`` is called as each one finishes. ``probe_fn`` is
    the probe to run, called as probe_fn(record, max_triangles, cache) in a worker."""
    from pebble import ProcessPool
    from pebble.common import ProcessExpired

    records = list(records)
    out: list[AssetRecord | None] = [None] * len(records)
    todo: list[tuple[int, str | None]] = []
    for i, rec in enumerate(records):
        if rec.status == "quarantined":
            out[i] = rec
            on_done and on_done(rec, True)
            continue
        key = journal.key(rec, fingerprint(rec, cache)) if journal else None
        if journal and key in journal.done:
            out[i] = journal.done[key]
            on_done and on_done(out[i], True)
        else:
            todo.append((i, key))
    if todo:
        pool = ProcessPool(max_workers=max(1, workers), initializer=_quiet_worker)
        try:
            futures = [(i, key, pool.schedule(probe_fn, args=(records[i], max_triangles, cache), timeout=timeout_s))
                       for i, key in todo]
            for i, key, fut in futures:
                rec = records[i]
                try:
                    res = fut.result()
                except FutureTimeout:
                    res = rec.quarantine(f"probe timed out after {timeout_s:g} s")
                except BrokenProcessPool as e:
                    raise RuntimeError(f"the probe worker pool broke down: {e}") from e
                except ProcessExpired as e:
                    res = rec.quarantine(f"probe crashed (worker exit code {e.exitcode})")
                except Exception as e:  # a bug in a probe must not stop the build
                    res = rec.quarantine(f"probe failed: {type(e).__name__}: {' '.join(str(e).split())[:160]}")
                out[i] = res
                # timeouts and crashes may be transient (a loaded machine): don't cache them
                if journal and not (res.status == "quarantined" and (res.reason or "").startswith("probe ")):
                    journal.add(key, res)
                on_done and on_done(res, False)
            pool.close()
        finally:
            pool.stop()  # on Ctrl-C or an error: drop pending probes instead of finishing them all
            pool.join()
            if journal:
                journal.close()
    return [r for r in out if r is not None]
