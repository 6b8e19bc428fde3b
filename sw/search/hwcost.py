"""Hardware cost of candidate networks from the accelerator's own models.

Every network becomes the layer list the compiler gives its integer model (stem, block
layers, head, global average pooling, classifier: ``sw.program.ConvLayer`` on the chunk of
its operator). Metrics per image, at given lanes per chunk:

- ``cycles``: ``sw.costmodel.layer_cycles`` + ``CONTROL`` per layer (one image in
  flight: the layers run one after another; several slots only raise throughput);
- ``energy``: ``sw.energy.layer_energy_pj`` (45 nm pJ, its default memory sizes);
- ``flops``: NASA's proxy, MACs with a shift term counting 1/8 and an adder term 1/5.

Lanes: :func:`mapper_lanes` asks ``sw.mapper.default_config`` (the accelerator the mapper
sizes for the board) about a shape-only integer model of the network (zero weights,
shape-derived widths; :func:`shape_qmodel`); the search costs every candidate on the
accelerator sized for its macro network (one mapper call per board: they take seconds).
A block's layers do not depend on the other blocks' choices (the macro fixes every width
and stride), so at fixed lanes the cost of a network is ``fixed + sum_i table[i,
choice_i]`` and, with choice probabilities ``p``, the expected cost ``fixed + (p *
table).sum()`` is differentiable (:class:`HwCost`).
"""
from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
import torch

from hw.config import ConfigError
from sw import arch as arch_mod
from sw import mapper
from sw.costmodel import CONTROL, layer_cycles
from sw.energy import layer_energy_pj
from sw.golden import model as gm
from sw.program import ConvLayer, ProgramError

from .space import CHOICES

CHUNK = {"conv": "clp", "shift": "slp", "adder": "alp"}
OP = {"conv": "mul", "shift": "shift", "adder": "adder"}
FLOPS_WEIGHT = {"clp": 1.0, "slp": 1 / 8, "alp": 1 / 5}     # NASA's proxy
METRICS = ("cycles", "energy", "flops")
BOARDS = ("icebreaker", "ulx3s-85f")
EXP_BITS = 3                                                 # sw.quant's default


class HwError(ValueError):
    """A network the mapper cannot place on the board (one-line message)."""


@dataclass(frozen=True)
class HwLayer:
    name: str
    chunk: str
    layer: ConvLayer
    residual: bool = False


def arch_layers(arch):
    """The compiled layer list of ``arch`` (same order and shapes as ``sw.compile``)."""
    out, prev_hw = [], None
    for s in arch.layers():
        if s.role == "classifier":
            c = s.in_ch
            out.append(HwLayer("gap", "clp", ConvLayer("lanewise", (c, *prev_hw), c,
                                                       prev_hw[0])))
            out.append(HwLayer(s.name, "clp", ConvLayer("broadcast", (c, 1, 1), s.out_ch, 1,
                                                        wide=True)))
            continue
        mode = "lanewise" if s.groups > 1 else "broadcast"
        out.append(HwLayer(s.name, CHUNK[s.kind],
                           ConvLayer(mode, (s.in_ch, *s.in_hw), s.out_ch, s.kernel, s.stride,
                                     s.padding), s.residual))
        prev_hw = s.out_hw
    return out


def layer_work(L):
    oh, ow = L.layer.out_hw
    return L.layer.out_c * oh * ow * L.layer.taps()


