"""cocotb testbench: a whole network on the accelerator through its host byte protocol
(the session of ``sim.network``: loads, then runs of up to ``slots`` images), logits
compared bit for bit with the golden model, every layer's cycles compared with the cost
model.

``$TB_PARAMS`` (JSON): ``cfg`` (AccelConfig dict), ``model`` (path of a qmodel.npz) or
``specs`` (``sw.golden.random_model`` layer specs) + ``seed``, ``images`` (how many),
``dataset`` (``fashion-mnist``/``mnist``: test images; else random images).
"""
import json
import os
import time

import cocotb
import numpy as np
from cocotb.clock import Clock
from cocotb.triggers import Event, FallingEdge, ReadOnly, RisingEdge
from cocotb.utils import get_sim_time

from hw.accel import Accelerator
from hw.config import AccelConfig
from sim.network import parse, session
from sw.compile import compile_model, execution_order
from sw.costmodel import program_cycles
from sw.golden import model as golden


class HostTB:
    """The host side of the byte protocol on the ``i``/``o`` streams."""

    def __init__(self, dut):
        self.dut = dut
        self.rx, self.got = [], Event()

    async def reset(self):
        Clock(self.dut.clk, 10, unit="ns").start()
        self.dut.rst.value = 1
        self.dut.i__valid.value = 0
        self.dut.o__ready.value = 1
        for _ in range(3):
            await FallingEdge(self.dut.clk)
        self.dut.rst.value = 0
        cocotb.start_soon(self.collect())

    async def send(self, data):
        dut = self.dut
        await FallingEdge(dut.clk)       # (replies wake us in the read-only phase)
        for b in data:
            dut.i__valid.value, dut.i__payload.value = 1, b
            await ReadOnly()
            while not int(dut.i__ready.value):
                await FallingEdge(dut.clk)
                await ReadOnly()
            await FallingEdge(dut.clk)
        dut.i__valid.value = 0

    async def collect(self):
        """Background: every byte the accelerator sends, appended to ``self.rx``."""
        dut = self.dut
        while True:
            await ReadOnly()
            if not int(dut.o__valid.value):
                await RisingEdge(dut.o__valid)      # sleep through long runs
            else:
                self.rx.append(int(dut.o__payload.value))
                self.got.set()
            await FallingEdge(dut.clk)

    async def command(self, data, reply_len):
        """Send a command and wait for its ``reply_len`` reply bytes."""
        await self.send(data)
        while len(self.rx) < reply_len:
            self.got.clear()
            await self.got.wait()
        reply, self.rx[:] = bytes(self.rx[:reply_len]), self.rx[reply_len:]
        return reply


async def time_layers(dut, engine, log, period_ns=10):
    """Append the cycles of every busy period of one engine to ``log[engine]``."""
    busy = getattr(dut, engine).busy
    while True:
        await RisingEdge(busy)
        start = get_sim_time("ns")
        await FallingEdge(busy)
        log.setdefault(engine, []).append(round((get_sim_time("ns") - start) / period_ns))


def engine_order(prog, cfg, images):
    """Per engine, the (image, layer) pairs it runs, in order (a shared engine merges its
    chunks' orders by iteration and program entry)."""
    order = execution_order(prog, images, cfg.slots)
    return {name: sorted((pair for c in chunks for pair in order.get(c, [])),
                         key=lambda p: (p[0] + prog.deltas[p[1]], p[1]))
            for name, chunks in Accelerator(cfg).engine_chunks.items()}


def load_images(params, shape, count):
    if params.get("dataset"):
        from sw.datasets import load
        images, labels = load(params["dataset"], "test")
        return images[:count], labels[:count]
    rng = np.random.default_rng(params.get("seed", 0))
    return rng.integers(0, 256, size=(count,) + tuple(shape[1:]), dtype=np.uint8), None


@cocotb.test()
async def network_matches_golden_model(dut):
    p = json.loads(os.environ["TB_PARAMS"])
    cfg = AccelConfig.from_dict(p["cfg"])
    if p.get("model"):
        qm = golden.load(p["model"])
    else:
        from sw.golden.random_model import random_qmodel
        qm = random_qmodel([tuple(s) for s in p["specs"]], seed=p["seed"],
                           input_shape=tuple(p.get("input_shape", (1, 8, 8))))
    prog = compile_model(qm, cfg)
    images, labels = load_images(p, qm.tensors[0]["shape"], p["images"])
    host = HostTB(dut)
    await host.reset()
    spans = {}
    order = engine_order(prog, cfg, p["images"])
    for name in order:
        cocotb.start_soon(time_layers(dut, name, spans))

    cmds = session(prog, cfg, images)
    t0 = time.time()
    reply = b"".join([await host.command(cmd, size) for cmd, size in cmds])
    got, cycles = parse(cmds, reply, prog, len(images))
    seconds = time.time() - t0

    expect = golden.forward(qm, images)
    bad = np.flatnonzero((got != expect).any(axis=1))
    assert bad.size == 0, (f"{bad.size} of {len(images)} images differ; first image {bad[0]}: "
                           f"got {got[bad[0]].tolist()}, expected {expect[bad[0]].tolist()}")
    predicted, predicted_total = program_cycles(prog, cfg)
    for chunk, pairs in order.items():
        measured = spans[chunk][:len(pairs)]
        off = [(img, prog.layers[i].name, cyc, predicted[i])
               for (img, i), cyc in zip(pairs, measured) if cyc != predicted[i]]
        assert len(measured) == len(pairs) and not off, \
            f"{chunk}: measured layer cycles differ from the cost model (image, layer, got, model): {off}"
    # One slot: images run back to back, each also waiting for its logits to go out and
    # the next input to come in over the byte stream.
    if cfg.slots == 1:
        assert cycles[0] >= len(images) * predicted_total, \
            f"run of {cycles[0]} cycles is faster than the cost model's compute alone"
    dut._log.info(f"{len(images)} images bit-exact in {len(cycles)} runs of {cycles} cycles "
                  f"({seconds:.1f} s); cost model exact on every layer")
