"""Streaming training data from shards (local paths or fsspec URLs).

``ClipDataset`` is a torch IterableDataset over the clips of one or more runs. Each epoch the
shards are put in a seeded order and dealt to the global data workers (rank x DataLoader worker),
a shard each in turn; with fewer shards than workers the clips are dealt instead (each worker then
decodes only its own). Each worker mixes its clips in a shuffle buffer and streams forever, epoch
after epoch. A clip's training view is drawn from (seed, epoch, clip id) alone: T frames from a
random start, resized so the frame covers the training size and randomly cropped, then DESIGN
section 2's views (normalised over the whole clip); env encodings are computed per frame at load.
Where ``dr-train cache-latents`` cached a shard's VAE latents (``latents``), its clips come from
the cache instead (dr.train.latent_cache): the same frame window, the crop from the latents.

Clips whose id hashes below ``holdout_fraction`` (``is_held_out``) are never trained on: they are
the evaluation set. The data position is exact: a worker that is told it already produced n clips
replays its schedule on clip ids alone, decodes only the clips still in its buffer, and continues
with the same clips, crops and order an uninterrupted run would have seen.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import IterableDataset, get_worker_info

from dr.shards import envmap, views
from dr.shards.reader import Sample, iter_shard, shard_entries
from dr.train.latent_cache import CachedClip, cover_size, latent_view, read_cached

GBUFFERS = ("basecolor", "normal", "depth", "roughness", "metallic")
READ_PASSES = ("rgb", *GBUFFERS, "mask")


def is_held_out(key: str, fraction: float) -> bool:
    """True for the clips of the evaluation set: sha256(clip id) below ``fraction`` of its range."""
    return int(hashlib.sha256(key.encode()).hexdigest()[:8], 16) < fraction * 2**32


@dataclass(frozen=True)
class Item:
    epoch: int
    url: str
    key: str


def list_clips(sources: Sequence[str]) -> list[tuple[str, list[str]]]:
    """(shard url, its clip ids) of every shard of every source, in index order; each index.json
    is read once."""
    import fsspec

    out = []
    indexes: dict[str, dict[str, list[str]]] = {}
    for src in sources:
        for url, _ in shard_entries(src):
            base, name = url.rsplit("/", 1)
            if base not in indexes:
                with fsspec.open(base + "/index.json", "rt") as f:
                    indexes[base] = {s["name"]: list(s["keys"]) for s in json.load(f)["shards"]}
            if name not in indexes[base]:
                raise ValueError(f"{url} is not in its index.json")
            out.append((url, indexes[base][name]))
    return out


def _rng(*words: int | str) -> np.random.Generator:
    ints = [int(hashlib.sha256(str(w).encode()).hexdigest()[:8], 16) if isinstance(w, str) else int(w) for w in words]
    return np.random.default_rng(np.random.SeedSequence(ints))


def pass_view(passes: dict[str, np.ndarray], name: str) -> np.ndarray:
    """DESIGN section 2's training view of one pass, (T, H, W, 3) in [-1, 1] (depth needs the mask)."""
    if name == "rgb":
        return views.rgb_display(passes["rgb"]) * 2.0 - 1.0
    if name in ("basecolor", "roughness", "metallic"):
        return views.material_view(passes[name])
    if name == "normal":
        return np.asarray(passes["normal"], np.float32)
    if name == "depth":
        return views.depth_view(passes["depth"], passes["mask"])
    raise KeyError(name)


def env_view(sample: Sample, start: int, frames: int, env_size: tuple[int, int]) -> torch.Tensor:
    """(T, 9, h, w) in [-1, 1]: env_ldr, env_log and env_nrm of frames start.. of the clip."""
    eh, ew = env_size
    enc = [envmap.encode_env(sample.env, sample.cam_to_env[start + i], eh, ew) for i in range(frames)]
    env = np.stack([np.concatenate([e["env_ldr"], e["env_log"], e["env_nrm"]], axis=-1) for e in enc])
    return torch.from_numpy(env * 2.0 - 1.0).permute(0, 3, 1, 2).contiguous()


def resize_to_cover(t: torch.Tensor, height: int, width: int, nearest: bool = False,
                    size: tuple[int, int] | None = None) -> torch.Tensor:
    """(T, C, h0, w0) resized (aspect kept) so that it covers height x width, or to ``size``: bilinear,
    antialiased when shrinking, or nearest (masks, metric depth)."""
    h0, w0 = t.shape[-2:]
    rh, rw = size or cover_size(h0, w0, height, width)
    if (rh, rw) == (h0, w0):
        return t
    if nearest:
        return torch.nn.functional.interpolate(t, size=(rh, rw), mode="nearest")
    return torch.nn.functional.interpolate(t, size=(rh, rw), mode="bilinear", align_corners=False,
                                           antialias=max(rh / h0, rw / w0) < 1)


