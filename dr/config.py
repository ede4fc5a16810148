"""Typed command configs: defaults < preset < YAML file < ``--set`` overrides, and their hash.

Every command has one pydantic model (a subclass of :class:`CommandConfig`). Its sections
(``scene``, ``render``, ...) are themselves models. A preset is a table of section overrides;
a command takes from it the sections it has. The effective config is frozen, printable as
YAML, and identified by :func:`config_hash`.
"""

from __future__ import annotations

import copy
import hashlib
import json
from pathlib import Path
from typing import Any, Iterable, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from dr.errors import UserError

DEFAULT_PRESET = "paper"

# Only what differs from the model defaults (which are the paper's settings). Render settings
# are listed here so that one preset name means the same thing to every command.
PRESETS: dict[str, dict[str, dict[str, Any]]] = {
    "paper": {
        "scene": {"width": 512, "height": 512, "frames": 24},
        "render": {"samples": 128},
        "data": {"height": 512, "width": 512, "frames": 24},
        "clips": {"height": 512, "width": 512, "frames": 24},
    },
    # the training sections of cpu-demo and tiny are sized for the tiny base (dr-train init-tiny) on CPUs
    "cpu-demo": {
        "scene": {"width": 128, "height": 128, "frames": 8},
        "render": {"samples": 16, "max_bounces": 4},
        # 32 px views (16 px latents): a step of the inverse renderer takes about 1.6 s on 2 cores, the
        # forward one about 0.5 s; the EMA and the cosine decay gave the forward renderer +0.5 dB held out
        "data": {"height": 32, "width": 32, "frames": 4, "env_height": 32, "env_width": 32, "batch_size": 4,
                 "workers": 1, "shuffle_buffer": 16, "holdout_fraction": 0.125},
        "model": {"env_stem_channels": [16, 32, 32, 32]},
        "optim": {"lr": 1.0e-3, "warmup_steps": 20, "schedule": "cosine"},
        "train": {"checkpoint_every": 50, "max_steps": 500, "ema_decay": 0.995},
        # real clips at the training size; DiffusionLight at the tiny painter's size (dr-train init-tiny)
        "clips": {"height": 32, "width": 32, "frames": 4, "segments_per_video": 4},
        "light": {"size": 256, "ball": 64, "dilate": 5, "steps": 10, "balls": 4, "env_height": 32},
    },
    "tiny": {
        "scene": {"width": 64, "height": 64, "frames": 4},
        "render": {"samples": 4, "max_bounces": 2},
        "data": {"height": 32, "width": 32, "frames": 4, "env_height": 16, "env_width": 16, "batch_size": 1,
                 "workers": 0, "shuffle_buffer": 4, "holdout_fraction": 0.125},
        "model": {"env_stem_channels": [16, 32, 32, 32]},
        "optim": {"lr": 3.0e-4, "warmup_steps": 2},
        "train": {"checkpoint_every": 5, "max_steps": 10, "log_every": 1},
        "clips": {"height": 32, "width": 32, "frames": 4, "segments_per_video": 2},
        "light": {"size": 128, "ball": 32, "dilate": 4, "steps": 2, "balls": 2, "batch": 2, "env_height": 16},
    },
}


class Section(BaseModel):
    """Base of every config section: unknown keys are errors, values are immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class CommandConfig(Section):
    """Base of a command's config. ``preset`` names the table applied under the file and --set."""

    preset: str = Field(DEFAULT_PRESET, description=f"named settings the values start from: {', '.join(PRESETS)}")


C = TypeVar("C", bound=CommandConfig)


def parse_set(item: str) -> tuple[list[str], Any]:
    """Split one ``--set dotted.key=value`` into its key path and a YAML-parsed value."""
    import yaml

    key, sep, raw = item.partition("=")
    key = key.strip()
    if not sep or not key or raw.strip() == "":
        raise UserError(f"malformed --set {item!r}: expected dotted.key=value, e.g. scene.frames=8")
    parts = key.split(".")
    if any(not p.isidentifier() for p in parts):
        raise UserError(f"malformed --set {item!r}: key {key!r} must be dotted names, e.g. scene.frames")
    try:
        value = yaml.safe_load(raw)
    except yaml.YAMLError:
        raise UserError(f"malformed --set {item!r}: the value is not valid YAML") from None
    return parts, value


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = _merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


