"""Path-tracing settings (pure data: importing this does not import Blender)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from dr.config import CommandConfig, Section


class RenderSettings(Section):
    device: Literal["auto", "optix", "cuda", "cpu"] = Field(
        "auto", description="auto picks OptiX, then CUDA, then the CPU"
    )
    samples: int = Field(128, ge=1, le=1_000_000, description="path-tracing samples per pixel")
    adaptive_threshold: float = Field(0.01, ge=0.0, description="Cycles' adaptive-sampling noise threshold; 0 turns it off")
    max_bounces: int = Field(8, ge=0, le=1024, description="total light bounces")
    clamp_indirect: float = Field(10.0, ge=0.0, description="clamp on indirect sample values; 0 turns it off")
    denoiser: Literal["oidn", "none"] = Field("oidn", description="denoiser applied to rgb only")
    env_height: int = Field(512, ge=8, le=8192, description="height He of the stored env map (width 2He), pixels")


class WorkerSettings(Section):
    clips_per_worker: int = Field(100, ge=1, le=1_000_000, description="clips a render worker serves before it is replaced")
    max_rss_mb: float = Field(16000.0, gt=0.0, description="replace the worker once its resident memory passes this, MiB")
    clip_timeout_s: float = Field(3600.0, gt=0.0, description="hard time limit of one clip, seconds; the worker is killed past it")


class RenderCommandConfig(CommandConfig):
    """Config of `dr-data render`: how to path-trace (the scene comes from the spec)."""

    render: RenderSettings = RenderSettings()
    worker: WorkerSettings = WorkerSettings()
