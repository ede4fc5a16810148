"""`dr-data preview`: contact sheets, animated previews and an HTML gallery of a run's clips."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from dr.cli.options import writable_folder
from dr.errors import UserError


def preview(
    source: Annotated[str, typer.Argument(metavar="RUN|SHARD", help="run folder, its shards/ folder, an index.json "
                                                                    "or one shard .tar (local path or fsspec URL)",
                                          show_default=False)],
    out: Annotated[Path, typer.Option("--out", help="folder to write (created if missing): OUT/<clip>.png, "
                                                    "OUT/<clip>.anim.png, OUT/index.html", show_default=False)],
    frames: Annotated[int, typer.Option(
        "--frames", min=1, help="frames (columns) of each contact sheet, evenly spaced over the clip (default 6)",
        show_default=False)] = 6,
    max_clips: Annotated[int, typer.Option(
        "--max-clips", min=1, help="preview at most this many clips, the first ones in shard order (default 16)",
        show_default=False)] = 16,
    tile: Annotated[int, typer.Option(
        "--tile", min=16, help="longest side of each tile of the animated preview, pixels; frames are only scaled "
                               "down (default 256)", show_default=False)] = 256,
) -> None:
    """For each clip: a contact sheet (a row per pass, env_ldr and env_log included; a column per
    frame) and an animated PNG of every frame as tiles rgb | normal | basecolor | roughness |
    metallic | depth | env_ldr; then OUT/index.html, a static page that shows them all (open it in a
    browser; it needs no server and loads nothing from elsewhere)."""
    from dr.cli.progress import console, count_progress
    from dr.pipeline.export import source_shards
    from dr.shards.preview import INDEX_NAME, write_previews
    from dr.shards.reader import iter_shard
    from dr.shards.stream import ShardFormatError

    urls = source_shards(source)
    out = writable_folder(out)

    def samples():
        for url in urls:
            try:
                yield from iter_shard(url)
            except ShardFormatError as e:
                raise UserError(f"{url}: not a readable shard ({e})") from None

    with count_progress("previewing", max_clips) as advance:
        entries = write_previews(samples(), out, frames=frames, max_clips=max_clips, tile=tile,
                                 title=f"dr-data preview of {source}", on_clip=lambda entry: advance())
    console.print(f"[bold green]previewed[/] {len(entries)} clip(s) into {out}", soft_wrap=True, highlight=False)
    if entries:
        console.print(f"  open {out / INDEX_NAME}", soft_wrap=True, highlight=False)
