"""Output drift between a reference and a candidate model (pure numpy).

Per output, with ``a`` the reference and ``b`` the candidate, both flattened and in float64:

* relative L2 error ``||b - a||_2 / ||a||_2`` (0 when both are zero, ``inf`` when only ``a`` is);
* cosine similarity ``<a, b> / (||a|| ||b||)`` (1 when both are zero, 0 when exactly one is);
* max abs error ``max |b - a|``;
* top-1 agreement, only for outputs that look like class scores (2-D ``[N, C]`` with ``C > 1``):
  the fraction of rows whose arg-max is the same.

Across outputs the summary is the worst case: the largest relative L2 and max abs error, the
smallest cosine and top-1 agreement. A gate on drift therefore holds for every output.

:func:`top1_accuracy` scores class-score outputs against integer labels.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

__all__ = [
    "OutputDrift",
    "Drift",
    "output_drift",
    "compare_outputs",
    "looks_like_class_scores",
    "top1_accuracy",
]


@dataclass(frozen=True)
class OutputDrift:
    """Drift of one output."""

    name: str
    rel_l2: float
    cosine: float
    max_abs: float
    top1_agreement: float | None


@dataclass(frozen=True)
class Drift:
    """Worst case over all outputs, plus the per-output values."""

    rel_l2: float
    cosine: float
    max_abs: float
    top1_agreement: float | None
    outputs: tuple[OutputDrift, ...]

    def to_json(self) -> dict:
        return {
            "rel_l2": self.rel_l2,
            "cosine": self.cosine,
            "max_abs": self.max_abs,
            "top1_agreement": self.top1_agreement,
            "outputs": [
                {
                    "name": o.name,
                    "rel_l2": o.rel_l2,
                    "cosine": o.cosine,
                    "max_abs": o.max_abs,
                    "top1_agreement": o.top1_agreement,
                }
                for o in self.outputs
            ],
        }


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
    return OutputDrift(name=name, rel_l2=rel, cosine=cos, max_abs=max_abs, top1_agreement=agree)


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
    return Drift(
        rel_l2=max(o.rel_l2 for o in per),
        cosine=min(o.cosine for o in per),
        max_abs=max(o.max_abs for o in per),
        top1_agreement=min(agreements) if agreements else None,
        outputs=per,
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
