"""Procedural PBR material sets for the built-in library: base colour, roughness, metallic and an
OpenGL normal map per set, made with numpy from a seed.

Each recipe returns maps in [0, 1]: ``basecolor`` sRGB-encoded (H, W, 3) as image files store
it, ``roughness`` and ``metallic`` linear (H, W), and a height field turned into the normal map.
The set spans dielectrics and metals (and mixtures such as rust and chipped paint), smooth and
rough surfaces.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from dr.assets_manifest.builtin import patterns as P


@dataclass
class MaterialMaps:
    basecolor: np.ndarray  # (n, n, 3) sRGB-encoded, [0, 1]
    roughness: np.ndarray  # (n, n) linear, [0, 1]
    metallic: np.ndarray  # (n, n) {0..1}
    height: np.ndarray  # (n, n) [0, 1]
    bump: float  # relief: displacement = height * bump, in tile widths (0: flat)


def _rgb(c: tuple[float, float, float], shape: tuple[int, int]) -> np.ndarray:
    return np.broadcast_to(np.asarray(c, dtype=np.float64), (*shape, 3)).copy()


def _mix(a: np.ndarray, b: np.ndarray, t: np.ndarray) -> np.ndarray:
    t = t[..., None] if a.ndim == 3 and t.ndim == 2 else t
    return a * (1 - t) + b * t


def _per_id(rng: np.random.Generator, ids: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """A uniform random value per integer id, looked up per pixel."""
    table = rng.uniform(lo, hi, int(ids.max()) + 1)
    return table[ids]


def _const(x: float, n: int) -> np.ndarray:
    return np.full((n, n), float(x))


# --- dielectrics ---------------------------------------------------------------------------

def red_brick(rng, n):
    inside, bid = P.bricks(n, rows=8, cols=4, mortar=0.12)
    grain = P.spectral_noise(rng, n, beta=1.2)
    tone = _per_id(rng, bid, 0.75, 1.1)[..., None]
    brick = _rgb((0.58, 0.22, 0.15), (n, n)) * tone * (0.85 + 0.3 * grain[..., None])
    mortar = _rgb((0.62, 0.6, 0.56), (n, n)) * (0.9 + 0.2 * grain[..., None])
    t = P.smoothstep(0.0, 1.0, inside)
    return MaterialMaps(_mix(mortar, brick, t), 0.75 + 0.2 * (1 - t) + 0.05 * grain, _const(0, n),
                        0.7 * t + 0.3 * grain * t, bump=0.02)


def ceramic_tiles(rng, n):
    inside, tid = P.bricks(n, rows=4, cols=4, mortar=0.06, offset=0.0)
    t = P.smoothstep(0.0, 1.0, inside)
    glaze = _rgb((0.86, 0.9, 0.93), (n, n)) * _per_id(rng, tid, 0.94, 1.0)[..., None]
    grout = _rgb((0.45, 0.44, 0.42), (n, n))
    return MaterialMaps(_mix(grout, glaze, t), 0.08 + 0.8 * (1 - t), _const(0, n), t, bump=0.01)


def terracotta_hex(rng, n):
    edge, hid = P.hexagons(n, cols=6)
    t = P.smoothstep(0.05, 0.3, edge)
    grain = P.spectral_noise(rng, n, beta=1.5)
    tile = _rgb((0.74, 0.4, 0.26), (n, n)) * _per_id(rng, hid, 0.8, 1.05)[..., None] * (0.9 + 0.2 * grain[..., None])
    grout = _rgb((0.7, 0.68, 0.62), (n, n))
    return MaterialMaps(_mix(grout, tile, t), 0.6 + 0.3 * (1 - t), _const(0, n), 0.8 * t + 0.2 * grain, bump=0.02)


def checker_plastic(rng, n):
    c = P.checker(n, 8)
    a = _rgb((0.9, 0.85, 0.2), (n, n))
    b = _rgb((0.1, 0.25, 0.7), (n, n))
    return MaterialMaps(_mix(a, b, c), 0.3 + 0.1 * c, _const(0, n), _const(0.5, n), bump=0.0)


def oak_wood(rng, n):
    u, v = P.grid(n)
    warp = P.spectral_noise(rng, n, beta=2.5)
    streak = P.spectral_noise(rng, n, beta=1.0, stretch=(8.0, 1.0))
    rings = 0.5 + 0.5 * np.sin(2 * np.pi * (v * 12 + 1.5 * warp))
    light, dark = _rgb((0.72, 0.52, 0.32), (n, n)), _rgb((0.45, 0.28, 0.15), (n, n))
    t = 0.7 * rings + 0.3 * streak
    return MaterialMaps(_mix(light, dark, t), 0.45 + 0.2 * t, _const(0, n), 1 - t, bump=0.004)


def white_marble(rng, n):
    u, v = P.grid(n)
    turb = P.spectral_noise(rng, n, beta=2.2)
    veins = np.abs(np.sin(2 * np.pi * (u * 2 + v + 2.5 * turb)))
    vein = 1 - P.smoothstep(0.0, 0.12, veins)
    base = _rgb((0.93, 0.92, 0.9), (n, n))
    dark = _rgb((0.35, 0.36, 0.4), (n, n))
    return MaterialMaps(_mix(base, dark, 0.8 * vein), 0.06 + 0.04 * vein, _const(0, n), 1 - 0.2 * vein, bump=0.002)


def concrete(rng, n):
    a = P.spectral_noise(rng, n, beta=1.8)
    pits = P.spectral_noise(rng, n, beta=0.3)
    holes = P.smoothstep(0.85, 0.95, pits)
    base = _rgb((0.55, 0.55, 0.53), (n, n)) * (0.8 + 0.3 * a[..., None]) * (1 - 0.5 * holes[..., None])
    return MaterialMaps(base, 0.85 + 0.1 * a, _const(0, n), a * (1 - holes), bump=0.01)


def asphalt(rng, n):
    a = P.spectral_noise(rng, n, beta=0.6)
    stones = P.smoothstep(0.6, 0.8, a)
    base = _rgb((0.16, 0.16, 0.17), (n, n)) * (0.7 + 0.8 * stones[..., None])
    return MaterialMaps(base, 0.92 - 0.1 * stones, _const(0, n), stones, bump=0.01)


def black_rubber(rng, n):
    f1, _, _ = P.worley(rng, n, cells=24)
    bumps = 1 - P.smoothstep(0.0, 0.35, f1)
    return MaterialMaps(_rgb((0.05, 0.05, 0.05), (n, n)), 0.9 + 0.05 * bumps, _const(0, n), bumps, bump=0.01)


def blue_fabric(rng, n):
    h, warp = P.weave(n, threads=48)
    fuzz = P.spectral_noise(rng, n, beta=0.8)
    c = np.where(warp[..., None], _rgb((0.18, 0.28, 0.55), (n, n)), _rgb((0.14, 0.2, 0.42), (n, n)))
    return MaterialMaps(c * (0.75 + 0.35 * h[..., None]), 0.85 + 0.1 * fuzz, _const(0, n), 0.8 * h + 0.2 * fuzz, bump=0.006)


def brown_leather(rng, n):
    f1, f2, _ = P.worley(rng, n, cells=20)
    creases = P.smoothstep(0.0, 0.15, f2 - f1)
    grain = P.spectral_noise(rng, n, beta=1.5)
    c = _rgb((0.36, 0.2, 0.11), (n, n)) * (0.8 + 0.3 * creases[..., None]) * (0.9 + 0.2 * grain[..., None])
    return MaterialMaps(c, 0.5 + 0.2 * (1 - creases), _const(0, n), creases, bump=0.005)


def terrazzo(rng, n):
    f1, _, cid = P.worley(rng, n, cells=18)
    chip = f1 < _per_id(rng, cid, 0.15, 0.4)
    hue = _per_id(rng, cid, 0, 3).astype(int)
    palette = np.array([(0.75, 0.3, 0.25), (0.3, 0.45, 0.6), (0.2, 0.2, 0.2)])
    base = _rgb((0.9, 0.87, 0.8), (n, n))
    c = np.where(chip[..., None], palette[hue], base)
    return MaterialMaps(c, _const(0.25, n), _const(0, n), _const(0.5, n), bump=0.0)


def polka_plastic(rng, n):
    u, v = P.grid(n)
    d = np.hypot((u * 6) % 1 - 0.5, (v * 6) % 1 - 0.5)
    dot = 1 - P.smoothstep(0.22, 0.25, d)
    c = _mix(_rgb((0.85, 0.15, 0.2), (n, n)), _rgb((0.95, 0.95, 0.92), (n, n)), dot)
    return MaterialMaps(c, _const(0.15, n), _const(0, n), 0.5 + 0.1 * dot, bump=0.002)


def beach_sand(rng, n):
    a = P.spectral_noise(rng, n, beta=0.4)
    ripples = 0.5 + 0.5 * np.sin(2 * np.pi * (P.grid(n)[1] * 10 + 0.8 * P.spectral_noise(rng, n, beta=2.5)))
    c = _rgb((0.82, 0.72, 0.52), (n, n)) * (0.85 + 0.25 * a[..., None])
    return MaterialMaps(c, 0.95 - 0.05 * a, _const(0, n), 0.7 * ripples + 0.3 * a, bump=0.01)


def cobblestone(rng, n):
    f1, f2, cid = P.worley(rng, n, cells=8)
    stone = P.smoothstep(0.02, 0.18, f2 - f1)
    tone = _per_id(rng, cid, 0.7, 1.1)[..., None]
    c = _mix(_rgb((0.25, 0.22, 0.18), (n, n)), _rgb((0.55, 0.53, 0.5), (n, n)) * tone, stone)
    return MaterialMaps(c, 0.8 - 0.15 * stone, _const(0, n), stone * (1 - 0.5 * f1), bump=0.03)


def carbon_fibre(rng, n):
    h, warp = P.twill(n, threads=32)
    c = np.where(warp[..., None], _rgb((0.06, 0.06, 0.07), (n, n)), _rgb((0.1, 0.1, 0.11), (n, n))) * (0.6 + 0.6 * h[..., None])
    return MaterialMaps(c, 0.2 + 0.1 * (1 - h), _const(0, n), h, bump=0.003)


# --- metals --------------------------------------------------------------------------------

def brushed_steel(rng, n):
    streaks = P.spectral_noise(rng, n, beta=1.0, stretch=(40.0, 1.0))
    c = _rgb((0.75, 0.76, 0.77), (n, n)) * (0.92 + 0.1 * streaks[..., None])
    return MaterialMaps(c, 0.3 + 0.15 * streaks, _const(1, n), streaks, bump=0.0015)


def polished_gold(rng, n):
    smudge = P.spectral_noise(rng, n, beta=2.5)
    return MaterialMaps(_rgb((1.0, 0.89, 0.61), (n, n)), 0.05 + 0.08 * smudge, _const(1, n), _const(0.5, n), bump=0.0)


def hammered_copper(rng, n):
    f1, _, _ = P.worley(rng, n, cells=14)
    dent = f1 ** 2
    return MaterialMaps(_rgb((0.98, 0.82, 0.76), (n, n)), 0.2 + 0.1 * dent, _const(1, n), dent, bump=0.02)


def chrome(rng, n):
    return MaterialMaps(_rgb((0.9, 0.9, 0.9), (n, n)), _const(0.02, n), _const(1, n), _const(0.5, n), bump=0.0)


def diamond_plate(rng, n):
    u, v = P.grid(n)
    a = (u * 10 + v * 10) % 1 - 0.5
    b = (u * 10 - v * 10) % 1 - 0.5
    ridge = np.where(((np.floor(u * 10) + np.floor(v * 10)) % 2) == 0,
                     1 - P.smoothstep(0.05, 0.12, np.abs(a)) * 1.0, 1 - P.smoothstep(0.05, 0.12, np.abs(b)))
    wear = P.spectral_noise(rng, n, beta=1.5)
    return MaterialMaps(_rgb((0.8, 0.81, 0.83), (n, n)), 0.35 + 0.2 * wear, _const(1, n), ridge, bump=0.01)


def anodized_titanium(rng, n):
    tint = P.spectral_noise(rng, n, beta=3.0)
    c = _mix(_rgb((0.45, 0.55, 0.95), (n, n)), _rgb((0.7, 0.45, 0.85), (n, n)), tint)
    return MaterialMaps(c, _const(0.22, n), _const(1, n), _const(0.5, n), bump=0.0)


# --- mixtures of metal and dielectric ------------------------------------------------------

def rusty_iron(rng, n):
    rust = P.smoothstep(0.45, 0.6, P.spectral_noise(rng, n, beta=1.6))
    grain = P.spectral_noise(rng, n, beta=0.8)
    iron = _rgb((0.56, 0.57, 0.58), (n, n))
    rusty = _rgb((0.45, 0.2, 0.08), (n, n)) * (0.7 + 0.5 * grain[..., None])
    return MaterialMaps(_mix(iron, rusty, rust), 0.45 + 0.5 * rust, (rust < 0.5).astype(float),
                        0.5 + 0.4 * rust * grain, bump=0.01)


def chipped_paint(rng, n):
    chips = P.smoothstep(0.62, 0.66, P.spectral_noise(rng, n, beta=1.9))
    paint = _rgb((0.16, 0.42, 0.25), (n, n))
    steel = _rgb((0.7, 0.7, 0.7), (n, n))
    return MaterialMaps(_mix(paint, steel, chips), 0.5 - 0.2 * chips, (chips > 0.5).astype(float),
                        1 - 0.6 * chips, bump=0.004)


RECIPES: dict[str, Callable[[np.random.Generator, int], MaterialMaps]] = {
    f.__name__: f
    for f in (
        red_brick, ceramic_tiles, terracotta_hex, checker_plastic, oak_wood, white_marble, concrete, asphalt,
        black_rubber, blue_fabric, brown_leather, terrazzo, polka_plastic, beach_sand, cobblestone, carbon_fibre,
        brushed_steel, polished_gold, hammered_copper, chrome, diamond_plate, anodized_titanium,
        rusty_iron, chipped_paint,
    )
}

MAP_FILES = {"basecolor": "basecolor.png", "roughness": "roughness.png", "metallic": "metallic.png", "normal": "normal_gl.png"}


def _to_u8(x: np.ndarray) -> np.ndarray:
    return np.clip(np.floor(np.clip(x, 0.0, 1.0) * 255.0 + 0.5), 0, 255).astype(np.uint8)


def write_material(maps: MaterialMaps, folder: Path) -> None:
    """Write the four PNGs of a set into ``folder`` (names in MAP_FILES)."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    normal = P.height_to_normal(maps.height, maps.bump)
    images = {
        "basecolor": Image.fromarray(_to_u8(maps.basecolor), "RGB"),
        "roughness": Image.fromarray(_to_u8(maps.roughness), "L"),
        "metallic": Image.fromarray(_to_u8(maps.metallic), "L"),
        "normal": Image.fromarray(_to_u8(normal * 0.5 + 0.5), "RGB"),
    }
    for role, img in images.items():
        img.save(folder / MAP_FILES[role], format="PNG", optimize=False, compress_level=6)
