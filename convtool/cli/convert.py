"""``convtool convert``: options in, library call, table out."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console

from convtool.cli.common import fail
from convtool.errors import ConvToolError

_RANK = "Rank policy"
_SELECT = "Layer selection"
_OUT = "Output"
_SHAPES = "Shapes"
_REPORT = "Report"
_CAL = "Calibration"
_SPEED = "Speed"


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
        str, typer.Option("--layout", help="Emission layout: multiplier (depthwise conv with channel multiplier r, then pointwise), repeat (input concatenated r times, multiplier-1 depthwise), branches (r depthwise->pointwise branches summed), pointwise_first, or auto (per layer: at rank 1 pointwise_first when cheaper in MACs at stride 1, else multiplier; branches at rank >= 2; with --latency-aware, the fastest measured).", rich_help_panel=_RANK)
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
    latency_aware: Annotated[
        bool, typer.Option("--latency-aware", help="Time each candidate layer against its replacement at its real input shape (onnxruntime, interleaved, spinning off) and convert only layers whose replacement is faster beyond noise; then time both whole models and keep the original if the result is slower.", rich_help_panel=_SPEED)
    ] = False,
    threads: Annotated[
        int, typer.Option("--threads", help="onnxruntime intra-op threads to measure with (use your deployment's).", rich_help_panel=_SPEED)
    ] = 1,
    opt_level: Annotated[
        str, typer.Option("--opt-level", help="onnxruntime graph optimisation level to measure with: disable, basic, extended, all.", rich_help_panel=_SPEED)
    ] = "all",
    cache_dir: Annotated[
        Optional[Path], typer.Option("--cache-dir", help="Where per-shape layer timings are cached (default: ~/.cache/convtool).", rich_help_panel=_SPEED)
    ] = None,
    no_cache: Annotated[
        bool, typer.Option("--no-cache", help="Measure every layer afresh; neither read nor write the timing cache.", rich_help_panel=_SPEED)
    ] = False,
    calibration: Annotated[
        Optional[Path], typer.Option("--calibration", help="Refit each converted layer's pointwise weights by least squares on this data: an .npz with one array per model input (samples on the first axis), or a folder of images or .npy samples.", rich_help_panel=_CAL)
    ] = None,
    max_drift: Annotated[
        Optional[float], typer.Option("--max-drift", help="Choose each layer's rank (search ranks or unconverted) to remove the most MACs while the whole model's drift stays within this budget: each layer's drift alone, then a greedy pass re-checking the whole model; at most 2 x layers x ranks model evaluations, each with the refit when --calibration is given (seeded random inputs, no refit, without it).", rich_help_panel=_CAL)
    ] = None,
    metric: Annotated[
        str, typer.Option("--metric", help="Drift for --max-drift: rel_l2 (worst output's relative L2; outputs with a channel axis are normalised per channel) or top1 (1 - top-1 agreement, for classifiers).", rich_help_panel=_CAL)
    ] = "rel_l2",
    search_ranks: Annotated[
        str, typer.Option("--search-ranks", help="Ranks --max-drift may choose from, comma-separated.", rich_help_panel=_CAL)
    ] = "1,2,4",
    calibration_samples: Annotated[
        int, typer.Option("--calibration-samples", help="Use at most this many calibration samples (seeded choice).", rich_help_panel=_CAL)
    ] = 512,
    holdout: Annotated[
        float, typer.Option("--holdout", help="Fraction of calibration samples held out to choose the regulariser and to reject refits that do not help.", rich_help_panel=_CAL)
    ] = 0.2,
    image_size: Annotated[
        Optional[str], typer.Option("--image-size", help="Image folders: resize to HEIGHT,WIDTH (default: the model input's static size).", rich_help_panel=_CAL)
    ] = None,
    image_mean: Annotated[
        str, typer.Option("--image-mean", help="Image folders: per-channel mean subtracted after scaling pixels to [0, 1] (one value or one per channel).", rich_help_panel=_CAL)
    ] = "0",
    image_std: Annotated[
        str, typer.Option("--image-std", help="Image folders: per-channel std divided by after the mean.", rich_help_panel=_CAL)
    ] = "1",
    image_layout: Annotated[
        str, typer.Option("--image-layout", help="Image folders: NCHW or NHWC.", rich_help_panel=_CAL)
    ] = "NCHW",
    channel_order: Annotated[
        str, typer.Option("--channel-order", help="Image folders: RGB, BGR or L (greyscale).", rich_help_panel=_CAL)
    ] = "RGB",
    report: Annotated[
        bool, typer.Option("--report", help="After writing, compare original and converted like 'convtool report': params, MACs/FLOPs, interleaved latency (--threads, --opt-level), output drift.", rich_help_panel=_REPORT)
    ] = False,
    report_runs: Annotated[
        int, typer.Option("--report-runs", help="Timed runs per model for --report.", rich_help_panel=_REPORT)
    ] = 100,
    report_json: Annotated[
        Optional[Path], typer.Option("--report-json", help="With --report: write the report record here (same keys as 'convtool report --json').", rich_help_panel=_REPORT)
    ] = None,
    report_markdown: Annotated[
        Optional[Path], typer.Option("--report-markdown", help="With --report: write the report as Markdown here.", rich_help_panel=_REPORT)
    ] = None,
    quiet: Annotated[
        bool, typer.Option("--quiet", "-q", help="Print only warnings and errors.", rich_help_panel=_OUT)
    ] = False,
) -> None:
    """Replace standard convolutions with depthwise + pointwise pairs (low-rank SVD per input channel)."""
    from convtool.api import convert_file
    from convtool.cli.common import write_json
    from convtool.cli.params import input_shapes, parse_numbers, parse_rank
    from convtool.errors import OptionError
    from convtool.options import CalibrationOptions, ConvertOptions, ImagePreprocess, LatencyOptions
    from convtool.render import convert as render
    from convtool.render import latency as tune_render
    from convtool.render.convert import summary_lines

    try:
        if max_drift is not None and (rank is not None or energy is not None):
            raise OptionError("--max-drift chooses the ranks itself; use --search-ranks instead of --rank/--energy")
        cal_options = None
        if calibration is not None or max_drift is not None:
            image = ImagePreprocess(
                size=parse_numbers(image_size, "--image-size", int), mean=parse_numbers(image_mean, "--image-mean"),
                std=parse_numbers(image_std, "--image-std"), layout=image_layout.upper(),  # type: ignore[arg-type]
                channel_order=channel_order.upper(),  # type: ignore[arg-type]
            )
            cal_options = CalibrationOptions(source=str(calibration) if calibration is not None else None,
                                             holdout=holdout, max_samples=calibration_samples, image=image)
        options = ConvertOptions(
            calibration=cal_options,
            max_drift=max_drift,
            metric=metric,  # type: ignore[arg-type]
            search_ranks=parse_numbers(search_ranks, "--search-ranks", int),
            rank=parse_rank(rank, energy),
            min_in_channels=min_in_channels,
            include=tuple(include or ()),
            exclude=tuple(exclude or ()),
            fold_batchnorm=not no_fold_bn,
            layout=layout,  # type: ignore[arg-type]
            input_shapes=input_shapes(input_shape),
            latency_aware=LatencyOptions(threads=threads, opt_level=opt_level,
                                         cache_dir=str(cache_dir) if cache_dir is not None else None,
                                         use_cache=not no_cache) if latency_aware else None,
        )
        if report and dry_run:
            raise OptionError("--report needs a written model; drop --dry-run")
        result = convert_file(model, output, options, dry_run=dry_run)
        record = result.record
        if json_path is not None:
            write_json(record.to_dict(), json_path)
    except ConvToolError as exc:
        fail(exc)

    err = Console(stderr=True)
    for warning in record.warnings:
        err.print(f"[yellow]warning:[/yellow] {warning}", highlight=False, soft_wrap=True)
    if not quiet:
        out = Console()
        out = Console(width=render.console_width(out.is_terminal, out.width))
        out.print(render.layer_table(record, title=f"convtool convert {model.name}"))
        out.print(render.totals_line(record))
        for line in summary_lines(record):
            out.print(line, highlight=False)
        latency_table = tune_render.latency_table(record)
        if latency_table is not None:
            out.print(latency_table)
        latency_line = tune_render.latency_line(record)
        if latency_line is not None:
            out.print(latency_line)
        out.print("dry run: nothing written" if dry_run else f"wrote {record.output}", highlight=False)
    if report:
        _report_after_convert(model, record, input_shape, threads, opt_level, report_runs, report_json,
                              report_markdown, quiet, dry_run)


def _report_after_convert(model: Path, record, input_shape, threads: int, opt_level: str, runs: int,
                          json_path: Path | None, markdown_path: Path | None, quiet: bool, dry_run: bool) -> None:
    """``convert --report``: the 'convtool report' comparison of the input and the file just written."""
    from convtool.cli.common import measure_and_write
    from convtool.cli.params import input_shapes
    from convtool.errors import OptionError
    from convtool.render import report as render_report
    from convtool.report import ReportOptions

    try:
        if dry_run or record.output is None:
            raise OptionError("--report needs a written model; drop --dry-run")
        options = ReportOptions(input_shapes=input_shapes(input_shape), runs=runs,
                                threads=threads, opt_level=opt_level)
        result = measure_and_write([model, Path(record.output)], options, json_path, markdown_path, quiet,
                                   Console(stderr=True))
    except ConvToolError as exc:
        fail(exc)
    if not quiet:
        Console().print(render_report.report_renderable(result))
