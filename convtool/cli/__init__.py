"""The ``convtool`` command line: typer app, one module per command.

The CLI never computes: each command parses options, calls the library, renders the
result and maps :class:`convtool.errors.ConvToolError` to ``error: ...`` on stderr with
its exit code.
"""

from __future__ import annotations

from convtool.cli.app import app, main

__all__ = ["app", "main"]
