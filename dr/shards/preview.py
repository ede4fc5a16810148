"""Previews of samples for people: contact sheets, animated tile grids and a static HTML gallery.

- ``contact_sheet``: a row per pass (display views, then env_ldr and env_log at the frame's size),
  a column per frame, for up to a few evenly spaced frames.
- ``animation_frames``: every frame of a clip as a grid of tiles (rgb | normal | basecolor |
  roughness | metallic | depth | env_ldr by default), each tile scaled to at most ``tile`` pixels on
  its longer side, with the pass names above the tiles and a bar under them that shows the frame's
  position in the clip; ``write_animation`` saves it as an animated PNG (APNG: plays in every
  current browser, and opens as a still image elsewhere).
- ``write_previews``: both for each clip of a stream of samples, plus ``index.html`` beside them.

Display views are those of dr.shards.views: rgb exposure-normalised per clip and sRGB-encoded,
materials as stored, normals (n + 1) / 2, depth near bright / far dark over the clip's 2 % / 98 %
quantiles (background dark). Every file is written whole (temp file, then rename).
"""

from __future__ import annotations

import html
import itertools
import os
from collections.abc import Iterable
from pathlib import Path
from urllib.parse import quote

import numpy as np

from dr.shards import views
from dr.shards.reader import Sample

ROWS = ("rgb", "basecolor", "roughness", "metallic", "normal", "depth", "mask", "env_ldr", "env_log")
ANIM_TILES = ("rgb", "normal", "basecolor", "roughness", "metallic", "depth", "env_ldr")
ANIM_COLUMNS = 4
LABEL_H = 14  # pixels of the name strip above each row of tiles
BAR_H = 4  # pixels of the position bar under the grid
SHEET_SUFFIX = ".png"
ANIM_SUFFIX = ".anim.png"
INDEX_NAME = "index.html"
STYLE = ("<style>body{font-family:system-ui,sans-serif;background:#181818;color:#ddd;margin:1.5em}"
         "section{border-top:1px solid #333;padding:.5em 0 1.5em}h2{font-family:monospace;margin:.3em 0}"
         "figure{margin:.6em 0}img{max-width:100%;height:auto;background:#000}"
         "figcaption,.facts{color:#999;font-size:.9em}a{color:#8cf}</style>")


def _frames(n: int, max_frames: int) -> list[int]:
    if n <= max_frames:
        return list(range(n))
    return sorted({int(round(x)) for x in np.linspace(0, n - 1, max_frames)})


def display_view(sample: Sample, name: str) -> np.ndarray | None:
    """(T, H, W, 3) float32 in [0, 1]: the display view of one pass (see the module docstring), or
    None if the sample lacks what it needs. Not the env encodings (see ``Sample.env_encodings``)."""
    p = sample.passes
    mask = p.get("mask")
    if name == "rgb" and "rgb" in p:
        return views.rgb_display(p["rgb"])
    if name in ("basecolor", "roughness", "metallic") and name in p:
        return views.to_unit(views.material_view(p[name]))
    if name == "normal" and "normal" in p:
        return views.to_unit(np.asarray(p["normal"], np.float32))
    if name == "depth" and "depth" in p and mask is not None:
        return views.to_unit(-views.depth_view(p["depth"], mask))  # near bright
    if name == "mask" and mask is not None:
        return np.repeat(np.asarray(mask, np.float32), 3, axis=-1)
    return None


def _has_env(sample: Sample) -> bool:
    return sample.env is not None and sample.cam_to_env is not None


def contact_sheet(sample: Sample, max_frames: int = 6) -> np.ndarray:
    """(rows * H, cols * W, 3) uint8: rows are the passes present (display views), then
    env_ldr and env_log at the frame's size; columns are up to ``max_frames`` frames."""
    T, H, W = sample.passes["rgb"].shape[:3]
    ts = _frames(T, max_frames)
    rows = []
    for name in ROWS:
        if name.startswith("env_"):
            if not _has_env(sample):
                continue
            row = [sample.env_encodings(t, H, W)[name] for t in ts]
        else:
            view = display_view(sample, name)
            if view is None:
                continue
            row = [view[t] for t in ts]
        rows.append(np.concatenate(row, axis=1))
    return views.to_uint8(np.concatenate(rows, axis=0))


