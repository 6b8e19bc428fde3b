"""Hardware cost of candidate networks from the accelerator's own models.

Every network becomes the layer list the compiler gives its integer model (stem, block
layers, head, global average pooling, classifier: ``sw.program.ConvLayer`` on the chunk of
its operator). Metrics per image, at given lanes per chunk:

- ``cycles``: ``sw.costmodel.layer_cycles`` + ``CONTROL`` per layer (one image in
  flight: the layers run one after another; several slots only raise throughput);
- ``energy``: ``sw.energy.layer_energy_pj`` (45 nm pJ, its default memory sizes);
- ``flops``: NASA's proxy, MACs with a shift term counting 1/8 and an adder term 1/5.

Accelerator: :func:`mapper_lanes` asks ``sw.mapper.default_config`` (the accelerator the
mapper sizes for the board) about a shape-only integer model of the network (zero weights,
shape-derived widths; :func:`shape_qmodel`) and returns ``(lanes, word_bytes, extra)``
(:func:`accel_of`); the search costs every candidate on the accelerator sized for its macro
network (one mapper call per board: they take seconds). ``extra`` carries what the
organisation adds per layer (``sw.costmodel.compiled_layer_cycles`` and
``control_cycles``): on the iCE40UP5K's small organisation (one shared engine, so a
network's cycles are the sum of its layers' whatever the chunk) each layer first copies
its parameters from the activation memory (``out_c * param_words + 2`` cycles) and a
layer descriptor is several 16-bit program words (``control`` cycles per layer instead of
``CONTROL``). A plain ``(lanes, word_bytes)`` pair (older checkpoints, tests) means the
per-chunk organisation: no parameter copy, ``CONTROL``.

Fit: the small organisation holds each slot's activations in two 32 KiB SPRAMs (the
parameters of every layer beside them) and its weights in SPRAM / block RAM, so many
networks of the space do not fit the UP5K. :func:`choice_fit` finds, per block choice, the
analytic reasons (a tensor larger than one activation memory; the parameters alone larger
than one); :func:`fit_error` checks a whole network exactly (``sw.mapper.small_config`` at
the reference lanes compiles it, and ``sw.resources.estimate`` is within the board's
budget). On the per-chunk organisation (ECP5) every network of the space fits.

Fit in the loss (:meth:`HwCost.fit_tables`, small organisation only): two network-level
quantities decide most misfits, and both are a fixed part plus one entry per block choice,
so the search can cost them on the Gumbel sample as it costs cycles:

- ``weight_words``: the shared weight memory's depth (every layer's weight words at the
  reference lanes, summed). Whether it fits is not monotone: yosys maps the memory to
  block RAM until SPRAM is cheaper, so on the UP5K at 4/6/4 lanes a depth fits up to
  1,280 words (block RAM) and from 8,193 to 16,384 (two SPRAMs), not between (a
  depth in the gap is pushed up, :func:`out_of_ranges`).
  :func:`weight_ranges` finds these ranges from ``sw.resources.estimate`` of the macro
  network's small config with its weight words replaced;
- ``act_bytes``: the parameters in the activation memory (``param_bytes``, a sum) plus the
  tensors they sit beside. The compiler puts the parameters above the tensors of the
  single-port activation memory with most room; a layer's input and output are in
  different ones, so each holds at least ``min(input, output)`` bytes of every layer
  (:func:`pair_bytes`): the network's largest such pair, a maximum over the blocks, not a
  sum. Parameters beyond that room go to the residual memory, which then needs more block
  RAM than the UP5K has.
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
from sw import resources as R
from sw.compile import param_act_words
from sw.costmodel import CONTROL, control_cycles, layer_cycles
from sw.energy import layer_energy_pj
from sw.golden import model as gm
from sw.program import ConvLayer, ProgramError, cpad

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
    reads_input: bool = False     # the network's first layer (the compiler may spread it)


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
                                     s.padding), s.residual, reads_input=not out))
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


def accel_of(cfg):
    """``(lanes per chunk, word_bytes, extra)`` of an accelerator config: what costing a
    network on it takes (``extra``: ``organisation``, ``control`` cycles per layer,
    ``param_words`` activation words per parameter copied in before each layer, 0 when
    the parameters have their own memory, ``act_bytes``, one activation memory,
    ``drain``, sums the engine drains per cycle, ``cin_tile``, input channels a tiled
    broadcast layer takes per beat, and ``pixels``, output pixels a lanewise layer takes
    side by side: the compiler tiles or blocks a layer where that is faster)."""
    extra = {"organisation": mapper.organisation(cfg), "control": control_cycles(cfg),
             "param_words": param_act_words(cfg) if cfg.params_in_act else 0,
             "act_bytes": cfg.act_bytes, "drain": getattr(cfg, "drain", 1),
             "cin_tile": getattr(cfg, "cin_tile", 1), "pixels": getattr(cfg, "pixels", 1)}
    return {c: cfg.chunk(c).lanes for c in CHUNK.values()}, cfg.word_bytes, extra


def unpack(acc):
    """``(lanes, word_bytes, extra)`` of an accelerator given as :func:`accel_of` makes it
    or as a plain ``(lanes, word_bytes)`` pair (the per-chunk organisation)."""
    lanes, wb, *rest = acc
    return lanes, wb, (rest[0] if rest else None) or {}


def mapper_lanes(arch, board):
    """:func:`accel_of` the accelerator ``sw.mapper.default_config`` sizes for ``arch`` on
    ``board`` (cached; HwError when it does not fit)."""
    return _mapper_lanes(arch_mod.dumps(arch.replace(name="network")), board)


@functools.lru_cache(maxsize=512)
def _mapper_lanes(text, board):
    arch = arch_mod.loads(text)
    try:
        cfg = mapper.default_config(shape_qmodel(arch), board)
    except (ConfigError, ProgramError, ValueError) as e:
        raise HwError(f"mapper: {e}") from None
    return accel_of(cfg)


KIND = {"clp": "mul", "slp": "shift", "alp": "adder"}


def _tiled(L, lanes, word_bytes, extra):
    """``L.layer`` with the input-channel tile (``cin_tile`` > 1), the pixel block
    (``pixels`` > 1) or the spread (the first layer) the compiler gives it."""
    tile, pixels = extra.get("cin_tile", 1), extra.get("pixels", 1)
    if ((tile == 1 or L.layer.mode != "broadcast")
            and (pixels == 1 or (L.layer.mode != "lanewise" and not L.reads_input))):
        return L.layer
    from types import SimpleNamespace
    from sw.costmodel import best_tile
    return best_tile(L.layer, KIND[L.chunk], lanes[L.chunk], SimpleNamespace(
        word_bytes=word_bytes, cin_tile=tile, drain=extra.get("drain", 1), pixels=pixels),
        residual=L.residual, spread=L.reads_input)


def layer_cost(L, metric, lanes, word_bytes, extra=None):
    """One layer's ``metric`` on chunk ``lanes`` / ``word_bytes`` of an organisation with
    ``extra`` (:func:`accel_of`; None: the per-chunk organisation)."""
    extra = extra or {}
    if metric == "cycles":
        pw, drain = extra.get("param_words", 0), extra.get("drain", 1)
        cycles = layer_cycles(_tiled(L, lanes, word_bytes, extra), lanes[L.chunk], word_bytes,
                              *((drain,) if drain != 1 else ()))
        return cycles + (L.layer.out_c * pw + 2 if pw else 0) + extra.get("control", CONTROL)
    if metric == "energy":
        return layer_energy_pj(_tiled(L, lanes, word_bytes, extra), L.chunk,
                               lanes=lanes[L.chunk], word_bytes=word_bytes, residual=L.residual)
    if metric == "flops":
        return FLOPS_WEIGHT[L.chunk] * layer_work(L) if L.name != "gap" else 0.0
    raise ValueError(f"metric: {metric!r} is not one of {', '.join(METRICS)}")


def arch_cost(arch, board, metric, lanes=None):
    """Cost of one network on ``board`` (on the mapper's accelerator for it unless
    ``lanes`` = (lanes, word_bytes[, extra]) is given)."""
    if metric == "flops":
        lanes = ({}, 0)
    lanes, wb, extra = unpack(lanes or mapper_lanes(arch, board))
    return sum(layer_cost(L, metric, lanes, wb, extra) for L in arch_layers(arch))


def tensor_bytes(L, word_bytes):
    """Bytes of a layer's output tensor in the activation memory (as ``sw.compile``)."""
    oh, ow = L.layer.out_hw
    return oh * ow * cpad(L.layer.out_c * (2 if L.layer.wide else 1), word_bytes)


