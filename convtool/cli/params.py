"""Option groups shared by the commands: one small frozen dataclass per concern, owning its flags.

Each group (compare Polygraphy's argument groups, onnxslim's dataclass groups)

* **declares its flags**: its fields are annotated with the ``Annotated`` aliases below (one help
  panel per concern), so every command using the group shows the same flag, help and panel;
* **validates** them: its builders return the library's frozen option objects
  (:mod:`convtool.options`), validated by their constructors; string parsing is in
  :mod:`convtool.cli.parsers`;
* **states when they apply** (:meth:`rules`, as :class:`Applies`): an option that cannot apply is
  refused, never silently ignored.  "Given" means given on the command line (click's
  ``ParameterSource``), so a default never trips a rule.  A rule that depends on another group
  takes that group (typed) as an argument.

A command is a frozen dataclass whose fields are groups (:class:`Command`); :meth:`Command.command`
turns it into the typer callback, whose parameters are the groups' fields in order, and hands the
command body one typed instance.  No command reads a flag's value by its name: a renamed field is
an error at import, not a ``KeyError`` at run time.  A new flag of a group (e.g. ``--provider``
in the session group) is one field here and one line in the group's builder.

Nothing here computes or touches a model.
"""

from __future__ import annotations

import dataclasses
import inspect
import typing
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, ClassVar, Optional, Self

import typer

from convtool.cli.parsers import (input_shapes, is_image_folder, parse_budgets, parse_input_shapes, parse_numbers,
                                  parse_rank)
from convtool.errors import OptionError

__all__ = [
    # parsers, re-exported for callers of the old location
    "parse_numbers", "parse_budgets", "parse_rank", "parse_input_shapes", "input_shapes",
    "Applies", "check_rules", "given", "flag_name", "Group", "Command",
    "ConvertOutput", "ReportOutput", "QuietOutput", "RankFlags", "Selection", "ConvertSelection", "Shapes",
    "SessionFlags", "ReportSessionFlags", "SpeedFlags", "CacheFlags", "CalibrationFlags", "ImageFolder",
    "BudgetFlags", "SearchFlags", "FinetuneFlags", "QuantizeFlags", "ReportAfterFlags", "quantize_options", "providers",
    "ModelInput", "ReportPaths", "InputsFlags", "MeasureFlags", "GateFlags",
]

# ----------------------------------------------------------------------------- panels

OUTPUT = "Output"
RANK = "Rank policy"
SELECT = "Layer selection"
SHAPES = "Shapes"
SESSION = "onnxruntime session (timing and runs)"
SPEED = "Speed (--latency-aware)"
CALIBRATION = "Calibration"
IMAGES = "Image folders (--calibration DIR of images)"
BUDGET = "Drift budget (--max-drift)"
REPORT = "Report after converting (--report)"
MEASURE = "Measurement"
INPUTS = "Inputs"
GATES = "CI gates (need MODEL and CONVERTED; any failure exits 1)"

STDOUT_HELP = " '-' writes to stdout (tables then go to stderr)."

# ----------------------------------------------------------------------------- flags: output

ModelArg = Annotated[Path, typer.Argument(help="ONNX model to convert.", show_default=False, metavar="MODEL")]
Output = Annotated[Optional[Path], typer.Option(
    "--output", "-o", metavar="PATH", rich_help_panel=OUTPUT, show_default="<stem>.dws.onnx beside MODEL",
    help="Where to write the converted model; never MODEL itself.")]
DryRun = Annotated[bool, typer.Option("--dry-run", rich_help_panel=OUTPUT,
                                      help="Plan and print; write nothing.")]
Json = Annotated[Optional[Path], typer.Option(
    "--json", metavar="PATH", rich_help_panel=OUTPUT, help="Write the machine-readable record here." + STDOUT_HELP)]
Quiet = Annotated[bool, typer.Option("--quiet", "-q", rich_help_panel=OUTPUT,
                                     help="No tables and no progress bar: warnings and errors only.")]

# ----------------------------------------------------------------------------- flags: rank, selection, shapes

Rank = Annotated[str, typer.Option(
    "--rank", "-r", metavar="N|full", rich_help_panel=RANK,
    help="Rank per layer: a positive integer (capped at the layer's full rank), or 'full' "
         "(exact; for checking, never cheaper).")]
