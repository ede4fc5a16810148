"""Material and HDRI folders: indexers, probes and quarantine reasons, on folders the tests make."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import OpenEXR
import pytest
from PIL import Image

from dr.assets_manifest.build import AssetsBuildConfig, build_manifest
from dr.assets_manifest.folders import index_hdris, index_materials
from dr.assets_manifest.hdr_image import ImageDecodeError, read_hdr
from dr.assets_manifest.probes import probe
from dr.errors import UserError
from conftest import run_cli


def _png(path: Path, value, size=(32, 32), mode="RGB"):
    arr = np.full((*size, 3 if mode == "RGB" else 1), value, dtype=np.uint8)
    Image.fromarray(arr if mode == "RGB" else arr[..., 0], mode).save(path)


def _exr(path: Path, rgb: np.ndarray):
    OpenEXR.File({"compression": OpenEXR.ZIP_COMPRESSION, "type": OpenEXR.scanlineimage},
                 {"RGB": np.ascontiguousarray(rgb, dtype=np.float32)}).write(str(path))


@pytest.fixture
def ambientcg(tmp_path) -> Path:
    root = tmp_path / "ambientcg"
    a = root / "Bricks076C"
    a.mkdir(parents=True)
    _png(a / "Bricks076C_1K-PNG_Color.png", (200, 100, 50))
    _png(a / "Bricks076C_1K-PNG_Roughness.png", 204, mode="L")
    _png(a / "Bricks076C_1K-PNG_NormalGL.png", (128, 128, 255))
    _png(a / "Bricks076C_1K-PNG_NormalDX.png", (128, 128, 255))
    b = root / "Metal032"
    b.mkdir()
    _png(b / "Metal032_2K-PNG_Color.png", (180, 180, 180))
    _png(b / "Metal032_2K-PNG_Metalness.png", 255, mode="L")
    _png(b / "Metal032_2K-PNG_Roughness.png", 51, mode="L")
    _png(b / "Metal032_2K-PNG_NormalDX.png", (128, 128, 255))
    c = root / "NoColor001"
    c.mkdir()
    _png(c / "NoColor001_1K-PNG_Roughness.png", 10, mode="L")
    d = root / "Broken002"
    d.mkdir()
    (d / "Broken002_1K-JPG_Color.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    (root / "README.txt").write_text("ignored")
    return root


@pytest.fixture
def polyhaven(tmp_path) -> Path:
    root = tmp_path / "polyhaven"
    root.mkdir()
    _png(root / "rusty_metal_02_diff_1k.png", (255, 255, 255))
    Image.new("RGB", (16, 16), (0, 0, 0)).save(root / "rusty_metal_02_diff_1k.jpg")  # the PNG is preferred
    arm = np.zeros((16, 16, 3), np.uint8)
    arm[..., 0], arm[..., 1], arm[..., 2] = 255, 128, 255  # AO, roughness, metallic
    Image.fromarray(arm).save(root / "rusty_metal_02_arm_1k.png")
    _exr(root / "rusty_metal_02_nor_gl_1k.exr", np.dstack([np.zeros((16, 16)), np.zeros((16, 16)), np.ones((16, 16))]))
    _png(root / "rusty_metal_02_disp_1k.png", 128, mode="L")
    return root


def test_ambientcg_sets(ambientcg):
    recs = {r.id: r for r in index_materials(ambientcg)}
    assert set(recs) == {"ambientcg:Bricks076C/Bricks076C_1K-PNG", "ambientcg:Broken002/Broken002_1K-JPG",
                         "ambientcg:Metal032/Metal032_2K-PNG", "ambientcg:NoColor001/NoColor001_1K-PNG"}
    bricks = recs["ambientcg:Bricks076C/Bricks076C_1K-PNG"]
    assert bricks.files == {"basecolor": "Bricks076C_1K-PNG_Color.png", "normal": "Bricks076C_1K-PNG_NormalGL.png",
                            "roughness": "Bricks076C_1K-PNG_Roughness.png"}
    assert recs["ambientcg:Metal032/Metal032_2K-PNG"].files["normal_dx"] == "Metal032_2K-PNG_NormalDX.png"
    assert recs["ambientcg:NoColor001/NoColor001_1K-PNG"].status == "quarantined"
    probed = {i: probe(r, max_triangles=10) for i, r in recs.items()}
    m = probed["ambientcg:Bricks076C/Bricks076C_1K-PNG"]
    assert m.status == "ok" and m.stats["textures"]["basecolor"] == [32, 32]
    srgb = np.array([200, 100, 50]) / 255
    assert m.stats["mean"]["basecolor"] == pytest.approx(((srgb + 0.055) / 1.055) ** 2.4, abs=1e-4)
    assert m.stats["mean"]["roughness"] == pytest.approx(0.8, abs=1e-4)
    assert m.stats["mean"]["metallic"] == 0.0  # no metallic map: a dielectric
    metal = probed["ambientcg:Metal032/Metal032_2K-PNG"].stats["mean"]
    assert metal["metallic"] == 1.0 and metal["roughness"] == pytest.approx(0.2, abs=1e-4)
    broken = probed["ambientcg:Broken002/Broken002_1K-JPG"]
    assert broken.status == "quarantined" and "does not decode" in broken.reason


def test_polyhaven_sets_with_packed_arm_and_exr_normal(polyhaven):
    (rec,) = index_materials(polyhaven)
    assert rec.id == "polyhaven:rusty_metal_02_1k" and rec.source == "polyhaven"
    assert rec.files == {"arm": "rusty_metal_02_arm_1k.png", "basecolor": "rusty_metal_02_diff_1k.png",
                         "displacement": "rusty_metal_02_disp_1k.png", "normal": "rusty_metal_02_nor_gl_1k.exr"}
    p = probe(rec, max_triangles=10)
    assert p.status == "ok"
    assert p.stats["mean"]["roughness"] == pytest.approx(128 / 255, abs=1e-4)  # G of the ARM map
    assert p.stats["mean"]["metallic"] == pytest.approx(1.0)  # B of the ARM map
    assert p.stats["textures"]["normal"] == [16, 16]


def test_empty_or_missing_material_folder(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        index_materials(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "photo.jpg").write_bytes(b"")
    with pytest.raises(UserError, match="no PBR texture sets"):
        index_materials(tmp_path / "empty")


# --- HDRIs ---------------------------------------------------------------------------------

def _rgbe_flat(path: Path, rgb: np.ndarray) -> None:
    """Write an uncompressed (flat) Radiance file by the format's definition: each pixel is
    mantissas m = floor(c / 2^(e-8)) of the largest channel's exponent e, plus e + 128."""
    h, w, _ = rgb.shape
    mx = rgb.max(axis=-1)
    e = np.where(mx > 0, np.floor(np.log2(np.maximum(mx, 1e-38))) + 1, 0)
    scale = np.where(mx > 0, 2.0 ** (8 - e), 0)
    px = np.zeros((h, w, 4), np.uint8)
    px[..., :3] = np.floor(rgb * scale[..., None]).clip(0, 255)
    px[..., 3] = np.where(mx > 0, e + 128, 0)
    header = f"#?RADIANCE\nFORMAT=32-bit_rle_rgbe\n\n-Y {h} +X {w}\n".encode()
    path.write_bytes(header + px.tobytes())


