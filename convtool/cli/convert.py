"""``convtool convert``: flags in, one library call (and ``--report``'s), tables out.

Order, so that a refused or failed run writes nothing:

1. flag values -> option objects (:mod:`convtool.cli.params`; every value validated), then the
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

from pathlib import Path

import typer

from convtool.cli import params
from convtool.cli.common import UI, Clock, closing_line, fail
from convtool.errors import ConvToolError


def convert(
    ctx: typer.Context,
    model: params.ModelArg,
    output: params.Output = None,
    dry_run: params.DryRun = False,
    json_path: params.Json = None,
    quiet: params.Quiet = False,
    rank: params.Rank = "1",
    energy: params.Energy = None,
    layout: params.Layout = "auto",
    min_in_channels: params.MinInChannels = 8,
    include: params.Include = None,
    exclude: params.Exclude = None,
    no_fold_bn: params.NoFoldBn = False,
    input_shape: params.InputShape = None,
    calibration: params.Calibration = None,
    calibration_samples: params.CalibrationSamples = 512,
    holdout: params.Holdout = 0.2,
    refit: params.Refit = "data-aware",
    image_size: params.ImageSize = None,
    image_mean: params.ImageMean = "0",
    image_std: params.ImageStd = "1",
    image_layout: params.ImageLayout = "NCHW",
    channel_order: params.ChannelOrder = "RGB",
    max_drift: params.MaxDrift = None,
    metric: params.Metric = "rel_l2",
    search_ranks: params.SearchRanks = "1,2,4",
    objective: params.Objective = "latency",
    latency_aware: params.LatencyAware = False,
    cache_dir: params.CacheDir = None,
    no_cache: params.NoCache = False,
    threads: params.Threads = 1,
    opt_level: params.OptLevel = "all",
    provider: params.Provider = None,
    report: params.ReportAfter = False,
    report_runs: params.ReportRuns = 100,
    report_json: params.ReportJson = None,
    report_markdown: params.ReportMarkdown = None,
    finetune: params.Finetune = False,
    finetune_steps: params.FinetuneSteps = 600,
    finetune_seconds: params.FinetuneSeconds = 180.0,
    quantize: params.Quantize = None,
) -> None:
    """Replace standard convolutions with depthwise + pointwise pairs (low-rank SVD per input channel)."""
    run(ctx, Clock())


def run(ctx: typer.Context, clock: Clock) -> None:
    """The command body (``ctx.params`` holds every flag's value by parameter name)."""
    from convtool.api import convert_file, default_output
    from convtool.cli.outputs import Outputs

    p = ctx.params
    model: Path = p["model"]
    try:
        options = params.convert_options(p)
        report_options = params.report_options(p, runs=p["report_runs"]) if p["report"] else None
        params.check_rules(ctx, params.CONVERT_RULES)
        files = Outputs()
        files.read("the input model", model)
        files.read("the calibration data", p["calibration"])
        target = None if p["dry_run"] else (p["output"] or default_output(model))
        files.write("--output" if p["output"] else "the converted model (default -o)", target,
                    stdout=False, sidecars=(".data",))
        record_out = files.write("--json", p["json_path"])
        report_json = files.write("--report-json", p["report_json"])
        report_markdown = files.write("--report-markdown", p["report_markdown"])
        files.check()
        ui = UI(p["quiet"], stdout_taken=files.to_stdout)
        with files.transaction():
            result = ui.run(lambda progress: convert_file(model, target, options, dry_run=p["dry_run"],
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
    ui.print(closing_line(files.written(), clock, p["dry_run"]))


def _show_conversion(ui: UI, record, model: Path) -> None:
    from convtool.render import convert as render
    from convtool.render import latency as render_latency

    for warning in record.warnings:
        ui.warn(warning)
    ui.print(render.layer_table(record, title=f"convtool convert {model.name}", width=ui.width),
             render.legend(record), render.totals_line(record), *render.summary_lines(record),
             render_latency.latency_table(record, width=ui.width), render_latency.latency_line(record))