Energy = Annotated[Optional[float], typer.Option(
    "--energy", metavar="E", rich_help_panel=RANK,
    help="Instead of --rank: per layer, the smallest rank keeping this fraction (0-1] of the "
         "spectral energy.")]
Layout = Annotated[str, typer.Option(
    "--layout", metavar="NAME", rich_help_panel=RANK,
    help="How the pair is emitted: multiplier (depthwise conv with channel multiplier r, then "
         "pointwise), repeat (input concatenated r times, multiplier-1 depthwise), branches (r "
         "depthwise->pointwise branches, summed), pointwise_first (1x1 conv first), or auto (per "
         "layer: rank 1 pointwise_first when cheaper at stride 1, else multiplier; branches at "
         "rank >= 2; with --latency-aware or the --max-drift search's --objective latency, the "
         "fastest measured form of every layer).")]
MinInChannels = Annotated[int, typer.Option(
    "--min-in-channels", metavar="N", rich_help_panel=SELECT,
    help="Skip convs with fewer input channels (stems are accuracy-sensitive and save little).")]
Include = Annotated[Optional[list[str]], typer.Option(
    "--include", metavar="REGEX", rich_help_panel=SELECT,
    help="Only convert nodes whose name matches this regex (repeatable).")]
Exclude = Annotated[Optional[list[str]], typer.Option(
    "--exclude", metavar="REGEX", rich_help_panel=SELECT,
    help="Never convert nodes whose name matches this regex (repeatable).")]
NoFoldBn = Annotated[bool, typer.Option("--no-fold-bn", rich_help_panel=SELECT,
                                        help="Do not fold a following BatchNormalization into the conv.")]
InputShape = Annotated[Optional[list[str]], typer.Option(
    "--input-shape", metavar="NAME=DIMS", rich_help_panel=SHAPES,
    help="Fix a symbolic input, e.g. input=1,3,224,224 (repeatable); a symbolic first dim "
         "defaults to 1.")]

# ----------------------------------------------------------------------------- flags: session, latency

Threads = Annotated[int, typer.Option(
    "--threads", metavar="N", rich_help_panel=SESSION,
    help="onnxruntime intra-op threads to time with; use your deployment's (1 is the most "
         "reproducible).")]
OptLevel = Annotated[str, typer.Option(
    "--opt-level", metavar="LEVEL", rich_help_panel=SESSION,
    help="onnxruntime graph optimisation level: disable, basic, extended or all.")]
Provider = Annotated[Optional[list[str]], typer.Option(
    "--provider", metavar="NAME", rich_help_panel=SESSION, show_default="CPUExecutionProvider",
    help="onnxruntime execution provider to time with (repeatable: a fallback chain, in order); "
         "an unavailable one is an error, never a silent CPU fallback.")]
LatencyAware = Annotated[bool, typer.Option(
    "--latency-aware", rich_help_panel=SPEED,
    help="Time each candidate layer against its replacement at its real input shape "
         "(interleaved, spinning off) and convert only layers measured faster beyond noise; then "
         "time both whole models and keep the original unless the result is faster beyond noise.")]
CacheDir = Annotated[Optional[Path], typer.Option(
    "--cache-dir", metavar="DIR", rich_help_panel=SPEED, show_default="~/.cache/convtool",
    help="Where per-shape layer timings are cached.")]
NoCache = Annotated[bool, typer.Option("--no-cache", rich_help_panel=SPEED,
                                       help="Time every layer afresh; neither read nor write the cache.")]

# ----------------------------------------------------------------------------- flags: calibration, budget

Calibration = Annotated[Optional[Path], typer.Option(
    "--calibration", metavar="DATA", rich_help_panel=CALIBRATION,
    help="Fit each converted layer to this data, layer after layer (see --refit): an .npz "
         "with one array per model input (samples on the first axis), or a folder of images or "
         ".npy samples.")]
Refit = Annotated[str, typer.Option(
    "--refit", metavar="WHAT", rich_help_panel=CALIBRATION,
    help="data-aware: fit both factors (alternating least squares on the layer's input patches, "
         "from a whitened SVD); pointwise: refit only the pointwise weights. Either way a layer "
         "keeps its fit only where it lowers the error on held-out samples.")]
