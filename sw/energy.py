"""45 nm energy model of the accelerator: compute by operator and width, plus traffic per
memory level (an ASIC-style estimate, the NASA/Eyeriss way; FPGA power is not modelled).

Unit energies (Horowitz, ISSCC 2014, 45 nm; shared/DESIGN.md section 5):

- add of ``b`` bits: linear between 8 bits 0.03 pJ and 32 bits 0.1 pJ;
- multiply ``a x b`` bits: 0.2 pJ * (a*b) / 64 (8x8 0.2 pJ, 32x32 3.2 ~ the table's 3.1);
- barrel shift of ``b`` bits: 2x an add of ``b`` bits (Aladdin: a 32-bit shifter costs about
  two 32-bit adders);
- SRAM: 5 pJ per 32-bit read of an 8 KB array, scaled by ``sqrt(size / 8 KB)`` (Horowitz:
  8 KB 10 pJ, 32 KB 20 pJ, 1 MB 100 pJ per 64 bits), at least 1 KB; writes as reads;
- off-chip (the host link; DRAM in the table): 640 pJ per 32 bits.

Per term (one weight times one input, accumulated) a PE spends:
mul ``mult(8, w) + add(acc)``; shift ``shift(acc) + add(acc)`` (the sign selects add or
subtract); adder ``add(9) (x - w) + add(9) (|.|) + add(acc)``. Idle lanes are assumed
gated (no compute energy) but their weights are still read: the weight word is
``lanes`` wide.

Traffic of one layer on the layer engine (``hw/engine.py``): per tap beat one activation
word (``8 * word_bytes`` bits) and one weight word (``lanes * w_bits``); per output value
one parameter word (``m_width + rq_width`` bits), one requantisation (a ``m_width x
acc`` multiply and an ``rq_width`` add), one output byte written and, with a residual, one
byte read. Per image the input image arrives and the logits leave over the off-chip link.
"""
import math
from dataclasses import dataclass, fields

from sw.program import ConvLayer

ADD8, ADD32 = 0.03, 0.1          # pJ
MUL8 = 0.2                       # pJ, 8x8
SRAM_BIT_8KB = 5.0 / 32          # pJ per bit at 8 KB
OFFCHIP_BIT = 640.0 / 32         # pJ per bit
W_BITS = {"clp": 8, "slp": 4, "alp": 8}     # default weight bits (shift: sign + 3-bit exponent)
KIND = {"clp": "mul", "slp": "shift", "alp": "adder"}


def add_pj(bits):
    return ADD8 + (ADD32 - ADD8) * (bits - 8) / 24


def mul_pj(a_bits, b_bits):
    return MUL8 * a_bits * b_bits / 64


def shift_pj(bits):
    return 2 * add_pj(bits)


def sram_bit_pj(size_bytes):
    """Energy of one bit read or written in an SRAM of ``size_bytes``."""
    return SRAM_BIT_8KB * math.sqrt(max(size_bytes, 1024) / 8192)


def term_pj(chunk, w_bits, acc_bits):
    """Compute energy of one term on a PE of ``chunk``."""
    if chunk == "clp":
        return mul_pj(8, w_bits) + add_pj(acc_bits)
    if chunk == "slp":
        return shift_pj(acc_bits) + add_pj(acc_bits)
    if chunk == "alp":
        return 2 * add_pj(9) + add_pj(acc_bits)
    raise ValueError(f"chunk: {chunk!r} is not one of clp, slp, alp")


@dataclass
class Energy:
    """pJ per image, by where it is spent."""
    compute: float = 0.0
    requant: float = 0.0
    act: float = 0.0         # activation memory reads and writes
    weight: float = 0.0      # weight memory reads
    param: float = 0.0       # requantisation parameter reads
    offchip: float = 0.0     # input image in, logits out

    @property
    def total(self):
        return sum(getattr(self, f.name) for f in fields(self))

    def __add__(self, other):
        return Energy(*(getattr(self, f.name) + getattr(other, f.name) for f in fields(self)))


@dataclass(frozen=True)
class Memories:
    """Sizes (bytes) of the memories a layer reads; the defaults are the bundled network's
    iCEBreaker accelerator."""
    act_bytes: int = 65536
    weight_bytes: int = 32768
    param_bytes: int = 16384
    m_width: int = 16
    rq_width: int = 36


def layer_energy(layer: ConvLayer, chunk, *, lanes=16, word_bytes=8, w_bits=None,
                 acc_bits=20, residual=False, mem=Memories()):
    """:class:`Energy` of one image's pass through ``layer`` on ``chunk``."""
    w_bits = W_BITS[chunk] if w_bits is None else w_bits
    oh, ow = layer.out_hw
    outputs = layer.out_c * oh * ow
    beats = layer.groups(lanes, word_bytes) * layer.positions() * layer.taps()
    out_bytes = outputs * (2 if layer.wide else 1)
    act_bits = beats * 8 * word_bytes + 8 * out_bytes * (2 if residual else 1)
    return Energy(
        compute=outputs * layer.terms() * term_pj(chunk, w_bits, acc_bits)
        + (outputs * (layer.tile - 1) * add_pj(acc_bits)),     # a tiled output's lane sums
        requant=outputs * (mul_pj(mem.m_width, acc_bits) + add_pj(mem.rq_width)),
        act=act_bits * sram_bit_pj(mem.act_bytes),
        weight=beats * lanes * w_bits * sram_bit_pj(mem.weight_bytes),
        param=outputs * (mem.m_width + mem.rq_width) * sram_bit_pj(mem.param_bytes))


def layer_energy_pj(layer: ConvLayer, chunk, **kw):
    """Total pJ of :func:`layer_energy` (same arguments)."""
    return layer_energy(layer, chunk, **kw).total


def stored_w_bits(chunk, w_width):
    """Stored bits of one weight on ``chunk`` (a shift weight: sign + ``w_width``-bit
    exponent), as ``hw.pe.weight_layout`` packs it."""
    from amaranth.hdl import Shape
    from hw.pe import weight_layout
    return Shape.cast(weight_layout(KIND[chunk], w_width)).width


def _memories(cfg, chunk):
    c = cfg.chunk(chunk)
    return Memories(act_bytes=cfg.act_bytes,
                    weight_bytes=c.w_words * c.lanes * stored_w_bits(chunk, c.w_width) // 8,
                    param_bytes=cfg.p_words * (cfg.m_width + cfg.rq_width) // 8,
                    m_width=cfg.m_width, rq_width=cfg.rq_width)


def offchip_pj(prog):
    """The input image in and the logits out over the off-chip link."""
    return 8 * (math.prod(prog.input_shape) + prog.output_bytes) * OFFCHIP_BIT


def program_energy(prog, cfg, residual_layers=()):
    """Per-layer :class:`Energy` of a compiled program on ``cfg`` and the image's total
    (with the off-chip input and logits). ``residual_layers``: indices of layers that add
    a residual."""
    per_layer = []
    for i, L in enumerate(prog.layers):
        c = cfg.chunk(L.chunk)
        per_layer.append(layer_energy(
            L.layer, L.chunk, lanes=c.lanes, word_bytes=cfg.word_bytes,
            w_bits=stored_w_bits(L.chunk, c.w_width), acc_bits=c.acc_width,
            residual=i in residual_layers, mem=_memories(cfg, L.chunk)))
    return per_layer, sum(per_layer, Energy(offchip=offchip_pj(prog)))
