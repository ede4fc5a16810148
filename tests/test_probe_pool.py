"""The probe pool: a probe that hangs or kills its worker quarantines its asset and the build
goes on; journaled probes are reused only while the files are unchanged."""

from __future__ import annotations

import os
import signal
import time

from dr.assets_manifest.manifest import AssetRecord
from dr.assets_manifest.probe_pool import ProbeJournal, fingerprint, probe_all


def _misbehaving_probe(record: AssetRecord, max_triangles: int, cache) -> AssetRecord:
    """A stand-in for a decoder that hangs or crashes on some files (the pool is under test)."""
    if record.id.endswith("hang"):
        if os.path.isdir(record.uri):  # tell the test the probe is under way
            open(os.path.join(record.uri, f"started-{os.getpid()}"), "w").close()
        time.sleep(60)
    if record.id.endswith("crash"):
        os.kill(os.getpid(), signal.SIGKILL)
    if record.id.endswith("raise"):
        raise RuntimeError("a bug in a probe")
    return record.model_copy(update={"stats": {"pid": os.getpid()}, "sha256": "0" * 64})


def _rec(name: str, uri: str = "/nonexistent") -> AssetRecord:
    return AssetRecord(id=f"test:{name}", kind="hdri", source="test", uri=uri)


def test_hangs_and_crashes_are_quarantined_and_the_rest_is_probed():
    recs = [_rec("a"), _rec("b-hang"), _rec("c"), _rec("d-crash"), _rec("e"), _rec("f-raise"), _rec("g"),
            _rec("h").quarantine("already bad")]
    done = []
    start = time.monotonic()
    out = probe_all(recs, max_triangles=1, timeout_s=2.0, workers=2, cache=None,
                    on_done=lambda r, reused: done.append(r.id), probe_fn=_misbehaving_probe)
    assert time.monotonic() - start < 30  # the 60 s hang was cut at its time limit
    by = {r.id: r for r in out}
    assert [r.id for r in out] == [r.id for r in recs]  # input order
    assert sorted(done) == sorted(by)
    assert by["test:b-hang"].status == "quarantined" and by["test:b-hang"].reason == "probe timed out after 2 s"
    assert by["test:d-crash"].status == "quarantined" and "probe crashed" in by["test:d-crash"].reason
    assert by["test:f-raise"].reason == "probe failed: RuntimeError: a bug in a probe"
    assert by["test:h"].reason == "already bad"
    for ok in ("a", "c", "e", "g"):
        assert by[f"test:{ok}"].status == "ok" and by[f"test:{ok}"].stats["pid"] != os.getpid()


def test_journal_reuses_unchanged_files_only(tmp_path):
    f = tmp_path / "x.exr"
    f.write_bytes(b"one")
    rec = _rec("x", str(f))
    journal = ProbeJournal(tmp_path / "journal.jsonl", {"max_triangles": 1})
    first = probe_all([rec], max_triangles=1, timeout_s=10, workers=1, cache=None, journal=journal,
                      probe_fn=_misbehaving_probe)
    reused = []
    again = probe_all([rec], max_triangles=1, timeout_s=10, workers=1, cache=None,
                      journal=ProbeJournal(tmp_path / "journal.jsonl", {"max_triangles": 1}),
                      on_done=lambda r, was: reused.append(was), probe_fn=_misbehaving_probe)
    assert reused == [True] and again == first
    # other probe settings: not reused
    reused.clear()
    probe_all([rec], max_triangles=2, timeout_s=10, workers=1, cache=None,
              journal=ProbeJournal(tmp_path / "journal.jsonl", {"max_triangles": 2}),
              on_done=lambda r, was: reused.append(was), probe_fn=_misbehaving_probe)
    assert reused == [False]
    # the file changes (size and mtime): not reused
    fp = fingerprint(rec, None)
    f.write_bytes(b"two, longer")
    assert fingerprint(rec, None) != fp
    reused.clear()
    probe_all([rec], max_triangles=1, timeout_s=10, workers=1, cache=None,
              journal=ProbeJournal(tmp_path / "journal.jsonl", {"max_triangles": 1}),
              on_done=lambda r, was: reused.append(was), probe_fn=_misbehaving_probe)
    assert reused == [False]


def test_a_torn_journal_line_is_ignored(tmp_path):
    path = tmp_path / "journal.jsonl"
    path.write_text('{"key": "abc", "record": {"id": "test:x", "kind": "hdri", "source": "t", "uri": "/x"}}\n{"key": "de')
    journal = ProbeJournal(path, {})
    assert list(journal.done) == ["abc"]


def test_ctrl_c_stops_the_build_without_waiting_for_pending_probes(tmp_path):
    import subprocess
    import sys

    code = (
        "import sys; sys.path.insert(0, 'tests'); from test_probe_pool import _misbehaving_probe, _rec; "
        "from dr.assets_manifest.probe_pool import probe_all; "
        f"probe_all([_rec(f'{{i}}-hang', {str(tmp_path)!r}) for i in range(6)], max_triangles=1, timeout_s=60, "
        "workers=1, cache=None, probe_fn=_misbehaving_probe)"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            cwd=os.path.dirname(os.path.dirname(__file__)))
    deadline = time.monotonic() + 60
    while not list(tmp_path.glob("started-*")):  # the first probe is hanging in its worker
        assert time.monotonic() < deadline and proc.poll() is None
        time.sleep(0.05)
    start = time.monotonic()
    proc.send_signal(signal.SIGINT)
    proc.wait(timeout=30)
    assert time.monotonic() - start < 10  # not 6 x 60 s of pending probes
    assert proc.returncode != 0 and "KeyboardInterrupt" in proc.stderr.read()
