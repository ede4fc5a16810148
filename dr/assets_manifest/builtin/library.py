"""The built-in asset library: procedural objects and materials generated from a seed into the
cache folder, plus the CC0 HDRIs that ship inside the bpy wheel.

Its manifest refers to files by machine-independent URIs (``builtin://<key>/...`` and
``blender://datafiles/...``), so the same manifest works on every machine; a worker that lacks
the generated files regenerates them (identical bytes) on first use.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import zlib
from pathlib import Path

import numpy as np

from dr.assets_manifest.manifest import AssetRecord
from dr.errors import UserError

LIBRARY_VERSION = 1
DEFAULT_SEED = 20250130
DEFAULT_TEXTURE_SIZE = 512
BUILTIN_LICENSE = "CC0-1.0"

_KEY_RE = re.compile(r"^v(?P<version>\d+)-seed(?P<seed>\d+)-tex(?P<size>\d+)$")


def library_key(seed: int = DEFAULT_SEED, texture_size: int = DEFAULT_TEXTURE_SIZE) -> str:
    return f"v{LIBRARY_VERSION}-seed{seed}-tex{texture_size}"


def parse_key(key: str) -> tuple[int, int]:
    """(seed, texture_size) of a library key; UserError if it is not one this version makes."""
    m = _KEY_RE.match(key)
    if not m or int(m["version"]) != LIBRARY_VERSION:
        raise UserError(f"unknown built-in library {key!r} (this version makes v{LIBRARY_VERSION}-seed<N>-tex<N>)")
    return int(m["seed"]), int(m["size"])


def _rng(seed: int, name: str) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(zlib.crc32(name.encode()),)))


def library_dir(cache: Path, key: str) -> Path:
    return cache / "builtin" / key


def ensure_library(cache: Path, seed: int = DEFAULT_SEED, texture_size: int = DEFAULT_TEXTURE_SIZE) -> Path:
    """Generate the library into ``cache`` unless it is already there; return its folder.

    Generation happens in a private temporary folder renamed into place, so concurrent workers
    never see a half-written library (the loser of the race discards its copy).
    """
    from dr.assets_manifest.builtin import materials as M
    from dr.assets_manifest.builtin import objects as O

    key = library_key(seed, texture_size)
    final = library_dir(cache, key)
    if (final / "COMPLETE").is_file():
        return final
    tmp = final.parent / f".tmp-{key}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        (tmp / "objects").mkdir(parents=True)
        for recipe in O.RECIPES:
            (tmp / "objects" / f"{recipe.name}.glb").write_bytes(O.build_glb(recipe, _rng(seed, "object/" + recipe.name)))
        for name, fn in M.RECIPES.items():
            M.write_material(fn(_rng(seed, "material/" + name), texture_size), tmp / "materials" / name)
        digest = hashlib.sha256()
        for p in sorted(tmp.rglob("*")):
            if p.is_file():
                digest.update(f"{p.relative_to(tmp).as_posix()}:{hashlib.sha256(p.read_bytes()).hexdigest()}\n".encode())
        (tmp / "COMPLETE").write_text(digest.hexdigest() + "\n")
        try:
            os.rename(tmp, final)
        except OSError:
            if not (final / "COMPLETE").is_file():
                shutil.rmtree(final, ignore_errors=True)
                os.rename(tmp, final)
    except OSError as e:
        raise UserError(f"cannot write the built-in library into {cache}: {e.strerror or e}") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final


def blender_world_dir() -> Path:
    """The folder of the HDRIs that ship in the bpy wheel, found without importing bpy."""
    import importlib.util

    spec = importlib.util.find_spec("bpy")
    if spec is None or not spec.submodule_search_locations:
        raise UserError("bpy is not installed, so its built-in HDRIs are missing: pip install 'dr[render]'")
    for root in spec.submodule_search_locations:
        hits = sorted(Path(root).glob("*/datafiles/studiolights/world"))
        if hits:
            return hits[-1]
    raise UserError("the installed bpy has no datafiles/studiolights/world folder; reinstall bpy==5.0.1")


def builtin_candidates(seed: int = DEFAULT_SEED, texture_size: int = DEFAULT_TEXTURE_SIZE) -> list[AssetRecord]:
    """Unprobed records of the built-in library (objects, materials, HDRIs)."""
    from dr.assets_manifest.builtin import materials as M
    from dr.assets_manifest.builtin import objects as O

    key = library_key(seed, texture_size)
    out = [
        AssetRecord(id=f"builtin:object/{r.name}", kind="object", source="builtin",
                    uri=f"builtin://{key}/objects/{r.name}.glb", license=BUILTIN_LICENSE, category=r.category)
        for r in O.RECIPES
    ]
    out += [
        AssetRecord(id=f"builtin:material/{name}", kind="material", source="builtin",
                    uri=f"builtin://{key}/materials/{name}", files=dict(M.MAP_FILES), license=BUILTIN_LICENSE)
        for name in M.RECIPES
    ]
    world = blender_world_dir()
    out += [
        AssetRecord(id=f"builtin:hdri/{p.stem}", kind="hdri", source="builtin",
                    uri=f"blender://datafiles/studiolights/world/{p.name}", license=BUILTIN_LICENSE, category=p.stem)
        for p in sorted(world.glob("*.exr"))
    ]
    return out