def clip_view(sample: Sample, frames: int, height: int, width: int, rng: np.random.Generator,
              env_size: tuple[int, int] | None, zoom: float = 1.0, flip: bool = False) -> dict[str, torch.Tensor]:
    """One training view of a clip: {pass: (T, 3, H, W) in [-1, 1]}, 'mask' and 'depth_m' (planar depth in
    metres) (T, 1, H, W) and, with ``env_size`` (h, w), 'env' (T, 9, h, w) in [-1, 1].

    Augmentations (the inverse renderer's data.zoom and data.flip): the frame is resized to cover the
    training size times a factor drawn from [1, zoom) before the crop (a crop is a camera with other
    intrinsics: its camera-space normals and depths stay true), and with ``flip`` mirrored left-right for
    half of the draws, the normal's x negated (camera axes: x right). Neither draws anything when off, so
    the views are those of a run without them."""
    if flip and env_size is not None:
        raise ValueError("a mirrored view needs a mirrored env map, which is not built: data.flip is for the "
                         "inverse renderer")
    total = sample.passes["rgb"].shape[0]
    if total < frames:
        raise ValueError(f"clip {sample.key} has {total} frames; training takes {frames} (data.frames)")
    start = int(rng.integers(0, total - frames + 1))
    sl = slice(start, start + frames)
    # the views' normalisations (rgb exposure, depth quantiles) are the whole clip's (DESIGN section 2)
    out = {name: pass_view(sample.passes, name)[sl] for name in ("rgb", *GBUFFERS)}
    out["mask"] = np.asarray(sample.passes["mask"][sl], np.float32)
    out["depth_m"] = np.asarray(sample.passes["depth"][sl], np.float32)  # metres, for evaluation
    rh, rw = cover_size(*out["rgb"].shape[1:3], height, width)
    if zoom > 1.0:
        f = 1.0 + (zoom - 1.0) * float(rng.random())
        rh, rw = max(height, round(rh * f)), max(width, round(rw * f))
    top, left = int(rng.integers(0, rh - height + 1)), int(rng.integers(0, rw - width + 1))
    mirror = flip and float(rng.random()) < 0.5
    res = {}
    for name, x in out.items():
        t = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)).permute(0, 3, 1, 2)
        t = resize_to_cover(t, height, width, nearest=name in ("mask", "depth_m"), size=(rh, rw))
        t = t[:, :, top:top + height, left:left + width]
        if mirror:
            t = t.flip(-1)
            if name == "normal":
                t = t * torch.tensor([-1.0, 1.0, 1.0]).reshape(1, 3, 1, 1)
        res[name] = t.contiguous()
    if env_size is not None:
        res["env"] = env_view(sample, start, frames, env_size)
    return res


class ShuffleSchedule:
    """The shuffle buffer's decisions, on clip ids only: which input item comes out when.

    Fill to ``size``; then each new input item takes the place of a uniformly drawn one, which is
    output. The draws depend only on the seed, so the schedule replays without data."""

    def __init__(self, inputs: Iterator[Item], size: int, rng: np.random.Generator):
        self.inputs, self.size, self.rng = inputs, size, rng
        self.buffer: list[Item] = []
        self.consumed = 0

    def next(self) -> tuple[Item, list[Item]]:
        """(the item output now, the input items taken in since the last output)."""
        taken = []
        while len(self.buffer) < self.size:
            item = next(self.inputs)
            self.buffer.append(item)
            taken.append(item)
        item = next(self.inputs)
        taken.append(item)
        self.consumed += len(taken)
        i = int(self.rng.integers(len(self.buffer)))
        out, self.buffer[i] = self.buffer[i], item
        return out, taken


