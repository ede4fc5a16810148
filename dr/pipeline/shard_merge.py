"""Turn finished clips into a shard: the one-sample tars of shard s's clips, concatenated in clip
order into ``shards/shard-<s>.tar`` (so a shard's bytes depend only on its clips)."""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import socket

from dr.pipeline.run_store import RunStore
from dr.shards.stream import ShardFormatError, iter_raw_samples
from dr.shards.writer import ShardWriter, shard_name


class ClipDataError(Exception):
    """A clip's published tar is missing or does not match its done marker."""

    def __init__(self, key: str, message: str):
        super().__init__(key, message)  # both in args: Ray pickles the exception back to the driver
        self.key = key

    def __str__(self) -> str:
        return self.args[1]


def clip_rel(key: str) -> str:
    return f"clips/{key}.tar"


def merge_shard(run_url: str, number: int, keys: list[str], sha256: dict[str, str], cache_dir: str | None) -> dict:
    """Write shard ``number`` from the clips ``keys`` (checked against their markers' sha256);
    returns its index entry. Raises ClipDataError naming a clip whose data is bad."""
    store = RunStore(run_url)
    staging = store.scratch(cache_dir, f"merge-{socket.gethostname()}-{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        writer = ShardWriter(staging, number, index=False)
        try:
            for key in keys:
                try:
                    data = store.read_bytes(clip_rel(key))
                except FileNotFoundError:
                    raise ClipDataError(key, f"clip {key} has a done marker but no {clip_rel(key)}") from None
                if hashlib.sha256(data).hexdigest() != sha256.get(key):
                    raise ClipDataError(key, f"{clip_rel(key)} does not match the sha256 in its done marker")
                try:
                    samples = list(iter_raw_samples(io.BytesIO(data)))
                except ShardFormatError as e:
                    raise ClipDataError(key, f"{clip_rel(key)} is not a well-formed sample tar: {e}") from None
                if [k for k, _ in samples] != [key]:
                    raise ClipDataError(key, f"{clip_rel(key)} holds samples {[k for k, _ in samples][:3]}, not {key}")
                writer.add(key, samples[0][1])
            entry = writer.close()
        except BaseException:
            writer.discard()
            raise
        store.put_file(staging / shard_name(number), f"shards/{shard_name(number)}", move=True)
        return entry
    finally:
        shutil.rmtree(staging, ignore_errors=True)
