"""graph/export.py: a rewritten graph keeps the original model's identity (opset, IR version,
producer, metadata), IR < 4 lists new initializers as inputs, large untouched constants are
copied in unchanged, and the caller's model is never modified."""

from __future__ import annotations

import numpy as np
import onnx
import onnx_graphsurgeon as gs
from builders import conv_model
from onnx import numpy_helper

from convtool.graph.export import copy_model, export, finish
from convtool.graph.select import import_graph


def _with_identity(model: onnx.ModelProto) -> onnx.ModelProto:
    model.producer_name, model.producer_version, model.doc_string = "maker", "9.9", "a model"
    onnx.helper.set_model_props(model, {"character": "abc"})
    return model


def test_export_keeps_every_model_level_field():
    model = _with_identity(conv_model(opset=13))
    out = export(import_graph(model), model)
    assert out.producer_name == "maker" and out.producer_version == "9.9" and out.doc_string == "a model"
    assert {p.key: p.value for p in out.metadata_props} == {"character": "abc"}
    assert [(o.domain, o.version) for o in out.opset_import] == [(o.domain, o.version) for o in model.opset_import]
    assert out.ir_version == model.ir_version
    onnx.checker.check_model(out, full_check=True)


def test_ir3_lists_new_initializers_as_inputs():
    model = conv_model(opset=7, ir_version=3)
    graph = import_graph(model)
    conv = next(n for n in graph.nodes if n.op == "Conv")
    extra = gs.Constant("extra", np.ones((12,), np.float32))
    add_out = gs.Variable("z", dtype=np.float32)
    graph.nodes.append(gs.Node("Add", inputs=[conv.outputs[0], extra], outputs=[add_out]))
    graph.outputs = [add_out]
    out = finish(graph, model)
    listed = {i.name for i in out.graph.input}
    assert {t.name for t in out.graph.initializer} <= listed and "extra" in listed


def test_large_untouched_constants_are_copied_in_unchanged():
    model = conv_model(cin=64, cout=64)  # W: 64*64*9 floats, above the stand-in threshold
    w = numpy_helper.to_array(next(t for t in model.graph.initializer if t.name == "W"))
    out = export(import_graph(model), model)
    np.testing.assert_array_equal(numpy_helper.to_array(next(t for t in out.graph.initializer if t.name == "W")), w)
    np.testing.assert_array_equal(numpy_helper.to_array(next(t for t in model.graph.initializer if t.name == "W")), w)


def test_copy_model_is_independent():
    model = conv_model()
    copy = copy_model(model)
    copy.graph.node[0].name = "renamed"
    assert model.graph.node[0].name == "conv" and copy == copy_model(copy)
