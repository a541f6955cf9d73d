"""The typer application and the shared error handling of every command."""

from __future__ import annotations

import sys
from typing import Annotated

import typer
from typer.core import TyperGroup

try:  # typer >= 0.20 vendors click; older releases depend on it
    from typer._click.exceptions import ClickException
except ImportError:  # pragma: no cover - depends on the installed typer
    from click.exceptions import ClickException

from convtool import __version__
from convtool.cli import convert as convert_command
from convtool.cli import report as report_command
from convtool.cli import sweep as sweep_command
from convtool.errors import ConvToolError


class _Group(TyperGroup):
    """Turns click's multi-line usage errors into the one-line ``error: ...`` contract."""

    def main(self, *args, **kwargs):  # type: ignore[override]
        kwargs["standalone_mode"] = False
        try:
            rv = super().main(*args, **kwargs)
        except ClickException as exc:
            ctx = getattr(exc, "ctx", None)
            hint = f" (see '{ctx.command_path} --help')" if ctx is not None else ""
            typer.echo(f"error: {exc.format_message()}{hint}", err=True)
            sys.exit(exc.exit_code)
        except typer.Abort:
            typer.echo("error: aborted", err=True)
            sys.exit(130)
        except ConvToolError as exc:
            typer.echo(f"error: {exc}", err=True)
            sys.exit(exc.exit_code)
        except Exception as exc:  # noqa: BLE001 - the last line of defence: never a traceback
            first = (str(exc).strip().splitlines() or [""])[0]
            typer.echo(f"error: unexpected failure ({type(exc).__name__}: {first}); please report it", err=True)
            sys.exit(3)
        sys.exit(rv if isinstance(rv, int) else 0)


app = typer.Typer(
    cls=_Group,
    name="convtool",
    help="Turn standard ONNX convolutions into depthwise-separable ones, and measure what it buys.",
    context_settings={"help_option_names": ["-h", "--help"]},
    add_completion=True,  # --install-completion / --show-completion
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"convtool {__version__}")
        raise typer.Exit(0)


@app.callback(invoke_without_command=True)
def _root(
    ctx: typer.Context,
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version, is_eager=True, help="Show the version and exit."),
    ] = False,
) -> None:
    """Turn standard ONNX convolutions into depthwise-separable ones, and measure what it buys."""
    if ctx.invoked_subcommand is None:  # bare `convtool`: the help, and success
        typer.echo(ctx.get_help(), nl=False)
        raise typer.Exit(0)


app.command("convert")(convert_command.convert)
app.command("report")(report_command.report)
app.command("sweep")(sweep_command.sweep)


def main() -> None:
    """Console-script entry point."""
    app()
