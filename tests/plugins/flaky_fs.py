"""A fault-injecting fsspec file system for the tests: ``flaky:///abs/path`` is the local file
/abs/path, except that the first open of each file (in any process) fails with EIO, as a flaky
NFS or S3 read does. State: one marker file per path in ``$DR_TEST_FLAKY_STATE``; with that unset
nothing fails. Registered in every process through the ``fsspec.specs`` entry point of the
dist-info folder the test writes (fsspec's own plugin mechanism)."""

from __future__ import annotations

import errno
import hashlib
import os

from fsspec.implementations.local import LocalFileSystem


class FlakyFileSystem(LocalFileSystem):
    protocol = ("flaky",)

    @classmethod
    def _strip_protocol(cls, path):
        path = str(path)
        if path.startswith("flaky://"):
            path = path[len("flaky://"):]
        return super()._strip_protocol(path)

    def _open(self, path, mode="rb", **kwargs):
        state = os.environ.get("DR_TEST_FLAKY_STATE")
        if state and "r" in mode:
            marker = os.path.join(state, hashlib.sha256(str(path).encode()).hexdigest()[:16])
            try:
                fd = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            except FileExistsError:
                pass
            else:
                os.write(fd, f"{path}\n".encode())
                os.close(fd)
                raise OSError(errno.EIO, "Input/output error (injected)", str(path))
        return super()._open(path, mode=mode, **kwargs)
