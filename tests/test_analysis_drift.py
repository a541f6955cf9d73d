"""Drift metrics on arrays whose answers are known by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from convtool.analysis.drift import (accuracy, class_scores, compare_outputs, looks_like_class_scores, output_drift,
                                     top1_accuracy)
from convtool.errors import CalibrationDataError


def test_identical_outputs_have_no_drift():
    a = np.arange(12, dtype=np.float32).reshape(3, 4)
    d = output_drift(a, a.copy(), "y")
    assert (d.rel_l2, d.cosine, d.max_abs, d.top1_agreement) == (0.0, 1.0, 0.0, 1.0)


def test_known_values():
    a = np.array([3.0, 4.0])  # ||a|| = 5
    b = np.array([3.0, 5.0])  # diff (0, 1)
    d = output_drift(a, b)
    assert d.rel_l2 == pytest.approx(1 / 5)
    assert d.cosine == pytest.approx((9 + 20) / (5 * math.sqrt(34)))
    assert d.max_abs == pytest.approx(1.0)
    assert d.top1_agreement is None  # 1-D: not class scores


def test_scaled_output_has_cosine_one_and_relative_error():
    a = np.random.default_rng(0).standard_normal((4, 10))
    d = output_drift(a, 2 * a)
    assert d.rel_l2 == pytest.approx(1.0)
    assert d.cosine == pytest.approx(1.0)
    assert d.top1_agreement == 1.0
    d = output_drift(a, -a)
    assert d.cosine == pytest.approx(-1.0) and d.rel_l2 == pytest.approx(2.0)


def test_top1_agreement_counts_rows():
    a = np.array([[1, 0, 0], [0, 1, 0], [0, 0, 1], [1, 0, 0]], np.float32)
    b = np.array([[1, 0, 0], [0, 0, 1], [0, 0, 1], [0, 2, 0]], np.float32)
    assert output_drift(a, b).top1_agreement == 0.5


def test_zero_reference():
    z = np.zeros(3)
    assert output_drift(z, z).rel_l2 == 0.0 and output_drift(z, z).cosine == 1.0
    d = output_drift(z, np.ones(3))
    assert d.rel_l2 == math.inf and d.cosine == 0.0 and d.max_abs == 1.0


def test_shape_mismatch_is_an_error():
    with pytest.raises(ValueError, match="shapes differ"):
        output_drift(np.zeros((2, 3)), np.zeros((3, 2)), "y")


def test_combining_outputs_takes_the_worst_case():
    ref = {"logits": np.array([[1.0, 0.0], [0.0, 1.0]]), "feat": np.array([3.0, 4.0])}
    cand = {"logits": np.array([[1.0, 0.0], [1.0, 0.5]]), "feat": np.array([3.0, 5.0])}
    d = compare_outputs(ref, cand)
    per = {o.name: o for o in d.outputs}
    assert d.rel_l2 == max(per["logits"].rel_l2, per["feat"].rel_l2)
    assert d.cosine == min(per["logits"].cosine, per["feat"].cosine)
    assert d.max_abs == pytest.approx(1.0)
    assert d.top1_agreement == 0.5
    assert set(d.to_dict()) >= {"rel_l2", "cosine", "max_abs", "top1_agreement"}
    with pytest.raises(ValueError, match="no output 'feat'"):
        compare_outputs(ref, {"logits": ref["logits"]})


def test_class_score_detection_and_accuracy():
    assert looks_like_class_scores(np.zeros((5, 10)))
    assert not looks_like_class_scores(np.zeros((5, 1)))
    assert not looks_like_class_scores(np.zeros((5, 10, 2)))
    scores = np.array([[0.1, 0.9], [0.8, 0.2], [0.3, 0.7]])
    assert top1_accuracy(scores, np.array([1, 0, 0])) == pytest.approx(2 / 3)
    with pytest.raises(ValueError, match="labels"):
        top1_accuracy(scores, np.array([1, 0]))


@settings(max_examples=50, deadline=None)
@given(arrays(np.float64, st.tuples(st.integers(1, 5), st.integers(2, 6)), elements=st.floats(-100, 100)))
def test_metric_bounds(a):
    b = a + 0.5
    d = output_drift(a, b)
    assert -1.0 <= d.cosine <= 1.0
    assert d.rel_l2 >= 0 and d.max_abs == pytest.approx(0.5)
    assert 0.0 <= d.top1_agreement <= 1.0


def test_accuracy_is_the_first_class_score_output_against_the_labels():
    outputs = {"boxes": np.zeros((4, 1, 5)), "scores": np.eye(4, 3), "other": np.zeros((4, 2))}
    assert class_scores(outputs)[0] == "scores"
    assert accuracy(outputs, np.array([0, 1, 2, 0]), "m.onnx") == 1.0
    assert accuracy(outputs, np.array([0, 1, 2, 2]), "m.onnx") == 0.75


def test_accuracy_says_why_it_cannot_be_computed():
    with pytest.raises(CalibrationDataError, match=r"^labels given, but no output of m.onnx looks like class scores"):
        accuracy({"y": np.zeros((4, 1, 5))}, np.zeros(4, np.int64), "m.onnx")
    with pytest.raises(CalibrationDataError, match=r"^output 'y' of m.onnx has 4 rows for 3 labels$"):
        accuracy({"y": np.zeros((4, 3))}, np.zeros(3, np.int64), "m.onnx")
