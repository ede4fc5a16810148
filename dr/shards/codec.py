"""Encoding of array members: ``.npy`` (numpy's format) and ``.npy.zst`` (the same, zstd-compressed)."""

from __future__ import annotations

import io

import numpy as np

ZSTD_LEVEL = 3


def npy_bytes(a: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(a), allow_pickle=False)
    return buf.getvalue()


def npy_zst_bytes(a: np.ndarray, level: int = ZSTD_LEVEL) -> bytes:
    import zstandard

    return zstandard.ZstdCompressor(level=level).compress(npy_bytes(a))


def load_npy(data: bytes) -> np.ndarray:
    return np.load(io.BytesIO(data), allow_pickle=False)


def load_npy_zst(data: bytes) -> np.ndarray:
    import zstandard

    return load_npy(zstandard.ZstdDecompressor().decompress(data))


def decode_member(suffix: str, data: bytes):
    """Decode one member by its suffix: arrays for .npy / .npy.zst, a dict for json, else bytes."""
    import json

    if suffix.endswith(".npy.zst"):
        return load_npy_zst(data)
    if suffix.endswith(".npy"):
        return load_npy(data)
    if suffix == "json" or suffix.endswith(".json"):
        return json.loads(data)
    return data
