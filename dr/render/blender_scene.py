"""SceneSpec -> a Blender scene (bpy; render worker only).

Everything is explicit numbers from the spec: each object's root Empty, the camera and the
world's Mapping rotation are keyframed at every frame (constant interpolation), so frame t of
the .blend is exactly frame t of the spec. Objects hang under their root Empty in their own
coordinates (the glTF importer's Z-up scene, or Blender's default primitive), so the Empty's
matrix is ``transforms[t]``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import bpy
import numpy as np
from mathutils import Matrix

from dr.render.aov_taps import NO_MATERIAL, default_material, register_aovs, tap_material
from dr.render.errors import AssetError, RenderError, SystemFailure
from dr.scenes.spec import PrincipledMaterial, SceneObject, SceneSpec, TextureMaterial

CLIP_START_M = 0.01
CLIP_END_M = 10_000.0


@dataclass
class BuiltScene:
    scene: object
    camera: object
    objects: dict[str, object]
    materials: list[dict] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    import_checks: list[dict] = field(default_factory=list)


def _constant_interpolation(id_data) -> None:
    ad = id_data.animation_data
    if ad is None or ad.action is None:
        return
    for fc in _fcurves(ad.action):
        for kp in fc.keyframe_points:
            kp.interpolation = "CONSTANT"


def _fcurves(action):
    # Blender 5 stores F-curves in layered actions (layers -> strips -> channelbags)
    if hasattr(action, "fcurves"):
        return list(action.fcurves)
    curves = []
    for layer in action.layers:
        for strip in layer.strips:
            for bag in strip.channelbags:
                curves.extend(bag.fcurves)
    return curves


def _key_matrix(obj, matrices: list, frames: range) -> None:
    obj.rotation_mode = "QUATERNION"
    for t, m in zip(frames, matrices):
        loc, rot, scale = Matrix(m).decompose()
        obj.location, obj.rotation_quaternion, obj.scale = loc, rot, scale
        for path in ("location", "rotation_quaternion", "scale"):
            obj.keyframe_insert(path, frame=t)
    _constant_interpolation(obj)


def _image(path: Path, colorspace: str):
    img = bpy.data.images.load(str(path), check_existing=True)
    img.colorspace_settings.name = colorspace
    return img


def _texture_node(nt, path: Path, colorspace: str, uv_socket):
    node = nt.nodes.new("ShaderNodeTexImage")
    node.image = _image(path, colorspace)
    node.interpolation = "Linear"
    node.extension = "REPEAT"
    nt.links.new(uv_socket, node.inputs["Vector"])
    return node


def pbr_material(name: str, folder: Path, files: dict[str, str]):
    """A Principled BSDF fed by a texture set's maps on the mesh's UV map.

    Roles: basecolor (sRGB), roughness, metallic, or arm (G = roughness, B = metallic), and a
    normal map (OpenGL; ``normal_dx`` has its green channel flipped). Tiling and rotation are
    baked into the UV map by the caller, so normal-map tangents stay consistent.
    """
    mat = bpy.data.materials.new(name)
    nt = mat.node_tree
    bsdf = nt.nodes["Principled BSDF"]
    uv = nt.nodes.new("ShaderNodeUVMap").outputs["UV"]
    if "basecolor" in files:
        nt.links.new(_texture_node(nt, folder / files["basecolor"], "sRGB", uv).outputs["Color"], bsdf.inputs["Base Color"])
    arm = None
    if "arm" in files and not ("roughness" in files and "metallic" in files):
        arm = nt.nodes.new("ShaderNodeSeparateColor")
        nt.links.new(_texture_node(nt, folder / files["arm"], "Non-Color", uv).outputs["Color"], arm.inputs["Color"])
    for role, channel in (("roughness", "Green"), ("metallic", "Blue")):
        if role in files:
            tex = _texture_node(nt, folder / files[role], "Non-Color", uv)
            nt.links.new(tex.outputs["Color"], bsdf.inputs[role.capitalize()])
        elif arm is not None:
            nt.links.new(arm.outputs[channel], bsdf.inputs[role.capitalize()])
        elif role == "metallic":
            bsdf.inputs["Metallic"].default_value = 0.0
    normal_role = "normal" if "normal" in files else ("normal_dx" if "normal_dx" in files else None)
    if normal_role:
        tex = _texture_node(nt, folder / files[normal_role], "Non-Color", uv)
        color = tex.outputs["Color"]
        if normal_role == "normal_dx":  # DirectX maps point green down: flip it to OpenGL's
            sep = nt.nodes.new("ShaderNodeSeparateColor")
            comb = nt.nodes.new("ShaderNodeCombineColor")
            inv = nt.nodes.new("ShaderNodeMath")
            inv.operation = "SUBTRACT"
            inv.inputs[0].default_value = 1.0
            nt.links.new(color, sep.inputs["Color"])
            nt.links.new(sep.outputs["Green"], inv.inputs[1])
            nt.links.new(sep.outputs["Red"], comb.inputs["Red"])
            nt.links.new(inv.outputs[0], comb.inputs["Green"])
            nt.links.new(sep.outputs["Blue"], comb.inputs["Blue"])
            color = comb.outputs["Color"]
        nmap = nt.nodes.new("ShaderNodeNormalMap")
        nmap.space = "TANGENT"
        nt.links.new(color, nmap.inputs["Color"])
        nt.links.new(nmap.outputs["Normal"], bsdf.inputs["Normal"])
    return mat


def principled_material(name: str, m: PrincipledMaterial):
    mat = bpy.data.materials.new(name)
    bsdf = mat.node_tree.nodes["Principled BSDF"]
    bsdf.inputs["Base Color"].default_value = (*m.basecolor, 1.0)
    bsdf.inputs["Roughness"].default_value = m.roughness
    bsdf.inputs["Metallic"].default_value = m.metallic
    return mat


def _transform_uvs(mesh, scale: float, rotation_deg: float) -> None:
    """uv <- R(rotation) uv * scale, in place (tiling and rotation live in the UV map)."""
    layer = mesh.uv_layers.active
    if layer is None:
        return
    uv = np.empty(len(layer.data) * 2, dtype=np.float64)
    layer.data.foreach_get("uv", uv)
    uv = uv.reshape(-1, 2)
    a = math.radians(rotation_deg)
    R = np.array([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]])
    layer.data.foreach_set("uv", (uv @ R.T * scale).ravel())


class AssetFiles:
    """Turns the spec's asset references into local files (built-in ones generated on demand)."""

    def __init__(self, cache_dir: Path | None):
        self.cache_dir = cache_dir

    def path(self, ref) -> Path:
        """The asset's local file, its bytes checked against the manifest's sha256. Raises
        AssetError when the asset is at fault (missing, changed, an unusable URI) and
        SystemFailure when reading it failed (a flaky disk or network: worth a retry)."""
        from dr.assets_manifest.resolve import AssetChanged, AssetMissing, resolve_asset
        from dr.errors import UserError

        try:
            return resolve_asset(ref.uri, dict(ref.files), ref.sha256, self.cache_dir)
        except (AssetMissing, AssetChanged, UserError) as e:
            raise AssetError(f"asset {ref.id}: {' '.join(str(e).split())[:300]}", asset_id=ref.id) from None
        except Exception as e:  # noqa: BLE001 - I/O errors, and whatever else a file system raises
            raise SystemFailure(f"asset {ref.id}: reading {ref.uri} failed: {type(e).__name__}: "
                                f"{' '.join(str(e).split())[:300]}") from None


