"""Shard writer (DESIGN.md section 3): POSIX tar files of whole samples, and shards/index.json.

A shard is written as ``shard-NNNNNN.tar.partial`` and renamed into place only when closed; a
sample whose members cannot all be written is cut off again (the tar is truncated back to where
the sample began), so a shard never holds part of a sample. Tar headers carry no time or owner,
so the same samples give the same bytes.
"""

from __future__ import annotations

import io
import json
import os
import re
import tarfile
from pathlib import Path

from dr.files import fsync_dir, sha256_file, write_text_atomic
from dr.shards.schema import KEY_RE, SCHEMA_VERSION

INDEX_NAME = "index.json"


SHARD_NAME_RE = re.compile(r"shard-[0-9]{6,}\.tar")


def shard_name(number: int) -> str:
    return f"shard-{number:06d}.tar"


def is_shard_name(name: object) -> bool:
    """Whether ``name`` (from an index.json, say) is a shard's file name: no folder part, nothing
    that could lead out of the shards folder when joined to it."""
    return isinstance(name, str) and SHARD_NAME_RE.fullmatch(name) is not None


def read_index(shards_dir: Path) -> dict:
    """The shards folder's index (an empty one if there is none yet)."""
    path = Path(shards_dir) / INDEX_NAME
    if not path.is_file():
        return {"schema_version": SCHEMA_VERSION, "shards": []}
    return json.loads(path.read_text())


def finish_index(index: dict) -> dict:
    """``index`` with its shards in name order and its sample total brought up to date."""
    index["shards"] = sorted(index["shards"], key=lambda s: s["name"])
    index["samples"] = sum(s["samples"] for s in index["shards"])
    return index


def update_index(shards_dir: Path, entry: dict) -> None:
    """Add or replace one shard's entry in index.json (atomically: temp file, fsync, rename)."""
    shards_dir = Path(shards_dir)
    index = read_index(shards_dir)
    index["shards"] = [s for s in index["shards"] if s["name"] != entry["name"]] + [entry]
    write_text_atomic(shards_dir / INDEX_NAME, json.dumps(finish_index(index), indent=1, sort_keys=True) + "\n")


class SampleTar:
    """Writes whole samples into the tar file ``path`` (via ``path.partial``, renamed on close).

    ``add(key, members)`` takes the members as {suffix: bytes or path of a file}; ``close()``
    finishes the tar, fsyncs it, renames it into place and returns {bytes, sha256, keys}. Used
    as a context manager, an exception discards the unfinished file instead.
    """

    def __init__(self, path: str | os.PathLike[str]):
        self.final = Path(path)
        self.dir = self.final.parent
        self.dir.mkdir(parents=True, exist_ok=True)
        self.name = self.final.name
        if self.final.exists():
            raise FileExistsError(f"{self.final} already exists")
        self.partial = self.dir / (self.name + ".partial")
        self._file = open(self.partial, "wb")
        self._tar = tarfile.open(fileobj=self._file, mode="w", format=tarfile.USTAR_FORMAT)
        self.keys: list[str] = []

    def add(self, key: str, members: dict[str, bytes | os.PathLike[str]]) -> None:
        if not KEY_RE.match(key):
            raise ValueError(f"sample key {key!r} is not [a-z0-9_]+")
        if key in self.keys:
            raise ValueError(f"sample {key!r} is already in {self.name}")
        start = self._file.tell()
        try:
            for suffix, data in members.items():
                info = tarfile.TarInfo(f"{key}.{suffix}")
                info.mode, info.mtime, info.uid, info.gid, info.uname, info.gname = 0o644, 0, 0, 0, "", ""
                if isinstance(data, (bytes, bytearray)):
                    info.size = len(data)
                    self._tar.addfile(info, io.BytesIO(data))
                else:
                    info.size = os.path.getsize(data)
                    with open(data, "rb") as f:
                        self._tar.addfile(info, f)
            self._file.flush()
        except BaseException:
            # cut the partial sample off: the tar stays a valid prefix of whole samples
            self._file.seek(start)
            self._file.truncate(start)
            self._tar.offset = start
            self._tar.members = [m for m in self._tar.members if m.offset < start]
            raise
        self.keys.append(key)

    def close(self) -> dict:
        """Finish the file; returns {name, samples, bytes, sha256, keys}."""
        self._tar.close()
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()
        entry = {"name": self.name, "samples": len(self.keys), "bytes": self.partial.stat().st_size,
                 "sha256": sha256_file(self.partial), "keys": list(self.keys)}
        os.replace(self.partial, self.final)
        fsync_dir(self.dir)
        return entry

    def discard(self) -> None:
        try:
            self._tar.close()
        except Exception:
            pass
        self._file.close()
        self.partial.unlink(missing_ok=True)

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.discard()


class ShardWriter(SampleTar):
    """Writes samples into ``shards_dir/shard-<number>.tar`` (see :class:`SampleTar`); ``close()``
    also records the shard in ``shards_dir/index.json`` unless ``index`` is False (a run's
    driver keeps the index itself)."""

    def __init__(self, shards_dir: str | os.PathLike[str], number: int = 0, index: bool = True):
        super().__init__(Path(shards_dir) / shard_name(number))
        self._index = index

    def close(self) -> dict:
        """Finish the shard; returns its index entry."""
        entry = super().close()
        if self._index:
            update_index(self.dir, entry)
        return entry
