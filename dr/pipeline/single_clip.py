"""One clip, rendered into a one-clip run folder: ``OUT/shards/shard-000000.tar`` with its
index, ``OUT/preview.png``, ``OUT/logs/<clip>.log`` (and ``OUT/<clip>.blend`` on request)."""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from dr.errors import UserError
from dr.render.settings import RenderCommandConfig
from dr.render.worker import RenderWorker, WorkerLimits
from dr.scenes.spec import SceneSpec
from dr.shards.schema import member_suffixes
from dr.shards.writer import INDEX_NAME, ShardWriter, shard_name


@dataclass
class SingleClipResult:
    key: str
    shard: Path
    preview: Path
    log: Path
    blend: Path | None
    result: dict


def load_spec(path: Path) -> SceneSpec:
    """The SceneSpec in a JSON file (or a JSON-lines file holding exactly one); UserError otherwise."""
    from pydantic import ValidationError

    if not path.is_file():
        raise UserError(f"spec file {str(path)!r} not found")
    text = path.read_text()
    lines = [ln for ln in text.splitlines() if ln.strip()]
    if len(lines) > 1:
        try:
            json.loads(lines[0])
            several = True  # JSON lines
        except json.JSONDecodeError:
            several = False  # one indented JSON object
        if several:
            raise UserError(f"{path} holds {len(lines)} scene specs (JSON lines); render one at a time, e.g. "
                            f"`dr-data scenes sample --index K > spec.json`")
    try:
        return SceneSpec.model_validate_json(text)
    except ValidationError as e:
        err = e.errors()[0]
        loc = ".".join(str(x) for x in err["loc"]) or "spec"
        raise UserError(f"{path} is not a valid scene spec: {loc}: {err['msg']}") from None


def check_fresh(out: Path) -> Path:
    """``out`` unless it already holds a rendered clip (UserError: nothing is overwritten)."""
    if (out / "shards" / INDEX_NAME).exists() or (out / "shards" / shard_name(0)).exists():
        raise UserError(f"--out {str(out)!r} already holds a rendered clip; remove it or choose another folder")
    return out


def render_single(spec: SceneSpec, out: Path, cfg: RenderCommandConfig, cache_dir: Path, threads: int,
                  save_blend: bool = False, run_id: str | None = None,
                  on_event: Callable[[tuple], None] | None = None) -> SingleClipResult:
    """Render ``spec`` into the run folder ``out`` (see the module docstring). Raises RenderError."""
    from dr.shards.preview import write_contact_sheet
    from dr.shards.reader import iter_samples

    key = spec.clip_id
    out.mkdir(parents=True, exist_ok=True)
    staging, tmp = out / ".staging", out / ".tmp"
    log = out / "logs" / f"{key}.log"
    blend = out / f"{key}.blend" if save_blend else None
    limits = WorkerLimits(max_clips=cfg.worker.clips_per_worker, max_rss_mb=cfg.worker.max_rss_mb,
                          timeout_s=cfg.worker.clip_timeout_s)
    job = {"key": key, "spec": spec.to_json(), "settings": cfg.render.model_dump(mode="json"),
           "staging": str(staging), "log": str(log), "run_id": run_id or f"render-{key}",
           "save_blend": str(blend) if blend else None}
    try:
        with RenderWorker(cache_dir, tmp, threads, limits) as worker:
            result = worker.render(job, on_event=on_event)
        sample_dir = Path(result["dir"])
        with ShardWriter(out / "shards", 0) as writer:
            writer.add(key, {s: sample_dir / s for s in member_suffixes() if (sample_dir / s).exists()})
        sample = next(iter_samples(str(out / "shards")))
        preview = write_contact_sheet(sample, out / "preview.png")
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        shutil.rmtree(tmp, ignore_errors=True)
    return SingleClipResult(key, out / "shards" / shard_name(0), preview, log, blend, result)