def test_radiance_reader_against_the_format_definition(tmp_path):
    # values with 8 significant bits are exact in RGBE
    rgb = np.zeros((4, 8, 3))
    rgb[0, 0] = (1.0, 0.5, 0.25)
    rgb[1, 2] = (12.0, 3.0, 0.0)
    rgb[3, 7] = (0.75, 0.75, 0.0625)
    rgb[2, 5] = (1000.0, 500.0, 248.0)  # 250 would need half a mantissa step at 2^10
    _rgbe_flat(tmp_path / "a.hdr", rgb)
    assert np.array_equal(read_hdr(tmp_path / "a.hdr"), rgb.astype(np.float32))
    # run-length-encoded scanlines (what most tools write), with arbitrary values: 8-bit mantissa
    import cv2

    rng = np.random.default_rng(0)
    big = (rng.random((64, 128, 3)) * 50).astype(np.float32)
    cv2.imwrite(str(tmp_path / "rle.hdr"), big[..., ::-1])
    assert (tmp_path / "rle.hdr").read_bytes()[:80].count(b"\x02\x02") >= 1  # an RLE scanline marker
    got = read_hdr(tmp_path / "rle.hdr")
    assert np.all(np.abs(got - big) <= big.max(axis=-1, keepdims=True) / 128)


