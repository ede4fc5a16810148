"""AOV taps through Mix / Add shaders and BSDFs other than Principled, rendered by Cycles.

bpy runs in a child interpreter (as in the render worker), with Blender's folders in tmp."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

from dr.render.worker import blender_env

SCRIPT = textwrap.dedent('''
    import json, sys
    import bpy
    from dr.render.aov_taps import register_aovs, tap_material
    from dr.render.exr import read_layers
    from dr.render.passes import frame_passes
    import numpy as np

    bpy.ops.wm.read_factory_settings(use_empty=True)
    scene = bpy.context.scene
    scene.render.engine = "CYCLES"
    scene.cycles.samples = 4
    scene.cycles.use_denoising = False
    scene.render.resolution_x = scene.render.resolution_y = 16
    register_aovs(scene.view_layers[0])
    scene.view_layers[0].use_pass_normal = True

    def principled(nt, base, rough, metal):
        n = nt.nodes.new("ShaderNodeBsdfPrincipled")
        n.inputs["Base Color"].default_value = (*base, 1)
        n.inputs["Roughness"].default_value = rough
        n.inputs["Metallic"].default_value = metal
        return n

    def material(kind):
        mat = bpy.data.materials.new(kind)
        nt = mat.node_tree
        for n in list(nt.nodes):
            if n.bl_idname != "ShaderNodeOutputMaterial":
                nt.nodes.remove(n)
        out = nt.nodes["Material Output"]
        a = principled(nt, (0.8, 0.2, 0.1), 0.2, 0.0)
        b = principled(nt, (0.1, 0.3, 0.9), 0.8, 1.0)
        if kind in ("mix_const", "mix_linked"):
            mix = nt.nodes.new("ShaderNodeMixShader")
            if kind == "mix_const":
                mix.inputs[0].default_value = 0.25
            else:
                v = nt.nodes.new("ShaderNodeValue")
                v.outputs[0].default_value = 0.6
                nt.links.new(v.outputs[0], mix.inputs[0])
            nt.links.new(a.outputs[0], mix.inputs[1])
            nt.links.new(b.outputs[0], mix.inputs[2])
            nt.links.new(mix.outputs[0], out.inputs["Surface"])
        elif kind == "add":
            add = nt.nodes.new("ShaderNodeAddShader")
            nt.links.new(a.outputs[0], add.inputs[0])
            nt.links.new(b.outputs[0], add.inputs[1])
            nt.links.new(add.outputs[0], out.inputs["Surface"])
        elif kind == "glossy":
            g = nt.nodes.new("ShaderNodeBsdfGlossy")
            g.inputs["Color"].default_value = (0.5, 0.6, 0.7, 1)
            g.inputs["Roughness"].default_value = 0.35
            nt.links.new(g.outputs[0], out.inputs["Surface"])
        elif kind.startswith("transparent_"):  # Mix(fac, A, Transparent BSDF): alpha = 1 - fac
            mix = nt.nodes.new("ShaderNodeMixShader")
            mix.inputs[0].default_value = float(kind.split("_")[1]) / 100
            tr = nt.nodes.new("ShaderNodeBsdfTransparent")
            nt.links.new(a.outputs[0], mix.inputs[1])
            nt.links.new(tr.outputs[0], mix.inputs[2])
            nt.links.new(mix.outputs[0], out.inputs["Surface"])
        elif kind == "emission":
            e = nt.nodes.new("ShaderNodeEmission")
            nt.links.new(e.outputs[0], out.inputs["Surface"])
        return mat

    bpy.ops.mesh.primitive_plane_add(size=2.0)
    plane = bpy.context.active_object
    cam = bpy.data.objects.new("cam", bpy.data.cameras.new("cam"))
    scene.collection.objects.link(cam)
    scene.camera = cam
    cam.location = (0, 0, 1.0)
    cam.data.angle = 1.0
    results = {}
    for kind in sys.argv[2:]:
        mat = material(kind)
        report = tap_material(mat)
        plane.data.materials.clear()
        plane.data.materials.append(mat)
        exr = sys.argv[1] + f"/{kind}.exr"
        scene.render.image_settings.media_type = "MULTI_LAYER_IMAGE"
        scene.render.image_settings.file_format = "OPEN_EXR_MULTILAYER"
        scene.render.image_settings.color_depth = "32"
        scene.render.filepath = exr
        bpy.ops.render.render(write_still=True)
        p = frame_passes(read_layers(exr), np.eye(4))
        results[kind] = {"report": report,
                         **{k: np.median(p[k].astype(np.float32).reshape(-1, p[k].shape[-1]), 0).tolist()
                            for k in ("basecolor", "roughness", "metallic", "normal", "depth", "mask")}}
    print("RESULT " + json.dumps(results))
''')

A = {"basecolor": (0.8, 0.2, 0.1), "roughness": 0.2, "metallic": 0.0}
B = {"basecolor": (0.1, 0.3, 0.9), "roughness": 0.8, "metallic": 1.0}


def _mix(f):
    return {"basecolor": [(1 - f) * a + f * b for a, b in zip(A["basecolor"], B["basecolor"])],
            "roughness": (1 - f) * A["roughness"] + f * B["roughness"],
            "metallic": (1 - f) * A["metallic"] + f * B["metallic"]}


@pytest.fixture(scope="module")
def taps(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("taps")
    env = {**os.environ, **blender_env(tmp / "cache", tmp / "tmp")}
    r = subprocess.run([sys.executable, "-c", SCRIPT, str(tmp), "mix_const", "mix_linked", "add", "glossy", "emission",
                        "transparent_20", "transparent_70"],
                       capture_output=True, text=True, env=env, timeout=300)
    line = [ln for ln in r.stdout.splitlines() if ln.startswith("RESULT ")]
    assert line, r.stdout[-2000:] + r.stderr[-2000:]
    return json.loads(line[0][len("RESULT "):])


@pytest.mark.parametrize("kind, truth, tapped", [
    ("mix_const", _mix(0.25), True),
    ("mix_linked", _mix(0.6), True),
    ("add", _mix(0.5), True),
    ("glossy", {"basecolor": (0.5, 0.6, 0.7), "roughness": 0.35, "metallic": 1.0}, True),
    ("emission", {"basecolor": (0.5, 0.5, 0.5), "roughness": 0.5, "metallic": 0.0}, False),
])
def test_taps_through_shader_trees(taps, kind, truth, tapped):
    got = taps[kind]
    assert got["mask"] == [1.0]
    assert got["basecolor"] == pytest.approx(list(truth["basecolor"]), abs=1e-3)
    assert got["roughness"] == pytest.approx([truth["roughness"]], abs=1e-3)
    assert got["metallic"] == pytest.approx([truth["metallic"]], abs=1e-3)
    # the camera looks straight down at the plane from 1 m: normal +z (towards it), depth 1
    assert got["normal"] == pytest.approx([0.0, 0.0, 1.0], abs=1e-3)
    assert got["depth"] == pytest.approx([1.0], abs=1e-3)
    assert got["report"]["tapped"] is tapped
    if not tapped:
        assert "Emission" in got["report"]["fallback"]
    if kind == "add":
        assert any("Add Shader averaged" in n for n in got["report"]["notes"])


def test_a_transparent_bsdf_mixed_in_gates_the_taps(taps):
    """Mix(fac, A, Transparent BSDF) has alpha 1 - fac: at fac 0.2 (alpha 0.8, above the pass
    alpha threshold 0.5) the passes are A's alone, not diluted by the transparent side; at fac
    0.7 (alpha 0.3) the plane is not there for any pass, as for the normal pass (nothing behind
    it: background, mask 0)."""
    got = taps["transparent_20"]
    assert got["mask"] == [1.0]
    assert got["basecolor"] == pytest.approx(list(A["basecolor"]), abs=1e-3)
    assert got["roughness"] == pytest.approx([A["roughness"]], abs=1e-3)
    assert got["depth"] == pytest.approx([1.0], abs=1e-3)
    assert got["report"]["alpha_cut"] == "none"  # a constant alpha of 0.8: no gate nodes
    gone = taps["transparent_70"]
    assert gone["mask"] == [0.0] and gone["normal"] == [0.0, 0.0, 0.0]
    assert gone["basecolor"] == [0.0, 0.0, 0.0] and gone["depth"] == [0.0]
    assert gone["report"]["alpha_cut"] == "everywhere"
