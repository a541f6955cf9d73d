"""``convtool report``: measure one model, or an original against its converted model, and gate.

Flags in (:mod:`convtool.cli.params`; options that cannot apply are refused), paths checked
(:mod:`convtool.cli.outputs`), :func:`convtool.report.build_report` with a progress bar on a
terminal, the records written all or nothing, tables out.  Exit codes: 0 all gates passed (or
none given), 1 a gate failed (each failed gate is printed; the records are still written),
2 bad input (``error: ...``, nothing written).

``--int8-baseline --calibration DATA`` adds the INT8-quantized original (:class:`convtool.report.
Int8Baseline`); its flags are declared here, with the rules that refuse them alone.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from convtool.cli import params
from convtool.cli.common import UI, Clock, closing_line, fail
from convtool.errors import ConvToolError, GateFailure

INT8 = "INT8 baseline (--int8-baseline; needs CONVERTED and --calibration)"

Int8Baseline = Annotated[bool, typer.Option(
    "--int8-baseline", rich_help_panel=INT8,
    help="Add the INT8-quantized original as a column: MODEL quantized with onnxruntime's static INT8 (as "
         "'convert --quantize int8' quantizes) on --calibration, timed against MODEL and against CONVERTED like the "
         "pair, its drift, accuracy and size; the verdict says which is faster at what drift.")]
Int8Calibration = Annotated[Optional[Path], typer.Option(
    "--calibration", metavar="DATA", rich_help_panel=INT8,
    help="Samples to quantize MODEL on (--int8-baseline): an .npz with one array per model input, or a folder "
         "like --inputs; use other samples than --inputs.")]

#: ``--int8-baseline`` and its data: each needs the other, and a converted model to compare.
INT8_RULES: tuple[params.Applies, ...] = (
    params.Applies(("int8_baseline",), lambda p: p["converted"] is not None,
                   message="--int8-baseline compares CONVERTED with the INT8-quantized original; give MODEL and "
                           "CONVERTED"),
    params.Applies(("int8_baseline",), lambda p: p["int8_calibration"] is not None,
                   message="--int8-baseline needs --calibration DATA (the samples the original is quantized on)"),
    params.Applies(("int8_calibration",), lambda p: p["int8_baseline"], "--int8-baseline"),
)


def report(
    ctx: typer.Context,
    model: params.ReportModel,
    converted: params.Converted = None,
    json_path: params.Json = None,
    markdown_path: params.Markdown = None,
    quiet: params.Quiet = False,
    input_shape: params.InputShape = None,
    inputs: params.Inputs = None,
    seed: params.Seed = 0,
    runs: params.Runs = 100,
    warmup: params.Warmup = 10,
    no_latency: params.NoLatency = False,
    aa_check: params.AACheck = False,
    profile: params.Profile = False,
    threads: params.Threads = 1,
    opt_level: params.OptLevel = "all",
    provider: params.Provider = None,
    spinning: params.Spinning = False,
    min_speedup: params.MinSpeedup = None,
    max_drift: params.GateMaxDrift = None,
    min_top1_agreement: params.MinTop1Agreement = None,
    max_accuracy_drop: params.MaxAccuracyDrop = None,
    min_param_reduction: params.MinParamReduction = None,
    min_mac_reduction: params.MinMacReduction = None,
    int8_baseline: Int8Baseline = False,
    int8_calibration: Int8Calibration = None,
) -> None:
    """Parameters, MACs/FLOPs, latency and output drift of a model, or of an original/converted pair, with CI gates."""
    run(ctx, Clock())


def run(ctx: typer.Context, clock: Clock) -> None:
    """The command body (``ctx.params`` holds every flag's value by parameter name)."""
    from convtool.cli.outputs import Outputs
    from convtool.render import report as render_report
    from convtool.report import build_report

    p = ctx.params
    paths = [p["model"]] if p["converted"] is None else [p["model"], p["converted"]]
    try:
        params.check_rules(ctx, INT8_RULES)
        int8 = str(p["int8_calibration"]) if p["int8_baseline"] and p["int8_calibration"] is not None else None
        options = params.report_options(p, int8_calibration=int8)
        params.check_rules(ctx, params.REPORT_RULES)
        files = Outputs()
        files.read("the model", p["model"])
        files.read("the converted model", p["converted"])
        files.read("the inputs", p["inputs"])
        files.read("the calibration data", p["int8_calibration"])
        record_out = files.write("--json", p["json_path"])
        markdown_out = files.write("--markdown", p["markdown_path"])
        files.check()
        ui = UI(p["quiet"], stdout_taken=files.to_stdout)
        with files.transaction():
            result = ui.run(lambda progress: build_report(paths, options, progress=progress))
            files.write_json(record_out, result.to_dict())
            files.write_text(markdown_out, render_report.render_markdown(result))
    except ConvToolError as exc:
        fail(exc)

    ui.print(render_report.report_renderable(result, ui.width), closing_line(files.written(), clock))
    if not result.passed:
        for line in render_report.gate_failure_lines(result):
            ui.err.print(line, style="red", highlight=False, markup=False)
        failed = ", ".join(g.flag for g in result.failed_gates)
        fail(GateFailure(f"{len(result.failed_gates)} gate(s) failed: {failed}"))