def param_bytes(layers, acc):
    """Bytes the parameters of ``layers`` take in the activation memory (0 unless the
    organisation keeps them there)."""
    _, wb, extra = unpack(acc)
    return sum(L.layer.out_c for L in layers) * extra.get("param_words", 0) * wb


def fit_error(arch, board, acc):
    """None when ``arch`` fits ``board`` on the accelerator ``acc`` (:func:`accel_of`),
    else one line saying what does not. Only the small organisation can run out: its
    config is sized for ``arch`` at ``acc``'s lanes (``sw.mapper.small_config``: the
    compiler places every tensor and parameter and every weight region) and its
    predicted resources (``sw.resources.estimate``) must be within ``board``'s budget, as
    the mapper demands of its own pick."""
    lanes, wb, extra = unpack(acc)
    if extra.get("organisation") != "small":
        return None
    return _small_fit(arch_mod.dumps(arch.replace(name="network")), board,
                      tuple(sorted(lanes.items())), wb)


@functools.lru_cache(maxsize=4096)
def _small_fit(text, board, lanes, word_bytes):
    try:
        cfg = mapper.small_config(shape_qmodel(arch_mod.loads(text)), dict(lanes), word_bytes)
    except (ConfigError, ProgramError, ValueError) as e:
        return str(e).splitlines()[0]
    return "; ".join(R.shortfalls(R.estimate(cfg, board), board)) or None


