"""Option groups shared by the commands: typed flags, the rules saying when each applies, and
builders that turn flag values into the library's frozen option objects.

Three parts, each meant to be extended by adding entries, not by editing commands:

1. **Flags** as ``Annotated`` aliases, grouped by concern (one help panel per group).  A
   command declares ``threads: params.Threads = 1``; every command using a group shows the
   same flag, help and panel.  A new flag of a group (e.g. ``--provider`` in the session
   group) is one alias here, one parameter in each command that takes the group, and one line
   in the group's builder.
2. **Rules** (:class:`Applies`): an option that cannot apply is refused, never silently
   ignored.  "Given" means given on the command line (click's ``ParameterSource``), so a
   default never trips a rule.  :func:`check_rules` runs a command's rules before any work.
3. **Builders** take the command's values (``ctx.params``: parameter name -> value) and
   return option objects, validated by their constructors; string parsing is in
   :mod:`convtool.cli.parsers`.

Nothing here computes or touches a model.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from convtool.cli.parsers import (input_shapes, is_image_folder, parse_budgets, parse_input_shapes, parse_numbers,
                                  parse_rank)
from convtool.errors import OptionError

__all__ = [
    # parsers, re-exported for callers of the old location
    "parse_numbers", "parse_budgets", "parse_rank", "parse_input_shapes", "input_shapes",
    "Applies", "check_rules", "given", "flag_name",
    "session_options", "providers", "timing_options", "latency_options", "image_preprocess", "calibration_options", "convert_options",
    "finetune_options", "quantize_options",
    "report_options", "CONVERT_RULES", "REPORT_RULES", "SWEEP_RULES",
]

Values = Mapping[str, Any]

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
         "time both whole models and keep the original if the result is slower.")]
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

# ----------------------------------------------------------------------------- rules


def given(ctx: typer.Context, name: str) -> bool:
    """True when the user gave parameter ``name`` (on the command line or in the environment),
    not when it holds its default; robust to defaults equal to the given value."""
    from typer._click.core import ParameterSource  # typer vendors click

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
    """``options`` apply only when ``when(values)`` holds; given otherwise, they are refused.

    The message reads ``<flag> has no effect without <needs>`` unless ``message`` (with
    ``{flag}``) says it better.
    """

    options: tuple[str, ...]
    when: Callable[[Values], bool]
    needs: str = ""
    message: str | None = None


def check_rules(ctx: typer.Context, rules: Iterable[Applies]) -> None:
    """Refuse, before any work, every given option that cannot apply (first one found)."""
    values = ctx.params
    for rule in rules:
        if rule.when(values):
            continue
        for name in rule.options:
            if name in values and given(ctx, name):
                flag = flag_name(ctx, name)
                raise OptionError(rule.message.format(flag=flag) if rule.message
                                  else f"{flag} has no effect without {rule.needs}")


CONVERT_RULES: tuple[Applies, ...] = (
    Applies(("rank",), lambda p: p["energy"] is None, message="--rank and --energy are mutually exclusive"),
    Applies(("rank", "energy"), lambda p: p["max_drift"] is None,
            message="--max-drift chooses the ranks itself; use --search-ranks instead of --rank/--energy"),
    Applies(("report",), lambda p: not p["dry_run"], message="--report needs a written model; drop --dry-run"),
    Applies(("output",), lambda p: not p["dry_run"], message="{flag} has no effect with --dry-run (nothing is written)"),
    Applies(("report_runs", "report_json", "report_markdown"), lambda p: p["report"], "--report"),
    Applies(("metric", "search_ranks", "objective"), lambda p: p["max_drift"] is not None, "--max-drift"),
    Applies(("threads", "opt_level", "provider"), lambda p: p["latency_aware"] or p["report"] or p["max_drift"] is not None,
            "--latency-aware, --max-drift or --report (nothing is timed)"),
    Applies(("cache_dir", "no_cache"), lambda p: p["latency_aware"] or p["max_drift"] is not None,
            "--latency-aware or --max-drift (no layer is timed)"),
    Applies(("cache_dir",), lambda p: not p["no_cache"], message="{flag} has no effect with --no-cache"),
    Applies(("calibration_samples", "holdout", "refit"), lambda p: p["calibration"] is not None, "--calibration"),
    Applies(("finetune",), lambda p: p.get("calibration") is not None,
            message="--finetune needs --calibration DATA (the samples it trains on)"),
    Applies(("finetune_steps", "finetune_seconds"), lambda p: bool(p.get("finetune")), "--finetune"),
    Applies(("quantize",), lambda p: p.get("calibration") is not None,
            message="--quantize int8 needs --calibration DATA (the samples its activation ranges are calibrated on)"),
    Applies(("image_size", "image_mean", "image_std", "image_layout", "channel_order"),
            lambda p: is_image_folder(p["calibration"]), "--calibration naming a folder of images"),
)


def _runs_anything(p: Values) -> bool:
    """Whether ``report`` creates onnxruntime sessions at all (timing, profiling, drift, accuracy)."""
    return (not p["no_latency"]) or p["profile"] or p["converted"] is not None or p["inputs"] is not None


SWEEP_RULES: tuple[Applies, ...] = (
    Applies(("cache_dir",), lambda p: not p["no_cache"], message="{flag} has no effect with --no-cache"),
    Applies(("finetune",), lambda p: p.get("calibration") is not None,
            message="--finetune needs --calibration DATA (the samples it trains on)"),
    Applies(("finetune_steps", "finetune_seconds"), lambda p: bool(p.get("finetune")), "--finetune"),
)

REPORT_RULES: tuple[Applies, ...] = (
    Applies(("runs",), lambda p: not p["no_latency"] or p["profile"], "timing (drop --no-latency)"),
    Applies(("warmup",), lambda p: not p["no_latency"] or p["profile"], "timing (drop --no-latency)"),
    Applies(("seed",), lambda p: p["inputs"] is None, message="{flag} has no effect with --inputs (no random inputs)"),
    Applies(("seed",), _runs_anything, "anything to run (CONVERTED, timing, --profile or --inputs)"),
    Applies(("threads", "opt_level", "spinning", "provider"), _runs_anything,
            "anything to run (CONVERTED, timing, --profile or --inputs)"),
)

# ----------------------------------------------------------------------------- builders


def session_options(p: Values):
    """``--threads``, ``--opt-level`` -> :class:`SessionOptions` (validated even when unused,
    so a bad value is refused whatever else is given)."""
    from convtool.options import SessionOptions

    return SessionOptions(threads=p["threads"], opt_level=p["opt_level"], providers=providers(p.get("provider")))


def providers(values) -> tuple[str, ...]:
    """``--provider`` values (repeatable) -> the fallback chain; none given: the CPU provider."""
    from convtool.options import CPU_PROVIDER

    return tuple(v.strip() for v in values if v.strip()) if values else (CPU_PROVIDER,)


def timing_options(p: Values):
    """The session and cache flags -> :class:`LatencyOptions`: how layers and models are timed
    (by ``--latency-aware``, and by the ``--max-drift`` search and its end-to-end check)."""
    from convtool.options import LatencyOptions

    session = session_options(p)
    return LatencyOptions(threads=session.threads or 1, opt_level=session.opt_level,
                          cache_dir=str(p["cache_dir"]) if p["cache_dir"] is not None else None,
                          use_cache=not p["no_cache"], providers=session.providers)


def latency_options(p: Values):
    """``--latency-aware`` and its flags -> :class:`LatencyOptions`, or ``None`` when off."""
    timing = timing_options(p)
    return timing if p["latency_aware"] else None


def image_preprocess(p: Values):
    """The image-folder flags -> :class:`ImagePreprocess`."""
    from convtool.options import ImagePreprocess

    return ImagePreprocess(
        size=parse_numbers(p["image_size"], "--image-size", int),  # type: ignore[arg-type]
        mean=parse_numbers(p["image_mean"], "--image-mean"),  # type: ignore[arg-type]
        std=parse_numbers(p["image_std"], "--image-std"),  # type: ignore[arg-type]
        layout=str(p["image_layout"]).upper(),  # type: ignore[arg-type]
        channel_order=str(p["channel_order"]).upper(),  # type: ignore[arg-type]
    )


def calibration_options(p: Values):
    """``--calibration`` and its flags -> :class:`CalibrationOptions`; ``None`` unless data is
    given or ``--max-drift`` needs the options (its random-input seed)."""
    from convtool.options import CalibrationOptions

    image = image_preprocess(p)
    if p["calibration"] is None and p.get("max_drift") is None:
        return None
    return CalibrationOptions(source=str(p["calibration"]) if p["calibration"] is not None else None,
                              holdout=p["holdout"], max_samples=p["calibration_samples"], image=image,
                              factors=p.get("refit", "data-aware"))


def convert_options(p: Values):
    """Every ``convert`` flag -> one :class:`ConvertOptions`."""
    from convtool.options import ConvertOptions

    return ConvertOptions(
        # --rank has a default; given together with --energy, CONVERT_RULES refuses it
        rank=parse_rank(None if p["energy"] is not None else p["rank"], p["energy"]),
        min_in_channels=p["min_in_channels"],
        include=tuple(p["include"] or ()),
        exclude=tuple(p["exclude"] or ()),
        fold_batchnorm=not p["no_fold_bn"],
        layout=p["layout"],
        input_shapes=input_shapes(p["input_shape"]),
        latency_aware=latency_options(p),
        timing=timing_options(p) if p["max_drift"] is not None else None,
        calibration=calibration_options(p),
        max_drift=p["max_drift"],
        metric=p["metric"],
        objective=p["objective"],
        search_ranks=parse_numbers(p["search_ranks"], "--search-ranks", int),  # type: ignore[arg-type]
        finetune=finetune_options(p),
        quantize=quantize_options(p),
    )


def quantize_options(p: Values):
    """``--quantize`` -> :class:`QuantizeOptions` (``None`` when off); only ``int8`` exists."""
    from convtool.options import QuantizeOptions

    value = p.get("quantize")
    if value is None:
        return None
    if str(value).lower() != "int8":
        raise OptionError(f"--quantize must be int8, got {value!r}")
    return QuantizeOptions()


def finetune_options(p: Values):
    """``--finetune`` and its flags -> :class:`FinetuneOptions` (``None`` when off)."""
    from convtool.options import FinetuneOptions

    if not p.get("finetune"):
        return None
    return FinetuneOptions(steps=p["finetune_steps"], seconds=p["finetune_seconds"])


def report_options(p: Values, **overrides: Any):
    """``report`` flags (or ``convert --report``'s, through ``overrides``) -> :class:`ReportOptions`."""
    from convtool.report import ReportOptions

    session = session_options(p)
    values: dict[str, Any] = dict(
        input_shapes=input_shapes(p.get("input_shape")),
        threads=session.threads,
        opt_level=session.opt_level,
        providers=session.providers,
    )
    if "runs" in p:  # the report command
        values.update(
            runs=p["runs"], warmup=p["warmup"], allow_spinning=p["spinning"], latency=not p["no_latency"],
            aa_check=p["aa_check"], profile=p["profile"], inputs=None if p["inputs"] is None else str(p["inputs"]),
            seed=p["seed"], min_speedup=p["min_speedup"], max_drift=p["max_drift"],
            min_top1_agreement=p["min_top1_agreement"], max_accuracy_drop=p["max_accuracy_drop"],
            min_param_reduction=p["min_param_reduction"], min_mac_reduction=p["min_mac_reduction"])
    values.update(overrides)
    return ReportOptions(**values)
