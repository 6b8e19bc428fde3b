"""cocotb testbench: a whole network on the accelerator through its host byte protocol,
logits compared bit for bit with the golden model, cycles per layer reported.

``$TB_PARAMS`` (JSON): ``cfg`` (AccelConfig dict), ``model`` (path of a qmodel.npz) or
``specs`` (``sw.golden.random_model`` layer specs) + ``seed``, ``images`` (how many),
``dataset`` (``fashion-mnist``/``mnist``: test images; else random images), ``report``
(path of a JSON summary to write).
"""
import json
import os
import time

import cocotb
import numpy as np
from cocotb.clock import Clock
from cocotb.triggers import FallingEdge, ReadOnly, RisingEdge
from cocotb.utils import get_sim_time

from hw import protocol
from hw.config import AccelConfig
from sw.compile import compile_model
from sw.costmodel import program_cycles
from sw.golden import model as golden


class HostTB:
    """The host side of the byte protocol on the ``i``/``o`` streams."""

    def __init__(self, dut):
        self.dut = dut

    async def reset(self):
        Clock(self.dut.clk, 10, unit="ns").start()
        self.dut.rst.value = 1
        self.dut.i__valid.value = 0
        self.dut.o__ready.value = 1
        for _ in range(3):
            await FallingEdge(self.dut.clk)
        self.dut.rst.value = 0

    async def send(self, data):
        dut = self.dut
        for b in data:
            dut.i__valid.value, dut.i__payload.value = 1, b
            await ReadOnly()
            while not int(dut.i__ready.value):
                await FallingEdge(dut.clk)
                await ReadOnly()
            await FallingEdge(dut.clk)
        dut.i__valid.value = 0

    async def recv(self, n):
        dut, out = self.dut, []
        while len(out) < n:
            await ReadOnly()
            if not int(dut.o__valid.value):
                await RisingEdge(dut.o__valid)      # sleep through long runs
            else:
                out.append(int(dut.o__payload.value))
            await FallingEdge(dut.clk)
        return bytes(out)

    async def command(self, data, reply_len):
        await self.send(data)
        return await self.recv(reply_len)


async def time_layers(dut, chunk, log, period_ns=10):
    """Append (chunk, cycles) for every busy period of one chunk's engine."""
    busy = getattr(dut, chunk).busy
    while True:
        await RisingEdge(busy)
        start = get_sim_time("ns")
        await FallingEdge(busy)
        log.append((start, chunk, round((get_sim_time("ns") - start) / period_ns)))


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
    from hw.accel import memory_bits
    bits = dict(zip(protocol.MEMORIES, memory_bits(cfg)))
    host = HostTB(dut)
    await host.reset()
    assert await host.command(protocol.PING, 4) == protocol.MAGIC

    t0 = time.time()
    for mem, blocks in prog.images.items():
        for base, words in blocks.items():
            for at in range(0, len(words), 4096):
                reply = await host.command(protocol.write(mem, base + at, words[at:at + 4096],
                                                          bits[mem]), 1)
                assert reply == protocol.ACK, f"write {mem}: reply {reply!r}"
    load_s = time.time() - t0

    layer_log = []
    monitors = [cocotb.start_soon(time_layers(dut, name, layer_log)) for name, _, _ in cfg.chunks]
    images, labels = load_images(p, qm.tensors[0]["shape"], p["images"])
    expect = golden.forward(qm, images)
    V = cfg.word_bytes
    out_words = prog.output_bytes // V
    got, cycles = [], []
    t0 = time.time()
    for image in images:
        reply = await host.command(protocol.write("act", prog.input_base // V,
                                                  prog.input_words(image), bits["act"]), 1)
        assert reply == protocol.ACK
        cycles.append(protocol.parse_done(await host.command(protocol.RUN, 5)))
        data = await host.command(protocol.read(prog.output_base // V, out_words), out_words * V)
        got.append(prog.decode_output(np.frombuffer(data, np.uint8)))
        if len(got) == 1:
            first_image = sorted(layer_log)
    run_s = time.time() - t0
    for task in monitors:
        task.cancel()
    got = np.array(got)
    bad = np.flatnonzero((got != expect).any(axis=1))
    lanes = {name: cfg.chunk(name).lanes for name in ("clp", "slp", "alp")}
    predicted, predicted_total = program_cycles(prog, cfg)
    summary = {
        "images": len(images), "mismatches": int(bad.size),
        "cycles_per_image": int(np.median(cycles)),
        "predicted_beats": sum(L.beats for L in prog.layers),
        "predicted_cycles": predicted_total,
        "load_seconds": round(load_s, 2), "images_per_minute": round(60 * len(images) / run_s, 1),
        "golden_accuracy": None if labels is None else float((expect.argmax(1) == labels).mean()),
        "rtl_accuracy": None if labels is None else float((got.argmax(1) == labels).mean()),
        "layers": [{"name": L.name, "chunk": L.chunk, "mode": L.layer.mode, "beats": L.beats,
                    "cycles": measured[2], "predicted": pred, "macs": L.macs,
                    "lanes": lanes[L.chunk]}
                   for L, measured, pred in zip(prog.layers, first_image, predicted)],
    }
    dut._log.info(json.dumps(summary))
    if p.get("report"):
        with open(p["report"], "w") as f:
            json.dump(summary, f, indent=2)
    assert bad.size == 0, (f"{bad.size} of {len(images)} images differ; first image {bad[0]}: "
                           f"got {got[bad[0]].tolist()}, expected {expect[bad[0]].tolist()}")
    off = [(L["name"], L["cycles"], L["predicted"]) for L in summary["layers"]
           if L["cycles"] != L["predicted"]]
    assert not off, f"cost model misses measured layer cycles (name, measured, predicted): {off}"
    assert set(cycles) == {predicted_total}, f"run cycles {set(cycles)} != predicted {predicted_total}"
