"""INT8 static quantization of any model with onnxruntime's own tools - never a quantizer of
our own.

What :func:`quantize_model` does, in order:

1. ``onnxruntime.quantization.shape_inference.quant_pre_process``: symbolic shape inference,
   onnxruntime's basic graph optimisations (constant folding, Conv + BatchNormalization /
   Add / Mul fusion), ONNX shape inference.  Where it fails (a model its shape inference
   cannot follow) it is retried without symbolic shape inference, then skipped; the summary
   says which.
2. ``onnxruntime.quantization.quantize_static`` in the QDQ format (QuantizeLinear /
   DequantizeLinear pairs around float ops, which onnxruntime fuses into integer kernels when
   the session is built), weights per output channel, activation ranges calibrated on
   :class:`convtool.runtime.inputs.Dataset` batches through :class:`DatasetReader` (a seeded
   choice of at most ``samples`` samples, ``batch_size`` per run; a fixed-batch model gets
   its own batch).
3. Validation: ``onnx.checker`` with full checking on the written file, then one onnxruntime
   run on one calibration batch whose outputs must be finite.  Any failure of the three steps
   is a one-line :class:`~convtool.errors.QuantizationError`.

The defaults of :class:`~convtool.options.QuantizeOptions`, chosen by measurement
(``python benchmarks/int8.py --options``; onnxruntime 1.32 CPU, 2 threads, 2 cores shared with
other jobs; drift = per-channel relative L2 of the outputs against the float model on
held-out samples - 360 / 600 digits images, 16 YOLOv8n images; speedup against the float
model, interleaved medians, 100 runs; 64 calibration samples)::

    option                   digits_cnn         noisy_digits       yolov8n
                             drift   speedup    drift   speedup    drift   speedup
    uint8 minmax (default)   0.0138  2.01x      0.0164  1.59x      0.0356  2.32x
    uint8 percentile         0.0142  2.07x      0.0163  1.60x      0.0391  2.21x
    uint8 entropy            0.0138  2.08x      0.0164  1.61x      0.0356  2.23x
    int8 minmax (S8S8)       0.0138  2.09x      0.0164  0.69x      0.0370  0.59x
    per-tensor weights       0.0228  2.08x      0.0170  1.62x      0.0420  2.23x
    output tail quantized    0.0138  2.11x      0.0164  1.64x      0.0958  2.20x
    Conv only                0.0140  1.82x      0.0105  1.46x      0.0361  1.89x

(top-1 agreement with the float model: 100% on digits, 99.8% on noisy_digits for every row
but per-tensor and Conv only, 100%; 95% intervals of the speedups are within +-0.1x.)

* **method: MinMax.**  Percentile (99.999th) and Entropy are no better on any of the three
  (Entropy gave MinMax's drift to 4 digits, Percentile up to 10% more on YOLOv8n) and their
  histograms cost calibration time and memory.
* **activations uint8, weights int8 (U8S8).**  S8S8 (int8 activations) drifts the same but
  ran at 0.6-0.7x of the *float* model's speed on noisy_digits and YOLOv8n (both have
  residual Adds; which onnxruntime kernels fall back was not investigated).
* **per-channel weights.**  Per-tensor scales cost up to 65% more drift (digits) at no gain
  in speed.
* **every op type onnxruntime quantizes, but not the output tail** (``float_tail``: the nodes
  after the last Conv / Gemm / MatMul stay float).  YOLOv8n's tail decodes boxes (pixels, up
  to 320) and concatenates them with class scores (0..1): one uint8 scale for that tensor
  erased the scores (drift 0.096 -> 0.036, same speed).  Quantizing only Conv leaves
  Q/DQ pairs around every elementwise op: 10-20% slower, and more accurate only on
  noisy_digits.

``onnxruntime`` is imported inside the functions (``convtool --help`` stays instant).
"""

from __future__ import annotations

import contextlib
import io
import logging
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx

from convtool.errors import ConvToolError, QuantizationError
from convtool.options import QuantizeOptions, SessionOptions
from convtool.records import QuantizationSummary
from convtool.runtime.inputs import Dataset, batches, fixed_batch

__all__ = ["Quantized", "DatasetReader", "quantize_model", "quantized_nodes", "calibration_subset"]

log = logging.getLogger(__name__)


