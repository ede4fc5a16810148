"""Shard writer and reader: whole samples only, atomic shards, index sha256, fsspec reading."""

from __future__ import annotations

import hashlib
import json
import tarfile

import numpy as np
import pytest

from dr.shards.codec import npy_bytes, npy_zst_bytes
from dr.shards.reader import iter_samples
from dr.shards.writer import ShardWriter, read_index


def _members(T=2, H=4, W=5, seed=0):
    rng = np.random.default_rng(seed)
    rgb = rng.uniform(0, 100, (T, H, W, 3)).astype(np.float16)
    return {
        "json": json.dumps({"frames": T, "seed": seed}).encode(),
        "rgb.npy.zst": npy_zst_bytes(rgb),
        "mask.npy.zst": npy_zst_bytes((rgb[..., :1] > 50).astype(np.uint8)),
        "env.npy.zst": npy_zst_bytes(rng.uniform(0, 3, (4, 8, 3)).astype(np.float16)),
        "c2w.npy": npy_bytes(np.tile(np.eye(4, dtype=np.float32), (T, 1, 1))),
        "cam_to_env.npy": npy_bytes(np.tile(np.eye(3, dtype=np.float32), (T, 1, 1))),
    }, rgb


def test_round_trip_and_index(tmp_path):
    shards = tmp_path / "run" / "shards"
    with ShardWriter(shards, 0) as w:
        m0, rgb0 = _members(seed=0)
        w.add("clip_a", m0)
        m1, rgb1 = _members(seed=1)
        w.add("clip_b", m1)
    index = read_index(shards)
    entry = index["shards"][0]
    data = (shards / "shard-000000.tar").read_bytes()
    assert entry["sha256"] == hashlib.sha256(data).hexdigest() and entry["bytes"] == len(data)
    assert entry["samples"] == 2 and entry["keys"] == ["clip_a", "clip_b"] and index["samples"] == 2
    assert not list(shards.glob("*.partial"))
    samples = list(iter_samples(str(tmp_path / "run")))  # a run folder
    assert [s.key for s in samples] == ["clip_a", "clip_b"]
    assert np.array_equal(samples[1].passes["rgb"], rgb1) and samples[1].meta == {"frames": 2, "seed": 1}
    assert samples[0].passes["rgb"].dtype == np.float16 and samples[0].env.shape == (4, 8, 3)
    enc = samples[0].env_encodings(0, 6, 12)
    assert enc["env_ldr"].shape == (6, 12, 3)
    # only the passes asked for are decoded
    only = next(iter_samples(str(shards / "shard-000000.tar"), passes=["mask"], with_env=False))
    assert set(only.passes) == {"mask"} and only.env is None
    # member order inside the tar: each sample's members together, metadata first
    names = tarfile.open(shards / "shard-000000.tar").getnames()
    assert names[0] == "clip_a.json" and names[len(m0)] == "clip_b.json"


def test_same_samples_same_bytes(tmp_path):
    for d in ("a", "b"):
        with ShardWriter(tmp_path / d, 0) as w:
            w.add("clip_a", _members()[0])
    assert (tmp_path / "a" / "shard-000000.tar").read_bytes() == (tmp_path / "b" / "shard-000000.tar").read_bytes()


class _Boom:
    """A member source that fails half way through being read."""

    def __fspath__(self):
        raise OSError("disk went away")


def test_a_failing_sample_is_cut_off_whole(tmp_path):
    shards = tmp_path / "shards"
    w = ShardWriter(shards, 3)
    w.add("good", _members()[0])
    bad = dict(_members(seed=5)[0])
    bad["zzz.npy"] = _Boom()
    with pytest.raises(OSError):
        w.add("bad", bad)
    w.add("after", _members(seed=6)[0])
    w.close()
    names = tarfile.open(shards / "shard-000003.tar").getnames()
    assert not any(n.startswith("bad.") for n in names)
    assert [s.key for s in iter_samples(str(shards))] == ["good", "after"]


def test_an_unfinished_shard_never_appears(tmp_path):
    shards = tmp_path / "shards"
    with pytest.raises(RuntimeError):
        with ShardWriter(shards, 0) as w:
            w.add("clip_a", _members()[0])
            raise RuntimeError("worker lost")
    assert list(shards.iterdir()) == []
    with ShardWriter(shards, 0) as w:
        with pytest.raises(ValueError):
            w.add("Bad.Key", _members()[0])
        w.add("ok", _members()[0])
    with pytest.raises(FileExistsError):
        ShardWriter(shards, 0)


def test_reads_through_fsspec_urls(tmp_path):
    import fsspec

    shards = tmp_path / "shards"
    with ShardWriter(shards, 0) as w:
        w.add("clip_a", _members(seed=2)[0])
    mem = fsspec.filesystem("memory")
    for f in shards.iterdir():
        mem.pipe(f"/remote_run/shards/{f.name}", f.read_bytes())
    got = list(iter_samples("memory://remote_run"))
    assert [s.key for s in got] == ["clip_a"]
    assert np.array_equal(got[0].passes["rgb"], _members(seed=2)[1])
    assert [s.key for s in iter_samples(f"file://{shards}/index.json")] == ["clip_a"]