CalibrationSamples = Annotated[int, typer.Option(
    "--calibration-samples", metavar="N", rich_help_panel=CALIBRATION,
    help="Use at most this many calibration samples (a seeded choice).")]
Holdout = Annotated[float, typer.Option(
    "--holdout", metavar="FRACTION", rich_help_panel=CALIBRATION,
    help="Fraction of the calibration samples held out to choose the regulariser and to reject "
         "refits that do not help.")]
ImageSize = Annotated[Optional[str], typer.Option(
    "--image-size", metavar="H,W", rich_help_panel=IMAGES, show_default="the model input's static size",
    help="Resize images to HEIGHT,WIDTH.")]
ImageMean = Annotated[str, typer.Option(
    "--image-mean", metavar="M[,M...]", rich_help_panel=IMAGES,
    help="Per-channel mean subtracted once pixels are scaled to [0, 1] (one value, or one per "
         "channel).")]
ImageStd = Annotated[str, typer.Option(
    "--image-std", metavar="S[,S...]", rich_help_panel=IMAGES,
    help="Per-channel standard deviation each value is divided by, after subtracting the mean.")]
ImageLayout = Annotated[str, typer.Option("--image-layout", metavar="NCHW|NHWC", rich_help_panel=IMAGES,
                                          help="Axis order of the model input.")]
ChannelOrder = Annotated[str, typer.Option("--channel-order", metavar="RGB|BGR|L", rich_help_panel=IMAGES,
                                           help="Channel order the model expects (L: greyscale).")]
MaxDrift = Annotated[Optional[float], typer.Option(
    "--max-drift", metavar="D", rich_help_panel=BUDGET,
    help="Choose each layer's rank and layout (from --search-ranks, or unconverted) to save the "
         "most of --objective while the whole model's drift stays within D: each layer's drift alone, then a greedy "
         "pass re-checking the whole model (at most 2 x layers x ranks evaluations, each with the "
         "refit when --calibration is given; without it, on seeded random inputs).")]
Metric = Annotated[str, typer.Option(
    "--metric", metavar="rel_l2|top1", rich_help_panel=BUDGET,
    help="The drift --max-drift budgets: rel_l2 (the worst output's relative L2, per channel "
         "for outputs with a channel axis) or top1 (1 - top-1 agreement, for classifiers).")]
Objective = Annotated[str, typer.Option(
    "--objective", metavar="latency|macs|params", rich_help_panel=BUDGET,
    help="What --max-drift maximises: latency (each layer's time saved, measured at its real "
         "input shape with --threads/--opt-level/--provider; only layers faster beyond noise; "
         "the result is never slower end to end), macs or params (a slower result is written, "
         "with a warning).")]
SearchRanks = Annotated[str, typer.Option("--search-ranks", metavar="R,R,...", rich_help_panel=BUDGET,
                                          help="Ranks --max-drift may choose from.")]

# ----------------------------------------------------------------------------- flags: INT8

QUANTIZE_PANEL = "INT8 (--quantize int8; needs --calibration)"

Quantize = Annotated[Optional[str], typer.Option(
    "--quantize", metavar="int8", rich_help_panel=QUANTIZE_PANEL,
    help="After conversion, refit and fine-tune: equalize the converted depthwise/pointwise pairs and quantize "
         "the result with onnxruntime's static INT8 quantization (QDQ, per-channel int8 weights, uint8 "
         "activations calibrated by MinMax on the --calibration data, output tail kept float); validated, then "
         "written as the output model.")]

# ----------------------------------------------------------------------------- flags: fine-tune

FINETUNE = "Fine-tune (--finetune; needs torch: pip install \"onnx-dwsconv\\[finetune]\")"

Finetune = Annotated[bool, typer.Option(
    "--finetune", rich_help_panel=FINETUNE,
    help="After the refit, distil MODEL into the converted model on the --calibration data: train only the "
         "converted layers' new factor weights and biases (Adam, per-tensor step sizes; loss on the outputs and on "
         "the converted layers' outputs; random shifts and noise as augmentation), write them back into the same "
         "graph and keep them only if the held-out drift drops.")]
FinetuneSteps = Annotated[int, typer.Option(
    "--finetune-steps", metavar="N", min=1, rich_help_panel=FINETUNE, help="At most this many training steps.")]
