"""runtime/session.py: the one session factory, and the environment it reports."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from builders import conv_relu
from golden import run

from convtool.errors import ModelLoadError, OptionError
from convtool.options import SessionOptions
from convtool.runtime.inputs import random_feeds
from convtool.runtime.session import cpu_model, environment, make_session


def test_environment_describes_the_session():
    env = environment(SessionOptions(threads=2, opt_level="basic"))
    assert env.threads == 2 and env.opt_level == "basic" and env.allow_spinning is False
    assert env.onnxruntime and env.cpu == cpu_model() and env.cpu
    assert set(env.to_dict()) >= {"onnxruntime", "threads", "cpu"}


def test_make_session_rejects_unrunnable_model():
    model = conv_relu()
    model.graph.node[0].op_type = "NoSuchOp"
    with pytest.raises(ModelLoadError, match="onnxruntime cannot run it"):
        make_session(model, SessionOptions())


def test_session_follows_the_options_and_runs_the_model(tmp_path):
    model = conv_relu()
    feeds = random_feeds(model)
    expected = run(model, feeds)
    sess = make_session(model, SessionOptions(threads=2, opt_level="basic"))
    so = sess.get_session_options()
    assert so.intra_op_num_threads == 2 and so.inter_op_num_threads == 1
    assert so.graph_optimization_level == ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    assert so.get_session_config_entry("session.intra_op.allow_spinning") == "0"
    assert sess.get_providers() == ["CPUExecutionProvider"]
    np.testing.assert_allclose(sess.run(None, feeds)[0], expected[0], rtol=1e-5, atol=1e-6)
    path = tmp_path / "m.onnx"  # a path: onnxruntime reads the file (and its external data) itself
    onnx.save(model, path)
    np.testing.assert_allclose(make_session(path).run(None, feeds)[0], expected[0], rtol=1e-5, atol=1e-6)


def test_unavailable_provider_is_an_option_error():
    with pytest.raises(OptionError, match="execution provider NoSuchExecutionProvider is not available") as exc:
        make_session(conv_relu(), SessionOptions(providers=("NoSuchExecutionProvider", "CPUExecutionProvider")))
    assert "CPUExecutionProvider" in str(exc.value) and "\n" not in str(exc.value)
