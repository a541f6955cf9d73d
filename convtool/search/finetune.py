"""The fine-tune driver (``--finetune``): distil the original model into the converted one.

Why
---
The calibration refit is linear and local: each layer's pointwise weights are solved by least
squares against the original layer output, blind to the nonlinearities after it and unable to
let later layers adapt to earlier ones.  A short knowledge distillation - teacher = the
original model, student = the converted one, no labels - trains all converted layers together
through the whole network.

What is trained, on what
------------------------
* **Parameters**: exactly the new factor weights and biases of the converted layers - the
  initializers that feed the ``Conv`` nodes named in each converted ``LayerChange.new_nodes``.
  Everything else (every other weight, the graph, names, opset, metadata) stays as it was.
* **Data**: the calibration samples, split with ``Dataset.split(holdout, seed)`` - the same
  split as the refit (with ``--max-drift``: the search's fit and held-out parts, so the held-out
  drift stays a number about unseen data).  Training sees only the fit part.
* **Augmentation** (both teacher and student see the same augmented batch, so any
  augmentation is label-safe; it only widens the input distribution): for float inputs with
  spatial axes (``[N, C, *spatial]``), a random integer shift per sample of up to
  ``shift`` x each spatial size (edge pixels replicated), optionally a random ``crop``, then
  Gaussian noise of ``noise`` x each channel's std; other float inputs get the noise only;
  integer inputs are left alone.
* **Loss** (``L`` per batch), with ``t`` the teacher and ``s`` the student:

      L = sum_o d(s_o, t_o)^2 + feature_weight * mean_l d(s_l, t_l)^2 + [T^2 KL(softmax(t/T) || softmax(s/T))]

  where ``o`` runs over the model outputs, ``l`` over the converted layers' outputs (same
  tensor names in both models) and ``d`` is the drift of :mod:`convtool.analysis.drift`
  (relative L2, normalised per channel for tensors with a channel axis) - so the output term is
  the square of the number ``--max-drift`` budgets.  The KL term (temperature ``T``) is added
  for outputs shaped like class scores ``[N, C]``.
* **Optimiser**: Adam with a per-tensor step size ``lr x scale`` (scale = the weight's RMS; for
  a bias, the RMS of its conv's output on the first batch).  Folded BatchNorm makes weights and
  biases differ in scale by up to 1e5, and one global step size made plain Adam diverge in two
  steps on a real detector.  The step size follows a cosine from ``lr`` to ``lr/10`` over the
  training's progress (the larger of steps done / steps and seconds used / seconds), after a
  5 % linear warm-up.

Write-back and the decision
---------------------------
The trained tensors are written into their initializers (cast to the stored dtype) of a copy of
the converted model; nothing else changes.  onnxruntime then runs the written-back model on the
held-out samples and its outputs must equal the trained torch student's (relative L2 below
``ORT_TOLERANCE``), which checks the interpreter and the write-back together.  The fine-tuned
weights are kept only if the held-out drift dropped; otherwise the calibrated model is handed
back unchanged.  The summary records drifts before and after, steps, time and the decision.

With ``--max-drift`` the search itself fine-tunes (:meth:`convtool.search.budget.BudgetSearch.deepen`):
the plan it chose and up to two deeper plans selected at looser internal budgets, each bounded
by ``--finetune-seconds``, on its own fit and held-out split; it keeps the deepest plan whose
fine-tuned held-out drift keeps the budget.  The record says so (``FinetuneSummary.search`` and
``search.finetune_attempts``).

torch is imported lazily, inside functions (``import convtool.search.finetune`` costs nothing);
a missing torch is one :class:`~convtool.errors.OptionError` saying how to install it.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

import numpy as np
import onnx

from convtool.analysis.drift import Drift, compare_outputs, looks_like_class_scores
from convtool.errors import OptionError
from convtool.graph import weights
from convtool.graph.export import copy_model
from convtool.options import CalibrationOptions, FinetuneOptions
from convtool.records import FinetuneSummary, LayerChange
from convtool.runtime.inputs import Dataset, fixed_batch, model_inputs
from convtool.runtime.run import run_outputs

log = logging.getLogger(__name__)

__all__ = ["INSTALL_HINT", "FinetuneResult", "check_ready", "finetune", "require_torch", "split",
           "stage_progress", "trainable_tensors", "with_search_note"]

INSTALL_HINT = ('--finetune needs torch: pip install "onnx-dwsconv[finetune]" '
                "(or pip install torch==2.13.0 for the CPU build)")
#: onnxruntime's outputs of the written-back model vs the trained student's (relative L2).
ORT_TOLERANCE = 1e-3
#: ``progress(done, total, loss)`` after each step.
StepProgress = Callable[[int, int, float], None]


def require_torch():
    """The torch module, or :class:`OptionError` with the install line."""
    try:
        import torch
    except ImportError:
        raise OptionError(INSTALL_HINT) from None
    return torch


def check_ready(data: Dataset | None) -> None:
    """Fail before any work: ``--finetune`` needs calibration data and torch."""
    if data is None:
        raise OptionError("--finetune needs calibration data: pass --calibration DATA")
    require_torch()


#: The stage label's detail follows this separator (``"fine-tuning | loss 0.012"``): a progress
#: display keys its bar on the part before it and shows the whole label.
DETAIL = " | "


def stage_progress(progress: Callable[[str, int, int], None] | None) -> StepProgress | None:
    """Adapt the pipeline's ``progress(stage, done, total)`` to the training loop's
    ``(done, total, loss)``: the stage is ``"fine-tuning | loss <recent mean>"``."""
    if progress is None:
        return None
    return lambda done, total, loss: progress(f"fine-tuning{DETAIL}loss {loss:.4g}", done, total)


def split(data: Dataset, fit_data: Dataset | None, calibration: CalibrationOptions) -> tuple[Dataset, Dataset | None]:
    """(train, held-out): the refit's split of ``data``; when a search chose ``fit_data`` (a
    part of ``data``), that part and the search's held-out part
    (:func:`convtool.search.budget.search` splits with ``seed + 1``)."""
    if fit_data is None or fit_data is data:
        return data.split(calibration.holdout, calibration.seed)
    fit, held = data.split(calibration.holdout, calibration.seed + 1)
    if fit.count != fit_data.count:  # not the search's split: fall back to splitting its fit part
        return fit_data.split(calibration.holdout, calibration.seed)
    return fit_data, held


@dataclass(frozen=True)
class Trainable:
    """The tensors fine-tuning trains, and the layer outputs its loss compares."""

    tensors: tuple[str, ...]  # initializer names
    bias_of: dict[str, str]  # bias initializer -> the output tensor of its conv
    features: tuple[str, ...]  # converted layers' output tensors (same names in both models)
    layers: int


def trainable_tensors(original: onnx.ModelProto, converted: onnx.ModelProto,
                      layers: Sequence[LayerChange]) -> Trainable:
    """The initializers feeding the Conv nodes of each converted layer's ``new_nodes``."""
    inits = weights.initializers(converted)
    nodes = {n.name: n for n in converted.graph.node}
    originals = {o for n in original.graph.node for o in n.output}
    tensors: list[str] = []
    bias_of: dict[str, str] = {}
    features: list[str] = []
    count = 0
    for layer in layers:
        if not layer.converted or not layer.new_nodes:
            continue
        count += 1
        for name in layer.new_nodes:
            node = nodes.get(name)
            if node is None or node.op_type != "Conv":
                continue
            for k, inp in enumerate(node.input[1:3], start=1):
                if inp and inp in inits and inp not in tensors:
                    tensors.append(inp)
                    if k == 2:
                        bias_of[inp] = node.output[0]
        last = nodes.get(layer.new_nodes[-1])
        if last is not None and last.output[0] in originals:
            features.append(last.output[0])
    return Trainable(tuple(tensors), bias_of, tuple(features), count)


