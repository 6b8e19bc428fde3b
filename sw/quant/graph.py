"""A trained ``sw.nn.Net`` as a flat list of layer nodes, the shape the integer model has.

Tensor 0 is the input image; node ``i`` reads tensor ``input`` (and adds tensor
``residual`` when it has one) and writes tensor ``i + 1``. Node semantics (float)::

    conv / fc:  y = relu?( bn( op(x) + bias ) + residual )
    gap:        y = mean over H, W of x

which is exactly what ``Net.forward`` computes (an inverted residual's shortcut is added after
the project layer's batch norm; no ReLU follows it). A global-average-pool node is inserted
before the classifier.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

OP_OF_KIND = {"conv": "mul", "shift": "shift", "adder": "adder"}


@dataclass
class Node:
    name: str                 # operator module name in the Net ("gap" for the pool)
    type: str                 # conv | fc | gap
    op: str | None            # mul | shift | adder (None for gap)
    module: object            # the sw.nn operator module (None for gap)
    bn: object                # nn.BatchNorm2d or None
    relu: bool
    input: int
    residual: int | None
    spec: object = None       # sw.arch.LayerSpec (None for gap)
    in_shape: tuple = ()      # [C, H, W] or [C]
    out_shape: tuple = ()


def build_graph(net):
    """The node list of a ``sw.nn.Net`` (uses ``net.arch.layers()`` for the structure)."""
    arch = net.arch
    nodes = []
    shapes = [tuple(arch.input)]
    cur = 0
    block_in = {}
    for spec in arch.layers():
        parts = spec.name.split(".")
        if parts[0] == "blocks":
            block_in.setdefault(int(parts[1]), cur)
        if spec.role == "classifier":
            c = shapes[cur][0]
            nodes.append(Node("gap", "gap", None, None, None, False, cur, None, None,
                              shapes[cur], (c,)))
            shapes.append((c,))
            cur = len(nodes)
        module = net.get_submodule(spec.name)
        if module.kind != spec.kind:
            raise ValueError(f"{spec.name}: module kind {module.kind} != arch kind {spec.kind}")
        bn = net.get_submodule(spec.name.rsplit(".", 1)[0]).bn if spec.bn else None
        residual = None
        if spec.residual:
            residual = block_in[int(parts[1])]
        typ = "fc" if spec.role == "classifier" else "conv"
        out_shape = (spec.out_ch,) if typ == "fc" else (spec.out_ch, *spec.out_hw)
        nodes.append(Node(spec.name, typ, OP_OF_KIND[spec.kind], module, bn, spec.relu, cur,
                          residual, spec, shapes[cur], out_shape))
        shapes.append(out_shape)
        cur = len(nodes)
    return nodes


def float_forward(nodes, x, keep=False):
    """The float network through the node list (equals ``Net.forward`` in eval mode).
    Returns the logits, or every tensor when ``keep``."""
    ts = [x]
    for n in nodes:
        xi = ts[n.input]
        if n.type == "gap":
            y = xi.mean((2, 3))
        else:
            y = n.module(xi)
            if n.bn is not None:
                y = n.bn(y)
            if n.residual is not None:
                y = y + ts[n.residual]
            if n.relu:
                y = torch.relu(y)
        ts.append(y)
    return ts if keep else ts[-1]
