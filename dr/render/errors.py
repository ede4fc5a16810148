"""What can go wrong with a clip render, split by whether trying again can help.

Deterministic errors (the same spec fails the same way) are recorded and not retried; system
failures (a worker that died, a clip that ran out of time, an I/O error) may succeed on a retry.
"""

from __future__ import annotations


class RenderError(Exception):
    """A clip failed. ``deterministic``: retrying the same spec will fail again."""

    deterministic = True
    kind = "error"

    def __init__(self, message: str, asset_id: str | None = None, log: str | None = None):
        super().__init__(message)
        self.asset_id = asset_id
        self.log = log


class DeviceUnavailable(RenderError):
    """The requested Cycles device does not exist on this machine."""

    kind = "device"


class AssetError(RenderError):
    """An asset of the spec cannot be loaded; ``asset_id`` names it (for quarantine)."""

    kind = "asset"


class WorkerCrashed(RenderError):
    """The render worker process died while rendering the clip."""

    deterministic = False
    kind = "crash"


class ClipTimeout(RenderError):
    """The clip ran past its time limit; the worker was killed."""

    deterministic = False
    kind = "timeout"


class SystemFailure(RenderError):
    """An operating-system error (I/O, memory) in the worker."""

    deterministic = False
    kind = "system"


ERRORS = {c.kind: c for c in (RenderError, DeviceUnavailable, AssetError, WorkerCrashed, ClipTimeout, SystemFailure)}
