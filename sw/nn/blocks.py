"""Building blocks: an operator + batch norm (+ ReLU) unit, the inverted residual, the skip.

Inverted residual (NASA/FBNet cell, one operator type T for all its layers)::

    1x1 T expand (C_in -> e*C_in) -> BN -> ReLU      (left out when e == 1)
    KxK depthwise T, stride s     -> BN -> ReLU
    1x1 T project (-> C_out)      -> BN
    + x                                               (when C_in == C_out and s == 1)

Skip block: the identity, or a 1x1 conv (stride s) -> BN -> ReLU when the shape changes.
"""
from __future__ import annotations

import torch.nn as nn

from .ops import make_op


class OpBN(nn.Module):
    """``op`` (padding kernel // 2, no bias) -> ``bn`` -> ReLU if ``relu``."""

    def __init__(self, kind, in_ch, out_ch, kernel=1, stride=1, groups=1, relu=True, **cfg):
        super().__init__()
        self.op = make_op(kind, in_ch, out_ch, kernel, stride, kernel // 2, groups,
                          bias=False, **cfg)
        self.bn = nn.BatchNorm2d(out_ch)
        self.relu = relu

    def forward(self, x):
        y = self.bn(self.op(x))
        return y.relu() if self.relu else y

    def extra_repr(self):
        return "relu=True" if self.relu else "relu=False"


class InvertedResidual(nn.Module):
    def __init__(self, kind, in_ch, out_ch, kernel=3, expansion=1, stride=1, **cfg):
        super().__init__()
        hidden = in_ch * expansion
        self.kind, self.in_ch, self.out_ch = kind, in_ch, out_ch
        self.kernel, self.expansion, self.stride = kernel, expansion, stride
        self.expand = OpBN(kind, in_ch, hidden, 1, **cfg) if expansion != 1 else None
        self.depthwise = OpBN(kind, hidden, hidden, kernel, stride, groups=hidden, **cfg)
        self.project = OpBN(kind, hidden, out_ch, 1, relu=False, **cfg)
        self.use_residual = in_ch == out_ch and stride == 1

    def forward(self, x):
        y = self.expand(x) if self.expand is not None else x
        y = self.project(self.depthwise(y))
        return y + x if self.use_residual else y


class SkipBlock(nn.Module):
    kind = "skip"

    def __init__(self, in_ch, out_ch, stride=1):
        super().__init__()
        self.in_ch, self.out_ch, self.stride = in_ch, out_ch, stride
        self.proj = OpBN("conv", in_ch, out_ch, 1, stride) \
            if (in_ch != out_ch or stride != 1) else None
        self.use_residual = False

    def forward(self, x):
        return self.proj(x) if self.proj is not None else x


def make_block(block, in_ch, **cfg):
    """A module for one ``sw.arch.Block`` taking ``in_ch`` channels."""
    if block.op == "skip":
        return SkipBlock(in_ch, block.out_channels, block.stride)
    return InvertedResidual(block.op, in_ch, block.out_channels, block.kernel,
                            block.expansion, block.stride, **cfg)
