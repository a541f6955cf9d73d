"""What every command shares: the one-line error exit, progress bars, writing records."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import NoReturn

import typer
from rich.console import Console

from convtool.errors import ConvToolError


def fail(exc: ConvToolError) -> NoReturn:
    """Print one ``error:`` line on stderr and exit with the error's code."""
    typer.echo(f"error: {exc}", err=True)
    raise typer.Exit(exc.exit_code)


def write_json(data: dict, path: Path) -> None:
    from convtool.graph.io import write_text_atomic

    write_text_atomic(json.dumps(data, indent=2) + "\n", path)


def measure_and_write(paths, options, json_path: Path | None, markdown_path: Path | None, quiet: bool,
                      err: Console):
    """Build the report (with a progress bar unless ``quiet``) and write its JSON/Markdown."""
    from convtool.graph.io import write_text_atomic
    from convtool.render import report as render_report
    from convtool.report import build_report

    result = build_report(paths, options) if quiet else with_progress(
        lambda progress: build_report(paths, options, progress=progress), err)
    if json_path is not None:
        write_json(result.to_dict(), json_path)
    if markdown_path is not None:
        write_text_atomic(render_report.render_markdown(result), markdown_path)
    return result


def with_progress(work: Callable, console: Console):
    """Run ``work(progress)`` with a transient rich progress bar on stderr."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  TimeRemainingColumn(), console=console, transient=True) as bar:
        tasks: dict[str, int] = {}

        def update(stage: str, done: int, total: int) -> None:
            if stage not in tasks:
                tasks[stage] = bar.add_task(stage, total=total)
            bar.update(tasks[stage], completed=done, total=total)

        return work(update)
