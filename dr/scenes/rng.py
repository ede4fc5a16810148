"""Named random streams of one clip.

Clip ``index`` of a run with ``seed`` owns the SeedSequence(seed, spawn_key=(index,)); its
attempt ``a`` (a re-sample after a failed render) and the named stream ``s`` extend that key to
(index, a, crc32(s)). Each stream is independent of the others, so a draw added to one never
shifts another, and nothing depends on other clips, their order or the number of workers.
"""

from __future__ import annotations

import zlib

import numpy as np

STREAMS = ("objects", "materials", "light", "camera")


def stream_key(index: int, attempt: int, name: str) -> tuple[int, int, int]:
    return (index, attempt, zlib.crc32(name.encode()))


def clip_streams(seed: int, index: int, attempt: int = 0, names=STREAMS) -> dict[str, np.random.Generator]:
    """One generator per named stream of clip ``index`` (``attempt``) of a run with ``seed``."""
    if seed < 0 or index < 0 or attempt < 0:
        raise ValueError("seed, index and attempt must be non-negative")
    return {n: np.random.default_rng(np.random.SeedSequence(seed, spawn_key=stream_key(index, attempt, n))) for n in names}
