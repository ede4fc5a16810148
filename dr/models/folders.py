"""Where models live on disk, read without torch: a dr-train checkpoint's pipeline folder, the
DiffusionLight folder layout (dr.models.light), and the digests that name them in a run's identity."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from dr.errors import UserError

LATEST = "latest"

# DiffusionLight's parts (dr.models.light): folder name -> hub id (for --light hub)
LIGHT_HUB = {
    "sdxl": "stabilityai/stable-diffusion-xl-base-1.0",
    "controlnet": "diffusers/controlnet-depth-sdxl-1.0",
    "vae": "madebyollin/sdxl-vae-fp16-fix",
    "depth": "Intel/dpt-large",
    "lora/exposure": "DiffusionLight/DiffusionLight",
    "lora/turbo": "DiffusionLight/Flickr2K",
}
LIGHT_REQUIRED = ("sdxl", "controlnet", "depth", "lora/exposure")


def latest_checkpoint(root: Path) -> Path | None:
    """The folder ``latest`` names in a run's checkpoints/, if it is complete; else None."""
    f = Path(root) / LATEST
    if not f.is_file():
        return None
    path = Path(root) / f.read_text().strip()
    return path if (path / "trainer_state.pt").is_file() and (path / "pipeline" / "model_index.json").is_file() \
        else None


def resolve_pipeline(path: Path) -> tuple[Path, Path | None]:
    """(pipeline folder, training run folder or None) of a training run, a checkpoint or a pipeline folder;
    FileNotFoundError if none is there."""
    path = Path(path)
    if (path / "checkpoints").is_dir():
        ck = latest_checkpoint(path / "checkpoints")
        if ck is None:
            raise FileNotFoundError(f"{path} holds no complete checkpoint yet")
        path = ck
    if (path / "pipeline" / "model_index.json").is_file():
        path = path / "pipeline"
    if not (path / "model_index.json").is_file():
        raise FileNotFoundError(f"{path} is not a training run, a checkpoint or a pipeline folder (no model_index.json)")
    run = next((p for p in path.parents if (p / "run.json").is_file() and (p / "checkpoints").is_dir()), None)
    return path, run


def pipeline_class(folder: Path) -> str | None:
    try:
        return json.loads((Path(folder) / "model_index.json").read_text()).get("_class_name")
    except (OSError, ValueError):
        return None


def folder_sha256(folder: Path) -> str:
    """sha256 over every file below ``folder``: its relative path and its bytes, in path order."""
    h = hashlib.sha256()
    folder = Path(folder)
    for p in sorted(q for q in folder.rglob("*") if q.is_file()):
        h.update(p.relative_to(folder).as_posix().encode() + b"\0")
        with open(p, "rb") as f:
            for block in iter(lambda: f.read(1 << 22), b""):
                h.update(block)
        h.update(b"\0")
    return h.hexdigest()


def check_light(light: str) -> str:
    """``light`` ('hub' or a folder) checked to hold DiffusionLight's parts; loads nothing. Returns
    'hub' or the folder's absolute path."""
    if light == "hub":
        return light
    p = Path(light).expanduser()
    if not p.is_dir():
        raise UserError(f"--light {light!r} is not a folder (give a DiffusionLight folder, laid out as "
                        f"`dr-data autolabel --help` says, or 'hub'); `dr-train init-tiny` writes a tiny one")
    missing = [n for n in LIGHT_REQUIRED if not (p / n).is_dir()]
    if missing:
        raise UserError(f"--light {light!r} lacks {', '.join(m + '/' for m in missing)} (the layout is in "
                        f"`dr-data autolabel --help`)")
    if not (p / "sdxl" / "model_index.json").is_file():
        raise UserError(f"--light {light!r}: sdxl/ is not a diffusers folder (no model_index.json)")
    return str(p.absolute())


def light_identity(light: str) -> dict:
    """What names a light folder in a run's identity: the hub ids, or a digest of the folder's
    file names, sizes and JSON configs (its weights are GBs; their sizes and configs stand for them)."""
    if light == "hub":
        return {"hub": dict(LIGHT_HUB)}
    root = Path(light)
    h = hashlib.sha256()
    for p in sorted(q for q in root.rglob("*") if q.is_file()):
        rel = p.relative_to(root).as_posix()
        h.update(f"{rel}\0{p.stat().st_size}\0".encode())
        if p.suffix == ".json":
            h.update(p.read_bytes())
    parts = sorted(n for n in LIGHT_HUB if (root / n).is_dir())
    return {"folder_digest": h.hexdigest(), "parts": parts}
