"""Board top of the accelerator: clock (PLL), reset, UART host link and status LEDs.

:class:`UARTAccelerator` is the pin-level core that simulations drive (UART pins, LEDs):
UART RX -> :class:`hw.accel.Accelerator` ``i``, its ``o`` -> UART TX. :class:`BoardTop`
wraps it for an amaranth-boards platform: the board clock, or a PLL to the requested
frequency, a power-on reset held until the PLL locks, and the board's UART and LEDs.
"""
from amaranth.hdl import ClockDomain, ClockSignal, Elaboratable, Module, Signal
from amaranth.lib import io, wiring
from amaranth.lib.cdc import ResetSynchronizer
from amaranth.lib.wiring import In, Out
from amaranth.vendor import LatticeICE40Platform

from hw.accel import Accelerator

from .pll import ecp5_pll, ice40_pll, pll_instance
from .uart import UARTRx, UARTTx, divisor_for

__all__ = ["LEDS", "UARTAccelerator", "BoardTop"]

#: Status LEDs, in the order of :class:`UARTAccelerator`'s ``leds`` bits.
LEDS = ("heartbeat", "busy", "rx", "error")
#: Power-on reset after the clock is up (iCE40 block RAM needs a few us after configuration).
POR_US = 16


class UARTAccelerator(wiring.Component):
    """The accelerator of ``cfg`` behind an 8N1 UART of ``divisor`` clocks per bit.

    Ports: ``rx`` / ``tx`` (the UART pins, idle high), ``leds`` (bits in :data:`LEDS`
    order: a ~1 Hz heartbeat, ``busy`` while a run executes, ``rx`` lit for 2^k to
    2^(k+1) cycles after each received byte (2^k the power of two at or below
    ``clk_hz / 20``: 44-87 ms at 24 MHz), ``error`` held from the first framing error or
    overrun until reset), ``por_done`` (set for good once :data:`POR_US` have passed
    since configuration; the board top's power-on reset). ``clk_hz`` only scales the
    LED and power-on timing. The UART has no flow control: the host waits for each reply
    (and, in a run, for each image's logits) before sending more.

    One free-running counter (no reset) makes the heartbeat, the rx LED's time base and
    the power-on delay, so the board logic beside the accelerator stays small (the UP5K
    is full).
    """

    def __init__(self, cfg, divisor, clk_hz):
        self.cfg, self.divisor, self.clk_hz = cfg, divisor, int(clk_hz)
        self.accel = Accelerator(cfg)
        self.uart_rx, self.uart_tx = UARTRx(divisor), UARTTx(divisor)
        super().__init__({
            "rx": In(1, init=1),
            "tx": Out(1, init=1),
            "leds": Out(len(LEDS)),
            "por_done": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        m.submodules.accel = accel = self.accel
        m.submodules.uart_rx = rx = self.uart_rx
        m.submodules.uart_tx = tx = self.uart_tx
        m.d.comb += [rx.rx.eq(self.rx), self.tx.eq(tx.tx)]
        wiring.connect(m, rx.o, accel.i)
        wiring.connect(m, accel.o, tx.i)

        # the free-running counter: no reset (it also times the power-on reset)
        m.domains.free = ClockDomain("free", reset_less=True, local=True)
        m.d.comb += ClockSignal("free").eq(ClockSignal("sync"))
        ticks = Signal(max(2, self.clk_hz.bit_length()))
        m.d.free += ticks.eq(ticks + 1)
        por_bit = max(0, int(POR_US * self.clk_hz / 1e6) - 1).bit_length()
        m.d.free += self.por_done.eq(self.por_done | ticks[min(por_bit, len(ticks) - 1)])
        # rx: lit from a byte until the second wrap of the counter's low k bits
        k = min(len(ticks) - 1, max(1, (self.clk_hz // 20).bit_length() - 1))
        rx_age = Signal(2)
        with m.If(rx.o.valid & rx.o.ready):
            m.d.sync += rx_age.eq(2)
        with m.Elif((rx_age != 0) & ticks[:k].all()):
            m.d.sync += rx_age.eq(rx_age - 1)
        error = Signal()
        with m.If(rx.frame_error | rx.overrun):
            m.d.sync += error.eq(1)
        leds = {"heartbeat": ticks[-1], "busy": accel.busy, "rx": rx_age != 0,
                "error": error}
        m.d.comb += [self.leds[i].eq(leds[name]) for i, name in enumerate(LEDS)]
        return m


class BoardTop(Elaboratable):
    """``UARTAccelerator`` of ``cfg`` on ``board`` (:class:`boards.platforms.Board`) at
    ``mhz`` (``None``: the board clock; else the nearest PLL output, or the board clock
    when that is what was asked) and ``baud``. ``clk_hz`` and ``divisor`` say what was
    chosen; ``ValueError`` when the PLL or the baud rate cannot be had."""

    def __init__(self, cfg, board, mhz=None, baud=1_000_000):
        self.board = board
        platform = board.platform()
        self.ice40 = isinstance(platform, LatticeICE40Platform)
        board_mhz = platform.default_clk_frequency / 1e6
        self.pll = None
        if mhz is not None and abs(mhz - board_mhz) > 1e-6:
            self.pll = (ice40_pll if self.ice40 else ecp5_pll)(board_mhz, mhz)
        self.clk_hz = (self.pll.out_mhz if self.pll else board_mhz) * 1e6
        self.baud = baud
        self.divisor = divisor_for(self.clk_hz, baud)
        self.core = UARTAccelerator(cfg, self.divisor, self.clk_hz)

    def elaborate(self, platform):
        m = Module()
        m.domains.sync = cd_sync = ClockDomain("sync")
        clk_pin = platform.request(platform.default_clk, dir="-")
        lock = Signal()
        if self.pll is None:
            m.submodules.clk_buf = clk_buf = io.Buffer("i", clk_pin)
            m.d.comb += [cd_sync.clk.eq(clk_buf.i), lock.eq(1)]
        else:
            if self.ice40:
                clk_in = clk_pin.io
            else:
                m.submodules.clk_buf = clk_buf = io.Buffer("i", clk_pin)
                clk_in = clk_buf.i
            # no constraint of its own: nextpnr derives the PLL output's from the board
            # clock's and the dividers ("Derived frequency constraint of 24.0 MHz for
            # net clk"); a named one is lost when synthesis merges the net into "clk"
            m.submodules.pll = pll_instance(self.pll, clk_in, cd_sync.clk, lock)

        # power-on reset: POR_US after configuration (the core's free-running counter),
        # and while the PLL is not locked
        m.submodules.core = core = self.core
        m.submodules.reset_sync = ResetSynchronizer(~lock | ~core.por_done, domain="sync")

        uart = platform.request("uart", 0, dir="-")
        m.submodules.rx_buf = rx_buf = io.Buffer("i", uart.rx)
        m.submodules.tx_buf = tx_buf = io.Buffer("o", uart.tx)
        m.d.comb += [core.rx.eq(rx_buf.i), tx_buf.o.eq(core.tx)]
        for index, (name, number) in enumerate(self.board.leds):
            buf = io.Buffer("o", platform.request(name, number, dir="-"))
            m.submodules[f"led_{LEDS[index]}"] = buf
            m.d.comb += buf.o.eq(core.leds[index])
        return m