def _material_for(obj: SceneObject, files: AssetFiles):
    m = obj.material
    if isinstance(m, PrincipledMaterial):
        return principled_material(f"dr_{obj.name}", m)
    if isinstance(m, TextureMaterial):
        folder = files.path(m.material)
        return pbr_material(f"dr_{obj.name}", folder, m.material.files)
    return None


def _import_gltf(obj: SceneObject, files: AssetFiles) -> tuple[list, list, list[str]]:
    """Import the asset's GLB; returns its new objects, their roots and what was removed (lights, cameras,
    animation) so that nothing but the spec moves or lights the scene."""
    path = files.path(obj.asset)
    before = set(bpy.data.objects)
    try:
        bpy.ops.import_scene.gltf(filepath=str(path))
    except Exception as e:  # noqa: BLE001 - the importer raises RuntimeError with Blender's report
        msg = " ".join(str(e).split())[:300]
        raise AssetError(f"asset {obj.asset.id}: glTF import failed: {msg}", asset_id=obj.asset.id) from None
    new = [o for o in bpy.data.objects if o not in before]
    removed = []
    for o in list(new):
        if o.type in ("LIGHT", "CAMERA"):
            removed.append(f"{obj.name}: {o.type.lower()} {o.name}")
            new.remove(o)
            bpy.data.objects.remove(o, do_unlink=True)
    for o in new:
        if o.animation_data is not None:
            removed.append(f"{obj.name}: animation of {o.name}")
            o.animation_data_clear()
        if o.type == "MESH" and o.data.shape_keys is not None and o.data.shape_keys.animation_data is not None:
            o.data.shape_keys.animation_data_clear()
    if not any(o.type == "MESH" for o in new):
        raise AssetError(f"asset {obj.asset.id}: the glTF file holds no mesh", asset_id=obj.asset.id)
    roots = [o for o in new if o.parent is None or o.parent not in new]
    return new, roots, removed


