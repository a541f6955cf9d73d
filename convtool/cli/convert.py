"""``convtool convert``: options in, library call, table out."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console

from convtool.cli.app import app, fail
from convtool.errors import ConvToolError

_RANK = "Rank policy"
_SELECT = "Layer selection"
_OUT = "Output"
_SHAPES = "Shapes"


@app.command("convert")
def convert(
    model: Annotated[Path, typer.Argument(help="ONNX model to convert.", show_default=False)],
    output: Annotated[
        Optional[Path], typer.Option("--output", "-o", help="Where to write the converted model [default: <stem>.dws.onnx beside the input].", rich_help_panel=_OUT)
    ] = None,
    rank: Annotated[
        Optional[str], typer.Option("--rank", "-r", help="Rank per layer: a positive integer, or 'full' (exact, for checking) [default: 1].", rich_help_panel=_RANK)
    ] = None,
    energy: Annotated[
        Optional[float], typer.Option("--energy", help="Per layer, the smallest rank keeping this fraction of spectral energy (0-1].", rich_help_panel=_RANK)
    ] = None,
    layout: Annotated[
        str, typer.Option("--layout", help="Emission layout: multiplier (depthwise then pointwise), pointwise_first, or auto (per layer, by MACs).", rich_help_panel=_RANK)
    ] = "multiplier",
    min_in_channels: Annotated[
        int, typer.Option("--min-in-channels", help="Skip convs with fewer input channels (stems are accuracy-sensitive and save little).", rich_help_panel=_SELECT)
    ] = 8,
    include: Annotated[
        Optional[list[str]], typer.Option("--include", help="Only convert nodes whose name matches this regex (repeatable).", rich_help_panel=_SELECT)
    ] = None,
    exclude: Annotated[
        Optional[list[str]], typer.Option("--exclude", help="Never convert nodes whose name matches this regex (repeatable).", rich_help_panel=_SELECT)
    ] = None,
    no_fold_bn: Annotated[
        bool, typer.Option("--no-fold-bn", help="Do not fold a following BatchNormalization into the conv.", rich_help_panel=_SELECT)
    ] = False,
    input_shape: Annotated[
        Optional[list[str]], typer.Option("--input-shape", help="Fix a symbolic input for MAC counts: NAME=1,3,224,224 (repeatable).", rich_help_panel=_SHAPES)
    ] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Plan and print, write nothing.", rich_help_panel=_OUT)
    ] = False,
    json_path: Annotated[
        Optional[Path], typer.Option("--json", help="Write the machine-readable record here.", rich_help_panel=_OUT)
    ] = None,
    quiet: Annotated[
        bool, typer.Option("--quiet", "-q", help="Print only warnings and errors.", rich_help_panel=_OUT)
    ] = False,
) -> None:
    """Replace standard convolutions with depthwise + pointwise pairs (low-rank SVD per input channel)."""
    from convtool import render
    from convtool.analysis.shapes import parse_input_shapes
    from convtool.api import convert_file
    from convtool.graph.io import write_text_atomic
    from convtool.options import ConvertOptions, RankPolicy

    try:
        options = ConvertOptions(
            rank=RankPolicy.parse(rank, energy),
            min_in_channels=min_in_channels,
            include=tuple(include or ()),
            exclude=tuple(exclude or ()),
            fold_batchnorm=not no_fold_bn,
            layout=layout,  # type: ignore[arg-type]
            input_shapes=tuple(parse_input_shapes(input_shape or []).items()),
        )
        result = convert_file(model, output, options, dry_run=dry_run)
        record = result.record
        if json_path is not None:
            write_text_atomic(json.dumps(record.to_json(), indent=2) + "\n", json_path)
    except ConvToolError as exc:
        fail(exc)

    err = Console(stderr=True)
    for warning in record.warnings:
        err.print(f"[yellow]warning:[/yellow] {warning}", highlight=False)
    if not quiet:
        out = Console()
        out.print(render.layer_table(record, title=f"convtool convert {model.name}"))
        out.print(render.totals_line(record))
        out.print(f"dry run: nothing written" if dry_run else f"wrote {record.output}", highlight=False)
