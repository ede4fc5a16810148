"""Turn an asset URI from a manifest into a local path, and check that its bytes are the ones
the manifest describes.

Schemes: a plain path; ``file://``; ``builtin://<key>/<rel>`` (the generated library in the
cache folder, generated here if missing); ``blender://datafiles/<rel>`` (files inside the bpy
wheel); any other fsspec URL (``s3://``, ``gs://``, ``https://``, ...), copied once into
``<cache>/remote/``, keyed by the asset's sha256 when it is known (else by the URI).

``resolve_asset`` is what renders use: it resolves, then hashes what it got (once per file
version per process) against the manifest's sha256. Its errors say whose fault a failure is:
AssetMissing and AssetChanged are the asset's (the same draw fails the same way: quarantine),
an OSError is the system's (a flaky read, a full disk: try again).
"""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

from dr.cache import cache_dir
from dr.errors import UserError
from dr.files import sha256_file


class AssetMissing(Exception):
    """The asset's file is not where its URI says (the manifest is wrong, or the file was removed)."""


class AssetChanged(Exception):
    """The asset's bytes are not the ones its manifest record was made from."""


def resolve_uri(uri: str, cache: str | os.PathLike[str] | None = None) -> Path:
    """Local path of ``uri`` (file or folder). Remote files are downloaded into the cache."""
    if uri.startswith("builtin://"):
        from dr.assets_manifest.builtin.library import ensure_library, parse_key

        key, _, rel = uri[len("builtin://"):].partition("/")
        seed, size = parse_key(key)
        return ensure_library(cache_dir(cache), seed, size) / rel
    if uri.startswith("blender://"):
        from dr.assets_manifest.builtin.library import blender_world_dir

        rel = uri[len("blender://"):]
        if not rel.startswith("datafiles/"):
            raise UserError(f"unknown blender:// location {uri!r} (expected blender://datafiles/...)")
        datafiles = blender_world_dir().parents[1]
        return datafiles / rel[len("datafiles/"):]
    if uri.startswith("file://"):
        return Path(uri[len("file://"):])
    if "://" not in uri:
        return Path(uri)
    try:
        return _fetch_remote(uri, cache_dir(cache))
    except (AssetMissing, OSError) as e:
        raise UserError(f"cannot fetch {uri}: {e}") from None


def _fetch_remote(uri: str, cache: Path, sha256: str = "") -> Path:
    """The cached copy of a remote file or folder (fetched if absent). Raises AssetMissing when
    there is nothing at ``uri``, UserError for a URL no installed file system can open, and
    OSError for a failed transfer."""
    import fsspec

    tag = f"sha256-{sha256[:32]}" if sha256 else hashlib.sha256(uri.encode()).hexdigest()[:24]
    dest = cache / "remote" / tag / uri.rstrip("/").rsplit("/", 1)[-1]
    if dest.exists():
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.tmp-{os.getpid()}")
    try:
        try:
            fs, path = fsspec.core.url_to_fs(uri)
        except (ValueError, ImportError) as e:
            raise UserError(f"cannot fetch {uri}: {e}") from None
        if not fs.exists(path):
            raise AssetMissing(f"{uri} does not exist")
        if fs.isdir(path):
            fs.get(path, str(tmp), recursive=True)
        else:
            with fs.open(path, "rb") as src, open(tmp, "wb") as dst:
                shutil.copyfileobj(src, dst, 1 << 20)
        try:
            os.replace(tmp, dest)
        except OSError:
            # another worker put its copy there first (a folder cannot replace a non-empty one:
            # ENOTEMPTY): theirs is as good as ours
            if not dest.exists():
                raise
    except FileNotFoundError:
        raise AssetMissing(f"{uri} does not exist") from None
    finally:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        elif tmp.exists():
            tmp.unlink()
    return dest


def _local(uri: str, cache: str | os.PathLike[str] | None, sha256: str) -> tuple[Path, bool]:
    """(path, fetched): ``fetched`` when the path is this machine's cached copy of a remote one."""
    if uri.startswith(("builtin://", "blender://", "file://")) or "://" not in uri:
        return resolve_uri(uri, cache), False
    return _fetch_remote(uri, cache_dir(cache), sha256), True


def asset_digest(path: Path, files: dict[str, str]) -> str:
    """The manifest's sha256 of the asset at ``path``: the file's own, or for a material folder
    (``files``: role -> file in it) the digest of its sorted ``role:sha256`` lines."""
    if not files:
        return _cached_sha(path)
    lines = "".join(f"{role}:{_cached_sha(path / rel)}\n" for role, rel in sorted(files.items()))
    return hashlib.sha256(lines.encode()).hexdigest()


_digests: dict[tuple[str, int, int, int], str] = {}  # (path, inode, size, mtime) -> sha256, this process


def _cached_sha(path: Path) -> str:
    try:
        st = path.stat()
    except FileNotFoundError:
        raise AssetMissing(f"{path} does not exist") from None
    key = (str(path), st.st_ino, st.st_size, st.st_mtime_ns)
    if key not in _digests:
        _digests[key] = sha256_file(path)
    return _digests[key]


def resolve_asset(uri: str, files: dict[str, str], sha256: str, cache: str | os.PathLike[str] | None = None) -> Path:
    """Local path of an asset whose bytes are the manifest's (``sha256``; not checked when it is
    empty). A cached remote copy that does not match is fetched again once. Raises AssetMissing,
    AssetChanged (the asset's fault), UserError (an unusable URI: the asset's too) or OSError."""
    path, fetched = _local(uri, cache, sha256)
    if not sha256:
        if not path.exists():
            raise AssetMissing(f"{path} does not exist")
        return path
    got = asset_digest(path, files)
    if got != sha256 and fetched:
        shutil.rmtree(path.parent, ignore_errors=True)  # a stale or damaged copy: fetch it again
        path, _ = _local(uri, cache, sha256)
        got = asset_digest(path, files)
    if got != sha256:
        raise AssetChanged(f"{uri} is not the file the manifest was built from (sha256 {got[:12]}..., "
                           f"the manifest says {sha256[:12]}...); rebuild the manifest or restore the file")
    return path
