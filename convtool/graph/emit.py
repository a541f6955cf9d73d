"""Graph surgery: replace one Conv (and a folded BatchNormalization) by its factor pair.

Three steps, as in onnx-graphsurgeon's examples: :func:`replace_conv` disconnects the old
nodes, inserts the new ones through small helpers that read like a model definition, and the
caller runs one ``cleanup().toposort()`` at the end.  The last new node writes the *original*
output tensor (the Conv's, or the folded BatchNormalization's), so everything downstream -
graph outputs, value_info, consumers - is untouched.  New names derive from the replaced node
and tensor names through :class:`Namer`, deterministically.

Emission layouts: equivalent ways to write one factor pair as ONNX nodes.

Every layout computes exactly the same function as the factor pair (and so, at full rank,
as the original Conv); they differ only in which onnxruntime kernels run.  On the CPU
provider a depthwise Conv with channel multiplier ``r > 1`` (``group = Cin``, ``Cin * r``
outputs) misses the fast NCHWc depthwise kernel, which handles multiplier 1 only; the
multiplier-1 forms below exist to keep every depthwise Conv on that kernel.

With the depthwise-first factors of :mod:`convtool.core.factorize` - depthwise weight ``D`` of
shape ``(Cin * r, 1, *k)`` whose channel ``c * r + j`` holds ``v_j`` of input channel ``c``,
and pointwise weight ``P`` of shape ``(Cout, Cin_g * r, 1...)`` whose column ``i * r + j`` in
group ``gi`` holds ``s_j u_j`` - the layouts are:

``multiplier``
    ``Conv(x, D, group=Cin) -> Conv(., P, group=g)``.  Two nodes; multiplier ``r``.
``repeat``
    ``Concat`` the input ``r`` times along channels (per group: ``[x_gi] * r`` for each group
    ``gi``, with a ``Split`` first when ``g > 1``), so that channel
    ``gi * Cin_g * r + j * Cin_g + i`` is a copy of input channel ``gi * Cin_g + i``; then one
    depthwise Conv with ``group = Cin * r`` (multiplier 1) whose weight is ``D`` permuted to
    that order, then the pointwise Conv with ``P``'s columns permuted the same way.
``branches``
    ``r`` branches, branch ``j``: ``Conv(x, D[j::r], group=Cin)`` (multiplier 1) then
    ``Conv(., P[:, j::r per group], group=g)``; the branch outputs are added with one ``Sum``
    (the bias is added once, by branch 0).
``pointwise_first``
    from the pointwise-first factors: ``Conv(x, A, 1x1, group=g) -> Conv(., B, group=Cout)``.

At rank 1 ``repeat`` and ``branches`` are the ``multiplier`` layout (nothing to repeat), and
:func:`convtool.core.plan.effective_layout` says so, so the record names what was emitted.

Strides, pads, dilations and ``auto_pad`` go to the spatial (depthwise) Conv; 1x1 Convs take
none.  New names derive from the replaced node and output tensor (``<node>.dw``, ``<node>.pw``,
``<node>.rep``, ``<node>.b<j>.dw`` ...) through the caller's :class:`Namer`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import numpy as np
import onnx_graphsurgeon as gs

from convtool.core.factorize import Factors
from convtool.core.plan import Decision, effective_layout

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


def repeat_order(cin: int, group: int, rank: int) -> np.ndarray:
    """For each channel of the repeated input, the factor channel ``c * r + j`` it stands for.

    Repeated channel ``gi * Cin_g * r + j * Cin_g + i`` copies input channel ``c = gi * Cin_g + i``
    and carries component ``j``.
    """
    cin_g = cin // group
    gi, j, i = np.meshgrid(np.arange(group), np.arange(rank), np.arange(cin_g), indexing="ij")
    c = gi * cin_g + i
    return (c * rank + j).reshape(-1)


def repeat_weights(f: Factors, group: int) -> tuple[np.ndarray, np.ndarray]:
    """Depthwise and pointwise weights of the ``repeat`` layout (permuted copies of ``f``)."""
    r = f.rank
    cin = f.first.shape[0] // r
    order = repeat_order(cin, group, r)
    dw = f.first[order]
    cout, cin_g_r = f.second.shape[:2]
    # pointwise columns are per group ``i * r + j``; the repeated order within a group is ``j * Cin_g + i``
    cin_g = cin_g_r // r
    cols = (np.arange(cin_g)[None, :] * r + np.arange(r)[:, None]).reshape(-1)
    pw = f.second[:, cols]
    return np.ascontiguousarray(dw), np.ascontiguousarray(pw)


def branch_weights(f: Factors, group: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per component ``j``: the depthwise weight ``(Cin, 1, *k)`` and pointwise ``(Cout, Cin_g, 1...)``."""
    r = f.rank
    out = []
    for j in range(r):
        dw = f.first[j::r]
        pw = f.second[:, j::r]
        out.append((np.ascontiguousarray(dw), np.ascontiguousarray(pw)))
    return out