@dataclass
class FinetuneResult:
    model: onnx.ModelProto
    summary: FinetuneSummary


def _drift(reference: dict[str, np.ndarray], model: onnx.ModelProto, data: Dataset, batch: int) -> Drift:
    return compare_outputs(reference, run_outputs(model, data, batch))


def _augmentation_text(options: FinetuneOptions, spatial: bool) -> str:
    parts = []
    if spatial and options.shift > 0:
        parts.append(f"random shifts up to {options.shift:.1%} of each spatial size (edges replicated)")
    if spatial and options.crop:
        parts.append(f"random {options.crop}-pixel crops")
    if options.noise > 0:
        parts.append(f"Gaussian noise {options.noise:g} x channel std")
    return ", ".join(parts) or "none"


def _not_run(reason: str, started: float, fit: Dataset | None = None, held: Dataset | None = None) -> FinetuneSummary:
    return FinetuneSummary(kept=False, decision=f"not run: {reason}", held_out_drift_before=None,
                           held_out_drift_after=None, stopped_by="not run",
                           seconds=round(time.perf_counter() - started, 3),
                           fit_samples=fit.count if fit is not None else 0,
                           held_out_samples=held.count if held is not None else 0)


def finetune(original: onnx.ModelProto, converted: onnx.ModelProto, layers: Sequence[LayerChange],
             fit: Dataset, held: Dataset | None, options: FinetuneOptions, *, batch_size: int = 32,
             steps: int | None = None, progress: StepProgress | None = None) -> FinetuneResult:
    """Distil ``original`` into ``converted`` (see the module docstring); returns the model to
    hand out (fine-tuned, or ``converted`` itself when not kept) and the summary.

    ``steps`` overrides ``options.steps`` (the ``--max-drift`` trials use short runs).
    """
    torch = require_torch()
    started = time.perf_counter()
    from convtool.runtime import torch_graph

    train = trainable_tensors(original, converted, layers)
    reason = _unsupported(torch_graph, original, converted, train)
    if reason is not None:
        return FinetuneResult(converted, _not_run(reason, started, fit, held))
    check = held if held is not None else fit
    torch.manual_seed(options.seed)
    teacher = torch_graph.TorchGraph(original)
    student = torch_graph.TorchGraph(converted, train.tensors)
    # the interpreter must reproduce onnxruntime before we train anything with it
    reason = _interpreter_mismatch(torch, student, converted, check, batch_size)
    if reason is not None:
        return FinetuneResult(converted, _not_run(reason, started, fit, held))

    reference_held = run_outputs(original, held, batch_size) if held is not None else None
    reference_fit = run_outputs(original, fit, batch_size)
    before = _Drifts.of(reference_held, reference_fit, converted, fit, held, batch_size)

    losses, done, stopped_by = _train_on_threads(torch, teacher, student, train, fit, original, options,
                                                 steps or options.steps, batch_size, progress)
    tuned = _written_back(converted, student)
    # onnxruntime must give what the trained student gives
    ort_error = _ort_error(torch, student, tuned, check, batch_size)
    after = _Drifts.of(reference_held, reference_fit, tuned, fit, held, batch_size)

    kept, decision = _decide(ort_error, before.decisive, after.decisive, held is not None)
    log.info("fine-tune: %s (%d steps, %.1f s)", decision, done, time.perf_counter() - started)
    summary = FinetuneSummary(
        kept=kept, decision=decision,
        held_out_drift_before=before.held.drift if before.held is not None else None,
        held_out_drift_after=after.held.drift if after.held is not None else None,
        fit_drift_before=before.fit.drift, fit_drift_after=after.fit.drift,
        top1_agreement_before=before.decisive.top1_agreement, top1_agreement_after=after.decisive.top1_agreement,
        steps=done, stopped_by=stopped_by, seconds=round(time.perf_counter() - started, 3),
        fit_samples=fit.count, held_out_samples=held.count if held is not None else 0,
        layers=train.layers, tensors=len(train.tensors),
        parameters=int(sum(p.numel() for p in student.parameters.values())),
        loss_first=losses[0] if losses else None, loss_last=float(np.mean(losses[-10:])) if losses else None,
        augmentation=_augmentation_text(options, _spatial(original)),
        loss=_loss_text(options, train, reference_fit), ort_error=ort_error,
        torch_version=str(torch.__version__),
    )
    return FinetuneResult(tuned if kept else converted, summary)


