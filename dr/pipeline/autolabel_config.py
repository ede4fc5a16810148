"""The config of `dr-data autolabel`: what a real clip is (clips), how its passes are estimated
(inverse) and its lighting (light), and how the run behaves (run). Importing it needs no torch."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from dr.config import CommandConfig, Section
from dr.pipeline.config import RunSettings


class ClipSettings(Section):
    frames: int = Field(24, ge=1, le=1024, description="frames per clip (T)")
    stride: int = Field(1, ge=1, le=100, description="source frames from one clip frame to the next")
    segments_per_video: int = Field(15, ge=1, le=1000, description="clips per scene, spread evenly over it "
                                    "(DiffusionRenderer: 15; fewer where the scene has fewer distinct starts)")
    height: int = Field(512, ge=8, le=4096, description="clip height, pixels (frames are undistorted, scaled to "
                        "cover height x width and centre-cropped)")
    width: int = Field(512, ge=8, le=4096, description="clip width, pixels")
    fps: float = Field(30.0, gt=0.0, le=1000.0, description="frame rate the source was shot at, frames per second "
                       "(the clip's is this over the stride)")
    seed: int = Field(0, ge=0, description="seed of the labels' noise (and of the clip ids, s<seed>_<index>)")


class InverseSettings(Section):
    steps: int | None = Field(None, ge=1, le=1000, description="denoising steps; default the checkpoint's (20, or "
                              "1 for a single-step renderer)")
    window: int | None = Field(None, ge=1, le=1024, description="frames per window for clips longer than that; "
                               "default the renderer's own frames")
    overlap: int = Field(6, ge=0, le=1023, description="frames shared by consecutive windows")
    carry: float = Field(0.0, ge=0.0, le=1.0, description="gamma of the carried latent in a window's shared frames "
                         "(Ouroboros: 0.1)")


class LightSettings(Section):
    size: int = Field(1024, ge=64, le=4096, description="side of the letterboxed square the ball is painted in, px")
    ball: int = Field(256, ge=8, le=2048, description="ball diameter, px, at the square's centre")
    dilate: int = Field(20, ge=0, le=512, description="inpainting mask: the ball's disc grown by this, px")
    steps: int = Field(30, ge=1, le=1000, description="UniPC steps per painting")
    guidance: float = Field(5.0, ge=1.0, le=50.0, description="classifier-free guidance scale")
    controlnet_scale: float = Field(0.5, ge=0.0, le=2.0, description="depth ControlNet conditioning scale")
    lora_scale: float = Field(0.75, ge=0.0, le=2.0, description="exposure LoRA scale")
    evs: tuple[float, ...] = Field((0.0, -2.5, -5.0), min_length=1, description="exposures painted, EV (0 first; "
                                   "at most -5, the darkest the LoRA knows)")
    mode: Literal["normal", "turbo"] = Field("normal", description="normal: the iterative median of balls; turbo: "
                                             "one pass, the Turbo LoRA swapped for the exposure LoRA at switch_timestep")
    balls: int = Field(30, ge=1, le=1000, description="seeds per median (mode normal)")
    strength: float = Field(0.8, gt=0.0, le=1.0, description="strength of the refining paintings (mode normal)")
    switch_timestep: int = Field(800, ge=0, le=1000, description="turbo: the timestep from which the exposure LoRA paints")
    seed: int = Field(200, ge=0, description="first seed of the paintings")
    batch: int = Field(4, ge=1, le=256, description="paintings per pipeline call")
    env_height: int = Field(256, ge=4, le=4096, description="height of the equirect map, px (width twice that)")
    unwrap: Literal["perspective", "orthographic"] = Field("perspective", description="ball to map: from the frame's "
                                                           "K (perspective) or DiffusionLight's orthographic one")

    @model_validator(mode="after")
    def _fits(self):
        if self.ball + self.dilate > self.size:
            raise ValueError(f"light.ball {self.ball} + light.dilate {self.dilate} exceed light.size {self.size}")
        if self.evs[0] != 0.0 or any(e > 0 or e < -5.0 for e in self.evs):
            raise ValueError(f"light.evs {list(self.evs)}: start at 0, each in [-5, 0]")
        return self


class DeviceSettings(Section):
    threads: int | None = Field(None, ge=1, le=1024, description="torch threads per labelling task on CPUs; "
                                "default the CPUs the task was given")


class AutolabelConfig(CommandConfig):
    """Config of `dr-data autolabel`. ``clips``, ``inverse`` and ``light`` decide what clip k is;
    ``run`` how the run goes (it may change when a run is resumed)."""

    clips: ClipSettings = ClipSettings()
    inverse: InverseSettings = InverseSettings()
    light: LightSettings = LightSettings()
    device: DeviceSettings = DeviceSettings()
    run: RunSettings = RunSettings()


IDENTITY_SECTIONS = ("clips", "inverse", "light")
