"""Ray as the run's engine: a local Ray started for the command (temp folder and logs in the run
folder), or a cluster joined with an address; and what the render tasks may ask of it."""

from __future__ import annotations

import hashlib
import os
import secrets
import time
from dataclasses import dataclass
from pathlib import Path

from dr.errors import UserError

# AF_UNIX socket paths are limited to 107 bytes; Ray puts its sockets at
# <temp>/session_<date>_<time>_<us>_<pid>/sockets/plasma_store (61 bytes past <temp>, 64 with a 7-digit pid)
_SOCKET_TAIL = 64
_UNIX_PATH_MAX = 107


@dataclass(frozen=True)
class Resources:
    """What the render tasks get: how many run at once, with how many threads, on a GPU or not."""

    workers: int
    threads: int
    gpu: bool
    cluster_cpus: float
    cluster_gpus: float
    local: bool
    in_process: bool = False  # the tasks run in the driver's process (dr.pipeline.executor.InProcessExecutor)

    def describe(self, work: str = "render") -> str:
        on = "1 GPU" if self.gpu else "CPU"
        what = (f"{self.workers} {work} worker{'s' * (self.workers != 1)} ({on}, {self.threads} thread"
                f"{'s' * (self.threads != 1)} each)")
        if self.in_process:
            return f"{what} in the driver's process (no Ray)"
        where = "local Ray" if self.local else "Ray cluster"
        return f"{what} on a {where} with {self.cluster_cpus:g} CPUs, {self.cluster_gpus:g} GPUs"


def in_process_resources(device: str, dry_run: bool) -> Resources:
    """What tasks get when they run in the driver's process: one at a time, every CPU of this
    machine (this process's affinity), a GPU only where the device names one."""
    from dr.assets_manifest.build import available_cpus

    cpus = available_cpus()
    gpu = not dry_run and device in ("optix", "cuda")
    return Resources(1, 1 if dry_run else cpus, gpu, float(cpus), 1.0 if gpu else 0.0, True, in_process=True)


def ray_temp_dir(run_local: Path | None, cache: Path) -> Path:
    """Ray's temp folder: ``DR_RAY_TEMP_DIR`` if set; else ``RUN/.ray`` for a local run whose
    path leaves room for Ray's socket names (Unix sockets allow 107 bytes); else a short folder
    in the cache. When both paths are too long it is an error (one line naming DR_RAY_TEMP_DIR),
    never the system's temp folder: nothing is written outside the run and the cache (DESIGN
    section 6)."""
    if os.environ.get("DR_RAY_TEMP_DIR"):
        return Path(os.environ["DR_RAY_TEMP_DIR"]).absolute()
    if run_local is not None and len(str(run_local / ".ray")) + _SOCKET_TAIL <= _UNIX_PATH_MAX:
        return run_local / ".ray"
    tag = hashlib.sha256(str(run_local or cache).encode()).hexdigest()[:8]
    folder = cache / "ray" / tag
    if len(str(folder)) + _SOCKET_TAIL <= _UNIX_PATH_MAX:
        return folder
    raise UserError(f"the run folder and the cache folder ({cache}) are too long a path for Ray's sockets "
                    f"({_UNIX_PATH_MAX} bytes with Ray's own names); set DR_RAY_TEMP_DIR to a short folder of "
                    "yours, such as /tmp/dr-ray, or give a shorter --cache-dir")


def _host_port(address: str) -> tuple[str, int] | None:
    """(host, port) of a Ray address (host:port, ray://host[:port]); None for 'auto' and the like."""
    rest = address.removeprefix("ray://")
    default = 10001 if address.startswith("ray://") else None
    host, sep, port = rest.rpartition(":")
    if not sep:
        host, port = rest, ""
    host = host.strip("[]")
    if not host or host == "auto":
        return None
    if port.isdigit():
        return host, int(port)
    return (host, default) if default and not port else None


