"""The env-map geometry and encodings against DESIGN.md section 2, computed independently."""

from __future__ import annotations

import math

import numpy as np
import pytest

from dr.shards import envmap


def test_grid_directions_match_the_documented_layout():
    h, w = 8, 16
    d = envmap.camera_directions(h, w)
    assert np.allclose(np.linalg.norm(d, axis=-1), 1.0)
    # top row points up (+y), the bottom row down
    assert d[0, :, 1].min() > 0.98 and d[-1, :, 1].max() < -0.98
    # centre column (between j = w/2 - 1 and w/2) is +z, the edges -z, 3/4 of the width +x, 1/4 -x
    mid = h // 2
    centre = (d[mid - 1, w // 2 - 1] + d[mid - 1, w // 2]) / 2
    assert centre[2] > 0.95
    assert d[mid - 1, 0, 2] < -0.95 and d[mid - 1, -1, 2] < -0.95
    assert ((d[mid - 1, 3 * w // 4 - 1] + d[mid - 1, 3 * w // 4]) / 2)[0] > 0.95
    assert ((d[mid - 1, w // 4 - 1] + d[mid - 1, w // 4]) / 2)[0] < -0.95
    # one pixel by the formula, scalar
    i, j = 2, 11
    th, ph = math.pi * (i + 0.5) / h, math.pi * (2 * (j + 0.5) / w - 1)
    assert np.allclose(d[i, j], [math.sin(th) * math.sin(ph), math.cos(th), math.sin(th) * math.cos(ph)])


@pytest.mark.parametrize("e, uv", [
    ((1, 0, 0), (0.5, 0.5)),      # +x: the middle of the map
    ((0, 1, 0), (0.25, 0.5)),     # +y: a quarter
    ((0, -1, 0), (0.75, 0.5)),
    ((-1, 0, 0), (0.0, 0.5)),     # -x: the seam
    ((0, 0, 1), (None, 0.0)),     # zenith: top row
    ((0, 0, -1), (None, 1.0)),
])
def test_equirect_convention(e, uv):
    u, v = envmap.direction_to_uv(np.array(e, dtype=float))
    if uv[0] is not None:
        assert float(u) == pytest.approx(uv[0]) or (uv[0] == 0.0 and float(u) == pytest.approx(1.0))
    assert float(v) == pytest.approx(uv[1], abs=1e-12)


def test_uv_round_trip():
    rng = np.random.default_rng(1)
    e = rng.normal(size=(1000, 3))
    e /= np.linalg.norm(e, axis=-1, keepdims=True)
    u, v = envmap.direction_to_uv(e)
    assert np.allclose(envmap.uv_to_direction(u, v), e, atol=1e-12)


def test_sample_env_hits_texel_centres_and_interpolates():
    rng = np.random.default_rng(2)
    env = rng.uniform(0, 5, size=(6, 12, 3)).astype(np.float32)
    rows, cols = np.meshgrid(np.arange(6), np.arange(12), indexing="ij")
    d = envmap.uv_to_direction((cols + 0.5) / 12, (rows + 0.5) / 6)
    assert np.allclose(envmap.sample_env(env, d), env, atol=1e-5)
    # half way between two texels of a row, across the seam: the mean of the last and first column
    d = envmap.uv_to_direction(np.array([0.0]), np.array([2.5 / 6]))
    assert np.allclose(envmap.sample_env(env, d)[0], (env[2, 0] + env[2, -1]) / 2, atol=1e-5)


def _srgb(x):
    return 12.92 * x if x <= 0.0031308 else 1.055 * x ** (1 / 2.4) - 0.055


def test_encodings_follow_the_formulas_pixel_by_pixel():
    rng = np.random.default_rng(3)
    env = rng.uniform(0, 50, size=(16, 32, 3)).astype(np.float32)
    env[3, 4] = [1e6, np.nan, -3.0]  # must be made finite and clamped
    a = np.radians(70.0)
    cam_to_env = np.array([[np.cos(a), 0, np.sin(a)], [0, 1, 0], [-np.sin(a), 0, np.cos(a)]]) @ \
        np.array([[1, 0, 0], [0, 0, -1], [0, 1, 0]])
    h, w = 5, 10
    enc = envmap.encode_env(env, cam_to_env, h, w)
    d = envmap.camera_directions(h, w)
    for i, j in [(0, 0), (2, 7), (4, 9), (1, 3)]:
        E = envmap.sample_env(env, cam_to_env @ d[i, j])
        E = np.clip(np.nan_to_num(E, nan=0.0, posinf=65504), 0, 65504)
        for c in range(3):
            x = float(E[c])
            ldr = _srgb(min(max(x * (1 + x / 256) / (1 + x), 0.0), 1.0))
            log = _srgb(min(max(math.log1p(x) / math.log1p(10000), 0.0), 1.0))
            assert enc["env_ldr"][i, j, c] == pytest.approx(ldr, abs=1e-5)
            assert enc["env_log"][i, j, c] == pytest.approx(log, abs=1e-5)
        assert np.allclose(enc["env_nrm"][i, j], d[i, j] * 0.5 + 0.5, atol=1e-6)
    assert all(np.isfinite(v).all() and v.min() >= 0 and v.max() <= 1 for v in enc.values())
