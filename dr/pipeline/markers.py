"""Markers: one small JSON file per finished clip, per failed clip attempt and per system
failure, written after the data they describe is durable. The run's state is their names.

    markers/<key>.done.json           the clip is in clips/<key>.tar (or already in a shard)
    markers/<key>.a<A>.failed.json    attempt A failed for good (deterministic, or out of retries)
    markers/<key>.a<A>.t<R>.retry.json  try R of attempt A hit a system failure and was retried
    markers/<key>.running.json        a task is on it now (removed when it ends)
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Iterator

from dr.pipeline.run_store import RunStore

MARKERS = "markers"
_NAME = re.compile(r"^(?P<key>[a-z0-9_]+)\.(?:(?P<done>done)|a(?P<a>\d+)\.(?:(?P<failed>failed)|t(?P<t>\d+)\.retry)|(?P<running>running))\.json$")


def done_name(key: str) -> str:
    return f"{MARKERS}/{key}.done.json"


def failed_name(key: str, attempt: int) -> str:
    return f"{MARKERS}/{key}.a{attempt}.failed.json"


def retry_name(key: str, attempt: int, try_: int) -> str:
    return f"{MARKERS}/{key}.a{attempt}.t{try_}.retry.json"


def running_name(key: str) -> str:
    return f"{MARKERS}/{key}.running.json"


def write_marker(store: RunStore, rel: str, record: dict) -> None:
    store.write_text(rel, json.dumps(record, sort_keys=True, separators=(",", ":")) + "\n")


@dataclass
class RunState:
    """What the markers say. ``failed``: key -> {attempt: record} (records read from the files);
    ``quarantine``: asset id -> reason, from failed attempts that blamed an asset; ``tries``: how
    many system failures each clip has had (so a new try's marker and log never overwrite one)."""

    done: set[str] = field(default_factory=set)
    failed: dict[str, dict[int, dict]] = field(default_factory=dict)
    retries: int = 0
    running: set[str] = field(default_factory=set)
    tries: dict[str, int] = field(default_factory=dict)  # key -> retry records so far (names the next)
    _failed_count: int = 0
    _quarantine: dict[str, str] = field(default_factory=dict)

    def retry_count(self, key: str) -> int:
        return self.tries.get(key, 0)

    def note_retry(self, key: str) -> None:
        self.tries[key] = self.tries.get(key, 0) + 1
        self.retries += 1

    def next_attempt(self, key: str) -> int:
        return max(self.failed.get(key, {}), default=-1) + 1

    def excluded_assets(self, key: str) -> list[str]:
        """Assets that failed in earlier attempts of this clip (re-samples leave them out)."""
        return sorted({r["asset_id"] for r in self.failed.get(key, {}).values() if r.get("asset_id")})

    @property
    def failed_attempts(self) -> int:
        return self._failed_count

    @property
    def quarantine(self) -> dict[str, str]:
        return dict(sorted(self._quarantine.items()))

    def is_quarantined(self, asset_id: str | None) -> bool:
        return asset_id is not None and asset_id in self._quarantine

    def record_failure(self, key: str, record: dict) -> None:
        # counters kept as records arrive: the driver asks for them after every clip
        attempts = self.failed.setdefault(key, {})
        if int(record["attempt"]) not in attempts:
            self._failed_count += 1
        attempts[int(record["attempt"])] = record
        if record.get("asset_id"):
            self._quarantine.setdefault(record["asset_id"], record.get("reason", ""))


def scan(store: RunStore) -> RunState:
    """Read the run's state from its markers: one listing, plus the (few) failure records."""
    state = RunState()
    failed_files: list[str] = []
    for name in store.list(MARKERS):
        m = _NAME.match(name)
        if m is None:
            continue
        if m["done"]:
            state.done.add(m["key"])
        elif m["failed"]:
            failed_files.append(f"{MARKERS}/{name}")
        elif m["t"] is not None:
            state.retries += 1
            state.tries[m["key"]] = max(state.tries.get(m["key"], 0), int(m["t"]) + 1)
        elif m["running"]:
            state.running.add(m["key"])
    for rel, blob in store.read_many(failed_files).items():
        try:
            rec = json.loads(blob)
            state.record_failure(rec["key"], rec)
        except (ValueError, KeyError):
            continue  # an unreadable record is as good as none: the attempt is redone
    state.running -= state.done
    return state


def iter_done_records(store: RunStore, keys: list[str], batch: int = 2000) -> Iterator[dict]:
    """The done markers' records, read in batches (memory stays flat whatever the run's size)."""
    for i in range(0, len(keys), batch):
        for blob in store.read_many([done_name(k) for k in keys[i:i + batch]]).values():
            try:
                yield json.loads(blob)
            except ValueError:
                continue