def _own_bounds(meshes) -> np.ndarray:
    """(2, 3) bounding box of the meshes' vertices in the asset's own coordinates (as imported)."""
    lo, hi = np.full(3, np.inf), np.full(3, -np.inf)
    for o in meshes:
        co = np.empty(len(o.data.vertices) * 3)
        o.data.vertices.foreach_get("co", co)
        if co.size == 0:
            continue
        M = np.asarray(o.matrix_world)
        p = co.reshape(-1, 3) @ M[:3, :3].T + M[:3, 3]
        lo, hi = np.minimum(lo, p.min(0)), np.maximum(hi, p.max(0))
    return np.stack([lo, hi])


def import_check(obj: SceneObject, bounds: np.ndarray) -> dict:
    """Does the imported asset rest where the spec put it? The spec's normalization was computed
    from the manifest probe's bounds (trimesh); Blender's importer must agree: at rest the object
    stands on z = 0 with the spec's height."""
    N = np.asarray(obj.normalization)
    corners = np.array([[x, y, z, 1.0] for x in bounds[:, 0] for y in bounds[:, 1] for z in bounds[:, 2]])
    rest = corners @ N.T
    min_z, height = float(rest[:, 2].min()), float(rest[:, 2].max() - rest[:, 2].min())
    ok = abs(min_z) <= 0.01 * obj.height_m + 1e-4 and abs(height - obj.height_m) <= 0.02 * obj.height_m + 1e-4
    return {"object": obj.name, "asset": obj.asset.id, "rest_min_z_m": round(min_z, 5), "rest_height_m": round(height, 5),
            "spec_height_m": obj.height_m, "agrees": ok}


def _primitive(obj: SceneObject):
    shape = obj.shape
    if shape == "cube":
        bpy.ops.mesh.primitive_cube_add(size=2.0)
    elif shape == "sphere":
        bpy.ops.mesh.primitive_uv_sphere_add(segments=128, ring_count=64, radius=1.0)
    elif shape == "cylinder":
        bpy.ops.mesh.primitive_cylinder_add(vertices=128, radius=1.0, depth=2.0)
    else:
        raise RenderError(f"unknown shape {shape!r}")
    o = bpy.context.active_object
    o.name = f"dr_{obj.name}_mesh"
    if shape != "cube":
        normals = np.empty(len(o.data.polygons) * 3)
        o.data.polygons.foreach_get("normal", normals)
        smooth = np.abs(normals.reshape(-1, 3)[:, 2]) < 0.5 if shape == "cylinder" else np.ones(len(o.data.polygons), bool)
        o.data.polygons.foreach_set("use_smooth", smooth)
    return o


