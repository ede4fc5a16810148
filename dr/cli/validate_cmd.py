"""`dr-data validate`: check shards against the data contract; exit 1 when anything fails."""

from __future__ import annotations

from typing import Annotated

import typer

MAX_SHOWN = 50


def validate(
    sources: Annotated[list[str], typer.Argument(
        metavar="RUN|SHARD...", help="run folders, shards folders, index.json files or shard .tar files; local "
                                     "paths or fsspec URLs (s3://bucket/run)", show_default=False)],
    json_: Annotated[bool, typer.Option("--json", help="also print the whole report as JSON on stdout "
                                                       "(ok, shards, samples, problems, notes)")] = False,
) -> None:
    """Check every sample of the shards: metadata, members, shapes, dtypes, finite values, ranges,
    unit normals, the mask (passes 0 on background), cameras and env map; each shard's bytes,
    sha256, sample count and keys against index.json; no key twice. Exit 0 when all is well,
    1 when anything fails; a path that is no shard, shards folder, index.json or run folder is
    an error (2)."""
    from rich.markup import escape

    from dr.cli.progress import console, count_progress
    from dr.shards.validate import plan_sources, validate_plan

    plan = plan_sources(sources)
    with count_progress("validating", plan.expected_samples) as advance:
        report = validate_plan(plan, on_sample=lambda key: advance())
    if json_:
        typer.echo(report.to_json())
    for n in report.notes:
        console.print(f"  [yellow]note[/] {escape(n.shard or '')}: {escape(n.note)}", soft_wrap=True, highlight=False)
    for p in report.problems[:MAX_SHOWN]:
        where = " ".join(x for x in (p.shard, p.key) if x)
        console.print(f"  [red]problem[/] {escape(where)}: {escape(p.problem)}", soft_wrap=True, highlight=False)
    if len(report.problems) > MAX_SHOWN:
        console.print(f"  ... and {len(report.problems) - MAX_SHOWN} more problems"
                      + ("" if json_ else " (--json lists them all)"), highlight=False)
    counts = f"{report.samples} samples in {report.shards} shards"
    if report.ok:
        console.print(f"[bold green]valid[/] {counts}", highlight=False)
        return
    console.print(f"[bold red]invalid[/] {counts}: {len(report.problems)} problems", highlight=False)
    raise typer.Exit(1)
