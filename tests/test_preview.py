"""`dr-data preview`: contact sheets, animated previews and the HTML gallery."""

from __future__ import annotations

import re

import numpy as np
from PIL import Image
from test_export import H, T, W, write_run

from conftest import run_app
from dr.shards.preview import (ANIM_COLUMNS, BAR_H, LABEL_H, animation_frames, contact_sheet, gallery_html,
                               write_previews)
from dr.shards.reader import iter_samples


def test_previews_files_frames_and_index(tmp_path):
    write_run(tmp_path / "run", keys=("clip_a", "clip_b"))
    out = tmp_path / "preview"
    entries = write_previews(iter_samples(str(tmp_path / "run")), out, frames=2)
    assert [e["key"] for e in entries] == ["clip_a", "clip_b"]
    assert sorted(p.name for p in out.iterdir()) == [
        "clip_a.anim.png", "clip_a.png", "clip_b.anim.png", "clip_b.png", "index.html"]
    with Image.open(out / "clip_a.anim.png") as im:
        assert im.format == "PNG" and im.is_animated and im.n_frames == T
        assert im.info.get("loop") == 0 and im.info.get("duration") == round(1000 / 24)
    with Image.open(out / "clip_a.png") as im:  # 7 pass rows + env_ldr + env_log, 2 frames
        assert im.size == (2 * W, 9 * H)
    page = (out / "index.html").read_text()
    srcs = re.findall(r'<img src="([^"]+)"', page)
    assert sorted(srcs) == sorted(p.name for p in out.glob("*.png"))
    assert all((out / s).is_file() for s in srcs)
    assert "http" not in page and "<script" not in page  # nothing from elsewhere
    assert f"{T} frames" in page and f"{W}\u00d7{H}" in page and "device cpu" in page and "4 samples" in page


def test_animation_tiles_hold_the_views(tmp_path):
    clips = write_run(tmp_path / "run", keys=("clip_a",))
    sample = next(iter_samples(str(tmp_path / "run")))
    frames = animation_frames(sample, tile=64)  # frames are never scaled up: tiles are H x W
    rows = 2  # 7 tiles in 4 columns
    assert len(frames) == T and frames[0].shape == (rows * (LABEL_H + H) + BAR_H, ANIM_COLUMNS * W, 3)
    n = clips["clip_a"]["normal"].astype(np.float64)
    for t in range(T):
        tile = frames[t][LABEL_H:LABEL_H + H, W:2 * W]  # row 0, column 1: normal
        assert np.array_equal(tile, np.floor((n[t] + 1) / 2 * 255 + 0.5).astype(np.uint8))
    # the position bar grows with the frame, so every frame differs
    bar = [int((f[-1, :, 0] == 200).sum()) for f in frames]
    assert bar == sorted(bar) and len(set(bar)) == T and bar[-1] == ANIM_COLUMNS * W
    # smaller tiles: the longer side is `tile` pixels
    small = animation_frames(sample, tile=5)
    assert small[0].shape == (rows * (LABEL_H + 4) + BAR_H, ANIM_COLUMNS * 5, 3)


def test_contact_sheet_keeps_its_rows(tmp_path):
    write_run(tmp_path / "run", keys=("clip_a",))
    s = next(iter_samples(str(tmp_path / "run")))
    sheet = contact_sheet(s, max_frames=6)
    assert sheet.shape == (9 * H, T * W, 3) and sheet.dtype == np.uint8
    del s.passes["metallic"]
    s.env = None
    assert contact_sheet(s, max_frames=2).shape == (6 * H, 2 * W, 3)


def test_max_clips_stops_the_stream(tmp_path):
    write_run(tmp_path / "run", keys=("clip_a", "clip_b", "clip_c"))
    read = []

    def samples():
        for s in iter_samples(str(tmp_path / "run")):
            read.append(s.key)
            yield s

    entries = write_previews(samples(), tmp_path / "p", max_clips=1)
    assert [e["key"] for e in entries] == ["clip_a"] and read == ["clip_a"]
    assert sorted(p.name for p in (tmp_path / "p").iterdir()) == ["clip_a.anim.png", "clip_a.png", "index.html"]


def test_gallery_escapes_text():
    page = gallery_html([{"key": "clip_a", "meta": {"frames": 2, "renderer": {"device": "<b>gpu&co</b>"}},
                          "anim": "clip_a.anim.png", "sheet": "clip_a.png"}], title="run <x>")
    assert "<b>" not in page and "&lt;b&gt;gpu&amp;co&lt;/b&gt;" in page and "run &lt;x&gt;" in page


def _cli(argv, capsys):
    rc = run_app(*argv)
    return rc, capsys.readouterr()


def test_cli_previews_and_refuses_bad_input_in_one_line(tmp_path, capsys):
    write_run(tmp_path / "run", keys=("clip_a", "clip_b"))
    out = tmp_path / "p"
    shard = tmp_path / "run" / "shards" / "shard-000000.tar"
    rc, cap = _cli(["preview", str(shard), "--out", str(out), "--frames", "2", "--max-clips", "1"], capsys)
    assert rc == 0, cap.err
    assert sorted(p.name for p in out.iterdir()) == ["clip_a.anim.png", "clip_a.png", "index.html"]
    (tmp_path / "bad.tar").write_bytes(b"\x00garbage" * 100)
    for argv, says in [
        (["preview", str(tmp_path / "nope"), "--out", str(out)], "does not exist"),
        (["preview", str(tmp_path / "run"), "--out", str(out), "--frames", "0"], "--frames"),
        (["preview", str(tmp_path / "run"), "--out", str(out / "index.html")], "is a file"),
        (["preview", str(tmp_path / "bad.tar"), "--out", str(tmp_path / "p2")], "not a readable shard"),
    ]:
        rc, cap = _cli(argv, capsys)
        lines = cap.err.strip().splitlines()
        assert rc == 2 and len(lines) == 1 and lines[0].startswith("error: ") and says in lines[0], (argv, cap.err)
