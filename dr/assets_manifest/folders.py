"""Indexers for folders of PBR texture sets (ambientCG and Poly Haven naming) and of HDRIs."""

from __future__ import annotations

import re
from collections import defaultdict
from pathlib import Path

from dr.assets_manifest.hdr_image import HDR_SUFFIXES
from dr.assets_manifest.manifest import AssetRecord
from dr.assets_manifest.probes import LDR_SUFFIXES
from dr.errors import UserError

_EXT = "|".join(s.lstrip(".") for s in (*LDR_SUFFIXES, ".exr"))

# ambientCG: <Set>_<Res>-<Fmt>_<Map>.<ext>, e.g. Bricks076C_1K-JPG_Color.jpg (older sets: <Set>_<Map>)
_AMBIENTCG = re.compile(
    rf"^(?P<set>.+?)_(?P<map>Color|Roughness|Metalness|NormalGL|NormalDX|Displacement|AmbientOcclusion|Opacity|Emission)"
    rf"\.(?:{_EXT})$", re.IGNORECASE)
_AMBIENTCG_ROLES = {"color": "basecolor", "roughness": "roughness", "metalness": "metallic", "normalgl": "normal",
                    "normaldx": "normal_dx", "displacement": "displacement", "ambientocclusion": "ao",
                    "opacity": "opacity", "emission": "emission"}

# Poly Haven: <set>_<map>_<res>.<ext>, e.g. brick_wall_001_diff_1k.jpg, ..._nor_gl_2k.exr, ..._arm_1k.png
_POLYHAVEN = re.compile(
    rf"^(?P<set>.+?)_(?P<map>diff|diffuse|col|rough|roughness|metal|metallic|nor_gl|nor_dx|arm|ao|disp|displacement)"
    rf"_(?P<res>\d+k)\.(?:{_EXT})$", re.IGNORECASE)
_POLYHAVEN_ROLES = {"diff": "basecolor", "diffuse": "basecolor", "col": "basecolor", "rough": "roughness",
                    "roughness": "roughness", "metal": "metallic", "metallic": "metallic", "nor_gl": "normal",
                    "nor_dx": "normal_dx", "arm": "arm", "ao": "ao", "disp": "displacement", "displacement": "displacement"}

# Within a set, prefer formats a renderer reads losslessly and fast.
_FORMAT_RANK = {".png": 0, ".exr": 1, ".tif": 2, ".tiff": 2, ".jpg": 3, ".jpeg": 3}


def _safe(s: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.:+/-]", "_", s)


def require_dir(path: str | Path, what: str) -> Path:
    p = Path(path).expanduser()
    if not p.exists():
        raise UserError(f"{what} folder {str(p)!r} does not exist")
    if not p.is_dir():
        raise UserError(f"{what} {str(p)!r} is not a folder")
    return p.absolute()


def index_materials(root: str | Path, license: str = "CC0-1.0") -> list[AssetRecord]:
    """One unprobed record per texture set found under ``root`` (recursively).

    Roles: basecolor, roughness, metallic, normal (OpenGL), normal_dx (DirectX: green flipped),
    arm (packed R=AO, G=roughness, B=metallic), ao, displacement, opacity, emission. A set
    without a base colour map is kept, quarantined with that reason. ambientCG and Poly Haven
    both publish CC0 textures, hence the default ``license``.
    """
    root = require_dir(root, "materials")
    sets: dict[tuple[str, Path, str], dict[str, Path]] = defaultdict(dict)
    for path in sorted(root.rglob("*")):
        if not path.is_file():
            continue
        if m := _POLYHAVEN.match(path.name):
            key = ("polyhaven", path.parent, f"{m['set']}_{m['res'].lower()}")
            role = _POLYHAVEN_ROLES[m["map"].lower()]
        elif m := _AMBIENTCG.match(path.name):
            key = ("ambientcg", path.parent, m["set"])
            role = _AMBIENTCG_ROLES[m["map"].lower()]
        else:
            continue
        have = sets[key].get(role)
        if have is None or _FORMAT_RANK.get(path.suffix.lower(), 9) < _FORMAT_RANK.get(have.suffix.lower(), 9):
            sets[key][role] = path
    if not sets:
        raise UserError(f"no PBR texture sets under {str(root)!r} (expected ambientCG names like X_Color.jpg "
                        f"or Poly Haven names like x_diff_1k.jpg)")
    out = []
    for (source, folder, name), files in sorted(sets.items(), key=lambda kv: (str(kv[0][1]), kv[0][2])):
        if "normal" in files:
            files.pop("normal_dx", None)
        rel = folder.relative_to(root).as_posix()
        ident = _safe(f"{source}:{rel + '/' if rel != '.' else ''}{name}")
        rec = AssetRecord(id=ident, kind="material", source=source, uri=str(folder),
                          files={role: p.name for role, p in sorted(files.items())}, license=license)
        if "basecolor" not in files:
            rec = rec.quarantine("has no base colour map")
        out.append(rec)
    return out


def _files_under(root: str | Path, what: str, suffixes) -> tuple[Path, list[Path]]:
    """(root, the files under it with one of ``suffixes``, sorted); UserError when there are none."""
    root = require_dir(root, what)
    files = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in suffixes)
    if not files:
        raise UserError(f"no {' or '.join(suffixes)} files under {str(root)!r}")
    return root, files


def index_hdris(root: str | Path, license: str = "unknown") -> list[AssetRecord]:
    """One unprobed record per .exr/.hdr file under ``root`` (recursively)."""
    root, files = _files_under(root, "HDRI", HDR_SUFFIXES)
    out = []
    for p in files:
        rel = p.relative_to(root).as_posix()
        out.append(AssetRecord(id=_safe(f"hdri:{rel}"), kind="hdri", source="hdri-folder", uri=str(p),
                               license=license, category=p.stem))
    return out


OBJECT_SUFFIXES = (".glb", ".gltf")


def index_objects(root: str | Path, license: str = "unknown") -> list[AssetRecord]:
    """One unprobed record per .glb/.gltf file under ``root`` (recursively): a team's own
    assets, an Objaverse-XL download, any plain folder. The category is the name of the first
    sub-folder a file is in (``root/chair/a.glb`` -> chair; files directly in ``root`` have
    none); the id is ``objects:<root name>/<path without suffix>``. For a .gltf the manifest's
    sha256 is that of the .gltf file (its buffers and textures are read at render time)."""
    root, files = _files_under(root, "objects", OBJECT_SUFFIXES)
    out = []
    for p in files:
        rel = p.relative_to(root)
        category = rel.parts[0] if len(rel.parts) > 1 else None
        out.append(AssetRecord(id=_safe(f"objects:{root.name}/{rel.with_suffix('').as_posix()}"), kind="object",
                               source="object-folder", uri=str(p), license=license, category=category))
    return out
