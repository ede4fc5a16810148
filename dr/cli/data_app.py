"""`dr-data`: make training data (assets, scenes, rendering, runs on Ray, and the tools around them)."""

from __future__ import annotations

import sys

import typer

from dr.cli import assets_cmd, autolabel_cmd, export_cmd, generate_cmd, preview_cmd, render_cmd, scenes_cmd, validate_cmd
from dr.cli.runner import run

app = typer.Typer(
    name="dr-data",
    help="Make training data for neural inverse and forward rendering: asset manifests, scene specs, "
         "path-traced clips with exact G-buffers, made at scale on Ray into validated shards. Errors exit with status 2 and one line.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.add_typer(assets_cmd.app, name="assets")
app.add_typer(scenes_cmd.app, name="scenes")
app.command("render")(render_cmd.render)
app.command("generate")(generate_cmd.generate)
app.command("autolabel")(autolabel_cmd.autolabel)
app.command("status")(generate_cmd.status)
app.command("validate")(validate_cmd.validate)
app.command("preview")(preview_cmd.preview)
app.command("export")(export_cmd.export)


def main(argv: list[str] | None = None) -> None:
    sys.exit(run(app, "dr-data", argv))


if __name__ == "__main__":
    main()
