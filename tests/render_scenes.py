"""Hand-built scene specs for the render tests: known geometry, known materials, a known sky."""

from __future__ import annotations

import numpy as np

from dr.scenes.geometry import affine, intrinsics, look_at, rot_z
from dr.scenes.spec import (AssetRef, Camera, Ground, Light, Motion, Orbit, PrincipledMaterial, SceneObject, SceneSpec,
                            TextureMaterial, AssetMaterial)

W = H = 64
FOV = 55.0
SPHERE = {"radius": 0.45, "basecolor": (0.9, 0.6, 0.2), "roughness": 0.3, "metallic": 1.0}
CUBE = {"half": 0.3, "centre": (0.85, -0.5), "yaw_deg": 20.0, "basecolor": (0.2, 0.5, 0.8), "roughness": 0.7,
        "metallic": 0.0}
BALL = {"xy": (0.15, 0.95), "radius": 0.5, "basecolor": (0.8, 0.6, 0.4)}  # k / 255: exact in glTF's 8-bit factor  # glTF sphere, packed MR texture
GROUND_M = 30.0
SKY_TURN_DEG = 40.0  # the world turns this much per frame


def sky(h: int = 64) -> np.ndarray:
    """A smooth, asymmetric HDR sky (h, 2h, 3) in its own frame: a wrong axis, sign or turn shows."""
    from dr.shards.envmap import uv_to_direction

    v, u = np.meshgrid((np.arange(h) + 0.5) / h, (np.arange(2 * h) + 0.5) / (2 * h), indexing="ij")
    e = uv_to_direction(u, v)
    sun = np.array([np.cos(np.radians(20)) * np.cos(np.radians(30)), np.cos(np.radians(20)) * np.sin(np.radians(30)),
                    np.sin(np.radians(20))])
    blob = np.exp((e @ sun - 1.0) / 0.08)
    return np.stack([1.0 + 0.8 * e[..., 0] + 0.5 * blob, 1.0 + 0.8 * e[..., 1], 1.2 + 0.6 * e[..., 2] + 3.0 * blob],
                    axis=-1).astype(np.float32)


def write_exr(path, rgb: np.ndarray) -> None:
    import OpenEXR

    header = {"compression": OpenEXR.ZIP_COMPRESSION, "type": OpenEXR.scanlineimage}
    with OpenEXR.File(header, {"RGB": np.ascontiguousarray(rgb, dtype=np.float32)}) as f:
        f.write(str(path))


def _ref(rec) -> AssetRef:
    return AssetRef(id=rec.id, sha256=rec.sha256, uri=rec.uri, files=dict(rec.files))


def _motion():
    return Motion(start_xy=(0.0, 0.0), end_xy=(0.0, 0.0), yaw_start_deg=0.0, yaw_sweep_deg=0.0)


def cameras(frames: int):
    target = np.array([0.2, 0.2, 0.4])
    c2w = []
    for t in range(frames):
        az = np.radians(-8.0 + 6.0 * t)
        eye = target + np.array([3.6 * np.sin(az), -3.6 * np.cos(az), 1.0])
        c2w.append(look_at(eye, target))
    return c2w


def sphere_centre(t: int) -> np.ndarray:
    return np.array([-1.0 + 0.08 * t, -0.2, SPHERE["radius"]])


def cube_matrix() -> np.ndarray:
    h = CUBE["half"]
    return affine(rotation=rot_z(np.radians(CUBE["yaw_deg"])), translation=(*CUBE["centre"], h), scale=(h, h, h))


def ball_centre() -> np.ndarray:
    return np.array([*BALL["xy"], BALL["radius"]])