def _ground(spec: SceneSpec, files: AssetFiles):
    g = spec.ground
    h = g.size_m / 2.0
    mesh = bpy.data.meshes.new("dr_ground")
    mesh.from_pydata([(-h, -h, 0.0), (h, -h, 0.0), (h, h, 0.0), (-h, h, 0.0)], [], [(0, 1, 2, 3)])
    uv = mesh.uv_layers.new(name="UVMap")
    uv.data.foreach_set("uv", [-h, -h, h, -h, h, h, -h, h])
    mesh.update()
    _transform_uvs(mesh, 1.0 / g.material.tile_m, g.material.rotation_deg)
    o = bpy.data.objects.new("dr_ground", mesh)
    bpy.context.scene.collection.objects.link(o)
    mesh.materials.append(pbr_material("dr_ground", files.path(g.material.material), g.material.material.files))
    return o


def _world(spec: SceneSpec, hdri_path: Path, frames: range):
    world = bpy.data.worlds.new("dr_world")
    bpy.context.scene.world = world
    nt = world.node_tree
    for n in list(nt.nodes):
        nt.nodes.remove(n)
    coord = nt.nodes.new("ShaderNodeTexCoord")
    mapping = nt.nodes.new("ShaderNodeMapping")
    mapping.vector_type = "VECTOR"
    env = nt.nodes.new("ShaderNodeTexEnvironment")
    env.image = _image(hdri_path, "Linear Rec.709")
    env.interpolation = "Linear"
    env.projection = "EQUIRECTANGULAR"
    # The world rotates per frame, so Cycles rebuilds its importance map every frame; at
    # AUTOMATIC resolution that costs ~0.6 s a frame on 2 cores, at the image's own width 40 ms.
    world.cycles.sampling_method = "MANUAL"
    world.cycles.sample_map_resolution = int(min(2048, max(256, env.image.size[0])))
    bg = nt.nodes.new("ShaderNodeBackground")
    bg.inputs["Strength"].default_value = spec.light.strength
    out = nt.nodes.new("ShaderNodeOutputWorld")
    nt.links.new(coord.outputs["Generated"], mapping.inputs["Vector"])
    nt.links.new(mapping.outputs["Vector"], env.inputs["Vector"])
    nt.links.new(env.outputs["Color"], bg.inputs["Color"])
    nt.links.new(bg.outputs["Background"], out.inputs["Surface"])
    # the texture is looked up along env_to_world[t]^T w: the Mapping node's rotation
    rot = mapping.inputs["Rotation"]
    prev = None
    for t in frames:
        R = Matrix(np.asarray(spec.light.env_to_world[t]).T.tolist())
        e = R.to_euler("XYZ", prev) if prev is not None else R.to_euler("XYZ")
        prev = e
        rot.default_value = e
        rot.keyframe_insert("default_value", frame=t)
    _constant_interpolation(nt)
    return world


