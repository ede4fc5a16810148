"""Where the user's cache folder is: the only place besides run and output folders we write to."""

from __future__ import annotations

import os
from pathlib import Path

ENV_VAR = "DR_CACHE_DIR"


def cache_dir(explicit: str | os.PathLike[str] | None = None) -> Path:
    """Return the cache folder: ``explicit`` if given, else $DR_CACHE_DIR, else $XDG_CACHE_HOME/dr
    (~/.cache/dr when XDG_CACHE_HOME is unset). The folder is not created here."""
    if explicit:
        return Path(explicit).expanduser().absolute()
    if os.environ.get(ENV_VAR):
        return Path(os.environ[ENV_VAR]).expanduser().absolute()
    xdg = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(xdg).absolute() / "dr"
