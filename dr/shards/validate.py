"""Validation of shards and samples against the data contract (DESIGN.md sections 2 and 3).

``check_sample(sample)`` lists what is wrong with one decoded sample: metadata, members, shapes,
dtypes, finite values, ranges, unit normals, mask consistency and the cameras.
``validate_source(source)`` checks a shard, a shards folder, an index.json or a run folder (a path
or an fsspec URL): each shard is read once, as a stream, hashed on the way and compared with its
index.json entry (bytes, sha256, sample count, keys); keys must be unique across every shard
checked; a shard that cannot be read is a problem, not a crash. Only one sample's arrays are in
memory at a time.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field

import numpy as np

from dr.errors import UserError
from dr.shards.codec import decode_member
from dr.shards.envmap import HALF_MAX
from dr.shards.reader import Sample, _assemble
from dr.shards.schema import PASSES, SCHEMA_VERSION
from dr.shards.stream import StreamProblem, iter_raw_samples
from dr.shards.writer import INDEX_NAME, is_shard_name

SOURCES = ("synthetic", "real")
PROVENANCES = ("rendered", "estimated", "captured", "missing")  # captured: a real clip's rgb
# float16 has 11 significant bits: a unit vector rounded per component is off by < 1e-3 in length
NORMAL_TOL = 1e-2
# values clipped to [0, 1] before the cast stay in [0, 1]; this only forgives other writers' rounding
UNIT_RANGE_TOL = 1e-3
# rotations are computed in float64 and stored as float32 (eps 6e-8)
ROTATION_TOL = 1e-4
# passes that must be 0 where the mask is 0; rgb is not one of them: it shows the environment there
ZERO_ON_BACKGROUND = ("basecolor", "roughness", "metallic", "normal", "depth")


@dataclass
class Problem:
    shard: str | None
    key: str | None
    problem: str


@dataclass
class Note:
    shard: str | None
    note: str


@dataclass
class Report:
    """What ``validate_source`` found. ``ok`` when there are no problems (notes are not failures)."""

    sources: list[str]
    shards: int = 0
    samples: int = 0
    problems: list[Problem] = field(default_factory=list)
    notes: list[Note] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_dict(self) -> dict:
        return {"ok": self.ok, "sources": list(self.sources), "shards": self.shards, "samples": self.samples,
                "problems": [asdict(p) for p in self.problems], "notes": [asdict(n) for n in self.notes]}

    def to_json(self, indent: int | None = 1) -> str:
        return json.dumps(self.to_dict(), indent=indent)


# --- one sample ------------------------------------------------------------------------------


def _is_count(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v > 0


def _count(n: int, of: int, what: str) -> str:
    return f"{n} of {of} {what} ({100.0 * n / max(of, 1):.3g}%)"


def _meta_problems(key: str, meta) -> list[str]:
    if not isinstance(meta, dict):
        return [f"metadata is a {type(meta).__name__}, not a JSON object"]
    out = []
    if meta.get("schema_version") != SCHEMA_VERSION:
        out.append(f"metadata schema_version is {meta.get('schema_version')!r}, expected {SCHEMA_VERSION}")
    if meta.get("source") not in SOURCES:
        out.append(f"metadata source is {meta.get('source')!r}, expected one of {', '.join(SOURCES)}")
    if meta.get("clip_id") != key:
        out.append(f"metadata clip_id is {meta.get('clip_id')!r}, not the sample key")
    for k in ("frames", "height", "width"):
        if not _is_count(meta.get(k)):
            out.append(f"metadata {k} is {meta.get(k)!r}, expected a positive integer")
    if not isinstance(meta.get("run_id"), str) or not meta.get("run_id"):
        out.append(f"metadata run_id is {meta.get('run_id')!r}, expected a non-empty string")
    passes = meta.get("passes")
    if not isinstance(passes, dict):
        out.append("metadata has no passes provenance (a dict pass -> {provenance: rendered|estimated|captured|missing})")
        return out
    for name in PASSES:
        entry = passes.get(name)
        prov = entry.get("provenance") if isinstance(entry, dict) else None
        if prov not in PROVENANCES:
            out.append(f"metadata passes.{name}.provenance is {prov!r}, expected one of {', '.join(PROVENANCES)}")
    for name in passes:
        if name not in PASSES:
            out.append(f"metadata passes lists {name!r}, which is not a pass of the schema")
    return out


def _provenance(meta, name: str) -> str | None:
    try:
        return meta["passes"][name]["provenance"]
    except (KeyError, TypeError):
        return None


def _expected_dims(meta, sample: Sample) -> tuple[int, int, int] | None:
    """(T, H, W) from the metadata when it is sound, else from the first 4-d pass (so that a bad
    metadata field is reported once, not again for every array)."""
    if isinstance(meta, dict) and all(_is_count(meta.get(k)) for k in ("frames", "height", "width")):
        return meta["frames"], meta["height"], meta["width"]
    for a in sample.passes.values():
        if isinstance(a, np.ndarray) and a.ndim == 4:
            return a.shape[:3]
    return None


def _finite_count(a: np.ndarray) -> int:
    return int(a.size - np.count_nonzero(np.isfinite(a)))


def _pass_problems(name: str, a, dims) -> tuple[list[str], bool]:
    """Problems of one pass array on its own; the bool says its shape fits (T, H, W, C)."""
    spec = PASSES[name]
    if not isinstance(a, np.ndarray):
        return [f"{name} is not an array"], False
    out = []
    if a.dtype != spec.dtype:
        out.append(f"{name} dtype is {a.dtype}, expected {spec.dtype}")
    shape_ok = dims is not None and a.shape == (*dims, spec.channels)
    if not shape_ok:
        want = f"({', '.join(map(str, dims))}, {spec.channels})" if dims else f"(T, H, W, {spec.channels})"
        out.append(f"{name} shape is {a.shape}, expected {want}")
    if a.dtype.kind not in "fiub":
        return out, shape_ok
    if a.dtype.kind == "f":
        bad = _finite_count(a)
        if bad:
            out.append(f"{name}: {_count(bad, a.size, 'values')} are not finite (NaN or inf)")
    x = np.where(np.isfinite(a), a, 0) if a.dtype.kind == "f" else a
    if name == "rgb":
        lo, hi = int(np.count_nonzero(x < 0)), int(np.count_nonzero(x > HALF_MAX))
        if lo:
            out.append(f"rgb: {_count(lo, a.size, 'values')} are negative (min {float(x.min()):.4g})")
        if hi:
            out.append(f"rgb: {_count(hi, a.size, 'values')} exceed float16's {HALF_MAX:g} (max {float(x.max()):.4g})")
    elif name in ("basecolor", "roughness", "metallic"):
        bad = int(np.count_nonzero((x < -UNIT_RANGE_TOL) | (x > 1 + UNIT_RANGE_TOL)))
        if bad:
            out.append(f"{name}: {_count(bad, a.size, 'values')} are outside [0, 1] "
                       f"(min {float(x.min()):.4g}, max {float(x.max()):.4g})")
    elif name == "mask":
        bad = int(np.count_nonzero((x != 0) & (x != 1)))
        if bad:
            other = np.unique(x[(x != 0) & (x != 1)])[:5]
            out.append(f"mask: {_count(bad, a.size, 'values')} are not 0 or 1 (e.g. {', '.join(map(str, other))})")
    return out, shape_ok


def _mask_problems(sample: Sample, ok_shape: set[str], synthetic: bool) -> list[str]:
    """Consistency of the passes with the mask: 0 on background, positive depth and unit normals
    on surface pixels."""
    mask = sample.passes["mask"][..., 0]
    bg, surf = mask == 0, mask == 1
    n_bg, n_surf = int(np.count_nonzero(bg)), int(np.count_nonzero(surf))
    out = []
    for name in ZERO_ON_BACKGROUND:
        if name not in ok_shape:
            continue
        a = sample.passes[name]
        bad = int(np.count_nonzero((a[bg] != 0).any(axis=-1)))  # NaN != 0: counted as well
        if bad:
            out.append(f"{name}: {_count(bad, n_bg, 'background pixels')} are not 0")
    if "depth" in ok_shape and synthetic and n_surf:
        d = sample.passes["depth"][..., 0][surf]
        bad = int(np.count_nonzero(~(d > 0)))
        if bad:
            out.append(f"depth: {_count(bad, n_surf, 'surface pixels')} are not > 0 (min {float(d.min()):.4g})")
    if "normal" in ok_shape and n_surf:
        n = sample.passes["normal"][surf].astype(np.float32)
        err = np.abs(np.linalg.norm(n, axis=-1) - 1.0)
        err[np.isnan(err)] = np.inf  # a NaN normal is as far from unit length as it gets
        bad = int(np.count_nonzero(err >= NORMAL_TOL))
        if bad:
            out.append(f"normal: {_count(bad, n_surf, 'surface pixels')} are not unit length "
                       f"(| |n| - 1 | up to {float(err.max()):.3g}, tolerance {NORMAL_TOL:g})")
    return out


def _rotation_problems(name: str, R: np.ndarray) -> list[str]:
    """R: (T, 3, 3) float. Orthonormal with determinant +1 (a rotation, not a reflection)."""
    R = R.astype(np.float64)
    err = np.abs(R @ np.swapaxes(R, -1, -2) - np.eye(3)).max(axis=(-1, -2))
    out = []
    if (err > ROTATION_TOL).any():
        t = int(np.argmax(err))
        out.append(f"{name}: rotation part of {int(np.count_nonzero(err > ROTATION_TOL))} of {len(R)} frames is not "
                   f"orthonormal (max |R R^T - I| {float(err[t]):.3g} at frame {t}, tolerance {ROTATION_TOL:g})")
    det = np.linalg.det(R)
    if (det < 0).any():
        out.append(f"{name}: {int(np.count_nonzero(det < 0))} of {len(R)} frames have determinant "
                   f"{float(det.min()):.3g} (a reflection, not a rotation)")
    return out


def _camera_problems(sample: Sample, T: int | None) -> list[str]:
    out = []
    shapes = {"c2w": (4, 4), "intrinsics": (3, 3), "cam_to_env": (3, 3)}
    for name, tail in shapes.items():
        a = getattr(sample, name)
        if a is None:
            out.append(f"missing member {sample.key}.{name}.npy")
            continue
        if not isinstance(a, np.ndarray) or a.dtype.kind != "f":
            out.append(f"{name} is not a float array")
            continue
        if a.dtype != np.float32:
            out.append(f"{name} dtype is {a.dtype}, expected float32")
        want = (T if T is not None else "T", *tail)
        if a.ndim != 3 or a.shape[1:] != tail or (T is not None and a.shape[0] != T):
            out.append(f"{name} shape is {a.shape}, expected ({', '.join(map(str, want))})")
            continue
        bad = _finite_count(a)
        if bad:
            out.append(f"{name}: {_count(bad, a.size, 'values')} are not finite")
            continue
        if name == "c2w":
            out += _rotation_problems("c2w", a[:, :3, :3])
            last = np.abs(a[:, 3, :] - np.array([0, 0, 0, 1], np.float32)).max()
            if last > 0:
                out.append(f"c2w: last row is not [0, 0, 0, 1] (off by up to {float(last):.3g})")
        elif name == "cam_to_env":
            out += _rotation_problems("cam_to_env", a)
        else:
            last = np.abs(a[:, 2, :] - np.array([0, 0, 1], np.float32)).max()
            if last > 0:
                out.append(f"intrinsics: last row is not [0, 0, 1] (off by up to {float(last):.3g})")
            for i, f in ((0, "fx"), (1, "fy")):
                if not (a[:, i, i] > 0).all():
                    out.append(f"intrinsics: {f} is not positive (min {float(a[:, i, i].min()):.4g})")
    return out


def _env_problems(sample: Sample) -> list[str]:
    """The env map: required unless the metadata's env says provenance missing (a dry run's
    samples; synthetic ones say rendered, real ones estimated; older samples say nothing)."""
    env = sample.env
    m = sample.meta.get("env") if isinstance(sample.meta, dict) else None
    prov = m.get("provenance") if isinstance(m, dict) else None
    if prov is not None and prov not in PROVENANCES:
        return [f"metadata env.provenance is {prov!r}, expected one of {', '.join(PROVENANCES)}"]
    if env is None:
        return [] if prov == "missing" else [f"missing member {sample.key}.env.npy.zst"]
    if prov == "missing":
        return ["env is stored but metadata says it is missing"]
    if not isinstance(env, np.ndarray):
        return ["env is not an array"]
    out = []
    if env.dtype != np.float16:
        out.append(f"env dtype is {env.dtype}, expected float16")
    if env.ndim != 3 or env.shape[2] != 3 or env.shape[1] != 2 * env.shape[0] or env.shape[0] == 0:
        out.append(f"env shape is {env.shape}, expected (He, 2 He, 3)")
    else:
        m = sample.meta.get("env") if isinstance(sample.meta, dict) else None
        if isinstance(m, dict) and (m.get("height"), m.get("width")) != env.shape[:2]:
            out.append(f"env is {env.shape[0]}x{env.shape[1]} but metadata env says {m.get('height')}x{m.get('width')}")
    if env.dtype.kind == "f":
        bad = _finite_count(env)
        if bad:
            out.append(f"env: {_count(bad, env.size, 'values')} are not finite")
        neg = int(np.count_nonzero(env < 0))
        if neg:
            out.append(f"env: {_count(neg, env.size, 'values')} are negative (min {float(env[env < 0].min()):.4g})")
    return out


def _real_mask_of_ones(meta, name: str, a) -> bool:
    """A real clip's mask: not estimated (provenance missing) but stored as 1 everywhere, as DESIGN
    section 2 says, so that readers need no special case."""
    return (name == "mask" and isinstance(meta, dict) and meta.get("source") == "real"
            and isinstance(a, np.ndarray) and a.size > 0 and bool((a == 1).all()))


def sample_problems(sample: Sample) -> list[str]:
    """What is wrong with one decoded sample (see ``check_sample``), without the key in front."""
    meta = sample.meta
    out = _meta_problems(sample.key, meta)
    dims = _expected_dims(meta, sample)
    ok_shape: set[str] = set()
    for name in PASSES:
        prov = _provenance(meta, name)
        if name not in sample.passes:
            if prov != "missing":
                out.append(f"missing member {sample.key}.{name}.npy.zst (metadata says {prov or 'nothing'})")
            continue
        if prov == "missing" and not _real_mask_of_ones(meta, name, sample.passes[name]):
            out.append(f"{name} is stored but metadata says it is missing")
        problems, shape_ok = _pass_problems(name, sample.passes[name], dims)
        out += problems
        if shape_ok:
            ok_shape.add(name)
    if "mask" in ok_shape:
        synthetic = isinstance(meta, dict) and meta.get("source") == "synthetic"
        out += _mask_problems(sample, ok_shape, synthetic)
    out += _env_problems(sample)
    out += _camera_problems(sample, dims[0] if dims else None)
    for suffix in sample.extra:
        out.append(f"unexpected member {sample.key}.{suffix}")
    return out


def check_sample(sample: Sample) -> list[str]:
    """Problems of one decoded sample, each a short line starting with its key and giving the
    measured number; [] when it meets the contract of DESIGN.md sections 2 and 3."""
    return [f"{sample.key}: {p}" for p in sample_problems(sample)]


# --- sources and shards ----------------------------------------------------------------------


@dataclass
class ShardTarget:
    """One shard to check: how to open it, what to call it, and its index entry (None when no
    index lists it)."""

    fs: object
    path: str
    name: str
    entry: dict | None


@dataclass
class Plan:
    """The shards that sources name, and what was found while resolving them."""

    sources: list[str]
    shards: list[ShardTarget] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    notes: list[Note] = field(default_factory=list)

    @property
    def expected_samples(self) -> int | None:
        """Samples the indexes promise (None when a shard has no index entry)."""
        if any(s.entry is None for s in self.shards):
            return None
        return sum(int(s.entry.get("samples", 0)) for s in self.shards)


def _join(base: str, name: str) -> str:
    return base.rstrip("/") + "/" + name if base else name


def _parent(path: str) -> str:
    return path.rstrip("/").rpartition("/")[0]


def _basename(path: str) -> str:
    return path.rstrip("/").rpartition("/")[2]


def _read_index(fs, path: str, display: str, plan: Plan) -> dict | None:
    try:
        with fs.open(path, "rt") as f:
            index = json.load(f)
        if not isinstance(index, dict) or not isinstance(index.get("shards"), list) or not all(
                isinstance(e, dict) and isinstance(e.get("name"), str) for e in index["shards"]):
            raise ValueError("expected {shards: [{name, samples, bytes, sha256, keys}, ...]}")
    except Exception as e:  # noqa: BLE001 - any unreadable index is a finding, not a crash
        plan.problems.append(Problem(display, None, f"index.json cannot be read: {' '.join(str(e).split())[:200]}"))
        return None
    total = sum(int(e.get("samples", 0)) for e in index["shards"] if isinstance(e.get("samples", 0), int))
    if index.get("samples") is not None and index.get("samples") != total:
        plan.problems.append(Problem(display, None, f"index.json says {index.get('samples')} samples but its "
                                                    f"shards list {total}"))
    if index.get("schema_version", SCHEMA_VERSION) != SCHEMA_VERSION:
        plan.problems.append(Problem(display, None, f"index.json schema_version is {index.get('schema_version')!r}, "
                                                    f"expected {SCHEMA_VERSION}"))
    return index


def _plan_folder(fs, path: str, display: str, plan: Plan, has_index: bool) -> None:
    """A shards folder: the shards its index lists, then any on disk that it does not."""
    index = _read_index(fs, _join(path, INDEX_NAME), _join(display, INDEX_NAME), plan) if has_index else None
    names = sorted(_basename(p) for p in fs.ls(path, detail=False))
    if not has_index and any(n.endswith(".tar") for n in names):
        plan.problems.append(Problem(display, None, "no index.json: the shards cannot be read as a dataset"))
    listed = {}
    for e in (index or {}).get("shards", []):
        if not is_shard_name(e["name"]):
            plan.problems.append(Problem(display, None, f"index.json lists {e['name']!r}, which is not a shard name "
                                                        "(shard-NNNNNN.tar)"))
            continue
        if e["name"] in listed:
            plan.problems.append(Problem(_join(display, e["name"]), None, "listed twice in index.json"))
            continue
        listed[e["name"]] = e
        if e["name"] not in names:
            plan.problems.append(Problem(_join(display, e["name"]), None, "listed in index.json but not there"))
            continue
        plan.shards.append(ShardTarget(fs, _join(path, e["name"]), _join(display, e["name"]), e))
    for name in names:
        if name.endswith(".tar") and name not in listed:
            if has_index and index is not None:
                plan.problems.append(Problem(_join(display, name), None, "shard is not listed in index.json"))
            plan.shards.append(ShardTarget(fs, _join(path, name), _join(display, name), None))
        elif name.endswith(".tar.partial"):
            plan.notes.append(Note(_join(display, name), "unfinished shard, not part of the dataset"))


def plan_sources(sources: Iterable[str]) -> Plan:
    """Resolve each source (a shard .tar, a shards folder, an index.json or a run folder; local
    path or fsspec URL) into the shards to check. UserError for a source that is none of these."""
    import fsspec

    sources = [str(s) for s in sources]
    if not sources:
        raise UserError("give at least one run folder, shards folder, index.json or shard")
    plan = Plan(sources)
    seen: set[tuple[str, str]] = set()
    for src in sources:
        try:
            fs, path = fsspec.core.url_to_fs(src)
            exists = fs.exists(path)
        except Exception as e:  # noqa: BLE001 - unknown protocol, missing driver, no access
            raise UserError(f"cannot open {src!r}: {' '.join(str(e).split())[:200]}") from None
        if not exists:
            raise UserError(f"{src!r} not found; give a run folder, a shards folder, an index.json or a shard .tar")
        display = src.rstrip("/") or src
        before = len(plan.shards)
        if fs.isfile(path):
            name = _basename(path)
            if name.endswith(".tar"):
                index_path = _join(_parent(path), INDEX_NAME)
                entry = None
                if fs.exists(index_path):
                    index = _read_index(fs, index_path, _join(_parent(display), INDEX_NAME), plan)
                    entries = [e for e in (index or {}).get("shards", []) if e["name"] == name]
                    if index is not None and not entries:
                        plan.problems.append(Problem(display, None, "shard is not listed in the index.json next "
                                                                    "to it"))
                    entry = entries[0] if entries else None
                else:
                    plan.notes.append(Note(display, "no index.json next to it: bytes, sha256 and keys not checked "
                                                    "against an index"))
                plan.shards.append(ShardTarget(fs, path, display, entry))
            elif name == INDEX_NAME:
                _plan_folder(fs, _parent(path), _parent(display), plan, has_index=True)
            elif name.endswith(".tar.partial"):
                raise UserError(f"{src!r} is an unfinished shard (.partial), not part of any dataset; "
                                f"give a finished shard .tar")
            else:
                raise UserError(f"{src!r} is neither a shard (.tar), a shards folder, an index.json nor a run folder")
        elif fs.exists(_join(path, INDEX_NAME)):
            _plan_folder(fs, path, display, plan, has_index=True)
        elif fs.isdir(_join(path, "shards")):
            _plan_folder(fs, _join(path, "shards"), _join(display, "shards"), plan,
                         has_index=fs.exists(_join(path, "shards/" + INDEX_NAME)))
        elif any(_basename(p).endswith((".tar", ".tar.partial")) for p in fs.ls(path, detail=False)):
            _plan_folder(fs, path, display, plan, has_index=False)
        elif fs.exists(_join(path, "run.json")):
            pass  # a run that has no shards/ yet: "no shards" below
        else:
            raise UserError(f"{src!r} is neither a shard (.tar), a shards folder, an index.json nor a run folder "
                            f"(no index.json, shards/ or .tar files in it)")
        if len(plan.shards) == before:
            plan.notes.append(Note(display, "no shards"))
        # the same shard named twice (a run and one of its shards) is checked once
        fresh = []
        for t in plan.shards[before:]:
            ident = (str(getattr(t.fs, "protocol", "")), t.path)
            if ident in seen:
                plan.notes.append(Note(t.name, "named more than once; checked once"))
                continue
            seen.add(ident)
            fresh.append(t)
        plan.shards[before:] = fresh
    return plan


class _HashingReader:
    """A read-only file wrapper that hashes and counts every byte read through it."""

    def __init__(self, raw):
        self.raw, self.sha, self.bytes = raw, hashlib.sha256(), 0

    def read(self, n: int = -1) -> bytes:
        data = self.raw.read(n)
        self.sha.update(data)
        self.bytes += len(data)
        return data

    def drain(self) -> None:
        while self.read(1 << 20):
            pass


def _decode(shard: str, key: str, raw: dict[str, bytes], report: Report) -> Sample | None:
    decoded = {}
    for suffix, data in raw.items():
        try:
            decoded[suffix] = decode_member(suffix, data)
        except Exception as e:  # noqa: BLE001 - a corrupt member is a finding
            report.problems.append(Problem(shard, key, f"member {key}.{suffix} cannot be decoded: "
                                                       f"{type(e).__name__}: {' '.join(str(e).split())[:200]}"))
    if "json" not in decoded:
        if "json" not in raw:
            report.problems.append(Problem(shard, key, f"missing member {key}.json (metadata); sample not checked"))
        return None
    return _assemble(key, decoded)


def _check_shard(t: ShardTarget, seen: dict[str, str], report: Report,
                 on_sample: Callable[[str], None] | None) -> None:
    keys: list[str] = []
    try:
        opened = t.fs.open(t.path, "rb")
    except Exception as e:  # noqa: BLE001 - gone since it was listed, no permission, network
        report.problems.append(Problem(t.name, None, f"cannot be opened: {type(e).__name__}: {e}"))
        return
    with opened as raw:
        f = _HashingReader(raw)
        found: list[StreamProblem] = []
        reported = 0
        try:
            for key, raw_members in iter_raw_samples(f, problems=found):
                report.problems += [Problem(t.name, p.key, p.message) for p in found[reported:]]
                reported = len(found)
                if key in seen:
                    where = "earlier in this shard" if seen[key] == t.name else f"also in {seen[key]}"
                    report.problems.append(Problem(t.name, key, f"duplicate key ({where})"))
                else:
                    seen[key] = t.name
                keys.append(key)
                sample = _decode(t.name, key, raw_members, report)
                del raw_members
                if sample is not None:
                    report.problems += [Problem(t.name, key, p) for p in sample_problems(sample)]
                del sample
                report.samples += 1
                if on_sample is not None:
                    on_sample(key)
        except Exception as e:  # noqa: BLE001 - the file system failed under the stream: a finding
            found.append(StreamProblem(None, f"cannot be read after {len(keys)} samples: {type(e).__name__}: "
                                             f"{' '.join(str(e).split())[:200]}", fatal=True))
        report.problems += [Problem(t.name, p.key, p.message) for p in found[reported:]]
        readable = not any(p.fatal for p in found)
        try:
            f.drain()
        except Exception as e:  # noqa: BLE001
            report.problems.append(Problem(t.name, None, f"cannot be read to its end: {e}"))
            return
    e = t.entry
    if e is None:
        return
    if e.get("bytes") != f.bytes:
        report.problems.append(Problem(t.name, None, f"is {f.bytes} bytes, index.json says {e.get('bytes')}"))
    if e.get("sha256") != f.sha.hexdigest():
        report.problems.append(Problem(t.name, None, f"sha256 {f.sha.hexdigest()[:16]}... differs from index.json's "
                                                     f"{str(e.get('sha256'))[:16]}..."))
    if readable:
        if e.get("samples") != len(keys):
            report.problems.append(Problem(t.name, None, f"holds {len(keys)} samples, index.json says "
                                                         f"{e.get('samples')}"))
        listed = e.get("keys")
        if listed != keys:
            missing = [k for k in (listed or []) if k not in keys]
            extra = [k for k in keys if k not in (listed or [])]
            what = ", ".join([f"missing {missing[:5]}"] * bool(missing) + [f"not listed {extra[:5]}"] * bool(extra))
            what = what or "the same keys in another order"
            report.problems.append(Problem(t.name, None, f"keys differ from index.json: {what}"))


def validate_plan(plan: Plan, on_sample: Callable[[str], None] | None = None) -> Report:
    """Check every shard of ``plan``; ``on_sample(key)`` is called after each sample."""
    report = Report(list(plan.sources), problems=list(plan.problems), notes=list(plan.notes))
    seen: dict[str, str] = {}
    for t in plan.shards:
        _check_shard(t, seen, report, on_sample)
        report.shards += 1
    return report


def validate_source(source: str, on_sample: Callable[[str], None] | None = None) -> Report:
    """Validate a shard, shards folder, index.json or run folder (path or fsspec URL).
    UserError when ``source`` is none of these; everything found in the data is in the Report."""
    return validate_plan(plan_sources([source]), on_sample)


def validate_sources(sources: Iterable[str], on_sample: Callable[[str], None] | None = None) -> Report:
    """``validate_source`` over several sources at once: keys must be unique across all of them."""
    return validate_plan(plan_sources(sources), on_sample)
