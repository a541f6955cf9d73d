"""``convtool convert``: flags in, one library call (and ``--report``'s), tables out.

Order, so that a refused or failed run writes nothing:

1. flag values, read as typed option groups (:class:`ConvertArgs`, groups from
   :mod:`convtool.cli.params`) -> option objects (every value validated), then the groups'
   rules: an option that cannot apply is refused;
2. every input and output path is checked (:mod:`convtool.cli.outputs`): no output replaces
   an input or another output, every output folder exists and is writable;
3. the conversion (:func:`convtool.api.convert_file`) and, with ``--report``, the comparison
   (:func:`convtool.report.build_report`; with ``--calibration`` its drift is measured on the
   calibration samples no fit used, else on seeded random inputs) run inside one transaction
   with the record writes:
   if any step fails, every file this run wrote is removed and replaced files are restored.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import typer

from convtool.cli import params
from convtool.cli.common import UI, Clock, closing_line, fail
from convtool.errors import ConvToolError


@dataclass(frozen=True)
class ConvertArgs(params.Command):
    """The groups of ``convert``, in the order ``--help`` lists their flags."""

    source: params.ModelInput
    output: params.ConvertOutput
    rank: params.RankFlags
    selection: params.ConvertSelection
    shapes: params.Shapes
    calibration: params.CalibrationFlags
    images: params.ImageFolder
    budget: params.BudgetFlags
    speed: params.SpeedFlags
    cache: params.CacheFlags
    session: params.SessionFlags
    report: params.ReportAfterFlags
    finetune: params.FinetuneFlags
    quantize: params.QuantizeFlags

    def options(self):
        """Every flag -> one :class:`ConvertOptions` (every value validated)."""
        from convtool.options import ConvertOptions

        rank = self.rank.policy()
        shapes = self.shapes.shapes()
        timing = self.session.timing(self.cache)  # validated even when nothing is timed
        return ConvertOptions(
            rank=rank,
            min_in_channels=self.selection.min_in_channels,
            include=self.selection.includes,
            exclude=self.selection.excludes,
            fold_batchnorm=not self.selection.no_fold_bn,
            layout=self.rank.layout,  # type: ignore[arg-type]
            input_shapes=shapes,
            latency_aware=timing if self.speed.latency_aware else None,
            timing=timing if self.budget.searching else None,
            calibration=self.calibration.options(self.images, search=self.budget.searching),
            max_drift=self.budget.max_drift,
            metric=self.budget.metric,  # type: ignore[arg-type]
            objective=self.budget.objective,  # type: ignore[arg-type]
            search_ranks=self.budget.ranks(),
            finetune=self.finetune.options(),
            quantize=self.quantize.options(),
        )

    def rules(self) -> tuple[params.Applies, ...]:
        """Every "applies only with ..." rule of ``convert``, in the order they are checked."""
        timed = self.speed.latency_aware or self.budget.searching
        return (*self.rank.rules(self.budget), *self.report.written_rules(self.output), *self.output.rules(),
                *self.report.rules(), *self.budget.rules(),
                *self.session.rules(timed or self.report.report,
                                    "--latency-aware, --max-drift or --report (nothing is timed)"),
                *self.cache.rules(timed, "--latency-aware or --max-drift (no layer is timed)"),
                *self.calibration.rules(), *self.finetune.rules(self.calibration),
                *self.quantize.rules(self.calibration), *self.images.rules(self.calibration))


def run(ctx: typer.Context, args: ConvertArgs, clock: Clock | None = None) -> None:
    """The command body: typed groups in, one library call (and ``--report``'s), tables out."""
    from convtool.api import convert_file, default_output
    from convtool.cli.outputs import Outputs

    clock = clock or Clock()
    model: Path = args.source.model
    out = args.output
    try:
        options = args.options()
        report_options = args.report.options(args.session, args.shapes)
        params.check_rules(ctx, args.rules())
        files = Outputs()
        files.read("the input model", model)
        files.read("the calibration data", args.calibration.calibration)
        target = None if out.dry_run else (out.output or default_output(model))
        files.write("--output" if out.output else "the converted model (default -o)", target,
                    stdout=False, sidecars=(".data",))
        record_out = files.write("--json", out.json_path)
        report_json = files.write("--report-json", args.report.report_json)
        report_markdown = files.write("--report-markdown", args.report.report_markdown)
        files.check()
        ui = UI(out.quiet, stdout_taken=files.to_stdout)
        with files.transaction():
            result = ui.run(lambda progress: convert_file(model, target, options, dry_run=out.dry_run,
                                                          progress=progress))
            _show_conversion(ui, result.record, model)
            measured = None
            if report_options is not None:
                from convtool.report import build_report

                # drift on the calibration samples no fit used (seeded random inputs without data)
                measured = ui.run(lambda progress: build_report([model, Path(result.record.output or "")],
                                                                report_options, progress=progress,
                                                                data=result.held_out))
            files.write_json(record_out, result.record.to_dict())
            if measured is not None:
                from convtool.render import report as render_report

                files.write_json(report_json, measured.to_dict())
                files.write_text(report_markdown, render_report.render_markdown(measured))
    except ConvToolError as exc:
        fail(exc)
    if measured is not None:
        from convtool.render import report as render_report

        ui.print(render_report.report_renderable(measured, ui.width))
    ui.print(closing_line(files.written(), clock, out.dry_run))


convert = ConvertArgs.command(
    run, name="convert",
    doc="Replace standard convolutions with depthwise + pointwise pairs (low-rank SVD per input channel).")


def _show_conversion(ui: UI, record, model: Path) -> None:
    from convtool.render import convert as render
    from convtool.render import latency as render_latency

    for warning in record.warnings:
        ui.warn(warning)
    ui.print(render.layer_table(record, title=f"convtool convert {model.name}", width=ui.width),
             render.legend(record), render.totals_line(record), *render.summary_lines(record),
             render_latency.latency_table(record, width=ui.width), render_latency.latency_line(record))