@dataclass
class Quantized:
    model: onnx.ModelProto
    summary: QuantizationSummary


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:200] if text else type(exc).__name__


def calibration_subset(data: Dataset, options: QuantizeOptions) -> Dataset:
    """At most ``options.samples`` samples, a seeded choice (kept in their order)."""
    if data.count <= options.samples:
        return data
    index = np.sort(np.random.default_rng(options.seed).choice(data.count, options.samples, replace=False))
    return data.take(index)


class DatasetReader:
    """onnxruntime's ``CalibrationDataReader`` protocol over :func:`convtool.runtime.inputs.batches`.

    (Duck-typed - ``get_next`` returning a feed dict, then ``None`` - so that this module does
    not import onnxruntime at module level; ``quantize_static`` only calls ``get_next``.)
    """

    def __init__(self, data: Dataset, model: onnx.ModelProto, batch_size: int):
        self._feeds: Iterator[dict[str, np.ndarray]] = iter(list(batches(data, model, batch_size)))

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._feeds, None)

    def __iter__(self):
        return self

    def __next__(self) -> dict[str, np.ndarray]:
        feed = self.get_next()
        if feed is None:
            raise StopIteration
        return feed


def _types(options: QuantizeOptions):
    from onnxruntime.quantization import CalibrationMethod, QuantType

    types = {"uint8": QuantType.QUInt8, "int8": QuantType.QInt8}
    methods = {"minmax": CalibrationMethod.MinMax, "percentile": CalibrationMethod.Percentile,
               "entropy": CalibrationMethod.Entropy}
    return types[options.activations], types[options.weights], methods[options.method]


def _preprocess(source: Path, target: Path) -> str:
    """onnxruntime's pre-processing, retried without symbolic shape inference; what happened.

    Run inside ``source``'s (temporary) folder: when its symbolic shape inference gives up,
    onnxruntime 1.32 saves ``sym_shape_infer_temp.onnx`` into the *current* folder before
    raising, which must not land in the user's folder.  (The working directory is process
    state; convtool runs this single-threaded.)
    """
    from onnxruntime.quantization.shape_inference import quant_pre_process

    with contextlib.chdir(source.parent):
        return _preprocess_here(quant_pre_process, source, target)


def _preprocess_here(quant_pre_process, source: Path, target: Path) -> str:
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            quant_pre_process(str(source), str(target))
        return "done"
    except Exception as exc:  # noqa: BLE001 - symbolic shape inference raises many types
        first = _first_line(exc)
        log.info("quant_pre_process failed (%s); retrying without symbolic shape inference", first)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            quant_pre_process(str(source), str(target), skip_symbolic_shape=True)
        return f"done without symbolic shape inference ({first})"
    except Exception as exc:  # noqa: BLE001
        target.write_bytes(source.read_bytes())
        return f"skipped: {_first_line(exc)}"


#: Ops that do the arithmetic INT8 is for; what follows the last of them stays float (``float_tail``).
COMPUTE_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul")


def float_tail(model: onnx.ModelProto) -> list[str]:
    """Names of the nodes from which no :data:`COMPUTE_OPS` node is reachable (the output tail:
    a detector's box decoding and score concat, a classifier's softmax).  Nodes are in
    topological order, as a valid ONNX graph's are."""
    consumers: dict[str, list[int]] = {}
    for i, n in enumerate(model.graph.node):
        for t in n.input:
            consumers.setdefault(t, []).append(i)
    reaches = [False] * len(model.graph.node)
    for i in range(len(model.graph.node) - 1, -1, -1):
        n = model.graph.node[i]
        reaches[i] = n.op_type in COMPUTE_OPS or any(reaches[j] for o in n.output for j in consumers.get(o, []))
    return [n.name for n, r in zip(model.graph.node, reaches) if not r]


def _name_nodes(path: Path) -> onnx.ModelProto:
    """The model at ``path`` with every node named (exclusion lists go by name), rewritten in place."""
    model = onnx.load(str(path))
    taken = {n.name for n in model.graph.node}
    changed = False
    for i, n in enumerate(model.graph.node):
        if not n.name:
            name, k = f"{n.op_type}_{i}", 0
            while name in taken:
                k += 1
                name = f"{n.op_type}_{i}_{k}"
            n.name, changed = name, True
            taken.add(name)
    if changed:
        onnx.save_model(model, str(path))
    return model