def write_banded_ball(path) -> None:
    """A GLB sphere (radius 0.5, poles on glTF +Y, i.e. Blender +Z) whose glTF packed
    metallic-roughness texture makes the half x > 0 smooth metal (G 51 -> roughness 0.2, B 255 ->
    metallic 1) and the half x < 0 rough dielectric (G 204 -> 0.8, B 0 -> 0)."""
    import trimesh
    from PIL import Image
    from trimesh.visual import TextureVisuals
    from trimesh.visual.material import PBRMaterial

    n_th, n_ph = 48, 96
    th, ph = np.meshgrid(np.linspace(0, np.pi, n_th + 1), np.linspace(0, 2 * np.pi, n_ph + 1), indexing="ij")
    r = BALL["radius"]
    verts = np.stack([r * np.sin(th) * np.sin(ph), r * np.cos(th), r * np.sin(th) * np.cos(ph)], -1).reshape(-1, 3)
    uv = np.stack([ph / (2 * np.pi), 1 - th / np.pi], -1).reshape(-1, 2)
    idx = np.arange((n_th + 1) * (n_ph + 1)).reshape(n_th + 1, n_ph + 1)
    a, b, c, d = idx[:-1, :-1], idx[:-1, 1:], idx[1:, :-1], idx[1:, 1:]
    faces = np.concatenate([np.stack([a, c, b], -1).reshape(-1, 3), np.stack([b, c, d], -1).reshape(-1, 3)])
    img = np.zeros((64, 64, 3), np.uint8)
    img[:, :32, 1], img[:, :32, 2] = 51, 255  # u < 0.5: x = sin(th) sin(ph) > 0
    img[:, 32:, 1], img[:, 32:, 2] = 204, 0
    mat = PBRMaterial(name="banded", baseColorFactor=[*BALL["basecolor"], 1.0], roughnessFactor=1.0, metallicFactor=1.0,
                      metallicRoughnessTexture=Image.fromarray(img, "RGB"))
    mesh = trimesh.Trimesh(verts, faces, process=False, visual=TextureVisuals(uv=uv, material=mat))
    mesh.fix_normals()
    path.write_bytes(trimesh.Scene(mesh).export(file_type="glb"))


def test_spec(manifest, hdri_path, ball_path, frames: int = 3, clip_id: str = "test_clip", attempt: int = 0) -> SceneSpec:
    ground_mat = next(r for r in manifest.usable("material") if r.stats["mean"].get("metallic", 1.0) == 0.0)
    c2w = cameras(frames)
    K = intrinsics(W, H, FOV)
    ball_n = affine(translation=(0, 0, BALL["radius"]))
    from dr.files import sha256_file

    # renders check an asset's bytes against its sha256, as against a manifest record
    ball = AssetRef(id="test:object/banded_ball", sha256=sha256_file(ball_path), uri=str(ball_path))
    r = SPHERE["radius"]
    objects = [
        SceneObject(name="sphere_0", shape="sphere", material=PrincipledMaterial(
            basecolor=SPHERE["basecolor"], roughness=SPHERE["roughness"], metallic=SPHERE["metallic"]),
            size_m=2 * r, footprint_radius_m=r, height_m=2 * r, normalization=affine(translation=(0, 0, r), scale=(r,) * 3).tolist(),
            motion=_motion(), transforms=[affine(translation=sphere_centre(t), scale=(r,) * 3).tolist() for t in range(frames)]),
        SceneObject(name="cube_0", shape="cube", material=PrincipledMaterial(
            basecolor=CUBE["basecolor"], roughness=CUBE["roughness"], metallic=CUBE["metallic"]),
            size_m=2 * CUBE["half"], footprint_radius_m=CUBE["half"] * 2 ** 0.5, height_m=2 * CUBE["half"],
            normalization=affine(translation=(0, 0, CUBE["half"]), scale=(CUBE["half"],) * 3).tolist(), motion=_motion(),
            transforms=[cube_matrix().tolist()] * frames),
        SceneObject(name="asset_0", shape="asset", asset=ball, category="ball", material=AssetMaterial(),
            size_m=2 * BALL["radius"], footprint_radius_m=BALL["radius"], height_m=2 * BALL["radius"],
            normalization=ball_n.tolist(), motion=_motion(),
            transforms=[(affine(translation=(*BALL["xy"], 0.0)) @ ball_n).tolist()] * frames),
    ]
    light = Light(hdri=AssetRef(id="test:hdri/smooth_sky", sha256=sha256_file(hdri_path), uri=str(hdri_path)), strength=1.5,
                  rotation_start_deg=10.0, rotation_sweep_deg=SKY_TURN_DEG * (frames - 1),
                  env_to_world=[rot_z(np.radians(10.0 + SKY_TURN_DEG * t)).tolist() for t in range(frames)])
    return SceneSpec(
        clip_id=clip_id, seed=7, index=0, attempt=attempt, spawn_key=[0, attempt], scene_config_hash="test",
        manifest_sha256=manifest.digest(), width=W, height=H, frames=frames, fps=24.0,
        camera=Camera(fov_deg=FOV, orbit=Orbit(target=(0.2, 0.2, 0.4), radius_m=3.6, elevation_deg=15.0,
                                               azimuth_start_deg=-8.0, azimuth_sweep_deg=6.0 * (frames - 1),
                                               oscillation_deg=0.0, shake_m=0.0),
                      c2w=[m.tolist() for m in c2w], intrinsics=[K.tolist()] * frames),
        light=light,
        ground=Ground(size_m=GROUND_M, material=TextureMaterial(material=_ref(ground_mat), tile_m=2.0, rotation_deg=30.0)),
        objects=objects)
