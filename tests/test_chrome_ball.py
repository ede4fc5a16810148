"""DESIGN section 2's proof of the real-clip env frame: a Cycles render of a chrome ball in a known
HDRI, unwrapped by dr.labeling.chrome_ball, equals that HDRI through cam_to_env; the perspective
unwrap beats DiffusionLight's orthographic one on a ball that covers a wide angle.

bpy runs in a child interpreter (as in the render worker), with Blender's folders in tmp."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from dr.labeling.chrome_ball import M_CAM_TO_ENV, ball_to_equirect, real_cam_to_env
from dr.render.worker import blender_env
from dr.shards.envmap import sample_env, uv_to_direction

N = 160  # pixels
FOV_DEG = 40.0
ALPHA_DEG = 16.0  # the angular radius of the ball as the camera sees it

SCRIPT = textwrap.dedent('''
    import json, math, sys
    import bpy
    import numpy as np
    from dr.render.exr import read_layers

    out, sky, n, fov, dist = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4]), float(sys.argv[5])
    bpy.ops.wm.read_factory_settings(use_empty=True)
    scene = bpy.context.scene
    scene.render.engine = "CYCLES"
    scene.cycles.samples = 64
    scene.cycles.use_denoising = False
    scene.render.resolution_x = scene.render.resolution_y = n
    world = bpy.data.worlds.new("w")
    scene.world = world
    nt = world.node_tree
    tex = nt.nodes.new("ShaderNodeTexEnvironment")
    tex.image = bpy.data.images.load(sky)
    nt.links.new(tex.outputs["Color"], nt.nodes["Background"].inputs["Color"])
    bpy.ops.mesh.primitive_uv_sphere_add(segments=256, ring_count=128, radius=1.0, location=(0, 0, 0))
    ball = bpy.context.active_object
    bpy.ops.object.shade_smooth()
    m = bpy.data.materials.new("chrome")
    p = m.node_tree.nodes["Principled BSDF"]
    p.inputs["Base Color"].default_value = (1, 1, 1, 1)
    p.inputs["Metallic"].default_value = 1.0
    p.inputs["Roughness"].default_value = 0.0
    ball.data.materials.append(m)
    cam = bpy.data.objects.new("cam", bpy.data.cameras.new("cam"))
    scene.collection.objects.link(cam)
    scene.camera = cam
    cam.location = (0.3, -dist, 0.2)
    cam.rotation_euler = (math.pi / 2 - math.atan2(0.2, dist), 0, math.atan2(0.3, dist))
    cam.data.angle = math.radians(fov)
    bpy.context.view_layer.update()
    scene.render.image_settings.media_type = "MULTI_LAYER_IMAGE"
    scene.render.image_settings.file_format = "OPEN_EXR_MULTILAYER"
    scene.render.image_settings.color_depth = "32"
    scene.render.filepath = out + "/ball.exr"
    bpy.ops.render.render(write_still=True)
    rgb = read_layers(out + "/ball.exr", scene.view_layers[0].name, ("combined",))["combined"][..., :3]
    np.save(out + "/ball.npy", rgb.astype(np.float32))
    print("RESULT " + json.dumps({"c2w": [list(r) for r in cam.matrix_world]}))
''')


@pytest.fixture(scope="module")
def ball(tmp_path_factory):
    from render_scenes import sky, write_exr

    tmp = tmp_path_factory.mktemp("ball")
    env = sky(64)
    write_exr(tmp / "sky.exr", env)
    dist = 1.0 / math.sin(math.radians(ALPHA_DEG))
    r = subprocess.run([sys.executable, "-c", SCRIPT, str(tmp), str(tmp / "sky.exr"), str(N), str(FOV_DEG), str(dist)],
                       capture_output=True, text=True, env={**os.environ, **blender_env(tmp / "cache", tmp / "tmp")},
                       timeout=300)
    line = [ln for ln in r.stdout.splitlines() if ln.startswith("RESULT ")]
    assert line, r.stdout[-2000:] + r.stderr[-2000:]
    c2w = np.array(json.loads(line[0][len("RESULT "):])["c2w"])
    return np.load(tmp / "ball.npy"), c2w, env


def test_the_unwrapped_ball_is_the_hdri_through_cam_to_env(ball):
    image, c2w, env = ball
    f = (N / 2) / math.tan(math.radians(FOV_DEG) / 2)
    K = np.array([[f, 0, N / 2], [0, f, N / 2], [0, 0, 1]])
    # where the ball is in the image: the ray to its centre, and the radius of its silhouette
    R = c2w[:3, :3]
    to_ball = R.T @ (np.zeros(3) - c2w[:3, 3])
    cu, cv = K[0, 2] + f * to_ball[0] / -to_ball[2], K[1, 2] - f * to_ball[1] / -to_ball[2]
    radius = f * math.tan(math.radians(ALPHA_DEG))
    # the truth: a direction e of the env frame is the camera direction M^T e, the world one R M^T e
    He = 32
    v, u = np.meshgrid((np.arange(He) + 0.5) / He, (np.arange(2 * He) + 0.5) / (2 * He), indexing="ij")
    e = uv_to_direction(u, v)
    truth = sample_env(env, e @ M_CAM_TO_ENV @ R.T)  # row-wise R M^T e
    errs = {}
    for name, k in (("orthographic", None), ("perspective", K)):
        est, valid = ball_to_equirect(image, (cu, cv), radius, He, K=k, rim=0.9)
        assert valid.mean() > 0.5, (name, valid.mean())
        rel = np.abs(est - truth).mean(-1) / truth.mean(-1)
        errs[name] = float(np.median(rel[valid]))
    print(f"median relative error: orthographic {errs['orthographic']:.4f}, perspective {errs['perspective']:.4f}")
    assert errs["perspective"] < 0.01, errs  # measured: perspective 0.0037, orthographic 0.046
    assert errs["perspective"] < 0.25 * errs["orthographic"], errs


def test_real_cam_to_env_follows_the_camera():
    """At the reference frame the view direction is env +X and the camera's up env +Z; a camera
    that turns left by 30 degrees sees, along its view, the env direction 30 degrees to the left."""
    def c2w(yaw_deg):
        a = math.radians(yaw_deg)
        m = np.eye(4)
        m[:3, :3] = [[math.cos(a), -math.sin(a), 0], [math.sin(a), math.cos(a), 0], [0, 0, 1]]
        return m @ np.array([[1, 0, 0, 0], [0, 0, -1, 0], [0, 1, 0, 0], [0, 0, 0, 1]])  # camera looking +y, up +z

    ce = real_cam_to_env(np.stack([c2w(0), c2w(30)]), ref=0)
    assert np.allclose(ce[0] @ [0, 0, -1], [1, 0, 0]) and np.allclose(ce[0] @ [0, 1, 0], [0, 0, 1])
    assert np.allclose(ce[0] @ [-1, 0, 0], [0, 1, 0])
    view = ce[1] @ [0, 0, -1]
    assert np.allclose(view, [math.cos(math.radians(30)), math.sin(math.radians(30)), 0], atol=1e-12)
    assert all(np.allclose(m @ m.T, np.eye(3)) and np.isclose(np.linalg.det(m), 1) for m in ce)
