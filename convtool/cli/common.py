"""What every command shares: the one-line error exit, the consoles, progress bars, wall time.

* :func:`fail`: ``error: <message>`` on stderr, exit with the error's code.
* :class:`UI`: where a command's human output goes.  Tables go to stdout, or to stderr when
  stdout carries a record (``--json -``); ``--quiet`` prints warnings and errors only.
  Tables are laid out for :func:`console_width` columns.
* :meth:`UI.run`: long library work with a rich progress bar (elapsed time and ETA) on stderr
  when stderr is a terminal and not ``--quiet``; nothing otherwise.  The library reports
  ``progress(stage, done, total)``; :data:`STAGES` words the stages for the user.
* :class:`Clock`: the command's real wall time, for the closing line.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from typing import Any, NoReturn, TypeVar

import typer
from rich.console import Console, RenderableType

from convtool.errors import ConvToolError
from convtool.render.fmt import duration

T = TypeVar("T")

#: Wide enough for every table without stacking when output is not a terminal (logs, pipes).
PIPE_WIDTH = 120

#: Library progress stages as the user reads them (unknown stages are shown as they are).
STAGES = {
    "sensitivity": "max-drift search: each layer alone",
    "greedy": "max-drift search: adding layers",
    "timing layers": "timing layers",
    "timing models": "timing both models",
    "refitting layers": "calibration refit",
    "timing": "timing the models",
    "profiling": "profiling",
    "running inputs": "running the inputs",
}
#: A stage label may carry a detail after this separator (``"fine-tuning | loss 0.012"``): the
#: bar is keyed on the part before it and shows the detail.
DETAIL = " | "


def fail(exc: ConvToolError) -> NoReturn:
    """Print one ``error:`` line on stderr and exit with the error's code."""
    typer.echo(f"error: {exc}", err=True)
    raise typer.Exit(exc.exit_code)


def console_width(console: Console) -> int:
    """The width tables are laid out for: ``COLUMNS`` when set, else the terminal's width, else
    (logs and pipes) :data:`PIPE_WIDTH` instead of rich's 80."""
    columns = os.environ.get("COLUMNS", "")
    if columns.isdigit() and int(columns) > 0:
        return int(columns)
    return console.width if console.is_terminal else max(console.width, PIPE_WIDTH)


class Clock:
    """Wall time since the command started (what the closing line reports)."""

    def __init__(self) -> None:
        self.start = time.perf_counter()

    @property
    def seconds(self) -> float:
        return time.perf_counter() - self.start


def closing_line(written: list[str], clock: Clock, dry_run: bool = False) -> str:
    """``wrote a.dws.onnx, a.json in 27.1 s``: what this run wrote and its real wall time."""
    took = duration(clock.seconds)
    if dry_run:
        return (f"dry run: model not written; wrote {', '.join(written)} in {took}" if written
                else f"dry run: nothing written ({took})")
    return f"wrote {', '.join(written)} in {took}" if written else f"done in {took}"


class UI:
    """A command's consoles (see the module docstring)."""

    def __init__(self, quiet: bool, stdout_taken: bool = False) -> None:
        self.quiet = quiet
        self.err = Console(stderr=True, highlight=False)
        self.out = Console(file=sys.stderr if stdout_taken else sys.stdout, highlight=False)
        self.width = console_width(self.out)
        self.out.width = self.width

    def warn(self, message: str) -> None:
        """``warning: ...`` on stderr (even with ``--quiet``); the message is plain text, never markup."""
        from rich.text import Text

        from convtool.render.fmt import plurals

        self.err.print(Text.assemble(("warning:", "yellow"), " ", plurals(message)), highlight=False, soft_wrap=True)

    def print(self, *items: RenderableType | str | None) -> None:
        """Print renderables unless ``--quiet`` (``None`` items are skipped); a table wider
        than the console (a very narrow terminal) is printed at its own width, never cut."""
        if self.quiet:
            return
        for item in items:
            if item is None:
                continue
            if isinstance(item, str):
                self.out.print(item, highlight=False, markup=False, soft_wrap=False)
                continue
            needed = self.out.measure(item, options=self.out.options.update_width(10_000)).minimum
            self.out.print(item, width=max(self.width, needed) if needed > self.width else None)

    def run(self, work: Callable[[Any], T]) -> T:
        """``work(progress)``, with a progress bar on a terminal (``progress=None`` otherwise)."""
        if self.quiet or not self.err.is_terminal:
            return work(None)
        return with_progress(work, self.err)


def with_progress(work: Callable[[Any], T], console: Console) -> T:
    """Run ``work(progress)`` with a transient rich progress bar (elapsed, ETA) on ``console``."""
    from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn,
                               TimeRemainingColumn)

    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("elapsed"),
                  TimeElapsedColumn(), TextColumn("left"), TimeRemainingColumn(), console=console,
                  transient=True) as bar:
        tasks: dict[str, Any] = {}

        def update(stage: str, done: int, total: int) -> None:
            key, _, detail = stage.partition(DETAIL)
            description = STAGES.get(key, key) + (f" ({detail})" if detail else "")
            if key not in tasks:
                tasks[key] = bar.add_task(description, total=total)
            bar.update(tasks[key], completed=done, total=total, description=description)

        return work(update)