#: Per-channel QDQ needs DequantizeLinear's ``axis`` attribute: opset 13.
QDQ_OPSET = 13


def _opset_for_qdq(model: onnx.ModelProto) -> onnx.ModelProto:
    """``model``, or a copy converted to opset 13 when it is older (onnx's version converter;
    e.g. the PP-OCR models are opset 11, whose DequantizeLinear has no per-channel axis)."""
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), QDQ_OPSET)
    if opset >= QDQ_OPSET:
        return model
    from onnx import version_converter

    try:
        return version_converter.convert_version(model, QDQ_OPSET)
    except Exception as exc:  # noqa: BLE001 - the converter raises RuntimeError and others
        raise QuantizationError(f"the model is opset {opset}; converting it to opset {QDQ_OPSET} for per-channel "
                                f"INT8 failed: {_first_line(exc)}") from None


def quantized_nodes(model: onnx.ModelProto) -> int:
    """Nodes (other than Q/DQ themselves) that read a DequantizeLinear output."""
    dq = {o for n in model.graph.node if n.op_type == "DequantizeLinear" for o in n.output}
    return sum(1 for n in model.graph.node
               if n.op_type not in ("QuantizeLinear", "DequantizeLinear") and any(i in dq for i in n.input))


def _validate(path: Path, model: onnx.ModelProto, data: Dataset, batch_size: int) -> None:
    from convtool.runtime.session import make_session

    try:
        onnx.checker.check_model(str(path), full_check=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as exc:
        raise QuantizationError(f"the quantized model is not a valid ONNX graph: {_first_line(exc)}") from None
    feed = next(batches(data, model, batch_size), None)
    if feed is None:
        return
    try:
        outputs = make_session(str(path), SessionOptions(threads=None)).run(None, feed)
    except ConvToolError as exc:
        raise QuantizationError(f"the quantized model does not run: {exc}") from None
    except Exception as exc:  # noqa: BLE001 - onnxruntime's own error types
        raise QuantizationError(f"the quantized model does not run: {_first_line(exc)}") from None
    for out in outputs:
        a = np.asarray(out)
        if a.dtype.kind == "f" and not np.all(np.isfinite(a)):
            raise QuantizationError("the quantized model gives NaN or infinite outputs on calibration data")


def quantize_model(model: onnx.ModelProto, data: Dataset, options: QuantizeOptions | None = None) -> Quantized:
    """Pre-process, quantize (static, QDQ) and validate ``model``; the caller's model is not modified.

    ``data``: calibration samples for ``model``'s inputs (a seeded subset of at most
    ``options.samples`` is used).  Raises :class:`~convtool.errors.QuantizationError` when a
    step fails, :class:`~convtool.errors.CalibrationDataError` when the data cannot fill one
    batch of a fixed-batch model.
    """
    import onnxruntime

    options = options or QuantizeOptions()
    subset = _checked_subset(model, data, options)
    types = _types(options)
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="convtool-int8-") as tmp:
        run = _quantize_in(Path(tmp), model, subset, options, types)
    summary = QuantizationSummary(
        options=options.describe(),
        activations=options.activations,
        weights=options.weights,
        per_channel=options.per_channel,
        method=options.method,
        op_types=tuple(options.op_types),
        calibration=data.source,
        samples=subset.count,
        preprocess=run.preprocess,
        quantized_nodes=quantized_nodes(run.model),
        float_nodes=len(run.excluded),
        onnxruntime=onnxruntime.__version__,
        seconds=time.perf_counter() - start,
        size_before=run.size_before,
        size_after=run.size_after,
    )
    return Quantized(run.model, summary)


def _checked_subset(model: onnx.ModelProto, data: Dataset, options: QuantizeOptions) -> Dataset:
    """The calibration subset, or :class:`CalibrationDataError` when it cannot fill one batch."""
    from convtool.errors import CalibrationDataError

    subset = calibration_subset(data, options)
    if not list(batches(subset, model, options.batch_size)):
        raise CalibrationDataError(f"{data.source}: {subset.count} sample(s), fewer than the model's fixed batch "
                                   f"of {fixed_batch(model)}; quantization needs at least one full batch")
    return subset


@dataclass
class _Run:
    """What :func:`_quantize_in` leaves behind once its temporary folder is gone."""

    model: onnx.ModelProto
    preprocess: str
    excluded: list[str]
    size_before: int
    size_after: int


