"""Graph surgery: replace one Conv (and a folded BatchNormalization) by its factor pair.

Three steps, as in onnx-graphsurgeon's examples: disconnect the old nodes, insert the new
ones through small helpers that read like a model definition, and let the caller run one
``cleanup().toposort()`` at the end.  The last new node writes the *original* output tensor
(the Conv's, or the folded BatchNormalization's), so everything downstream - graph outputs,
value_info, consumers - is untouched.  New names derive from the replaced node and tensor
names through :class:`Namer`, deterministically.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import onnx_graphsurgeon as gs

from convtool.factorize import Factors
from convtool.graph.layouts import EMITTERS, conv_node, effective_layout
from convtool.graph.select import ConvSite

_SPATIAL_ATTRS = ("strides", "pads", "dilations", "auto_pad")


class Namer:
    """Deterministic unique names: ``base``, then ``base_1``, ``base_2``, ..."""

    def __init__(self, taken: Iterable[str]):
        self._taken = set(taken)

    @classmethod
    def for_graph(cls, graph: gs.Graph) -> Namer:
        names = set(graph.tensors().keys())
        names.update(n.name for n in graph.nodes if n.name)
        return cls(names)

    def __call__(self, base: str) -> str:
        name, i = base, 0
        while name in self._taken:
            i += 1
            name = f"{base}_{i}"
        self._taken.add(name)
        return name


def _spatial_attrs(node: gs.Node) -> dict:
    return {k: node.attrs[k] for k in _SPATIAL_ATTRS if k in node.attrs}


def replace_conv(graph: gs.Graph, site: ConvSite, f: Factors, bias: np.ndarray | None, namer: Namer,
                 layout: str = "multiplier") -> list[str]:
    """Swap ``site`` (and its folded BN) for the factor pair; returns the new node names.

    ``layout`` picks the emission form of depthwise-first factors (see
    :mod:`convtool.graph.layouts`); pointwise-first factors have one form.
    """
    conv = site.node
    x = conv.inputs[0]
    w_name = conv.inputs[1].name
    final = site.batchnorm.node.outputs[0] if site.batchnorm else conv.outputs[0]
    kernel = list(site.geometry.kernel)
    ones = [1] * len(kernel)
    group = site.geometry.group
    cin, cout = site.geometry.in_channels, site.geometry.out_channels
    dtype = f.first.dtype

    # 1. disconnect the old node(s)
    conv.inputs.clear()
    conv.outputs.clear()
    if site.batchnorm:
        site.batchnorm.node.inputs.clear()
        site.batchnorm.node.outputs.clear()

    # 2. insert the replacement
    b = gs.Constant(namer(f"{w_name}.bias"), np.ascontiguousarray(bias)) if bias is not None else None
    if f.orientation == "depthwise_first" and effective_layout(layout, f.rank) in EMITTERS:
        return EMITTERS[layout](graph, name=site.name, x=x, out=final, w_name=w_name, f=f, bias=b, group=group,
                                kernel=kernel, spatial=_spatial_attrs(conv), namer=namer)
    mid = gs.Variable(namer(f"{final.name}.dw" if f.orientation == "depthwise_first" else f"{final.name}.pw"),
                      dtype=dtype)
    if f.orientation == "depthwise_first":
        dw = conv_node(graph, namer(f"{site.name}.dw"), x, gs.Constant(namer(f"{w_name}.dw"), f.first), None, mid,
                   {"kernel_shape": kernel, "group": cin, **_spatial_attrs(conv)})
        pw = conv_node(graph, namer(f"{site.name}.pw"), mid, gs.Constant(namer(f"{w_name}.pw"), f.second), b, final,
                   {"kernel_shape": ones, "group": group})
        return [dw.name, pw.name]
    pw = conv_node(graph, namer(f"{site.name}.pw"), x, gs.Constant(namer(f"{w_name}.pw"), f.first), None, mid,
               {"kernel_shape": ones, "group": group})
    dw = conv_node(graph, namer(f"{site.name}.dw"), mid, gs.Constant(namer(f"{w_name}.dw"), f.second), b, final,
               {"kernel_shape": kernel, "group": cout, **_spatial_attrs(conv)})
    return [pw.name, dw.name]
