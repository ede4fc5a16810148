"""Asset URIs: local paths, builtin:// and blender:// names, and fsspec URLs fetched into the cache."""

from __future__ import annotations

import fsspec
import pytest

from dr.assets_manifest.builtin.library import blender_world_dir, library_key
from dr.assets_manifest.resolve import resolve_uri
from dr.errors import UserError


def test_local_and_builtin_names(tmp_path, cache_dir):
    f = tmp_path / "x.glb"
    f.write_bytes(b"x")
    assert resolve_uri(str(f)) == f and resolve_uri(f"file://{f}") == f
    glb = resolve_uri(f"builtin://{library_key()}/objects/torus.glb", cache_dir)
    assert glb.is_file() and glb.read_bytes()[:4] == b"glTF"
    hdri = resolve_uri("blender://datafiles/studiolights/world/forest.exr")
    assert hdri == blender_world_dir() / "forest.exr" and hdri.is_file()
    with pytest.raises(UserError, match="unknown built-in library"):
        resolve_uri("builtin://v999-seed1-tex8/objects/torus.glb", cache_dir)
    with pytest.raises(UserError, match="blender://datafiles"):
        resolve_uri("blender://elsewhere/x.exr")


def test_remote_files_are_fetched_once_into_the_cache(tmp_path):
    mem = fsspec.filesystem("memory")
    mem.pipe("/bucket/maps/sky.hdr", b"#?RADIANCE fake")
    cache = tmp_path / "cache"
    got = resolve_uri("memory://bucket/maps/sky.hdr", cache)
    assert got.is_file() and got.read_bytes() == b"#?RADIANCE fake" and cache in got.parents
    assert got.name == "sky.hdr"
    mem.pipe("/bucket/maps/sky.hdr", b"changed")  # the cache copy is what later calls see
    assert resolve_uri("memory://bucket/maps/sky.hdr", cache).read_bytes() == b"#?RADIANCE fake"
    with pytest.raises(UserError, match="cannot fetch memory://bucket/missing.hdr"):
        resolve_uri("memory://bucket/missing.hdr", cache)
    assert not list((cache / "remote").rglob("*.tmp-*"))  # no half-written files left behind
