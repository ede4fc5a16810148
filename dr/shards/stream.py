"""The one reader of the tar format (DESIGN section 3): a shard, or a one-sample clip tar, as a
stream of samples. The reader, validate, the shard merge and export all go through it, so what
counts as a well-formed shard is decided here once.

Strict by default: a member that is not a regular file, a name that is not ``<key>.<suffix>``
(key ``[a-z0-9_]+``), a member that appears twice in a sample, a sample whose members are not
contiguous, and a tar that ends without its end-of-archive blocks (cut off: a tar cut between two
members otherwise reads as a shorter valid one) raise ShardFormatError. Given a ``problems``
list instead, each is appended there as a StreamProblem and reading goes on where it can
(validate reports them all).
"""

from __future__ import annotations

import tarfile
from dataclasses import dataclass
from typing import BinaryIO, Callable, Iterator

from dr.shards.schema import split_member


class ShardFormatError(ValueError):
    """The tar is not a well-formed shard."""


@dataclass(frozen=True)
class StreamProblem:
    """One thing wrong with a tar: ``key`` the sample it is in (None when unknown), ``message``
    one line, ``fatal`` when reading stopped there (the rest of the tar is unknown)."""

    key: str | None
    message: str
    fatal: bool = False


class _TarInfo(tarfile.TarInfo):
    """Remembers why a stream-mode tar stopped: tarfile ends silently on a broken or missing
    header after the first one."""

    @classmethod
    def fromtarfile(cls, tf):
        try:
            return super().fromtarfile(tf)
        except tarfile.HeaderError as e:
            tf.dr_stop = e
            raise


def iter_raw_samples(fileobj: BinaryIO, want: Callable[[str, str], bool] | None = None,
                     problems: list[StreamProblem] | None = None) -> Iterator[tuple[str, dict[str, bytes]]]:
    """(key, {suffix: bytes}) per sample of the tar read from ``fileobj``, in order, in one
    sequential pass. ``want(key, suffix)``: members for which it is false are passed over
    unread (a sample all of whose members are passed over is still yielded, empty). See the
    module docstring for ``problems``."""

    def problem(msg: str, key: str | None = None, fatal: bool = False) -> None:
        if problems is None:
            raise ShardFormatError(msg)
        problems.append(StreamProblem(key, msg, fatal))

    done: set[str] = set()
    key, members, suffixes = None, {}, set()
    count = 0
    try:
        with tarfile.open(fileobj=fileobj, mode="r|", tarinfo=_TarInfo) as tar:
            for info in tar:
                if not info.isfile():
                    problem(f"tar entry {info.name!r} is not a regular file")
                    continue
                try:
                    k, suffix = split_member(info.name)
                except ValueError:
                    problem(f"tar member {info.name!r} is not <key>.<suffix> with a key of [a-z0-9_]+")
                    continue
                if k != key:
                    if key is not None:
                        done.add(key)
                        count += 1
                        yield key, members
                    if k in done:
                        problem(f"sample {k}: its members are not contiguous (it appears again after other samples)", k)
                    key, members, suffixes = k, {}, set()
                if suffix in suffixes:
                    problem(f"member {info.name} appears twice", k)
                suffixes.add(suffix)
                if want is None or want(k, suffix):
                    members[suffix] = tar.extractfile(info).read()
            stop = getattr(tar, "dr_stop", None)
            end_ok = isinstance(stop, tarfile.EOFHeaderError)
            if end_ok:  # after the first zero block: at least one more, and zero padding only
                nonzero = False
                while chunk := tar.fileobj.read(1 << 20):
                    nonzero = nonzero or bool(chunk.strip(b"\0"))
                end_ok = not nonzero and tar.fileobj.tell() >= tar.offset + 2 * tarfile.BLOCKSIZE
            if not end_ok:
                why = f" ({' '.join(str(stop).split())})" if stop and str(stop) else ""
                problem(f"tar ends without its end-of-archive blocks at byte {tar.offset}{why}: truncated or "
                        f"corrupt after {count + (key is not None)} samples", fatal=True)
    except tarfile.TarError as e:
        problem(f"cannot be read after {count} samples: {type(e).__name__}: {' '.join(str(e).split())[:200]}",
                fatal=True)
        return
    if key is not None:
        yield key, members


def tar_keys(fileobj: BinaryIO) -> list[str]:
    """The sample keys of a tar, in order, without reading any member's data (strict)."""
    return [k for k, _ in iter_raw_samples(fileobj, want=lambda k, s: False)]
