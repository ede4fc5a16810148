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
from dr.models.folders import LATEST

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


def load_trainer_state(ckpt: Path) -> dict:
    return torch.load(ckpt / "trainer_state.pt", map_location="cpu", weights_only=True)


def clear_partial(root: Path) -> None:
    """Remove checkpoints cut short by a crash (their temporary folders)."""
    for tmp in root.glob(".step-*.tmp"):
        shutil.rmtree(tmp, ignore_errors=True)
