"""DL3DV-style scene folders (issue 11, first part: dr.labeling.dl3dv): scenes found in DL3DV's
nesting, frames undistorted from a known OPENCV distortion to the pinhole camera, K and c2w
against the truth they were made from, segments, portrait scenes and the quarantine reasons.

The scenes are made here: frames of an analytic pattern of the ray direction (so every output
pixel has an exact value), and the frames of a rendered clip, pushed through the distortion."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from dr.labeling.dl3dv import (Camera, SceneError, find_scenes, load_scene, output_K, plan_segments, read_frame,
                               segment_clip)
from dr.srgb import linear_to_srgb

DIST = {"k1": -0.12, "k2": 0.03, "p1": 0.002, "p2": -0.0015}


def undistorted_coords(cam: Camera, xd: np.ndarray, yd: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Invert OpenCV's distortion by fixed-point iteration (what cv2.undistortPoints does)."""
    x, y = xd.copy(), yd.copy()
    for _ in range(50):
        r2 = x * x + y * y
        radial = 1 + cam.k1 * r2 + cam.k2 * r2 * r2
        dx = 2 * cam.p1 * x * y + cam.p2 * (r2 + 2 * x * x)
        dy = cam.p1 * (r2 + 2 * y * y) + 2 * cam.p2 * x * y
        x, y = (xd - dx) / radial, (yd - dy) / radial
    return x, y


