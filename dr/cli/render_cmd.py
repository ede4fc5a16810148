"""`dr-data render`: path-trace one SceneSpec into a one-clip run folder."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from dr.cli.options import (CacheOpt, ConfigOpt, PresetOpt, PrintConfigOpt, SetOpt, effective_config, with_device,
                             writable_folder)
from dr.errors import UserError


def render(
    spec_file: Annotated[Path, typer.Argument(metavar="SPEC.json", help="a SceneSpec (from `dr-data scenes sample`)",
                                              show_default=False)],
    out: Annotated[Path, typer.Option("--out", help="run folder to create: shards/shard-000000.tar, shards/index.json, "
                                                    "preview.png, logs/", show_default=False)],
    device: Annotated[Optional[str], typer.Option(
        "--device", help="auto (OptiX, then CUDA, then the CPU), optix, cuda or cpu; default: render.device (auto)",
        show_default=False)] = None,
    save_blend: Annotated[bool, typer.Option("--save-blend", help="also save the built scene as OUT/<clip>.blend "
                                                                   "(keyframed, opens in Blender 5)")] = False,
    threads: Annotated[Optional[int], typer.Option("--threads", min=1, help="CPU threads for Cycles; default: the CPUs "
                                                   "this process may use", show_default=False)] = None,
    preset: PresetOpt = None,
    config: ConfigOpt = None,
    set_: SetOpt = None,
    print_config: PrintConfigOpt = False,
    cache_dir: CacheOpt = None,
) -> None:
    """Render every frame of SPEC.json with Blender Cycles (rgb and all G-buffers from one render per
    frame) into OUT. The sample count, denoiser and bounces come from the preset/config (render.*);
    the resolution and frames come from the spec."""
    from dr.assets_manifest.build import available_cpus
    from dr.cache import cache_dir as resolve_cache
    from dr.cli.progress import console, count_progress
    from dr.pipeline.single_clip import check_fresh, load_spec, render_single
    from dr.render.errors import RenderError
    from dr.render.settings import RenderCommandConfig

    sets = with_device(set_, device)
    cfg = effective_config(RenderCommandConfig, preset, config, sets, print_config)
    spec = load_spec(spec_file)
    out = check_fresh(writable_folder(out))
    cache = resolve_cache(cache_dir)
    n_threads = threads or available_cpus()

    with count_progress(f"rendering {spec.clip_id}", spec.frames) as advance:
        def on_event(msg):
            if msg[0] == "frame":
                advance()

        try:
            res = render_single(spec, out, cfg, cache, n_threads, save_blend=save_blend, on_event=on_event)
        except RenderError as e:
            if e.deterministic:
                raise UserError(str(e)) from None
            console.print(f"[bold red]error:[/] {e}", soft_wrap=True, highlight=False)
            raise typer.Exit(1) from None
    r = res.result
    t = r["timings"]
    size = res.shard.stat().st_size
    console.print(
        f"[bold green]rendered[/] {res.key}: {spec.frames} frames {spec.width}x{spec.height} on {r['device']}, "
        f"{cfg.render.samples} samples, denoiser {cfg.render.denoiser}; path tracing {t['trace']:.1f} s, "
        f"total {sum(t.values()):.1f} s", soft_wrap=True, highlight=False)
    console.print(f"  shard   {res.shard} ({size / 2**20:.2f} MiB)\n  preview {res.preview}\n  log     {res.log}"
                  + (f"\n  blend   {res.blend}" if res.blend else ""), soft_wrap=True, highlight=False)
    for fb in r.get("fallbacks", []):
        console.print(f"  [yellow]fallback[/] material {fb['material']}: {fb['reason']}", soft_wrap=True,
                      highlight=False)
