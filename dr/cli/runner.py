"""Running a typer app the project's way: bad input is one line on stderr and exit status 2."""

from __future__ import annotations

import os
import sys
import traceback

import typer

from dr.errors import UserError


def _say(msg: str) -> None:
    sys.stderr.write(" ".join(msg.split()) + "\n")


def run(app: typer.Typer, prog_name: str, argv: list[str] | None = None) -> int:
    """Run ``app``; return the exit status. UserError and usage errors print ``error: ...`` on
    one line and give 2; Ctrl-C gives 130; an unexpected exception gives 1 with one line
    (its traceback when DR_DEBUG=1)."""
    cmd = typer.main.get_command(app)
    try:
        rv = cmd.main(args=argv, prog_name=prog_name, standalone_mode=False)
        return rv if isinstance(rv, int) else 0
    except UserError as e:
        _say(f"error: {e}")
        return 2
    except typer.Exit as e:
        return int(getattr(e, "exit_code", 0) or 0)
    except (typer.Abort, KeyboardInterrupt):
        _say("interrupted")
        return 130
    except typer.TyperException as e:  # click's UsageError family, vendored by typer
        ctx = getattr(e, "ctx", None)
        if type(e).__name__ == "NoArgsIsHelpError" and ctx is not None:
            typer.echo(ctx.get_help())
            return 0
        hint = f" (see '{ctx.command_path} --help')" if ctx is not None else ""
        _say(f"error: {e.format_message()}{hint}")
        return int(getattr(e, "exit_code", 2) or 2)
    except BrokenPipeError:
        return 0
    except Exception as e:  # a bug: say so in one line, keep the traceback for DR_DEBUG=1
        if os.environ.get("DR_DEBUG") == "1":
            traceback.print_exc()
        _say(f"internal error: {type(e).__name__}: {e} (set DR_DEBUG=1 for the traceback, and please report it)")
        return 1