def _quantize_in(folder: Path, model: onnx.ModelProto, subset: Dataset, options: QuantizeOptions, types) -> _Run:
    """Pre-process, quantize and validate ``model`` with files in ``folder``."""
    source, prepared, output = folder / "float.onnx", folder / "prepared.onnx", folder / "int8.onnx"
    onnx.save_model(_opset_for_qdq(model), str(source))
    preprocess = _preprocess(source, prepared)
    excluded = float_tail(_name_nodes(prepared)) if options.float_tail else []
    _quantize_static(prepared, output, model, subset, options, types, excluded)
    _validate(output, model, subset, options.batch_size)
    quantized = onnx.load(str(output))
    return _Run(quantized, preprocess, excluded, source.stat().st_size, output.stat().st_size)


def _quantize_static(prepared: Path, output: Path, model: onnx.ModelProto, subset: Dataset, options: QuantizeOptions,
                     types, excluded: list[str]) -> None:
    """onnxruntime's ``quantize_static`` (QDQ), quiet; its failures as :class:`QuantizationError`."""
    from onnxruntime.quantization import QuantFormat, quantize_static

    activations, weights, method = types
    chatter = io.StringIO()  # its histogram calibrators print; the library never does
    try:
        with contextlib.redirect_stdout(chatter), _quiet_root_logger():
            quantize_static(
                str(prepared), str(output), DatasetReader(subset, model, options.batch_size),
                quant_format=QuantFormat.QDQ,
                op_types_to_quantize=list(options.op_types) or None,
                per_channel=options.per_channel,
                activation_type=activations,
                weight_type=weights,
                calibrate_method=method,
                nodes_to_exclude=excluded,
            )
    except ConvToolError:
        raise
    except Exception as exc:  # noqa: BLE001 - onnxruntime raises many types
        raise QuantizationError(f"onnxruntime could not quantize the model: {_first_line(exc)}") from None
    finally:
        if chatter.getvalue():
            log.debug("quantize_static: %s", chatter.getvalue().strip())


def quantize_for_timing(model: onnx.ModelProto, options: QuantizeOptions | None = None,
                        samples: int = 2, seed: int = 0) -> onnx.ModelProto:
    """``model`` (a one-layer timing model with static input shapes) quantized as
    :func:`quantize_model` would quantize it, calibrated on ``samples`` seeded standard-normal
    inputs: the activation ranges do not change which kernels onnxruntime runs, so the timing
    is that of the deployed INT8 form.  No pre-processing, no validation run; tens of
    milliseconds (a 64-channel 3x3 conv: 0.04-0.09 s).  Never use its outputs."""
    from onnxruntime.quantization import QuantFormat, quantize_static

    options = options or QuantizeOptions()
    rng = np.random.default_rng(seed)
    feeds = []
    for _ in range(samples):
        feed = {}
        for vi in model.graph.input:
            dims = [int(d.dim_value) for d in vi.type.tensor_type.shape.dim]
            feed[vi.name] = rng.standard_normal(dims).astype(np.float32)
        feeds.append(feed)
    activations, weights, method = _types(options)
    with tempfile.TemporaryDirectory(prefix="convtool-int8-") as tmp:
        source, output = Path(tmp) / "float.onnx", Path(tmp) / "int8.onnx"
        onnx.save_model(_opset_for_qdq(model), str(source))
        reader = iter(feeds)
        try:
            with contextlib.redirect_stdout(io.StringIO()), _quiet_root_logger():
                quantize_static(str(source), str(output), _Reader(reader), quant_format=QuantFormat.QDQ,
                                op_types_to_quantize=list(options.op_types) or None, per_channel=options.per_channel,
                                activation_type=activations, weight_type=weights, calibrate_method=method)
        except Exception as exc:  # noqa: BLE001 - onnxruntime raises many types
            raise QuantizationError(f"onnxruntime could not quantize a one-layer model: {_first_line(exc)}") from None
        return onnx.load(str(output))


class _Reader:
    def __init__(self, feeds):
        self._feeds = feeds

    def get_next(self):
        return next(self._feeds, None)


@contextlib.contextmanager
def _quiet_root_logger():
    """onnxruntime's quantizer warns through the root logger ("consider pre-processing"): the
    library does not speak for it; silenced for the call."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        yield
    finally:
        root.setLevel(level)
