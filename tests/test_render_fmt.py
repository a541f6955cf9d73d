"""The one number vocabulary (render/fmt.py) and name shortening (render/table.py)."""

from __future__ import annotations

import pytest

from convtool.render import fmt
from convtool.render.table import shorten, shorten_all


@pytest.mark.parametrize("n,text", [
    (0, "0"), (144, "144"), (999, "999"), (1000, "1.00k"), (4740, "4.74k"), (37120, "37.1k"),
    (147456, "147k"), (999960, "1.00M"), (4718592, "4.72M"), (611060000, "611M"), (1.01e9, "1.01G"),
    (2.3e12, "2.30T"), (-4740, "-4.74k"), (None, "unknown"),
])
def test_counts(n, text):
    assert fmt.count(n) == text


def test_unknown_is_never_zero():
    assert fmt.count(None) == "unknown" and fmt.counts(None, None) == "unknown"
    assert fmt.counts(100, None) == "100→unknown"
    assert fmt.ratio(None, 5) == "" and fmt.ratio(0, 5) == ""
    assert fmt.less("MACs", None, 5) == "MACs unknown"


def test_pairs_ratios_percentages_times():
    assert fmt.counts(37120, 4740) == "37.1k→4.74k"
    assert fmt.ratio(611060000, 79200000) == "0.13x"
    assert fmt.times(1.2449) == "1.24x"
    assert fmt.pct(0.998) == "99.8%"
    assert fmt.signed_pct(-0.87) == "-87.0%" and fmt.signed_pct(0.021) == "+2.1%" and fmt.signed_pct(1e-6) == "0.0%"
    assert fmt.less("MACs", 1000, 431) == "MACs -56.9%" and fmt.less("params", 10, 11) == "params +10.0%"
    assert not hasattr(fmt, "fewer")  # one way to say a change (issue 14, item 12)
    assert fmt.faster(1.24) == "1.24x faster" and fmt.faster(0.8) == "0.80x (slower)"  # the table's number
    assert [fmt.ms(v) for v in (0.4123, 14.14, 152.3, 9.996)] == ["0.412", "14.1", "152", "10.0"]
    assert fmt.ms_pair(14.1, 8.3) == "14.1→8.30"
    assert [fmt.num(v) for v in (0.897, 1.004, 0.0473, 0.12, 0.0)] == ["0.897", "1.00", "0.0473", "0.120", "0"]
    assert fmt.num(0.9999873, 6) == "0.999987" and fmt.num(float("inf")) == "inf"
    assert fmt.duration(27.14) == "27.1 s" and fmt.duration(252) == "4 min 12 s"


def test_shorten_keeps_the_ends():
    name = "/model.22/cv3.2/cv3.2.0/conv/Conv"
    assert shorten(name, 40) == name
    assert shorten(name, 27) == "model.22/cv3.2/cv3.2.0/conv"  # the op-type tail and leading / go first
    assert shorten(name, 22) == "model.22/cv3.2/…/conv"
    assert shorten("backbone.layer4.conv2", 14) == "backbo…4.conv2"
    for width in (14, 16, 20, 24, 30):
        assert len(shorten(name, width)) <= width


@pytest.mark.parametrize("width", [14, 18, 22, 26])
def test_shortened_names_stay_unique(width):
    names = [f"/model.22/cv3.2/cv3.2.{i}/conv/Conv" for i in range(6)] + ["/model.22/cv2.0/cv2.0.0/conv/Conv"]
    short = shorten_all(names, width)
    assert len(set(short)) == len(names), short
    assert all(len(s) <= width for s in short), short


def test_faster_ci_gives_the_speedup_with_its_interval():
    assert fmt.faster_ci(1.24, 1.2, 1.28) == "1.24x faster (95% CI 1.20x-1.28x)"
    assert fmt.faster_ci(0.8, 0.714, 0.952) == "0.80x (slower) (95% CI 0.71x-0.95x)"
    assert fmt.faster_ci(1.1, None, None) == "1.10x faster"


def test_counted_nouns_agree_with_their_number():
    assert fmt.plural(1, "thread") == "1 thread" and fmt.plural(2, "layer") == "2 layers"
    assert fmt.plurals("at 1 thread(s); dropped 3 layer(s) (0 pair(s))") == "at 1 thread; dropped 3 layers (0 pairs)"