FinetuneSeconds = Annotated[float, typer.Option(
    "--finetune-seconds", metavar="S", min=0.001, rich_help_panel=FINETUNE,
    help="Training time budget; training stops at whichever of steps and seconds comes first.")]

# ----------------------------------------------------------------------------- flags: convert --report

ReportAfter = Annotated[bool, typer.Option(
    "--report", rich_help_panel=REPORT,
    help="After writing, compare MODEL and the converted model like 'convtool report': params, "
         "MACs, interleaved latency (--threads, --opt-level), output drift.")]
ReportRuns = Annotated[int, typer.Option("--report-runs", metavar="N", rich_help_panel=REPORT,
                                         help="Paired runs at the first look; timing continues (fresh "
                                              "sessions, interleaved) until the speedup's interval decides, "
                                              "at most 8x this or 30 s.")]
ReportJson = Annotated[Optional[Path], typer.Option(
    "--report-json", metavar="PATH", rich_help_panel=REPORT,
    help="Write the report record here (the keys of 'convtool report --json')." + STDOUT_HELP)]
ReportMarkdown = Annotated[Optional[Path], typer.Option(
    "--report-markdown", metavar="PATH", rich_help_panel=REPORT,
    help="Write the report as GitHub-flavoured Markdown here." + STDOUT_HELP)]

# ----------------------------------------------------------------------------- flags: report

ReportModel = Annotated[Path, typer.Argument(help="ONNX model (the original, when comparing).",
                                             show_default=False, metavar="MODEL")]
Converted = Annotated[Optional[Path], typer.Argument(help="Converted model to compare with MODEL.",
                                                     show_default=False, metavar="CONVERTED")]
Inputs = Annotated[Optional[Path], typer.Option(
    "--inputs", metavar="DATA.npz", rich_help_panel=INPUTS, show_default="seeded random inputs",
    help="Samples to run: an .npz with one array per model input (samples on axis 0) and, for "
         "top-1 accuracy, a 'labels' array.")]
Seed = Annotated[int, typer.Option("--seed", metavar="N", rich_help_panel=INPUTS,
                                   help="Seed of the random inputs (without --inputs).")]
Runs = Annotated[int, typer.Option("--runs", metavar="N", rich_help_panel=MEASURE,
                                   help="Paired runs at the first look (interleaved A B B A ..., in rounds "
                                        "of fresh sessions); timing continues until the speedup's interval "
                                        "decides, at most 8x this or 30 s.")]
Warmup = Annotated[int, typer.Option("--warmup", metavar="N", rich_help_panel=MEASURE,
                                     help="Untimed runs per model before timing.")]
Spinning = Annotated[bool, typer.Option(
    "--spinning/--no-spinning", rich_help_panel=SESSION,
    help="Let onnxruntime's intra-op threads spin (off: spinning sessions in one process disturb "
         "each other).")]
NoLatency = Annotated[bool, typer.Option("--no-latency", rich_help_panel=MEASURE,
                                         help="Do not time the models (static analysis and drift only).")]
AACheck = Annotated[bool, typer.Option("--aa-check", rich_help_panel=MEASURE,
                                       help="Also time MODEL against itself, to show the noise floor.")]
Profile = Annotated[bool, typer.Option(
    "--profile", rich_help_panel=MEASURE,
    help="Per-node times from onnxruntime's profiler; flags converted layers that got slower.")]
Markdown = Annotated[Optional[Path], typer.Option(
    "--markdown", metavar="PATH", rich_help_panel=OUTPUT,
    help="Write the tables as GitHub-flavoured Markdown here." + STDOUT_HELP)]
MinSpeedup = Annotated[Optional[float], typer.Option(
    "--min-speedup", metavar="X", rich_help_panel=GATES,
    help="Fail unless median(MODEL) / median(CONVERTED) >= X.")]
GateMaxDrift = Annotated[Optional[float], typer.Option(
    "--max-drift", metavar="D", rich_help_panel=GATES,
    help="Fail if the drift exceeds D: the worst output's relative L2, per channel for outputs "
         "with a channel axis (the number 'convert --max-drift' budgets).")]
MinTop1Agreement = Annotated[Optional[float], typer.Option(
    "--min-top1-agreement", metavar="F", rich_help_panel=GATES,
    help="Fail if the models agree on the top-1 class for less than this fraction of samples.")]
