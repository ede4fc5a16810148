"""DL3DV-style scene folders in, pinhole clips out (DESIGN section 2, "Real clips").

A scene is a folder with a nerfstudio ``transforms.json`` (camera_model OPENCV: fl_x, fl_y, cx,
cy, w, h at full resolution, k1, k2, p1, p2; frames[].file_path ``images/frame_XXXXX.png`` and
transform_matrix, camera-to-world with OpenGL camera axes) and one or more of images/,
images_2/, images_4/, images_8/ (the number divides w x h; the intrinsics scale with it). DL3DV's
own nesting (``<batch>/<hash>/``, ``colmap/transforms.json`` in some releases) is found below
the folder given.

A clip is T frames of a scene at a frame stride (a segment; frames in file-name order); a scene
gives ``count`` segments spread evenly over it. Each frame is decoded from sRGB to linear,
undistorted to the pinhole camera with the same focal lengths and centre, scaled to cover H x W
and centre-cropped, all in one resampling (bilinear, in linear light); K is that pinhole K after
the scale and crop. c2w is the transform_matrix as given (the source's world frame).

Pixel coordinates follow DESIGN: pixel centres at +0.5 (as COLMAP's and so nerfstudio's
intrinsics are), so scaling an image by s scales fx, fy, cx, cy by s.

What is wrong with a scene (unreadable transforms, missing or corrupt frames, frames whose size
does not match, too few frames for one clip) is a SceneError with a one-line reason: the scene
is quarantined, the run goes on.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dr.labeling.resample import bilinear
from dr.srgb import srgb_to_linear

TRANSFORMS = ("transforms.json", "colmap/transforms.json")
IMAGE_DIRS = {"images": 1, "images_2": 2, "images_4": 4, "images_8": 8}


class SceneError(Exception):
    """The scene cannot give clips; ``str(e)`` is the reason (one line)."""


@dataclass(frozen=True)
class Camera:
    """OPENCV camera at full resolution: size, focal lengths, centre (pixel centres at +0.5) and
    distortion (k1, k2 radial, p1, p2 tangential)."""

    w: int
    h: int
    fx: float
    fy: float
    cx: float
    cy: float
    k1: float = 0.0
    k2: float = 0.0
    p1: float = 0.0
    p2: float = 0.0

    def K(self, scale: float = 1.0) -> np.ndarray:
        return np.array([[self.fx * scale, 0.0, self.cx * scale], [0.0, self.fy * scale, self.cy * scale],
                         [0.0, 0.0, 1.0]])

    def distort(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """OpenCV's model on normalised pinhole coordinates: the distorted ones."""
        r2 = x * x + y * y
        radial = 1.0 + self.k1 * r2 + self.k2 * r2 * r2
        xd = x * radial + 2.0 * self.p1 * x * y + self.p2 * (r2 + 2.0 * x * x)
        yd = y * radial + self.p1 * (r2 + 2.0 * y * y) + 2.0 * self.p2 * x * y
        return xd, yd


@dataclass(frozen=True)
class Frame:
    name: str  # the file name (frame_00001.png)
    path: Path  # in the image folder used
    c2w: np.ndarray  # (4, 4), OpenGL camera axes, the source's world


@dataclass(frozen=True)
class Scene:
    id: str  # the folder's path below the root given, '/'-separated
    folder: Path
    camera: Camera
    image_dir: Path
    factor: int  # the image folder's downscale of w x h
    frames: tuple[Frame, ...]

    @property
    def portrait(self) -> bool:
        return self.camera.h > self.camera.w


def find_scenes(root: str | Path) -> list[Path]:
    """Every scene folder below ``root`` (itself included): one holding transforms.json or
    colmap/transforms.json, in path order. Folders inside a scene are not searched."""
    root = Path(root)
    found: list[Path] = []

    def walk(d: Path) -> None:
        if any((d / t).is_file() for t in TRANSFORMS):
            found.append(d)
            return
        for sub in sorted(p for p in d.iterdir() if p.is_dir() and not p.name.startswith(".")):
            walk(sub)

    walk(root)
    return found


def _num(meta: dict, key: str, default=None) -> float:
    v = meta.get(key, default)
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not np.isfinite(v):
        raise SceneError(f"transforms.json: {key} is {v!r}, expected a number")
    return float(v)


