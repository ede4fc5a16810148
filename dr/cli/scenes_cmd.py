"""`dr-data scenes ...`: sample SceneSpecs."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Optional

import typer

from dr.cli.options import CacheOpt, ConfigOpt, PresetOpt, PrintConfigOpt, SetOpt, effective_config, writable_file

app = typer.Typer(help="Sample scene specs (the renderer-agnostic description of one clip).", no_args_is_help=True)


def load_or_build_manifest(manifest: Path | None, cache_dir: Path | None):
    """The given manifest, or the built-in one (built into the cache on first use, with a bar)."""
    from dr.assets_manifest.build import load_or_build_manifest as load
    from dr.cli.progress import builtin_manifest_progress

    return load(manifest, cache_dir, builtin_manifest_progress)


@app.command("sample")
def sample(
    seed: Annotated[int, typer.Option("--seed", min=0, help="run seed")] = 0,
    index: Annotated[int, typer.Option("--index", min=0, help="clip index (the first one with --n)")] = 0,
    n: Annotated[Optional[int], typer.Option("--n", min=1, help="sample clips index .. index+N-1, one JSON per line", show_default=False)] = None,
    out: Annotated[Optional[Path], typer.Option("--out", help="write to this file (JSON lines) instead of stdout", show_default=False)] = None,
    manifest: Annotated[Optional[Path], typer.Option("--manifest", help="asset manifest; default: the built-in one", show_default=False)] = None,
    preset: PresetOpt = None,
    config: ConfigOpt = None,
    set_: SetOpt = None,
    print_config: PrintConfigOpt = False,
    cache_dir: CacheOpt = None,
) -> None:
    """Print the SceneSpec of clip INDEX of a run with SEED (JSON), or write N of them."""
    from dr.cli.progress import console, count_progress
    from dr.scenes.config import ScenesSampleConfig
    from dr.scenes.sampler import check_manifest, sample_scene

    cfg = effective_config(ScenesSampleConfig, preset, config, set_, print_config)
    if out is not None:
        out = writable_file(out, "scenes.jsonl")
    m = load_or_build_manifest(manifest, cache_dir)
    check_manifest(cfg.scene, m)

    count = n or 1
    if out is None:
        for k in range(index, index + count):
            spec = sample_scene(cfg.scene, m, seed, k)
            typer.echo(spec.to_json(indent=None if n else 2))
        return
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "w") as f, count_progress("sampling scenes", count) as advance:
            for k in range(index, index + count):
                f.write(sample_scene(cfg.scene, m, seed, k).to_json() + "\n")
                advance()
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    console.print(f"[bold green]wrote[/] {count} scene specs to {out} (seed {seed}, clips {index}..{index + count - 1})",
                  soft_wrap=True)