def check_reachable(address: str, timeout_s: float) -> None:
    """UserError (one line) unless a TCP connection to ``address`` opens within ``timeout_s``
    seconds; ray.init itself retries an unreachable address for minutes, printing as it goes."""
    import socket

    hp = _host_port(address)
    if hp is None:
        return
    deadline = time.monotonic() + timeout_s
    why = "no answer"
    while True:
        left = deadline - time.monotonic()
        try:
            socket.create_connection(hp, timeout=max(0.1, min(left, 5.0))).close()
            return
        except OSError as e:
            why = e.strerror or str(e) or type(e).__name__
        if time.monotonic() + 1.0 >= deadline:
            break
        time.sleep(1.0)
    raise UserError(f"cannot reach the Ray cluster at {address!r}: {why} (tried for {timeout_s:g} s, "
                    f"run.connect_timeout_s); check the address, or leave --ray-address out to run on this machine")


def start(address: str | None, temp_dir: Path, num_cpus: int | None = None, connect_timeout_s: float = 30.0) -> bool:
    """Start a local Ray (address None) or join ``address``. Returns True when local."""
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    if not address and "RAY_AUTH_MODE" not in os.environ:
        # a token of our own, set before Ray reads its config: Ray would otherwise create ~/.ray/auth_token
        os.environ["RAY_AUTH_MODE"] = "token"
        os.environ.setdefault("RAY_AUTH_TOKEN", secrets.token_hex(32))
    import ray

    if ray.is_initialized():
        return address is None
    common = dict(include_dashboard=False, log_to_driver=False, logging_level="ERROR", configure_logging=True,
                  namespace="dr")
    if address:
        check_reachable(address, connect_timeout_s)
        try:
            ray.init(address=address, **common)
        except (ConnectionError, RuntimeError, ValueError) as e:
            raise UserError(f"cannot join the Ray cluster at {address!r}: {' '.join(str(e).split())[:200]}") from None
        return False
    temp_dir.mkdir(parents=True, exist_ok=True)
    ray.init(num_cpus=num_cpus, _temp_dir=str(temp_dir), **common)
    return True


def stop() -> None:
    import ray

    if ray.is_initialized():
        ray.shutdown()


def _cluster() -> tuple[float, float, float, int, int]:
    """(CPUs, GPUs, CPUs of the largest node, nodes, CPUs per GPU on the leanest GPU node)."""
    import ray

    res = ray.cluster_resources()
    nodes = [n["Resources"] for n in ray.nodes() if n.get("Alive")]
    max_node_cpus = max((r.get("CPU", 0.0) for r in nodes), default=0.0)
    per_gpu = [int(r.get("CPU", 0.0) // r["GPU"]) for r in nodes if r.get("GPU", 0.0) >= 1]
    return res.get("CPU", 0.0), res.get("GPU", 0.0), max_node_cpus, len(nodes), max(1, min(per_gpu, default=1))


def plan_resources(device: str, local: bool, workers: int | None, dry_run: bool, gpu_wait_s: float) -> Resources:
    """Decide what each render task asks for. A device that needs a GPU on a cluster without one
    is an error (after waiting ``gpu_wait_s`` for one to join, on a cluster), never a task that
    pends forever."""
    cpus, gpus, max_node_cpus, n_nodes, cpus_per_gpu = _cluster()
    if dry_run:
        w = workers or max(1, int(cpus))
        return Resources(w, 1, False, cpus, gpus, local)
    if device in ("optix", "cuda") and gpus < 1:
        if local:
            raise UserError(f"--device {device} needs a GPU and Ray sees none on this machine; "
                            f"use --device auto (or cpu), or run on a GPU machine")
        deadline = time.monotonic() + gpu_wait_s
        while gpus < 1 and time.monotonic() < deadline:
            time.sleep(5.0)
            cpus, gpus, max_node_cpus, n_nodes, cpus_per_gpu = _cluster()
        if gpus < 1:
            raise UserError(f"--device {device} needs a GPU and no node of the Ray cluster has one "
                            f"(waited {gpu_wait_s:g} s, run.gpu_wait_s); add a GPU worker group or use --device cpu")
    gpu = device in ("optix", "cuda") or (device == "auto" and gpus >= 1)
    if gpu:
        # a task's CPU request must fit beside one GPU on every GPU node, or it could never be placed
        w = workers or int(gpus)
        threads = cpus_per_gpu
    else:
        w = workers or n_nodes
        threads = max(1, int(min(max_node_cpus, cpus // w)))
    return Resources(w, threads, gpu, cpus, gpus, local)
