"""Blender's glTF importer and the manifest probe (trimesh) agree on every built-in object's
bounds in Z-up metres: the spec's normalization, computed from the probe, puts what Blender
renders on the ground plane."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import numpy as np

from dr.render.worker import blender_env

SCRIPT = textwrap.dedent('''
    import json, sys
    import bpy
    from dr.render.blender_scene import _own_bounds
    out = {}
    for path in sys.argv[1:]:
        bpy.ops.wm.read_factory_settings(use_empty=True)
        bpy.ops.import_scene.gltf(filepath=path)
        bpy.context.view_layer.update()
        meshes = [o for o in bpy.data.objects if o.type == "MESH"]
        out[path] = _own_bounds(meshes).tolist()
    print("RESULT " + json.dumps(out))
''')


def test_blender_import_bounds_equal_the_probe_bounds(builtin_manifest, cache_dir, tmp_path):
    from dr.assets_manifest.resolve import resolve_uri

    objects = builtin_manifest.usable("object")
    paths = {str(resolve_uri(r.uri, cache_dir)): r for r in objects}
    env = {**os.environ, **blender_env(tmp_path / "cache", tmp_path / "tmp")}
    r = subprocess.run([sys.executable, "-c", SCRIPT, *paths], capture_output=True, text=True, env=env, timeout=300)
    line = [ln for ln in r.stdout.splitlines() if ln.startswith("RESULT ")]
    assert line, r.stdout[-2000:] + r.stderr[-2000:]
    got = json.loads(line[0][len("RESULT "):])
    assert len(got) == len(objects) == 30
    for path, rec in paths.items():
        assert np.allclose(got[path], rec.stats["bounds_zup"], atol=1e-4), rec.id
