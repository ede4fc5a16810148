"""Checkpoints of a training run (DESIGN section 8): ``checkpoints/step-NNNNNNN/``.

A checkpoint holds the pipeline in diffusers layout (``pipeline/``, safetensors) and the trainer's
own state (``trainer_state.pt``: optimiser, LR schedule, step, data position; torch's format, read
with ``weights_only=True``). With an EMA (``train.ema_decay``) ``pipeline/`` holds the average and
``training/<module>.safetensors`` the raw weights the run continues from. It is written under a
temporary name and renamed last; ``latest``
names the newest complete one and is itself replaced atomically. The step's random draws are a
function of (seed, step, rank), so no RNG state needs keeping.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import torch

from dr.files import fsync_dir, write_text_atomic

LATEST = "latest"
RAW = "training"  # the raw weights of a run with an EMA


def module_weights(ckpt: Path, name: str, raw: bool) -> dict:
    """The state dict of module ``name`` in checkpoint ``ckpt``: the raw training weights (``raw``;
    the pipeline's where the run keeps no EMA) or the pipeline's."""
    from safetensors.torch import load_file

    f = ckpt / RAW / f"{name}.safetensors"
    if not (raw and f.is_file()):
        f = ckpt / "pipeline" / name / "diffusion_pytorch_model.safetensors"
    return load_file(str(f))


def step_name(step: int) -> str:
    return f"step-{step:07d}"


def save_checkpoint(root: Path, step: int, pipeline, state: dict, limit: int, ema=None) -> Path:
    """Write checkpoint ``step`` under ``root`` (the run's checkpoints/ folder); keep the newest
    ``limit``. With ``ema`` (a dr.train.ema.Ema) the pipeline is saved holding the average and the
    raw weights go to training/. Returns its folder."""
    from safetensors.torch import save_file

    root.mkdir(parents=True, exist_ok=True)
    final = root / step_name(step)
    tmp = root / f".{step_name(step)}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    if ema is None:
        pipeline.save_pretrained(tmp / "pipeline")
    else:
        (tmp / RAW).mkdir()
        for name, module in ema.modules.items():  # a name may hold a folder (a cycle run's forward/unet)
            (tmp / RAW / f"{name}.safetensors").parent.mkdir(parents=True, exist_ok=True)
            save_file({k: v.contiguous() for k, v in module.state_dict().items()}, str(tmp / RAW / f"{name}.safetensors"))
        with ema.swapped():
            pipeline.save_pretrained(tmp / "pipeline")
    torch.save(state, tmp / "trainer_state.pt")
    shutil.rmtree(final, ignore_errors=True)
    tmp.rename(final)
    fsync_dir(root)
    write_text_atomic(root / LATEST, step_name(step) + "\n")
    for old in sorted(p for p in root.glob("step-*") if p.is_dir())[:-limit]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def latest_checkpoint(root: Path) -> Path | None:
    """The folder ``latest`` names, if it is complete; else None."""
    f = root / LATEST
    if not f.is_file():
        return None
    path = root / f.read_text().strip()
    return path if (path / "trainer_state.pt").is_file() and (path / "pipeline" / "model_index.json").is_file() \
        else None


def load_trainer_state(ckpt: Path) -> dict:
    return torch.load(ckpt / "trainer_state.pt", map_location="cpu", weights_only=True)


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


def clear_partial(root: Path) -> None:
    """Remove checkpoints cut short by a crash (their temporary folders)."""
    for tmp in root.glob(".step-*.tmp"):
        shutil.rmtree(tmp, ignore_errors=True)