def _frame_key(name: str) -> tuple:
    """File-name order, numbers compared as numbers (frame_9 before frame_10)."""
    return tuple(int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name))


def load_scene(folder: str | Path, root: str | Path | None = None, covers: tuple[int, int] | None = None) -> Scene:
    """The scene in ``folder`` (id relative to ``root``). Its image folder: the most downscaled
    one whose frames still cover ``covers`` = (H, W) at the clip's scale (else the largest there
    is). SceneError when the transforms are unusable or a frame file is missing."""
    folder = Path(folder)
    path = next((folder / t for t in TRANSFORMS if (folder / t).is_file()), None)
    if path is None:
        raise SceneError("no transforms.json (nor colmap/transforms.json)")
    try:
        meta = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise SceneError(f"{path.name} cannot be read: {type(e).__name__}: {' '.join(str(e).split())[:150]}") from None
    if not isinstance(meta, dict) or not isinstance(meta.get("frames"), list):
        raise SceneError("transforms.json holds no frames list")
    model = meta.get("camera_model", "OPENCV")
    if model not in ("OPENCV", "PINHOLE", "SIMPLE_PINHOLE"):
        raise SceneError(f"transforms.json: camera_model {model!r} is not supported (OPENCV, PINHOLE)")
    cam = Camera(w=int(_num(meta, "w")), h=int(_num(meta, "h")), fx=_num(meta, "fl_x"),
                 fy=_num(meta, "fl_y", meta.get("fl_x")), cx=_num(meta, "cx"), cy=_num(meta, "cy"),
                 **{k: _num(meta, k, 0.0) for k in ("k1", "k2", "p1", "p2")})
    if cam.w <= 0 or cam.h <= 0 or cam.fx <= 0 or cam.fy <= 0:
        raise SceneError(f"transforms.json: w, h, fl_x, fl_y must be positive (got {cam.w}, {cam.h}, {cam.fx}, {cam.fy})")
    base = path.parent if path.parent.name != "colmap" else folder
    dirs = sorted(((f, base / d) for d, f in IMAGE_DIRS.items() if (base / d).is_dir()), reverse=True)
    if not dirs:
        raise SceneError(f"none of {', '.join(IMAGE_DIRS)} is there")
    factor, image_dir = dirs[-1]  # the least downscaled
    if covers is not None:
        H, W = covers
        fitting = [(f, d) for f, d in dirs if cam.w / f >= W and cam.h / f >= H]
        if fitting:
            factor, image_dir = fitting[0]  # the most downscaled that still covers
    frames = []
    for i, fr in enumerate(meta["frames"]):
        try:
            name = Path(str(fr["file_path"])).name
            c2w = np.asarray(fr["transform_matrix"], dtype=np.float64)
        except (KeyError, TypeError, ValueError):
            raise SceneError(f"transforms.json: frame {i} has no file_path or transform_matrix") from None
        if c2w.shape == (3, 4):
            c2w = np.vstack([c2w, [0.0, 0.0, 0.0, 1.0]])
        if c2w.shape != (4, 4) or not np.isfinite(c2w).all():
            raise SceneError(f"transforms.json: frame {name} has a transform_matrix of shape {c2w.shape} or non-finite values")
        frames.append(Frame(name, image_dir / name, c2w))
    frames.sort(key=lambda f: _frame_key(f.name))
    missing = [f.name for f in frames if not f.path.is_file()]
    if missing:
        raise SceneError(f"{len(missing)} of {len(frames)} frames missing from {image_dir.name}/ (first: {missing[0]})")
    ident = folder.relative_to(root).as_posix() if root is not None and folder != Path(root) else folder.name
    return Scene(ident, folder, cam, image_dir, factor, tuple(frames))


