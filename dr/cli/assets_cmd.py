"""`dr-data assets ...`: build and inspect asset manifests."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer

from dr.cli.options import CacheOpt, ConfigOpt, PrintConfigOpt, SetOpt, effective_config, writable_file
from dr.errors import UserError

app = typer.Typer(help="Build and inspect asset manifests (objects, PBR materials, HDRIs).", no_args_is_help=True)

OutOpt = Annotated[
    Optional[Path],
    typer.Option("--out", help="manifest file to write (JSON lines); default for --builtin alone: "
                               "<cache>/manifests/builtin-<library>.jsonl", show_default=False),
]
WorkersOpt = Annotated[Optional[int], typer.Option("--workers", min=0, help="probe processes (0 = one per CPU; default from config: 0)", show_default=False)]
TimeoutOpt = Annotated[Optional[float], typer.Option("--timeout", min=0.001, help="time limit per asset probe, seconds (default 120)", show_default=False)]
MaxTrisOpt = Annotated[Optional[int], typer.Option("--max-triangles", min=1, help="quarantine objects with more triangles (default 1,000,000)", show_default=False)]


def _with_probe_overrides(sets: list[str] | None, workers, timeout, max_triangles) -> list[str]:
    sets = list(sets or [])
    if workers is not None:
        sets.append(f"probe.workers={workers}")
    if timeout is not None:
        sets.append(f"probe.timeout_s={timeout}")
    if max_triangles is not None:
        sets.append(f"probe.max_triangles={max_triangles}")
    return sets


def _build_and_report(candidates, cfg, out: Path, cache: Path) -> None:
    """Probe with a progress display, write the manifest, say what was made and where."""
    from dr.assets_manifest.build import build_manifest
    from dr.cli.progress import console, probe_progress

    with probe_progress() as (on_start, on_done):
        manifest = build_manifest(candidates, cfg, out, cache, on_done=on_done, on_start=on_start)
    s = manifest.summary()
    console.print(f"[bold green]wrote[/] {out}: {s['assets']} assets, {s['ok']} ok, {s['quarantined']} quarantined",
                  soft_wrap=True)
    for reason, n in list(s["quarantine_reasons"].items())[:10]:
        console.print(f"  quarantined x{n}: {reason}", soft_wrap=True, highlight=False, markup=False)


@app.command("build")
def build(
    builtin: Annotated[bool, typer.Option("--builtin", help="the built-in library: 8 CC0 HDRIs from the bpy wheel, "
                                                             "30 procedural objects, 24 procedural PBR materials")] = False,
    objaverse_cache: Annotated[Optional[Path], typer.Option("--objaverse-cache", help="an Objaverse download "
                               "(hf-objaverse-v1 layout, or the folder holding it)", show_default=False)] = None,
    objaverse_all: Annotated[bool, typer.Option("--objaverse-all", help="index every downloaded object, not only the LVIS subset")] = False,
    categories: Annotated[Optional[str], typer.Option("--categories", help="comma-separated LVIS categories to keep", show_default=False)] = None,
    limit: Annotated[Optional[int], typer.Option("--limit", min=1, help="keep at most N Objaverse objects, spread over categories", show_default=False)] = None,
    materials: Annotated[Optional[list[Path]], typer.Option("--materials", help="folder of PBR texture sets "
                         "(ambientCG or Poly Haven names); repeatable", show_default=False)] = None,
    objects: Annotated[Optional[list[Path]], typer.Option("--objects", help="folder of .glb/.gltf files (your own "
                       "assets, an Objaverse-XL download); category = the sub-folder a file is in; repeatable",
                       show_default=False)] = None,
    hdris: Annotated[Optional[list[Path]], typer.Option("--hdris", help="folder of .exr/.hdr equirectangular maps; repeatable", show_default=False)] = None,
    hdri_license: Annotated[str, typer.Option("--hdri-license", help="licence recorded for HDRIs from --hdris")] = "unknown",
    material_license: Annotated[str, typer.Option("--material-license", help="licence recorded for --materials sets")] = "CC0-1.0",
    object_license: Annotated[str, typer.Option("--object-license", help="licence recorded for --objects files")] = "unknown",
    out: OutOpt = None,
    cache_dir: CacheOpt = None,
    workers: WorkersOpt = None,
    timeout: TimeoutOpt = None,
    max_triangles: MaxTrisOpt = None,
    config: ConfigOpt = None,
    set_: SetOpt = None,
    print_config: PrintConfigOpt = False,
) -> None:
    """Index assets, probe each one in parallel (bad ones are quarantined with a reason, never
    fatal) and write one manifest. Sources combine: give any of them together (a run draws from
    one manifest; `dr-data assets merge` combines manifests already built). Running it again
    reuses the probes of unchanged files."""
    from dr.assets_manifest.build import AssetsBuildConfig, builtin_manifest_path
    from dr.assets_manifest.builtin.library import builtin_candidates
    from dr.assets_manifest.folders import index_hdris, index_materials, index_objects
    from dr.assets_manifest.objaverse import index_objaverse
    from dr.cache import cache_dir as resolve_cache
    from dr.cli.progress import console

    cfg = effective_config(AssetsBuildConfig, None, config, _with_probe_overrides(set_, workers, timeout, max_triangles),
                           print_config)
    if not (builtin or objaverse_cache or objects or materials or hdris):
        raise UserError("nothing to build: give --builtin, --objaverse-cache DIR, --objects DIR, --materials DIR "
                        "or --hdris DIR")
    cache = resolve_cache(cache_dir)
    if out is None:
        if not builtin or objaverse_cache or objects or materials or hdris:
            raise UserError("--out FILE is required unless only --builtin is given")
        out = builtin_manifest_path(cache, cfg)
    out = writable_file(out, "manifest.jsonl")

    candidates = []
    if builtin:
        candidates += builtin_candidates(cfg.builtin.seed, cfg.builtin.texture_size)
    if objaverse_cache:
        cats = [c.strip() for c in categories.split(",") if c.strip()] if categories else None
        recs, missing = index_objaverse(objaverse_cache, lvis_only=not objaverse_all, categories=cats, limit=limit)
        if missing:
            console.print(f"{missing} selected Objaverse objects are not downloaded; skipped")
        if not recs:
            raise UserError(f"no downloaded objects to index in {str(objaverse_cache)!r}")
        candidates += recs
    for folder in objects or []:
        candidates += index_objects(folder, license=object_license)
    for folder in materials or []:
        candidates += index_materials(folder, license=material_license)
    for folder in hdris or []:
        candidates += index_hdris(folder, license=hdri_license)

    _build_and_report(candidates, cfg, out, cache)


@app.command("objaverse")
def objaverse(
    download_dir: Annotated[Path, typer.Option("--download-dir", help="where to download (an hf-objaverse-v1 folder is made inside)")],
    lvis: Annotated[bool, typer.Option("--lvis/--all-objects", help="the LVIS-annotated subset (~46k objects) or all of Objaverse")] = True,
    limit: Annotated[Optional[int], typer.Option("--limit", min=1, help="download at most N objects, spread over categories", show_default=False)] = None,
    categories: Annotated[Optional[str], typer.Option("--categories", help="comma-separated LVIS categories to keep", show_default=False)] = None,
    processes: Annotated[int, typer.Option("--processes", min=1, help="parallel downloads")] = 8,
    out: Annotated[Optional[Path], typer.Option("--out", help="manifest file to write; default <download-dir>/manifest.jsonl",
                                                show_default=False)] = None,
    cache_dir: CacheOpt = None,
    workers: WorkersOpt = None,
    timeout: TimeoutOpt = None,
    max_triangles: MaxTrisOpt = None,
    config: ConfigOpt = None,
    set_: SetOpt = None,
    print_config: PrintConfigOpt = False,
) -> None:
    """Download Objaverse objects with the `objaverse` package (needs the network), then index
    and probe them into a manifest (default: <download-dir>/manifest.jsonl)."""
    from dr.assets_manifest.build import AssetsBuildConfig
    from dr.assets_manifest.objaverse import download, index_objaverse
    from dr.cache import cache_dir as resolve_cache
    from dr.cli.progress import console

    cfg = effective_config(AssetsBuildConfig, None, config, _with_probe_overrides(set_, workers, timeout, max_triangles),
                           print_config)
    if not lvis and limit is None:
        raise UserError("--all-objects downloads ~800k objects (~9 TB); give --limit N to confirm a size")
    target = download_dir.expanduser().absolute()
    if target.exists() and not target.is_dir():
        raise UserError(f"--download-dir {str(target)!r} is not a folder")
    out = writable_file(out or target / "manifest.jsonl", "manifest.jsonl")
    cache = resolve_cache(cache_dir)
    cats = [c.strip() for c in categories.split(",") if c.strip()] if categories else None
    root = download(target, lvis=lvis, categories=cats, limit=limit, processes=processes, log=console.print)
    recs, missing = index_objaverse(root, lvis_only=lvis, categories=cats, limit=limit)
    if missing:
        console.print(f"{missing} selected objects failed to download; skipped")
    if not recs:
        raise UserError(f"no objects were downloaded into {root}")
    _build_and_report(recs, cfg, out, cache)


@app.command("merge")
def merge(
    manifests: Annotated[list[Path], typer.Argument(help="manifest files (JSON lines) to combine; a run's "
                                                         "quarantine.jsonl too", show_default=False)],
    out: Annotated[Path, typer.Option("--out", help="manifest file to write (JSON lines)")],
) -> None:
    """Combine manifests into one (a run draws from one manifest). An asset listed twice must be
    the same file (same uri and sha256), else it is an error naming it; a quarantined copy wins,
    so merging a run's quarantine.jsonl marks its bad assets. Nothing is probed again."""
    from dr.assets_manifest.manifest import load_manifest, merge_manifests, write_manifest
    from dr.cli.progress import console

    out = writable_file(out, "manifest.jsonl")
    if out.resolve() in {m.expanduser().resolve() for m in manifests}:
        raise UserError(f"--out {str(out)!r} is one of the inputs; write the merge to a new file")
    merged = merge_manifests([load_manifest(m) for m in manifests])
    write_manifest(merged, out)
    s = merged.summary()
    console.print(f"[bold green]wrote[/] {out}: {s['assets']} assets from {len(manifests)} manifests, {s['ok']} ok, "
                  f"{s['quarantined']} quarantined", soft_wrap=True)


