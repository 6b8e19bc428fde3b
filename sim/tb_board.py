"""cocotb testbench: the board top's core (:class:`boards.top.UARTAccelerator`) driven
through its UART pins by a bit-level 8N1 model, with the host session of
:func:`boards.host.uart_steps` (the one the serial-port host runs).

``$TB_PARAMS`` (JSON): ``cfg`` (AccelConfig dict), ``specs`` + ``seed`` (a
``sw.golden.random_model``), ``images``, ``divisor`` (clocks per bit).
"""
import json
import os

import cocotb
import numpy as np
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles, FallingEdge, RisingEdge, Timer

from boards.host import uart_steps
from boards.top import LEDS
from hw import protocol
from hw.config import AccelConfig
from sim.network import parse, session
from sw.compile import compile_model
from sw.golden import model as golden
from sw.golden.random_model import random_qmodel

PERIOD_NS = 10


class TB:
    """A UART on the ``rx``/``tx`` pins (``divisor`` clocks per bit) and the LEDs seen lit."""

    def __init__(self, dut, divisor):
        self.dut, self.divisor = dut, divisor
        self.rx, self.framing_errors = bytearray(), 0
        self.leds_seen = 0

    async def reset(self):
        Clock(self.dut.clk, PERIOD_NS, unit="ns").start()
        self.dut.rx.value = 1
        self.dut.rst.value = 1
        await ClockCycles(self.dut.clk, 3)
        self.dut.rst.value = 0
        cocotb.start_soon(self._receive())
        cocotb.start_soon(self._watch_leds())

    async def send(self, data, stop=1):
        """Send ``data`` as 8N1 frames (``stop=0``: every stop bit low, a framing error)."""
        for byte in data:
            for level in [0] + [byte >> i & 1 for i in range(8)] + [stop]:
                self.dut.rx.value = level
                await Timer(self.divisor * PERIOD_NS, unit="ns")
        self.dut.rx.value = 1

    async def _receive(self):
        half = Timer(self.divisor * PERIOD_NS // 2, unit="ns")
        while True:
            await FallingEdge(self.dut.tx)
            await half
            assert int(self.dut.tx.value) == 0, "start bit glitch on tx"
            byte = 0
            for i in range(8):
                await Timer(self.divisor * PERIOD_NS, unit="ns")
                byte |= int(self.dut.tx.value) << i
            await Timer(self.divisor * PERIOD_NS, unit="ns")
            if int(self.dut.tx.value):
                self.rx.append(byte)
            else:
                self.framing_errors += 1

    async def _watch_leds(self):
        while True:
            await RisingEdge(self.dut.clk)
            self.leds_seen |= int(self.dut.leds.value)

    async def command(self, data, reply_len, timeout_bits=200_000):
        """Send ``data``, then wait for ``reply_len`` bytes (fails after ``timeout_bits``
        bit times without them)."""
        await self.send(data)
        waited = 0
        while len(self.rx) < reply_len:
            await Timer(self.divisor * PERIOD_NS * 10, unit="ns")
            waited += 10
            assert waited < timeout_bits, \
                f"no reply to {bytes(data[:1])!r}: {len(self.rx)} of {reply_len} bytes"
        reply, self.rx[:] = bytes(self.rx[:reply_len]), self.rx[reply_len:]
        return reply

    def led(self, name):
        return self.leds_seen >> LEDS.index(name) & 1

    async def run_images(self, qm, cfg, images, timeout_bits=200_000):
        """Reset, run ``images`` through ``qm`` compiled for ``cfg`` in the serial host's
        session (:func:`boards.host.uart_steps`) and assert the logits and classes equal
        the golden model's, with no framing error; ``timeout_bits`` per step."""
        prog = compile_model(qm, cfg)
        await self.reset()
        cmds = session(prog, cfg, images)
        reply = b"".join([await self.command(s.send, s.reply, timeout_bits)
                          for s in uart_steps(cmds, cfg.slots, len(images))])
        got, _ = parse(cmds, reply, prog, len(images))
        expect = golden.forward(qm, images)
        assert (got == expect).all(), f"logits {got.tolist()} != golden {expect.tolist()}"
        assert list(got.argmax(1)) == list(expect.argmax(1))
        assert self.framing_errors == 0 and not self.led("error")


def setup(dut):
    p = json.loads(os.environ["TB_PARAMS"])
    return p, TB(dut, p["divisor"])


@cocotb.test()
async def network_over_uart_matches_golden_model(dut):
    p, tb = setup(dut)
    cfg = AccelConfig.from_dict(p["cfg"])
    qm = random_qmodel([tuple(s) for s in p["specs"]], seed=p["seed"])
    rng = np.random.default_rng(p["seed"])
    images = rng.integers(0, 256, (p["images"],) + tuple(qm.tensors[0]["shape"][1:]),
                          dtype=np.uint8)
    await tb.run_images(qm, cfg, images)
    assert tb.led("busy") and tb.led("rx") and tb.led("heartbeat")


@cocotb.test()
async def framing_error_drops_the_byte_and_lights_the_error_led(dut):
    p, tb = setup(dut)
    await tb.reset()
    await tb.send(protocol.PING, stop=0)      # dropped: no reply may come
    dut.rx.value = 0                          # and a break
    await Timer(20 * tb.divisor * PERIOD_NS, unit="ns")
    dut.rx.value = 1
    await Timer(2 * tb.divisor * PERIOD_NS, unit="ns")
    assert not tb.rx, f"a dropped byte was answered: {bytes(tb.rx)!r}"
    assert tb.led("error")
    assert await tb.command(protocol.PING, 4) == protocol.MAGIC