def plan_segments(n_frames: int, frames: int, stride: int, count: int) -> list[int]:
    """The first frame of each of ``count`` segments of ``frames`` frames at ``stride``, spread
    evenly from the first frame to the last (fewer when the scene has fewer distinct starts).
    SceneError when not even one segment fits."""
    span = (frames - 1) * stride + 1
    if n_frames < span:
        raise SceneError(f"{n_frames} frames, fewer than one clip needs ({frames} frames at stride {stride}: {span})")
    last = n_frames - span
    starts = np.round(np.linspace(0, last, count)).astype(int) if count > 1 else np.array([last // 2])
    return sorted(set(int(s) for s in starts))


def read_frame(path: Path) -> np.ndarray:
    """(h, w, 3) linear float32 from an 8- or 16-bit sRGB PNG/JPEG (alpha dropped). SceneError
    when it cannot be decoded."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            im.load()
            if im.mode in ("I;16", "I;16B", "I"):
                a = np.asarray(im, dtype=np.float64) / 65535.0
                a = np.repeat(a[..., None], 3, axis=-1)
            else:
                a = np.asarray(im.convert("RGB"), dtype=np.float64) / 255.0
    except (OSError, ValueError, SyntaxError) as e:
        raise SceneError(f"frame {path.name} cannot be decoded: {type(e).__name__}: {' '.join(str(e).split())[:120]}") from None
    return srgb_to_linear(a).astype(np.float32)


def output_K(cam: Camera, factor: int, H: int, W: int) -> tuple[np.ndarray, float]:
    """(K of the H x W output, scale from the image folder's frames): the pinhole camera with the
    source's focal lengths and centre, scaled to cover H x W and centre-cropped."""
    wf, hf = cam.w / factor, cam.h / factor
    s = max(W / wf, H / hf)
    K = cam.K(s / factor)
    K[0, 2] -= (wf * s - W) / 2.0
    K[1, 2] -= (hf * s - H) / 2.0
    return K, s


def undistort(image: np.ndarray, cam: Camera, K_out: np.ndarray, H: int, W: int) -> np.ndarray:
    """The (H, W, C) pinhole view ``K_out`` of ``image`` (a frame of any image folder: its
    intrinsics are the camera's scaled by its size over w x h): each output pixel's ray is
    distorted by the camera's model, found in the frame and sampled bilinearly (edges clamped)."""
    v, u = np.meshgrid(np.arange(H) + 0.5, np.arange(W) + 0.5, indexing="ij")
    x = (u - K_out[0, 2]) / K_out[0, 0]
    y = (v - K_out[1, 2]) / K_out[1, 1]
    xd, yd = cam.distort(x, y)
    h, w = image.shape[:2]
    ax, ay = w / cam.w, h / cam.h
    # continuous source coordinates, pixel centres at +0.5
    sx = cam.fx * ax * xd + cam.cx * ax
    sy = cam.fy * ay * yd + cam.cy * ay
    return bilinear(image, sx, sy).astype(image.dtype)


@dataclass
class Clip:
    """One segment as a clip: linear rgb (T, H, W, 3) float16, c2w (T, 4, 4), K (T, 3, 3)
    float32, and the frame names it came from."""

    scene: str
    start: int
    rgb: np.ndarray
    c2w: np.ndarray
    K: np.ndarray
    frames: list[str]


def segment_clip(scene: Scene, start: int, frames: int, stride: int, H: int, W: int) -> Clip:
    """Frames start, start + stride, ... of ``scene`` as an H x W pinhole clip. SceneError when a
    frame is corrupt or not the size the transforms and the image folder say."""
    K, _ = output_K(scene.camera, scene.factor, H, W)
    want = (round(scene.camera.h / scene.factor), round(scene.camera.w / scene.factor))
    rgb, c2w, names = [], [], []
    for t in range(frames):
        f = scene.frames[start + t * stride]
        img = read_frame(f.path)
        if abs(img.shape[0] - want[0]) > 1 or abs(img.shape[1] - want[1]) > 1:
            raise SceneError(f"frame {f.name} is {img.shape[1]}x{img.shape[0]}, but transforms.json's "
                             f"{scene.camera.w}x{scene.camera.h} / {scene.factor} is {want[1]}x{want[0]}")
        rgb.append(undistort(img, scene.camera, K, H, W))
        c2w.append(f.c2w)
        names.append(f.name)
    return Clip(scene.id, start, np.clip(np.stack(rgb), 0, 65504).astype(np.float16),
                np.stack(c2w).astype(np.float32), np.repeat(K[None].astype(np.float32), frames, axis=0), names)