@app.command("show")
def show(
    manifest: Annotated[Optional[Path], typer.Argument(help="manifest file (JSON lines); default: the built-in one",
                                                        show_default=False)] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print the summary as JSON")] = False,
    cache_dir: CacheOpt = None,
) -> None:
    """Counts per kind, source and status, and the quarantine reasons."""
    from rich.table import Table
    from rich.text import Text

    from dr.assets_manifest.build import AssetsBuildConfig, builtin_manifest_path
    from dr.assets_manifest.manifest import load_manifest
    from dr.cache import cache_dir as resolve_cache

    if manifest is None:
        manifest = builtin_manifest_path(resolve_cache(cache_dir), AssetsBuildConfig())
        if not manifest.is_file():
            raise UserError("the built-in manifest is not built yet: run `dr-data assets build --builtin`")
    m = load_manifest(manifest)
    s = m.summary()
    if as_json:
        typer.echo(json.dumps(s, indent=2))
        return
    from rich.console import Console

    out = Console()
    out.print(f"{manifest}: {s['assets']} assets, {s['ok']} ok, {s['quarantined']} quarantined", highlight=False, soft_wrap=True)
    table = Table()
    for col in ("kind", "source", "ok", "quarantined"):
        table.add_column(col, justify="right" if col in ("ok", "quarantined") else "left")
    for kind, sources in sorted(s["by_kind"].items()):
        for source, n in sorted(sources.items()):
            table.add_row(kind, source, str(n["ok"]), str(n["quarantined"]))
    out.print(table)
    if s["quarantine_reasons"]:
        reasons = Table(title="quarantine reasons")
        reasons.add_column("count", justify="right")
        reasons.add_column("reason")
        for reason, n in s["quarantine_reasons"].items():
            reasons.add_row(str(n), Text(reason))  # plain text: reasons may hold [brackets]
        out.print(reasons)
