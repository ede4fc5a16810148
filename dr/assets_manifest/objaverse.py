"""Objaverse: index a local download (the `hf-objaverse-v1` layout) and download with the
`objaverse` package.

Layout (as the `objaverse` package and the Hugging Face dataset write it)::

    hf-objaverse-v1/lvis-annotations.json.gz   {category: [uid, ...]}
    hf-objaverse-v1/object-paths.json.gz       {uid: "glbs/000-023/<uid>.glb"}
    hf-objaverse-v1/metadata/000-023.json.gz   {uid: {"license": "by", ...}}   (optional)
    hf-objaverse-v1/glbs/000-023/<uid>.glb
"""

from __future__ import annotations

import gzip
import json
import socket
from pathlib import Path
from typing import Callable, Iterable

from dr.assets_manifest.manifest import AssetRecord
from dr.errors import UserError

VERSIONED = "hf-objaverse-v1"
HUB_HOST = "huggingface.co"

# Sketchfab licence codes in the Objaverse metadata, as SPDX identifiers where one exists.
_LICENSES = {
    "by": "CC-BY-4.0", "by-sa": "CC-BY-SA-4.0", "by-nd": "CC-BY-ND-4.0", "by-nc": "CC-BY-NC-4.0",
    "by-nc-sa": "CC-BY-NC-SA-4.0", "by-nc-nd": "CC-BY-NC-ND-4.0", "cc0": "CC0-1.0",
}


def versioned_root(path: str | Path) -> Path:
    """The hf-objaverse-v1 folder for ``path`` (that folder itself, or a folder holding it)."""
    p = Path(path).expanduser().absolute()
    if not p.is_dir():
        raise UserError(f"Objaverse cache {str(p)!r} does not exist or is not a folder")
    for cand in (p, p / VERSIONED):
        if (cand / "object-paths.json.gz").is_file():
            return cand
    raise UserError(f"{str(p)!r} is not an Objaverse cache: no object-paths.json.gz in it or in {VERSIONED}/")


def _load_gz_json(path: Path, what: str):
    try:
        with gzip.open(path, "rt") as f:
            return json.load(f)
    except (OSError, EOFError, ValueError) as e:
        raise UserError(f"cannot read {what} {str(path)!r}: {type(e).__name__}") from None


def _licenses(root: Path, uids: Iterable[str], object_paths: dict[str, str]) -> dict[str, str]:
    """Licence per uid from the metadata shards that are present."""
    shards: dict[str, list[str]] = {}
    for uid in uids:
        parts = object_paths.get(uid, "").split("/")
        if len(parts) >= 2:
            shards.setdefault(parts[1], []).append(uid)
    out = {}
    for shard, members in shards.items():
        path = root / "metadata" / f"{shard}.json.gz"
        if not path.is_file():
            continue
        meta = _load_gz_json(path, "Objaverse metadata")
        for uid in members:
            code = str((meta.get(uid) or {}).get("license") or "").lower()
            if code:
                out[uid] = _LICENSES.get(code, code)
    return out


def round_robin(pairs: Iterable[tuple[str, str]]) -> list[tuple[str, str]]:
    """(category, uid) pairs ordered so that any prefix spreads over the categories: the first
    uid of every category (in category order), then every second, and so on."""
    by_cat: dict[str, list[str]] = {}
    for cat, uid in sorted(pairs):
        by_cat.setdefault(cat, []).append(uid)
    out = []
    depth = max((len(v) for v in by_cat.values()), default=0)
    for i in range(depth):
        out.extend((cat, uids[i]) for cat, uids in by_cat.items() if i < len(uids))
    return out


def select(object_paths: dict[str, str], category_of: dict[str, str], lvis_only: bool,
           categories: list[str] | None) -> list[tuple[str, str]]:
    """(category, uid) pairs to take, in round-robin order over categories, so a prefix of any
    length spreads over them; the same order for downloading and for indexing."""
    if categories:
        known = set(category_of.values())
        unknown = [c for c in categories if c not in known]
        if unknown:
            raise UserError(f"unknown LVIS categor{'y' if len(unknown) == 1 else 'ies'}: {', '.join(unknown[:5])}")
        wanted = set(categories)
        return round_robin((c, u) for u, c in category_of.items() if c in wanted)
    if lvis_only:
        return round_robin((c, u) for u, c in category_of.items())
    return round_robin((category_of.get(u, ""), u) for u in object_paths)


