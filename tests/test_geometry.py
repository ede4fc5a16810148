"""Camera math against hand-worked answers in the DESIGN.md conventions."""

from __future__ import annotations

import numpy as np
import pytest

from dr.scenes.geometry import intrinsics, look_at, project, segments_hit_cylinder


def test_look_at_uses_opengl_camera_axes():
    c2w = look_at(eye=(5.0, 0.0, 0.0), target=(0.0, 0.0, 0.0))
    x, y, z = c2w[:3, 0], c2w[:3, 1], c2w[:3, 2]
    assert np.allclose(z, [1, 0, 0])  # +z towards the viewer: the camera looks along -z, at the origin
    assert np.allclose(y, [0, 0, 1])  # +y up
    assert np.allclose(x, [0, 1, 0])  # +x right: looking along -x with z up, the right is +y
    assert np.allclose(c2w[:3, 3], [5, 0, 0])


def test_projection_of_known_points():
    W, H = 640, 480
    K = intrinsics(W, H, fov_deg=90.0)  # across the larger side: f = 320
    assert K[0, 0] == pytest.approx(320.0) and (K[0, 2], K[1, 2]) == (320.0, 240.0)
    c2w = look_at(eye=(0.0, -2.0, 0.0), target=(0.0, 0.0, 0.0))  # looks along +y; right is +x, up is +z
    pts = np.array([[0.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0], [2.0, 2.0, 0.0], [0, -3.0, 0]])
    col, row, depth = project(pts, c2w, K)
    assert np.allclose(depth[:4], [2, 2, 2, 4]) and depth[4] < 0
    assert (col[0], row[0]) == pytest.approx((320, 240))  # the target: the image centre
    assert (col[1], row[1]) == pytest.approx((320 + 320 * 1 / 2, 240))  # right of the target
    assert (col[2], row[2]) == pytest.approx((320, 240 - 320 * 1 / 2))  # above: a smaller row
    assert (col[3], row[3]) == pytest.approx((320 + 320 * 2 / 4, 240))
    # a ray through the image's left edge at 45 degrees off axis lands on column 0
    col, _, _ = project(np.array([[-1.0, 0.0, 0.0]]), look_at((0, -1.0, 0), (0, 0, 0)), K)
    assert col[0] == pytest.approx(0.0)


def test_segment_cylinder_cases():
    c, r, h = np.array([0.0, 0.0]), 1.0, 2.0
    cases = [  # (a, b, hits?)
        ([-3, 0, 1], [3, 0, 1], True),  # straight through
        ([-3, 0, 3], [3, 0, 3], False),  # above it
        ([-3, 2, 1], [3, 2, 1], False),  # beside it
        ([-3, 0, 1], [-2, 0, 1], False),  # stops short
        ([-3, 0, 5], [3, 0, -1], True),  # slanted: z crosses [0, 2] inside
        ([-3, 0, 9], [3, 0, 7], False),
        ([0.5, 0, 5], [0.5, 0, 1], True),  # vertical, inside
        ([0.5, 0, 5], [0.5, 0, 3], False),
        ([1.5, 0, 5], [1.5, 0, -1], False),  # vertical, outside
        ([-3, 0.99, 1], [3, 0.99, 1], True),  # grazing inside
    ]
    a = np.array([x[0] for x in cases], float)
    b = np.array([x[1] for x in cases], float)
    assert segments_hit_cylinder(a, b, c, r, h).tolist() == [x[2] for x in cases]
    # per-segment centres broadcast too: move the cylinder away from the first segment
    centres = np.zeros((len(cases), 2))
    centres[0] = (0.0, 5.0)
    assert not segments_hit_cylinder(a, b, centres, r, h)[0]


def test_projection_per_frame_matches_one_frame_at_a_time():
    rng = np.random.default_rng(0)
    K = intrinsics(64, 48, 50.0)
    c2w = np.stack([look_at(rng.normal(size=3) * 4 + (0, 0, 5), rng.normal(size=3)) for _ in range(5)])
    pts = rng.normal(size=(5, 7, 3))
    batch = project(pts, c2w, K)
    for t in range(5):
        one = project(pts[t], c2w[t], K)
        for b, o in zip(batch, one):
            assert np.allclose(b[t], o)