def _load_yaml(path: str | Path) -> dict[str, Any]:
    import yaml

    p = Path(path)
    if not p.is_file():
        raise UserError(f"config file {str(p)!r} does not exist")
    try:
        data = yaml.safe_load(p.read_text())
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        line = getattr(getattr(e, "problem_mark", None), "line", None)
        where = f" (line {line + 1})" if line is not None else ""
        raise UserError(f"config file {str(p)!r} is not valid YAML{where}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise UserError(f"config file {str(p)!r} must hold a mapping of sections, not {type(data).__name__}")
    return data


def _first_error(e: ValidationError) -> str:
    err = e.errors()[0]
    loc = ".".join(str(x) for x in err["loc"]) or "config"
    msg = err["msg"]
    if err["type"] == "extra_forbidden":
        msg = "unknown key"
    more = f" (and {e.error_count() - 1} more)" if e.error_count() > 1 else ""
    return f"{loc}: {msg}{more}"


def resolve_config(
    model: type[C],
    preset: str | None = None,
    config_file: str | Path | None = None,
    sets: Iterable[str] = (),
) -> C:
    """Build the effective config of a command.

    Order: the model's defaults, then the preset (``preset`` argument, else the file's
    ``preset:`` key, else ``paper``), then the YAML file, then each ``--set`` in turn.
    Raises UserError with one line on an unknown preset, a bad file, a malformed --set or a
    value the model rejects.
    """
    file_data = _load_yaml(config_file) if config_file else {}
    name = preset or file_data.get("preset") or DEFAULT_PRESET
    if name not in PRESETS:
        raise UserError(f"unknown preset {name!r}: choose one of {', '.join(PRESETS)}")

    data: dict[str, Any] = model().model_dump(mode="json")
    sections = set(model.model_fields)
    data = _merge(data, {k: v for k, v in PRESETS[name].items() if k in sections})
    data = _merge(data, {k: v for k, v in file_data.items() if k != "preset"})
    data["preset"] = name
    for item in sets:
        parts, value = parse_set(item)
        if parts == ["preset"]:
            raise UserError(f"--set {item!r}: choose a preset with --preset NAME (or preset: in the --config file)")
        node = data
        for i, part in enumerate(parts[:-1]):
            if not isinstance(node.get(part), dict):
                raise UserError(f"--set {item!r}: {'.'.join(parts[: i + 1])} is not a config section")
            node = node[part]
        if parts[-1] not in node:
            raise UserError(f"--set {item!r}: unknown key {'.'.join(parts)}")
        node[parts[-1]] = value
    try:
        return model.model_validate(data)
    except ValidationError as e:
        raise UserError(f"invalid config: {_first_error(e)}") from None


def config_hash(cfg: BaseModel) -> str:
    """16 hex digits of sha256 over the canonical JSON of the effective values.

    The preset's name is left out: it is a label, the values it set are hashed.
    """
    data = cfg.model_dump(mode="json")
    data.pop("preset", None)
    blob = json.dumps(data, sort_keys=True, separators=(",", ":"), allow_nan=False)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def config_yaml(cfg: BaseModel) -> str:
    """The effective config as YAML, fields in model order, each with its description (units)
    as a comment; then the hash of each section (a SceneSpec records its scene section's) and,
    last, of the whole config. Loadable again with --config."""
    import yaml

    def scalar(v: Any) -> str:
        return yaml.safe_dump(v, default_flow_style=True, width=1_000_000).strip().removesuffix("\n...").strip()

    def emit(model: BaseModel, data: dict[str, Any], indent: str) -> list[str]:
        lines = []
        for name, field in type(model).model_fields.items():
            value = getattr(model, name)
            note = f"  # {field.description}" if field.description else ""
            if isinstance(value, BaseModel):
                lines.append(f"{indent}{name}:{note}")
                lines += emit(value, data[name], indent + "  ")
            else:
                lines.append(f"{indent}{name}: {scalar(data[name])}{note}")
        return lines

    body = "\n".join(emit(cfg, cfg.model_dump(mode="json"), ""))
    sections = "".join(f"# {name} section hash: {config_hash(getattr(cfg, name))}\n"
                       for name in type(cfg).model_fields if isinstance(getattr(cfg, name), BaseModel))
    return f"{body}\n{sections}# config hash: {config_hash(cfg)}\n"
