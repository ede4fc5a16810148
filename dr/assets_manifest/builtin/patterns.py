"""Tileable 2-D patterns for the procedural materials: pure numpy on an n x n grid.

Every function returns float64 arrays that wrap around both edges (the texture repeats with no
seam) and takes its randomness from an explicit generator. Coordinates: ``u`` runs along
columns, ``v`` along rows, both in [0, 1).
"""

from __future__ import annotations

import numpy as np


def grid(n: int) -> tuple[np.ndarray, np.ndarray]:
    """(u, v) pixel-centre coordinates in [0, 1), each (n, n); u varies along columns."""
    t = (np.arange(n) + 0.5) / n
    return np.meshgrid(t, t, indexing="xy")


def checker(n: int, cells: int) -> np.ndarray:
    """0/1 checkerboard of cells x cells squares per tile."""
    u, v = grid(n)
    return (np.floor(u * cells) + np.floor(v * cells)) % 2


def normalise(x: np.ndarray) -> np.ndarray:
    """Affinely map to [0, 1] (min -> 0, max -> 1); a constant array becomes 0.5."""
    lo, hi = float(x.min()), float(x.max())
    return np.full_like(x, 0.5) if hi - lo < 1e-12 else (x - lo) / (hi - lo)


def spectral_noise(rng: np.random.Generator, n: int, beta: float = 2.0, stretch: tuple[float, float] = (1.0, 1.0),
                   low_cut: int = 1) -> np.ndarray:
    """Tileable fractal noise in [0, 1]: white noise shaped by a 1/f^beta amplitude spectrum.

    ``stretch`` = (su, sv) divides the frequency along u and v: su > sv gives streaks along u
    (brushed metal, wood grain). Frequencies below ``low_cut`` cycles per tile are removed.
    """
    white = rng.standard_normal((n, n))
    fv = np.fft.fftfreq(n)[:, None] * n / stretch[1]
    fu = np.fft.rfftfreq(n)[None, :] * n / stretch[0]
    f = np.sqrt(fu**2 + fv**2)
    amp = np.where(f >= low_cut, 1.0 / np.maximum(f, 1e-9) ** (beta / 2.0), 0.0)
    return normalise(np.fft.irfft2(np.fft.rfft2(white) * amp, s=(n, n)))


