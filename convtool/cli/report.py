"""``convtool report``: measure one model, or an original against its converted model, and gate.

Options in, :func:`convtool.reporting.build_report`, tables out. Exit codes: 0 all gates passed
(or none given), 1 a gate failed (each failed gate is printed), 2 bad input (``error: ...``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console

from convtool.cli.common import fail, measure_and_write
from convtool.errors import ConvToolError, GateFailure, OptionError

_MEASURE = "Measurement"
_DATA = "Inputs and shapes"
_OUT = "Output"
_GATES = "CI gates (need MODEL and CONVERTED; any failure exits 1)"


def report(
    model: Annotated[Path, typer.Argument(help="ONNX model (the original, when comparing).", show_default=False)],
    converted: Annotated[
        Optional[Path],
        typer.Argument(help="Converted model to compare against MODEL.", show_default=False),
    ] = None,
    input_shape: Annotated[
        Optional[list[str]],
        typer.Option(
            "--input-shape",
            help="Fix a symbolic input: NAME=1,3,224,224 (repeatable). A symbolic first dim defaults to 1.",
            rich_help_panel=_DATA,
        ),
    ] = None,
    inputs: Annotated[
        Optional[Path],
        typer.Option(
            "--inputs",
            help="An .npz with one array per model input (samples on axis 0) and optional 'labels' for top-1 accuracy. "
            "Default: seeded random inputs.",
            rich_help_panel=_DATA,
        ),
    ] = None,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the random inputs.", rich_help_panel=_DATA)] = 0,
    runs: Annotated[
        int, typer.Option("--runs", help="Timed runs per model (interleaved A B B A ...).", rich_help_panel=_MEASURE)
    ] = 100,
    warmup: Annotated[
        int, typer.Option("--warmup", help="Untimed runs per model before timing.", rich_help_panel=_MEASURE)
    ] = 10,
    threads: Annotated[
        int,
        typer.Option(
            "--threads", help="onnxruntime intra-op threads (1 is the most reproducible).", rich_help_panel=_MEASURE
        ),
    ] = 1,
    opt_level: Annotated[
        str,
        typer.Option(
            "--opt-level", help="onnxruntime graph optimisation: disable, basic, extended, all.", rich_help_panel=_MEASURE
        ),
    ] = "all",
    spinning: Annotated[
        bool,
        typer.Option(
            "--spinning/--no-spinning",
            help="Let onnxruntime's intra-op threads spin. Off by default: spinning sessions in one process disturb each other.",
            rich_help_panel=_MEASURE,
        ),
    ] = False,
    no_latency: Annotated[
        bool, typer.Option("--no-latency", help="Skip timing (static analysis and drift only).", rich_help_panel=_MEASURE)
    ] = False,
    aa_check: Annotated[
        bool,
        typer.Option(
            "--aa-check", help="Also time MODEL against itself to show the noise floor.", rich_help_panel=_MEASURE
        ),
    ] = False,
    profile: Annotated[
        bool,
        typer.Option(
            "--profile", help="Per-node times from onnxruntime's profiler; flags converted layers that got slower.",
            rich_help_panel=_MEASURE,
        ),
    ] = False,
    json_path: Annotated[
        Optional[Path], typer.Option("--json", help="Write the machine-readable record here.", rich_help_panel=_OUT)
    ] = None,
    markdown_path: Annotated[
        Optional[Path],
        typer.Option("--markdown", help="Write the tables as GitHub-flavoured Markdown here.", rich_help_panel=_OUT),
    ] = None,
    quiet: Annotated[
        bool, typer.Option("--quiet", "-q", help="No tables and no progress bar; errors and failed gates only.", rich_help_panel=_OUT)
    ] = False,
    min_speedup: Annotated[
        Optional[float], typer.Option("--min-speedup", help="Fail unless median(MODEL) / median(CONVERTED) >= this.", rich_help_panel=_GATES)
    ] = None,
    max_drift: Annotated[
        Optional[float], typer.Option("--max-drift", help="Fail if the outputs' relative L2 error exceeds this.", rich_help_panel=_GATES)
    ] = None,
    min_top1_agreement: Annotated[
        Optional[float], typer.Option("--min-top1-agreement", help="Fail if the two models agree on top-1 for less than this fraction.", rich_help_panel=_GATES)
    ] = None,
    max_accuracy_drop: Annotated[
        Optional[float], typer.Option("--max-accuracy-drop", help="Fail if top-1 accuracy drops by more than this (fraction; needs --inputs with labels).", rich_help_panel=_GATES)
    ] = None,
    min_param_reduction: Annotated[
        Optional[float], typer.Option("--min-param-reduction", help="Fail unless 1 - params(CONVERTED)/params(MODEL) >= this.", rich_help_panel=_GATES)
    ] = None,
    min_mac_reduction: Annotated[
        Optional[float], typer.Option("--min-mac-reduction", help="Fail unless 1 - MACs(CONVERTED)/MACs(MODEL) >= this.", rich_help_panel=_GATES)
    ] = None,
) -> None:
    """Parameters, MACs/FLOPs, latency and output drift of a model, or of an original/converted pair, with CI gates."""
    from convtool.cli.params import input_shapes
    from convtool.render import report as render_report
    from convtool.report import ReportOptions

    paths = [model] if converted is None else [model, converted]
    err = Console(stderr=True)
    try:
        options = ReportOptions(
            input_shapes=input_shapes(input_shape),
            runs=runs,
            warmup=warmup,
            threads=threads,
            opt_level=opt_level,
            allow_spinning=spinning,
            latency=not no_latency,
            aa_check=aa_check,
            profile=profile,
            inputs=None if inputs is None else str(inputs),
            seed=seed,
            min_speedup=min_speedup,
            max_drift=max_drift,
            min_top1_agreement=min_top1_agreement,
            max_accuracy_drop=max_accuracy_drop,
            min_param_reduction=min_param_reduction,
            min_mac_reduction=min_mac_reduction,
        )
        for target in (json_path, markdown_path):  # fail before measuring, not after
            if target is not None and not target.resolve().parent.is_dir():
                raise OptionError(f"output folder {target.parent} does not exist")
        result = measure_and_write(paths, options, json_path, markdown_path, quiet, err)
    except ConvToolError as exc:
        fail(exc)

    if not quiet:
        Console().print(render_report.report_renderable(result))
    if not result.passed:
        for line in render_report.gate_failure_lines(result):
            err.print(line, style="red", highlight=False)
        failed = ", ".join(g.flag for g in result.failed_gates)
        fail(GateFailure(f"{len(result.failed_gates)} gate(s) failed: {failed}"))
