"""The scene recipe: what `sample_scene` draws from. Defaults follow the DiffusionRenderer recipe.

Ranges are ``[lo, hi]`` pairs sampled uniformly unless a field says otherwise. Lengths are in
metres, angles in degrees, sweeps are totals over the clip.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import AfterValidator, Field, model_validator

from dr.config import CommandConfig, Section


def _ordered(v: tuple):
    if v[0] > v[1]:
        raise ValueError(f"range [{v[0]}, {v[1]}] has lo > hi")
    return v


def span(**bounds) -> type:
    """A [lo, hi] range whose ends obey ``bounds`` (pydantic's gt/ge/lt/le) and lo <= hi."""
    end = Annotated[float, Field(**bounds)]
    return Annotated[tuple[end, end], AfterValidator(_ordered)]


Count = Annotated[int, Field(ge=0, le=64)]
IntRange = Annotated[tuple[Count, Count], AfterValidator(_ordered)]
Prob = Annotated[float, Field(ge=0.0, le=1.0)]
Unit = span(ge=0.0, le=1.0)
Positive = span(gt=0.0)
Angle = span(ge=-3600.0, le=3600.0)


class CameraConfig(Section):
    fov_deg: span(ge=1.0, le=170.0) = Field((40.0, 55.0), description="field of view across the larger image side, degrees")
    distance_factor: span(gt=0.05, le=100.0) = Field(
        (0.75, 1.2),
        description="orbit radius as a multiple of the distance at which the scene's bounding sphere just fills the view",
    )
    elevation_deg: span(ge=1.0, le=85.0) = Field(
        (5.0, 50.0), description="orbit elevation above the plane, degrees (oscillation may move it within [1, 85])")
    p_orbit: Prob = Field(0.7, description="probability that the camera orbits (otherwise its azimuth is fixed)")
    azimuth_sweep_deg: Angle = Field((-120.0, 120.0), description="total azimuth swept over the clip when orbiting")
    p_oscillation: Prob = Field(0.5, description="probability of a circular oscillation of azimuth and elevation")
    oscillation_deg: span(ge=0.0, le=45.0) = Field((2.0, 15.0), description="radius of that oscillation, degrees")
    target_offset_m: float = Field(0.1, ge=0.0, description="look-at point drawn within this many metres of the scene centre, per axis")
    shake_m: float = Field(0.005, ge=0.0, description="amplitude of the smooth hand-held jitter of the camera position, metres")
    min_height_m: float = Field(0.15, gt=0.0, description="lowest camera height above the plane, metres")
    clearance_m: float = Field(0.1, ge=0.0, description="least distance between the camera and any object's bounds, metres")
    view_margin: float = Field(0.05, ge=0.0, lt=0.5, description="each object's centre stays this fraction of the image inside the border")


class ObjectsConfig(Section):
    assets_per_scene: IntRange = Field((1, 3), description="manifest objects per clip (inclusive)")
    asset_size_m: Positive = Field((0.6, 1.3), description="longest side of a manifest object after normalisation, metres")
    primitives_per_scene: IntRange = Field((0, 3), description="random cubes, spheres and cylinders per clip (inclusive)")
    primitive_size_m: Positive = Field((0.25, 0.8), description="longest side of a primitive, metres")
    placement_radius_m: float = Field(1.0, gt=0.0, description="object centres lie within this distance of the origin, metres")
    gap_m: float = Field(0.02, ge=0.0, description="least gap between the bounding cylinders of two objects, metres")
    p_rotate: Prob = Field(0.5, description="probability that an object spins about the vertical axis")
    rotation_deg: Angle = Field((-180.0, 180.0), description="total spin over the clip when spinning")
    p_translate: Prob = Field(0.3, description="probability that an object slides along the plane")
    translation_m: span(ge=0.0) = Field((0.1, 0.6), description="distance slid over the clip when sliding, metres")
    max_attempts: int = Field(200, ge=1, le=100_000, description="layouts tried before the config is declared unsatisfiable")


class MaterialsConfig(Section):
    p_primitive_pbr: Prob = Field(0.3, description="probability that a primitive gets a PBR texture set instead of uniform values")
    primitive_tile_m: Positive = Field((0.2, 1.0), description="texture tile size on a textured primitive, metres")
    roughness: Unit = Field((0.0, 1.0), description="uniform roughness range of untextured primitives")
    metallic_sigma: float = Field(
        0.25, ge=0.0, description="metallic = |N(0, sigma)| clipped to [0,1], mirrored to 1-m with probability 1/2"
    )
    dielectric_srgb: Unit = Field((0.12, 0.94), description="base colour channels of dielectrics, sRGB-encoded")
    metal_srgb: Unit = Field((0.67, 1.0), description="base colour channels of metals (metallic > 0.5), sRGB-encoded")


class LightConfig(Section):
    strength: span(ge=0.0) = Field((0.5, 1.5), description="multiplier on the HDRI's radiance")
    p_rotate: Prob = Field(0.5, description="probability that the world (light) rotates over the clip")
    rotation_sweep_deg: Angle = Field((-180.0, 180.0), description="total world rotation about +Z over the clip")


class GroundConfig(Section):
    size_m: float = Field(20.0, gt=0.0, description="side of the square ground plane, metres")
    tile_m: Positive = Field((0.5, 3.0), description="side of one texture tile on the ground, metres")


class SceneConfig(Section):
    width: int = Field(512, ge=8, le=8192, description="image width, pixels")
    height: int = Field(512, ge=8, le=8192, description="image height, pixels")
    frames: int = Field(24, ge=1, le=10_000, description="frames per clip")
    fps: float = Field(24.0, gt=0.0, description="frames per second (metadata for the video)")
    camera: CameraConfig = CameraConfig()
    objects: ObjectsConfig = ObjectsConfig()
    materials: MaterialsConfig = MaterialsConfig()
    light: LightConfig = LightConfig()
    ground: GroundConfig = GroundConfig()

    @model_validator(mode="after")
    def _not_empty(self) -> "SceneConfig":
        o = self.objects
        if o.assets_per_scene[1] + o.primitives_per_scene[1] == 0:
            raise ValueError("objects: a clip needs at least one object (assets_per_scene or primitives_per_scene)")
        return self


class ScenesSampleConfig(CommandConfig):
    """Config of `dr-data scenes sample`."""

    scene: SceneConfig = SceneConfig()