def index_objaverse(path: str | Path, lvis_only: bool = True, categories: list[str] | None = None,
                    limit: int | None = None) -> tuple[list[AssetRecord], int]:
    """Unprobed records for the downloaded GLBs of an Objaverse cache.

    By default only LVIS-annotated objects, with their LVIS category; ``categories`` keeps
    those categories only; ``limit`` keeps the first N downloaded in select()'s order. Returns
    the records and the number of selected objects that are not downloaded (skipped).
    """
    root = versioned_root(path)
    object_paths = _load_gz_json(root / "object-paths.json.gz", "Objaverse object paths")
    lvis_path = root / "lvis-annotations.json.gz"
    category_of: dict[str, str] = {}
    if lvis_path.is_file():
        for cat, uids in sorted(_load_gz_json(lvis_path, "LVIS annotations").items()):
            for uid in uids:
                category_of.setdefault(uid, cat)
    elif lvis_only:
        raise UserError(f"{str(root)!r} has no lvis-annotations.json.gz; download it or index all objects with --objaverse-all")
    selected = select(object_paths, category_of, lvis_only, categories)
    missing = 0
    chosen = []
    for cat, uid in selected:
        rel = object_paths.get(uid)
        if not rel or not (root / rel).is_file():
            missing += 1
            continue
        chosen.append((cat, uid, root / rel))
        if limit is not None and len(chosen) >= limit:
            break
    licenses = _licenses(root, [u for _, u, _ in chosen], object_paths)
    records = [
        AssetRecord(id=f"objaverse:{uid}", kind="object", source="objaverse", uri=str(glb),
                    license=licenses.get(uid, "unknown"), category=cat or None)
        for cat, uid, glb in chosen
    ]
    return records, missing


def check_hub(host: str = HUB_HOST, timeout_s: float = 10.0) -> None:
    """UserError unless ``host`` answers on port 443 within ``timeout_s``."""
    try:
        socket.create_connection((host, 443), timeout=timeout_s).close()
    except OSError as e:
        raise UserError(f"cannot reach {host} to download Objaverse ({e.strerror or type(e).__name__}); "
                        f"check the network, or index an existing download with --objaverse-cache") from None


def download(download_dir: str | Path, lvis: bool, categories: list[str] | None, limit: int | None,
             processes: int, log: Callable[[str], None] = print) -> Path:
    """Download (LVIS) objects with the `objaverse` package into ``download_dir``; return the
    hf-objaverse-v1 folder. Objects already there are not fetched again."""
    try:
        import objaverse
    except ImportError:
        raise UserError("the objaverse package is not installed: pip install 'dr[objaverse]'") from None
    check_hub()
    root = Path(download_dir).expanduser().absolute()
    objaverse.BASE_PATH = str(root)
    objaverse._VERSIONED_PATH = str(root / VERSIONED)  # the package keeps its cache path in this global
    socket.setdefaulttimeout(60)
    try:
        object_paths = objaverse._load_object_paths()
        category_of: dict[str, str] = {}  # loaded in every case: indexing later orders by it too
        for cat, us in sorted(objaverse.load_lvis_annotations().items()):
            for u in us:
                category_of.setdefault(u, cat)
        uids = [u for _, u in select(object_paths, category_of, lvis, categories)]
        if limit is not None:
            uids = uids[:limit]
        log(f"downloading {len(uids)} objects into {root / VERSIONED}")
        objaverse.load_objects(uids, download_processes=max(1, processes))
        objaverse.load_annotations(uids)  # licences
    except OSError as e:
        raise UserError(f"download from {HUB_HOST} failed: {e}") from None
    return root / VERSIONED
