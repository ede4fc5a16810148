"""The asset manifest: one JSON object per line, one line per asset, sorted by id.

Why JSON lines and not Parquet: a manifest is small next to the assets it lists (Objaverse-LVIS
is ~46k lines, ~20 MB), it is read once per run, and its records are nested (per-role texture
files, stats). JSON lines keeps that nesting without a schema, can be read, grepped and diffed
by people, is streamed line by line, and is byte-identical for identical content (no writer
version or timestamps inside), so its sha256 identifies what a run drew from.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from pathlib import Path
from typing import Any, Iterable, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from dr.errors import UserError
from dr.files import write_text_atomic

Kind = Literal["object", "material", "hdri"]
KINDS: tuple[str, ...] = ("object", "material", "hdri")


class AssetRecord(BaseModel):
    """One asset.

    ``uri`` is the primary file (GLB, HDR map; for a material its folder), a local path, an
    fsspec URL or ``builtin://...`` (resolved by :func:`dr.assets_manifest.resolve.resolve_uri`).
    ``files`` maps a material's roles (basecolor, roughness, metallic, normal, arm, ...) to
    paths relative to ``uri``. ``sha256`` is the primary file's digest; for a material it is the
    digest of its sorted ``role:sha256`` lines. ``stats`` holds the probe's measurements
    (triangles, bounds_zup, radius_xy, texture sizes, HDR size, peak and mean, ...).
    """

    model_config = ConfigDict(extra="forbid")

    id: str = Field(pattern=r"^[A-Za-z0-9_][A-Za-z0-9_.:/+-]*$")
    kind: Kind
    source: str
    uri: str
    files: dict[str, str] = {}
    sha256: str = ""
    license: str = "unknown"
    category: str | None = None
    stats: dict[str, Any] = {}
    status: Literal["ok", "quarantined"] = "ok"
    reason: str | None = None

    def quarantine(self, reason: str) -> "AssetRecord":
        """A copy with status quarantined and ``reason`` (one line)."""
        return self.model_copy(update={"status": "quarantined", "reason": " ".join(reason.split())})


class Manifest:
    """An ordered, id-unique collection of records, read from and written to JSON lines.
    Treat it as immutable once made: lookups and the digest are cached."""

    def __init__(self, records: Iterable[AssetRecord] = (), path: Path | None = None):
        self.records: list[AssetRecord] = sorted(records, key=lambda r: r.id)
        self.path = path
        ids = [r.id for r in self.records]
        dup = [i for i, n in Counter(ids).items() if n > 1]
        if dup:
            where = f" in {path}" if path else ""
            raise UserError(f"manifest{where} lists asset {dup[0]!r} more than once")
        self._by_id = {r.id: r for r in self.records}
        self._usable: dict[str, list[AssetRecord]] = {}
        self._digest: str | None = None

    def __len__(self) -> int:
        return len(self.records)

    def get(self, asset_id: str) -> AssetRecord | None:
        return self._by_id.get(asset_id)

    def usable(self, kind: str) -> list[AssetRecord]:
        """Records of ``kind`` with status ok, in id order (the order samplers index into)."""
        if kind not in self._usable:
            self._usable[kind] = [r for r in self.records if r.kind == kind and r.status == "ok"]
        return self._usable[kind]

    def to_jsonl(self) -> str:
        return "".join(_line(r) for r in self.records)

    def digest(self) -> str:
        """sha256 of the manifest's bytes as written."""
        if self._digest is None:
            self._digest = hashlib.sha256(self.to_jsonl().encode()).hexdigest()
        return self._digest

    def summary(self) -> dict[str, Any]:
        """Counts per kind, source and status, and quarantine reasons with their counts."""
        per: dict[str, dict[str, dict[str, int]]] = {}
        for r in self.records:
            per.setdefault(r.kind, {}).setdefault(r.source, {"ok": 0, "quarantined": 0})[r.status] += 1
        reasons = Counter(r.reason or "" for r in self.records if r.status == "quarantined")
        return {
            "path": str(self.path) if self.path else None,
            "assets": len(self.records),
            "ok": sum(r.status == "ok" for r in self.records),
            "quarantined": sum(r.status == "quarantined" for r in self.records),
            "by_kind": per,
            "quarantine_reasons": dict(sorted(reasons.items(), key=lambda kv: (-kv[1], kv[0]))),
            "quarantined_ids": [r.id for r in self.records if r.status == "quarantined"],
        }


def _line(r: AssetRecord) -> str:
    return json.dumps(r.model_dump(mode="json"), sort_keys=True, separators=(",", ":"), allow_nan=False) + "\n"


def write_manifest(manifest: Manifest, path: str | Path) -> Path:
    """Write atomically (temporary file in the same folder, then rename); return the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(path, manifest.to_jsonl())
    manifest.path = path
    return path


def read_records(path: str | Path) -> list[AssetRecord]:
    """Parse a JSON-lines file of records; blank lines are skipped. UserError on a bad line."""
    path = Path(path)
    records = []
    with open(path) as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                records.append(AssetRecord.model_validate_json(line))
            except ValidationError as e:
                err = e.errors()[0]
                loc = ".".join(str(x) for x in err["loc"])
                raise UserError(f"manifest {path} line {n} is not an asset record ({loc}: {err['msg']})") from None
    return records


def load_manifest(path: str | Path, allow_empty: bool = False) -> Manifest:
    """Load a manifest file. UserError if it is missing, unreadable, malformed or (unless
    ``allow_empty``) lists no assets."""
    path = Path(path).expanduser()
    if not path.exists():
        raise UserError(f"manifest {str(path)!r} does not exist; build one with `dr-data assets build`")
    if not path.is_file():
        raise UserError(f"manifest {str(path)!r} is not a file")
    try:
        records = read_records(path)
    except UnicodeDecodeError:
        raise UserError(f"manifest {str(path)!r} is not a JSON-lines text file") from None
    if not records and not allow_empty:
        raise UserError(f"manifest {str(path)!r} lists no assets; build one with `dr-data assets build`")
    return Manifest(records, path=path)


def merge_manifests(manifests: list[Manifest]) -> Manifest:
    """One manifest from several (a run draws from one). An id listed by several must be the same
    asset (the same kind, uri and sha256: else UserError naming it); where one of them is
    quarantined, the quarantine wins, so a run's quarantine.jsonl merged into its source manifest
    marks those assets in it."""
    merged: dict[str, AssetRecord] = {}
    where: dict[str, str] = {}
    for m in manifests:
        name = str(m.path) if m.path else "a manifest"
        for r in m.records:
            have = merged.get(r.id)
            if have is None:
                merged[r.id], where[r.id] = r, name
                continue
            if (have.kind, have.uri) != (r.kind, r.uri) or (have.sha256 and r.sha256 and have.sha256 != r.sha256):
                raise UserError(f"asset {r.id!r} is a different asset in {where[r.id]} and {name} "
                                f"(uri {have.uri} / {r.uri}, sha256 {have.sha256[:12]} / {r.sha256[:12]}); "
                                f"rename one of them or drop one manifest")
            if r.status == "quarantined" and have.status == "ok":
                merged[r.id] = have.quarantine(r.reason or "quarantined")
    return Manifest(merged.values())