def shape_qmodel(arch):
    """An integer model of ``arch`` with zero weights and shape-derived widths (the
    generic accumulator bound): what the mapper needs to size an accelerator."""
    layers, arrays = [], {}
    tensors = [{"shape": list(arch.input), "lo": 0, "hi": 127, "bits": 8, "scale": 1.0}]
    block_in, specs = {}, arch.layers()
    for spec in specs:
        parts = spec.name.split(".")
        if parts[0] == "blocks":
            block_in.setdefault(parts[1], len(tensors) - 1)
        if spec.role == "classifier":
            c, hw = spec.in_ch, tensors[-1]["shape"][1:]
            L = {"name": "gap", "type": "gap", "op": None, "out_ch": c, "in_hw": hw}
            _add(layers, tensors, arrays, L, [c], None)
        fc = spec.role == "classifier"
        L = {"name": spec.name, "type": "fc" if fc else "conv", "op": OP[spec.kind],
             "in_ch": spec.in_ch, "out_ch": spec.out_ch, "kernel": spec.kernel,
             "stride": spec.stride, "padding": spec.padding, "groups": spec.groups,
             "in_hw": list(spec.in_hw), "out_hw": list(spec.out_hw), "relu": spec.relu,
             "residual": block_in[parts[1]] if spec.residual else None,
             **({"exp_bits": EXP_BITS} if spec.kind == "shift" else {"w_bits": 8})}
        w_shape = (spec.out_ch, spec.in_ch // spec.groups, spec.kernel, spec.kernel)
        _add(layers, tensors, arrays, L, [spec.out_ch] if fc else [spec.out_ch, *spec.out_hw],
             w_shape, bits=16 if fc else 8)
    header = {"format": gm.FORMAT, "version": gm.VERSION, "name": arch.name,
              "input": {"pixel_shift": 1, "scale": 1 / 127}, "layers": layers,
              "tensors": tensors}
    return gm.QModel(header, arrays)


def _add(layers, tensors, arrays, L, out_shape, w_shape, bits=8):
    i = len(layers)
    relu = L.get("relu", False)
    L.update(input=len(tensors) - 1, output=len(tensors), S=16, res_shift=0,
             lo=0 if relu else -(1 << (bits - 1)), hi=(1 << (bits - 1)) - 1)
    L.setdefault("residual", None)
    L["acc_bits"] = gm.generic_acc_bits(L, 8)
    L["rq_bits"] = L["acc_bits"] + 16
    tensors.append({"shape": out_shape, "lo": L["lo"], "hi": L["hi"], "bits": bits,
                    "scale": 1.0})
    n = out_shape[0]
    arrays[f"{i}.M"] = np.ones(n, np.int32)
    arrays[f"{i}.B"] = np.zeros(n, np.int64)
    if w_shape and L["op"] == "shift":
        arrays[f"{i}.sign"] = np.zeros(w_shape, np.int8)
        arrays[f"{i}.shift"] = np.zeros(w_shape, np.uint8)
    elif w_shape:
        arrays[f"{i}.w"] = np.zeros(w_shape, np.int8)
    layers.append(L)


def mapper_lanes(arch, board):
    """(lanes per chunk, word_bytes) of the accelerator ``sw.mapper.default_config``
    sizes for ``arch`` on ``board`` (cached; HwError when it does not fit)."""
    return _mapper_lanes(arch_mod.dumps(arch.replace(name="network")), board)


@functools.lru_cache(maxsize=512)
def _mapper_lanes(text, board):
    arch = arch_mod.loads(text)
    try:
        cfg = mapper.default_config(shape_qmodel(arch), board)
    except (ConfigError, ProgramError, ValueError) as e:
        raise HwError(f"mapper: {e}") from None
    return {c: cfg.chunk(c).lanes for c in CHUNK.values()}, cfg.word_bytes


def layer_cost(L, metric, lanes, word_bytes):
    if metric == "cycles":
        return layer_cycles(L.layer, lanes[L.chunk], word_bytes) + CONTROL
    if metric == "energy":
        return layer_energy_pj(L.layer, L.chunk, lanes=lanes[L.chunk], word_bytes=word_bytes,
                               residual=L.residual)
    if metric == "flops":
        return FLOPS_WEIGHT[L.chunk] * layer_work(L) if L.name != "gap" else 0.0
    raise ValueError(f"metric: {metric!r} is not one of {', '.join(METRICS)}")


def arch_cost(arch, board, metric, lanes=None):
    """Cost of one network on ``board`` (at the mapper's lanes unless ``lanes`` =
    (lanes, word_bytes) is given)."""
    if metric == "flops":
        lanes = ({}, 0)
    lanes, wb = lanes or mapper_lanes(arch, board)
    return sum(layer_cost(L, metric, lanes, wb) for L in arch_layers(arch))


class HwCost:
    """Per-choice cost tables of a :class:`~sw.search.space.Space` on one board."""

    def __init__(self, space, board):
        if board not in BOARDS:
            raise ValueError(f"board: {board!r} is not one of {', '.join(BOARDS)}")
        self.space, self.board = space, board
        ref = space.arch([js[0] for js in space.allowed])
        self.fixed = [L for L in arch_layers(ref) if not L.name.startswith("blocks.")]
        self.choice_layers = []                 # [block][choice] -> [HwLayer]
        for i in range(space.n_blocks):
            row = []
            for j in range(len(CHOICES)):
                if j in space.allowed[i]:
                    choices = [j if b == i else js[0] for b, js in enumerate(space.allowed)]
                    row.append([L for L in arch_layers(space.arch(choices))
                                if L.name.startswith(f"blocks.{i}.")])
                else:
                    row.append([])
            self.choice_layers.append(row)

    def table(self, metric, lanes):
        """(fixed cost, tensor [blocks, choices]) at ``lanes`` = (lanes, word_bytes); no
        lanes needed for flops."""
        lanes, wb = lanes or ({}, 0)
        fixed = sum(layer_cost(L, metric, lanes, wb) for L in self.fixed)
        t = torch.tensor([[sum(layer_cost(L, metric, lanes, wb) for L in layers)
                           for layers in row] for row in self.choice_layers],
                         dtype=torch.float64)
        return float(fixed), t