def _unsupported(torch_graph, original: onnx.ModelProto, converted: onnx.ModelProto, train: Trainable) -> str | None:
    """Why fine-tuning cannot start on these models (nothing to train, ops the interpreter
    lacks), or ``None``."""
    if not train.tensors:
        return "no converted layer has factor weights to train"
    gaps = torch_graph.unsupported(original) + torch_graph.unsupported(converted)
    if gaps:
        more = f" and {len(gaps) - 3} more" if len(gaps) > 3 else ""
        return f"the torch interpreter does not run {', '.join(dict.fromkeys(gaps[:3]))}{more}"
    return None


def _interpreter_mismatch(torch, student, converted: onnx.ModelProto, check: Dataset, batch_size: int) -> str | None:
    """Why the torch interpreter cannot stand in for onnxruntime on ``converted`` (it fails, or
    its outputs on one batch of ``check`` differ), or ``None``."""
    sample = check.take(np.arange(min(check.count, batch_size)))
    ort_start = run_outputs(converted, sample, batch_size)
    try:
        with torch.no_grad():
            torch_start = student.run(sample.arrays)
    except (NotImplementedError, RuntimeError, ValueError, KeyError, IndexError) as exc:
        return f"the torch interpreter failed: {exc}"
    gap = _max_rel(ort_start, {k: v.numpy() for k, v in torch_start.items()})
    if not gap <= ORT_TOLERANCE:
        return f"the torch interpreter differs from onnxruntime on this model (relative L2 {gap:.2g})"
    return None


