"""Alpha-cut-out materials (issue 9, defect 16): a glTF card whose texture is transparent on its
left half (alphaMode MASK, and BLEND) gives the same passes as a card cut to its opaque half;
on the cut-out half every pass describes the wall behind, as rgb and the normal pass do.

bpy runs in a child interpreter (as in the render worker), with Blender's folders in tmp."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from dr.render.worker import blender_env
from dr.srgb import srgb_to_linear

CARD_SRGB = (200, 40, 40)  # the card's texture colour, 8-bit sRGB
CARD_ROUGHNESS = 0.3
WALL = {"basecolor": (0.1, 0.3, 0.9), "roughness": 0.8, "metallic": 0.0}
N = 32  # pixels; the orthographic camera sees x in [-0.5, 0.5] m, one column = 1/32 m

SCRIPT = textwrap.dedent('''
    import json, math, sys
    import bpy
    import numpy as np
    from dr.render.aov_taps import register_aovs, tap_material
    from dr.render.exr import read_layers
    from dr.render.passes import frame_passes

    out_dir, wall = sys.argv[1], json.loads(sys.argv[2])
    results = {}
    for name, glb in json.loads(sys.argv[3]).items():
        bpy.ops.wm.read_factory_settings(use_empty=True)
        scene = bpy.context.scene
        scene.render.engine = "CYCLES"
        scene.cycles.samples = 4
        scene.cycles.use_denoising = False
        scene.render.resolution_x = scene.render.resolution_y = %d
        vl = scene.view_layers[0]
        register_aovs(vl)
        vl.use_pass_normal = True
        vl.pass_alpha_threshold = 0.5
        world = bpy.data.worlds.new("w")
        scene.world = world
        world.color = (0.5, 0.5, 0.5)
        bpy.ops.import_scene.gltf(filepath=glb)
        bpy.ops.mesh.primitive_plane_add(size=4.0, location=(0, 1.0, 0.5), rotation=(math.pi / 2, 0, 0))
        plane = bpy.context.active_object
        m = bpy.data.materials.new("wall")
        p = m.node_tree.nodes["Principled BSDF"]
        p.inputs["Base Color"].default_value = (*wall["basecolor"], 1)
        p.inputs["Roughness"].default_value = wall["roughness"]
        p.inputs["Metallic"].default_value = wall["metallic"]
        plane.data.materials.append(m)
        cam = bpy.data.objects.new("cam", bpy.data.cameras.new("cam"))
        scene.collection.objects.link(cam)
        scene.camera = cam
        cam.location = (0, -3.0, 0.5)
        cam.rotation_euler = (math.pi / 2, 0, 0)
        cam.data.type = "ORTHO"
        cam.data.ortho_scale = 1.0
        reports = [tap_material(mt, vl.pass_alpha_threshold) for mt in bpy.data.materials if mt.users]
        exr = out_dir + f"/{name}.exr"
        scene.render.image_settings.media_type = "MULTI_LAYER_IMAGE"
        scene.render.image_settings.file_format = "OPEN_EXR_MULTILAYER"
        scene.render.image_settings.color_depth = "32"
        scene.render.filepath = exr
        bpy.ops.render.render(write_still=True)
        c2w = np.array(cam.matrix_world)
        passes = frame_passes(read_layers(exr), c2w)
        np.savez(out_dir + f"/{name}.npz", **{k: v.astype(np.float32) for k, v in passes.items()})
        results[name] = reports
    print("RESULT " + json.dumps(results))
''' % N)


def write_card(path, alpha_mode: str | None, half: bool) -> None:
    """A 1 m square card in glTF's XY plane (Blender: x in [-0.5, 0.5], z in [0, 1], facing -y),
    textured CARD_SRGB; ``alpha_mode``: the texture's left half is alpha 0 under that mode.
    ``half``: only the right half of the card, opaque (the reference)."""
    import trimesh
    from PIL import Image
    from trimesh.visual import TextureVisuals
    from trimesh.visual.material import PBRMaterial

    x0 = 0.0 if half else -0.5
    verts = np.array([[x0, 0, 0], [0.5, 0, 0], [0.5, 1, 0], [x0, 1, 0]], float)
    uv = np.array([[x0 + 0.5, 0], [1, 0], [1, 1], [x0 + 0.5, 1]], float)
    faces = np.array([[0, 1, 2], [0, 2, 3]])
    img = np.zeros((8, 8, 4), np.uint8)
    img[..., :3] = CARD_SRGB
    img[..., 3] = 255
    if alpha_mode:
        img[:, :4, 3] = 0  # u < 0.5: x < 0
    kw = {"alphaMode": alpha_mode, "alphaCutoff": 0.5} if alpha_mode == "MASK" else \
        {"alphaMode": alpha_mode} if alpha_mode else {}
    mat = PBRMaterial(name="card", baseColorTexture=Image.fromarray(img, "RGBA"), roughnessFactor=CARD_ROUGHNESS,
                      metallicFactor=0.0, doubleSided=True, **kw)
    mesh = trimesh.Trimesh(verts, faces, process=False, visual=TextureVisuals(uv=uv, material=mat))
    path.write_bytes(trimesh.Scene(mesh).export(file_type="glb"))


@pytest.fixture(scope="module")
def renders(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("alpha")
    cards = {}
    for name, mode, half in (("mask", "MASK", False), ("blend", "BLEND", False), ("half", None, True)):
        cards[name] = str(tmp / f"{name}.glb")
        write_card(tmp / f"{name}.glb", mode, half)
    env = {**os.environ, **blender_env(tmp / "cache", tmp / "tmp")}
    r = subprocess.run([sys.executable, "-c", SCRIPT, str(tmp), json.dumps(WALL), json.dumps(cards)],
                       capture_output=True, text=True, env=env, timeout=300)
    line = [ln for ln in r.stdout.splitlines() if ln.startswith("RESULT ")]
    assert line, r.stdout[-2000:] + r.stderr[-2000:]
    reports = json.loads(line[0][len("RESULT "):])
    return {name: dict(np.load(tmp / f"{name}.npz")) for name in cards}, reports


# columns well inside each half: the texture's alpha ramps over one texel (1/8 m) around x = 0,
# and the pixel filter (1.5 px wide) reaches past the card's right edge, which is the image's
CUT, OPAQUE = slice(0, N // 2 - 3), slice(N // 2 + 3, N - 2)


@pytest.mark.parametrize("mode", ["mask", "blend"])
def test_cut_out_half_shows_the_wall_in_every_pass(renders, mode):
    p, reports = renders
    got = p[mode]
    card = next(r for r in reports[mode] if r["material"] != "wall")
    assert card["alpha_cut"] == "where alpha < threshold"
    assert next(r for r in reports["half"] if r["material"] != "wall")["alpha_cut"] == "none"
    rows = slice(4, N - 4)  # the card spans the whole height; the wall is behind it everywhere
    cut = {k: v[rows, CUT] for k, v in got.items()}
    assert (cut["mask"] == 1).all()
    assert np.allclose(cut["basecolor"], WALL["basecolor"], atol=2e-3)
    assert np.allclose(cut["roughness"], WALL["roughness"], atol=2e-3)
    assert np.allclose(cut["metallic"], WALL["metallic"], atol=2e-3)
    assert np.allclose(cut["depth"], 4.0, atol=2e-3)  # the wall: 4 m from the camera; the card: 3 m
    assert np.allclose(cut["normal"], [0, 0, 1], atol=2e-3)  # facing the camera (camera space, OpenGL)
    opaque = {k: v[rows, OPAQUE] for k, v in got.items()}
    card_lin = srgb_to_linear(np.array(CARD_SRGB) / 255.0)
    assert np.allclose(opaque["basecolor"], card_lin, atol=3e-3)
    assert np.allclose(opaque["roughness"], CARD_ROUGHNESS, atol=2e-3)
    assert np.allclose(opaque["depth"], 3.0, atol=2e-3)


@pytest.mark.parametrize("mode", ["mask", "blend"])
def test_a_cut_out_card_renders_as_its_opaque_part(renders, mode):
    """Against the card cut to its opaque half in geometry: every pass equal away from the
    texel where the alpha ramps; rgb too (it shows what the passes describe)."""
    p, _ = renders
    got, ref = p[mode], p["half"]
    cols = np.r_[0:N // 2 - 3, N // 2 + 3:N]
    for k in ("basecolor", "roughness", "metallic", "depth", "normal", "mask"):
        assert np.allclose(got[k][:, cols], ref[k][:, cols], atol=2e-3), k
    assert np.abs(got["rgb"][:, cols] - ref["rgb"][:, cols]).mean() < 0.02
