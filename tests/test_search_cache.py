"""search/cache.py: the per-shape timing cache of --latency-aware."""

from __future__ import annotations

import json

import pytest

from convtool.search.cache import TimingCache, timing_key


def _key(**over):
    base = dict(x_shape=[1, 64, 56, 56], dtype="float32", kernel=[3, 3], in_channels=64, out_channels=64, group=1,
                strides=[1, 1], pads=[1, 1, 1, 1], dilations=[1, 1], auto_pad="NOTSET", bias=True, rank=2,
                layout="repeat", threads=2, opt_level="all", allow_spinning=False, onnxruntime="1.32.0",
                cpu="Some CPU")
    base.update(over)
    return timing_key(**base)


def test_cache_miss_then_hit(tmp_path):
    cache = TimingCache(tmp_path)
    key = _key()
    assert cache.get(key) is None and cache.misses == 1
    cache.put(key, [1.0, 2.0], [0.5, 0.6])
    hit = TimingCache(tmp_path).get(key)
    assert hit is not None and hit.original_ms == (1.0, 2.0) and hit.replacement_ms == (0.5, 0.6)
    stored = json.loads(cache.path(key).read_text())
    assert stored["key"] == key


@pytest.mark.parametrize("field,value", [
    ("x_shape", [1, 64, 28, 28]), ("rank", 1), ("layout", "multiplier"), ("threads", 1), ("opt_level", "basic"),
    ("onnxruntime", "1.18.0"), ("cpu", "Other CPU"), ("group", 2), ("strides", [2, 2]), ("dtype", "float16"),
    ("bias", False), ("allow_spinning", True),
])
def test_cache_key_separates_everything_that_matters(tmp_path, field, value):
    cache = TimingCache(tmp_path)
    cache.put(_key(), [1.0], [0.5])
    other = _key(**{field: value})
    assert other[field] != _key()[field]
    assert cache.path(other) != cache.path(_key())
    assert cache.get(other) is None


def test_cache_key_contents():
    key = _key()
    for field in ("x_shape", "kernel", "in_channels", "out_channels", "group", "strides", "pads", "dilations",
                  "auto_pad", "rank", "layout", "threads", "opt_level", "onnxruntime", "cpu", "dtype"):
        assert field in key
    assert json.loads(json.dumps(key)) == key  # plain JSON


def test_cache_disabled_and_corrupt(tmp_path):
    off = TimingCache(tmp_path, enabled=False)
    off.put(_key(), [1.0], [1.0])
    assert off.get(_key()) is None and not any(tmp_path.iterdir())
    cache = TimingCache(tmp_path)
    cache.put(_key(), [1.0], [1.0])
    cache.path(_key()).write_text("{not json")
    assert cache.get(_key()) is None


def test_unwritable_cache_is_not_an_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    cache = TimingCache(blocker / "sub")
    cache.put(_key(), [1.0], [1.0])
    assert not cache.enabled


def test_cache_keeps_rounds_and_looks_and_reads_older_entries(tmp_path):
    cache = TimingCache(tmp_path)
    key = _key()
    cache.put(key, [1.0, 2.0, 3.0], [0.5, 0.6, 0.7], rounds=[0, 0, 1], looks=4)
    hit = TimingCache(tmp_path).get(key)
    assert hit is not None and hit.rounds == (0, 0, 1) and hit.looks == 4 and hit.final
    old = {"key": key, "original_ms": [1.0], "replacement_ms": [0.5]}  # written before rounds existed
    cache.path(key).write_text(json.dumps(old))
    hit = TimingCache(tmp_path).get(key)
    assert hit is not None and hit.rounds is None and hit.looks == 1 and not hit.final
