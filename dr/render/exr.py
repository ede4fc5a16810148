"""Reading the multilayer, multi-part EXR that Blender 5 writes per frame."""

from __future__ import annotations

from pathlib import Path

import numpy as np

# render-layer name -> the channels that make it, as Blender 5 names them
LAYERS = {
    "combined": ("Combined",),
    "normal": ("Normal.X", "Normal.Y", "Normal.Z"),
    "basecolor": ("basecolor",),
    "roughness": ("roughness.X",),
    "metallic": ("metallic.X",),
    "depth": ("depth.X",),
    "coverage": ("coverage.X",),
}


def read_layers(path: Path, view_layer: str = "ViewLayer", wanted=tuple(LAYERS)) -> dict[str, np.ndarray]:
    """{layer: (H, W[, C]) float32} for the layers in ``wanted``, top row first."""
    import OpenEXR

    channels: dict[str, np.ndarray] = {}
    with OpenEXR.File(str(path), separate_channels=False) as f:
        for part in f.parts:
            for name, ch in part.channels.items():
                channels[name] = ch.pixels
    out = {}
    for layer in wanted:
        names = [f"{view_layer}.{c}" for c in LAYERS[layer]]
        missing = [n for n in names if n not in channels]
        if missing:
            raise KeyError(f"{path.name}: channel {missing[0]} missing (has {', '.join(sorted(channels))})")
        arrs = [np.asarray(channels[n], dtype=np.float32) for n in names]
        out[layer] = arrs[0] if len(arrs) == 1 else np.stack(arrs, axis=-1)
    return out
