"""Procedural objects for the built-in library, written as GLB files with trimesh.

Shapes are built Z-up in metres and turned to glTF's Y-up when written, so that Blender's glTF
importer (Y-up to Z-up) brings them back upright. Smooth shapes are parametric surfaces with
UVs and smooth normals; faceted ones (extrusions, boxes) get per-face normals (flat shading). Each object has glTF PBR materials: constant factors, a base-colour texture, or a
packed metallic-roughness texture (G = roughness, B = metallic).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

# glTF is Y-up; ours (and Blender's) is Z-up. Blender's importer maps glTF (x, y, z) to (x, -z, y),
# so we write Z-up (x, y, z) as glTF (x, z, -y).
ZUP_TO_GLTF = np.array([[1, 0, 0], [0, 0, 1], [0, -1, 0]], dtype=np.float64)
GLTF_TO_ZUP = ZUP_TO_GLTF.T.copy()


@dataclass
class Part:
    vertices: np.ndarray  # (V, 3) Z-up metres
    faces: np.ndarray  # (F, 3) int, counter-clockwise seen from outside
    material: str  # key into MATERIALS
    uv: np.ndarray | None = None  # (V, 2) or None
    normals: np.ndarray | None = None  # (V, 3) smooth normals, or None for flat shading


@dataclass
class ObjectRecipe:
    name: str
    build: Callable[[np.random.Generator], list[Part]]
    category: str


# ---------------------------------------------------------------------------------------------
# parametric surfaces


def parametric(fn: Callable[[np.ndarray, np.ndarray], np.ndarray], nu: int, nv: int, material: str,
               uv_scale: tuple[float, float] = (1.0, 1.0)) -> Part:
    """Tessellate xyz = fn(u, v) over [0,1]^2 on an (nv+1) x (nu+1) grid, with UVs and smooth
    normals. Coincident vertices (seams, poles) share their normal; zero-area triangles are
    dropped; faces are oriented so the enclosed volume is positive."""
    u, v = np.meshgrid(np.linspace(0, 1, nu + 1), np.linspace(0, 1, nv + 1), indexing="xy")
    xyz = fn(u, v).reshape(-1, 3)
    idx = np.arange((nu + 1) * (nv + 1)).reshape(nv + 1, nu + 1)
    a, b, c, d = idx[:-1, :-1], idx[:-1, 1:], idx[1:, 1:], idx[1:, :-1]
    faces = np.concatenate([np.stack([a, b, c], -1).reshape(-1, 3), np.stack([a, c, d], -1).reshape(-1, 3)])
    tri = xyz[faces]
    cross = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    area = np.linalg.norm(cross, axis=1)
    keep = area > 1e-12 * max(1.0, float(area.max()))
    faces, cross = faces[keep], cross[keep]
    if np.einsum("ij,ij->", xyz[faces[:, 0]], cross) < 0:  # 6 x signed volume
        faces, cross = faces[:, ::-1].copy(), -cross
    normals = np.zeros_like(xyz)
    for k in range(3):
        np.add.at(normals, faces[:, k], cross)
    key = np.round(xyz, 9)
    _, inv = np.unique(key, axis=0, return_inverse=True)
    inv = inv.reshape(-1)
    shared = np.zeros((inv.max() + 1, 3))
    np.add.at(shared, inv, normals)
    normals = shared[inv]
    normals /= np.maximum(np.linalg.norm(normals, axis=1, keepdims=True), 1e-12)
    uv = np.stack([u.reshape(-1) * uv_scale[0], v.reshape(-1) * uv_scale[1]], -1)
    return Part(xyz, faces, material, uv, normals)


def revolve(profile: np.ndarray, material: str, sections: int = 64, samples: int = 96,
            uv_scale: tuple[float, float] = (1.0, 1.0)) -> Part:
    """Surface of revolution about +Z of a (radius, height) polyline, resampled by arc length.
    A closed solid needs the profile to start and end on the axis (radius 0)."""
    prof = np.asarray(profile, dtype=np.float64)
    seg = np.linalg.norm(np.diff(prof, axis=0), axis=1)
    s = np.concatenate([[0.0], np.cumsum(seg)]) / seg.sum()

    def fn(u, v):
        r = np.interp(v, s, prof[:, 0])
        z = np.interp(v, s, prof[:, 1])
        ang = 2 * np.pi * u
        return np.stack([r * np.cos(ang), r * np.sin(ang), z], -1)

    return parametric(fn, sections, samples, material, uv_scale)


def tube(curve: Callable[[np.ndarray], np.ndarray], radius: float, material: str, n_along: int = 256,
         n_around: int = 16, closed: bool = True) -> list[Part]:
    """A tube of ``radius`` around the curve c(t), t in [0, 1] (closed loop if ``closed``);
    open tubes get flat end caps."""

    def frames(t):
        p = curve(t)
        dt = 1e-4
        tan = curve(t + dt) - curve(t - dt)
        tan /= np.linalg.norm(tan, axis=-1, keepdims=True)
        ref = np.broadcast_to(np.array([0.0, 0.0, 1.0]), tan.shape)
        alt = np.broadcast_to(np.array([1.0, 0.0, 0.0]), tan.shape)
        ref = np.where(np.abs(np.sum(tan * ref, -1, keepdims=True)) > 0.9, alt, ref)
        nrm = np.cross(tan, ref)
        nrm /= np.linalg.norm(nrm, axis=-1, keepdims=True)
        return p, nrm, np.cross(tan, nrm)

    def fn(u, v):
        p, n1, n2 = frames(v)
        ang = 2 * np.pi * u
        return p + radius * (np.cos(ang)[..., None] * n1 + np.sin(ang)[..., None] * n2)

    part = parametric(fn, n_around, n_along, material, uv_scale=(1.0, 8.0))
    if closed:
        return [part]
    caps = []
    for t, flip in ((0.0, True), (1.0, False)):
        p, n1, n2 = frames(np.array([t]))
        ang = np.linspace(0, 2 * np.pi, n_around, endpoint=False)
        ring = p + radius * (np.cos(ang)[:, None] * n1 + np.sin(ang)[:, None] * n2)
        verts = np.vstack([p, ring])
        f = np.stack([np.zeros(n_around, int), 1 + np.arange(n_around), 1 + (np.arange(n_around) + 1) % n_around], -1)
        caps.append(Part(verts, f[:, ::-1] if flip else f, material))
    return [part, *caps]


# ---------------------------------------------------------------------------------------------
# shapes


def _smooth_profile(points: list[tuple[float, float]], samples: int = 200) -> np.ndarray:
    """A (radius, height) profile: straight first and last segments (the flat bottom and the top
    stay flat, so the object rests on its base), a Catmull-Rom spline through the points between."""
    p = np.asarray(points, dtype=np.float64)
    if len(p) <= 3:
        return p
    out = [p[:1]]
    per = max(2, samples // (len(p) - 3))
    for i in range(1, len(p) - 2):
        p0, p1, p2, p3 = p[i - 1], p[i], p[i + 1], p[i + 2]
        t = np.linspace(0, 1, per, endpoint=False)[:, None]
        out.append(0.5 * ((2 * p1) + (-p0 + p2) * t + (2 * p0 - 5 * p1 + 4 * p2 - p3) * t**2
                          + (-p0 + 3 * p1 - 3 * p2 + p3) * t**3))
    out.append(p[-2:])
    prof = np.vstack(out)
    prof[:, 0] = np.maximum(prof[:, 0], 0.0)
    return prof


def _superellipsoid(e1: float, e2: float, scale=(0.5, 0.5, 0.5)) -> Callable:
    def spow(x, e):
        return np.sign(x) * np.abs(x) ** e

    def fn(u, v):
        lon = 2 * np.pi * u - np.pi
        lat = np.pi * v - np.pi / 2
        x = spow(np.cos(lat), e1) * spow(np.cos(lon), e2)
        y = spow(np.cos(lat), e1) * spow(np.sin(lon), e2)
        z = spow(np.sin(lat), e1)
        return np.stack([x * scale[0], y * scale[1], z * scale[2]], -1)

    return fn


def _torus_knot(p: int, q: int, R: float, r: float) -> Callable:
    def c(t):
        phi = 2 * np.pi * np.asarray(t)
        rr = R + r * np.cos(q * phi)
        return np.stack([rr * np.cos(p * phi), rr * np.sin(p * phi), r * np.sin(q * phi)], -1)

    return c


def _extrude(polygon_xy, height: float, material: str, holes=None):
    import shapely.geometry
    import trimesh

    poly = shapely.geometry.Polygon(polygon_xy, holes=holes)
    m = trimesh.creation.extrude_polygon(poly, height)
    return Part(np.asarray(m.vertices), np.asarray(m.faces), material)


def _box(center, extents, material):
    import trimesh

    m = trimesh.creation.box(extents=extents)
    return Part(np.asarray(m.vertices) + np.asarray(center, dtype=float), np.asarray(m.faces), material)


def _star(points: int, r_out: float, r_in: float) -> np.ndarray:
    ang = np.arange(2 * points) * np.pi / points + np.pi / 2
    rad = np.where(np.arange(2 * points) % 2 == 0, r_out, r_in)
    return np.stack([rad * np.cos(ang), rad * np.sin(ang)], -1)


def _gear(teeth: int, r_root: float, r_tip: float) -> np.ndarray:
    pts = []
    for k in range(teeth):
        a0 = 2 * np.pi * k / teeth
        w = 2 * np.pi / teeth
        for frac, r in ((0.0, r_root), (0.2, r_tip), (0.5, r_tip), (0.7, r_root)):
            pts.append((r * np.cos(a0 + frac * w), r * np.sin(a0 + frac * w)))
    return np.asarray(pts)


def _circle(r: float, n: int = 48) -> np.ndarray:
    a = np.linspace(0, 2 * np.pi, n, endpoint=False)
    return np.stack([r * np.cos(a), r * np.sin(a)], -1)


def _rotate_x90(part: Part) -> Part:
    """Stand an extrusion (made along +Z) up so its profile lies in the XZ plane."""
    R = np.array([[1, 0, 0], [0, 0, -1], [0, 1, 0]], dtype=np.float64)
    return Part(part.vertices @ R.T, part.faces, part.material, part.uv,
                None if part.normals is None else part.normals @ R.T)


def _rock(rng: np.random.Generator) -> list[Part]:
    k = rng.normal(size=(12, 3)) * np.array([1.5, 1.5, 1.5])
    phase = rng.uniform(0, 2 * np.pi, 12)
    amp = rng.uniform(0.02, 0.07, 12)
    base = _superellipsoid(1.0, 1.0, (0.5, 0.42, 0.32))

    def fn(u, v):
        p = base(u, v)
        d = p / np.maximum(np.linalg.norm(p, axis=-1, keepdims=True), 1e-9)
        bump = sum(a * np.sin(d @ kk + ph) for a, kk, ph in zip(amp, k, phase))
        return p * (1 + bump)[..., None]

    return [parametric(fn, 64, 48, "stone")]


def _twisted_prism(rng: np.random.Generator) -> list[Part]:
    twist = np.pi / 2

    def section(ang, z):
        r = 0.3 / (np.abs(np.cos(ang)) ** 6 + np.abs(np.sin(ang)) ** 6) ** (1 / 6)
        a = ang + twist * z
        return np.stack([r * np.cos(a), r * np.sin(a), z], -1)

    side = parametric(lambda u, v: section(2 * np.pi * u, v), 64, 32, "blue_glossy")
    caps = []
    for z, flip in ((0.0, True), (1.0, False)):
        ang = np.linspace(0, 2 * np.pi, 64, endpoint=False)
        ring = section(ang, np.full_like(ang, z))
        verts = np.vstack([[0.0, 0.0, z], ring])
        f = np.stack([np.zeros(64, int), 1 + np.arange(64), 1 + (np.arange(64) + 1) % 64], -1)
        caps.append(Part(verts, f[:, ::-1] if flip else f, "blue_glossy"))
    return [side, *caps]


def _mug(rng: np.random.Generator) -> list[Part]:
    body = revolve(_smooth_profile([(0, 0), (0.3, 0), (0.32, 0.02), (0.32, 0.7), (0.3, 0.7), (0.28, 0.05), (0, 0.05)], 80),
                   "white_ceramic")

    def handle(t):
        a = -np.pi / 2 + np.pi * np.asarray(t)
        return np.stack([0.31 + 0.18 * np.cos(a), np.zeros_like(a), 0.35 + 0.2 * np.sin(a)], -1)

    return [body, *tube(handle, 0.035, "red_plastic", n_along=48, n_around=12, closed=False)]


def _table(rng):
    parts = [_box((0, 0, 0.72), (1.2, 0.7, 0.05), "wood")]
    for sx in (-1, 1):
        for sy in (-1, 1):
            parts.append(_box((sx * 0.54, sy * 0.29, 0.35), (0.05, 0.05, 0.7), "steel"))
    return parts


def _chair(rng):
    parts = [_box((0, 0, 0.45), (0.45, 0.45, 0.04), "wood"), _box((0, 0.205, 0.72), (0.45, 0.04, 0.5), "wood")]
    for sx in (-1, 1):
        for sy in (-1, 1):
            parts.append(_box((sx * 0.2, sy * 0.2, 0.215), (0.04, 0.04, 0.43), "wood"))
    return parts


def _dumbbell(rng):
    import trimesh

    bar = trimesh.creation.cylinder(radius=0.03, height=0.8, sections=32)
    bar.apply_transform(trimesh.transformations.rotation_matrix(np.pi / 2, [0, 1, 0]))
    parts = [Part(np.asarray(bar.vertices), np.asarray(bar.faces), "steel")]
    for sx in (-1, 1):
        ball = parametric(_superellipsoid(1.0, 1.0, (0.12, 0.12, 0.12)), 32, 24, "rubber")
        ball.vertices = ball.vertices + np.array([sx * 0.4, 0.0, 0.0])
        parts.append(ball)
    return parts


def _pyramid(rng):
    v = np.array([[-0.5, -0.5, 0], [0.5, -0.5, 0], [0.5, 0.5, 0], [-0.5, 0.5, 0], [0, 0, 0.7]], dtype=float)
    f = np.array([[0, 2, 1], [0, 3, 2], [0, 1, 4], [1, 2, 4], [2, 3, 4], [3, 0, 4]])
    return [Part(v, f, "gold")]


def _revolved(points, material, uv=(1.0, 1.0), samples=200):
    return lambda rng: [revolve(_smooth_profile(points, samples), material, uv_scale=uv)]


RECIPES: list[ObjectRecipe] = [
    ObjectRecipe("sphere", lambda rng: [parametric(_superellipsoid(1, 1), 64, 48, "checker")], "ball"),
    ObjectRecipe("rounded_cube", lambda rng: [parametric(_superellipsoid(0.25, 0.25), 64, 48, "red_plastic")], "box"),
    ObjectRecipe("astroid", lambda rng: [parametric(_superellipsoid(2.5, 2.5), 64, 64, "copper")], "ornament"),
    ObjectRecipe("pillow", lambda rng: [parametric(_superellipsoid(0.35, 1.0, (0.5, 0.35, 0.15)), 64, 48, "green_matte")], "pillow"),
    ObjectRecipe("torus", lambda rng: [parametric(
        lambda u, v: np.stack([(0.4 + 0.15 * np.cos(2 * np.pi * v)) * np.cos(2 * np.pi * u),
                               (0.4 + 0.15 * np.cos(2 * np.pi * v)) * np.sin(2 * np.pi * u),
                               0.15 * np.sin(2 * np.pi * v)], -1), 64, 32, "gold")], "ring"),
    ObjectRecipe("trefoil_knot", lambda rng: tube(_torus_knot(2, 3, 0.35, 0.15), 0.08, "blue_glossy"), "ornament"),
    ObjectRecipe("cinquefoil_knot", lambda rng: tube(_torus_knot(2, 5, 0.35, 0.12), 0.06, "striped_metal"), "ornament"),
    ObjectRecipe("spring", lambda rng: tube(lambda t: np.stack([0.25 * np.cos(2 * np.pi * 5 * np.asarray(t)),
                                                                0.25 * np.sin(2 * np.pi * 5 * np.asarray(t)),
                                                                0.8 * np.asarray(t)], -1),
                                            0.04, "steel", n_along=400, closed=False), "spring"),
    ObjectRecipe("vase", _revolved([(0, 0), (0.18, 0), (0.3, 0.25), (0.22, 0.6), (0.12, 0.8), (0.15, 0.95),
                                    (0.13, 0.95), (0.1, 0.8), (0.0, 0.78)], "striped_metal"), "vase"),
    ObjectRecipe("goblet", _revolved([(0, 0), (0.2, 0), (0.2, 0.02), (0.03, 0.05), (0.03, 0.4), (0.22, 0.55),
                                      (0.26, 0.8), (0.24, 0.8), (0.2, 0.56), (0.0, 0.45)], "gold"), "wineglass"),
    ObjectRecipe("bowl", _revolved([(0, 0), (0.2, 0), (0.38, 0.1), (0.45, 0.25), (0.42, 0.25), (0.35, 0.12),
                                    (0.18, 0.04), (0, 0.04)], "white_ceramic"), "bowl"),
    ObjectRecipe("bottle", _revolved([(0, 0), (0.2, 0), (0.21, 0.05), (0.21, 0.55), (0.12, 0.7), (0.06, 0.78),
                                      (0.06, 0.95), (0.0, 0.95)], "green_glossy"), "bottle"),
    ObjectRecipe("mushroom", _revolved([(0, 0), (0.1, 0), (0.08, 0.3), (0.09, 0.4), (0.35, 0.42), (0.3, 0.55),
                                        (0.15, 0.65), (0.0, 0.67)], "red_plastic"), "mushroom"),
    ObjectRecipe("hourglass", _revolved([(0, 0), (0.3, 0), (0.3, 0.05), (0.25, 0.15), (0.05, 0.5), (0.25, 0.85),
                                         (0.3, 0.95), (0.3, 1.0), (0.0, 1.0)], "wood"), "hourglass"),
    ObjectRecipe("cone", _revolved([(0, 0), (0.35, 0), (0.0, 0.8)], "checker", samples=40), "cone"),
    ObjectRecipe("capsule", _revolved([(0, 0)] + [(0.2 * np.sin(a), 0.2 - 0.2 * np.cos(a)) for a in np.linspace(0.2, np.pi / 2, 6)]
                                      + [(0.2 * np.cos(a), 0.7 + 0.2 * np.sin(a)) for a in np.linspace(0, np.pi / 2 - 0.2, 6)]
                                      + [(0.0, 0.9)], "blue_glossy"), "pill"),
    ObjectRecipe("egg", _revolved([(0, 0), (0.22, 0.1), (0.28, 0.3), (0.22, 0.55), (0.0, 0.72)], "white_ceramic"), "egg"),
    ObjectRecipe("spinning_top", _revolved([(0, 0), (0.05, 0.05), (0.3, 0.3), (0.32, 0.35), (0.05, 0.45),
                                            (0.04, 0.65), (0.0, 0.65)], "copper"), "toy"),
    ObjectRecipe("rock", _rock, "rock"),
    ObjectRecipe("twisted_prism", _twisted_prism, "sculpture"),
    ObjectRecipe("mug", _mug, "mug"),
    ObjectRecipe("box", lambda rng: [_box((0, 0, 0), (0.8, 0.5, 0.3), "wood")], "box"),
    ObjectRecipe("star_prism", lambda rng: [_extrude(_star(5, 0.5, 0.2), 0.25, "gold")], "star"),
    ObjectRecipe("gear", lambda rng: [_extrude(_gear(14, 0.4, 0.5), 0.15, "steel", holes=[_circle(0.12)])], "gear"),
    ObjectRecipe("arch", lambda rng: [_rotate_x90(_extrude(np.vstack([
        [(0.5 * np.cos(a), 0.5 * np.sin(a)) for a in np.linspace(0, np.pi, 24)],
        [(0.3 * np.cos(a), 0.3 * np.sin(a)) for a in np.linspace(np.pi, 0, 24)]]), 0.3, "stone"))], "arch"),
    ObjectRecipe("l_bracket", lambda rng: [_rotate_x90(_extrude(
        [(0, 0), (0.6, 0), (0.6, 0.12), (0.12, 0.12), (0.12, 0.7), (0, 0.7)], 0.3, "copper"))], "bracket"),
    ObjectRecipe("table", _table, "table"),
    ObjectRecipe("chair", _chair, "chair"),
    ObjectRecipe("dumbbell", _dumbbell, "dumbbell"),
    ObjectRecipe("pyramid", _pyramid, "pyramid"),
]

# glTF PBR materials: factors (linear base colour), or textures made on the fly.
MATERIALS: dict[str, dict] = {
    "red_plastic": {"base": (0.8, 0.08, 0.06), "roughness": 0.4, "metallic": 0.0},
    "white_ceramic": {"base": (0.9, 0.9, 0.86), "roughness": 0.12, "metallic": 0.0},
    "green_matte": {"base": (0.2, 0.5, 0.25), "roughness": 0.85, "metallic": 0.0},
    "green_glossy": {"base": (0.1, 0.4, 0.15), "roughness": 0.08, "metallic": 0.0},
    "blue_glossy": {"base": (0.08, 0.2, 0.75), "roughness": 0.1, "metallic": 0.0},
    "wood": {"base": (0.5, 0.3, 0.15), "roughness": 0.6, "metallic": 0.0},
    "stone": {"base": (0.45, 0.43, 0.4), "roughness": 0.95, "metallic": 0.0},
    "rubber": {"base": (0.04, 0.04, 0.04), "roughness": 0.9, "metallic": 0.0},
    "gold": {"base": (1.0, 0.77, 0.34), "roughness": 0.15, "metallic": 1.0},
    "copper": {"base": (0.95, 0.64, 0.54), "roughness": 0.25, "metallic": 1.0},
    "steel": {"base": (0.6, 0.6, 0.62), "roughness": 0.3, "metallic": 1.0},
    # base colour from an 8x8 checker texture
    "checker": {"base": (1.0, 1.0, 1.0), "roughness": 0.5, "metallic": 0.0, "texture": "checker"},
    # glTF packed metallic-roughness texture: bands of rough dielectric and smooth metal
    "striped_metal": {"base": (0.9, 0.7, 0.4), "roughness": 1.0, "metallic": 1.0, "texture": "mr_stripes"},
}


def _texture(kind: str, n: int = 128):
    from PIL import Image

    from dr.assets_manifest.builtin import patterns as P

    if kind == "checker":
        c = P.checker(n, 8).astype(bool)
        img = np.where(c[..., None], np.array([230, 230, 230]), np.array([40, 90, 200])).astype(np.uint8)
        return Image.fromarray(img, "RGB")
    if kind == "mr_stripes":
        band = (np.floor(P.grid(n)[1] * 8) % 2).astype(bool)  # along the surface's v: rings or stripes
        img = np.zeros((n, n, 3), np.uint8)
        img[..., 1] = np.where(band, 51, 204)  # roughness 0.2 on metal bands, 0.8 on dielectric ones
        img[..., 2] = np.where(band, 255, 0)  # metallic
        return Image.fromarray(img, "RGB")
    raise ValueError(kind)


def _gltf_material(key: str):
    from trimesh.visual.material import PBRMaterial

    m = MATERIALS[key]
    kw = dict(name=key, baseColorFactor=[*m["base"], 1.0], roughnessFactor=m["roughness"], metallicFactor=m["metallic"])
    tex = m.get("texture")
    if tex == "checker":
        kw["baseColorTexture"] = _texture("checker")
    elif tex == "mr_stripes":
        kw["metallicRoughnessTexture"] = _texture("mr_stripes")
    return PBRMaterial(**kw)


def _quantise(x: np.ndarray, step: float = 2.0**-20) -> np.ndarray:
    """Snap to a fixed grid before float32, so ulp-level differences between machines' libm
    (sin, cos, pow) cannot change the written bytes."""
    return (np.round(np.asarray(x, dtype=np.float64) / step) * step).astype(np.float32)


def build_glb(recipe: ObjectRecipe, rng: np.random.Generator) -> bytes:
    """Build a recipe's parts and return the GLB bytes (glTF Y-up)."""
    import trimesh
    from trimesh.visual import TextureVisuals

    scene = trimesh.Scene()
    for i, part in enumerate(recipe.build(rng)):
        verts, faces, normals, uv = part.vertices, np.asarray(part.faces, dtype=np.int64), part.normals, part.uv
        if normals is None:
            # flat shading with explicit normals: every face gets its own three vertices
            tri = verts[faces]
            fn = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
            fn /= np.maximum(np.linalg.norm(fn, axis=1, keepdims=True), 1e-12)
            verts, normals = tri.reshape(-1, 3), np.repeat(fn, 3, axis=0)
            uv = None if uv is None else uv[faces].reshape(-1, 2)
            faces = np.arange(len(verts)).reshape(-1, 3)
        mesh = trimesh.Trimesh(vertices=_quantise(verts @ ZUP_TO_GLTF.T), faces=faces, process=False,
                               vertex_normals=_quantise(normals @ ZUP_TO_GLTF.T))
        uv = None if uv is None else _quantise(uv)
        mesh.visual = TextureVisuals(uv=uv, material=_gltf_material(part.material))
        scene.add_geometry(mesh, geom_name=f"{recipe.name}_{i}", node_name=f"{recipe.name}_{i}")
    return scene.export(file_type="glb", include_normals=True)
