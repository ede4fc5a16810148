"""Cycles device selection (bpy; render worker only).

Cycles silently falls back to the CPU when the chosen GPU backend has no device, so the choice is
checked here: ``auto`` takes OptiX, then CUDA, then the CPU and says which; an explicit ``optix`` or
``cuda`` that is not there raises DeviceUnavailable.
"""

from __future__ import annotations

from dataclasses import dataclass

import bpy

from dr.render.errors import DeviceUnavailable

GPU_BACKENDS = ("OPTIX", "CUDA")


@dataclass(frozen=True)
class Device:
    kind: str  # "optix" | "cuda" | "cpu"
    names: tuple[str, ...]

    def describe(self) -> str:
        return f"{self.kind.upper() if self.kind != 'cpu' else 'CPU'} ({', '.join(self.names)})"


def _gpus(backend: str) -> list:
    prefs = bpy.context.preferences.addons["cycles"].preferences
    try:
        prefs.compute_device_type = backend
    except TypeError:  # this Blender build has no such backend
        return []
    prefs.refresh_devices()
    return [d for d in prefs.devices if d.type == backend]


def _cpu_name() -> str:
    prefs = bpy.context.preferences.addons["cycles"].preferences
    names = [d.name for d in prefs.devices if d.type == "CPU"]
    return names[0] if names else "CPU"


def find_device(requested: str) -> Device:
    """The device for ``requested`` (auto|optix|cuda|cpu), or DeviceUnavailable."""
    if requested == "cpu":
        return Device("cpu", (_cpu_name(),))
    order = GPU_BACKENDS if requested == "auto" else (requested.upper(),)
    for backend in order:
        gpus = _gpus(backend)
        if gpus:
            return Device(backend.lower(), tuple(d.name for d in gpus))
    if requested == "auto":
        return Device("cpu", (_cpu_name(),))
    raise DeviceUnavailable(f"--device {requested}: Cycles finds no {requested.upper()} device on this machine "
                            f"(only the CPU); use --device auto or --device cpu")


def apply_device(scene, device: Device, threads: int) -> None:
    """Point the scene (and Cycles' preferences, which reset with the file) at ``device``."""
    prefs = bpy.context.preferences.addons["cycles"].preferences
    if device.kind == "cpu":
        prefs.compute_device_type = "NONE"
        scene.cycles.device = "CPU"
    else:
        prefs.compute_device_type = device.kind.upper()
        prefs.refresh_devices()
        for d in prefs.devices:
            d.use = d.type == device.kind.upper()
        scene.cycles.device = "GPU"
    # Ray sets OMP_NUM_THREADS=1, which Cycles ignores: the thread count is explicit
    scene.render.threads_mode = "FIXED"
    scene.render.threads = max(1, threads)
