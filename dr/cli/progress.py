"""Rich progress displays, on stderr so stdout stays clean for data.

Shown only when stderr is a terminal: in logs and pipes a bar is noise, and the commands print
a summary line when they finish anyway.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

console = Console(stderr=True)


def _progress() -> Progress:
    return Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TextColumn("{task.fields[note]}"), TimeElapsedColumn(), TimeRemainingColumn(),
                    console=console, transient=True, disable=not console.is_terminal)


@contextmanager
def probe_progress(title: str = "probing assets") -> Iterator[tuple]:
    """Yields (on_start(total), on_done(record, reused)) callbacks for build_manifest."""
    counts = {"ok": 0, "quarantined": 0, "reused": 0}
    with _progress() as bar:
        task = bar.add_task(title, total=None, note="")

        def on_start(total: int) -> None:
            bar.update(task, total=total)

        def on_done(record, reused: bool) -> None:
            counts[record.status] += 1
            counts["reused"] += int(reused)
            bar.update(task, advance=1, note=f"ok {counts['ok']}  quarantined {counts['quarantined']}  "
                                             f"reused {counts['reused']}")

        yield on_start, on_done


def builtin_manifest_progress():
    """probe_progress for the one-time build of the built-in manifest."""
    return probe_progress("building the built-in manifest (once)")


@contextmanager
def count_progress(title: str, total: int) -> Iterator:
    """Yields advance() for a plain counted loop."""
    with _progress() as bar:
        task = bar.add_task(title, total=total, note="")
        yield lambda n=1: bar.update(task, advance=n)


@contextmanager
def step_progress(title: str, total: int) -> Iterator:
    """Yields update(completed, note) for a loop that reports where it stands (training steps)."""
    with _progress() as bar:
        task = bar.add_task(title, total=total, note="")
        yield lambda completed, note="": bar.update(task, completed=completed, note=note)


@contextmanager
def run_progress(title: str, total: int | None) -> Iterator[tuple]:
    """Yields (on_start(resources, plan, state), on_progress(Progress), on_note(text)) for a run:
    a bar of clips done, with failures, clips per hour and the time left. ``total`` None: the
    plan's, once it is known."""
    with _progress() as bar:
        task = bar.add_task(title, total=total, note="")

        def on_start(resources: str, plan, state) -> None:
            n = plan.n if total is None else total
            bar.update(task, total=n)
            console.print(f"{title}: {n} clips, {len(state.done)} already done; {resources}",
                          soft_wrap=True, highlight=False)

        def on_progress(p) -> None:
            bar.update(task, completed=p.done, note=f"failed {p.failed}  {p.per_hour:.0f} clips/h")

        def on_note(text: str) -> None:
            console.print(f"  {text}", soft_wrap=True, highlight=False)

        yield on_start, on_progress, on_note