def _camera(spec: SceneSpec, frames: range):
    cam = bpy.data.cameras.new("dr_camera")
    W, H = spec.width, spec.height
    size = max(W, H)
    K0 = spec.K(0)
    for t in frames:
        K = spec.K(t)
        if not np.allclose(K, K0, rtol=0, atol=1e-6):
            raise RenderError("intrinsics that change over the clip are not supported by the Blender camera")
    if abs(K0[0, 0] - K0[1, 1]) > 1e-6 * K0[0, 0] or abs(K0[0, 1]) > 1e-9:
        raise RenderError("the Blender camera needs square pixels and no skew (fx == fy, K[0,1] == 0)")
    cam.sensor_fit = "AUTO"
    cam.lens_unit = "FOV"
    cam.angle = 2.0 * math.atan(0.5 * size / K0[0, 0])
    cam.shift_x = (W / 2.0 - K0[0, 2]) / size
    cam.shift_y = (K0[1, 2] - H / 2.0) / size
    cam.clip_start, cam.clip_end = CLIP_START_M, CLIP_END_M
    o = bpy.data.objects.new("dr_camera", cam)
    bpy.context.scene.collection.objects.link(o)
    bpy.context.scene.camera = o
    _key_matrix(o, spec.camera.c2w, frames)
    return o


def build_scene(spec: SceneSpec, files: AssetFiles, hdri_path: Path, with_aovs: bool = True) -> BuiltScene:
    """Build the spec into the current (empty) Blender file. ``with_aovs=False`` leaves the
    material passes out (used only to measure their cost)."""
    scene = bpy.context.scene
    frames = range(spec.frames)
    scene.frame_start, scene.frame_end = 0, max(spec.frames - 1, 0)
    scene.render.fps = max(1, round(spec.fps))
    scene.render.resolution_x, scene.render.resolution_y = spec.width, spec.height
    scene.render.resolution_percentage = 100

    removed: list[str] = []
    checks: list[dict] = []
    roots: dict[str, object] = {}
    meshes = []
    for obj in spec.objects:
        root = bpy.data.objects.new(f"dr_{obj.name}", None)
        scene.collection.objects.link(root)
        if obj.shape == "asset":
            new, tops, gone = _import_gltf(obj, files)
            removed += gone
            new_meshes = [o for o in new if o.type == "MESH"]
            meshes += new_meshes
            bpy.context.view_layer.update()
            check = import_check(obj, _own_bounds(new_meshes))
            if not check["agrees"]:
                # the spec was placed from the manifest probe's bounds: a clip from a disagreeing import would
                # float, sink or have the wrong size, so it fails as the asset's fault (quarantined, re-sampled)
                raise AssetError(f"asset {obj.asset.id}: Blender's import disagrees with the manifest's probe (at rest "
                                 f"lowest z {check['rest_min_z_m']} m, height {check['rest_height_m']} m; the spec "
                                 f"expects 0 and {obj.height_m:g} m)", asset_id=obj.asset.id)
            checks.append(check)
        else:
            tops = [_primitive(obj)]
            meshes += tops
            mat = _material_for(obj, files)
            if isinstance(obj.material, TextureMaterial):
                _transform_uvs(tops[0].data, obj.size_m / obj.material.tile_m, obj.material.rotation_deg)
            tops[0].data.materials.append(mat)
        for top in tops:
            world = top.matrix_world.copy()
            top.parent = root
            top.matrix_parent_inverse = Matrix.Identity(4)
            top.matrix_basis = world
        _key_matrix(root, obj.transforms, frames)
        roots[obj.name] = root

    ground = _ground(spec, files)
    meshes.append(ground)
    _camera(spec, frames)
    _world(spec, hdri_path, frames)

    reports = []
    if with_aovs:
        register_aovs(scene.view_layers[0])
        seen = set()
        for m in meshes:
            if not m.material_slots:
                m.data.materials.append(default_material())
            for slot in m.material_slots:
                if slot.material is None:
                    slot.material = default_material()
                mat = slot.material
                if mat.name in seen:
                    continue
                seen.add(mat.name)
                rep = tap_material(mat, scene.view_layers[0].pass_alpha_threshold)
                if mat.name == NO_MATERIAL:
                    rep["fallback"] = rep["fallback"] or "mesh without a material: Blender's default Principled BSDF"
                reports.append(rep)
    return BuiltScene(scene=scene, camera=scene.camera, objects=roots, materials=reports, removed=removed,
                      import_checks=checks)
