"""The one CLI test helper: run ``convtool`` in-process, as a user would, with a pinned console.

``invoke(*args)`` stringifies its arguments (paths welcome) and runs the typer app through
``CliRunner`` with ``COLUMNS`` pinned (``width``, default 200: tables are matched whole) and
``NO_COLOR``; ``terminal=True`` makes rich treat stderr as a terminal (progress bars), ``env``
adds variables.  Assert the exit code with the output as the failure message:
``assert res.exit_code == 0, res.output``.
"""

from __future__ import annotations

from collections.abc import Mapping

from typer.testing import CliRunner, Result  # typer vendors click: no click import

from convtool.cli.app import app

__all__ = ["invoke"]


def invoke(*args: object, width: int = 200, terminal: bool = False, env: Mapping[str, str] | None = None) -> Result:
    variables = {"COLUMNS": str(width), "NO_COLOR": "1", **(env or {})}
    if terminal:
        variables["TTY_COMPATIBLE"] = "1"
    return CliRunner(env=variables).invoke(app, [str(a) for a in args])
