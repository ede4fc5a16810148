from __future__ import annotations

import io
import os
import subprocess
import sys

import numpy as np
import pytest
import trimesh
from PIL import Image

from dr.assets_manifest.builtin import materials as M
from dr.assets_manifest.builtin import objects as O
from dr.assets_manifest.builtin import patterns as P
from dr.assets_manifest.builtin.library import ensure_library, library_dir, library_key
from dr.assets_manifest.resolve import resolve_uri
from dr.srgb import srgb_to_linear

# The library and its manifest are promised to be identical on every machine with the pinned
# dependencies (constraints.txt). These digests were made on the development machine; a CI
# machine that disagrees has found nondeterminism. If the library changes on purpose, bump
# LIBRARY_VERSION and update them.
GOLDEN_LIBRARY_DIGEST = "6c0e103c3f64fad43a2264f94c3d2fea0d1cd1f9a1186603fc523049d9541a95"  # its COMPLETE file
GOLDEN_MANIFEST_SHA256 = "64ae1b7f24d94f75a31b7180f0b30e8537a5577f24e0e951a28f842ab3af2fb7"


def test_counts_and_status(builtin_manifest):
    s = builtin_manifest.summary()
    by = s["by_kind"]
    assert by["object"]["builtin"] == {"ok": len(O.RECIPES), "quarantined": 0} and len(O.RECIPES) >= 20
    assert by["material"]["builtin"] == {"ok": len(M.RECIPES), "quarantined": 0} and len(M.RECIPES) >= 20
    assert by["hdri"]["builtin"] == {"ok": 8, "quarantined": 0}
    assert all(r.license == "CC0-1.0" and len(r.sha256) == 64 for r in builtin_manifest.records)