@dataclass(frozen=True)
class _Drifts:
    """One model's drift on the held-out samples (``None`` without them) and on the fit samples."""

    held: Drift | None
    fit: Drift

    @classmethod
    def of(cls, reference_held: dict[str, np.ndarray] | None, reference_fit: dict[str, np.ndarray],
           model: onnx.ModelProto, fit: Dataset, held: Dataset | None, batch_size: int) -> _Drifts:
        held_drift = _drift(reference_held, model, held, batch_size) if held is not None else None
        return cls(held_drift, _drift(reference_fit, model, fit, batch_size))

    @property
    def decisive(self) -> Drift:
        """The drift the keep-or-discard decision goes by: held-out when there is one."""
        return self.held if self.held is not None else self.fit


def _train_on_threads(torch, teacher, student, train: Trainable, fit: Dataset, model: onnx.ModelProto,
                      options: FinetuneOptions, total_steps: int, batch_size: int,
                      progress: StepProgress | None) -> tuple[list[float], int, str]:
    """:func:`_train` with torch on ``options.threads`` threads (restored afterwards)."""
    threads = torch.get_num_threads()
    if options.threads is not None:
        torch.set_num_threads(options.threads)
    try:
        return _train(torch, teacher, student, train, fit, model, options, total_steps, batch_size, progress)
    finally:
        torch.set_num_threads(threads)


def _written_back(converted: onnx.ModelProto, student) -> onnx.ModelProto:
    """A copy of ``converted`` with the student's trained tensors in their initializers
    (cast to the stored dtype)."""
    tuned = copy_model(converted)
    for name, param in student.parameters.items():
        dtype = weights.read(tuned, name).dtype
        weights.set_initializer(tuned, name, param.detach().numpy().astype(dtype))
    return tuned


def _ort_error(torch, student, tuned: onnx.ModelProto, check: Dataset, batch_size: int) -> float:
    """Relative L2 between onnxruntime's outputs of ``tuned`` and the trained student's on ``check``."""
    with torch.no_grad():
        torch_out = student.run(check.arrays)
    ort_out = run_outputs(tuned, check, batch_size)
    return _max_rel(ort_out, {k: v.numpy() for k, v in torch_out.items()})


def _decide(ort_error: float, before: Drift, after: Drift, has_held: bool) -> tuple[bool, str]:
    """(kept, decision text): kept when onnxruntime agrees with the student and the drift dropped."""
    where = "held-out" if has_held else "fitted (no held-out samples)"
    if not ort_error <= ORT_TOLERANCE:
        return False, (f"discarded: onnxruntime's outputs differ from the trained student's "
                       f"(relative L2 {ort_error:.2g}); calibrated weights kept")
    if after.drift < before.drift:
        return True, f"kept: {where} drift {before.drift:.4g} -> {after.drift:.4g}"
    return False, (f"discarded: {where} drift did not drop ({before.drift:.4g} -> "
                   f"{after.drift:.4g}); calibrated weights kept")


def _spatial(model: onnx.ModelProto) -> bool:
    """Whether ``model`` has a float input with spatial axes (``[N, C, *spatial]``)."""
    return any(s.dims is not None and len(s.dims) >= 3 and s.dtype.kind == "f" for s in model_inputs(model))


