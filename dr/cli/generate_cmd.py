"""`dr-data generate` and `dr-data status`: make a dataset on Ray, and see where a run stands."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from dr.cli.options import CacheOpt, ConfigOpt, PresetOpt, PrintConfigOpt, SetOpt, effective_config, with_device


def generate(
    n: Annotated[int, typer.Option("--n", help="number of clips the run makes (clip indices 0 .. N-1)", show_default=False)],
    out: Annotated[str, typer.Option("--out", help="run folder: a local path or an fsspec URL (s3://bucket/run); "
                                                    "running the same command again resumes it", show_default=False)],
    manifest: Annotated[Optional[str], typer.Option("--manifest", help="asset manifest (path or URL) from `dr-data assets "
                                                    "build`; default: the built-in assets", show_default=False)] = None,
    seed: Annotated[int, typer.Option("--seed", min=0, help="run seed: clip k is a pure function of (config, seed, k)")] = 0,
    device: Annotated[Optional[str], typer.Option(
        "--device", help="auto (a GPU per render task when Ray has GPUs: OptiX, then CUDA; else the CPU), optix, cuda "
                         "or cpu; default: render.device (auto)", show_default=False)] = None,
    ray_address: Annotated[Optional[str], typer.Option(
        "--ray-address", help="join this Ray cluster ('auto', or ray://host:10001); default: $RAY_ADDRESS, else start a "
                              "local Ray for this command", show_default=False)] = None,
    workers: Annotated[Optional[int], typer.Option(
        "--workers", min=1, help="render tasks at once; default: one per GPU, or one per node on CPUs (each with all "
                                 "of its cores)", show_default=False)] = None,
    clips_per_shard: Annotated[int, typer.Option("--clips-per-shard", min=1, max=100_000,
                                                 help="clips per shard file (a paper clip is about 65 MiB)")] = 16,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="plan, sample every SceneSpec and run the whole executor "
                                                           "with a renderer that makes no pixels (shards hold metadata "
                                                           "only); for checking configs and orchestration at scale")] = False,
    preset: PresetOpt = None,
    config: ConfigOpt = None,
    set_: SetOpt = None,
    print_config: PrintConfigOpt = False,
    cache_dir: CacheOpt = None,
) -> None:
    """Make N path-traced clips (rgb and every G-buffer) into shards in OUT, on Ray.

    The plan is fixed before work starts; markers record each finished clip, so running the same
    command again resumes (a different config on an existing run is refused). System failures
    (a worker or node that died, a timeout) are retried with backoff; a clip that fails for good
    is recorded, its bad asset quarantined and its slot re-sampled, so the run still ends with N
    clips. Progress, then a summary of what was made and where."""
    from dr.cli.progress import builtin_manifest_progress, console, run_progress
    from dr.pipeline.config import GenerateConfig
    from dr.pipeline.engine import RunAborted
    from dr.pipeline.generate import Request, generate as run_generate

    sets = with_device(set_, device)
    cfg = effective_config(GenerateConfig, preset, config, sets, print_config)
    if "://" not in out:
        out = str(Path(out).expanduser().absolute())
    req = Request(n=n, out=out, cfg=cfg, seed=seed, manifest=manifest,
                  ray_address=ray_address or os.environ.get("RAY_ADDRESS") or None, workers=workers,
                  clips_per_shard=clips_per_shard, dry_run=dry_run, cache_dir=cache_dir, argv=sys.argv[1:],
                  probe_progress=builtin_manifest_progress)

    with run_progress("generating" if not dry_run else "dry run", n) as (on_start, on_progress, on_note):
        try:
            rep = run_generate(req, on_progress=on_progress, on_note=on_note, on_start=on_start)
        except RunAborted as e:
            console.print(f"[bold red]error:[/] {e}\n  the run can be resumed with the same command once that is fixed",
                          soft_wrap=True, highlight=False)
            raise typer.Exit(1) from None
        except KeyboardInterrupt:
            console.print(f"interrupted: run the same command again to resume {out}", highlight=False)
            raise typer.Exit(130) from None

    rate = f", {3600 * rep.session_done / rep.session_s:.0f} clips/h" if rep.session_s > 0 and rep.session_done else ""
    colour = "green" if rep.done == rep.planned and not rep.lost else "yellow"
    console.print(f"[bold {colour}]made[/] {rep.done}/{rep.planned} clips in {rep.shards} shards "
                  f"({rep.bytes / 2**20:.1f} MiB) at {rep.run}/shards", soft_wrap=True, highlight=False)
    console.print(f"  this session: {rep.session_done} clips in {rep.session_s:.0f} s{rate}; {rep.resources}\n"
                  f"  failed attempts {rep.failed_attempts}, system retries {rep.retries}, quarantined assets "
                  f"{len(rep.quarantine)}" + (f" (listed in {rep.run}/quarantine.jsonl)" if rep.quarantine else ""),
                  soft_wrap=True, highlight=False)
    for aid, why in list(rep.quarantine.items())[:5]:
        console.print(f"    [yellow]quarantined[/] {aid}: {why}", soft_wrap=True, highlight=False)
    stages = rep.stats.get("stages_s", {})
    if stages:
        console.print("  mean seconds per clip: " + ", ".join(f"{k} {v['mean']:.2f}" for k, v in stages.items()),
                      soft_wrap=True, highlight=False)
    console.print(f"  stats {rep.run}/stats.json, logs {rep.run}/logs, markers {rep.run}/markers\n"
                  f"  next: dr-data validate {rep.run}; dr-data preview {rep.run} --out {rep.run.rstrip('/')}-preview",
                  soft_wrap=True, highlight=False)
    if rep.lost:
        console.print(f"[bold red]error:[/] {len(rep.lost)} clip slots failed {cfg.run.max_attempts} times and were "
                      f"given up ({', '.join(rep.lost[:3])}...); see `dr-data status {rep.run}`", soft_wrap=True,
                      highlight=False)
        raise typer.Exit(1)


def status(
    run: Annotated[str, typer.Argument(metavar="RUN", help="run folder (path or URL)", show_default=False)],
    json_: Annotated[bool, typer.Option("--json", help="print the status as JSON on stdout")] = False,
) -> None:
    """Where a run stands: planned, done, failed (with reasons), running, shards written."""
    from dr.cli.progress import console
    from dr.pipeline.status import run_status

    s = run_status(run if "://" in run else str(Path(run).expanduser().absolute()))
    if json_:
        typer.echo(json.dumps(s, indent=1, sort_keys=True))
        return
    state = "complete" if s["complete"] else ("running" if s["driver"]["live"] else "stopped")
    console.print(f"[bold]{s['run']}[/] ({state}{', dry run' if s['dry_run'] else ''})", highlight=False, soft_wrap=True)
    console.print(f"  planned {s['planned']}, done {s['done']}, remaining {s['remaining']}, lost {len(s['lost'])}\n"
                  f"  shards {s['shards_written']}/{s['shards_planned']} ({s['samples_in_shards']} clips, "
                  f"{s['shard_bytes'] / 2**20:.1f} MiB)\n"
                  f"  running {len(s['running'])}" + (f", interrupted {len(s['interrupted'])}" if s["interrupted"] else "")
                  + f"; failed attempts {s['failed_attempts']}, system retries {s['retries']}",
                  highlight=False, soft_wrap=True)
    for reason, count in list(s["failure_reasons"].items())[:10]:
        console.print(f"    {count} x {reason}", highlight=False, soft_wrap=True)
    for aid, why in list(s["quarantined_assets"].items())[:10]:
        console.print(f"  [yellow]quarantined[/] {aid}: {why}", highlight=False, soft_wrap=True)