def test_a_shard_cut_between_samples_is_an_error_not_a_shorter_dataset(tmp_path):
    import tarfile

    import numpy as np

    from dr.shards.codec import npy_bytes
    from dr.shards.reader import iter_samples
    from dr.shards.writer import ShardWriter

    with ShardWriter(tmp_path / "shards", 0) as w:
        for k in ("a", "b"):
            w.add(k, {"json": b'{"frames": 1}', "c2w.npy": npy_bytes(np.eye(4, dtype=np.float32)[None])})
    path = tmp_path / "shards" / "shard-000000.tar"
    with tarfile.open(path) as tar:
        second = [m for m in tar.getmembers() if m.name.startswith("b.")][0].offset
    data = path.read_bytes()
    path.write_bytes(data[:second])  # exactly the first sample, no end-of-archive blocks
    # the tar's end-of-archive blocks are missing: the stream says so, with or without an index
    for source in (tmp_path / "shards", path):
        with pytest.raises(ValueError, match="ends without its end-of-archive blocks.*truncated"):
            list(iter_samples(str(source)))


def _zstd_claiming(size: int) -> bytes:
    """A 17-byte zstd frame whose header says it decodes to ``size`` bytes (one 16-byte RLE block)."""
    import struct

    return struct.pack("<I", 0xFD2FB528) + bytes([0xE0]) + struct.pack("<Q", size) + bytes([0x83, 0, 0, 0])


def test_a_member_that_claims_gigabytes_is_refused_before_anything_is_allocated(tmp_path, monkeypatch):
    import zstandard

    from dr.shards import codec

    bomb = _zstd_claiming(3 * 2**30)
    assert zstandard.frame_content_size(bomb) == 3 * 2**30 and len(bomb) == 17
    m, _ = _members()
    m["rgb.npy.zst"] = bomb
    with ShardWriter(tmp_path / "shards", 0) as w:
        w.add("clip_a", m)
    with pytest.raises(ValueError, match="claims 3221225472 bytes"):
        list(iter_samples(str(tmp_path / "shards")))
    # a frame that does not say its size is cut off at the bound while it decodes
    unsized = zstandard.ZstdCompressor(write_content_size=False).compress(npy_bytes(np.zeros(2**20, np.uint8)))
    assert codec.load_npy_zst(unsized).size == 2**20
    monkeypatch.setattr(codec, "MAX_MEMBER_BYTES", 2**19)
    with pytest.raises(ValueError, match="does not decode within 524288 bytes"):
        codec.load_npy_zst(unsized)


def test_shard_names_from_an_index_are_never_joined_into_paths(tmp_path):
    from dr.shards.validate import validate_source

    outside = tmp_path / "outside.tar"
    with ShardWriter(tmp_path / "elsewhere", 0) as w:
        w.add("clip_x", _members()[0])
    (tmp_path / "elsewhere" / "shard-000000.tar").rename(outside)
    shards = tmp_path / "run" / "shards"
    with ShardWriter(shards, 0) as w:
        w.add("clip_a", _members()[0])
    index = read_index(shards)
    index["shards"].append(dict(index["shards"][0], name="../../outside.tar"))
    (shards / "index.json").write_text(json.dumps(index))
    with pytest.raises(ValueError, match="'../../outside.tar', which is not a shard name"):
        list(iter_samples(str(tmp_path / "run")))
    report = validate_source(str(tmp_path / "run"))
    assert not report.ok and any("'../../outside.tar', which is not a shard name" in p.problem for p in report.problems)


def _raw_tar(path, entries) -> bytes:
    """A tar written member by member, as no writer of ours would: ``entries`` are (name, bytes)
    or (name, None) for a folder."""
    import io

    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in entries:
            info = tarfile.TarInfo(name)
            if data is None:
                info.type = tarfile.DIRTYPE
                tar.addfile(info)
            else:
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    path.write_bytes(buf.getvalue())
    return buf.getvalue()


MALFORMED = {
    "not contiguous": ([("a.json", b"{}"), ("b.json", b"{}"), ("a.c2w.npy", b"x")], "not contiguous"),
    "twice": ([("a.json", b"{}"), ("a.json", b"{}")], "appears twice"),
    "folder": ([("a.json", b"{}"), ("sub", None)], "not a regular file"),
    "bad name": ([("a.json", b"{}"), ("A-B.json", b"{}")], "is not <key>.<suffix>"),
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_one_strict_sample_stream_for_reader_validate_merge_and_export(tmp_path, case):
    """The same malformed tar is refused by the reader, reported by validate, rejected as a
    clip by the shard merge and refused by export, with the same finding: they share one stream
    (dr.shards.stream) instead of four readings of the tar format."""
    import io

    from dr.errors import UserError
    from dr.pipeline.export import shard_keys
    from dr.pipeline.shard_merge import ClipDataError, merge_shard
    from dr.shards.stream import ShardFormatError, StreamProblem, iter_raw_samples
    from dr.shards.validate import validate_source

    entries, finding = MALFORMED[case]
    path = tmp_path / "shard-000000.tar"
    data = _raw_tar(path, entries)
    with pytest.raises(ShardFormatError, match=finding):
        list(iter_samples(str(path)))
    found: list[StreamProblem] = []
    list(iter_raw_samples(io.BytesIO(data), problems=found))
    assert [p.message for p in found if finding in p.message], found
    report = validate_source(str(path))
    assert any(finding in p.problem for p in report.problems), report.problems
    with pytest.raises(UserError, match=finding):
        shard_keys(str(path))
    run = tmp_path / "run"
    (run / "clips").mkdir(parents=True)
    (run / "clips" / "a.tar").write_bytes(data)
    with pytest.raises(ClipDataError, match="clips/a.tar"):
        merge_shard(str(run), 0, ["a"], {"a": hashlib.sha256(data).hexdigest()}, str(tmp_path / "cache"))
    assert not (run / "shards").exists() or not list((run / "shards").iterdir())
