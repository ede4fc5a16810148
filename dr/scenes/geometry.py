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


def look_at(eye, target, up=(0.0, 0.0, 1.0), roll_rad: float = 0.0) -> np.ndarray:
    """Camera-to-world 4x4 of a camera at ``eye`` looking at ``target`` (OpenGL axes: the
    camera's -z points at the target, +y towards ``up``), rolled by ``roll_rad`` about its
    viewing axis."""
    eye = np.asarray(eye, dtype=np.float64)
    z = eye - np.asarray(target, dtype=np.float64)
    z /= np.linalg.norm(z)
    x = np.cross(np.asarray(up, dtype=np.float64), z)
    nx = np.linalg.norm(x)
    if nx < 1e-9:
        raise ValueError("look_at: viewing direction is parallel to up")
    x /= nx
    y = np.cross(z, x)
    if roll_rad:
        c, s = np.cos(roll_rad), np.sin(roll_rad)
        x, y = c * x + s * y, -s * x + c * y
    m = np.eye(4)
    m[:3, 0], m[:3, 1], m[:3, 2], m[:3, 3] = x, y, z, eye
    return m


def intrinsics(width: int, height: int, fov_deg: float) -> np.ndarray:
    """Pinhole K (pixels) for a field of view across the larger image side (Blender's AUTO
    sensor fit), square pixels, centred principal point (cx = W/2, cy = H/2)."""
    f = 0.5 * max(width, height) / np.tan(np.radians(fov_deg) / 2)
    return np.array([[f, 0.0, width / 2.0], [0.0, f, height / 2.0], [0.0, 0.0, 1.0]])


def project(points_world: np.ndarray, c2w: np.ndarray, K: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Project (N, 3) world points: (column, row, depth) with depth the planar distance along
    the viewing direction (-z in camera space; <= 0 means behind the camera)."""
    w2c = np.linalg.inv(c2w)
    p = np.asarray(points_world, dtype=np.float64) @ w2c[:3, :3].T + w2c[:3, 3]
    depth = -p[:, 2]
    with np.errstate(divide="ignore", invalid="ignore"):
        col = K[0, 0] * p[:, 0] / depth + K[0, 2]
        row = K[1, 2] - K[1, 1] * p[:, 1] / depth
    return col, row, depth


def segment_hits_cylinder(a: np.ndarray, b: np.ndarray, centre_xy: np.ndarray, radius: float, height: float) -> bool:
    """Does the segment a-b pass through the upright cylinder of ``radius`` around the
    vertical axis at ``centre_xy`` between z = 0 and z = ``height``?"""
    d = b - a
    o = a[:2] - centre_xy
    qa = d[0] ** 2 + d[1] ** 2
    qb = 2 * (o[0] * d[0] + o[1] * d[1])
    qc = o[0] ** 2 + o[1] ** 2 - radius**2
    if qa < 1e-18:
        ts = [0.0, 1.0] if qc <= 0 else []
    else:
        disc = qb * qb - 4 * qa * qc
        if disc < 0:
            return False
        sq = np.sqrt(disc)
        ts = [max(0.0, (-qb - sq) / (2 * qa)), min(1.0, (-qb + sq) / (2 * qa))]
        if ts[0] > ts[1]:
            return False
    if not ts:
        return False
    # inside the infinite cylinder for t in [t0, t1]; z is linear in t: check the interval's z range
    z0, z1 = a[2] + ts[0] * d[2], a[2] + ts[1] * d[2]
    return min(z0, z1) <= height and max(z0, z1) >= 0.0
