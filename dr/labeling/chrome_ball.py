"""A mirror ball in an image -> an equirectangular environment map (DiffusionLight's last step),
and the frame real clips store it in (DESIGN section 2, "Real clips").

The env frame of a real clip is its reference camera's, turned Z-up: env +X = the reference view
direction (-z_cam), +Z = the camera's up (+y_cam), +Y = -x_cam; as a matrix on camera-space
vectors, M = [[0,0,-1],[-1,0,0],[0,1,0]]. So cam_to_env[t] = M R_ref^T R_t (``real_cam_to_env``).

Two unwraps of a ball seen at pixel centre (cu, cv) with radius r px:
- orthographic (DiffusionLight's): every pixel is seen along the optical axis, so the normal at
  disc point (x, y) (x right, y up, in ball radii) is (x, y, sqrt(1 - x^2 - y^2)) and the view
  direction (0, 0, -1);
- perspective (from the clip's K): each pixel's own ray meets a sphere whose centre lies on the
  ray through (cu, cv) at the distance where it subtends the radius seen; the reflection of that
  ray about the normal there. It removes the distortion of a ball that covers a wide angle.

Both build the map by looking up, for each direction of the map, the ball pixel that reflects
it (solved for the perspective ball by a fixed-point iteration), bilinearly; directions whose
ball point lies within ``rim`` of the silhouette (seen at grazing angles, the view direction
itself behind the ball) are marked invalid.
"""

from __future__ import annotations

import numpy as np

from dr.labeling.resample import bilinear
from dr.shards.envmap import uv_to_direction

M_CAM_TO_ENV = np.array([[0.0, 0.0, -1.0], [-1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])


def real_cam_to_env(c2w: np.ndarray, ref: int) -> np.ndarray:
    """(T, 3, 3) cam_to_env of a real clip whose env was estimated at frame ``ref``:
    M R_ref^T R_t (camera-space direction at frame t -> the env map's frame)."""
    R = np.asarray(c2w, dtype=np.float64)[:, :3, :3]
    return M_CAM_TO_ENV @ R[ref].T @ R


def ball_to_equirect(image: np.ndarray, centre: tuple[float, float], radius: float, height: int,
                     K: np.ndarray | None = None, rim: float = 0.98, iterations: int = 12) -> tuple[np.ndarray, np.ndarray]:
    """(env (height, 2 height, C) in the env frame above, valid (height, 2 height) bool) from a
    linear ``image`` holding a mirror ball at pixel ``centre`` (u, v) of ``radius`` px.
    ``K`` (3x3, pixel centres at +0.5): the perspective unwrap; None: the orthographic one."""
    img = np.asarray(image, dtype=np.float32)
    cu, cv = centre
    v_, u_ = np.meshgrid((np.arange(height) + 0.5) / height, (np.arange(2 * height) + 0.5) / (2 * height),
                         indexing="ij")
    e = uv_to_direction(u_, v_)  # in the env frame
    R = e @ M_CAM_TO_ENV  # camera space: M^T e, row-wise
    if K is None:
        n = R + np.array([0.0, 0.0, 1.0])  # n ∝ R - v with v = (0, 0, -1)
        n /= np.maximum(np.linalg.norm(n, axis=-1, keepdims=True), 1e-12)
        px, py = cu + radius * n[..., 0], cv - radius * n[..., 1]
        valid = np.hypot(n[..., 0], n[..., 1]) <= rim
        return bilinear(img, px, py).astype(np.float32), valid
    fx, fy, cx, cy = K[0, 0], K[1, 1], K[0, 2], K[1, 2]
    c_dir = np.array([(cu - cx) / fx, -(cv - cy) / fy, -1.0])
    c_dir /= np.linalg.norm(c_dir)
    # the angle the ball's radius subtends, measured along the image's x axis at its centre
    edge = np.array([(cu + radius - cx) / fx, -(cv - cy) / fy, -1.0])
    alpha = np.arccos(np.clip(edge @ c_dir / np.linalg.norm(edge), -1.0, 1.0))
    C = c_dir / np.sin(alpha)  # unit sphere at the distance where it subtends alpha
    n = R + np.array([0.0, 0.0, 1.0])  # start from the orthographic normal
    n /= np.maximum(np.linalg.norm(n, axis=-1, keepdims=True), 1e-12)
    for _ in range(iterations):
        P = C + n
        d = P / np.linalg.norm(P, axis=-1, keepdims=True)  # the camera ray that meets the ball at P
        n = R - d  # a mirror: R = d - 2 (d.n) n, so n ∝ R - d
        n /= np.maximum(np.linalg.norm(n, axis=-1, keepdims=True), 1e-12)
    P = C + n
    px = cx + fx * P[..., 0] / -P[..., 2]
    py = cy - fy * P[..., 1] / -P[..., 2]
    d = P / np.linalg.norm(P, axis=-1, keepdims=True)
    cos_view = -(d * n).sum(-1)  # 1 at the ball's centre as seen, 0 at its silhouette
    reflected = d + 2 * cos_view[..., None] * n
    converged = np.linalg.norm(reflected - R, axis=-1) < 1e-4
    valid = (cos_view >= np.sqrt(1 - rim ** 2)) & converged
    return bilinear(img, px, py).astype(np.float32), valid
