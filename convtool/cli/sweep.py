"""``convtool sweep``: flags in, one library call (:func:`convtool.api.sweep_file`), the table
out, and ``DIR/sweep.json``, ``DIR/sweep.md`` and ``DIR/sweep.svg`` written (rendered by
:mod:`convtool.render.sweep`); with ``--save-models`` each point's model too.

``--int8-baseline`` (a flag, not implied by ``--calibration``: quantizing the original and
timing every point against it costs a quantization and a pair timing per point) adds the
INT8-quantized original as a reference point; ``--quantize int8`` builds every point quantized
and implies it.  Both need ``--calibration`` (:data:`INT8_RULES`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from convtool.cli import params
from convtool.cli.common import UI, Clock, closing_line, fail
from convtool.errors import ConvToolError, OptionError

SWEEP = "Sweep"

SweepModel = Annotated[Path, typer.Argument(help="ONNX model to sweep.", show_default=False, metavar="MODEL")]
SweepCalibration = Annotated[Optional[Path], typer.Option(
    "--calibration", metavar="DATA", rich_help_panel=params.CALIBRATION, show_default="seeded random inputs, no refit",
    help="Calibration data for the refits and the search's drift (held-out split): an .npz with one array per model "
         "input, or a folder of images or .npy samples.")]
EvalInputs = Annotated[Path, typer.Option(
    "--inputs", metavar="DATA", rich_help_panel=SWEEP, show_default=False,
    help="Evaluation data the search never sees, measured at every budget: an .npz with one array per model input "
         "and, for top-1 accuracy, a 'labels' array (or a folder like --calibration).")]
Budgets = Annotated[str, typer.Option(
    "--budgets", metavar="D,D,...", rich_help_panel=SWEEP,
    help="The drift budgets (what 'convert --max-drift' takes), one point each: distinct numbers > 0.")]
OutDir = Annotated[Path, typer.Option(
    "--out", metavar="DIR", rich_help_panel=SWEEP, show_default=False,
    help="Folder for sweep.json, sweep.md (with Mermaid charts) and sweep.svg (created if needed).")]
SaveModels = Annotated[bool, typer.Option(
    "--save-models", rich_help_panel=SWEEP, help="Also write each point's model into DIR as <stem>.drift-<D>.onnx.")]
SweepRuns = Annotated[int, typer.Option(
    "--runs", metavar="N", rich_help_panel=SWEEP,
    help="Paired runs at the first look: each point's model is timed against the original as "
         "'convtool report' times a pair, until its speedup's interval decides (at most 8x this or 30 s).")]
SweepInt8Baseline = Annotated[bool, typer.Option(
    "--int8-baseline", rich_help_panel=params.QUANTIZE_PANEL,
    help="Add the INT8-quantized original (onnxruntime's static INT8 on the --calibration fit samples) as a "
         "reference point in the table, the picture and sweep.json, and time every point against it too "
         "(always on with --quantize int8).")]
SweepQuantize = Annotated[Optional[str], typer.Option(
    "--quantize", metavar="int8", rich_help_panel=params.QUANTIZE_PANEL,
    help="Every point as 'convert --max-drift B --quantize int8' builds it: equalized and quantized, its drift "
         "measured on the quantized model, timed against the INT8-quantized original (kept when the plan is not "
         "faster than it).")]
SweepLayout = Annotated[str, typer.Option(
    "--layout", metavar="NAME", rich_help_panel=params.RANK,
    help="Emission layout (see 'convtool convert --help'); auto: under --objective latency, the fastest measured.")]


def sweep(
    ctx: typer.Context,
    model: SweepModel,
    inputs: EvalInputs,
    out: OutDir,
    budgets: Budgets = "0.005,0.01,0.02,0.05,0.1",
    save_models: SaveModels = False,
    quiet: params.Quiet = False,
    objective: params.Objective = "latency",
    metric: params.Metric = "rel_l2",
    search_ranks: params.SearchRanks = "1,2,4",
    layout: SweepLayout = "auto",
    min_in_channels: params.MinInChannels = 8,
    include: params.Include = None,
    exclude: params.Exclude = None,
    input_shape: params.InputShape = None,
    calibration: SweepCalibration = None,
    calibration_samples: params.CalibrationSamples = 512,
    holdout: params.Holdout = 0.2,
    refit: params.Refit = "data-aware",
    finetune: params.Finetune = False,
    finetune_steps: params.FinetuneSteps = 600,
    finetune_seconds: params.FinetuneSeconds = 180.0,
    image_size: params.ImageSize = None,
    image_mean: params.ImageMean = "0",
    image_std: params.ImageStd = "1",
    image_layout: params.ImageLayout = "NCHW",
    channel_order: params.ChannelOrder = "RGB",
    threads: params.Threads = 1,
    opt_level: params.OptLevel = "all",
    provider: params.Provider = None,
    cache_dir: params.CacheDir = None,
    no_cache: params.NoCache = False,
    runs: SweepRuns = 50,
    int8_baseline: SweepInt8Baseline = False,
    quantize: SweepQuantize = None,
) -> None:
    """The trade-off curve: one search over the calibration data, one model per drift budget, each measured on
    held-out evaluation data (drift, agreement or accuracy, MACs, params, latency); the table, sweep.json,
    sweep.md and a picture (sweep.svg) with the Pareto front, to pick a budget from."""
    clock = Clock()
    from convtool.api import sweep_file
    from convtool.cli.outputs import Outputs
    from convtool.options import ConvertOptions, LatencyOptions, SweepOptions
    from convtool.render import sweep as render

    p = ctx.params
    try:
        params.check_rules(ctx, params.SWEEP_RULES)
        params.check_rules(ctx, INT8_RULES)
        options = ConvertOptions(
            calibration=params.calibration_options({**p, "max_drift": 0.0}), objective=objective,  # type: ignore[arg-type]
            metric=metric,  # type: ignore[arg-type]
            search_ranks=params.parse_numbers(search_ranks, "--search-ranks", int),  # type: ignore[arg-type]
            layout=layout,  # type: ignore[arg-type]
            min_in_channels=min_in_channels, include=tuple(include or ()), exclude=tuple(exclude or ()),
            input_shapes=params.input_shapes(input_shape), finetune=params.finetune_options(p),
            quantize=params.quantize_options(p),
            timing=LatencyOptions(threads=threads, opt_level=opt_level,  # type: ignore[arg-type]
                                  cache_dir=str(cache_dir) if cache_dir is not None else None, use_cache=not no_cache,
                                  providers=params.providers(provider)))
        sweep_options = SweepOptions(budgets=params.parse_budgets(budgets), runs=runs, save_models=save_models,
                                     int8_baseline=int8_baseline or quantize is not None)
        if calibration is not None and _same_path(calibration, inputs):
            raise OptionError(f"--inputs and --calibration both name {inputs}: the evaluation data must be samples "
                              "the search never sees; pass held-out data to --inputs")
        files = Outputs()
        files.read("the input model", model)
        files.read("the calibration data", calibration)
        files.read("the evaluation data (--inputs)", inputs)
        files.folder("--out", out)  # created once the sweep has succeeded (nothing is left on failure)
        json_out = files.write("--out", out / "sweep.json", stdout=False)
        md_out = files.write("--out", out / "sweep.md", stdout=False)
        svg_out = files.write("--out", out / "sweep.svg", stdout=False)
        for budget in sweep_options.sorted_budgets if save_models else ():
            files.write("--save-models", out / f"{model.stem}.drift-{budget:g}.onnx", stdout=False, sidecars=(".data",))
        files.check()
        ui = UI(quiet)
        with files.transaction():
            result = ui.run(lambda progress: sweep_file(model, out, inputs, options, sweep_options, progress=progress))
            record = result.record
            files.make_folders()
            files.write_json(json_out, record.to_dict())
            files.write_text(md_out, render.markdown(record, picture="sweep.svg"))
            files.write_text(svg_out, render.svg(record))
    except ConvToolError as exc:
        fail(exc)
    for warning in record.warnings:
        ui.warn(warning)
    ui.print(render.table(record, title=f"convtool sweep {model.name}", width=ui.width), *render.summary_lines(record))
    saved = [p.model for p in record.points if p.model]
    ui.print(closing_line([*(str(t.path) for t in (json_out, md_out, svg_out) if t is not None), *saved], clock))


#: The INT8 flags need the data the INT8 original is calibrated on.
INT8_RULES: tuple[params.Applies, ...] = (
    params.Applies(("int8_baseline",), lambda p: p.get("calibration") is not None,
                   message="--int8-baseline needs --calibration DATA (the samples the original is quantized on)"),
    params.Applies(("quantize",), lambda p: p.get("calibration") is not None,
                   message="--quantize int8 needs --calibration DATA (the samples its activation ranges are "
                           "calibrated on)"),
)


def _same_path(a: Path, b: Path) -> bool:
    """The same file or folder, after resolving ``./``, ``..`` and symlinks (or a hard link)."""
    import os

    try:
        return a.resolve() == b.resolve() or (a.exists() and b.exists() and os.path.samefile(a, b))
    except OSError:
        return False
