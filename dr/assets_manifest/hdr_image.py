"""Reading high-dynamic-range images (OpenEXR and Radiance .hdr) into linear float32 RGB."""

from __future__ import annotations

from pathlib import Path

import numpy as np

HDR_SUFFIXES = (".exr", ".hdr")


class ImageDecodeError(ValueError):
    """The file is not a decodable HDR image (the message says why, on one line)."""


def read_hdr(path: str | Path) -> np.ndarray:
    """Return the image at ``path`` as a (H, W, 3) float32 array of linear RGB, top row first.

    EXR: the first part's R, G, B channels (a single Y channel is repeated; alpha is dropped).
    HDR: Radiance RGBE, decoded by OpenCV. Raises ImageDecodeError on anything else.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".exr":
        return _read_exr(path)
    if suffix == ".hdr":
        return _read_rgbe(path)
    raise ImageDecodeError(f"not an HDR image suffix: {path.suffix!r} (expected .exr or .hdr)")


def _read_exr(path: Path) -> np.ndarray:
    import OpenEXR

    try:
        with OpenEXR.File(str(path)) as f:
            channels = f.channels()
            if "RGB" in channels or "RGBA" in channels:
                px = np.asarray(channels["RGB" if "RGB" in channels else "RGBA"].pixels)[..., :3]
            elif all(c in channels for c in "RGB"):
                px = np.stack([np.asarray(channels[c].pixels) for c in "RGB"], axis=-1)
            elif "Y" in channels:
                px = np.repeat(np.asarray(channels["Y"].pixels)[..., None], 3, axis=-1)
            else:
                raise ImageDecodeError(f"EXR has no RGB or Y channels (has {', '.join(sorted(channels)) or 'none'})")
    except ImageDecodeError:
        raise
    except Exception as e:  # OpenEXR raises bare ValueError/RuntimeError/OSError on corrupt files
        msg = " ".join(str(e).split()) or type(e).__name__
        raise ImageDecodeError(f"cannot decode EXR: {msg[:200]}") from None
    if px.ndim != 3:
        raise ImageDecodeError(f"EXR pixels have shape {px.shape}, expected (H, W, channels)")
    return np.ascontiguousarray(px, dtype=np.float32)


def _read_rgbe(path: Path) -> np.ndarray:
    import cv2

    cv2.setLogLevel(0)  # its own decode errors would go to stderr; we report them ourselves
    with open(path, "rb") as f:
        magic = f.read(10)
    if not magic.startswith((b"#?RADIANCE", b"#?RGBE")):
        raise ImageDecodeError("not a Radiance HDR file (no #?RADIANCE header)")
    img = cv2.imread(str(path), cv2.IMREAD_UNCHANGED | cv2.IMREAD_ANYDEPTH | cv2.IMREAD_COLOR)
    if img is None:
        raise ImageDecodeError("cannot decode Radiance HDR: corrupt or truncated pixel data")
    return np.ascontiguousarray(img[..., ::-1], dtype=np.float32)
