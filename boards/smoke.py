"""Smoke top: LFSRs feed PE rows; the rows' sums are XOR-folded into one LED.

Every PE gets distinct operands (a distinct rotation of a 64-bit LFSR state; one LFSR per
64 lanes), so synthesis can neither merge PEs nor prune them: every accumulator bit
reaches the LED. Lane operands are wires, so the marginal cost of a PE is the PE itself
plus its share of the output fold (``acc_width`` XOR inputs).
"""
import operator
from functools import reduce

from amaranth.hdl import Cat, Elaboratable, Module, Shape, Signal, unsigned
from amaranth.lib import io, wiring
from amaranth.lib.wiring import Out

from hw.pe import KINDS, PERow, weight_layout

__all__ = ["KIND_CHOICES", "LFSR", "SmokeTop", "row_kinds"]

KIND_CHOICES = (*KINDS, "all")


def row_kinds(kind):
    """The PE kinds of the rows for a ``--kind`` choice."""
    if kind not in KIND_CHOICES:
        raise ValueError(f"unknown PE kind {kind!r}; choose one of: {', '.join(KIND_CHOICES)}")
    return KINDS if kind == "all" else (kind,)


class LFSR(wiring.Component):
    """64-bit Fibonacci LFSR (x^64 + x^63 + x^61 + x^60 + 1), one step per cycle."""

    WIDTH = 64
    TAPS = (63, 62, 60, 59)

    def __init__(self, seed):
        if not 0 < seed < 1 << self.WIDTH:
            raise ValueError(f"LFSR seed must be non-zero and fit {self.WIDTH} bits, not {seed}")
        super().__init__({"state": Out(unsigned(self.WIDTH), init=seed)})

    def elaborate(self, platform):
        m = Module()
        feedback = Cat(self.state[tap] for tap in self.TAPS).xor()
        m.d.sync += self.state.eq(Cat(feedback, self.state[:-1]))
        return m


class SmokeTop(Elaboratable):
    """One :class:`hw.pe.PERow` of ``n`` PEs per kind in ``kinds``, all running every
    cycle; ``first``/``last`` repeat every ``period`` cycles so accumulators clear.
    ``w_width`` is the weight width of mul/adder PEs, ``shift_width`` the exponent width
    of shift PEs."""

    def __init__(self, kinds, n, *, x_width=8, w_width=8, shift_width=3, acc_width=20,
                 period=16):
        if period < 2:
            raise ValueError(f"period must be at least 2 cycles, not {period}")
        self.rows = [PERow(kind, n, x_width=x_width, acc_width=acc_width,
                           w_width=shift_width if kind == "shift" else w_width)
                     for kind in kinds]
        self.n, self.period, self.acc_width = n, period, acc_width

    def elaborate(self, platform):
        m = Module()
        lfsrs = [LFSR(seed=0x9E3779B97F4A7C15 ^ index)
                 for index in range(-(-self.n // LFSR.WIDTH))]
        for index, lfsr in enumerate(lfsrs):
            m.submodules[f"lfsr{index}"] = lfsr

        count = Signal(range(self.period))
        m.d.sync += count.eq(count + 1)
        with m.If(count == self.period - 1):
            m.d.sync += count.eq(0)

        fold = Signal(self.acc_width)
        sums = []
        for row in self.rows:
            m.submodules[f"{row.kind}_row"] = row
            beat = row.i.payload
            x_width = row.x_width
            w_bits = Shape.cast(weight_layout(row.kind, row.w_width)).width
            for lane in range(self.n):
                state = lfsrs[lane // LFSR.WIDTH].state
                rot = state.rotate_left(lane % LFSR.WIDTH)
                m.d.comb += [
                    beat.x[lane].eq(rot[:x_width]),
                    beat.w[lane].eq(rot[x_width:x_width + w_bits]),
                ]
                sums.append(row.o.payload[lane])
            m.d.comb += [
                row.i.valid.eq(1),
                beat.first.eq(count == 0),
                beat.last.eq(count == self.period - 1),
            ]
        with m.If(self.rows[0].o.valid):
            m.d.sync += fold.eq(reduce(operator.xor, sums))

        led = Signal()
        m.d.sync += led.eq(fold.xor())
        if platform is not None:
            m.submodules.led = led_buffer = io.Buffer("o", platform.request("led", 0, dir="-"))
            m.d.comb += led_buffer.o.eq(led)
        return m