def conv_node(graph: gs.Graph, name: str, x: gs.Tensor, w: gs.Constant, b: gs.Tensor | None,
          out: gs.Tensor, attrs: dict) -> gs.Node:
    node = gs.Node("Conv", name=name, attrs=attrs, inputs=[x, w] + ([b] if b is not None else []), outputs=[out])
    graph.nodes.append(node)
    return node


def _node(graph: gs.Graph, op: str, name: str, inputs: list[gs.Tensor], outputs: list[gs.Tensor],
          attrs: dict | None = None) -> gs.Node:
    node = gs.Node(op, name=name, attrs=attrs or {}, inputs=inputs, outputs=outputs)
    graph.nodes.append(node)
    return node


def emit_repeat(graph: gs.Graph, *, name: str, x: gs.Tensor, out: gs.Tensor, w_name: str, f: Factors,
                bias: gs.Constant | None, group: int, kernel: list[int], spatial: dict, namer: Namer) -> list[str]:
    """``[Split] -> Concat -> depthwise (multiplier 1) -> pointwise``; returns the new node names."""
    r = f.rank
    cin = f.first.shape[0] // r
    dtype = f.first.dtype
    dw_w, pw_w = repeat_weights(f, group)
    names: list[str] = []
    parts: list[gs.Tensor]
    if group > 1:
        parts = [gs.Variable(namer(f"{out.name}.g{gi}"), dtype=dtype) for gi in range(group)]
        sizes = np.full(group, cin // group, dtype=np.int64)
        if (graph.opset or 13) >= 13:  # Split takes its sizes as an input from opset 13 on
            split = gs.Constant(namer(f"{w_name}.split"), sizes)
            node = _node(graph, "Split", namer(f"{name}.split"), [x, split], parts, {"axis": 1})
        else:
            node = _node(graph, "Split", namer(f"{name}.split"), [x], parts, {"axis": 1, "split": sizes.tolist()})
        names.append(node.name)
    else:
        parts = [x]
    repeated = gs.Variable(namer(f"{out.name}.rep"), dtype=dtype)
    names.append(_node(graph, "Concat", namer(f"{name}.rep"), [p for p in parts for _ in range(r)], [repeated],
                       {"axis": 1}).name)
    mid = gs.Variable(namer(f"{out.name}.dw"), dtype=dtype)
    names.append(conv_node(graph, namer(f"{name}.dw"), repeated, gs.Constant(namer(f"{w_name}.dw"), dw_w), None, mid,
                       {"kernel_shape": kernel, "group": cin * r, **spatial}).name)
    names.append(conv_node(graph, namer(f"{name}.pw"), mid, gs.Constant(namer(f"{w_name}.pw"), pw_w), bias, out,
                       {"kernel_shape": [1] * len(kernel), "group": group}).name)
    return names


def emit_branches(graph: gs.Graph, *, name: str, x: gs.Tensor, out: gs.Tensor, w_name: str, f: Factors,
                  bias: gs.Constant | None, group: int, kernel: list[int], spatial: dict, namer: Namer) -> list[str]:
    """``r`` x (depthwise -> pointwise), then ``Sum``; returns the new node names."""
    cin = f.first.shape[0] // f.rank
    dtype = f.first.dtype
    names: list[str] = []
    partials: list[gs.Tensor] = []
    for j, (dw_w, pw_w) in enumerate(branch_weights(f, group)):
        mid = gs.Variable(namer(f"{out.name}.b{j}.dw"), dtype=dtype)
        part = gs.Variable(namer(f"{out.name}.b{j}"), dtype=dtype)
        names.append(conv_node(graph, namer(f"{name}.b{j}.dw"), x, gs.Constant(namer(f"{w_name}.b{j}.dw"), dw_w), None,
                           mid, {"kernel_shape": kernel, "group": cin, **spatial}).name)
        names.append(conv_node(graph, namer(f"{name}.b{j}.pw"), mid, gs.Constant(namer(f"{w_name}.b{j}.pw"), pw_w),
                           bias if j == 0 else None, part, {"kernel_shape": [1] * len(kernel), "group": group}).name)
        partials.append(part)
    names.append(_node(graph, "Sum", namer(f"{name}.sum"), partials, [out]).name)
    return names


Emitter = Callable[..., list[str]]
EMITTERS: dict[str, Emitter] = {"repeat": emit_repeat, "branches": emit_branches}


def _spatial_attrs(node: gs.Node) -> dict:
    return {k: node.attrs[k] for k in _SPATIAL_ATTRS if k in node.attrs}


def replace_conv(graph: gs.Graph, conv: gs.Node, batchnorm: gs.Node | None, decision: Decision,
                 namer: Namer) -> list[str]:
    """Swap ``conv`` (and its folded ``batchnorm``) for ``decision``'s factor pair, emitted in
    ``decision.layout``; returns the new node names (the last one writes the original output)."""
    f, bias, layout = decision.factors, decision.bias, decision.layout
    geo = decision.layer.geometry
    name = decision.layer.name
    x = conv.inputs[0]
    w_name = conv.inputs[1].name
    final = batchnorm.outputs[0] if batchnorm is not None else conv.outputs[0]
    kernel = list(geo.kernel)
    ones = [1] * len(kernel)
    group = geo.group
    cin, cout = geo.in_channels, geo.out_channels
    dtype = f.first.dtype

    # 1. disconnect the old node(s)
    conv.inputs.clear()
    conv.outputs.clear()
    if batchnorm is not None:
        batchnorm.inputs.clear()
        batchnorm.outputs.clear()

    # 2. insert the replacement
    b = gs.Constant(namer(f"{w_name}.bias"), np.ascontiguousarray(bias)) if bias is not None else None
    if f.orientation == "depthwise_first" and effective_layout(layout, f.rank) in EMITTERS:
        return EMITTERS[layout](graph, name=name, x=x, out=final, w_name=w_name, f=f, bias=b, group=group,
                                kernel=kernel, spatial=_spatial_attrs(conv), namer=namer)
    mid = gs.Variable(namer(f"{final.name}.dw" if f.orientation == "depthwise_first" else f"{final.name}.pw"),
                      dtype=dtype)
    if f.orientation == "depthwise_first":
        dw = conv_node(graph, namer(f"{name}.dw"), x, gs.Constant(namer(f"{w_name}.dw"), f.first), None, mid,
                   {"kernel_shape": kernel, "group": cin, **_spatial_attrs(conv)})
        pw = conv_node(graph, namer(f"{name}.pw"), mid, gs.Constant(namer(f"{w_name}.pw"), f.second), b, final,
                   {"kernel_shape": ones, "group": group})
        return [dw.name, pw.name]
    pw = conv_node(graph, namer(f"{name}.pw"), x, gs.Constant(namer(f"{w_name}.pw"), f.first), None, mid,
               {"kernel_shape": ones, "group": group})
    dw = conv_node(graph, namer(f"{name}.dw"), mid, gs.Constant(namer(f"{w_name}.dw"), f.second), b, final,
               {"kernel_shape": kernel, "group": cout, **_spatial_attrs(conv)})
    return [pw.name, dw.name]
