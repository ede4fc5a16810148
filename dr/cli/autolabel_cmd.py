"""`dr-data autolabel`: real videos labelled by the project's inverse renderer and DiffusionLight."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from dr.cli.options import CacheOpt, ConfigOpt, PresetOpt, PrintConfigOpt, SetOpt, effective_config
from dr.errors import UserError


def autolabel(
    scenes: Annotated[Path, typer.Argument(metavar="SCENES", help="folder of DL3DV-style scenes (transforms.json and "
                                           "images/, images_2/, images_4/ or images_8/ each; DL3DV's <batch>/<hash>/ "
                                           "nesting is searched)", show_default=False)],
    out: Annotated[str, typer.Option("--out", help="run folder: a local path or an fsspec URL; running the same "
                                                    "command again resumes it", show_default=False)],
    inverse: Annotated[Optional[str], typer.Option(
        "--inverse", help="the inverse renderer: a `dr-train inverse` run folder (its latest checkpoint), a checkpoint "
                          "or a pipeline folder; default $DR_AUTOLABEL_INVERSE", show_default=False)] = None,
    light: Annotated[Optional[str], typer.Option(
        "--light", help="DiffusionLight's models: a folder holding sdxl/ (SDXL base, diffusers), controlnet/ (depth "
                        "ControlNet), depth/ (DPT), lora/exposure/ and optionally lora/turbo/ and vae/; or 'hub' "
                        "for their hub ids; `dr-train init-tiny` writes a tiny one to OUT/diffusionlight; default "
                        "$DR_AUTOLABEL_LIGHT", show_default=False)] = None,
    single_step: Annotated[bool, typer.Option("--single-step", help="require a single-step inverse renderer "
                                              "(`dr-train inverse --single-step`, Ouroboros): one network evaluation "
                                              "a clip; a single-step checkpoint runs in one step with or without "
                                              "this")] = False,
    device: Annotated[str, typer.Option("--device", help="auto (a GPU per labelling task when Ray has GPUs, else the "
                                                         "CPU), cuda or cpu")] = "auto",
    ray_address: Annotated[Optional[str], typer.Option(
        "--ray-address", help="join this Ray cluster ('auto', or ray://host:10001); default: $RAY_ADDRESS, else start "
                              "a local Ray for this command", show_default=False)] = None,
    workers: Annotated[Optional[int], typer.Option(
        "--workers", min=1, help="labelling tasks at once; default one per GPU, or one per node on CPUs",
        show_default=False)] = None,
    clips_per_shard: Annotated[int, typer.Option("--clips-per-shard", min=1, max=100_000,
                                                 help="clips per shard file")] = 16,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="read, undistort and shard every clip (rgb and cameras) "
                                                           "without labelling it: for checking a dataset and the "
                                                           "orchestration; no models are needed")] = False,
    preset: PresetOpt = None,
    config: ConfigOpt = None,
    set_: SetOpt = None,
    print_config: PrintConfigOpt = False,
    cache_dir: CacheOpt = None,
) -> None:
    """Label real videos: each scene's segments (clips.segments_per_video of clips.frames frames) become clips with
    the inverse renderer's basecolor, roughness, metallic, normal and relative depth, and the video's lighting
    estimated once by DiffusionLight (a chrome ball painted into its middle frame, unwrapped into the clip's env
    frame), in shards (source real) in OUT, on Ray.

    Same run folder, resume, claim and retry rules as `dr-data generate`. A scene whose transforms are unreadable,
    whose frames are missing or corrupt, or which is shorter than one clip is quarantined with its reason
    (OUT/quarantine.jsonl) and the run goes on."""
    from dr.cli.progress import console, run_progress
    from dr.pipeline.autolabel import Request, autolabel as run_autolabel
    from dr.pipeline.autolabel_config import AutolabelConfig
    from dr.pipeline.engine import RunAborted

    if device not in ("auto", "cuda", "cpu"):
        raise UserError(f"--device {device!r}: choose auto, cuda or cpu")
    cfg = effective_config(AutolabelConfig, preset, config, set_, print_config)
    if "://" not in out:
        out = str(Path(out).expanduser().absolute())
    req = Request(scenes=str(scenes), out=out, cfg=cfg, inverse=inverse, light=light,
                  ray_address=ray_address or os.environ.get("RAY_ADDRESS") or None, workers=workers,
                  clips_per_shard=clips_per_shard, device=device, single_step=single_step, dry_run=dry_run,
                  cache_dir=cache_dir, argv=sys.argv[1:])
    with run_progress("labelling" if not dry_run else "dry run", None) as (on_start, on_progress, on_note):
        try:
            rep = run_autolabel(req, on_progress=on_progress, on_note=on_note, on_start=on_start)
        except RunAborted as e:
            console.print(f"[bold red]error:[/] {e}\n  the run can be resumed with the same command once that is fixed",
                          soft_wrap=True, highlight=False)
            raise typer.Exit(1) from None
        except KeyboardInterrupt:
            console.print(f"interrupted: run the same command again to resume {out}", highlight=False)
            raise typer.Exit(130) from None
    from dr.pipeline.autolabel import quarantined_scenes
    from dr.pipeline.run_store import RunStore

    bad = quarantined_scenes(RunStore(rep.run))
    colour = "green" if rep.done == rep.planned and not rep.lost else "yellow"
    console.print(f"[bold {colour}]labelled[/] {rep.done}/{rep.planned} clips in {rep.shards} shards "
                  f"({rep.bytes / 2**20:.1f} MiB) at {rep.run}/shards", soft_wrap=True, highlight=False)
    console.print(f"  this session: {rep.session_done} clips in {rep.session_s:.0f} s; {rep.resources}\n"
                  f"  quarantined scenes {len(bad)}" + (f" (listed in {rep.run}/quarantine.jsonl)" if bad else ""),
                  soft_wrap=True, highlight=False)
    for b in bad[:5]:
        console.print(f"    [yellow]quarantined[/] {b['scene']}: {b['reason']}", soft_wrap=True, highlight=False)
    stages = rep.stats.get("stages_s", {})
    if stages:
        console.print("  mean seconds per clip: " + ", ".join(f"{k} {v['mean']:.2f}" for k, v in stages.items()),
                      soft_wrap=True, highlight=False)
    console.print(f"  next: dr-data validate {rep.run}; dr-data preview {rep.run} --out {rep.run.rstrip('/')}-preview",
                  soft_wrap=True, highlight=False)
    if rep.lost:
        console.print(f"[yellow]note:[/] {len(rep.lost)} clip slots were given up (their scenes are quarantined, or "
                      f"see `dr-data status {rep.run}`)", soft_wrap=True, highlight=False)
