"""``convtool sweep``: flags in, one library call (:func:`convtool.api.sweep_file`), the table
out, and ``DIR/sweep.json``, ``DIR/sweep.md`` and ``DIR/sweep.svg`` written (rendered by
:mod:`convtool.render.sweep`); with ``--save-models`` each point's model too.

``--int8-baseline`` (a flag, not implied by ``--calibration``: quantizing the original and
timing every point against it costs a quantization and a pair timing per point) adds the
INT8-quantized original as a reference point; ``--quantize int8`` builds every point quantized
and implies it.  Both need ``--calibration`` (:meth:`SweepInt8Flags.rules`).

The flags are typed option groups (:class:`SweepArgs`): the shared ones from
:mod:`convtool.cli.params`, the sweep's own declared here.
"""

from __future__ import annotations

from dataclasses import dataclass
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


@params.group
class SweepFlags(params.Group):
    """What ``sweep`` measures and where it writes (the ``Sweep`` panel)."""

    model: SweepModel
    inputs: EvalInputs
    out: OutDir
    budgets: Budgets = "0.005,0.01,0.02,0.05,0.1"
    save_models: SaveModels = False


@params.group
class SweepRunsFlags(params.Group):
    runs: SweepRuns = 50


@params.group
class SweepLayoutFlags(params.Group):
    layout: SweepLayout = "auto"


@params.group
class SweepCalibrationFlags(params.CalibrationFlags):
    """``--calibration`` as the sweep's search uses it (seeded random inputs without it)."""

    calibration: SweepCalibration = None


@params.group
class SweepInt8Flags(params.Group):
    """The INT8 flags: both need the data the INT8 original is calibrated on."""

    int8_baseline: SweepInt8Baseline = False
    quantize: SweepQuantize = None

    def rules(self, calibration: params.CalibrationFlags) -> tuple[params.Applies, ...]:
        given_data = calibration.calibration is not None
        return (params.Applies(("int8_baseline",), given_data,
                               message="--int8-baseline needs --calibration DATA (the samples the original is "
                                       "quantized on)"),
                params.Applies(("quantize",), given_data, message=params.QUANTIZE_NEEDS))


@dataclass(frozen=True)
class SweepArgs(params.Command):
    """The groups of ``sweep``, in the order ``--help`` lists their flags."""

    sweep: SweepFlags
    output: params.QuietOutput
    search: params.SearchFlags
    layout: SweepLayoutFlags
    selection: params.Selection
    shapes: params.Shapes
    calibration: SweepCalibrationFlags
    finetune: params.FinetuneFlags
    images: params.ImageFolder
    session: params.SessionFlags
    cache: params.CacheFlags
    runs: SweepRunsFlags
    int8: SweepInt8Flags

    def rules(self) -> tuple[params.Applies, ...]:
        """Every "applies only with ..." rule of ``sweep``, in the order they are checked."""
        return (*self.cache.rules(), *self.finetune.rules(self.calibration), *self.int8.rules(self.calibration))

    def options(self):
        """-> (:class:`ConvertOptions` every point is built with, :class:`SweepOptions`)."""
        from convtool.options import ConvertOptions, SweepOptions

        options = ConvertOptions(
            calibration=self.calibration.options(self.images, search=True),
            objective=self.search.objective,  # type: ignore[arg-type]
            metric=self.search.metric,  # type: ignore[arg-type]
            search_ranks=self.search.ranks(),
            layout=self.layout.layout,  # type: ignore[arg-type]
            min_in_channels=self.selection.min_in_channels, include=self.selection.includes,
            exclude=self.selection.excludes, input_shapes=self.shapes.shapes(), finetune=self.finetune.options(),
            quantize=params.quantize_options(self.int8.quantize), timing=self.session.timing(self.cache))
        sweep = self.sweep
        sweep_options = SweepOptions(budgets=params.parse_budgets(sweep.budgets), runs=self.runs.runs,
                                     save_models=sweep.save_models,
                                     int8_baseline=self.int8.int8_baseline or self.int8.quantize is not None)
        return options, sweep_options


def run(ctx: typer.Context, args: SweepArgs) -> None:
    """The command body: typed groups in, :func:`convtool.api.sweep_file`, the files and the table out."""
    clock = Clock()
    from convtool.api import sweep_file
    from convtool.cli.outputs import Outputs
    from convtool.render import sweep as render

    model, inputs, out, save_models = args.sweep.model, args.sweep.inputs, args.sweep.out, args.sweep.save_models
    calibration = args.calibration.calibration
    try:
        params.check_rules(ctx, args.rules())
        options, sweep_options = args.options()
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
        ui = UI(args.output.quiet)
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
    saved = [point.model for point in record.points if point.model]
    ui.print(closing_line([*(str(t.path) for t in (json_out, md_out, svg_out) if t is not None), *saved], clock))


sweep = SweepArgs.command(
    run, name="sweep",
    doc="""The trade-off curve: one search over the calibration data, one model per drift budget, each measured on
    held-out evaluation data (drift, agreement or accuracy, MACs, params, latency); the table, sweep.json,
    sweep.md and a picture (sweep.svg) with the Pareto front, to pick a budget from.""")


def _same_path(a: Path, b: Path) -> bool:
    """The same file or folder, after resolving ``./``, ``..`` and symlinks (or a hard link)."""
    import os

    try:
        return a.resolve() == b.resolve() or (a.exists() and b.exists() and os.path.samefile(a, b))
    except OSError:
        return False
