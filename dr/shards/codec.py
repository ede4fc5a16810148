"""Encoding of array members: ``.npy`` (numpy's format) and ``.npy.zst`` (the same, zstd-compressed)."""

from __future__ import annotations

import io

import numpy as np

ZSTD_LEVEL = 3
# the most bytes one compressed member may decode to (24 frames of 2048 x 2048 x 3 float32 is 1.1 GiB): a
# member of a few bytes can claim any size, and is refused before anything that large is allocated
MAX_MEMBER_BYTES = 2 * 2**30


def npy_bytes(a: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(a), allow_pickle=False)
    return buf.getvalue()


def npy_zst_bytes(a: np.ndarray, level: int = ZSTD_LEVEL) -> bytes:
    import zstandard

    return zstandard.ZstdCompressor(level=level).compress(npy_bytes(a))


def load_npy(data: bytes) -> np.ndarray:
    return np.load(io.BytesIO(data), allow_pickle=False)


def load_npy_zst(data: bytes, limit: int | None = None) -> np.ndarray:
    """The array of a .npy.zst member; ValueError if it decodes (or says it decodes) to more than
    ``limit`` bytes (default MAX_MEMBER_BYTES)."""
    import zstandard

    limit = MAX_MEMBER_BYTES if limit is None else limit
    try:
        declared = zstandard.frame_content_size(data)
    except zstandard.ZstdError as e:
        raise ValueError(f"not a zstd frame: {e}") from None
    if declared > limit:
        raise ValueError(f"a zstd member claims {declared} bytes, more than the {limit} a member may hold")
    try:  # with no size in the frame header, the output buffer grows to at most limit bytes
        raw = zstandard.ZstdDecompressor().decompress(data, max_output_size=0 if declared >= 0 else limit)
    except zstandard.ZstdError as e:
        raise ValueError(f"the zstd member does not decode within {limit} bytes: {e}") from None
    return load_npy(raw)


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
