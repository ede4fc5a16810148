"""Path-tracing settings (pure data: importing this does not import Blender)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from dr.config import Section


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
