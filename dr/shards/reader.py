"""Shard reader: stream samples from local paths or fsspec URLs (DESIGN.md section 3).

``iter_samples(source)`` accepts a shard (``.../shard-000000.tar``), a shards folder or
``index.json``, or a run folder (which holds ``shards/``), local or remote (``s3://``, ...).
Members are read in one sequential pass per shard; arrays are decoded as they arrive.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Container, Iterable, Iterator

import numpy as np

from dr.shards import envmap
from dr.shards.codec import decode_member
from dr.shards.schema import PASSES, pass_suffix
from dr.shards.stream import iter_raw_samples
from dr.shards.writer import INDEX_NAME, is_shard_name


@dataclass
class Sample:
    """One clip: metadata, passes {name: (T, H, W, C) array}, the env map and per-frame cameras."""

    key: str
    meta: dict
    passes: dict[str, np.ndarray] = field(default_factory=dict)
    env: np.ndarray | None = None
    c2w: np.ndarray | None = None
    intrinsics: np.ndarray | None = None
    cam_to_env: np.ndarray | None = None
    extra: dict[str, object] = field(default_factory=dict)

    @property
    def frames(self) -> int:
        return int(self.meta["frames"])

    def env_encodings(self, t: int, h: int = 256, w: int = 512) -> dict[str, np.ndarray]:
        """env_ldr, env_log and env_nrm of frame t at h x w (float32, [0, 1])."""
        if self.env is None or self.cam_to_env is None:
            raise ValueError(f"sample {self.key} was read without its env map")
        return envmap.encode_env(self.env, self.cam_to_env[t], h, w)


def _join(base: str, name: str) -> str:
    return base.rstrip("/") + "/" + name


def shard_entries(source: str) -> list[tuple[str, int | None]]:
    """(url, samples the index promises, or None for a bare shard) of every shard a source names,
    in index order."""
    import fsspec

    src = str(source)
    if src.endswith(".tar"):
        return [(src, None)]
    fs, path = fsspec.core.url_to_fs(src)
    if src.endswith(INDEX_NAME):
        index_url, base = src, src[: -len(INDEX_NAME)].rstrip("/")
    elif fs.exists(_join(path, INDEX_NAME)):
        index_url, base = _join(src, INDEX_NAME), src
    elif fs.exists(_join(path, "shards/" + INDEX_NAME)):
        base = _join(src, "shards")
        index_url = _join(base, INDEX_NAME)
    else:
        raise FileNotFoundError(f"{src}: no shard, shards/index.json or index.json there")
    with fsspec.open(index_url, "rt") as f:
        index = json.load(f)
    bad = [s.get("name") for s in index["shards"] if not is_shard_name(s.get("name"))]
    if bad:
        raise ValueError(f"{index_url} lists {bad[0]!r}, which is not a shard name (shard-NNNNNN.tar)")
    return [(_join(base, s["name"]), s.get("samples")) for s in index["shards"]]


def shard_urls(source: str) -> list[str]:
    """The shard files a source names, in index order."""
    return [url for url, _ in shard_entries(source)]


def _wanted(suffix: str, passes: set[str] | None, with_env: bool) -> bool:
    if suffix == "env.npy.zst":
        return with_env
    if suffix.endswith(".npy.zst") and suffix[: -len(".npy.zst")] in PASSES:
        return passes is None or suffix[: -len(".npy.zst")] in passes
    return True


def _assemble(key: str, members: dict[str, object]) -> Sample:
    meta = members.pop("json", None)
    if meta is None:
        raise ValueError(f"sample {key} has no {key}.json")
    s = Sample(key=key, meta=meta)
    for name in PASSES:
        if pass_suffix(name) in members:
            s.passes[name] = members.pop(pass_suffix(name))
    s.env = members.pop("env.npy.zst", None)
    s.c2w = members.pop("c2w.npy", None)
    s.intrinsics = members.pop("intrinsics.npy", None)
    s.cam_to_env = members.pop("cam_to_env.npy", None)
    s.extra = members
    return s


def iter_shard(url: str, passes: Iterable[str] | None = None, with_env: bool = True,
               keys: Container[str] | None = None) -> Iterator[Sample]:
    """Stream the samples of one shard. ``passes`` limits which passes are decoded (default all);
    ``keys`` limits which samples are (others are passed over unread). A malformed or cut-off
    shard raises ShardFormatError (a ValueError; dr.shards.stream)."""
    import fsspec

    want = None if passes is None else set(passes)

    def wanted(key: str, suffix: str) -> bool:
        return (keys is None or key in keys) and _wanted(suffix, want, with_env)

    with fsspec.open(url, "rb") as f:
        for key, raw in iter_raw_samples(f, want=wanted):
            if keys is not None and key not in keys:
                continue
            yield _assemble(key, {suffix: decode_member(suffix, data) for suffix, data in raw.items()})


def iter_samples(source: str, passes: Iterable[str] | None = None, with_env: bool = True) -> Iterator[Sample]:
    """Stream every sample of a shard, shards folder, index.json or run folder (path or URL).
    A shard that yields fewer samples than its index entry says raises ValueError: a tar cut
    between two samples reads as a shorter valid tar, which training must not take silently."""
    for url, expected in shard_entries(str(source)):
        got = 0
        for sample in iter_shard(url, passes=passes, with_env=with_env):
            got += 1
            yield sample
        if expected is not None and got != expected:
            raise ValueError(f"{url} holds {got} samples where its index says {expected}: the shard is truncated")
