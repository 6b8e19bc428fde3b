"""Post-processing unit: requantise one accumulator per cycle (``sw.golden.model.requantize``).

``y = clamp((acc * m + b_round + (res << res_shift)) >> shift, lo, hi)`` where the program
stores ``b_round = B + 2^(S-1)`` (the rounding constant folded into the bias, so the unit
needs one adder less). ``>>`` is arithmetic (floor). Per-channel ``m`` and ``b_round`` and
the optional residual ``res`` travel with each accumulator; ``shift``, ``res_shift``,
``lo`` and ``hi`` are per-layer settings that hold still while a layer runs.

Latency :attr:`Requantizer.LATENCY` = 4 cycles (multiply, add, shift, clamp), throughput
1 output per cycle, no backpressure. ``m_width`` 16 fits one SB_MAC16 / MULT18X18D port.
"""
from amaranth.hdl import Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from hw.pe import _check_width

__all__ = ["Requantizer"]


class Requantizer(wiring.Component):
    """Widths: ``acc_width`` (accumulator), ``m_width`` (multiplier), ``rq_width``
    (every intermediate sum; ``b_round`` has this width), ``res_width`` (residual input),
    ``out_width`` (output). Ports: ``i`` stream ``{acc, m, b, res}``, ``o`` stream of
    ``signed(out_width)``, settings ``shift``, ``res_shift``, ``lo``, ``hi``."""

    LATENCY = 4     # cycles from an input beat to its output

    def __init__(self, *, acc_width=24, m_width=16, rq_width=48, res_width=8, out_width=8):
        for name, value, lo, hi in (("acc_width", acc_width, 2, 48), ("m_width", m_width, 2, 18),
                                    ("rq_width", rq_width, 2, 64), ("res_width", res_width, 2, 32),
                                    ("out_width", out_width, 2, 32)):
            _check_width(name, value, lo, hi)
        if rq_width < acc_width + m_width:
            raise ValueError(f"rq_width {rq_width} cannot hold acc*m "
                             f"({acc_width}+{m_width} bits)")
        self.acc_width, self.m_width, self.rq_width = acc_width, m_width, rq_width
        self.res_width, self.out_width = res_width, out_width
        shift_bits = (rq_width - 1).bit_length()
        layout = data.StructLayout({"acc": signed(acc_width), "m": signed(m_width),
                                    "b": signed(rq_width), "res": signed(res_width)})
        super().__init__({
            "i": In(stream.Signature(layout, always_ready=True)),
            "o": Out(stream.Signature(signed(out_width), always_ready=True)),
            "shift": In(unsigned(shift_bits)),
            "res_shift": In(unsigned(shift_bits)),
            "lo": In(signed(out_width)),
            "hi": In(signed(out_width)),
        })

    def elaborate(self, platform):
        m = Module()
        beat = self.i.payload
        # stage 1: product; bias + shifted residual in parallel
        # data registers without a reset (only the valid bits have one): a register
        # without a reset can be a DSP block's own (iCE40 SB_MAC16, ECP5 MULT18X18D)
        prod = Signal(signed(self.acc_width + self.m_width), reset_less=True)
        bias = Signal(signed(self.rq_width), reset_less=True)
        valid1 = Signal()
        m.d.sync += [
            prod.eq(beat.acc * beat.m),
            bias.eq(beat.b + (beat.res << self.res_shift)),
            valid1.eq(self.i.valid),
        ]
        # stage 2: sum
        total = Signal(signed(self.rq_width), reset_less=True)
        valid2 = Signal()
        m.d.sync += [total.eq(prod + bias), valid2.eq(valid1)]
        # stage 3: arithmetic shift
        shifted = Signal(signed(self.rq_width), reset_less=True)
        valid3 = Signal()
        m.d.sync += [shifted.eq(total >> self.shift), valid3.eq(valid2)]
        # stage 4: clamp
        m.d.sync += [
            self.o.payload.eq(Mux(shifted < self.lo, self.lo,
                                  Mux(shifted > self.hi, self.hi, shifted))),
            self.o.valid.eq(valid3),
        ]
        return m
