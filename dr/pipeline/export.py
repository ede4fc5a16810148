"""Export a run's clips into the layout another code base reads (``dr-data export``).

Format ``diffusion-renderer``: what the official DiffusionRenderer loaders read
(nv-tlabs/diffusion-renderer, nv-tlabs/cosmos1-diffusion-renderer, nv-tlabs/cosmos-transfer1-diffusion-renderer):

    OUT/<clip>/<chunk:04d>.<frame:04d>.<pass>.png     pass: rgb basecolor metallic roughness normal depth
    OUT/<clip>/<chunk:04d>.<frame:04d>.env_ldr.png    and env_log: the lighting of that frame
    OUT/export.json                                   clips, source, settings, per-clip depth range

Their loaders group image files "webdataset"-style (everything before the first dot of the file name,
with its folder, is one video: ``<clip>/<chunk>``), pick a pass by ``.<pass>.`` in the name, sort
frames by name, read 8-bit images as x / 255 and feed x * 2 - 1 to the model. A chunk is a run of
consecutive frames (their inverse renderer splits long videos into chunks of the model's frame
count, frame numbers restarting at 0 in each chunk); by default a clip is one chunk, 0000.

Encodings (8-bit RGB PNG, 3 channels everywhere, as their loaders stack H x W x 3 images):
- rgb: dr.shards.views.rgb_display, one exposure per clip (99th percentile of luminance -> 0.9),
  clamped, sRGB: the loaders take display-referred LDR frames.
- basecolor: sRGB-encoded, as in the DiffusionRenderer data generator (nexuslrf/composition_rendering).
- roughness, metallic: the value as stored, repeated to 3 channels.
- normal: (n + 1) / 2 of the camera-space normal (OpenGL axes: +x right, +y up, +z to the viewer).
- depth: DESIGN section 2's view, (x + 1) / 2 of x in [-1, 1] by the clip's 2 % / 98 % quantiles of
  surface depth (near 0, far 1); background far (1), as their normalize_depth (bg_value=1.0) does.
- env_ldr / env_log: DESIGN section 2's encodings (Sample.env_encodings) at the frame's size, as the
  Cosmos loader builds them (the SVD model used 512 x 512: --env-size 512x512).
Background pixels of the other passes are what the shard holds (0; a zero normal becomes 128).

Format ``dl3dv``: each clip as a DL3DV-style scene that ``dr-data autolabel`` reads (DESIGN section 2,
"Real clips"): ``OUT/<clip>/transforms.json`` (nerfstudio, camera_model OPENCV with no distortion, the
clip's K and size, each frame's c2w as transform_matrix) and ``OUT/<clip>/images/frame_XXXXX.png``
(rgb as above: one exposure per clip, sRGB, 8-bit; images_2/, images_4/, images_8/ hold copies
shrunk by area averaging, down to 16 px, as DL3DV ships). Labelling synthetic clips this way gives labels
whose truth is known, pixel for pixel (the same camera, the same size).

Each clip is written into ``OUT/<clip>.partial/``, its record into ``OUT/.export/<clip>.json``, then
the folder is renamed to ``OUT/<clip>``: a clip folder is complete or absent, and running again skips
the complete ones (and replaces leftover ``.partial`` folders). ``export.json`` is rewritten from the
records at the end of every run.

The official scripts, as read in their code (nv-tlabs/diffusion-renderer at 8fcf005 and
nv-tlabs/cosmos1-diffusion-renderer at a164852, June 2025; README "Exporting for the official code"):
their inverse renderers group files by folder unless told the rgb frames' extension (``.rgb.png``);
SVD's forward renderer indexes exactly ``inference_n_frames`` (24) files per pass and chunk, with no
padding; Cosmos runs chunks of 57 frames (8n+1 accepted) and pads or cuts a chunk to that; both
forward renderers take their lighting from HDR files, never from env_ldr/env_log. ``TARGETS`` holds
the settings that fit each (``dr-data export --for svd|cosmos``): padded frames repeat the chunk's
last frame and are counted in export.json (``chunks[].padded``), so they can be dropped afterwards.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from dr.errors import UserError
from dr.files import write_text_atomic
from dr.shards import views
from dr.shards.reader import Sample, iter_shard, shard_urls
from dr.shards.stream import ShardFormatError, tar_keys
from dr.srgb import linear_to_srgb

FORMATS = ("diffusion-renderer", "dl3dv")
GBUFFER_PASSES = ("rgb", "basecolor", "metallic", "roughness", "normal", "depth")
ENV_PASSES = ("env_ldr", "env_log")
DEPTH_QUANTILES = (0.02, 0.98)
RECORDS_DIR = ".export"
SETTINGS_NAME = "settings.json"
EXPORT_NAME = "export.json"
PARTIAL_SUFFIX = ".partial"

ENCODING = {
    "rgb": "views.rgb_display: clip's 99th percentile of luminance -> 0.9 (one exposure per clip), clamp, sRGB",
    "basecolor": "sRGB-encoded base colour",
    "roughness": "value, 3 equal channels",
    "metallic": "value, 3 equal channels",
    "normal": "(n + 1) / 2, camera space, OpenGL axes (+x right, +y up, +z towards the viewer)",
    "depth": "(x + 1) / 2, x = clip(2 (d - near) / (far - near) - 1, -1, 1), near/far = the clip's 2%/98% "
             "quantiles of surface depth (see clips[].depth); background 1 (far)",
    "env_ldr": "srgb(clamp(reinhard(E), 0, 1)), E = env radiance on the camera-space grid of DESIGN.md section 2",
    "env_log": "srgb(clamp(log1p(E) / log1p(10000), 0, 1))",
    "png": "8-bit RGB; value v in [0, 1] stored as floor(255 v + 0.5)",
}


@dataclass(frozen=True)
class ExportSettings:
    """What decides the bytes of an export; an existing export is only resumed with the same."""

    format: str = "diffusion-renderer"
    chunk_frames: int = 0  # frames per chunk; 0: the whole clip is chunk 0000
    env_size: tuple[int, int] | None = None  # (h, w) of env_ldr/env_log; None: the frame's size
    pad_to: int = 0  # a chunk shorter than this is padded with copies of its last frame; 0: never

    def as_json(self) -> dict:
        d = asdict(self)
        d["env_size"] = list(self.env_size) if self.env_size else None
        if not self.pad_to:
            del d["pad_to"]  # as exports written before padding existed recorded it
        return d


# what the official scripts need (see the module docstring): SVD's forward renderer reads exactly
# its 24 frames per chunk (fewer: IndexError); the Cosmos model runs 57-frame chunks (it pads a
# shorter one itself and cuts a longer one to its first 57)
TARGETS = {
    "svd": {"chunk_frames": 24, "pad_to": 24, "env_size": (512, 512)},
    "cosmos": {"chunk_frames": 57, "pad_to": 0, "env_size": None},
}


@dataclass
class ExportResult:
    out: Path
    exported: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    clips: int = 0


# ---- pure encodings: arrays in, (..., 3) uint8 out -------------------------------------------

def depth_range(depth: np.ndarray, mask: np.ndarray, quantiles=DEPTH_QUANTILES) -> tuple[float, float] | None:
    """(near, far): the quantiles of depth over the surface pixels (mask 1), in the depth's units;
    None if no pixel is a surface."""
    d = np.asarray(depth, dtype=np.float32)
    surf = d[np.asarray(mask).astype(bool)]
    if surf.size == 0:
        return None
    near, far = np.quantile(surf, list(quantiles))
    return float(near), float(far)


def encode_depth(depth: np.ndarray, mask: np.ndarray, quantiles=DEPTH_QUANTILES) -> np.ndarray:
    """(T,H,W,1) depth -> (T,H,W,3) uint8 of (x + 1) / 2, x the training view of DESIGN section 2
    (views.depth_view): near 0, far 255, background 255."""
    return views.to_uint8(views.to_unit(views.depth_view(depth, mask, *quantiles)))


def encode_normal(normal: np.ndarray) -> np.ndarray:
    """(...,3) unit normals in [-1, 1] -> uint8 of (n + 1) / 2."""
    return views.to_uint8(views.to_unit(np.asarray(normal, np.float32)))


def encode_basecolor(basecolor: np.ndarray) -> np.ndarray:
    """(...,3) linear base colour in [0, 1] -> sRGB-encoded uint8."""
    return views.to_uint8(linear_to_srgb(np.clip(np.asarray(basecolor, np.float32), 0.0, 1.0)))


def encode_scalar(x: np.ndarray) -> np.ndarray:
    """(...,1) roughness or metallic in [0, 1] -> uint8 with the value in all 3 channels."""
    return views.to_uint8(np.repeat(np.asarray(x, np.float32), 3, axis=-1))


def encode_rgb(rgb: np.ndarray) -> np.ndarray:
    """(T,H,W,3) linear HDR radiance -> display uint8 (views.rgb_display: one exposure per clip)."""
    return views.to_uint8(views.rgb_display(rgb))


ENCODERS = {"rgb": encode_rgb, "basecolor": encode_basecolor, "metallic": encode_scalar, "roughness": encode_scalar,
            "normal": encode_normal}  # depth also needs the mask: encode_depth


def chunk_of(t: int, chunk_frames: int) -> tuple[int, int]:
    """(chunk, frame within the chunk) of clip frame t."""
    if chunk_frames <= 0:
        return 0, t
    return divmod(t, chunk_frames)


def file_name(chunk: int, frame: int, name: str) -> str:
    """'<chunk:04d>.<frame:04d>.<name>.png'"""
    return f"{chunk:04d}.{frame:04d}.{name}.png"


# ---- one clip ----------------------------------------------------------------------------------

def _clip_size(sample: Sample) -> tuple[int, int, int]:
    for a in sample.passes.values():
        return tuple(int(x) for x in a.shape[:3])  # type: ignore[return-value]
    raise ValueError(f"sample {sample.key} has no passes")


def _save_png(path: Path, arr: np.ndarray) -> None:
    from PIL import Image

    Image.fromarray(np.ascontiguousarray(arr)).save(path, format="PNG")


def export_scene(sample: Sample, dest: Path, threads: int = 4) -> dict:
    """Write one clip as a DL3DV-style scene into ``dest`` (module docstring) and return its record."""
    dest = Path(dest)
    (dest / "images").mkdir(parents=True, exist_ok=True)
    if "rgb" not in sample.passes or sample.c2w is None or sample.intrinsics is None:
        raise UserError(f"clip {sample.key} has no rgb or cameras: a DL3DV scene needs both")
    rgb = encode_rgb(sample.passes["rgb"])
    T, H, W = rgb.shape[:3]
    K = np.asarray(sample.intrinsics[0], dtype=np.float64)
    names = [f"frame_{t + 1:05d}.png" for t in range(T)]
    # DL3DV ships downscaled copies too; the reader takes the smallest that covers the clip size, so a
    # small clip is read from frames shrunk with area averaging, not sampled from full-size ones
    factors = [f for f in (1, 2, 4, 8) if f == 1 or (H % f == 0 and W % f == 0 and min(H, W) // f >= 16)]

    def write(t: int) -> None:
        import cv2

        for f in factors:
            d = dest / ("images" if f == 1 else f"images_{f}")
            d.mkdir(exist_ok=True)
            img = rgb[t] if f == 1 else cv2.resize(rgb[t], (W // f, H // f), interpolation=cv2.INTER_AREA)
            _save_png(d / names[t], img)

    with ThreadPoolExecutor(max(1, threads)) as pool:
        list(pool.map(write, range(T)))
    meta = {"camera_model": "OPENCV", "w": W, "h": H, "fl_x": K[0, 0], "fl_y": K[1, 1], "cx": K[0, 2],
            "cy": K[1, 2], "k1": 0.0, "k2": 0.0, "p1": 0.0, "p2": 0.0,
            "frames": [{"file_path": f"images/{n}", "transform_matrix": np.asarray(m, np.float64).tolist()}
                       for n, m in zip(names, sample.c2w)],
            "dr": {"clip": sample.key, "run_id": sample.meta.get("run_id"), "source": sample.meta.get("source")}}
    write_text_atomic(dest / "transforms.json", json.dumps(meta, indent=1) + "\n")
    return {"clip": sample.key, "run_id": sample.meta.get("run_id"), "source": sample.meta.get("source"),
            "frames": T, "height": H, "width": W, "passes": ["rgb"], "image_factors": factors,
            "files": T * len(factors) + 1}


def export_clip(sample: Sample, dest: Path, settings: ExportSettings = ExportSettings(), threads: int = 4) -> dict:
    """Write one clip's files into the folder ``dest`` (the layout of the module docstring) and
    return its record: size, chunks, passes written, env size, depth range (near/far, depth units)."""
    if settings.format == "dl3dv":
        return export_scene(sample, dest, threads)
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    p = sample.passes
    T, H, W = _clip_size(sample)
    mask = p.get("mask")
    if mask is None:
        mask = np.ones((T, H, W, 1), np.uint8)
    encoded = {name: encode_depth(p[name], mask) if name == "depth" else ENCODERS[name](p[name])
               for name in GBUFFER_PASSES if name in p}
    rng = depth_range(p["depth"], mask) if "depth" in p else None
    depth = None if rng is None else {"near": rng[0], "far": rng[1], "quantiles": list(DEPTH_QUANTILES),
                                      "units": sample.meta.get("depth_units")}
    with_env = sample.env is not None and sample.cam_to_env is not None
    eh, ew = settings.env_size or (H, W)

    per_chunk = settings.chunk_frames if settings.chunk_frames > 0 else T
    chunks = [(c, min(per_chunk, T - c * per_chunk)) for c in range(-(-T // per_chunk))]
    # (clip frame, chunk, frame in chunk) of every file set written: the clip's frames, then the
    # copies of a short chunk's last frame that pad it to settings.pad_to
    frames = [(t, *chunk_of(t, settings.chunk_frames)) for t in range(T)]
    for c, n in chunks:
        frames += [(c * per_chunk + n - 1, c, f) for f in range(n, settings.pad_to)]

    def write_frame(job: tuple[int, int, int]) -> int:
        t, c, f = job
        for name, arr in encoded.items():
            _save_png(dest / file_name(c, f, name), arr[t])
        n = len(encoded)
        if with_env:
            enc = sample.env_encodings(t, eh, ew)
            for name in ENV_PASSES:
                _save_png(dest / file_name(c, f, name), views.to_uint8(enc[name]))
            n += len(ENV_PASSES)
        return n

    with ThreadPoolExecutor(max(1, threads)) as pool:
        files = sum(pool.map(write_frame, frames))
    return {
        "clip": sample.key,
        "run_id": sample.meta.get("run_id"),
        "source": sample.meta.get("source"),
        "frames": T, "height": H, "width": W,
        "chunks": [{"chunk": c, "frames": n, **({"padded": settings.pad_to - n} if settings.pad_to > n else {})}
                   for c, n in chunks],
        "passes": list(encoded) + (list(ENV_PASSES) if with_env else []),
        "env_size": [eh, ew] if with_env else None,
        "depth": depth,
        "files": files,
    }


# ---- a run -------------------------------------------------------------------------------------

def source_shards(source: str) -> list[str]:
    """The shard URLs of a run folder, shards folder, index.json or shard .tar; UserError if none."""
    src = str(source)
    if "://" not in src and not Path(src).exists():
        raise UserError(f"{src!r} does not exist; give a run folder, its shards/ folder, index.json or a shard .tar")
    try:
        urls = shard_urls(src)
    except FileNotFoundError as e:
        raise UserError(f"{e}; give a run folder, its shards/ folder, index.json or a shard .tar") from None
    except (json.JSONDecodeError, KeyError, TypeError) as e:
        raise UserError(f"{src}: its shard index cannot be read ({type(e).__name__}: {e})") from None
    if not urls:
        raise UserError(f"{src}: the shard index lists no shards yet")
    return urls


def shard_keys(url: str) -> list[str]:
    """The sample keys of one shard, in order, from its tar headers only (no member is read)."""
    import fsspec

    try:
        with fsspec.open(url, "rb") as f:
            return tar_keys(f)
    except FileNotFoundError:
        raise UserError(f"{url}: listed in the shard index but not there") from None
    except ShardFormatError as e:
        raise UserError(f"{url}: not a readable shard ({e})") from None


def check_settings(out: Path, settings: ExportSettings) -> None:
    """Record ``settings`` in a new export folder; UserError if ``out`` was exported differently."""
    path = Path(out) / RECORDS_DIR / SETTINGS_NAME
    want = settings.as_json()
    if path.is_file():
        have = json.loads(path.read_text())
        if have != want:
            diff = ", ".join(f"{k} {have.get(k)!r} (now {want[k]!r})" for k in want if have.get(k) != want[k])
            raise UserError(f"{out} holds an export with other settings: {diff}; use the same options to resume, "
                            f"or another --out")
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(path, json.dumps(want, indent=1, sort_keys=True) + "\n")


def write_export_json(out: Path, source: str, settings: ExportSettings) -> Path:
    """OUT/export.json from the records of the complete clip folders (sorted by clip)."""
    out = Path(out)
    clips = []
    for rec in sorted((out / RECORDS_DIR).glob("*.json")):
        if rec.name == SETTINGS_NAME or not (out / rec.stem).is_dir():
            continue
        clips.append(json.loads(rec.read_text()))
    doc = {
        "format": settings.format,
        "layout": ("<clip>/transforms.json, <clip>/images/frame_XXXXX.png" if settings.format == "dl3dv"
                   else "<clip>/<chunk:04d>.<frame:04d>.<pass>.png"),
        "passes": ["rgb"] if settings.format == "dl3dv" else list(GBUFFER_PASSES) + list(ENV_PASSES),
        "source": str(source),
        "settings": settings.as_json(),
        "encoding": ENCODING,
        "clips": clips,
    }
    return write_text_atomic(out / EXPORT_NAME, json.dumps(doc, indent=1) + "\n")


def _samples(url: str, keys: set[str]) -> Iterator[Sample]:
    """The samples of one shard whose key is in ``keys`` (the others are passed over unread)."""
    try:
        yield from iter_shard(url, keys=keys)
    except ShardFormatError as e:
        raise UserError(f"{url}: not a readable shard ({e})") from None


@dataclass
class ExportPlan:
    """What an export will do: the shards with their keys, and the clips already complete in ``out``."""

    source: str
    out: Path
    settings: ExportSettings
    shards: list[tuple[str, list[str]]]
    done: set[str]

    @property
    def keys(self) -> list[str]:
        return [k for _, keys in self.shards for k in keys]

    @property
    def todo(self) -> list[str]:
        return [k for k in self.keys if k not in self.done]


def plan_export(source: str, out: Path, settings: ExportSettings = ExportSettings()) -> ExportPlan:
    """Check the format, the source and ``out`` (recording the settings in a new export) and list
    the clips; reads only the shards' tar headers. UserError for anything the user must change."""
    if settings.format not in FORMATS:
        raise UserError(f"--format {settings.format!r}: unknown; choose one of: {', '.join(FORMATS)}")
    urls = source_shards(source)
    out = Path(out)
    shards = [(url, shard_keys(url)) for url in urls]
    out.mkdir(parents=True, exist_ok=True)
    check_settings(out, settings)
    done = {k for _, keys in shards for k in keys if (out / k).is_dir()}
    return ExportPlan(str(source), out, settings, shards, done)


