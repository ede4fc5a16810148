"""`dr-data export`: a run's clips in the file layout another code base reads."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Optional

import typer

from dr.cli.options import writable_folder
from dr.errors import UserError


def parse_size(text: str, option: str) -> tuple[int, int]:
    """'HxW' (pixels, both >= 1) -> (h, w); UserError otherwise."""
    m = re.fullmatch(r"\s*(\d+)\s*[xX]\s*(\d+)\s*", text)
    if not m or int(m.group(1)) < 1 or int(m.group(2)) < 1:
        raise UserError(f"{option} {text!r}: give HEIGHTxWIDTH in pixels, e.g. 512x512")
    return int(m.group(1)), int(m.group(2))


def export(
    run: Annotated[str, typer.Argument(
        metavar="RUN", help="run folder, its shards/ folder, an index.json or one shard .tar (local path or "
                            "fsspec URL)", show_default=False)],
    out: Annotated[Path, typer.Option("--out", help="folder to write (created if missing): OUT/<clip>/..., "
                                                    "OUT/export.json; an export already there is resumed",
                                      show_default=False)],
    format_: Annotated[str, typer.Option(
        "--format", help="layout to write; diffusion-renderer: <clip>/<chunk>.<frame>.<pass>.png as the official "
                         "DiffusionRenderer loaders read (default); dl3dv: each clip as a DL3DV-style scene "
                         "(transforms.json, images/frame_XXXXX.png of its rgb) for `dr-data autolabel`, whose labels "
                         "then have a known truth", show_default=False)] = "diffusion-renderer",
    chunk_frames: Annotated[Optional[int], typer.Option("--chunk-frames", min=0, help="frames per chunk (the <chunk> "
                                                        "part of the names; frame numbers restart in each chunk); 0: "
                                                        "the whole clip is chunk 0000 (default 0)",
                                                        show_default=False)] = None,
    env_size: Annotated[Optional[str], typer.Option("--env-size", metavar="HxW",
                                                    help="size of env_ldr/env_log in pixels; default: the frame's size "
                                                         "(what the Cosmos DiffusionRenderer takes; its SVD model "
                                                         "took 512x512)", show_default=False)] = None,
    target: Annotated[Optional[str], typer.Option(
        "--for", metavar="svd|cosmos", help="fit the official DiffusionRenderer scripts: svd (their SVD release: "
        "chunks of 24 frames, a shorter chunk padded to 24 with copies of its last frame, env 512x512) or cosmos "
        "(chunks of 57 frames, which their loader pads itself); --chunk-frames/--pad-to/--env-size given too "
        "win", show_default=False)] = None,
    pad_to: Annotated[Optional[int], typer.Option("--pad-to", min=0, help="pad a chunk shorter than this many "
                                                  "frames with copies of its last frame (export.json counts them); "
                                                  "0: never (default 0)", show_default=False)] = None,
    threads: Annotated[Optional[int], typer.Option("--threads", min=1, help="threads encoding PNG files; default: "
                                                   "the CPUs this process may use, at most 16",
                                                   show_default=False)] = None,
) -> None:
    """Write every clip of RUN as 8-bit PNG frames: rgb (display tone mapping), basecolor (sRGB),
    roughness, metallic, normal ((n+1)/2), depth (clip's 2%/98% quantiles, near dark) and the
    per-frame env_ldr/env_log. Each clip is written into OUT/<clip>.partial and renamed when whole;
    running again skips finished clips. OUT/export.json lists the clips and each clip's depth range.
    The README says how to run the official DiffusionRenderer scripts on it (--for svd|cosmos)."""
    from dr.assets_manifest.build import available_cpus
    from dr.cli.progress import console, count_progress
    from dr.pipeline.export import FORMATS, TARGETS, ExportSettings, plan_export, run_export

    if format_ not in FORMATS:
        raise UserError(f"--format {format_!r}: unknown; choose one of: {', '.join(FORMATS)}")
    if target is not None and target not in TARGETS:
        raise UserError(f"--for {target!r}: unknown; choose one of: {', '.join(TARGETS)}")
    fit = TARGETS.get(target, {})
    settings = ExportSettings(format=format_,
                              chunk_frames=chunk_frames if chunk_frames is not None else fit.get("chunk_frames", 0),
                              env_size=parse_size(env_size, "--env-size") if env_size else fit.get("env_size"),
                              pad_to=pad_to if pad_to is not None else fit.get("pad_to", 0))
    out = writable_folder(out)
    plan = plan_export(run, out, settings)
    with count_progress("exporting", len(plan.todo)) as advance:
        res = run_export(plan, threads=threads or min(16, available_cpus()), on_clip=lambda record: advance())
    console.print(f"[bold green]exported[/] {len(res.exported)} clip(s) as {format_} into {out}; "
                  f"{len(res.skipped)} of {res.clips} were there already", soft_wrap=True, highlight=False)
    console.print(f"  index {out / 'export.json'}", soft_wrap=True, highlight=False)
