"""VAE latents of a run's passes, cached beside its shards (``dr-train cache-latents``).

Training encodes six passes per clip through the frozen VAE at every step; the cache does it once.
For a run whose shards are in ``R/shards/`` the cache of a VAE and a training size is
``R/latents/<vae id>-<H>x<W>/``: one safetensors file per shard (``<shard>.safetensors``, tensors
``<clip id>/<pass>`` of shape (T, 4, h, w), float16, already multiplied by the VAE's scaling
factor) and ``cache.json``, written last, which lists the shards and their clips.

What is encoded is every frame of the clip resized so it covers the training size, as the pixel
path resizes it; the training view then takes its frame window and its crop from the latents (the
crop offset rounded down to the VAE's downsampling factor). The VAE encodes each frame alone, so a
window of cached frames is what encoding the window would give; a crop of the latents differs from
encoding the crop only near its border (the pixel path is exact; where the training size equals
the covering size, as for square clips at a square size, there is no crop at all).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np
import torch

from dr.files import write_bytes_atomic, write_text_atomic
from dr.shards.reader import Sample, iter_shard, shard_entries

LATENT_PASSES = ("rgb", "basecolor", "normal", "depth", "roughness", "metallic")
CACHE_JSON = "cache.json"
VERSION = 1


def vae_id(vae) -> str:
    """16 hex digits of sha256 over the VAE's weights and scaling factor: a cache is only read
    with the VAE that made it."""
    h = hashlib.sha256(repr(float(vae.config.scaling_factor)).encode())
    for k, v in sorted(vae.state_dict().items()):
        h.update(k.encode())
        h.update(v.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def downsampling(vae) -> int:
    return 2 ** (len(vae.config.block_out_channels) - 1)


def cover_size(h0: int, w0: int, height: int, width: int) -> tuple[int, int]:
    """The size a (h0, w0) frame is resized to so that it covers height x width (aspect kept)."""
    scale = max(height / h0, width / w0)
    return max(height, round(h0 * scale)), max(width, round(w0 * scale))


def shards_folder(source: str) -> Path | None:
    """The local folder holding a source's shards (None for a bare shard or a remote URL)."""
    entries = shard_entries(source)
    if not entries or "://" in entries[0][0] or str(source).endswith(".tar"):
        return None
    return Path(entries[0][0]).parent


def cache_folder(source: str, vid: str, height: int, width: int) -> Path | None:
    shards = shards_folder(source)
    return None if shards is None else shards.parent / "latents" / f"{vid}-{height}x{width}"


def find_cache(source: str, vid: str, height: int, width: int) -> dict[str, str] | None:
    """{shard url: its latents file} where a complete cache of this VAE and size covers every
    shard of ``source``; else None."""
    folder = cache_folder(source, vid, height, width)
    if folder is None or not (folder / CACHE_JSON).is_file():
        return None
    info = json.loads((folder / CACHE_JSON).read_text())
    if info.get("version") != VERSION or info.get("vae") != vid or [info.get("height"), info.get("width")] != [height, width]:
        return None
    out = {}
    for url, _ in shard_entries(source):
        name = url.rsplit("/", 1)[1]
        f = folder / (name.removesuffix(".tar") + ".safetensors")
        if name not in info["shards"] or not f.is_file():
            return None
        out[url] = str(f)
    return out


def caches_for(sources: Sequence[str], vae, height: int, width: int) -> tuple[list[str | None], dict[str, str]]:
    """(each source's cache folder, or None where it has none; {shard url: latents file} of them all)."""
    vid = vae_id(vae)
    folders, files = [], {}
    for src in sources:
        found = find_cache(src, vid, height, width)
        folders.append(None if found is None else str(cache_folder(src, vid, height, width)))
        files.update(found or {})
    return folders, files


def pass_frames(sample: Sample, name: str, height: int, width: int) -> torch.Tensor:
    """(T, 3, rh, rw) in [-1, 1]: a pass's training view over every frame, resized to cover the size."""
    from dr.train.data import pass_view, resize_to_cover

    x = pass_view(sample.passes, name)
    t = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)).permute(0, 3, 1, 2)
    return resize_to_cover(t, height, width)


@torch.no_grad()
def encode_clip(vae, sample: Sample, height: int, width: int, chunk: int = 16) -> dict[str, torch.Tensor]:
    from dr.models.pipelines import encode_frames

    out = {}
    for name in LATENT_PASSES:
        frames = pass_frames(sample, name, height, width).to(vae.device)
        out[name] = encode_frames(vae, frames[None], chunk)[0].to(torch.float16).cpu()
    return out


