"""The weight-sharing supernet over a :class:`~sw.search.space.Space`.

Per block and per operator type one :class:`Family` holds the widest inverted residual
(expansion ``e_max``, kernel ``k_max``). Expansion ``e`` uses the first ``e * C_in``
hidden channels: rows of the expand weight, channels of the depthwise weight, columns of
the project weight, and the same slice of the expand and depthwise batch norms (weights,
biases and running statistics); the project batch norm (``C_out`` wide) is shared.
Kernel ``k`` uses the centre ``k x k`` of the depthwise weight (padding ``k // 2``), as in
Once-for-All: NASA keeps one module per (type, kernel), but separate kernels halved the
supernet's learning speed in our CPU budget (docs/search.md). Expansion 1 has no expand
layer (the depthwise layer reads the block input), as in ``sw.nn.InvertedResidual``.
Module names follow ``sw.nn.Net`` so that :meth:`Supernet.extract` copies a sub-network
into a stand-alone ``Net`` for ``sw.train`` / ``sw.quant``.
"""
from __future__ import annotations

import torch.nn as nn
import torch.nn.functional as F

from sw.nn import OpBN, SkipBlock, build_model, make_linear

from .space import CHOICES, SKIP


def _bn(bn, x, n):
    """Batch norm ``bn`` on the first ``n`` channels (running stats updated in place)."""
    rm = bn.running_mean[:n] if bn.running_mean is not None else None
    rv = bn.running_var[:n] if bn.running_var is not None else None
    momentum = 0.0
    if bn.training and bn.num_batches_tracked is not None:
        bn.num_batches_tracked.add_(1)
        momentum = bn.momentum if bn.momentum is not None else \
            1.0 / float(bn.num_batches_tracked)
    return F.batch_norm(x, rm, rv, bn.weight[:n], bn.bias[:n],
                        bn.training or rm is None, momentum, bn.eps)


class Family(nn.Module):
    """All kernels and expansions of one operator type in one block, sharing weights."""

    def __init__(self, kind, in_ch, out_ch, k_max, stride, e_max, **cfg):
        super().__init__()
        wide = in_ch * e_max
        self.in_ch, self.out_ch, self.stride, self.k_max = in_ch, out_ch, stride, k_max
        self.expand = OpBN(kind, in_ch, wide, 1, **cfg) if e_max > 1 else None
        self.depthwise = OpBN(kind, wide, wide, k_max, stride, groups=wide, **cfg)
        self.project = OpBN(kind, wide, out_ch, 1, relu=False, **cfg)

    def _dw_slice(self, n, k):
        c = (self.k_max - k) // 2
        return slice(0, n), slice(None), slice(c, c + k), slice(c, c + k)

    def forward(self, x, k, e):
        n = self.in_ch * e
        if e > 1:
            w = self.expand.op.weight[:n]
            x_in = _bn(self.expand.bn, self.expand.op.run(x, w, 1), n).relu()
        else:
            x_in = x
        dw = self.depthwise
        y = dw.op.run(x_in, dw.op.weight[self._dw_slice(n, k)], n, padding=k // 2)
        y = _bn(dw.bn, y, n).relu()
        y = self.project.bn(self.project.op.run(y, self.project.op.weight[:, :n], 1))
        return y + x if self.in_ch == self.out_ch and self.stride == 1 else y

    def slices(self, k, e):
        """{sub-module path in a sw.nn block: (source tensor name, slice)} for kernel k,
        expansion e."""
        n = self.in_ch * e
        out = {}
        for part, sl in (("expand", slice(0, n)), ("depthwise", slice(0, n))):
            if part == "expand" and e == 1:
                continue
            out[f"{part}.op.weight"] = (f"{part}.op.weight",
                                        self._dw_slice(n, k) if part == "depthwise" else sl)
            for s in ("weight", "bias", "running_mean", "running_var"):
                out[f"{part}.bn.{s}"] = (f"{part}.bn.{s}", sl)
            out[f"{part}.bn.num_batches_tracked"] = (f"{part}.bn.num_batches_tracked", None)
        out["project.op.weight"] = ("project.op.weight", (slice(None), slice(0, n)))
        for s in ("weight", "bias", "running_mean", "running_var", "num_batches_tracked"):
            out[f"project.bn.{s}"] = (f"project.bn.{s}", None)
        return out


class MixedBlock(nn.Module):
    """Every allowed choice of one block; ``forward(x, [(choice, weight), ...])``."""

    def __init__(self, in_ch, out_ch, stride, allowed, **cfg):
        super().__init__()
        self.allowed = tuple(allowed)
        fams = {}                                   # op -> (k_max, e_max)
        for j in allowed:
            op, k, e = CHOICES[j]
            if op != "skip":
                k0, e0 = fams.get(op, (k, e))
                fams[op] = (max(k0, k), max(e0, e))
        self.families = nn.ModuleDict({
            op: Family(op, in_ch, out_ch, k_max, stride, e_max, **cfg)
            for op, (k_max, e_max) in fams.items()})
        self.skip = SkipBlock(in_ch, out_ch, stride) if SKIP in allowed else None

    def path(self, x, j):
        op, k, e = CHOICES[j]
        return self.skip(x) if op == "skip" else self.families[op](x, k, e)

    def forward(self, x, mix):
        out = None
        for j, w in mix:
            y = self.path(x, j)
            y = y if w is None else y * w
            out = y if out is None else out + y
        return out


class Supernet(nn.Module):
    def __init__(self, space):
        super().__init__()
        macro = space.macro
        self.space = space
        cfg = {"p_min": macro.shift.p_min, "p_max": macro.shift.p_max, "eta": macro.adder_eta}
        st = macro.stem
        self.stem = OpBN("conv", macro.input[0], st.channels, st.kernel, st.stride)
        self.blocks = nn.ModuleList(
            MixedBlock(space.in_channels(i), b.out_channels, b.stride, space.allowed[i],
                       **cfg) for i, b in enumerate(macro.blocks))
        c = macro.blocks[-1].out_channels
        self.head = OpBN("conv", c, macro.head_channels, 1) if macro.head_channels else None
        c = macro.head_channels or c
        self.classifier = make_linear("conv", c, macro.num_classes, bias=True)
        nn.init.normal_(self.classifier.weight, 0.0, 0.01)

    def forward(self, x, mixes):
        """``mixes[i]``: [(choice, weight or None), ...] for block i (one path: weight None)."""
        x = self.stem(x)
        for block, mix in zip(self.blocks, mixes):
            x = block(x, mix)
        if self.head is not None:
            x = self.head(x)
        return self.classifier(x.mean((2, 3)))

    def extract(self, choices, name=None):
        """A stand-alone ``sw.nn.Net`` of the sub-network ``choices`` with the shared
        weights (a copy)."""
        arch = self.space.arch(choices, name)
        net = build_model(arch)
        state = {}
        mine = self.state_dict()
        for key, value in mine.items():
            if not key.startswith("blocks."):
                state[key] = value
        for i, j in enumerate(choices):
            op, k, e = CHOICES[j]
            if op == "skip":
                for key in net.state_dict():
                    if key.startswith(f"blocks.{i}."):
                        state[key] = mine[f"blocks.{i}.skip.{key[len(f'blocks.{i}.'):]}"]
                continue
            for dst, (src, sl) in self.blocks[i].families[op].slices(k, e).items():
                v = mine[f"blocks.{i}.families.{op}.{src}"]
                state[f"blocks.{i}.{dst}"] = v if sl is None else v[sl]
        net.load_state_dict({k: v.clone() for k, v in state.items()})
        return net
