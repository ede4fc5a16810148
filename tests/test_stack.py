"""The pinned stack works together: bpy, Ray and pyarrow in one environment with numpy < 2."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
import tempfile


def test_bpy_ray_and_pyarrow_coexist(tmp_path):
    # Ray's socket paths must stay short: a temp folder under /tmp
    ray_tmp = tempfile.mkdtemp(prefix="drray-", dir="/tmp")
    home = tmp_path / "home"
    home.mkdir()
    code = f"""
import numpy, pyarrow, ray
assert int(numpy.__version__.split('.')[0]) < 2, numpy.__version__
import bpy
assert bpy.app.version[:2] == (5, 0), bpy.app.version_string

@ray.remote
def work(n):
    import numpy as np, pyarrow as pa
    t = pa.table({{'x': np.arange(n)}})
    return int(pa.compute.sum(t['x']).as_py())

ray.init(num_cpus=1, include_dashboard=False, _temp_dir={ray_tmp!r}, log_to_driver=False)
print(ray.get(work.remote(1000)), bpy.app.version_string)
ray.shutdown()
"""
    env = {**os.environ, "HOME": str(home), "BLENDER_USER_RESOURCES": str(tmp_path / "blender"),
           "XDG_CACHE_HOME": str(tmp_path / "xdg"), "RAY_USAGE_STATS_ENABLED": "0",
           # a token of our own: without one Ray writes ~/.ray/auth_token
           "RAY_AUTH_TOKEN": secrets.token_hex(32)}
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stdout.split()[:2] == ["499500", "5.0.1"]
    # nothing was written to the (private) home folder
    assert not any(home.rglob("*")), sorted(str(p) for p in home.rglob("*"))
