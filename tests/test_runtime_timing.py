"""runtime/timing.py: latency statistics and interleaved timing (no test asserts a speed-up)."""

from __future__ import annotations

import pytest
from builders import conv_relu

from convtool.errors import OptionError
from convtool.options import SessionOptions
from convtool.runtime.inputs import random_feeds
from convtool.runtime.session import make_session
from convtool.runtime.timing import latency_stats, time_models


def test_latency_stats_percentiles():
    s = latency_stats([float(x) for x in range(1, 12)])  # 1..11
    assert (s.median, s.p10, s.p90, s.runs) == (6.0, 2.0, 10.0, 11)
    assert s.to_dict() == {"median": 6.0, "p10": 2.0, "p90": 10.0, "runs": 11}
    with pytest.raises(ValueError):
        latency_stats([])


def test_time_models_interleaves_and_reports_every_run():
    model = conv_relu()
    cfg = SessionOptions()
    sessions = [make_session(model, cfg), make_session(model, cfg)]
    feeds = random_feeds(model)
    calls = []
    stats = time_models(sessions, [feeds, feeds], runs=4, warmup=1, progress=lambda d, t: calls.append((d, t)))
    assert [s.runs for s in stats] == [4, 4]
    assert all(s.p10 <= s.median <= s.p90 for s in stats)
    assert calls[-1] == (8, 8) and len(calls) == 8
    with pytest.raises(OptionError, match="--runs"):
        time_models(sessions, [feeds, feeds], runs=0, warmup=0)
