"""Output drift between a reference and a candidate model (pure numpy): the one drift module.

Per output, with ``a`` the reference and ``b`` the candidate, in float64:

* **drift** (what ``--max-drift`` budgets, in ``convert`` and in ``report`` alike): the
  relative L2 error normalised *per channel* for outputs with a channel axis (3-D and more,
  channels on axis 1): the root mean square over channels of ``||b_c - a_c|| / ||a_c||``.  A
  detector that packs boxes and class scores in one tensor needs it: on YOLOv8n
  (``[N, 4 + 18, anchors]``) a whole-tensor relative L2 of 0.05, dominated by pixel-sized box
  coordinates, hid a class-score drift of 0.57.  A channel whose reference is (near) zero is
  measured against the output's RMS channel norm instead.  2-D outputs (class scores
  ``[N, C]``) use the whole-tensor form, so there the two numbers are equal;
* plain relative L2 error ``||b - a||_2 / ||a||_2`` of the flattened output (0 when both are
  zero, ``inf`` when only ``a`` is);
* cosine similarity ``<a, b> / (||a|| ||b||)`` (1 when both are zero, 0 when exactly one is);
* max abs error ``max |b - a|``;
* top-1 agreement, only for outputs that look like class scores (2-D ``[N, C]`` with ``C > 1``):
  the fraction of rows whose arg-max is the same.

Across outputs the summary is the worst case: the largest drift, relative L2 and max abs
error, the smallest cosine and top-1 agreement. A gate on drift therefore holds for every
output.  :meth:`Drift.value` gives the number a metric budgets: ``rel_l2`` -> ``drift``,
``top1`` -> ``1 - top-1 agreement``.

:func:`top1_accuracy` scores class-score outputs against integer labels; :func:`accuracy` is a
model's accuracy (its first class-score output, :func:`class_scores`), for report and sweep alike;
:func:`label_problem` says when labels cannot be classes of those scores (ids outside
``0..C-1``: such samples always count as wrong, so the accuracy would mislead silently).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from convtool.errors import CalibrationDataError

__all__ = [
    "channel_rel_l2",
    "OutputDrift",
    "Drift",
    "output_drift",
    "compare_outputs",
    "looks_like_class_scores",
    "top1_accuracy",
    "class_scores",
    "accuracy",
    "label_problem",
]


@dataclass(frozen=True)
class OutputDrift:
    """Drift of one output."""

    name: str
    rel_l2: float
    cosine: float
    max_abs: float
    top1_agreement: float | None
    drift: float = 0.0


@dataclass(frozen=True)
class Drift:
    """Worst case over all outputs, plus the per-output values."""

    rel_l2: float
    cosine: float
    max_abs: float
    top1_agreement: float | None
    outputs: tuple[OutputDrift, ...]
    drift: float = 0.0
    samples: int = 0

    def value(self, metric: str) -> float:
        """The number ``metric`` budgets: ``rel_l2`` -> per-channel drift, ``top1`` -> 1 - agreement."""
        if metric == "top1":
            if self.top1_agreement is None:
                raise ValueError("no output is shaped like class scores [N, C]")
            return 1.0 - self.top1_agreement
        return self.drift

    def to_dict(self) -> dict:
        return {
            "drift": self.drift,
            "rel_l2": self.rel_l2,
            "cosine": self.cosine,
            "max_abs": self.max_abs,
            "top1_agreement": self.top1_agreement,
            "samples": self.samples,
            "outputs": [
                {
                    "name": o.name,
                    "drift": o.drift,
                    "rel_l2": o.rel_l2,
                    "cosine": o.cosine,
                    "max_abs": o.max_abs,
                    "top1_agreement": o.top1_agreement,
                }
                for o in self.outputs
            ],
        }


def channel_rel_l2(reference: np.ndarray, candidate: np.ndarray) -> float:
    """The per-channel drift of one output (see the module docstring)."""
    a = np.asarray(reference, dtype=np.float64)
    b = np.asarray(candidate, dtype=np.float64)
    if a.ndim < 3:
        norm = float(np.linalg.norm(a))
        diff = float(np.linalg.norm(b - a))
        return diff / norm if norm > 0 else (0.0 if diff == 0 else float("inf"))
    axes = (0, *range(2, a.ndim))
    norms = np.sqrt(np.sum(a * a, axis=axes))
    diffs = np.sqrt(np.sum((b - a) ** 2, axis=axes))
    floor = 1e-3 * float(np.sqrt(np.mean(norms ** 2)))
    if floor == 0.0:
        return 0.0 if not diffs.any() else float("inf")
    return float(np.sqrt(np.mean((diffs / np.maximum(norms, floor)) ** 2)))


def looks_like_class_scores(array: np.ndarray) -> bool:
    """True for a 2-D ``[N, C]`` numeric array with ``C > 1``."""
    a = np.asarray(array)
    return a.ndim == 2 and a.shape[1] > 1 and np.issubdtype(a.dtype, np.number)


def output_drift(reference: np.ndarray, candidate: np.ndarray, name: str = "") -> OutputDrift:
    """Drift of one output; the arrays must have the same shape."""
    a = np.asarray(reference)
    b = np.asarray(candidate)
    if a.shape != b.shape:
        raise ValueError(f"output {name!r}: shapes differ, {a.shape} vs {b.shape}")
    a64 = a.astype(np.float64, copy=False).ravel()
    b64 = b.astype(np.float64, copy=False).ravel()
    diff = b64 - a64
    norm_a = float(np.linalg.norm(a64))
    norm_b = float(np.linalg.norm(b64))
    norm_d = float(np.linalg.norm(diff))
    if norm_a > 0:
        rel = norm_d / norm_a
    else:
        rel = 0.0 if norm_d == 0 else float("inf")
    if norm_a > 0 and norm_b > 0:
        cos = float(np.dot(a64, b64) / (norm_a * norm_b))
        cos = min(1.0, max(-1.0, cos))
    else:
        cos = 1.0 if norm_a == norm_b else 0.0
    max_abs = float(np.max(np.abs(diff))) if diff.size else 0.0
    agree = None
    if looks_like_class_scores(a) and a.shape[0] > 0:
        agree = float(np.mean(np.argmax(a, axis=1) == np.argmax(b, axis=1)))
    return OutputDrift(name=name, rel_l2=rel, cosine=cos, max_abs=max_abs, top1_agreement=agree,
                       drift=channel_rel_l2(a, b))


def compare_outputs(reference: Mapping[str, np.ndarray], candidate: Mapping[str, np.ndarray]) -> Drift:
    """Drift for every output of ``reference`` (which ``candidate`` must also have), combined
    as the worst case over outputs."""
    if not reference:
        raise ValueError("no outputs to compare")
    missing = [n for n in reference if n not in candidate]
    if missing:
        raise ValueError(f"candidate has no output {missing[0]!r}")
    per = tuple(output_drift(reference[n], candidate[n], n) for n in reference)
    agreements = [o.top1_agreement for o in per if o.top1_agreement is not None]
    first = np.asarray(next(iter(reference.values())))
    return Drift(
        rel_l2=max(o.rel_l2 for o in per),
        cosine=min(o.cosine for o in per),
        max_abs=max(o.max_abs for o in per),
        top1_agreement=min(agreements) if agreements else None,
        outputs=per,
        drift=max(o.drift for o in per),
        samples=int(first.shape[0]) if first.ndim else 1,
    )


def top1_accuracy(scores: np.ndarray, labels: np.ndarray) -> float:
    """Fraction of rows of ``scores`` ``[N, C]`` whose arg-max equals ``labels`` ``[N]``."""
    s = np.asarray(scores)
    y = np.asarray(labels).reshape(-1)
    if not looks_like_class_scores(s):
        raise ValueError(f"scores must be [N, C>1], got shape {s.shape}")
    if s.shape[0] != y.shape[0]:
        raise ValueError(f"{s.shape[0]} score rows but {y.shape[0]} labels")
    if s.shape[0] == 0:
        raise ValueError("no samples")
    return float(np.mean(np.argmax(s, axis=1) == y))


def class_scores(outputs: Mapping[str, np.ndarray]) -> tuple[str, np.ndarray] | None:
    """The first output that looks like class scores ``[N, C]``, with its name; ``None`` if none does."""
    return next(((name, value) for name, value in outputs.items() if looks_like_class_scores(value)), None)


def accuracy(outputs: Mapping[str, np.ndarray], labels: np.ndarray, where: str) -> float:
    """Top-1 accuracy of a model's outputs against ``labels``: its first class-score output
    (:func:`class_scores`).  Raises :class:`~convtool.errors.CalibrationDataError` naming
    ``where`` (the model or data) when no output looks like class scores, or when that output
    has another number of rows than there are labels."""
    found = class_scores(outputs)
    if found is None:
        raise CalibrationDataError(f"labels given, but no output of {where} looks like class scores [N, C]")
    name, value = found
    if value.shape[0] != labels.shape[0]:
        raise CalibrationDataError(f"output {name!r} of {where} has {value.shape[0]} rows for {labels.shape[0]} labels")
    return top1_accuracy(value, labels)


def label_problem(scores: np.ndarray, labels: np.ndarray, source: str = "labels") -> str | None:
    """``None`` when every label is a class of ``scores`` ``[N, C]``, else a one-line warning:
    ``eval.npz: 12 of 360 labels are outside the model's 10 classes (0-9; found 10..12): those
    samples count as wrong``."""
    c = int(np.asarray(scores).shape[-1])
    y = np.asarray(labels).reshape(-1)
    bad = (y < 0) | (y >= c)
    if not bad.any():
        return None
    return (f"{source}: {int(bad.sum())} of {y.size} labels are outside the model's {c} classes "
            f"(0-{c - 1}; found {int(y[bad].min())}..{int(y[bad].max())}): those samples count as wrong")