def cellular(points: np.ndarray, n: int, aspect: float = 1.0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Tileable cellular (Worley) distances for one feature point per cell.

    ``points`` is (rows, cols, 2): each cell's point as (u, v) offsets within the cell, in
    [0, 1). ``aspect`` is a cell's height over its width. Returns (f1, f2, cell_id): the
    distances (in cell widths) to the nearest and second-nearest point, and the nearest
    point's cell index (row * cols + col).
    """
    rows, cols = points.shape[:2]
    u, v = grid(n)
    gu, gv = u * cols, v * rows
    iu, iv = np.floor(gu).astype(int), np.floor(gv).astype(int)
    f1 = np.full((n, n), np.inf)
    f2 = np.full((n, n), np.inf)
    cid = np.zeros((n, n), dtype=np.int64)
    for dv in (-1, 0, 1):
        for du in (-1, 0, 1):
            cu, cv = iu + du, iv + dv
            wu, wv = cu % cols, cv % rows
            p = points[wv, wu]
            d = np.hypot(cu + p[..., 0] - gu, (cv + p[..., 1] - gv) * aspect)
            closer = d < f1
            f2 = np.where(closer, f1, np.minimum(f2, d))
            cid = np.where(closer, wv * cols + wu, cid)
            f1 = np.where(closer, d, f1)
    return f1, f2, cid


def worley(rng: np.random.Generator, n: int, cells: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Cellular noise with one uniformly jittered point per cell of a cells x cells grid."""
    return cellular(rng.random((cells, cells, 2)), n)


def bricks(n: int, rows: int, cols: int, mortar: float, offset: float = 0.5) -> tuple[np.ndarray, np.ndarray]:
    """Running-bond bricks: (inside, brick_id). ``inside`` is 1 on bricks, falling to 0 across a
    mortar joint ``mortar`` wide (fraction of a brick height); odd rows shift by ``offset`` bricks."""
    u, v = grid(n)
    r = v * rows
    row = np.floor(r).astype(int)
    c = u * cols + offset * (row % 2)
    col = np.floor(c).astype(int) % cols
    fr, fc = r - np.floor(r), c - np.floor(c)
    aspect = rows / cols  # brick width in units of brick height
    edge = np.minimum(np.minimum(fr, 1 - fr), np.minimum(fc, 1 - fc) / aspect)
    inside = np.clip(edge / max(mortar, 1e-6) * 2.0 - 1.0, 0.0, 1.0)
    return inside, row * cols + col


def hexagons(n: int, cols: int) -> tuple[np.ndarray, np.ndarray]:
    """Hexagonal tiles, ``cols`` per tile width: (edge, hex_id), edge in [0, 1] rising from 0
    on the joints to 1 well inside a tile.

    The hexagons are the cells of a row-offset lattice; the row count is the even number
    closest to 2 cols / sqrt(3), so they are regular to within that rounding and tile.
    """
    rows = max(2, int(round(cols * 2 / np.sqrt(3) / 2)) * 2)
    pts = np.zeros((rows, cols, 2))
    pts[:, :, 0] = 0.25 + 0.5 * (np.arange(rows)[:, None] % 2)
    pts[:, :, 1] = 0.5
    f1, f2, hid = cellular(pts, n, aspect=cols / rows)
    return np.clip((f2 - f1) / 0.35, 0.0, 1.0), hid


def weave(n: int, threads: int) -> tuple[np.ndarray, np.ndarray]:
    """Plain weave: (height, warp_on_top). Threads per tile along each axis; height is a
    rounded thread profile in [0, 1]."""
    u, v = grid(n)
    a, b = u * threads, v * threads
    iu, iv = np.floor(a).astype(int), np.floor(b).astype(int)
    warp_top = (iu + iv) % 2 == 0
    across_warp = np.sin(np.pi * (a - iu)) ** 0.5
    across_weft = np.sin(np.pi * (b - iv)) ** 0.5
    along_warp = 0.6 + 0.4 * np.sin(np.pi * (b - iv))
    along_weft = 0.6 + 0.4 * np.sin(np.pi * (a - iu))
    h = np.where(warp_top, across_warp * along_warp, across_weft * along_weft)
    return h, warp_top


def twill(n: int, threads: int) -> tuple[np.ndarray, np.ndarray]:
    """2/2 twill (carbon fibre): (height, warp_on_top)."""
    u, v = grid(n)
    a, b = u * threads, v * threads
    iu, iv = np.floor(a).astype(int), np.floor(b).astype(int)
    warp_top = ((iu + iv) % 4) < 2
    h = np.where(warp_top, np.sin(np.pi * (a - iu)), np.sin(np.pi * (b - iv))) ** 0.5
    return h, warp_top


def smoothstep(e0: float, e1: float, x: np.ndarray) -> np.ndarray:
    t = np.clip((x - e0) / (e1 - e0), 0.0, 1.0)
    return t * t * (3 - 2 * t)


def height_to_normal(height: np.ndarray, strength: float) -> np.ndarray:
    """Tangent-space normal map, OpenGL convention (+x right, +y up in the image), (n, n, 3).

    ``height`` is in units of the tile size times ``strength``: the slope along u is
    strength * dh/du with u in tiles. Rows are stored top first, so +v (up) is -row.
    """
    n = height.shape[0]
    h = height * strength
    dh_du = (np.roll(h, -1, axis=1) - np.roll(h, 1, axis=1)) * (n / 2.0)
    dh_dv = -(np.roll(h, -1, axis=0) - np.roll(h, 1, axis=0)) * (n / 2.0)
    nrm = np.stack([-dh_du, -dh_dv, np.ones_like(h)], axis=-1)
    return nrm / np.linalg.norm(nrm, axis=-1, keepdims=True)
