"""SceneSpec: a renderer-agnostic, JSON-serialisable description of one animated clip.

Everything a renderer needs is explicit numbers, per frame: camera-to-world poses and pinhole
intrinsics (DESIGN.md section 2 conventions), each object's world matrix, the environment's
rotation. Nothing here knows Blender.

Shapes and their own coordinates (what an object's ``transforms[t]`` maps to world):

- ``asset``: the glTF file's scene as Blender's importer places it (glTF's Y-up turned Z-up:
  glTF (x, y, z) -> (x, -z, y)), node transforms applied, in the file's units.
- ``cube``: the cube [-1, 1]^3. ``sphere``: the unit sphere. ``cylinder``: radius 1 around the
  z axis, z in [-1, 1]. (Blender's default primitives.)

``normalization`` maps those coordinates to the object's rest frame (scaled to its size, its
footprint centred on the origin, resting on z = 0); ``transforms[t]`` = motion(t) @
normalization, with motion a rotation about +Z and a translation along the plane.

The environment: radiance arriving from world direction w is ``strength`` times the HDRI's
value in direction ``env_to_world[t]^T w`` (equirect convention of DESIGN.md section 2).
"""

from __future__ import annotations

from typing import Annotated, Literal, Union

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

SCHEMA_VERSION = 1

Vec3 = tuple[float, float, float]
Mat3 = list[list[float]]
Mat4 = list[list[float]]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class AssetRef(_Model):
    id: str
    sha256: str
    uri: str
    files: dict[str, str] = {}


class PrincipledMaterial(_Model):
    """Uniform Principled BSDF parameters."""

    type: Literal["principled"] = "principled"
    basecolor: Vec3 = Field(description="linear RGB in [0, 1]")
    roughness: float = Field(ge=0.0, le=1.0)
    metallic: float = Field(ge=0.0, le=1.0)


class TextureMaterial(_Model):
    """A PBR texture set from the manifest, tiled ``tile_m`` metres per repeat, rotated."""

    type: Literal["pbr"] = "pbr"
    material: AssetRef
    tile_m: float = Field(gt=0.0)
    rotation_deg: float


class AssetMaterial(_Model):
    """The asset's own (glTF) materials."""

    type: Literal["asset"] = "asset"


Material = Annotated[Union[PrincipledMaterial, TextureMaterial, AssetMaterial], Field(discriminator="type")]


class Motion(_Model):
    """How an object moves over the clip (for people; ``transforms`` is what renders)."""

    start_xy: tuple[float, float]
    end_xy: tuple[float, float]
    yaw_start_deg: float
    yaw_sweep_deg: float


class SceneObject(_Model):
    name: str
    shape: Literal["asset", "cube", "sphere", "cylinder"]
    asset: AssetRef | None = None
    category: str | None = None
    material: Material
    size_m: float = Field(description="longest side of the bounding box at rest, metres")
    footprint_radius_m: float = Field(description="radius of the bounding cylinder about the vertical axis, metres")
    height_m: float = Field(description="height of the bounding cylinder, metres")
    normalization: Mat4
    motion: Motion
    transforms: list[Mat4] = Field(description="per frame: own coordinates -> world")


class Orbit(_Model):
    """The camera path's parameters (for people; ``c2w`` is what renders)."""

    target: Vec3
    radius_m: float
    elevation_deg: float
    azimuth_start_deg: float
    azimuth_sweep_deg: float
    oscillation_deg: float
    shake_m: float


class Camera(_Model):
    fov_deg: float = Field(description="field of view across the larger image side")
    orbit: Orbit
    c2w: list[Mat4] = Field(description="per frame camera-to-world, OpenGL camera axes")
    intrinsics: list[Mat3] = Field(description="per frame pinhole K in pixels, pixel centres at +0.5")


class Light(_Model):
    hdri: AssetRef
    strength: float
    rotation_start_deg: float
    rotation_sweep_deg: float
    env_to_world: list[Mat3] = Field(description="per frame: direction in the HDRI's frame -> world")


class Ground(_Model):
    size_m: float
    material: TextureMaterial


class SceneSpec(_Model):
    schema_version: int = SCHEMA_VERSION
    clip_id: str = Field(pattern=r"^[a-z0-9_]+$")
    seed: int
    index: int
    attempt: int
    spawn_key: list[int] = Field(description="SeedSequence spawn key of the clip: (index, attempt)")
    scene_config_hash: str = Field(description="config_hash of the scene section the spec was sampled with")
    manifest_sha256: str = Field(description="sha256 of the manifest the spec was drawn from (the run's manifest.jsonl)")
    excluded_assets: list[str] = Field(default_factory=list, description="asset ids left out of the draw: those "
                                       "that failed this clip slot's earlier attempts")
    width: int
    height: int
    frames: int
    fps: float
    camera: Camera
    light: Light
    ground: Ground
    objects: list[SceneObject]

    def to_json(self, indent: int | None = None) -> str:
        """Deterministic JSON: same spec, same bytes."""
        return self.model_dump_json(indent=indent)

    def c2w(self, t: int) -> np.ndarray:
        return np.asarray(self.camera.c2w[t], dtype=np.float64)

    def K(self, t: int) -> np.ndarray:
        return np.asarray(self.camera.intrinsics[t], dtype=np.float64)

    def cam_to_env(self, t: int) -> np.ndarray:
        """3x3 rotation taking a camera-space direction to the HDRI's frame at frame t."""
        return np.asarray(self.light.env_to_world[t]).T @ self.c2w(t)[:3, :3]
