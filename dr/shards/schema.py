"""The sample schema of DESIGN.md section 3: member names, pass shapes and dtypes.

One sample is one clip; its key is the clip id. Members are ``<key>.<suffix>``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

SCHEMA_VERSION = 1
KEY_RE = re.compile(r"^[a-z0-9_]+$")


@dataclass(frozen=True)
class PassSpec:
    name: str
    channels: int
    dtype: np.dtype
    meaning: str


PASSES: dict[str, PassSpec] = {p.name: p for p in (
    PassSpec("rgb", 3, np.dtype(np.float16), "linear scene-referred radiance, HDR, clamped to 65504"),
    PassSpec("basecolor", 3, np.dtype(np.float16), "Principled base colour, linear, [0, 1]"),
    PassSpec("roughness", 1, np.dtype(np.float16), "[0, 1]"),
    PassSpec("metallic", 1, np.dtype(np.float16), "[0, 1]"),
    PassSpec("normal", 3, np.dtype(np.float16), "camera-space unit shading normal, OpenGL axes"),
    PassSpec("depth", 1, np.dtype(np.float16), "planar z-depth, metres (relative for real clips)"),
    PassSpec("mask", 1, np.dtype(np.uint8), "1 where a surface was hit, 0 for background"),
)}

def pass_suffix(name: str) -> str:
    return f"{name}.npy.zst"


def member_suffixes(passes=tuple(PASSES)) -> list[str]:
    """Every member suffix of a complete sample, in the order they are written."""
    return ["json", *(pass_suffix(p) for p in passes), "env.npy.zst", "c2w.npy", "intrinsics.npy", "cam_to_env.npy"]


def split_member(name: str) -> tuple[str, str]:
    """'<key>.<suffix>' -> (key, suffix): the key is everything before the first dot."""
    key, dot, suffix = name.partition(".")
    if not dot or not KEY_RE.match(key):
        raise ValueError(f"not a sample member name: {name!r}")
    return key, suffix