def _loss_text(options: FinetuneOptions, train: Trainable, reference_fit: dict[str, np.ndarray]) -> str:
    """The loss, in words, as the summary records it."""
    loss_text = "drift^2 of the outputs"
    if options.feature_weight > 0 and train.features:
        loss_text += f" + {options.feature_weight:g} x mean drift^2 of {len(train.features)} converted layers' outputs"
    if options.temperature > 0 and any(looks_like_class_scores(v) for v in reference_fit.values()):
        loss_text += f" + KL of class scores (T = {options.temperature:g})"
    return loss_text


def _max_rel(reference: dict[str, np.ndarray], candidate: dict[str, np.ndarray]) -> float:
    """The largest relative L2 difference over the outputs of ``reference``
    (:func:`convtool.analysis.drift.compare_outputs`); ``inf`` when the outputs do not match."""
    try:
        return compare_outputs(reference, candidate).rel_l2
    except ValueError:  # a missing output or another shape
        return math.inf


# --- training ---------------------------------------------------------------------------------

def _channel_drift2(torch, s, t):
    """Squared drift (``convtool.analysis.drift.channel_rel_l2``) of one batch, differentiable."""
    if s.dim() < 3:
        return ((s - t) ** 2).sum() / (t ** 2).sum().clamp_min(1e-12)
    axes = (0, *range(2, t.dim()))
    norms = (t ** 2).sum(dim=axes)
    diffs = ((s - t) ** 2).sum(dim=axes)
    floor = (1e-3 ** 2) * norms.mean()
    return (diffs / torch.maximum(norms, floor).clamp_min(1e-12)).mean()


def _augment(torch, feeds: dict, specs, options: FinetuneOptions, rng: np.random.Generator) -> dict:
    out = {}
    for name, x in feeds.items():
        spec = specs.get(name)
        if not x.is_floating_point():
            out[name] = x
            continue
        if x.dim() >= 3:
            sizes = list(x.shape[2:])
            if options.crop and spec is not None and spec.dims is not None and any(d is None for d in spec.dims[2:]):
                starts = [int(rng.integers(0, max(s - options.crop, 0) + 1)) for s in sizes]
                index = (slice(None), slice(None), *(slice(a, a + options.crop) for a in starts))
                x = x[index]
                sizes = list(x.shape[2:])
            if options.shift > 0:
                x = _shift(torch, x, [max(1, int(round(options.shift * s))) for s in sizes], rng)
        if options.noise > 0:
            axes = (0, *range(2, x.dim())) if x.dim() >= 3 else (0,)
            std = x.std(dim=axes, keepdim=True) if x.shape[0] > 1 else x.std().reshape([1] * x.dim())
            x = x + options.noise * std * torch.randn_like(x)
        out[name] = x
    return out


def _shift(torch, x, limits: list[int], rng: np.random.Generator):
    """Each sample moved by a random integer offset per spatial axis, edges replicated."""
    n_sp = x.dim() - 2
    pads: list[int] = []
    for m in reversed(limits):
        pads += [m, m]
    if n_sp > 3:
        return x
    padded = torch.nn.functional.pad(x, pads, mode="replicate")
    parts = []
    for i in range(x.shape[0]):
        offsets = [int(rng.integers(0, 2 * m + 1)) for m in limits]
        index = (i, slice(None), *(slice(o, o + s) for o, s in zip(offsets, x.shape[2:])))
        parts.append(padded[index])
    return torch.stack(parts)