MaxAccuracyDrop = Annotated[Optional[float], typer.Option(
    "--max-accuracy-drop", metavar="F", rich_help_panel=GATES,
    help="Fail if top-1 accuracy drops by more than this fraction (needs --inputs with labels).")]
MinParamReduction = Annotated[Optional[float], typer.Option(
    "--min-param-reduction", metavar="F", rich_help_panel=GATES,
    help="Fail unless 1 - params(CONVERTED) / params(MODEL) >= F.")]
MinMacReduction = Annotated[Optional[float], typer.Option(
    "--min-mac-reduction", metavar="F", rich_help_panel=GATES,
    help="Fail unless 1 - MACs(CONVERTED) / MACs(MODEL) >= F.")]

# ----------------------------------------------------------------------------- groups: machinery


def given(ctx: typer.Context, name: str) -> bool:
    """True when the user gave parameter ``name`` (on the command line or in the environment),
    not when it holds its default; robust to defaults equal to the given value."""
    try:  # typer >= 0.20 vendors click; older releases depend on it
        from typer._click.core import ParameterSource
    except ImportError:  # pragma: no cover - depends on the installed typer
        from click.core import ParameterSource

    source = ctx.get_parameter_source(name)
    return source is not None and source not in (ParameterSource.DEFAULT, ParameterSource.DEFAULT_MAP)


def flag_name(ctx: typer.Context, name: str) -> str:
    """The long flag of parameter ``name`` (``--report-json``), as the user would type it."""
    for param in ctx.command.params:
        if param.name == name:
            opts = [o for o in (*param.opts, *getattr(param, "secondary_opts", ())) if o.startswith("--")]
            if param.param_type_name == "argument":
                return (param.metavar or name).upper() if isinstance(param.metavar, str) else name.upper()
            return opts[0] if opts else param.opts[0]
    return "--" + name.replace("_", "-")


@dataclass(frozen=True)
class Applies:
    """The parameters ``options`` apply only when ``holds``; given otherwise, they are refused.

    ``holds`` is computed by the group from its typed values (and those of the groups it depends
    on).  The message reads ``<flag> has no effect without <needs>`` unless ``message`` (with
    ``{flag}``) says it better.
    """

    options: tuple[str, ...]
    holds: bool
    needs: str = ""
    message: str | None = None


def check_rules(ctx: typer.Context, rules: Iterable[Applies]) -> None:
    """Refuse, before any work, every given option that cannot apply (first one found)."""
    for rule in rules:
        if rule.holds:
            continue
        for name in rule.options:
            if given(ctx, name):
                flag = flag_name(ctx, name)
                raise OptionError(rule.message.format(flag=flag) if rule.message
                                  else f"{flag} has no effect without {rule.needs}")


class Group:
    """Base of the option groups: a frozen, keyword-only dataclass whose fields are typer
    parameters (their annotations are the ``Annotated`` flag declarations)."""

    @classmethod
    def parameters(cls) -> list[inspect.Parameter]:
        """The group's fields as keyword-only parameters of a typer callback, in field order."""
        hints = typing.get_type_hints(cls, include_extras=True)
        return [inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, annotation=hints[f.name],
                                  default=inspect.Parameter.empty if f.default is dataclasses.MISSING else f.default)
                for f in dataclasses.fields(cls)]  # type: ignore[arg-type]

    @classmethod
    def take(cls, values: dict[str, Any]):
        """The group built from the callback's keyword arguments (its own fields only)."""
        return cls(**{f.name: values[f.name] for f in dataclasses.fields(cls)})  # type: ignore[arg-type]


def group(cls):
    """Decorator: a :class:`Group` subclass as a frozen, keyword-only dataclass."""
    return dataclass(frozen=True, kw_only=True)(cls)


