"""The network of an ``arch.json``: conv stem, blocks, optional 1x1 head, GAP, classifier.

Module names match ``sw.arch.Arch.layers()`` (``stem.op``, ``blocks.3.expand.op``,
``classifier``...), so a LayerSpec and its operator module are found by the same name.
The input is the image scaled to [0, 1] (uint8 pixel / 255), shape [N, 1, 28, 28].
"""
from __future__ import annotations

import torch
import torch.nn as nn

from .blocks import OpBN, make_block
from .ops import make_linear


class Net(nn.Module):
    def __init__(self, arch):
        super().__init__()
        self.arch = arch
        cfg = {"p_min": arch.shift.p_min, "p_max": arch.shift.p_max, "eta": arch.adder_eta}
        st = arch.stem
        self.stem = OpBN("conv", arch.input[0], st.channels, st.kernel, st.stride)
        c = st.channels
        blocks = []
        for b in arch.blocks:
            blocks.append(make_block(b, c, **cfg))
            c = b.out_channels
        self.blocks = nn.Sequential(*blocks)
        self.head = OpBN("conv", c, arch.head_channels, 1) if arch.head_channels else None
        if arch.head_channels:
            c = arch.head_channels
        self.classifier = make_linear("conv", c, arch.num_classes, bias=True)
        nn.init.normal_(self.classifier.weight, 0.0, 0.01)

    def features(self, x):
        x = self.blocks(self.stem(x))
        if self.head is not None:
            x = self.head(x)
        return x

    def forward(self, x):
        return self.classifier(self.features(x).mean((2, 3)))


def build_model(arch, seed=None):
    """A freshly initialised Net for ``arch`` (seeded with ``seed`` when given)."""
    if seed is None:
        return Net(arch)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return Net(arch)
