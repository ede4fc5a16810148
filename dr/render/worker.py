"""The render worker: a child process that imports Blender once and renders many clips.

The parent side (``RenderWorker``) sends one job at a time over a pipe and waits with the clip's
hard timeout. The worker is recycled after ``max_clips`` clips, when its resident memory passes
``max_rss_mb``, and after any crash or timeout (the next clip starts a fresh one). Blender's own
output (its C code writes to fds 1 and 2) goes to the clip's log file. Blender's user folders,
its cache and its temp files are pointed into the cache and staging folders, never the home one.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from dr.render.errors import ERRORS, ClipTimeout, RenderError, SystemFailure, WorkerCrashed


@dataclass(frozen=True)
class WorkerLimits:
    max_clips: int = 100
    max_rss_mb: float = 16_000.0
    timeout_s: float = 3600.0


def blender_env(cache_dir: Path, tmp_dir: Path) -> dict[str, str]:
    """Environment that keeps bpy out of the home folder (set it before bpy is imported); the
    folders it names are created."""
    env = {
        "BLENDER_USER_RESOURCES": str(cache_dir / "blender" / "user"),
        "XDG_CACHE_HOME": str(cache_dir / "blender" / "xdg-cache"),
        # CUDA's and OptiX's kernel caches default to ~/.nv
        "CUDA_CACHE_PATH": str(cache_dir / "nv" / "ComputeCache"),
        "OPTIX_CACHE_PATH": str(cache_dir / "nv" / "OptixCache"),
        "TMPDIR": str(tmp_dir),
        "TEMP": str(tmp_dir),
        "TMP": str(tmp_dir),
    }
    for p in env.values():
        Path(p).mkdir(parents=True, exist_ok=True)
    return env


def _rss_mb() -> float:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except OSError:
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _exit_with_parent(parent: int) -> None:
    """End this process once its parent is gone (a killed Ray worker or driver must not leave a
    Blender rendering on): the socket only tells between clips, this also tells mid-clip."""
    import threading

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(1.0)
        os._exit(3)

    threading.Thread(target=watch, daemon=True, name="parent-watch").start()


def _child_main(conn, parent: int) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides when to stop
    _exit_with_parent(parent)
    import bpy  # noqa: F401 - loaded once per worker

    from dr.render.clip import render_clip

    saved = (os.dup(1), os.dup(2))
    while True:
        try:
            job = conn.recv()
        except EOFError:
            return
        if job is None:
            return
        sys.stdout.flush()
        sys.stderr.flush()
        log = open(job["log"], "ab", buffering=0)
        os.dup2(log.fileno(), 1)
        os.dup2(log.fileno(), 2)
        conn.send(("started", os.getpid()))
        try:
            result = render_clip(job, conn.send)
            reply = ("done", result)
        except RenderError as e:
            reply = ("error", e.kind, str(e), e.asset_id)
        except (OSError, MemoryError) as e:
            traceback.print_exc()
            reply = ("error", SystemFailure.kind, f"{type(e).__name__}: {e}", None)
        except Exception as e:  # noqa: BLE001 - reported as a deterministic error with its log
            traceback.print_exc()
            reply = ("error", RenderError.kind, f"{type(e).__name__}: {' '.join(str(e).split())[:400]}", None)
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        log.close()
        conn.send((*reply, _rss_mb()))


class RenderWorker:
    """Parent-side handle of a render worker process (started on first use)."""

    def __init__(self, cache_dir: Path, tmp_dir: Path, threads: int, limits: WorkerLimits = WorkerLimits()):
        self.cache_dir = Path(cache_dir)
        self.tmp_dir = Path(tmp_dir)
        self.threads = threads
        self.limits = limits
        self._proc = None
        self._conn = None
        self.clips_served = 0
        self.started = 0  # worker processes started so far

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def _alive(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def _start(self) -> None:
        from multiprocessing.connection import Connection

        env = blender_env(self.cache_dir, self.tmp_dir)
        parent, child = socket.socketpair()
        # a fresh interpreter (not fork: bpy and threads; not multiprocessing's spawn, which
        # re-imports the caller's __main__), with Blender's folders set before bpy loads
        proc = subprocess.Popen([sys.executable, "-m", "dr.render.worker", str(child.fileno()), str(os.getpid())],
                                pass_fds=[child.fileno()], env={**os.environ, **env}, stdin=subprocess.DEVNULL)
        child.close()
        self._proc, self._conn = proc, Connection(parent.detach())
        self.clips_served = 0
        self.started += 1

    def close(self) -> None:
        """Stop the worker (politely, then by force)."""
        if self._proc is None:
            return
        try:
            self._conn.send(None)
        except (OSError, ValueError):
            pass
        try:
            self._proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()
        self._conn.close()
        self._proc = self._conn = None

    def _kill(self) -> None:
        if self._alive():
            self._proc.kill()
        if self._proc is not None:
            self._proc.wait()
            self._conn.close()
        self._proc = self._conn = None

    def render(self, job: dict, on_event: Callable[[tuple], None] | None = None) -> dict:
        """Render one clip. ``job``: spec (JSON), settings (dict), staging, log, run_id and
        optionally save_blend, with_aovs. Returns the worker's result; raises RenderError."""
        job = {**job, "threads": self.threads, "cache_dir": str(self.cache_dir)}
        key = job["key"]
        Path(job["log"]).parent.mkdir(parents=True, exist_ok=True)
        if not self._alive():
            self._kill()
            self._start()
        deadline = time.monotonic() + self.limits.timeout_s
        try:
            self._conn.send(job)
            while True:
                left = deadline - time.monotonic()
                if left <= 0:
                    self._kill()
                    raise ClipTimeout(f"clip {key} ran past its {self.limits.timeout_s:g} s limit; worker killed",
                                      log=job["log"])
                try:
                    ready = self._conn.poll(min(left, 5.0))
                    msg = self._conn.recv() if ready else None
                except (EOFError, OSError):
                    msg = ("eof",)
                if msg is None:
                    if not self._alive():
                        msg = ("eof",)
                    else:
                        continue
                if msg[0] == "eof":
                    try:
                        code = self._proc.wait(timeout=10)
                    except subprocess.TimeoutExpired:
                        code = None
                    self._kill()
                    how = f"signal {-code}" if code is not None and code < 0 else f"exit status {code}"
                    raise WorkerCrashed(f"render worker died while rendering clip {key} ({how}); see {job['log']}",
                                        log=job["log"])
                if on_event is not None:
                    on_event(msg)
                if msg[0] in ("done", "error"):
                    # a clip ended either way: the worker has served one more, and says its memory
                    self.clips_served += 1
                    if self.clips_served >= self.limits.max_clips or msg[-1] > self.limits.max_rss_mb:
                        self.close()
                if msg[0] == "done":
                    return msg[1]
                if msg[0] == "error":
                    _, kind, message, asset_id, _rss = msg
                    raise ERRORS.get(kind, RenderError)(message, asset_id=asset_id, log=job["log"])
        except BaseException as e:
            staging = Path(job["staging"])
            for p in (staging / f".{key}.partial", staging / key):
                shutil.rmtree(p, ignore_errors=True)
            if self._proc is not None and not isinstance(e, RenderError):
                self._kill()  # interrupted (Ctrl-C): the worker may be mid-clip
            raise

    def __enter__(self) -> "RenderWorker":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


if __name__ == "__main__":
    from multiprocessing.connection import Connection

    _child_main(Connection(int(sys.argv[1])), int(sys.argv[2]))