def pattern(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """A smooth linear-light image of the normalised ray (x, y): (..., 3) in [0.05, 0.95]."""
    return np.stack([0.5 + 0.45 * np.sin(3 * x + 1), 0.5 + 0.45 * np.cos(2.5 * y), 0.5 + 0.45 * np.sin(2 * (x + y))],
                    -1)


def distorted_frame(cam: Camera, factor: int, truth) -> np.ndarray:
    """The image folder's frame (h/f, w/f, 3), linear: each distorted pixel shows ``truth`` of its
    undistorted normalised ray."""
    h, w = round(cam.h / factor), round(cam.w / factor)
    v, u = np.meshgrid(np.arange(h) + 0.5, np.arange(w) + 0.5, indexing="ij")
    K = cam.K(1.0 / factor)
    x, y = undistorted_coords(cam, (u - K[0, 2]) / K[0, 0], (v - K[1, 2]) / K[1, 1])
    return truth(x, y)


def rendered_frame(im: np.ndarray, Kc: np.ndarray, cam: Camera, factor: int = 4) -> np.ndarray:
    """A rendered frame ``im`` (H, W, 3) of pinhole camera ``Kc`` as the distorted camera ``cam`` sees it at
    the image folder's ``factor``: each pixel shows ``im`` at its pinhole ray, sampled bilinearly."""
    H, W = im.shape[:2]

    def truth(x, y):
        px = np.clip(Kc[0, 0] * x + Kc[0, 2] - 0.5, 0, W - 1.001)
        py = np.clip(Kc[1, 1] * y + Kc[1, 2] - 0.5, 0, H - 1.001)
        x0, y0 = np.floor(px).astype(int), np.floor(py).astype(int)
        fx, fy = (px - x0)[..., None], (py - y0)[..., None]
        return ((im[y0, x0] * (1 - fx) + im[y0, x0 + 1] * fx) * (1 - fy)
                + (im[y0 + 1, x0] * (1 - fx) + im[y0 + 1, x0 + 1] * fx) * fy)

    return distorted_frame(cam, factor, truth)


def write_scene(folder: Path, cam: Camera, c2ws, frames_linear, factor=4, names=None) -> None:
    """A DL3DV scene: transforms.json (full-resolution intrinsics, file paths under images/ as
    DL3DV writes them) and the frames as 8-bit sRGB PNG in images_<factor>/ only."""
    d = folder / f"images_{factor}"
    d.mkdir(parents=True, exist_ok=True)
    names = names or [f"frame_{i + 1:05d}.png" for i in range(len(frames_linear))]
    for name, img in zip(names, frames_linear):
        Image.fromarray((linear_to_srgb(np.clip(img, 0, 1)) * 255 + 0.5).astype(np.uint8)).save(d / name)
    meta = {"camera_model": "OPENCV", "w": cam.w, "h": cam.h, "fl_x": cam.fx, "fl_y": cam.fy, "cx": cam.cx,
            "cy": cam.cy, **{k: getattr(cam, k) for k in DIST},
            "frames": [{"file_path": f"images/{n}", "transform_matrix": np.asarray(m).tolist()}
                       for n, m in zip(names, c2ws)]}
    (folder / "transforms.json").write_text(json.dumps(meta))


def orbit(n: int) -> list[np.ndarray]:
    out = []
    for i in range(n):
        a = 0.1 * i
        m = np.eye(4)
        m[:3, :3] = [[np.cos(a), 0, np.sin(a)], [0, 1, 0], [-np.sin(a), 0, np.cos(a)]]
        m[:3, 3] = [2 * np.sin(a), 0.3, 2 * np.cos(a)]
        out.append(m)
    return out


def test_scenes_in_dl3dv_nesting_and_their_segments(tmp_path):
    cam = Camera(w=320, h=240, fx=260.0, fy=262.0, cx=161.0, cy=119.0, **DIST)
    root = tmp_path / "dl3dv"
    frame = distorted_frame(cam, 4, pattern)
    write_scene(root / "1K" / "0a1b2c", cam, orbit(30), [frame] * 30)
    alt = root / "1K" / "ffee01"
    write_scene(alt, cam, orbit(12), [frame] * 12)  # the colmap/transforms.json variant
    (alt / "colmap").mkdir()
    (alt / "transforms.json").rename(alt / "colmap" / "transforms.json")
    scenes = find_scenes(root)
    assert [p.relative_to(root).as_posix() for p in scenes] == ["1K/0a1b2c", "1K/ffee01"]
    s = load_scene(scenes[0], root, covers=(48, 64))
    assert s.id == "1K/0a1b2c" and s.factor == 4 and len(s.frames) == 30
    assert [f.name for f in s.frames[:2]] == ["frame_00001.png", "frame_00002.png"]
    assert load_scene(scenes[1], root, covers=(48, 64)).factor == 4
    # segments: spread evenly, first to last; stride counts
    assert plan_segments(30, 8, 1, 3) == [0, 11, 22]
    assert plan_segments(30, 8, 2, 15)[-1] == 30 - 15 and plan_segments(30, 8, 2, 15)[0] == 0
    assert plan_segments(8, 8, 1, 15) == [0]
    with pytest.raises(SceneError, match="fewer than one clip needs"):
        plan_segments(12, 8, 2, 15)
    clip = segment_clip(s, 11, 4, 2, 48, 64)
    assert clip.frames == ["frame_00012.png", "frame_00014.png", "frame_00016.png", "frame_00018.png"]
    assert np.array_equal(clip.c2w, np.stack([orbit(30)[i] for i in (11, 13, 15, 17)]).astype(np.float32))


@pytest.mark.parametrize("full, out", [((320, 240), (48, 64)), ((240, 320), (40, 40)), ((400, 240), (48, 48))])
def test_undistortion_recovers_the_pinhole_view(tmp_path, full, out):
    """Landscape, portrait and a crop: each output pixel shows the pattern at its own pinhole
    ray (K_out), within what 8-bit PNG and bilinear sampling allow; K_out is the camera's K
    scaled to cover H x W and centre-cropped (by hand below)."""
    w, h = full
    H, W = out
    cam = Camera(w=w, h=h, fx=0.8 * w, fy=0.81 * w, cx=w / 2 + 1.5, cy=h / 2 - 2.0, **DIST)
    folder = tmp_path / "scene"
    write_scene(folder, cam, orbit(4), [distorted_frame(cam, 4, pattern)] * 4)
    scene = load_scene(folder, covers=(H, W))
    assert scene.portrait == (h > w)
    clip = segment_clip(scene, 0, 2, 1, H, W)
    s = max(W / (w / 4), H / (h / 4))  # the cover scale from images_4
    K = np.array([[cam.fx * s / 4, 0, cam.cx * s / 4 - (w / 4 * s - W) / 2],
                  [0, cam.fy * s / 4, cam.cy * s / 4 - (h / 4 * s - H) / 2], [0, 0, 1]])
    assert np.allclose(clip.K[0], K, atol=1e-4) and np.allclose(output_K(cam, 4, H, W)[0], K)
    v, u = np.meshgrid(np.arange(H) + 0.5, np.arange(W) + 0.5, indexing="ij")
    truth = pattern((u - K[0, 2]) / K[0, 0], (v - K[1, 2]) / K[1, 1])
    got = clip.rgb[0].astype(np.float32)
    err = np.abs(got - truth)[2:-2, 2:-2]  # away from the border, where a ray may leave the frame
    assert err.max() < 0.03 and err.mean() < 0.006, (err.max(), err.mean())
    # the same frame not undistorted is far off: the test sees the distortion
    plain = read_frame(scene.frames[0].path)
    assert np.abs(plain[:H, :W] - truth).mean() > 5 * err.mean()


def test_a_rendered_clip_through_the_distortion_comes_back(tmp_path):
    """The rgb of a rendered clip, distorted, written as a DL3DV scene at images_4 scale and read
    back: equal to the linearised frames (PSNR), far better than the distorted frames are."""
    from dr.config import resolve_config
    from dr.pipeline import generate as g
    from dr.pipeline.config import GenerateConfig
    from dr.pipeline.executor import InProcessExecutor
    from dr.shards.reader import iter_samples

    cfg = resolve_config(GenerateConfig, "tiny", None, ["scene.frames=4"])
    run = tmp_path / "run"
    g.generate(g.Request(n=1, out=str(run), cfg=cfg, clips_per_shard=1), executor=InProcessExecutor())
    sample = next(iter_samples(str(run)))
    # the render, smoothed (a 4-sample path trace at 64 px is noise that no resampling keeps)
    rgb = np.clip(sample.passes["rgb"].astype(np.float64), 0, 1)
    for _ in range(2):
        rgb = np.pad(rgb, ((0, 0), (1, 1), (1, 1), (0, 0)), mode="edge")
        rgb = (rgb[:, :-2] + 2 * rgb[:, 1:-1] + rgb[:, 2:]) / 4
        rgb = (rgb[:, :, :-2] + 2 * rgb[:, :, 1:-1] + rgb[:, :, 2:]) / 4
    T, H, W = rgb.shape[:3]
    Kc = sample.intrinsics[0].astype(np.float64)
    cam = Camera(w=4 * W, h=4 * H, fx=4 * Kc[0, 0], fy=4 * Kc[1, 1], cx=4 * Kc[0, 2], cy=4 * Kc[1, 2], **DIST)

    c2w = [m.astype(np.float64) for m in sample.c2w]
    folder = tmp_path / "scene"
    write_scene(folder, cam, c2w, [rendered_frame(rgb[t], Kc, cam) for t in range(T)])
    scene = load_scene(folder, covers=(H, W))
    clip = segment_clip(scene, 0, T, 1, H, W)
    assert np.allclose(clip.K[0], Kc, atol=1e-4)  # same size, same camera: the render's own K
    assert np.array_equal(clip.c2w, sample.c2w)
    inner = (slice(None), slice(3, -3), slice(3, -3))

    def psnr(a, b):
        return 10 * np.log10(1.0 / np.mean((a[inner] - b[inner]) ** 2))

    got = psnr(clip.rgb.astype(np.float64), rgb)
    raw = psnr(np.stack([read_frame(f.path) for f in scene.frames]).astype(np.float64), rgb)
    assert got > 38 and got > raw + 5, (got, raw)  # measured: 43.4 and 36.1 dB


def test_what_quarantines_a_scene(tmp_path):
    cam = Camera(w=320, h=240, fx=260.0, fy=260.0, cx=160.0, cy=120.0, **DIST)
    frame = distorted_frame(cam, 4, pattern)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(SceneError, match="no transforms.json"):
        load_scene(empty)
    bad = tmp_path / "bad"
    write_scene(bad, cam, orbit(3), [frame] * 3)
    (bad / "transforms.json").write_text("{not json")
    with pytest.raises(SceneError, match="cannot be read"):
        load_scene(bad)
    gone = tmp_path / "gone"
    write_scene(gone, cam, orbit(3), [frame] * 3)
    (gone / "images_4" / "frame_00002.png").unlink()
    with pytest.raises(SceneError, match="1 of 3 frames missing.*frame_00002.png"):
        load_scene(gone)
    corrupt = tmp_path / "corrupt"
    write_scene(corrupt, cam, orbit(3), [frame] * 3)
    (corrupt / "images_4" / "frame_00003.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 40)
    s = load_scene(corrupt, covers=(48, 64))
    with pytest.raises(SceneError, match="frame_00003.png cannot be decoded"):
        segment_clip(s, 0, 3, 1, 48, 64)
    small = tmp_path / "small"
    write_scene(small, cam, orbit(2), [frame[:40, :50]] * 2)  # not 320x240 / 4
    with pytest.raises(SceneError, match="is 50x40, but transforms.json's 320x240 / 4 is 80x60"):
        segment_clip(load_scene(small, covers=(48, 64)), 0, 2, 1, 48, 64)
    nan = tmp_path / "nan"
    write_scene(nan, cam, [np.full((4, 4), np.nan)], [frame])
    with pytest.raises(SceneError, match="non-finite"):
        load_scene(nan)