def test_hdris_are_found_without_importing_bpy():
    code = ("import sys; from dr.assets_manifest.builtin.library import builtin_candidates; "
            "h = [r for r in builtin_candidates() if r.kind == 'hdri']; "
            "assert 'bpy' not in sys.modules; print(len(h), sorted(r.category for r in h))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.startswith("8 ['city', 'courtyard', 'forest', 'interior', 'night', 'studio', 'sunrise', 'sunset']")


def test_hdri_stats_are_the_maps_values(builtin_manifest, cache_dir):
    import OpenEXR

    rec = builtin_manifest.get("builtin:hdri/forest")
    with OpenEXR.File(str(resolve_uri(rec.uri, cache_dir))) as f:
        px = np.asarray(f.channels()["RGB"].pixels, dtype=np.float64)
    assert (rec.stats["width"], rec.stats["height"]) == (px.shape[1], px.shape[0]) == (1024, 512)
    assert rec.stats["peak"] == pytest.approx(px.max(), rel=1e-4)
    assert rec.stats["mean"] == pytest.approx((px @ [0.2126, 0.7152, 0.0722]).mean(), rel=1e-4)


def test_materials_span_metals_and_dielectrics_smooth_and_rough(builtin_manifest):
    means = {r.id.split("/")[-1]: r.stats["mean"] for r in builtin_manifest.usable("material")}
    metals = [k for k, m in means.items() if m["metallic"] > 0.95]
    dielectrics = [k for k, m in means.items() if m["metallic"] < 0.05]
    mixed = [k for k, m in means.items() if 0.05 <= m["metallic"] <= 0.95]
    smooth = [k for k, m in means.items() if m["roughness"] < 0.15]
    rough = [k for k, m in means.items() if m["roughness"] > 0.8]
    assert len(metals) >= 5 and len(dielectrics) >= 10 and len(mixed) >= 2
    assert len(smooth) >= 3 and len(rough) >= 4
    assert {"chrome", "polished_gold"} <= set(metals) & set(smooth)
    assert {"black_rubber", "concrete"} <= set(dielectrics) & set(rough)


def test_known_material_values_survive_encoding(builtin_manifest):
    """The probe decodes the PNGs; the recipes' constants are the truth (to 8-bit precision)."""
    chrome = builtin_manifest.get("builtin:material/chrome").stats["mean"]
    assert chrome["metallic"] == 1.0
    assert chrome["roughness"] == pytest.approx(0.02, abs=1 / 255)
    eight_bit = lambda srgb: srgb_to_linear(np.floor(np.asarray(srgb) * 255 + 0.5) / 255)  # noqa: E731
    assert chrome["basecolor"] == pytest.approx(eight_bit([0.9, 0.9, 0.9]).tolist(), abs=1e-4)
    gold = builtin_manifest.get("builtin:material/polished_gold").stats["mean"]
    assert gold["basecolor"] == pytest.approx(eight_bit([1.0, 0.89, 0.61]).tolist(), abs=1e-4)


def test_height_to_normal_matches_the_analytic_normal():
    """OpenGL convention: +x along columns, +y up the image (towards row 0)."""
    n = 256
    u, v_down = P.grid(n)  # grid's second coordinate grows with the row index, i.e. downwards
    a = 0.01
    phase = 2 * np.pi * (u + 2 * v_down)
    nrm = P.height_to_normal(np.sin(phase), a)
    dh_du = 2 * np.pi * np.cos(phase)
    dh_dup = -4 * np.pi * np.cos(phase)  # d/d(up) = -d/d(down)
    want = np.stack([-a * dh_du, -a * dh_dup, np.ones_like(phase)], -1)
    want /= np.linalg.norm(want, axis=-1, keepdims=True)
    assert np.abs(nrm - want).max() < 1e-3
    # a surface rising towards the top of the image has a normal leaning down (green < 0.5)
    ramp = np.tile(np.linspace(1.0, 0.0, n)[:, None], (1, n))  # row 0 (top) highest
    inner = P.height_to_normal(ramp, 0.01)[1:-1]
    assert (inner[..., 1] < 0).all() and np.allclose(inner[..., 0], 0)


def test_normal_maps_are_opengl_unit_vectors(builtin_manifest, cache_dir):
    for name in ("red_brick", "hammered_copper", "blue_fabric"):
        rec = builtin_manifest.get(f"builtin:material/{name}")
        folder = resolve_uri(rec.uri, cache_dir)
        img = np.asarray(Image.open(folder / rec.files["normal"])).astype(np.float64) / 255 * 2 - 1
        length = np.linalg.norm(img, axis=-1)
        assert np.abs(length - 1).max() < 0.02 and img[..., 2].min() > 0, name
        assert img[..., :2].std() > 0.01, name  # the map has relief


def _load_zup(path):
    scene = trimesh.load(str(path), force="scene", process=False)
    mesh = scene.to_geometry()
    return scene, np.asarray(mesh.vertices) @ O.GLTF_TO_ZUP.T


def test_objects_are_upright_with_their_recipe_dimensions(builtin_manifest, cache_dir):
    box = builtin_manifest.get("builtin:object/box").stats
    assert np.allclose(box["bounds_zup"], [[-0.4, -0.25, -0.15], [0.4, 0.25, 0.15]], atol=1e-6)
    assert box["radius_xy"] == pytest.approx(np.hypot(0.4, 0.25), abs=1e-6)
    sphere = builtin_manifest.get("builtin:object/sphere").stats
    assert sphere["radius_xy"] == pytest.approx(0.5, abs=1e-5)
    # glTF is Y-up; read back and turned Z-up, the cone stands on its base with the apex on top
    _, v = _load_zup(resolve_uri(builtin_manifest.get("builtin:object/cone").uri, cache_dir))
    apex = v[v[:, 2].argmax()]
    assert v[:, 2].min() == pytest.approx(0.0, abs=1e-6) and apex[2] == pytest.approx(0.8, abs=1e-6)
    assert np.hypot(apex[0], apex[1]) < 1e-6


def test_glb_materials_carry_the_recipe_values(builtin_manifest, cache_dir):
    scene, _ = _load_zup(resolve_uri(builtin_manifest.get("builtin:object/torus").uri, cache_dir))
    mat = next(iter(scene.geometry.values())).visual.material
    assert mat.metallicFactor == 1.0 and mat.roughnessFactor == pytest.approx(0.15)
    assert np.allclose(np.asarray(mat.baseColorFactor[:3]) / 255.0, O.MATERIALS["gold"]["base"], atol=1 / 255)
    # the vase's packed metallic-roughness texture: G = roughness, B = metallic, in two kinds of band
    scene, _ = _load_zup(resolve_uri(builtin_manifest.get("builtin:object/vase").uri, cache_dir))
    mat = next(iter(scene.geometry.values())).visual.material
    mr = np.asarray(mat.metallicRoughnessTexture.convert("RGB"))
    pairs = {tuple(p) for p in mr[..., 1:].reshape(-1, 2)}
    assert pairs == {(51, 255), (204, 0)}
    assert mat.metallicFactor == 1.0 and mat.roughnessFactor == 1.0
    assert builtin_manifest.get("builtin:object/vase").stats["textures"] == [[128, 128]]


def test_library_is_cached_and_reproducible(cache_dir, tmp_path):
    first = ensure_library(cache_dir)
    stamp = (first / "COMPLETE").stat().st_mtime_ns
    assert ensure_library(cache_dir) == first and (first / "COMPLETE").stat().st_mtime_ns == stamp
    # a fresh process with another hash seed, into another folder: the same bytes
    other = tmp_path / "other-cache"
    code = f"from pathlib import Path; from dr.assets_manifest.builtin.library import ensure_library; ensure_library(Path({str(other)!r}))"
    subprocess.run([sys.executable, "-c", code], check=True, env={**os.environ, "PYTHONHASHSEED": "7"})
    second = library_dir(other, library_key())
    files = sorted(p.relative_to(first) for p in first.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(second) for p in second.rglob("*") if p.is_file())
    assert all((first / f).read_bytes() == (second / f).read_bytes() for f in files)
    assert (first / "COMPLETE").read_text().strip() == GOLDEN_LIBRARY_DIGEST


def test_builtin_manifest_is_machine_independent(builtin_manifest, tmp_path):
    """URIs name the library, not this machine's paths: a build in another cache folder writes
    the same bytes."""
    from dr.assets_manifest.build import ensure_builtin_manifest

    other = ensure_builtin_manifest(tmp_path / "cache2")
    assert other.read_bytes() == builtin_manifest.path.read_bytes()
    assert builtin_manifest.digest() == GOLDEN_MANIFEST_SHA256
    assert str(tmp_path) not in other.read_text() and os.path.expanduser("~") not in other.read_text()


@pytest.mark.parametrize("name", sorted(M.RECIPES))
def test_materials_tile_seamlessly(name):
    """Across the wrap-around (last column to first, last row to first) a map changes no more
    than across the sharpest line inside it: a seam would stand out above every inner line."""
    maps = M.RECIPES[name](np.random.default_rng(1), 128)
    for arr in (maps.height, maps.roughness, maps.metallic, maps.basecolor[..., 0]):
        for a in (arr, arr.T):
            inner = np.abs(np.diff(a, axis=0)).mean(axis=1)
            seam = np.abs(a[0] - a[-1]).mean()
            assert seam <= 1.5 * inner.max() + 1e-9, name


def test_glb_loads_as_bytes_roundtrip():
    recipe = next(r for r in O.RECIPES if r.name == "gear")
    glb = O.build_glb(recipe, np.random.default_rng(0))
    assert glb == O.build_glb(recipe, np.random.default_rng(0))
    mesh = trimesh.load(io.BytesIO(glb), file_type="glb", force="scene").to_geometry()
    assert len(mesh.faces) > 100
