"""Camera and transform math in the project's conventions (DESIGN.md section 2).

World: right-handed, +Z up, metres. Camera: OpenGL axes (+x right, +y up, looks along -z).
Poses are camera-to-world 4x4. Pixels: column = fx x / -z + cx, row-from-top = cy - fy y / -z,
pixel (r, c) covers [c, c+1) x [r, r+1).
"""

from __future__ import annotations

import numpy as np


def rot_z(angle_rad: float) -> np.ndarray:
    c, s = np.cos(angle_rad), np.sin(angle_rad)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def rot_y(angle_rad: float) -> np.ndarray:
    c, s = np.cos(angle_rad), np.sin(angle_rad)
    return np.array([[c, 0.0, s], [0.0, 1.0, 0.0], [-s, 0.0, c]])


def affine(rotation: np.ndarray | None = None, translation=(0.0, 0.0, 0.0), scale=(1.0, 1.0, 1.0)) -> np.ndarray:
    """4x4 matrix T @ R @ S."""
    m = np.eye(4)
    r = np.eye(3) if rotation is None else np.asarray(rotation, dtype=np.float64)
    m[:3, :3] = r @ np.diag(np.broadcast_to(np.asarray(scale, dtype=np.float64), (3,)))
    m[:3, 3] = translation
    return m


def _cross(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.stack([a[..., 1] * b[..., 2] - a[..., 2] * b[..., 1],
                     a[..., 2] * b[..., 0] - a[..., 0] * b[..., 2],
                     a[..., 0] * b[..., 1] - a[..., 1] * b[..., 0]], axis=-1)


def look_at(eye, target, up=(0.0, 0.0, 1.0)) -> np.ndarray:
    """Camera-to-world 4x4 of a camera at ``eye`` looking at ``target`` (OpenGL axes: the
    camera's -z points at the target, +y towards ``up``, no roll). ``eye`` and ``target`` may be
    (..., 3) arrays; the result is then (..., 4, 4)."""
    eye, target = np.broadcast_arrays(np.asarray(eye, dtype=np.float64), np.asarray(target, dtype=np.float64))
    z = eye - target
    z = z / np.linalg.norm(z, axis=-1, keepdims=True)
    x = _cross(np.broadcast_to(np.asarray(up, dtype=np.float64), z.shape), z)
    nx = np.linalg.norm(x, axis=-1, keepdims=True)
    if (nx < 1e-9).any():
        raise ValueError("look_at: viewing direction is parallel to up")
    x = x / nx
    y = _cross(z, x)
    m = np.zeros((*eye.shape[:-1], 4, 4))
    m[..., :3, 0], m[..., :3, 1], m[..., :3, 2], m[..., :3, 3] = x, y, z, eye
    m[..., 3, 3] = 1.0
    return m


def intrinsics(width: int, height: int, fov_deg: float) -> np.ndarray:
    """Pinhole K (pixels) for a field of view across the larger image side (Blender's AUTO
    sensor fit), square pixels, centred principal point (cx = W/2, cy = H/2)."""
    f = 0.5 * max(width, height) / np.tan(np.radians(fov_deg) / 2)
    return np.array([[f, 0.0, width / 2.0], [0.0, f, height / 2.0], [0.0, 0.0, 1.0]])


def project(points_world: np.ndarray, c2w: np.ndarray, K: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Project world points: (column, row, depth), depth being the planar distance along the
    viewing direction (-z in camera space; <= 0 means behind the camera). Points (N, 3) with
    one c2w (4, 4), or per frame: points (T, N, 3) with c2w (T, 4, 4); results (N,) or (T, N)."""
    w2c = np.linalg.inv(c2w)
    p = np.einsum("...ij,...nj->...ni", w2c[..., :3, :3], np.asarray(points_world, dtype=np.float64))
    p = p + w2c[..., None, :3, 3]
    depth = -p[..., 2]
    with np.errstate(divide="ignore", invalid="ignore"):
        col = K[0, 0] * p[..., 0] / depth + K[0, 2]
        row = K[1, 2] - K[1, 1] * p[..., 1] / depth
    return col, row, depth


def segments_hit_cylinder(a: np.ndarray, b: np.ndarray, centre_xy: np.ndarray, radius, height) -> np.ndarray:
    """For N segments a[k]-b[k] (N, 3) and upright cylinders of ``radius`` about vertical axes
    at ``centre_xy`` (N, 2 or 2,) from z = 0 to ``height`` (radius and height: one value, or
    one per segment): does segment k pass through cylinder k? Returns (N,) bool."""
    a, b = np.atleast_2d(a).astype(np.float64), np.atleast_2d(b).astype(np.float64)
    d = b - a
    o = a[:, :2] - np.broadcast_to(centre_xy, a[:, :2].shape)
    qa = d[:, 0] ** 2 + d[:, 1] ** 2
    qb = 2 * (o[:, 0] * d[:, 0] + o[:, 1] * d[:, 1])
    qc = o[:, 0] ** 2 + o[:, 1] ** 2 - radius**2
    vertical = qa < 1e-18
    disc = qb * qb - 4 * qa * qc
    sq = np.sqrt(np.maximum(disc, 0.0))
    with np.errstate(divide="ignore", invalid="ignore"):
        t0 = np.where(vertical, 0.0, np.maximum(0.0, (-qb - sq) / (2 * qa)))
        t1 = np.where(vertical, 1.0, np.minimum(1.0, (-qb + sq) / (2 * qa)))
    # inside the infinite cylinder for t in [t0, t1]; z is linear in t, so check that interval's z range
    inside = np.where(vertical, qc <= 0, (disc >= 0) & (t0 <= t1))
    z0, z1 = a[:, 2] + t0 * d[:, 2], a[:, 2] + t1 * d[:, 2]
    return inside & (np.minimum(z0, z1) <= height) & (np.maximum(z0, z1) >= 0.0)