@pytest.fixture
def hdri_folder(tmp_path) -> Path:
    root = tmp_path / "hdris"
    (root / "sub").mkdir(parents=True)
    sky = np.ones((32, 64, 3), np.float32) * np.array([0.2, 0.4, 0.8], np.float32)
    sky[5, 10] = (500.0, 400.0, 300.0)  # a sun
    _exr(root / "good.exr", sky)
    _rgbe_flat(root / "sub" / "good.hdr", np.full((16, 32, 3), 0.5))
    _exr(root / "wide.exr", np.ones((16, 48, 3)))
    nan = np.ones((16, 32, 3), np.float32)
    nan[3, 4, 1] = np.nan
    _exr(root / "nan.exr", nan)
    neg = np.ones((16, 32, 3), np.float32)
    neg[:8] = -0.5
    _exr(root / "negative.exr", neg)
    blob = (root / "good.exr").read_bytes()
    (root / "truncated.exr").write_bytes(blob[: len(blob) // 2])
    rle = root / "sub" / "truncated.hdr"
    import cv2

    cv2.imwrite(str(rle), np.random.default_rng(0).random((64, 128, 3)).astype(np.float32))
    rle.write_bytes(rle.read_bytes()[:3000])
    (root / "notes.txt").write_text("ignored")
    return root


def test_hdri_folder_probes_and_reasons(hdri_folder):
    recs = {r.id: probe(r, max_triangles=1) for r in index_hdris(hdri_folder, license="CC0-1.0")}
    assert set(recs) == {"hdri:good.exr", "hdri:sub/good.hdr", "hdri:wide.exr", "hdri:nan.exr",
                         "hdri:negative.exr", "hdri:truncated.exr", "hdri:sub/truncated.hdr"}
    good = recs["hdri:good.exr"]
    assert good.status == "ok" and good.license == "CC0-1.0"
    assert (good.stats["width"], good.stats["height"], good.stats["peak"]) == (64, 32, 500.0)
    lum = 0.2126 * 0.2 + 0.7152 * 0.4 + 0.0722 * 0.8
    sun = 0.2126 * 500 + 0.7152 * 400 + 0.0722 * 300
    assert good.stats["mean"] == pytest.approx((lum * (32 * 64 - 1) + sun) / (32 * 64), rel=1e-5)
    assert recs["hdri:sub/good.hdr"].status == "ok" and recs["hdri:sub/good.hdr"].stats["peak"] == 0.5
    reasons = {i: r.reason for i, r in recs.items() if r.status == "quarantined"}
    assert set(reasons) == {"hdri:wide.exr", "hdri:nan.exr", "hdri:negative.exr", "hdri:truncated.exr",
                            "hdri:sub/truncated.hdr"}
    assert "48x16, not a 2:1" in reasons["hdri:wide.exr"]
    assert "1 non-finite" in reasons["hdri:nan.exr"]
    assert "negative values" in reasons["hdri:negative.exr"]
    assert reasons["hdri:truncated.exr"].startswith("cannot decode EXR")
    assert "truncated" in reasons["hdri:sub/truncated.hdr"]
    assert all("\n" not in r for r in reasons.values())


def test_read_hdr_rejects_other_files(tmp_path):
    (tmp_path / "x.png").write_bytes(b"")
    with pytest.raises(ImageDecodeError, match="suffix"):
        read_hdr(tmp_path / "x.png")
    (tmp_path / "x.hdr").write_bytes(b"P6 not radiance")
    with pytest.raises(ImageDecodeError, match="#\\?RADIANCE"):
        read_hdr(tmp_path / "x.hdr")


def test_build_command_on_folders_then_resume(ambientcg, polyhaven, hdri_folder, tmp_path):
    out = tmp_path / "m.jsonl"
    r = run_cli("assets", "build", "--materials", str(ambientcg), "--materials", str(polyhaven),
                "--hdris", str(hdri_folder), "--out", str(out), "--workers", "2")
    assert r.returncode == 0, r.stderr
    assert f"wrote {out}" in " ".join(r.stderr.split())
    lines = [json.loads(x) for x in out.read_text().splitlines()]
    assert [x["id"] for x in lines] == sorted(x["id"] for x in lines)
    assert sum(x["status"] == "ok" for x in lines) == 5 and sum(x["status"] == "quarantined" for x in lines) == 7
    show = run_cli("assets", "show", str(out), "--json")
    summary = json.loads(show.stdout)
    assert summary["by_kind"]["hdri"]["hdri-folder"] == {"ok": 2, "quarantined": 5}
    assert summary["by_kind"]["material"]["ambientcg"] == {"ok": 2, "quarantined": 2}
    assert summary["quarantine_reasons"]["has no base colour map"] == 1

    # the same build again: every probe comes from the journal; the manifest is byte-identical
    before = out.read_bytes()
    cfg = AssetsBuildConfig()
    reused = []
    cands = index_materials(ambientcg) + index_materials(polyhaven, license="CC0-1.0") + index_hdris(hdri_folder)
    build_manifest(cands, cfg, out, Path(os.environ["DR_CACHE_DIR"]),
                   on_done=lambda rec, was_reused: reused.append(was_reused))
    assert out.read_bytes() == before
    # probes are reused, except the failures that might be transient (none here: all are checks)
    assert all(reused)
    # change one file: only that asset is probed again
    _png(ambientcg / "Metal032" / "Metal032_2K-PNG_Roughness.png", 102, mode="L")
    reused.clear()
    m = build_manifest(cands, cfg, out, Path(os.environ["DR_CACHE_DIR"]),
                       on_done=lambda rec, was_reused: reused.append((rec.id, was_reused)))
    assert [i for i, was in reused if not was] == ["ambientcg:Metal032/Metal032_2K-PNG"]
    assert m.get("ambientcg:Metal032/Metal032_2K-PNG").stats["mean"]["roughness"] == pytest.approx(0.4, abs=1e-4)


def _object_folder(root: Path, builtin_manifest, cache_dir) -> dict[str, object]:
    """root/chair/a.glb, root/table/sub/b.glb, root/c.glb (copies of built-in objects) and a
    broken root/chair/broken.glb; returns {relative path: the built-in record copied}."""
    import shutil

    from dr.assets_manifest.resolve import resolve_uri

    objs = builtin_manifest.usable("object")[:3]
    layout = {"chair/a.glb": objs[0], "table/sub/b.glb": objs[1], "c.glb": objs[2]}
    for rel, rec in layout.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(resolve_uri(rec.uri, cache_dir), root / rel)
    (root / "chair" / "broken.glb").write_bytes(b"glTF\x02\x00\x00\x00" + os.urandom(500))
    (root / "chair" / "notes.txt").write_text("not an object")
    return layout


def test_a_plain_folder_of_objects_becomes_a_manifest(builtin_manifest, cache_dir, tmp_path):
    from dr.assets_manifest.folders import index_objects
    from dr.assets_manifest.manifest import load_manifest
    from dr.files import sha256_file

    root = tmp_path / "mine"
    layout = _object_folder(root, builtin_manifest, cache_dir)
    recs = {r.id: r for r in index_objects(root)}
    assert set(recs) == {"objects:mine/chair/a", "objects:mine/chair/broken", "objects:mine/table/sub/b",
                         "objects:mine/c"}
    assert {i: r.category for i, r in recs.items()} == {"objects:mine/chair/a": "chair",
                                                        "objects:mine/chair/broken": "chair",
                                                        "objects:mine/table/sub/b": "table", "objects:mine/c": None}
    out = tmp_path / "mine.jsonl"
    r = run_cli("assets", "build", "--objects", str(root), "--object-license", "CC-BY-4.0", "--out", str(out),
                "--workers", "2")
    assert r.returncode == 0, r.stderr
    m = load_manifest(out)
    assert len(m) == 4 and m.get("objects:mine/chair/broken").status == "quarantined"
    for rel, src in layout.items():
        got = m.get(f"objects:mine/{rel[:-4]}")
        assert got.status == "ok" and got.license == "CC-BY-4.0" and got.source == "object-folder"
        assert got.sha256 == sha256_file(root / rel) == src.sha256
        # the probe measures the file as the built-in manifest's probe measured the same bytes
        assert np.allclose(got.stats["bounds_zup"], src.stats["bounds_zup"])
    r = run_cli("assets", "build", "--objects", str(tmp_path / "nothing"), "--out", str(out))
    assert r.returncode == 2 and "does not exist" in r.stderr and "Traceback" not in r.stderr


def test_merge_combines_manifests_and_applies_a_runs_quarantine(builtin_manifest, cache_dir, tmp_path):
    from dr.assets_manifest.manifest import Manifest, load_manifest, write_manifest

    root = tmp_path / "mine"
    _object_folder(root, builtin_manifest, cache_dir)
    mine = tmp_path / "mine.jsonl"
    assert run_cli("assets", "build", "--objects", str(root), "--out", str(mine)).returncode == 0
    base = tmp_path / "builtin.jsonl"
    write_manifest(builtin_manifest, base)
    bad = builtin_manifest.usable("hdri")[0]
    quarantine = tmp_path / "quarantine.jsonl"  # what a run writes for an asset it found bad
    write_manifest(Manifest([bad.quarantine("cannot decode the HDRI: truncated")]), quarantine)
    out = tmp_path / "all.jsonl"
    r = run_cli("assets", "merge", str(base), str(mine), str(quarantine), "--out", str(out))
    assert r.returncode == 0, r.stderr
    merged = load_manifest(out)
    assert len(merged) == len(builtin_manifest) + 4
    assert merged.get(bad.id).status == "quarantined" and "truncated" in merged.get(bad.id).reason
    assert merged.get("objects:mine/c").status == "ok"
    assert len(merged.usable("hdri")) == len(builtin_manifest.usable("hdri")) - 1
    # the same id for another file is refused, naming it; so is writing over an input
    other = builtin_manifest.usable("object")[0]
    clash = tmp_path / "clash.jsonl"
    write_manifest(Manifest([other.model_copy(update={"sha256": "f" * 64})]), clash)
    r = run_cli("assets", "merge", str(base), str(clash), "--out", str(tmp_path / "x.jsonl"))
    assert r.returncode == 2 and other.id in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "x.jsonl").exists()
    r = run_cli("assets", "merge", str(base), str(mine), "--out", str(mine))
    assert r.returncode == 2 and "one of the inputs" in r.stderr
