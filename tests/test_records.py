"""records.py: the JSON form of a conversion record (what ``convert --json`` writes).

The keys are a contract: every key ``convert --json`` wrote before the restructure (commit
62c6700, read off its output on this file's model) must still be written; additions are fine.
"""

from __future__ import annotations

import json
import math

import pytest
from builders import smooth_inputs, three_conv_model

from convtool.api import convert_model
from convtool.options import CalibrationOptions, ConvertOptions, RankPolicy
from convtool.records import finite

PLAIN = {
    "calibration", "input", "latency", "layers", "output", "rank_policy", "totals", "warnings",
    "layers[].folded_batchnorm", "layers[].group", "layers[].in_channels", "layers[].kernel",
    "layers[].latency_candidates", "layers[].latency_decision", "layers[].latency_original_ms",
    "layers[].latency_replacement_ms", "layers[].latency_speedup", "layers[].layout", "layers[].macs_after",
    "layers[].macs_before", "layers[].name", "layers[].new_nodes", "layers[].out_channels",
    "layers[].output_error_after", "layers[].output_error_before", "layers[].params_after", "layers[].params_before",
    "layers[].rank", "layers[].reason", "layers[].status", "layers[].weight_error",
    "totals.conv_nodes", "totals.converted", "totals.mac_reduction", "totals.macs_after", "totals.macs_before",
    "totals.param_reduction", "totals.params_after", "totals.params_before", "totals.skipped",
}
CALIBRATION = {
    "calibration.fit_samples", "calibration.held_out_samples", "calibration.layers",
    "calibration.layers[].all_samples_error_after", "calibration.layers[].all_samples_error_before",
    "calibration.layers[].alpha", "calibration.layers[].fit_positions", "calibration.layers[].held_out_positions",
    "calibration.layers[].name", "calibration.layers[].output_error_after", "calibration.layers[].output_error_before",
    "calibration.layers[].reason", "calibration.layers[].refitted", "calibration.layers_kept_data_free",
    "calibration.layers_refitted", "calibration.layers_reused", "calibration.method", "calibration.samples",
    "calibration.seconds", "calibration.sessions", "calibration.source",
}
SEARCH = {
    "calibration.search", "calibration.search.data", "calibration.search.drift", "calibration.search.evaluations",
    "calibration.search.max_drift", "calibration.search.metric", "calibration.search.plain_rel_l2",
    "calibration.search.ranks", "calibration.search.ranks.conv1", "calibration.search.ranks.conv2",
    "calibration.search.ranks.conv3", "calibration.search.refit", "calibration.search.rel_l2",
    "calibration.search.samples", "calibration.search.seconds", "calibration.search.sensitivity",
    "calibration.search.sensitivity[].drift", "calibration.search.sensitivity[].macs_saved",
    "calibration.search.sensitivity[].name", "calibration.search.sensitivity[].rank",
    "calibration.search.sensitivity[].rel_l2", "calibration.search.sensitivity[].top1_agreement",
    "calibration.search.top1_agreement",
}


def keys(d, prefix: str = "") -> set[str]:
    out: set[str] = set()
    for k, v in d.items():
        out.add(prefix + k)
        if isinstance(v, dict):
            out |= keys(v, f"{prefix}{k}.")
        elif isinstance(v, list) and v and isinstance(v[0], dict):
            out |= keys(v[0], f"{prefix}{k}[].")
    return out


def written(options: ConvertOptions, data=None) -> dict:
    record = convert_model(three_conv_model(), options, calibration_data=data).record
    return json.loads(json.dumps(record.to_dict(), allow_nan=False))  # plain, strict JSON


def test_keys_of_a_plain_conversion():
    data = written(ConvertOptions(rank=RankPolicy.fixed(1)))
    assert PLAIN <= keys(data), sorted(PLAIN - keys(data))
    assert data["calibration"] is None and data["latency"] is None


def test_keys_with_calibration():
    data = written(ConvertOptions(rank=RankPolicy.fixed(1), calibration=CalibrationOptions()), smooth_inputs())
    assert PLAIN | CALIBRATION <= keys(data), sorted((PLAIN | CALIBRATION) - keys(data))


def test_keys_with_a_drift_budget_search():
    data = written(ConvertOptions(max_drift=0.5, objective="macs", calibration=CalibrationOptions(factors="pointwise")),
                   smooth_inputs())
    expected = PLAIN | CALIBRATION | SEARCH
    assert expected <= keys(data), sorted(expected - keys(data))


def test_key_walker_sees_nested_keys():
    assert keys({"a": 1, "b": {"c": [{"d": 2}]}, "e": [1]}) == {"a", "b", "b.c", "b.c[].d", "e"}


@pytest.mark.parametrize("value,expected", [
    (float("nan"), None), (float("inf"), None), (1.5, 1.5), ({"a": [float("nan"), 2.0]}, {"a": [None, 2.0]}),
])
def test_finite_turns_non_numbers_into_null(value, expected):
    out = finite(value)
    assert out == expected and not (isinstance(out, float) and math.isnan(out))