def in_bytes(L, word_bytes):
    """Bytes of a layer's input tensor in the activation memory."""
    c, h, w = L.layer.in_shape
    return h * w * cpad(c, word_bytes)


def pair_bytes(L, word_bytes):
    """``min(input, output)`` bytes of a layer: what both single-port activation memories
    hold at least while it runs (its input in one, its output in the other)."""
    return min(in_bytes(L, word_bytes), tensor_bytes(L, word_bytes))


def weight_words(layers, acc):
    """Weight words of ``layers`` on the accelerator ``acc`` (input-channel tiles as the
    compiler chooses them): the depth they take in the weight memory."""
    lanes, wb, extra = unpack(acc)
    return sum(_tiled(L, lanes, wb, extra).w_words(lanes[L.chunk], wb) for L in layers)


#: the weight-memory depths :func:`weight_ranges` checks are multiples of this (every
#: iCE40 block-RAM and SPRAM depth is one, so the estimate is constant in between)
DEPTH_STEP = 256


def weight_ranges(cfg, board, most=1 << 16):
    """[(lo, hi)]: the total weight words (the shared weight memory's depth, up to
    ``most``) with which the small config ``cfg`` fits ``board`` (``sw.resources``), the
    rest of ``cfg`` as it is: every depth from ``lo`` to ``hi``, ascending."""
    from dataclasses import replace
    names = [name for name, _, _ in cfg.chunks]

    def fits(words):
        sized = replace(cfg, **{n: replace(cfg.chunk(n), w_words=max(1, words - len(names) + 1)
                                           if k == 0 else 1) for k, n in enumerate(names)})
        return not R.shortfalls(R.estimate(sized, board), board)

    out, lo = [], None
    for m in range(most // DEPTH_STEP + 1):
        ok = fits(m * DEPTH_STEP)
        if ok and lo is None:
            lo = max(0, (m - 1) * DEPTH_STEP + 1)
        if not ok and lo is not None:
            out.append((lo, (m - 1) * DEPTH_STEP))
            lo = None
    if lo is not None:
        out.append((lo, most))
    return out


def out_of_ranges(x, ranges):
    """How far ``x`` (a tensor) lies outside the union of ``ranges`` [(lo, hi)], ascending:
    0 inside, above the last range the distance to its top, in a gap between two ranges
    the distance up to the next one. Up, not to the nearer end: below a gap is block RAM,
    which holds little more than the fixed layers' weights (at the UP5K's 4/6/4 lanes 1,280
    words, 1,012 of them the stem's, head's and classifier's), above it SPRAM; with the
    nearer end, samples on either side of the gap's middle pulled alpha both ways (a
    quick UP5K run's derived networks stayed at ~4,600 words, in the gap)."""
    for lo, hi in ranges:
        if float(x.detach()) <= hi:
            return torch.relu(lo - x)
    return x - ranges[-1][1]


@dataclass(frozen=True)
class FitTables:
    """What the search's fit term needs (:meth:`HwCost.fit_tables`): per quantity a fixed
    part and a [blocks, choices] table; the weight words' feasible ranges; the activation
    memory's size."""
    words_fixed: float
    words: torch.Tensor
    ranges: list
    params_fixed: float
    params: torch.Tensor
    pairs_fixed: float
    pairs: torch.Tensor
    act_bytes: int

    def misfit(self, g):
        """How far the sample ``g`` [blocks, choices] lies outside what fits, relative to
        each limit, summed: the weight words' distance to a feasible range
        (:func:`out_of_ranges`, over the largest feasible depth) and the activation memory's overflow (parameters plus
        the largest tensor pair, over its size)."""
        g = g.double()
        words = self.words_fixed + (g * self.words).sum()
        top = max(hi for _, hi in self.ranges)
        act = (self.params_fixed + (g * self.params).sum()
               + torch.max((g * self.pairs).sum(-1).max(), torch.tensor(self.pairs_fixed,
                                                                      dtype=g.dtype)))
        return out_of_ranges(words, self.ranges) / top + torch.relu(act - self.act_bytes) / \
            self.act_bytes

    def amounts(self, choices):
        """(weight words, activation bytes) of one network (choice per block)."""
        g = torch.zeros(self.words.shape, dtype=torch.float64)
        g[range(len(choices)), choices] = 1.0
        words = self.words_fixed + float((g * self.words).sum())
        act = self.params_fixed + float((g * self.params).sum()) + max(
            float((g * self.pairs).sum(-1).max()), self.pairs_fixed)
        return words, act


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
        """(fixed cost, tensor [blocks, choices]) at ``lanes`` = (lanes, word_bytes[,
        extra]); no lanes needed for flops."""
        lanes, wb, extra = unpack(lanes or ({}, 0))
        fixed = sum(layer_cost(L, metric, lanes, wb, extra) for L in self.fixed)
        t = torch.tensor([[sum(layer_cost(L, metric, lanes, wb, extra) for L in layers)
                           for layers in row] for row in self.choice_layers],
                         dtype=torch.float64)
        return float(fixed), t

    def fit_tables(self, acc):
        """:class:`FitTables` of the space at the accelerator ``acc`` (the weight words'
        ranges from the macro network's small config: its other memories as they are);
        None on the per-chunk organisation, where every network fits."""
        lanes, wb, extra = unpack(acc)
        if extra.get("organisation") != "small":
            return None
        try:
            cfg = mapper.small_config(shape_qmodel(self.space.macro), dict(lanes), wb)
        except (ConfigError, ProgramError, ValueError) as e:
            raise HwError(f"fit: the macro network does not compile on the small "
                          f"organisation at {lanes}: {str(e).splitlines()[0]}") from None
        allowed = [[j in self.space.allowed[i] for j in range(len(CHOICES))]
                   for i in range(self.space.n_blocks)]

        def table(f):
            return torch.tensor([[f(layers) if ok else 0.0 for layers, ok in zip(row, oks)]
                                 for row, oks in zip(self.choice_layers, allowed)],
                                dtype=torch.float64)

        def pairs(layers):
            return max((pair_bytes(L, wb) for L in layers), default=0)
        return FitTables(
            words_fixed=float(weight_words(self.fixed, acc)),
            words=table(lambda layers: weight_words(layers, acc)),
            ranges=weight_ranges(cfg, self.board),
            params_fixed=float(param_bytes(self.fixed, acc)),
            params=table(lambda layers: param_bytes(layers, acc)),
            pairs_fixed=float(pairs(self.fixed)), pairs=table(pairs),
            act_bytes=extra["act_bytes"])

    def choice_fit(self, acc):
        """{(block, choice): reason} for every allowed choice that cannot fit the
        accelerator ``acc`` whatever the other blocks are (small organisation only): one
        of its tensors is larger than one activation memory, or the parameters of the
        network with it and the fewest elsewhere are (they share one memory with
        tensors)."""
        _, wb, extra = unpack(acc)
        if extra.get("organisation") != "small":
            return {}
        cap = extra["act_bytes"]
        least = [min((param_bytes(layers, acc) for j, layers in enumerate(row)
                      if j in self.space.allowed[i]), default=0)
                 for i, row in enumerate(self.choice_layers)]
        base = param_bytes(self.fixed, acc) + sum(least)
        out = {}
        for i, row in enumerate(self.choice_layers):
            for j in self.space.allowed[i]:
                big = max(row[j], key=lambda L: tensor_bytes(L, wb), default=None)
                params = base - least[i] + param_bytes(row[j], acc)
                if big is not None and tensor_bytes(big, wb) > cap:
                    L = big.layer
                    out[i, j] = (f"{big.name} output {L.out_c}x{L.out_hw[0]}x{L.out_hw[1]} "
                                 f"= {tensor_bytes(big, wb):,} bytes > one {cap:,}-byte "
                                 "activation memory")
                elif params > cap:
                    out[i, j] = (f"parameters in the activation memory {params:,} bytes > "
                                 f"{cap:,}")
        return out