def write_cache(sources: Sequence[str], vae, height: int, width: int,
                on_clip: Callable[[], None] | None = None) -> list[Path]:
    """Encode every clip of ``sources`` into their caches (module doc); shards already cached are
    kept (a stopped run continues). Returns the cache folders."""
    from safetensors.torch import save

    from dr.train.data import READ_PASSES

    f = downsampling(vae)
    if height % f or width % f:
        raise ValueError(f"the training size {height}x{width} is not a multiple of the VAE's downsampling ({f})")
    vid = vae_id(vae)
    folders = []
    for src in sources:
        folder = cache_folder(src, vid, height, width)
        if folder is None:
            raise ValueError(f"{src}: latents are cached beside local shards only (this source is a remote URL "
                             f"or a single shard)")
        folder.mkdir(parents=True, exist_ok=True)
        shards = {}
        for url, _ in shard_entries(src):
            name = url.rsplit("/", 1)[1]
            target = folder / (name.removesuffix(".tar") + ".safetensors")
            keys = []
            if target.is_file():
                from safetensors import safe_open

                with safe_open(str(target), "pt") as g:
                    keys = sorted({k.rsplit("/", 1)[0] for k in g.keys()})
                for _ in keys:
                    if on_clip:
                        on_clip()
            else:
                tensors = {}
                for sample in iter_shard(url, passes=READ_PASSES, with_env=False):
                    for p, z in encode_clip(vae, sample, height, width).items():
                        tensors[f"{sample.key}/{p}"] = z.contiguous()
                    keys.append(sample.key)
                    if on_clip:
                        on_clip()
                write_bytes_atomic(target, save(tensors, metadata={"vae": vid, "height": str(height),
                                                                   "width": str(width)}))
            shards[name] = keys
        write_text_atomic(folder / CACHE_JSON, json.dumps(
            {"version": VERSION, "vae": vid, "height": height, "width": width, "downsampling": f,
             "passes": list(LATENT_PASSES), "shards": shards}, indent=1, sort_keys=True) + "\n")
        folders.append(folder)
    return folders


class CachedClip:
    """A clip's cached latents {pass: (T, 4, h, w)} and, for the forward renderer, its env map."""

    def __init__(self, key: str, latents: dict[str, torch.Tensor], env: Sample | None):
        self.key, self.latents, self.env = key, latents, env

    @property
    def frames(self) -> int:
        return int(self.latents["rgb"].shape[0])


def read_cached(url: str, file: str, keys: list[str], with_env: bool) -> Iterator[CachedClip]:
    """The cached clips ``keys`` of one shard, in that order."""
    from safetensors import safe_open

    envs = {}
    if with_env:
        envs = {s.key: s for s in iter_shard(url, passes=(), with_env=True, keys=set(keys))}
    with safe_open(file, "pt") as g:
        names = set(g.keys())
        for key in keys:
            if f"{key}/rgb" not in names:
                raise ValueError(f"{file} lacks clip {key} that its shard holds: run `dr-train cache-latents` again")
            yield CachedClip(key, {p: g.get_tensor(f"{key}/{p}") for p in LATENT_PASSES}, envs.get(key))


def latent_view(clip: CachedClip, frames: int, height: int, width: int, factor: int, rng: np.random.Generator,
                env_size: tuple[int, int] | None) -> dict[str, torch.Tensor]:
    """A training view from cached latents: {'latent_<pass>': (T, 4, height/f, width/f) float32} and, with
    ``env_size``, 'env' as the pixel path gives it. The draws are the pixel path's (frame start, then the
    crop's top and left), so a clip gets the same window either way."""
    from dr.train.data import env_view

    total = clip.frames
    if total < frames:
        raise ValueError(f"clip {clip.key} has {total} frames; training takes {frames} (data.frames)")
    start = int(rng.integers(0, total - frames + 1))
    lh, lw = clip.latents["rgb"].shape[-2:]
    rh, rw = lh * factor, lw * factor
    top, left = int(rng.integers(0, rh - height + 1)) // factor, int(rng.integers(0, rw - width + 1)) // factor
    h, w = height // factor, width // factor
    res = {f"latent_{p}": z[start:start + frames, :, top:top + h, left:left + w].float().contiguous()
           for p, z in clip.latents.items()}
    if env_size is not None:
        res["env"] = env_view(clip.env, start, frames, env_size)
    return res
