"""``convtool report``: measure one model, or an original against its converted model, and gate.

Flags in as typed option groups (:class:`ReportArgs`, groups from :mod:`convtool.cli.params`;
options that cannot apply are refused), paths checked
(:mod:`convtool.cli.outputs`), :func:`convtool.report.build_report` with a progress bar on a
terminal, the records written all or nothing, tables out.  Exit codes: 0 all gates passed (or
none given), 1 a gate failed (each failed gate is printed; the records are still written),
2 bad input (``error: ...``, nothing written).

``--int8-baseline --calibration DATA`` adds the INT8-quantized original (:class:`convtool.report.
Int8Baseline`); its group (:class:`Int8Flags`) is declared here, with the rules that refuse its flags.
"""

from __future__ import annotations

from dataclasses import dataclass
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

@params.group
class Int8Flags(params.Group):
    """``--int8-baseline`` and its data: each needs the other, and a converted model to compare."""

    int8_baseline: Int8Baseline = False
    int8_calibration: Int8Calibration = None

    @property
    def calibration(self) -> str | None:
        """The data the original is quantized on, when the baseline is asked for."""
        return str(self.int8_calibration) if self.int8_baseline and self.int8_calibration is not None else None

    def rules(self, paths: params.ReportPaths) -> tuple[params.Applies, ...]:
        return (
            params.Applies(("int8_baseline",), paths.converted is not None,
                           message="--int8-baseline compares CONVERTED with the INT8-quantized original; give MODEL "
                                   "and CONVERTED"),
            params.Applies(("int8_baseline",), self.int8_calibration is not None,
                           message="--int8-baseline needs --calibration DATA (the samples the original is quantized "
                                   "on)"),
            params.Applies(("int8_calibration",), bool(self.int8_baseline), "--int8-baseline"),
        )


@dataclass(frozen=True)
class ReportArgs(params.Command):
    """The groups of ``report``, in the order ``--help`` lists their flags."""

    paths: params.ReportPaths
    output: params.ReportOutput
    shapes: params.Shapes
    inputs: params.InputsFlags
    measure: params.MeasureFlags
    session: params.ReportSessionFlags
    gates: params.GateFlags
    int8: Int8Flags

    @property
    def runs_anything(self) -> bool:
        """Whether ``report`` creates onnxruntime sessions at all (timing, profiling, drift, accuracy)."""
        return (not self.measure.no_latency or self.measure.profile or self.paths.converted is not None
                or self.inputs.inputs is not None)

    def options(self):
        """Every flag -> one :class:`ReportOptions` (every value validated)."""
        from convtool.options import ReportOptions

        session, measure, gates = self.session.options(), self.measure, self.gates
        return ReportOptions(
            input_shapes=self.shapes.shapes(), threads=session.threads, opt_level=session.opt_level,
            providers=session.providers, runs=measure.runs, warmup=measure.warmup,
            allow_spinning=self.session.spinning, latency=not measure.no_latency, aa_check=measure.aa_check,
            profile=measure.profile, inputs=None if self.inputs.inputs is None else str(self.inputs.inputs),
            seed=self.inputs.seed, min_speedup=gates.min_speedup, max_drift=gates.max_drift,
            min_top1_agreement=gates.min_top1_agreement, max_accuracy_drop=gates.max_accuracy_drop,
            min_param_reduction=gates.min_param_reduction, min_mac_reduction=gates.min_mac_reduction,
            int8_calibration=self.int8.calibration)

    def rules(self) -> tuple[params.Applies, ...]:
        """The rules checked once the options are built (the INT8 ones are checked before)."""
        return (*self.measure.rules(), *self.inputs.rules(self.runs_anything),
                *self.session.rules(self.runs_anything, "anything to run (CONVERTED, timing, --profile or --inputs)"))


def run(ctx: typer.Context, args: ReportArgs) -> None:
    """The command body: typed groups in, :func:`convtool.report.build_report`, tables and gates out."""
    clock = Clock()
    from convtool.cli.outputs import Outputs
    from convtool.render import report as render_report
    from convtool.report import build_report

    try:
        params.check_rules(ctx, args.int8.rules(args.paths))
        options = args.options()
        params.check_rules(ctx, args.rules())
        files = Outputs()
        files.read("the model", args.paths.model)
        files.read("the converted model", args.paths.converted)
        files.read("the inputs", args.inputs.inputs)
        files.read("the calibration data", args.int8.int8_calibration)
        record_out = files.write("--json", args.output.json_path)
        markdown_out = files.write("--markdown", args.output.markdown_path)
        files.check()
        ui = UI(args.output.quiet, stdout_taken=files.to_stdout)
        with files.transaction():
            result = ui.run(lambda progress: build_report(args.paths.paths, options, progress=progress))
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


report = ReportArgs.command(
    run, name="report",
    doc="Parameters, MACs/FLOPs, latency and output drift of a model, or of an original/converted pair, with CI gates.")
