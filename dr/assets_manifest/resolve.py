"""Turn an asset URI from a manifest into a local path.

Schemes: a plain path; ``file://``; ``builtin://<key>/<rel>`` (the generated library in the
cache folder, generated here if missing); ``blender://datafiles/<rel>`` (files inside the bpy
wheel); any other fsspec URL (``s3://``, ``gs://``, ``https://``, ...), copied once into
``<cache>/remote/``.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

from dr.cache import cache_dir
from dr.errors import UserError


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
    return _fetch_remote(uri, cache_dir(cache))


def _fetch_remote(uri: str, cache: Path) -> Path:
    import fsspec

    dest = cache / "remote" / hashlib.sha256(uri.encode()).hexdigest()[:24] / uri.rstrip("/").rsplit("/", 1)[-1]
    if dest.exists():
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.tmp-{os.getpid()}")
    try:
        fs, path = fsspec.core.url_to_fs(uri)
        if fs.isdir(path):
            fs.get(path, str(tmp), recursive=True)
        else:
            with fs.open(path, "rb") as src, open(tmp, "wb") as dst:
                shutil.copyfileobj(src, dst, 1 << 20)
        os.replace(tmp, dest)
    except (OSError, ValueError, ImportError) as e:
        raise UserError(f"cannot fetch {uri}: {e}") from None
    finally:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        elif tmp.exists():
            tmp.unlink()
    return dest
