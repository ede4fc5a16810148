"""A training run folder's run.json (DESIGN section 8): what the run is, so that running the same
command again resumes it and a different one is refused.

The identity is the kind, the config (less ``train.max_steps``, which a resume may raise), the
base model and the data (each source with the sha256 of its shard index, and the latent cache it
is read from, if any: cached and encoded latents differ slightly, so a run does not switch). Each session appends
its argv, versions and start time.
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path
from typing import Sequence

from dr.config import config_hash
from dr.errors import UserError
from dr.files import write_text_atomic
from dr.train.config import TrainConfig

RUN_JSON = "run.json"


def data_identity(sources: Sequence[str]) -> list[dict]:
    """[{source, index_sha256, shards, samples}] of each data source; UserError where one holds no shards."""
    import fsspec

    from dr.shards.reader import iter_shard, shard_entries

    out = []
    for src in sources:
        try:
            entries = shard_entries(src)
        except (FileNotFoundError, ValueError, OSError):
            raise UserError(f"--data {src!r} holds no shards (no shards/index.json): make some with "
                            f"`dr-data generate`") from None
        if not entries:
            raise UserError(f"--data {src!r} holds no shards yet")
        index_url = entries[0][0].rsplit("/", 1)[0] + "/index.json"
        with fsspec.open(index_url, "rb") as f:
            digest = hashlib.sha256(f.read()).hexdigest()
        first = next(iter_shard(entries[0][0], passes=(), with_env=False), None)
        if first is not None and first.meta.get("dry_run"):
            raise UserError(f"--data {src!r} is a dry run (its clips have no pixels); train on a rendered run")
        out.append({"source": src, "index_sha256": digest, "shards": len(entries),
                    "samples": sum(n or 0 for _, n in entries), "frames": first.frames if first else 0})
    return out


def check_frames(data: list[dict], frames: int) -> None:
    """UserError if a source's clips are shorter than the training clips (data.frames)."""
    for d in data:
        if d["frames"] < frames:
            raise UserError(f"--data {d['source']!r} has clips of {d['frames']} frames; training takes {frames} "
                            f"(data.frames): lower it with --set data.frames={d['frames']}")


def identity(kind: str, cfg: TrainConfig, base: str, data: list[dict], extra: dict | None = None) -> dict:
    # max_steps may be raised by a resume; whether a latent cache is read is recorded per source below
    c = cfg.model_copy(update={"train": cfg.train.model_copy(update={"max_steps": 1}),
                               "data": cfg.data.model_copy(update={"latent_cache": True})})
    return {"kind": kind, "config_hash": config_hash(c), "base": base,
            "data": [{"source": d["source"], "index_sha256": d["index_sha256"],
                      **({"latents": d["latents"]} if d.get("latents") else {})} for d in data],
            **(extra or {})}


def versions() -> dict:
    import importlib.metadata as md

    out = {}
    for name in ("dr", "torch", "diffusers", "accelerate", "peft"):
        try:
            out[name] = md.version(name)
        except md.PackageNotFoundError:
            out[name] = None
    return out


def _sources(ident: dict) -> list[dict]:
    return [{k: v for k, v in d.items() if k != "latents"} for d in ident["data"]]


def precheck_run(out: Path, kind: str, cfg: TrainConfig, base: str, data: list[dict]) -> None:
    """open_run's refusals that need no model loaded (another kind, config, base or data), checked before
    the base is loaded; the latent cache and a pretrained env encoder are checked by open_run."""
    path = out / RUN_JSON
    if not path.is_file():
        return
    old = json.loads(path.read_text())["identity"]
    ident = identity(kind, cfg, base, data)
    old = {**old, "data": _sources(old)}
    old.pop("env_encoder", None)
    ident["data"] = _sources(ident)
    _refuse_difference(out, kind, old, ident)


def _refuse_difference(out: Path, kind: str, old: dict, ident: dict) -> None:
    if old.get("kind") != kind:
        raise UserError(f"{out} is a training run of the {old.get('kind')} renderer; this command trains the "
                        f"{kind} renderer: use another --out")
    diffs = [k for k in {**old, **ident} if ident.get(k) != old.get(k)]
    if diffs == ["data"] and _sources(ident) == _sources(old):  # only the latent cache differs
        if any(d.get("latents") for d in ident["data"]) and not any(d.get("latents") for d in old["data"]):
            raise UserError(f"{out} was trained without a latent cache and one is there now: continue it with "
                            f"--set data.latent_cache=false, or start a new --out")
        raise UserError(f"{out} was trained on a latent cache that is gone or was made again: run "
                        f"`dr-train cache-latents` with the run's base and size")
    if diffs:
        what = ", ".join({"config_hash": "the config (config_hash)", "data": "the data"}.get(
            k, f"{k} ({old.get(k)!r} in the run, {ident.get(k)!r} now)") for k in diffs)
        raise UserError(f"{out} is a training run made by another command: {what} differ; "
                        f"use another --out, or the run's own command (its run.json)")


def open_run(out: Path, kind: str, cfg: TrainConfig, base: str, data: list[dict], argv: Sequence[str],
             extra: dict | None = None) -> dict:
    """Create run.json, or check that the existing one is the same run (UserError naming what
    differs); append this session. ``extra``: more of the identity (the pretrained env encoder the
    forward renderer starts from). Returns the run record."""
    path = out / RUN_JSON
    ident = identity(kind, cfg, base, data, extra)
    if path.is_file():
        run = json.loads(path.read_text())
        _refuse_difference(out, kind, run["identity"], ident)
    else:
        out.mkdir(parents=True, exist_ok=True)
        run = {"identity": ident, "config": cfg.model_dump(mode="json"), "data": data, "sessions": []}
    run["config"] = cfg.model_dump(mode="json")
    run["sessions"].append({"argv": list(argv), "versions": versions(), "started": time.time()})
    write_text_atomic(path, json.dumps(run, indent=1, sort_keys=True) + "\n")
    return run
