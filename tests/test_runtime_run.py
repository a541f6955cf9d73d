"""runtime/run.py: running a model over a dataset, every output concatenated over batches."""

from __future__ import annotations

import numpy as np
import pytest
from builders import three_conv_model
from golden import run

from convtool.errors import ConvToolError
from convtool.runtime.inputs import Dataset
from convtool.runtime.run import run_outputs


def _data(n: int) -> Dataset:
    return Dataset({"x": np.random.default_rng(n).standard_normal((n, 8, 9, 9)).astype(np.float32)})


def test_outputs_are_the_models_over_every_batch():
    model = three_conv_model()
    data = _data(7)
    calls = []
    out = run_outputs(model, data, batch_size=3, progress=lambda done, total: calls.append((done, total)))
    assert list(out) == ["y"] and out["y"].shape == (7, 8, 9, 9)
    np.testing.assert_allclose(out["y"], run(model, {"x": data.arrays["x"]})[0], rtol=1e-4, atol=1e-5)
    assert calls == [(1, 3), (2, 3), (3, 3)]


def test_fixed_batch_runs_only_whole_batches():
    model = three_conv_model(batch=4)
    out = run_outputs(model, _data(10))
    assert out["y"].shape == (8, 8, 9, 9)  # the remainder of 2 cannot run at a fixed batch of 4


def test_fewer_samples_than_the_fixed_batch_is_a_clear_error():
    with pytest.raises(ConvToolError, match="batch"):
        run_outputs(three_conv_model(batch=4), _data(3))