class Command:
    """Base of a command's typed arguments: a frozen dataclass whose fields are groups, in the
    order their flags are declared (the order ``--help`` lists them in, panel by panel)."""

    @classmethod
    def groups(cls) -> dict[str, type[Group]]:
        hints = typing.get_type_hints(cls)
        return {f.name: hints[f.name] for f in dataclasses.fields(cls)}  # type: ignore[arg-type]

    @classmethod
    def command(cls, body: Callable[[typer.Context, Self], None], doc: str, name: str) -> Callable[..., None]:
        """The typer callback: every group's flags as its parameters; calls ``body(ctx, args)``."""
        groups = cls.groups()

        def callback(ctx: typer.Context, **values: Any) -> None:
            body(ctx, cls(**{field: g.take(values) for field, g in groups.items()}))

        params = [inspect.Parameter("ctx", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=typer.Context)]
        for g in groups.values():
            params.extend(g.parameters())
        callback.__signature__ = inspect.Signature(params, return_annotation=None)  # type: ignore[attr-defined]
        callback.__annotations__ = {p.name: p.annotation for p in params} | {"return": None}
        callback.__doc__, callback.__name__, callback.__qualname__ = doc, name, name
        return callback


# ----------------------------------------------------------------------------- groups: output


@group
class ConvertOutput(Group):
    """Where ``convert`` writes: the model (unless ``--dry-run``), the record, the console."""

    output: Output = None
    dry_run: DryRun = False
    json_path: Json = None
    quiet: Quiet = False

    def rules(self) -> tuple[Applies, ...]:
        return (Applies(("output",), not self.dry_run, message="{flag} has no effect with --dry-run (nothing is written)"),)


@group
class ReportOutput(Group):
    """Where ``report`` writes its records, and the console."""

    json_path: Json = None
    markdown_path: Markdown = None
    quiet: Quiet = False


@group
class QuietOutput(Group):
    quiet: Quiet = False


# ----------------------------------------------------------------------------- groups: rank, selection, shapes


@group
class RankFlags(Group):
    """``--rank`` / ``--energy`` and ``--layout``: the rank policy of a plain conversion."""

    rank: Rank = "1"
    energy: Energy = None
    layout: Layout = "auto"

    def policy(self):
        # --rank has a default; given together with --energy, the rules refuse it
        return parse_rank(None if self.energy is not None else self.rank, self.energy)

    def rules(self, budget: BudgetFlags) -> tuple[Applies, ...]:
        return (Applies(("rank",), self.energy is None, message="--rank and --energy are mutually exclusive"),
                Applies(("rank", "energy"), budget.max_drift is None,
                        message="--max-drift chooses the ranks itself; use --search-ranks instead of --rank/--energy"))


@group
class Selection(Group):
    """Which convs are candidates."""

    min_in_channels: MinInChannels = 8
    include: Include = None
    exclude: Exclude = None

    @property
    def includes(self) -> tuple[str, ...]:
        return tuple(self.include or ())

    @property
    def excludes(self) -> tuple[str, ...]:
        return tuple(self.exclude or ())


@group
class ConvertSelection(Selection):
    no_fold_bn: NoFoldBn = False


@group
class Shapes(Group):
    input_shape: InputShape = None

    def shapes(self):
        return input_shapes(self.input_shape)


# ----------------------------------------------------------------------------- groups: session, timing


def providers(values) -> tuple[str, ...]:
    """``--provider`` values (repeatable) -> the fallback chain; none given: the CPU provider."""
    from convtool.options import CPU_PROVIDER

    return tuple(v.strip() for v in values if v.strip()) if values else (CPU_PROVIDER,)


@group
class SessionFlags(Group):
    """The onnxruntime session every timing and run uses."""

    NAMES: ClassVar[tuple[str, ...]] = ("threads", "opt_level", "provider")

    threads: Threads = 1
    opt_level: OptLevel = "all"
    provider: Provider = None

    def options(self):
        """-> :class:`SessionOptions` (validated even when unused, so a bad value is refused
        whatever else is given)."""
        from convtool.options import SessionOptions

        return SessionOptions(threads=self.threads, opt_level=self.opt_level,  # type: ignore[arg-type]
                              providers=providers(self.provider))

    def timing(self, cache: CacheFlags):
        """With the cache flags -> :class:`LatencyOptions`: how layers and models are timed (by
        ``--latency-aware``, and by the ``--max-drift`` search and its end-to-end check)."""
        from convtool.options import LatencyOptions

        session = self.options()
        return LatencyOptions(threads=session.threads or 1, opt_level=session.opt_level,
                              cache_dir=str(cache.cache_dir) if cache.cache_dir is not None else None,
                              use_cache=not cache.no_cache, providers=session.providers)

    def rules(self, used: bool, needs: str) -> tuple[Applies, ...]:
        return (Applies(self.NAMES, used, needs),)


