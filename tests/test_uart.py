"""UART receiver/transmitter (Amaranth simulation)."""
import pytest
from amaranth.hdl import Module
from amaranth.sim import Simulator

from boards.uart import UARTRx, UARTTx, divisor_for

DIV = 6


def frame(byte, stop=1):
    """Line levels of one 8N1 frame: start, 8 data bits LSB first, stop."""
    return [0] + [byte >> i & 1 for i in range(8)] + [stop]


def run_rx(levels, divisor=DIV, ready=True, offset=3):
    """Drive ``levels`` (one per bit time, starting ``offset`` cycles into a bit) into a
    receiver; returns the bytes it delivered and the cycles of its error pulses."""
    dut = UARTRx(divisor)
    got, errors = [], {"frame_error": [], "overrun": []}

    async def drive(ctx):
        await ctx.tick().repeat(offset)
        for level in levels + [1] * 4:
            ctx.set(dut.rx, level)
            await ctx.tick().repeat(divisor)

    async def watch(ctx):
        ctx.set(dut.o.ready, ready)
        for cycle in range((len(levels) + 6) * divisor):
            await ctx.tick()
            if ctx.get(dut.o.valid) and ready:
                got.append(ctx.get(dut.o.payload))
            for name in errors:
                if ctx.get(getattr(dut, name)):
                    errors[name].append(cycle)

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(drive)
    sim.add_testbench(watch, background=True)
    sim.run()
    return got, errors


@pytest.mark.parametrize("offset", [1, 3, 5])
def test_rx_bytes_back_to_back(offset):
    data = [0x00, 0xFF, 0x55, 0xA3, 0x01, 0x80]
    got, errors = run_rx(sum((frame(b) for b in data), []), offset=offset)
    assert got == data
    assert errors == {"frame_error": [], "overrun": []}


def test_rx_framing_error_drops_byte_and_recovers():
    # a low stop bit, then the line stays low (a break) for 12 bits before the next frame
    levels = frame(0x5A, stop=0) + [0] * 12 + [1, 1] + frame(0x3C)
    got, errors = run_rx(levels)
    assert got == [0x3C]
    assert len(errors["frame_error"]) == 1 and not errors["overrun"]


def test_rx_overrun_keeps_first_byte():
    got, errors = run_rx(frame(0x11) + frame(0x22), ready=False)
    assert got == [] and len(errors["overrun"]) == 1


def test_rx_ignores_glitch():
    dut = UARTRx(8)
    seen = []

    async def bench(ctx):
        ctx.set(dut.o.ready, 1)
        ctx.set(dut.rx, 0)
        await ctx.tick().repeat(2)        # shorter than half a bit: not a start bit
        ctx.set(dut.rx, 1)
        for _ in range(100):
            await ctx.tick()
            seen.append((ctx.get(dut.o.valid), ctx.get(dut.frame_error)))

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    assert not any(valid or error for valid, error in seen)


def test_tx_to_rx_loopback_and_timing():
    """TX drives RX: every byte arrives, bytes leave every 10 * divisor cycles, and the
    line levels of the first frame are exact."""
    m = Module()
    m.submodules.tx = tx = UARTTx(DIV)
    m.submodules.rx = rx = UARTRx(DIV)
    m.d.comb += rx.rx.eq(tx.tx)
    data = [0x00, 0xC5, 0xFF, 0x7E]
    got, taken, line = [], [], []

    async def send(ctx):
        for byte in data:
            ctx.set(tx.i.payload, byte)
            ctx.set(tx.i.valid, 1)
            await ctx.tick().until(tx.i.ready)
            taken.append(len(line))
        ctx.set(tx.i.valid, 0)
        await ctx.tick().repeat(12 * DIV)

    async def watch(ctx):
        ctx.set(rx.o.ready, 1)
        while True:
            await ctx.tick()
            line.append(ctx.get(tx.tx))
            if ctx.get(rx.o.valid):
                got.append(ctx.get(rx.o.payload))

    sim = Simulator(m)
    sim.add_clock(1e-6)
    sim.add_testbench(send)
    sim.add_testbench(watch, background=True)
    sim.run()
    assert got == data
    assert [b - a for a, b in zip(taken, taken[1:])] == [10 * DIV] * (len(data) - 1)
    start = line.index(0)
    assert line[start:start + 10 * DIV:DIV] == frame(data[0])
    assert line[start:start + DIV] == [0] * DIV


def test_bad_parameters():
    with pytest.raises(ValueError, match="not 3"):
        UARTRx(3)
    with pytest.raises(ValueError, match="not 2.5"):
        UARTTx(2.5)
    assert divisor_for(40e6, 1_000_000) == 40
    assert divisor_for(12e6, 1_000_000) == 12
    with pytest.raises(ValueError, match="baud 3000000 is too fast for a 10 MHz"):
        divisor_for(10e6, 3_000_000)
    with pytest.raises(ValueError, match=r"baud 1500000 is 4\.8% off at 10 MHz"):
        divisor_for(10e6, 1_500_000)
    with pytest.raises(ValueError, match="baud must be positive, not 0"):
        divisor_for(12e6, 0)
