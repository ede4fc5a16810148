"""Executors: where a run's tasks execute. The driver is scheduling policy only (DESIGN section 5);
it defines its task kinds once, then submits, waits for and cancels tasks through one of these.

- ``RayExecutor``: each kind a Ray remote function with its resource request (the default: a
  local Ray, or a cluster).
- ``InProcessExecutor``: tasks run in the driver's process, one at a time, when the driver waits
  for them (tests, benchmarks, and a machine where Ray cannot start). A task's own subprocesses
  (the Blender worker) are the same as under Ray.

Outcomes, the same for both: ``result(handle)`` returns what the task returned, raises TaskFailed
when the task raised (``cause``: its exception, a deterministic error the driver sorts out), or
TaskLost when the task never finished for a reason outside it (worker or node death, cancellation,
a lost object): a system failure the driver retries.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any, Callable, Protocol, Sequence


class TaskFailed(Exception):
    """The task raised ``cause``."""

    def __init__(self, cause: BaseException):
        super().__init__(f"{type(cause).__name__}: {cause}")
        self.cause = cause


class TaskLost(Exception):
    """The task did not finish for a reason outside its code (``reason``: one line)."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class TaskKind:
    """What every task of a kind runs and asks for. ``cpus``/``gpus``: its resource request;
    ``retries``: how often the executor itself re-runs it after one of ``retry_on`` (idempotent
    tasks only)."""

    fn: Callable
    cpus: float = 1.0
    gpus: float = 0.0
    retries: int = 0
    retry_on: tuple[type[BaseException], ...] = ()


class Executor(Protocol):
    def define(self, kind: str, task: TaskKind) -> None: ...

    def submit(self, kind: str, *args: Any) -> Any: ...

    def wait(self, handles: Sequence[Any], timeout: float) -> list[Any]: ...

    def result(self, handle: Any) -> Any: ...

    def cancel(self, handle: Any) -> None: ...


def _line(e: BaseException) -> str:
    return f"{type(e).__name__}: {' '.join(str(e).split())[:300]}"


class RayExecutor:
    """Tasks as Ray remote functions (Ray must be initialised: dr.pipeline.ray_cluster.start)."""

    def __init__(self) -> None:
        self._remote: dict[str, Any] = {}

    def define(self, kind: str, task: TaskKind) -> None:
        import ray

        opts = {"num_cpus": task.cpus, "num_gpus": task.gpus, "max_retries": task.retries, "name": f"dr-{kind}"}
        if task.retry_on:
            opts["retry_exceptions"] = list(task.retry_on)
        # max_calls 0: a worker process serves every task of the kind it is given (Ray would end one after each
        # task that asks for a GPU), so what a process loads once (Blender, the labelling models) serves them all
        self._remote[kind] = ray.remote(max_calls=0)(task.fn).options(**opts)

    def submit(self, kind: str, *args: Any) -> Any:
        return self._remote[kind].remote(*args)

    def wait(self, handles: Sequence[Any], timeout: float) -> list[Any]:
        import ray

        if not handles:
            return []
        ready, _ = ray.wait(list(handles), num_returns=1, timeout=timeout)
        return ready

    def result(self, handle: Any) -> Any:
        import ray

        try:
            return ray.get(handle)
        except ray.exceptions.RayTaskError as e:
            raise TaskFailed(getattr(e, "cause", None) or e) from None
        except ray.exceptions.RayError as e:  # worker or node death, cancellation, object loss, ...
            raise TaskLost(_line(e)) from None

    def cancel(self, handle: Any) -> None:
        import ray

        ray.cancel(handle, force=True)


@dataclass(eq=False)
class _Call:
    kind: str
    args: tuple
    order: int
    outcome: tuple[str, Any] | None = None  # ("ok", value) | ("failed", exception) | ("lost", reason)


@dataclass
class InProcessExecutor:
    """Tasks run here, in submission order, one per ``wait``. ``stand_ins``: functions that
    replace a kind's own (a benchmark of the driver alone gives tasks that do nothing)."""

    stand_ins: dict[str, Callable] = field(default_factory=dict)
    _kinds: dict[str, TaskKind] = field(default_factory=dict, init=False)
    _pending: dict[_Call, None] = field(default_factory=dict, init=False)  # insertion-ordered
    _count: Any = field(default_factory=itertools.count, init=False)
    ran: dict[str, int] = field(default_factory=dict, init=False)  # tasks run per kind

    def define(self, kind: str, task: TaskKind) -> None:
        self._kinds[kind] = task

    def submit(self, kind: str, *args: Any) -> _Call:
        if kind not in self._kinds:
            raise KeyError(f"task kind {kind!r} was not defined")
        call = _Call(kind, args, next(self._count))
        self._pending[call] = None
        return call

    def wait(self, handles: Sequence[_Call], timeout: float) -> list[_Call]:
        done = [h for h in handles if h.outcome is not None]
        if done:
            return done[:1]
        waiting = set(handles)
        for call in self._pending:
            if call in waiting:
                self._run(call)
                return [call]
        return []

    def _run(self, call: _Call) -> None:
        self._pending.pop(call, None)
        task = self._kinds[call.kind]
        fn = self.stand_ins.get(call.kind, task.fn)
        self.ran[call.kind] = self.ran.get(call.kind, 0) + 1
        for attempt in range(task.retries + 1):
            try:
                call.outcome = ("ok", fn(*call.args))
                return
            except task.retry_on if task.retry_on else () as e:  # noqa: B030 - a tuple of types
                if attempt == task.retries:
                    call.outcome = ("failed", e)
            except Exception as e:  # noqa: BLE001 - handed to the driver, as Ray does
                call.outcome = ("failed", e)
                return

    def result(self, handle: _Call) -> Any:
        if handle.outcome is None:
            self._run(handle)
        state, value = handle.outcome
        if state == "ok":
            return value
        if state == "lost":
            raise TaskLost(value)
        raise TaskFailed(value)

    def cancel(self, handle: _Call) -> None:
        if handle.outcome is None:
            self._pending.pop(handle, None)
            handle.outcome = ("lost", "TaskCancelledError: cancelled by the driver")
