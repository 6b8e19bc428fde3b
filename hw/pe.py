"""Processing elements: multiplier, shift and adder PEs, and a row of N PEs of one kind.

Semantics are those of :mod:`sw.golden.pe` (the golden model): per valid beat,
``acc <- wrap((0 if first else acc) + term(x, w), acc_width)`` with

- ``"mul"``:   ``term = x * w``                (maps to SB_MAC16 / MULT18X18D)
- ``"shift"``: ``term = sign * (x << shift)``  (``w`` is ``{shift: unsigned(w_width), sign: signed(2)}``)
- ``"adder"``: ``term = -|x - w|``

Latency :attr:`PE.LATENCY` = 2 cycles (the term is registered before the accumulator: on
the ECP5 a MULT18X18D then drives a flip-flop, not the accumulator's carry chain),
throughput 1 term per cycle per PE. ``o.valid`` pulses ``LATENCY`` cycles after a beat
with ``last`` set, while ``o.payload`` holds the finished sum (until the next beat's term
is added).
Streams have no backpressure (``always_ready``): PEs of an array run in lockstep.
"""
from amaranth.hdl import Cat, Module, Mux, Shape, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from sw.golden.pe import KINDS, term_width

__all__ = ["KINDS", "weight_layout", "PE", "PERow"]


def _check_width(name, value, lo=1, hi=64):
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(f"{name} must be an int, not {value!r}")
    if not lo <= value <= hi:
        raise ValueError(f"{name} must be between {lo} and {hi}, not {value}")


def _check_params(kind, x_width, w_width, acc_width):
    if kind not in KINDS:
        raise ValueError(f"PE kind must be one of {', '.join(KINDS)}, not {kind!r}")
    _check_width("x_width", x_width, 2, 32)
    _check_width("w_width", w_width, 1, 5 if kind == "shift" else 32)
    _check_width("acc_width", acc_width, 2, 64)
    need = term_width(kind, x_width, w_width)
    if acc_width < need:
        raise ValueError(f"acc_width {acc_width} cannot hold one {kind} term of "
                         f"x_width {x_width}, w_width {w_width}: needs at least {need}")


def weight_layout(kind, w_width):
    """Shape of one weight: signed(w_width), or sign + exponent for the shift PE."""
    if kind == "shift":
        return data.StructLayout({"shift": unsigned(w_width), "sign": signed(2)})
    return signed(w_width)


def _operand_layout(x_shape, w_shape):
    return data.StructLayout({"x": x_shape, "w": w_shape, "first": 1, "last": 1})


class PE(wiring.Component):
    """One PE of ``kind`` with ``x_width``-bit signed inputs, ``w_width``-bit weights (the
    exponent width for ``"shift"``) and an ``acc_width``-bit signed accumulator.

    Ports: ``i`` (stream of ``{x, w, first, last}``), ``o`` (stream of the accumulator).
    """

    LATENCY = 2    # cycles from a beat to its sum at ``o``: term register, accumulator

    def __init__(self, kind, *, x_width=8, w_width=8, acc_width=20):
        _check_params(kind, x_width, w_width, acc_width)
        self.kind, self.x_width, self.w_width, self.acc_width = kind, x_width, w_width, acc_width
        layout = _operand_layout(signed(x_width), weight_layout(kind, w_width))
        super().__init__({
            "i": In(stream.Signature(layout, always_ready=True)),
            "o": Out(stream.Signature(signed(acc_width), always_ready=True)),
        })

    def _term(self, m, x, w):
        """The term as ``(value, neg)`` with ``term = value + neg``: a negated term is its
        complement plus a carry, so no PE negates before its one add."""
        if self.kind == "mul":
            return x * w, 0
        if self.kind == "adder":               # -|x - w|: x - w, complemented when >= 0
            diff = Signal(signed(max(self.x_width, self.w_width) + 1))
            neg = Signal()
            m.d.comb += [diff.eq(x - w), neg.eq(diff >= 0)]
            return (diff.as_unsigned() ^ neg.replicate(len(diff))).as_signed(), neg
        # sign * (x << shift): x complemented first when negative (0 when sign is 0), then
        # shifted with the complement's fill: Cat(neg...neg, x') >> (2^w - 1 - shift)
        # is ~(x << shift) for a negative sign, x << shift otherwise
        neg, nz = Signal(), Signal()
        m.d.comb += [neg.eq(w.sign < 0), nz.eq(w.sign != 0)]
        xs = Signal(signed(self.x_width))
        m.d.comb += xs.eq(Mux(nz, x.as_unsigned() ^ neg.replicate(self.x_width), 0))
        fill = (1 << self.w_width) - 1
        shifted = Signal(signed(self.x_width + fill))
        m.d.comb += shifted.eq(Cat(neg.replicate(fill), xs).as_signed() >> ~w.shift)
        return shifted, neg

    def elaborate(self, platform):
        m = Module()
        # the accumulator needs no reset (a first beat starts it over): without one, a
        # multiplier PE's accumulator register goes into the DSP block's output register
        acc = Signal(signed(self.acc_width), reset_less=True)
        m.d.comb += self.o.payload.eq(acc)
        beat = self.i.payload
        value, negate = self._term(m, beat.x, beat.w)
        # stage 1: the term (and the beat's flags) registered
        term = Signal(signed(self.acc_width), reset_less=True)
        neg, first, last, valid = Signal(), Signal(), Signal(), Signal()
        m.d.sync += [term.eq(value), neg.eq(negate), first.eq(beat.first), last.eq(beat.last),
                     valid.eq(self.i.valid)]
        # stage 2: acc + term, a negated term as its complement + carry
        with m.If(valid):
            m.d.sync += acc.eq(Mux(first, 0, acc) + term + neg)
        m.d.sync += self.o.valid.eq(valid & last)
        return m


class PERow(wiring.Component):
    """``n`` PEs of one ``kind`` sharing ``valid``/``first``/``last``; each has its own
    ``x`` and ``w`` lane (broadcasting is the caller's wiring).

    Ports: ``i`` (stream of ``{x[n], w[n], first, last}``), ``o`` (stream of ``acc[n]``).
    Latency :attr:`PE.LATENCY`, ``n`` terms per cycle.
    """

    def __init__(self, kind, n, *, x_width=8, w_width=8, acc_width=20):
        _check_params(kind, x_width, w_width, acc_width)
        _check_width("n", n, 1, 4096)
        self.kind, self.n = kind, n
        self.x_width, self.w_width, self.acc_width = x_width, w_width, acc_width
        layout = _operand_layout(data.ArrayLayout(signed(x_width), n),
                                 data.ArrayLayout(weight_layout(kind, w_width), n))
        super().__init__({
            "i": In(stream.Signature(layout, always_ready=True)),
            "o": Out(stream.Signature(data.ArrayLayout(signed(acc_width), n),
                                      always_ready=True)),
        })

    def elaborate(self, platform):
        m = Module()
        for lane in range(self.n):
            pe = m.submodules[f"pe{lane}"] = PE(self.kind, x_width=self.x_width,
                                                 w_width=self.w_width, acc_width=self.acc_width)
            m.d.comb += [
                pe.i.valid.eq(self.i.valid),
                pe.i.payload.x.eq(self.i.payload.x[lane]),
                pe.i.payload.w.eq(self.i.payload.w[lane]),
                pe.i.payload.first.eq(self.i.payload.first),
                pe.i.payload.last.eq(self.i.payload.last),
                self.o.payload[lane].eq(pe.o.payload),
            ]
        m.d.comb += self.o.valid.eq(pe.o.valid)
        return m