class ClipDataset(IterableDataset):
    """Infinite stream of training views (module doc). ``skip`` is the number of clips each global
    worker already produced, as {global worker id: count} (resume)."""

    def __init__(self, sources: Sequence[str], frames: int, height: int, width: int,
                 env_size: tuple[int, int] | None, seed: int = 0, holdout_fraction: float = 0.0,
                 shuffle_buffer: int = 64, rank: int = 0, world_size: int = 1, skip: dict[int, int] | None = None,
                 latents: dict[str, str] | None = None, latent_factor: int = 8, env_only: bool = False,
                 zoom: float = 1.0, flip: bool = False):
        super().__init__()
        self.zoom, self.flip = zoom, flip  # augmentations of the pixel path (clip_view)
        self.latents, self.factor = dict(latents or {}), latent_factor
        self.env_only = env_only  # only the env encodings (env-encoder pretraining): no pass is decoded
        self.shards = [(url, [k for k in keys if not is_held_out(k, holdout_fraction)])
                       for url, keys in list_clips(sources)]
        self.shards = [(u, k) for u, k in self.shards if k]
        if not self.shards:
            raise ValueError("no training clips: every clip is held out or the runs hold none")
        self.frames, self.height, self.width, self.env_size = frames, height, width, env_size
        self.seed, self.buffer, self.rank, self.world = seed, shuffle_buffer, rank, world_size
        self.skip = dict(skip or {})
        self.with_env = env_size is not None

    @property
    def clips(self) -> int:
        return sum(len(k) for _, k in self.shards)

    def _epoch_items(self, epoch: int, worker: int, workers: int) -> list[Item]:
        order = _rng(self.seed, epoch, "shards").permutation(len(self.shards))
        shards = [self.shards[i] for i in order]
        if len(shards) >= workers:
            return [Item(epoch, url, k) for j, (url, keys) in enumerate(shards) if j % workers == worker for k in keys]
        flat = [(url, k) for url, keys in shards for k in keys]
        return [Item(epoch, url, k) for j, (url, k) in enumerate(flat) if j % workers == worker]

    def _inputs(self, worker: int, workers: int) -> Iterator[Item]:
        epoch = 0
        while True:
            items = self._epoch_items(epoch, worker, workers)
            if not items and epoch == 0:
                raise ValueError(f"data worker {worker} of {workers} has no clips: use fewer workers")
            yield from items
            epoch += 1

    def worker_ids(self) -> tuple[int, int]:
        info = get_worker_info()
        local, per_rank = (info.id, info.num_workers) if info is not None else (0, 1)
        return self.rank * per_rank + local, self.world * per_rank

    def __iter__(self) -> Iterator[dict]:
        worker, workers = self.worker_ids()
        schedule = ShuffleSchedule(self._inputs(worker, workers), min(self.buffer, self.clips),
                                   _rng(self.seed, worker, "buffer"))
        for _ in range(self.skip.get(worker, 0)):
            schedule.next()
        store = self._load(schedule.buffer)  # the clips in the buffer at the resume point
        live = self._stream(worker, workers, schedule.consumed)
        while True:
            out, taken = schedule.next()
            for item in taken:
                got, sample = next(live)
                if got != item:
                    raise RuntimeError(f"data stream out of step: {got} read where {item} was scheduled")
                store[item] = sample
            sample = store.pop(out)
            rng = _rng(self.seed, out.epoch, out.key)
            if self.env_only:
                start = int(rng.integers(0, sample.frames - self.frames + 1))
                view = {"env": env_view(sample, start, self.frames, self.env_size)}
            elif isinstance(sample, CachedClip):
                view = latent_view(sample, self.frames, self.height, self.width, self.factor, rng, self.env_size)
            else:
                view = clip_view(sample, self.frames, self.height, self.width, rng, self.env_size, self.zoom,
                                 self.flip)
            view["key"] = out.key
            view["worker"] = worker
            yield view

    def _stream(self, worker: int, workers: int, start: int) -> Iterator[tuple[Item, Sample]]:
        """(item, decoded clip) of the worker's input from position ``start`` on, each shard
        opened once per run of its items."""
        pos = 0
        epoch = 0
        while True:
            items = self._epoch_items(epoch, worker, workers)
            for run in _runs(items):
                if pos + len(run) > start:
                    want = run[max(0, start - pos):]
                    yield from zip(want, self._read(want))
                pos += len(run)
            epoch += 1

    def _decode(self, url: str, keys: list[str]) -> Iterator[Sample | CachedClip]:
        """The clips ``keys`` of one shard, in shard order: from its latent cache where there is one."""
        if self.env_only:
            return iter_shard(url, passes=(), with_env=True, keys=set(keys))
        if url in self.latents:
            return read_cached(url, self.latents[url], keys, self.with_env)
        return iter_shard(url, passes=READ_PASSES, with_env=self.with_env, keys=set(keys))

    def _read(self, items: list[Item]) -> Iterator[Sample | CachedClip]:
        """The clips of ``items`` (all of one shard, in its order), decoded; ValueError if it lacks one."""
        got = self._decode(items[0].url, [i.key for i in items])
        for item in items:
            sample = next(got, None)
            if sample is None or sample.key != item.key:
                raise ValueError(f"{item.url} lacks clip {item.key} that its index lists")
            yield sample

    def _load(self, items: list[Item]) -> dict[Item, Sample]:
        """Decode the clips of ``items`` (any order, several epochs) into {item: clip}."""
        store: dict[Item, Sample] = {}
        by_url: dict[str, list[Item]] = {}
        for item in items:
            by_url.setdefault(item.url, []).append(item)
        for url, group in by_url.items():
            keys = sorted({i.key for i in group})
            found = {s.key: s for s in self._decode(url, keys)}
            for item in group:
                if item.key not in found:
                    raise ValueError(f"{url} lacks clip {item.key} that its index lists")
                store[item] = found[item.key]
        return store


def _runs(items: list[Item]) -> Iterator[list[Item]]:
    """Consecutive items of the same shard, grouped."""
    run: list[Item] = []
    for item in items:
        if run and item.url != run[0].url:
            yield run
            run = []
        run.append(item)
    if run:
        yield run


def collate(batch: list[dict]) -> dict:
    out = {k: torch.stack([b[k] for b in batch]) for k in batch[0] if torch.is_tensor(batch[0][k])}
    out["key"] = [b["key"] for b in batch]
    out["worker"] = [b["worker"] for b in batch]
    return out


def produced_per_worker(batches: int, batch_size: int, workers: int, rank: int) -> dict[int, int]:
    """Clips each of a rank's data workers produced after ``batches`` batches of an in-order
    DataLoader (batch i comes from worker i mod workers)."""
    n = max(workers, 1)
    return {rank * n + w: ((batches - w + n - 1) // n) * batch_size for w in range(n)}
