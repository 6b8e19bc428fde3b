"""8N1 UART receiver and transmitter with ``amaranth.lib.stream`` byte ports.

Both count ``divisor`` clock cycles per bit (``divisor = clk_hz / baud``, see
:func:`divisor_for`). Neither has flow control on the wire: the receiver holds one byte
on its stream and drops (and reports) a byte that completes while the previous one is
still waiting.
"""
from amaranth.hdl import Cat, Const, Module, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.cdc import FFSynchronizer
from amaranth.lib.wiring import In, Out

__all__ = ["MIN_DIVISOR", "UARTRx", "UARTTx", "divisor_for"]

#: Fewest clock cycles per bit: mid-bit sampling needs a few cycles of margin.
MIN_DIVISOR = 4
#: Largest baud-rate error (actual vs requested) that 8N1 framing tolerates with margin.
MAX_BAUD_ERROR = 0.02


def divisor_for(clk_hz, baud):
    """Clock cycles per bit for ``baud`` at ``clk_hz``; ``ValueError`` when the rounded
    divisor is below :data:`MIN_DIVISOR` or misses ``baud`` by more than 2%."""
    if not baud > 0:
        raise ValueError(f"baud must be positive, not {baud}")
    divisor = round(clk_hz / baud)
    if divisor < MIN_DIVISOR:
        raise ValueError(f"baud {baud} is too fast for a {clk_hz / 1e6:g} MHz clock "
                         f"(needs at least {MIN_DIVISOR} clocks per bit)")
    error = abs(clk_hz / divisor - baud) / baud
    if error > MAX_BAUD_ERROR:
        raise ValueError(f"baud {baud} is {error:.1%} off at {clk_hz / 1e6:g} MHz "
                         f"(divisor {divisor}); pick a baud that divides the clock")
    return divisor


def _check_divisor(divisor):
    if not isinstance(divisor, int) or isinstance(divisor, bool) or divisor < MIN_DIVISOR:
        raise ValueError(f"divisor must be an integer of at least {MIN_DIVISOR} clocks per "
                         f"bit, not {divisor!r}")


class UARTRx(wiring.Component):
    """UART receiver, 8 data bits, no parity, 1 stop bit.

    Ports: ``rx`` (the pin, idle high; a 2-flop synchroniser brings it into the domain),
    ``o`` (received bytes), ``frame_error`` (1-cycle pulse: the stop bit was low; the byte
    is dropped and the receiver waits for the line to go high again), ``overrun`` (1-cycle
    pulse: a byte completed while ``o`` still held the previous one; the new one is
    dropped). A bit is sampled in its middle (``divisor // 2`` cycles after the start
    edge, then every ``divisor``); ``o.valid`` rises 2 + ~9.5 * ``divisor`` cycles after
    the start bit's falling edge.
    """

    def __init__(self, divisor):
        _check_divisor(divisor)
        self.divisor = divisor
        super().__init__({
            "rx": In(1, init=1),
            "o": Out(stream.Signature(8)),
            "frame_error": Out(1),
            "overrun": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        rx = Signal(init=1)
        m.submodules.sync_rx = FFSynchronizer(self.rx, rx, init=1)
        timer = Signal(range(self.divisor))
        bits = Signal(range(8))
        shreg = Signal(8)
        with m.If(self.o.ready):
            m.d.sync += self.o.valid.eq(0)
        with m.If(timer != 0):
            m.d.sync += timer.eq(timer - 1)
        with m.FSM():
            with m.State("IDLE"):
                with m.If(~rx):
                    m.d.sync += timer.eq(self.divisor // 2 - 1)
                    m.next = "START"
            with m.State("START"):
                with m.If(timer == 0):
                    m.d.sync += [timer.eq(self.divisor - 1), bits.eq(0)]
                    with m.If(rx):              # a glitch, not a start bit
                        m.next = "IDLE"
                    with m.Else():
                        m.next = "DATA"
            with m.State("DATA"):
                with m.If(timer == 0):
                    m.d.sync += [shreg.eq(Cat(shreg[1:], rx)), bits.eq(bits + 1),
                                 timer.eq(self.divisor - 1)]
                    with m.If(bits == 7):
                        m.next = "STOP"
            with m.State("STOP"):
                with m.If(timer == 0):
                    with m.If(~rx):
                        m.d.comb += self.frame_error.eq(1)
                        m.next = "BREAK"
                    with m.Elif(self.o.valid & ~self.o.ready):
                        m.d.comb += self.overrun.eq(1)
                        m.next = "IDLE"
                    with m.Else():
                        m.d.sync += [self.o.payload.eq(shreg), self.o.valid.eq(1)]
                        m.next = "IDLE"
            with m.State("BREAK"):
                with m.If(rx):
                    m.next = "IDLE"
        return m


class UARTTx(wiring.Component):
    """UART transmitter, 8N1. Ports: ``i`` (bytes to send; ``i.ready`` while idle),
    ``tx`` (the pin, idle high, registered). A byte taken in cycle *t* puts its start bit
    on ``tx`` from *t + 1*; ``i.ready`` rises again in the last cycle of its stop bit, so
    back-to-back bytes take exactly 10 * ``divisor`` cycles each."""

    def __init__(self, divisor):
        _check_divisor(divisor)
        self.divisor = divisor
        super().__init__({
            "i": In(stream.Signature(8)),
            "tx": Out(1, init=1),
        })

    def elaborate(self, platform):
        m = Module()
        timer = Signal(range(self.divisor))
        shreg = Signal(9)                 # data bits then the stop bit, after the start bit
        left = Signal(range(11))          # bits still to put on the line
        m.d.comb += self.i.ready.eq((left == 0) | ((left == 1) & (timer == 0)))
        with m.If(self.i.valid & self.i.ready):
            m.d.sync += [self.tx.eq(0), shreg.eq(Cat(self.i.payload, Const(1, 1))),
                         left.eq(10), timer.eq(self.divisor - 1)]
        with m.Elif(left != 0):
            m.d.sync += timer.eq(timer - 1)
            with m.If(timer == 0):
                m.d.sync += [self.tx.eq(shreg[0] | (left == 1)), shreg.eq(shreg >> 1),
                             left.eq(left - 1), timer.eq(self.divisor - 1)]
        return m
