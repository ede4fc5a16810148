"""The run folder as storage: a local path or any fsspec URL, with atomic commits on both.

Every file a run publishes appears whole or not at all. Locally: a temporary file in the same
folder, fsync, rename, fsync of the folder. On object stores (s3, gcs, azure) an upload becomes
visible only when complete, so it is written in place; on other fsspec file systems it is
written under a temporary name and moved.
"""

from __future__ import annotations

import errno
import hashlib
import os
import shutil
import tempfile
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Iterable, Iterator, TextIO

from dr.files import fsync_dir, write_bytes_atomic

OBJECT_STORES = {"s3", "s3a", "gs", "gcs", "az", "abfs", "abfss", "adl", "memory"}
# errors that say the output itself cannot take more data: retrying a clip cannot help
STORAGE_ERRNOS = {errno.ENOSPC, errno.EROFS, errno.EDQUOT, errno.EFBIG, errno.EACCES, errno.EPERM}


class StorageError(Exception):
    """The run folder cannot be written (full, read-only, no permission)."""


def is_storage_error(e: BaseException) -> bool:
    return isinstance(e, StorageError) or (isinstance(e, OSError) and e.errno in STORAGE_ERRNOS)


class RunStore:
    """Files of one run folder, addressed by paths relative to it ('markers/x.json')."""

    def __init__(self, url: str | os.PathLike[str]):
        import fsspec
        from fsspec.implementations.local import LocalFileSystem

        url = str(url)
        self.fs, root = fsspec.core.url_to_fs(url)
        self.local = isinstance(self.fs, LocalFileSystem)
        self.root = str(Path(root).absolute()) if self.local else root.rstrip("/")
        self.url = self.root if self.local else url.rstrip("/")
        protocol = self.fs.protocol if isinstance(self.fs.protocol, str) else self.fs.protocol[0]
        self.object_store = protocol in OBJECT_STORES

    def __repr__(self) -> str:
        return f"RunStore({self.url!r})"

    def path(self, rel: str = "") -> str:
        return f"{self.root}/{rel}" if rel else self.root

    def local_path(self, rel: str = "") -> Path:
        assert self.local, "a remote run folder has no local path"
        return Path(self.path(rel))

    def exists(self, rel: str) -> bool:
        return self.fs.exists(self.path(rel))

    def makedirs(self, rel: str = "") -> None:
        if self.local:
            Path(self.path(rel)).mkdir(parents=True, exist_ok=True)
        elif not self.object_store:
            self.fs.makedirs(self.path(rel), exist_ok=True)

    def read_bytes(self, rel: str) -> bytes:
        return self.fs.cat_file(self.path(rel))

    def read_text(self, rel: str) -> str:
        return self.read_bytes(rel).decode()

    def read_many(self, rels: list[str]) -> dict[str, bytes]:
        """{rel: bytes}; remote file systems fetch them concurrently. Missing files are left out."""
        if not rels:
            return {}
        if self.local:
            out = {}
            for r in rels:
                try:
                    out[r] = Path(self.path(r)).read_bytes()
                except FileNotFoundError:
                    pass
            return out
        got = self.fs.cat([self.path(r) for r in rels], on_error="return")
        out = {}
        for p, b in got.items():
            if isinstance(b, FileNotFoundError):
                continue
            if isinstance(b, BaseException):  # a read that failed is not a file that is missing
                raise b
            out[p[len(self.root) + 1:] if p.startswith(self.root) else p.split(self.root + "/", 1)[-1]] = b
        return out

    def list(self, rel: str) -> list[str]:
        """Names of the files directly in folder ``rel`` (empty if it does not exist)."""
        if self.local:
            try:
                with os.scandir(self.path(rel)) as it:
                    return [e.name for e in it if e.is_file()]
            except FileNotFoundError:
                return []
        self.fs.invalidate_cache(self.path(rel))  # s3fs and friends cache listings; other writers exist
        try:
            return [p.rstrip("/").rsplit("/", 1)[-1] for p in self.fs.ls(self.path(rel), detail=False)]
        except FileNotFoundError:
            return []

    def write_bytes(self, rel: str, data: bytes) -> None:
        """Publish ``data`` at ``rel`` atomically."""
        if self.local:
            final = Path(self.path(rel))
            final.parent.mkdir(parents=True, exist_ok=True)
            write_bytes_atomic(final, data)
        elif self.object_store:
            self.fs.pipe_file(self.path(rel), data)
        else:
            tmp = self.path(f"{rel}.tmp-{uuid.uuid4().hex[:8]}")
            self.fs.pipe_file(tmp, data)
            self.fs.mv(tmp, self.path(rel))

    def write_text(self, rel: str, text: str) -> None:
        self.write_bytes(rel, text.encode())

    def put_file(self, local: str | os.PathLike[str], rel: str, move: bool = False) -> None:
        """Publish the local file ``local`` at ``rel`` atomically (``move``: it may be consumed)."""
        local = Path(local)
        if self.local:
            final = Path(self.path(rel))
            final.parent.mkdir(parents=True, exist_ok=True)
            if move and local.stat().st_dev == final.parent.stat().st_dev:
                with open(local, "rb+") as f:
                    os.fsync(f.fileno())
                os.replace(local, final)
            else:
                tmp = final.with_name(f".{final.name}.tmp-{uuid.uuid4().hex[:8]}")
                try:
                    with open(local, "rb") as src, open(tmp, "wb") as dst:
                        shutil.copyfileobj(src, dst, 1 << 22)
                        dst.flush()
                        os.fsync(dst.fileno())
                    os.replace(tmp, final)
                finally:
                    tmp.unlink(missing_ok=True)
                if move:
                    local.unlink()
            fsync_dir(final.parent)
            return
        if self.object_store:
            self.fs.put_file(str(local), self.path(rel))
        else:
            tmp = self.path(f"{rel}.tmp-{uuid.uuid4().hex[:8]}")
            self.fs.put_file(str(local), tmp)
            self.fs.mv(tmp, self.path(rel))
        if move:
            local.unlink()

    def scratch(self, cache: str | os.PathLike[str] | None, *parts: str) -> Path:
        """A node-local folder for files on their way into the run: inside the run folder when it
        is local (publishing is then a rename), else in the cache folder, under this run's name."""
        from dr.cache import cache_dir

        if self.local:
            root = self.local_path(".staging")
        else:
            root = cache_dir(cache) / "staging" / hashlib.sha256(self.url.encode()).hexdigest()[:16]
        return root.joinpath(*parts)

    def local_copy(self, rel: str, cache: str | os.PathLike[str] | None) -> Path:
        """A local path holding file ``rel``: itself for a local run, else a copy in the cache."""
        if self.local:
            return self.local_path(rel)
        from dr.cache import cache_dir

        path = cache_dir(cache) / "runs" / hashlib.sha256(self.url.encode()).hexdigest()[:16] / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(self.read_bytes(rel))
        return path

    @contextmanager
    def publishing(self, rel: str, cache: str | os.PathLike[str] | None = None) -> Iterator[TextIO]:
        """A text file to stream into, published atomically at ``rel`` when the block ends without
        an exception (for files too large to build in memory first)."""
        folder = self.scratch(cache)
        folder.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{rel.replace('/', '_')}.tmp-", dir=folder)
        try:
            with os.fdopen(fd, "w") as f:
                yield f
            self.put_file(tmp, rel, move=True)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)

    def open_read(self, rel: str):
        return self.fs.open(self.path(rel), "rb")

    def remove(self, rels: Iterable[str]) -> None:
        rels = list(rels)
        if not rels:
            return
        if self.local:
            for r in rels:
                Path(self.path(r)).unlink(missing_ok=True)
        else:
            try:
                self.fs.rm([self.path(r) for r in rels])
            except FileNotFoundError:  # one of them is gone already: the others one by one
                for r in rels:
                    try:
                        self.fs.rm_file(self.path(r))
                    except FileNotFoundError:
                        pass


def iter_lines(store: RunStore, rel: str) -> Iterator[str]:
    with store.fs.open(store.path(rel), "rt") as f:
        yield from f
