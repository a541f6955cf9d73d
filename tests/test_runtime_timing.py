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


def test_time_rounds_makes_fresh_sessions_per_round_and_stops_when_told():
    from convtool.runtime.timing import per_round, schedule, time_rounds

    model = conv_relu()
    cfg = SessionOptions()
    feeds = random_feeds(model)
    made = []

    def make():
        made.append(1)
        return make_session(model, cfg)

    factory = [make, make]

    looks = schedule(4, 32)
    assert looks == (4, 8, 16, 32) and schedule(5, 5) == (5,) and per_round(100) == 10
    timed = time_rounds(factory, [feeds, feeds], looks=looks, per_round=2, warmup=1)
    assert timed.runs == 32 and [s.runs for s in timed.stats] == [32, 32] and timed.stopped == "runs"
    assert len(made) == 32 and timed.rounds[:4] == (0, 0, 1, 1) and timed.looks == 4
    made.clear()
    seen = []
    timed = time_rounds(factory, [feeds, feeds], looks=looks, per_round=2, warmup=0,
                        stop=lambda samples, rounds: seen.append(len(rounds)) or len(rounds) >= 8)
    assert seen == [4, 8] and timed.runs == 8 and timed.stopped == "decided" and len(made) == 8
    timed = time_rounds(factory, [feeds, feeds], looks=looks, per_round=2, warmup=0, max_seconds=1e-9)
    assert timed.runs == looks[0] and timed.stopped == "time"  # the time cap never cuts the first look