def _save_atomic(path: Path, first, append: list | None = None, **params) -> Path:
    """Save a PIL image (and, for an animation, the frames after it) as PNG at ``path``, whole or
    not at all: a temporary file in the same folder, then a rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        if append:
            first.save(tmp, format="PNG", save_all=True, append_images=append, **params)
        else:
            first.save(tmp, format="PNG", **params)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def write_contact_sheet(sample: Sample, path: Path, max_frames: int = 6) -> Path:
    """``contact_sheet`` as a PNG file at ``path`` (written atomically); returns the path."""
    from PIL import Image

    return _save_atomic(Path(path), Image.fromarray(contact_sheet(sample, max_frames)))


def tile_size(h: int, w: int, tile: int) -> tuple[int, int]:
    """(th, tw): an h x w frame scaled so that its longer side is at most ``tile`` pixels (never up)."""
    s = min(1.0, tile / max(h, w))
    return max(1, round(h * s)), max(1, round(w * s))


def _shrink(frames_u8: np.ndarray, th: int, tw: int) -> np.ndarray:
    """(T, H, W, 3) uint8 -> (T, th, tw, 3) uint8, area-averaged."""
    from PIL import Image

    if frames_u8.shape[1:3] == (th, tw):
        return frames_u8
    return np.stack([np.asarray(Image.fromarray(f).resize((tw, th), Image.Resampling.BOX)) for f in frames_u8])


def animation_tiles(sample: Sample, names: Iterable[str] = ANIM_TILES, tile: int = 256) -> dict[str, np.ndarray]:
    """{name: (T, th, tw, 3) uint8} for the tiles of ``names`` the sample has, in that order. One
    pass's float view exists at a time, so memory stays near one clip's size."""
    T, H, W = sample.passes["rgb"].shape[:3]
    th, tw = tile_size(H, W, tile)
    out: dict[str, np.ndarray] = {}
    for name in names:
        if name.startswith("env_"):
            if not _has_env(sample):
                continue
            # encode at the tile's own size: the encoding is a function of the output grid
            out[name] = np.stack([views.to_uint8(sample.env_encodings(t, th, tw)[name]) for t in range(T)])
        else:
            view = display_view(sample, name)
            if view is None:
                continue
            out[name] = _shrink(views.to_uint8(view), th, tw)
            del view
    return out


def animation_frames(sample: Sample, names: Iterable[str] = ANIM_TILES, tile: int = 256,
                     columns: int = ANIM_COLUMNS) -> list[np.ndarray]:
    """Every frame of the clip as one uint8 image: the tiles of ``animation_tiles`` in a grid of
    ``columns`` columns, each row under a strip with the tiles' names, and under the grid a bar
    whose length is the frame's position in the clip (so no two frames are alike and an APNG
    writer keeps them all)."""
    from PIL import Image, ImageDraw

    tiles = animation_tiles(sample, names, tile)
    if not tiles:
        raise ValueError(f"sample {sample.key} has none of the passes {', '.join(names)}")
    names = list(tiles)
    T, th, tw = next(iter(tiles.values())).shape[:3]
    cols = max(1, min(columns, len(names)))
    rows = -(-len(names) // cols)
    gw, gh = cols * tw, rows * (LABEL_H + th) + BAR_H
    base = Image.new("RGB", (gw, gh), (16, 16, 16))
    draw = ImageDraw.Draw(base)
    for k, name in enumerate(names):
        r, c = divmod(k, cols)
        draw.text((c * tw + 3, r * (LABEL_H + th) + 1), name, fill=(220, 220, 220))
    base_arr = np.asarray(base).copy()
    frames = []
    for t in range(T):
        img = base_arr.copy()
        for k, name in enumerate(names):
            r, c = divmod(k, cols)
            y = r * (LABEL_H + th) + LABEL_H
            img[y:y + th, c * tw:(c + 1) * tw] = tiles[name][t]
        img[gh - BAR_H:, :max(1, round(gw * (t + 1) / T))] = 200
        frames.append(img)
    return frames


def write_animation(sample: Sample, path: Path, names: Iterable[str] = ANIM_TILES, tile: int = 256,
                    columns: int = ANIM_COLUMNS, fps: float | None = None) -> Path:
    """``animation_frames`` as an animated PNG at ``path`` (written atomically), looping, at
    ``fps`` frames per second (default: the clip's fps from its metadata, else 12)."""
    from PIL import Image

    frames = [Image.fromarray(f) for f in animation_frames(sample, names, tile, columns)]
    fps = float(fps or sample.meta.get("fps") or 12)
    ms = max(10, round(1000.0 / fps))
    if len(frames) == 1:
        return _save_atomic(Path(path), frames[0])
    return _save_atomic(Path(path), frames[0], frames[1:], duration=ms, loop=0)


def _facts(meta: dict) -> list[str]:
    """Short human facts of a clip from its metadata: frames, size, fps, source, device, samples."""
    facts = []
    if "frames" in meta:
        facts.append(f"{meta['frames']} frames")
    if "width" in meta and "height" in meta:
        facts.append(f"{meta['width']}\u00d7{meta['height']}")
    if meta.get("fps"):
        facts.append(f"{meta['fps']} fps")
    if meta.get("source"):
        facts.append(str(meta["source"]))
    r = meta.get("renderer") or {}
    if r.get("device"):
        names = ", ".join(r.get("device_names") or [])
        facts.append(f"device {r['device']}" + (f" ({names})" if names else ""))
    if r.get("samples") is not None:
        facts.append(f"{r['samples']} samples")
    if r.get("denoiser"):
        facts.append(f"denoiser {r['denoiser']}")
    return facts


def gallery_html(entries: list[dict], title: str) -> str:
    """A static page: one section per entry ({'key', 'meta', 'anim', 'sheet'}; the last two are
    file names relative to the page). No scripts, no external resources; all text escaped."""
    esc = html.escape
    legend = " | ".join(ANIM_TILES)
    rows = ", ".join(ROWS)
    parts = [
        "<!doctype html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{esc(title)}</title>",
        STYLE,
        "</head><body>",
        f"<h1>{esc(title)}</h1>",
        (f"<p>{len(entries)} clip{'s' if len(entries) != 1 else ''}. Animated tiles: {esc(legend)}. "
         f"Contact sheet rows: {esc(rows)} (those present); columns are evenly spaced frames.</p>"),
        "<nav><p>" + " ".join(f'<a href="#{quote(e["key"])}">{esc(e["key"])}</a>' for e in entries) + "</p></nav>",
    ]
    for e in entries:
        key = e["key"]
        facts = " \u00b7 ".join(_facts(e.get("meta") or {}))
        parts += [
            f'<section id="{esc(key)}">',
            f"<h2>{esc(key)}</h2>",
            f'<p class="facts">{esc(facts)}</p>',
            (f'<figure><img src="{quote(e["anim"])}" alt="{esc(f"animated preview of {key}")}">'
             f"<figcaption>{esc(legend)}</figcaption></figure>"),
            (f'<figure><img src="{quote(e["sheet"])}" alt="{esc(f"contact sheet of {key}")}">'
             "<figcaption>contact sheet</figcaption></figure>"),
            "</section>",
        ]
    parts.append("</body></html>\n")
    return "\n".join(parts)


def write_previews(samples: Iterable[Sample], out: Path, frames: int = 6, max_clips: int | None = None,
                   tile: int = 256, title: str = "dr-data preview", on_clip=None) -> list[dict]:
    """For each sample (at most ``max_clips``): ``out/<clip>.png`` (contact sheet of ``frames``
    frames) and ``out/<clip>.anim.png`` (animated tiles of at most ``tile`` pixels), and after each
    clip ``out/index.html`` listing the clips done so far. Samples are consumed one at a time.
    ``on_clip(entry)`` is called after each clip. Returns the entries {'key', 'meta', 'sheet', 'anim'}."""
    from dr.files import write_text_atomic

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    entries: list[dict] = []
    if max_clips is not None:
        samples = itertools.islice(samples, max_clips)  # the next clip is not even read
    for sample in samples:
        sheet = write_contact_sheet(sample, out / f"{sample.key}{SHEET_SUFFIX}", frames)
        anim = write_animation(sample, out / f"{sample.key}{ANIM_SUFFIX}", tile=tile)
        entry = {"key": sample.key, "meta": sample.meta, "sheet": sheet.name, "anim": anim.name}
        entries.append(entry)
        write_text_atomic(out / INDEX_NAME, gallery_html(entries, title))
        if on_clip is not None:
            on_clip(entry)
    return entries
