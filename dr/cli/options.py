"""Options shared by several commands, and the config plumbing behind them."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Optional, TypeVar

import typer

from dr.config import PRESETS, CommandConfig, config_yaml, resolve_config
from dr.errors import UserError
from dr.files import nearest_existing

PresetOpt = Annotated[
    Optional[str],
    typer.Option("--preset", help=f"named settings: {', '.join(PRESETS)} (default: paper, 512x512, 24 frames)",
                 show_default=False),
]
ConfigOpt = Annotated[
    Optional[Path],
    typer.Option("--config", help="YAML file of config sections (see --print-config), applied over the defaults "
                                  "and preset", show_default=False),
]
SetOpt = Annotated[
    Optional[list[str]],
    typer.Option("--set", help="override one value, dotted.key=value (YAML value); repeatable, applied last",
                 show_default=False),
]
PrintConfigOpt = Annotated[
    bool,
    typer.Option("--print-config", help="print the effective config as YAML, every key with its meaning and "
                                        "units, and its hash; then exit"),
]
CacheOpt = Annotated[
    Optional[Path],
    typer.Option("--cache-dir", help="cache folder (built-in assets, probe journal); default $DR_CACHE_DIR or ~/.cache/dr",
                 show_default=False),
]

C = TypeVar("C", bound=CommandConfig)


def effective_config(model: type[C], preset: str | None, config: Path | None, sets: list[str] | None,
                     print_config: bool) -> C:
    """Resolve the command's config; with --print-config print it and exit 0."""
    cfg = resolve_config(model, preset, config, sets or [])
    if print_config:
        typer.echo(config_yaml(cfg), nl=False)
        raise typer.Exit(0)
    return cfg


def with_device(sets: list[str] | None, device: str | None) -> list[str]:
    """The --set overrides with --device folded in as render.device (UserError on an unknown one)."""
    sets = list(sets or [])
    if device is not None:
        if device not in ("auto", "optix", "cuda", "cpu"):
            raise UserError(f"--device {device!r}: choose auto, optix, cuda or cpu")
        sets.append(f"render.device={device}")
    return sets


def writable_file(out: Path, example: str) -> Path:
    """Absolute ``out`` if a file can be written there (missing parent folders will be made);
    UserError otherwise. Nothing is created here."""
    out = out.expanduser().absolute()
    if out.is_dir():
        raise UserError(f"--out {str(out)!r} is a folder; give a file name such as {out / example}")
    _check_nearest_folder(out, out.parent)
    return out


def writable_folder(out: Path) -> Path:
    """Absolute ``out`` if it is a folder, or one can be made there, that can be written to;
    UserError otherwise. Nothing is created here."""
    out = out.expanduser().absolute()
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {str(out)!r} is a file; give a folder")
    _check_nearest_folder(out, out)
    return out


def _check_nearest_folder(out: Path, start: Path) -> None:
    """The nearest existing ancestor of ``start`` (itself included) must be a writable folder."""
    parent = nearest_existing(start)
    if not parent.is_dir():
        raise UserError(f"cannot write {str(out)!r}: {str(parent)!r} is a file, not a folder")
    if not os.access(parent, os.W_OK):
        raise UserError(f"cannot write {str(out)!r}: {str(parent)!r} is not writable")