@group
class ReportSessionFlags(SessionFlags):
    NAMES: ClassVar[tuple[str, ...]] = ("threads", "opt_level", "spinning", "provider")

    spinning: Spinning = False


@group
class SpeedFlags(Group):
    latency_aware: LatencyAware = False


@group
class CacheFlags(Group):
    """The per-shape layer timing cache."""

    cache_dir: CacheDir = None
    no_cache: NoCache = False

    def rules(self, timed: bool = True, needs: str = "") -> tuple[Applies, ...]:
        return (Applies(("cache_dir", "no_cache"), timed, needs),
                Applies(("cache_dir",), not self.no_cache, message="{flag} has no effect with --no-cache"))


# ----------------------------------------------------------------------------- groups: calibration, budget


@group
class ImageFolder(Group):
    """How a folder of images becomes calibration samples."""

    image_size: ImageSize = None
    image_mean: ImageMean = "0"
    image_std: ImageStd = "1"
    image_layout: ImageLayout = "NCHW"
    channel_order: ChannelOrder = "RGB"

    def preprocess(self):
        """-> :class:`ImagePreprocess`."""
        from convtool.options import ImagePreprocess

        return ImagePreprocess(
            size=parse_numbers(self.image_size, "--image-size", int),  # type: ignore[arg-type]
            mean=parse_numbers(self.image_mean, "--image-mean"),  # type: ignore[arg-type]
            std=parse_numbers(self.image_std, "--image-std"),  # type: ignore[arg-type]
            layout=str(self.image_layout).upper(),  # type: ignore[arg-type]
            channel_order=str(self.channel_order).upper(),  # type: ignore[arg-type]
        )

    def rules(self, calibration: CalibrationFlags) -> tuple[Applies, ...]:
        return (Applies(("image_size", "image_mean", "image_std", "image_layout", "channel_order"),
                        is_image_folder(calibration.calibration), "--calibration naming a folder of images"),)


@group
class CalibrationFlags(Group):
    """``--calibration`` and how its samples are used."""

    calibration: Calibration = None
    calibration_samples: CalibrationSamples = 512
    holdout: Holdout = 0.2
    refit: Refit = "data-aware"

    def options(self, images: ImageFolder, search: bool = False):
        """-> :class:`CalibrationOptions`; ``None`` unless data is given or a drift search needs
        the options (its random-input seed)."""
        from convtool.options import CalibrationOptions

        image = images.preprocess()
        if self.calibration is None and not search:
            return None
        return CalibrationOptions(source=str(self.calibration) if self.calibration is not None else None,
                                  holdout=self.holdout, max_samples=self.calibration_samples, image=image,
                                  factors=self.refit)  # type: ignore[arg-type]

    def rules(self) -> tuple[Applies, ...]:
        return (Applies(("calibration_samples", "holdout", "refit"), self.calibration is not None, "--calibration"),)


@group
class BudgetFlags(Group):
    """``convert --max-drift`` and its search."""

    max_drift: MaxDrift = None
    metric: Metric = "rel_l2"
    search_ranks: SearchRanks = "1,2,4"
    objective: Objective = "latency"

    @property
    def searching(self) -> bool:
        return self.max_drift is not None

    def ranks(self) -> tuple[int, ...]:
        return parse_numbers(self.search_ranks, "--search-ranks", int)  # type: ignore[return-value]

    def rules(self) -> tuple[Applies, ...]:
        return (Applies(("metric", "search_ranks", "objective"), self.searching, "--max-drift"),)


@group
class SearchFlags(Group):
    """The search of ``sweep`` (every point runs it; its budgets are the sweep's)."""

    objective: Objective = "latency"
    metric: Metric = "rel_l2"
    search_ranks: SearchRanks = "1,2,4"

    def ranks(self) -> tuple[int, ...]:
        return parse_numbers(self.search_ranks, "--search-ranks", int)  # type: ignore[return-value]


# ----------------------------------------------------------------------------- groups: fine-tune, INT8