def run_export(plan: ExportPlan, threads: int = 4, on_clip: Callable[[dict], None] | None = None) -> ExportResult:
    """Export the clips of ``plan`` not yet done (see the module docstring), then write
    export.json. ``on_clip(record)`` is called after each clip."""
    out, settings = plan.out, plan.settings
    records = out / RECORDS_DIR
    result = ExportResult(out, skipped=[k for k in plan.keys if k in plan.done], clips=len(plan.keys))
    for url, keys in plan.shards:
        todo = {k for k in keys if k not in plan.done}
        if not todo:
            continue  # nothing left in this shard: it is not even read
        for sample in _samples(url, todo):
            partial = out / (sample.key + PARTIAL_SUFFIX)
            shutil.rmtree(partial, ignore_errors=True)
            record = export_clip(sample, partial, settings, threads)
            write_text_atomic(records / f"{sample.key}.json", json.dumps(record, indent=1) + "\n")
            os.replace(partial, out / sample.key)
            result.exported.append(sample.key)
            if on_clip is not None:
                on_clip(record)
    write_export_json(out, plan.source, settings)
    return result


def export_run(source: str, out: Path, settings: ExportSettings = ExportSettings(), threads: int = 4,
               on_clip: Callable[[dict], None] | None = None) -> ExportResult:
    """``run_export(plan_export(source, out, settings))``: export every clip of ``source`` (a run
    folder, shards folder, index.json or shard) into the folder ``out``, skipping complete ones."""
    return run_export(plan_export(source, out, settings), threads, on_clip)