def _train(torch, teacher, student, train: Trainable, fit: Dataset, model: onnx.ModelProto,
           options: FinetuneOptions, total_steps: int, batch_size: int,
           progress: StepProgress | None) -> tuple[list[float], int, str]:
    specs = {s.name: s for s in model_inputs(model)}
    rng = np.random.default_rng(options.seed)
    arrays = {k: torch.from_numpy(np.ascontiguousarray(v, dtype=np.float32) if v.dtype.kind == "f" else v)
              for k, v in fit.arrays.items()}
    n = fit.count
    size = fixed_batch(model) or min(batch_size, n)
    features = list(train.features) if options.feature_weight > 0 else []
    outputs = list(teacher.output_names)
    optimiser = _optimiser(torch, student, train, {k: v[: size] for k, v in arrays.items()}, options)

    losses: list[float] = []
    order = rng.permutation(n)
    cursor = 0
    train_start = time.perf_counter()
    stopped_by = "steps"
    done = 0
    for step in range(total_steps):
        elapsed = time.perf_counter() - train_start
        if options.seconds is not None and elapsed >= options.seconds:
            stopped_by = "time"
            break
        factor = _lr_factor(step, total_steps, elapsed, options)
        for g in optimiser.param_groups:
            g["lr"] = g["base"] * factor
        if cursor + size > n:
            order, cursor = rng.permutation(n), 0
        index = torch.from_numpy(np.sort(order[cursor:cursor + size]))
        cursor += size
        feeds = _augment(torch, {k: v[index] for k, v in arrays.items()}, specs, options, rng)
        loss = _batch_loss(torch, teacher, student, feeds, outputs, features, options)
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        value = float(loss.detach())
        if not math.isfinite(value):
            stopped_by = "diverged"
            break
        optimiser.step()
        losses.append(value)
        done = step + 1
        if progress is not None:
            progress(done, total_steps, float(np.mean(losses[-10:])))
    return losses, done, stopped_by


def _optimiser(torch, student, train: Trainable, first: dict, options: FinetuneOptions):
    """Adam with per-tensor step sizes ``lr x scale``: a weight's RMS; a bias: the RMS of its
    conv's output on the ``first`` batch (each group keeps its ``base`` step size)."""
    with torch.no_grad():
        conv_out = student.run(first, sorted(set(train.bias_of.values()))) if train.bias_of else {}
    groups = []
    for name, param in student.parameters.items():
        if name in train.bias_of:
            scale = float(conv_out[train.bias_of[name]].pow(2).mean().sqrt())
        else:
            scale = float(param.detach().pow(2).mean().sqrt())
        scale = scale if scale > 0 and math.isfinite(scale) else 1.0
        groups.append({"params": [param], "lr": options.lr * scale, "base": options.lr * scale})
    return torch.optim.Adam(groups, betas=(0.9, 0.999))


def _lr_factor(step: int, total_steps: int, elapsed: float, options: FinetuneOptions) -> float:
    """The step-size factor: a 5 % linear warm-up, then a cosine from 1 to 0.1 over the
    training's progress (the larger of steps done / steps and seconds used / seconds)."""
    frac = max(step / total_steps, elapsed / options.seconds if options.seconds else 0.0)
    warm = min(1.0, (step + 1) / max(1, int(0.05 * total_steps)))
    return warm * (0.1 + 0.45 * (1 + math.cos(math.pi * min(frac, 1.0))))


def _batch_loss(torch, teacher, student, feeds: dict, outputs: list[str], features: list[str],
                options: FinetuneOptions):
    """The distillation loss of one batch (the module docstring's ``L``), differentiable."""
    with torch.no_grad():
        t = teacher.run(feeds, outputs + features)
    s = student.run(feeds, outputs + features)
    loss = sum(_channel_drift2(torch, s[o], t[o]) for o in outputs if s[o].is_floating_point())
    if options.temperature > 0:
        temp = options.temperature
        for o in outputs:
            if t[o].dim() == 2 and t[o].shape[1] > 1 and t[o].is_floating_point():
                loss = loss + temp * temp * torch.nn.functional.kl_div(
                    torch.log_softmax(s[o] / temp, dim=1), torch.log_softmax(t[o] / temp, dim=1),
                    reduction="batchmean", log_target=True)
    if features:
        loss = loss + options.feature_weight * sum(_channel_drift2(torch, s[f], t[f]) for f in features) / len(features)
    return loss


# --- --max-drift ---------------------------------------------------------------------------------

SEARCH_NOTE = ("fine-tuned inside the --max-drift search, on its fit and held-out split: the chosen plan and "
               "deeper ones selected at looser internal budgets; the deepest whose fine-tuned held-out drift "
               "(its 95% bound) keeps the budget was kept (search.finetune_attempts)")


def with_search_note(summary: FinetuneSummary) -> FinetuneSummary:
    """``summary`` saying how it composed with the ``--max-drift`` search."""
    return replace(summary, search=SEARCH_NOTE)
