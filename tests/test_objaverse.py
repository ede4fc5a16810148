"""Objaverse: a fake hf-objaverse-v1 download made here, indexed and probed; the download
command without a network."""

from __future__ import annotations

import gzip
import json
import socket
from pathlib import Path

import numpy as np
import pytest
import trimesh

from dr.assets_manifest.objaverse import index_objaverse, round_robin
from dr.assets_manifest.probes import probe
from dr.errors import UserError
from conftest import run_cli

UIDS = {
    "aaa111": ("mug", "000-000", "by"),
    "bbb222": ("mug", "000-000", "cc0"),
    "ccc333": ("chair", "000-001", "by-nc"),
    "ddd444": ("chair", "000-001", None),  # LVIS, corrupt GLB
    "eee555": (None, "000-001", "by"),  # not in LVIS
    "fff666": ("lamp", "000-001", "by"),  # LVIS, not downloaded
}


def _gz(path: Path, obj) -> None:
    with gzip.open(path, "wt") as f:
        json.dump(obj, f)


@pytest.fixture
def objaverse_cache(tmp_path) -> Path:
    root = tmp_path / "objaverse" / "hf-objaverse-v1"
    paths, lvis, meta = {}, {}, {}
    for i, (uid, (cat, shard, lic)) in enumerate(UIDS.items()):
        rel = f"glbs/{shard}/{uid}.glb"
        paths[uid] = rel
        if cat:
            lvis.setdefault(cat, []).append(uid)
        if lic:
            meta.setdefault(shard, {})[uid] = {"uid": uid, "license": lic, "name": uid}
        if uid == "fff666":
            continue
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        if uid == "ddd444":
            (root / rel).write_bytes(b"glTF\x02\x00\x00\x00garbage")
            continue
        mesh = trimesh.creation.box(extents=(0.2 * (i + 1), 0.1, 0.3))  # glTF frame: y is up
        mesh.apply_translation((0.0, 0.15, 0.0))
        (root / rel).write_bytes(mesh.export(file_type="glb"))
    _gz(root / "object-paths.json.gz", paths)
    _gz(root / "lvis-annotations.json.gz", lvis)
    (root / "metadata").mkdir()
    for shard, m in meta.items():
        _gz(root / "metadata" / f"{shard}.json.gz", m)
    return root.parent


def test_lvis_subset_by_default(objaverse_cache):
    recs, missing = index_objaverse(objaverse_cache)
    by = {r.id: r for r in recs}
    assert set(by) == {"objaverse:aaa111", "objaverse:bbb222", "objaverse:ccc333", "objaverse:ddd444"}
    assert missing == 1  # fff666 is annotated but not downloaded
    assert by["objaverse:aaa111"].category == "mug" and by["objaverse:ccc333"].category == "chair"
    assert by["objaverse:aaa111"].license == "CC-BY-4.0" and by["objaverse:bbb222"].license == "CC0-1.0"
    assert by["objaverse:ccc333"].license == "CC-BY-NC-4.0" and by["objaverse:ddd444"].license == "unknown"
    # the versioned folder itself works too
    assert len(index_objaverse(objaverse_cache / "hf-objaverse-v1")[0]) == 4


def test_all_categories_and_limit(objaverse_cache):
    recs, _ = index_objaverse(objaverse_cache, lvis_only=False)
    assert "objaverse:eee555" in {r.id for r in recs} and len(recs) == 5
    recs, _ = index_objaverse(objaverse_cache, categories=["chair"])
    assert {r.id for r in recs} == {"objaverse:ccc333", "objaverse:ddd444"}
    recs, _ = index_objaverse(objaverse_cache, limit=2)
    assert {r.category for r in recs} == {"chair", "mug"}  # spread over categories
    with pytest.raises(UserError, match="unknown LVIS category: sofa"):
        index_objaverse(objaverse_cache, categories=["sofa"])
    assert round_robin([("b", "2"), ("a", "1"), ("a", "3"), ("b", "4"), ("a", "5")]) == \
        [("a", "1"), ("b", "2"), ("a", "3"), ("b", "4"), ("a", "5")]