@group
class FinetuneFlags(Group):
    finetune: Finetune = False
    finetune_steps: FinetuneSteps = 600
    finetune_seconds: FinetuneSeconds = 180.0

    def options(self):
        """-> :class:`FinetuneOptions` (``None`` when off)."""
        from convtool.options import FinetuneOptions

        if not self.finetune:
            return None
        return FinetuneOptions(steps=self.finetune_steps, seconds=self.finetune_seconds)

    def rules(self, calibration: CalibrationFlags) -> tuple[Applies, ...]:
        return (Applies(("finetune",), calibration.calibration is not None,
                        message="--finetune needs --calibration DATA (the samples it trains on)"),
                Applies(("finetune_steps", "finetune_seconds"), bool(self.finetune), "--finetune"))


QUANTIZE_NEEDS = "--quantize int8 needs --calibration DATA (the samples its activation ranges are calibrated on)"


def quantize_options(value: str | None):
    """``--quantize`` -> :class:`QuantizeOptions` (``None`` when off); only ``int8`` exists."""
    from convtool.options import QuantizeOptions

    if value is None:
        return None
    if str(value).lower() != "int8":
        raise OptionError(f"--quantize must be int8, got {value!r}")
    return QuantizeOptions()


@group
class QuantizeFlags(Group):
    quantize: Quantize = None

    def options(self):
        return quantize_options(self.quantize)

    def rules(self, calibration: CalibrationFlags) -> tuple[Applies, ...]:
        return (Applies(("quantize",), calibration.calibration is not None, message=QUANTIZE_NEEDS),)


# ----------------------------------------------------------------------------- groups: convert --report


@group
class ReportAfterFlags(Group):
    """``convert --report``: compare MODEL and the converted model once written."""

    report: ReportAfter = False
    report_runs: ReportRuns = 100
    report_json: ReportJson = None
    report_markdown: ReportMarkdown = None

    def options(self, session: SessionFlags, shapes: Shapes):
        """-> :class:`ReportOptions` (``None`` without ``--report``)."""
        from convtool.options import ReportOptions

        if not self.report:
            return None
        settings = session.options()
        return ReportOptions(input_shapes=shapes.shapes(), threads=settings.threads, opt_level=settings.opt_level,
                             providers=settings.providers, runs=self.report_runs)

    def written_rules(self, output: ConvertOutput) -> tuple[Applies, ...]:
        """``--report`` measures the written model: refused with ``--dry-run``."""
        return (Applies(("report",), not output.dry_run, message="--report needs a written model; drop --dry-run"),)

    def rules(self) -> tuple[Applies, ...]:
        return (Applies(("report_runs", "report_json", "report_markdown"), bool(self.report), "--report"),)


# ----------------------------------------------------------------------------- groups: report


@group
class ModelInput(Group):
    model: ModelArg


@group
class ReportPaths(Group):
    """MODEL, and CONVERTED when comparing."""

    model: ReportModel
    converted: Converted = None

    @property
    def paths(self) -> list[Path]:
        return [self.model] if self.converted is None else [self.model, self.converted]


@group
class InputsFlags(Group):
    """The samples ``report`` runs: ``--inputs`` or seeded random inputs."""

    inputs: Inputs = None
    seed: Seed = 0

    def rules(self, runs_anything: bool) -> tuple[Applies, ...]:
        needs = "anything to run (CONVERTED, timing, --profile or --inputs)"
        return (Applies(("seed",), self.inputs is None, message="{flag} has no effect with --inputs (no random inputs)"),
                Applies(("seed",), runs_anything, needs))


@group
class MeasureFlags(Group):
    """How ``report`` times the models."""

    runs: Runs = 100
    warmup: Warmup = 10
    no_latency: NoLatency = False
    aa_check: AACheck = False
    profile: Profile = False

    @property
    def timing(self) -> bool:
        return not self.no_latency or self.profile

    def rules(self) -> tuple[Applies, ...]:
        return (Applies(("runs",), self.timing, "timing (drop --no-latency)"),
                Applies(("warmup",), self.timing, "timing (drop --no-latency)"))


@group
class GateFlags(Group):
    """The CI gates of ``report``."""

    min_speedup: MinSpeedup = None
    max_drift: GateMaxDrift = None
    min_top1_agreement: MinTop1Agreement = None
    max_accuracy_drop: MaxAccuracyDrop = None
    min_param_reduction: MinParamReduction = None
    min_mac_reduction: MinMacReduction = None