def test_probes_measure_glb_bounds_z_up(objaverse_cache):
    recs = {r.id: probe(r, max_triangles=1000) for r in index_objaverse(objaverse_cache)[0]}
    bad = recs["objaverse:ddd444"]
    assert bad.status == "quarantined" and bad.reason.startswith("does not load as glTF")
    box = recs["objaverse:bbb222"]  # i = 1: extents (0.4, 0.1, 0.3) in glTF (y up), raised 0.15 along y
    assert box.status == "ok" and box.stats["triangles"] == 12
    # Z-up: glTF (x, y, z) -> (x, -z, y): x in +-0.2, y in +-0.15, z in [0.1, 0.2]
    assert np.allclose(box.stats["bounds_zup"], [[-0.2, -0.15, 0.1], [0.2, 0.15, 0.2]], atol=1e-6)
    assert box.stats["radius_xy"] == pytest.approx(np.hypot(0.2, 0.15), abs=1e-6)
    over = probe(index_objaverse(objaverse_cache)[0][0], max_triangles=5)
    assert over.status == "quarantined" and "over the budget" in over.reason


def test_bad_caches(tmp_path, objaverse_cache):
    with pytest.raises(UserError, match="does not exist"):
        index_objaverse(tmp_path / "nope")
    (tmp_path / "plain").mkdir()
    with pytest.raises(UserError, match="not an Objaverse cache"):
        index_objaverse(tmp_path / "plain")
    (objaverse_cache / "hf-objaverse-v1" / "lvis-annotations.json.gz").unlink()
    with pytest.raises(UserError, match="no lvis-annotations"):
        index_objaverse(objaverse_cache)


def test_build_command_on_objaverse_cache(objaverse_cache, tmp_path):
    out = tmp_path / "objaverse.jsonl"
    r = run_cli("assets", "build", "--objaverse-cache", str(objaverse_cache), "--out", str(out))
    assert r.returncode == 0, r.stderr
    assert "1 selected Objaverse objects are not downloaded" in r.stderr
    recs = [json.loads(x) for x in out.read_text().splitlines()]
    assert [(x["id"], x["status"]) for x in recs] == [
        ("objaverse:aaa111", "ok"), ("objaverse:bbb222", "ok"), ("objaverse:ccc333", "ok"),
        ("objaverse:ddd444", "quarantined")]


def _hub_reachable() -> bool:
    try:
        socket.create_connection(("huggingface.co", 443), timeout=3).close()
        return True
    except OSError:
        return False


def test_download_without_network_is_one_clear_line(tmp_path):
    if _hub_reachable():
        pytest.skip("this machine reaches huggingface.co; the no-network path cannot be shown here")
    target = tmp_path / "dl"
    r = run_cli("assets", "objaverse", "--lvis", "--limit", "3", "--download-dir", str(target), timeout=120)
    assert r.returncode == 2
    assert r.stderr.count("\n") == 1 and r.stderr.startswith("error: cannot reach huggingface.co")
    assert "Traceback" not in r.stderr and not target.exists()


def test_a_glb_whose_embedded_texture_is_corrupt_is_quarantined(tmp_path):
    from PIL import Image
    from trimesh.visual import TextureVisuals
    from trimesh.visual.material import PBRMaterial

    from dr.assets_manifest.manifest import AssetRecord

    mesh = trimesh.creation.box()
    uv = np.random.default_rng(0).random((len(mesh.vertices), 2))
    tex = Image.fromarray((np.random.default_rng(1).random((64, 64, 3)) * 255).astype(np.uint8))
    mesh.visual = TextureVisuals(uv=uv, material=PBRMaterial(baseColorTexture=tex))
    glb = bytearray(mesh.export(file_type="glb"))
    good = tmp_path / "good.glb"
    good.write_bytes(bytes(glb))
    at = glb.find(b"IDAT")  # corrupt the compressed pixels, keep the PNG header readable
    glb[at + 40: at + 400] = bytes(360)
    bad = tmp_path / "bad.glb"
    bad.write_bytes(bytes(glb))
    ok = probe(AssetRecord(id="t:good", kind="object", source="t", uri=str(good)), max_triangles=100)
    assert ok.status == "ok" and ok.stats["textures"] == [[64, 64]]
    broken = probe(AssetRecord(id="t:bad", kind="object", source="t", uri=str(bad)), max_triangles=100)
    assert broken.status == "quarantined"
    assert broken.reason.startswith("embedded baseColorTexture does not decode")
