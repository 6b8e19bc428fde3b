"""cocotb testbench: random conv-like layers on ``sim.engine_harness.EngineHarness`` against
the golden model (``sw.golden.model.conv_acc`` + ``wrap`` + ``requantize``).

``$TB_PARAMS`` (JSON): ``kind``, ``lanes`` and the engine's keyword widths (``engine``),
``layers`` (random layers to run), ``seed``. Every layer is checked bit for bit; the
cycle count of each is logged.
"""
import json
from dataclasses import replace
import os

import cocotb
import numpy as np
from cocotb.clock import Clock
from cocotb.triggers import FallingEdge, RisingEdge

from sim.engine_harness import EngineHarness
from hw.payload import pack
from sw.costmodel import layer_cycles
from sw.golden.model import conv_acc, requantize
from sw.golden.pe import wrap
from sw.program import (ConvLayer, cpad, descriptor, pack_activation, param_words,
                        spread_activation, unpack_activation, weight_words)


def random_layer(rng, kind, lanes, word_bytes, case, tile=1, pixels=1):
    """A random layer shape; ``case`` picks broadcast / lanewise / gap / fc / tiled
    (broadcast over ``tile`` input channels per beat; adder: ``cin`` a multiple of it) /
    block (lanewise over blocks of up to ``pixels`` output pixels) / spread (a
    one-channel convolution run lanewise on a spread input, in blocks)."""
    if case == "spread":
        for _ in range(100):
            base = random_layer(rng, kind, lanes, word_bytes, "broadcast")
            layer = replace(base, in_shape=(1,) + base.in_shape[1:], mode="lanewise",
                            out_c=int(rng.integers(1, word_bytes + 1)), spread=True)
            fits = list(range(2, min(pixels, layer.out_hw[1]) + 1))
            if fits and layer.stride <= 2:
                return replace(layer, pixels=int(rng.choice(fits)))
        raise AssertionError("no random layer runs spread")
    if case == "block":
        for _ in range(100):
            layer = random_layer(rng, kind, lanes, word_bytes, "lanewise")
            ow = layer.out_hw[1]
            fits = list(range(2, min(pixels, ow) + 1))   # a row's last block may be short
            if fits and layer.stride <= 2:
                return replace(layer, pixels=int(rng.choice(fits)))
        raise AssertionError("no random layer takes pixel blocks")
    if case == "tiled":
        layer = random_layer(rng, kind, lanes, word_bytes, "broadcast")
        cin = layer.in_shape[0] * (tile if kind == "adder" else int(rng.integers(1, 4)))
        return replace(layer, in_shape=(cin,) + layer.in_shape[1:], tile=tile)
    if case == "gap":
        c, h = int(rng.integers(1, 3 * word_bytes)), int(rng.integers(1, 8))
        return ConvLayer("lanewise", (c, h, h), c, h)
    if case == "fc":
        return ConvLayer("broadcast", (int(rng.integers(1, 40)), 1, 1),
                         int(rng.integers(1, 3 * lanes)), 1, wide=word_bytes >= 2)
    k = int(rng.choice([1, 3, 5]))
    stride = int(rng.integers(1, 3))
    pad = int(rng.integers(0, k // 2 + 1))
    h, w = int(rng.integers(max(1, k - 2 * pad), 10)), int(rng.integers(max(1, k - 2 * pad), 10))
    if case == "lanewise":
        c = int(rng.integers(1, 3 * word_bytes + 1))
        return ConvLayer("lanewise", (c, h, w), c, k, stride, pad)
    return ConvLayer("broadcast", (int(rng.integers(1, 9)), h, w),
                     int(rng.integers(1, 2 * lanes + 2)), k, stride, pad)


def random_weights(rng, kind, layer, w_width):
    """Returns (engine lane values [O, Cg, K, K(, 2)], golden product weights)."""
    cg = layer.in_shape[0] if layer.mode == "broadcast" else 1
    shape = (layer.out_c, cg, layer.kernel, layer.kernel)
    if (layer.kernel == layer.in_shape[1] and layer.mode == "lanewise" and not layer.spread
            and kind != "adder"):
        ones = np.ones(shape, np.int64)                   # global average pooling
        return (np.stack([ones, 0 * ones], -1) if kind == "shift" else ones), ones
    if kind == "shift":
        sign = rng.integers(-1, 2, size=shape)
        shift = rng.integers(0, 1 << w_width, size=shape)
        return np.stack([sign, shift], -1), sign << shift
    lim = 1 << (w_width - 1)
    w = rng.integers(-lim, lim, size=shape)
    w = np.where(rng.random(shape) < 0.1, rng.choice([-lim, lim - 1], size=shape), w)
    return w, w


class EngineTB:
    def __init__(self, dut, params):
        self.dut, self.p = dut, params
        e = params["engine"]
        self.harness = EngineHarness(params["kind"], params["lanes"], **e)
        self.V = e["word_bytes"]
        self.desc_layout = self.harness.engine.desc_layout

    async def reset(self):
        Clock(self.dut.clk, 10, unit="ns").start()
        self.dut.rst.value = 1
        self.dut.ld_en.value = 0
        self.dut.start.value = 0
        await RisingEdge(self.dut.clk)
        await FallingEdge(self.dut.clk)
        self.dut.rst.value = 0

    async def load(self, sel, base, words):
        for i, word in enumerate(words):
            self.dut.ld_sel.value, self.dut.ld_addr.value = sel, base + i
            self.dut.ld_data.value, self.dut.ld_en.value = word, 1
            await FallingEdge(self.dut.clk)
        self.dut.ld_en.value = 0

    def act_words(self, data):
        data = np.asarray(data, np.uint8).reshape(-1, self.V).astype(np.int64)
        return [int(sum(int(b) << (8 * i) for i, b in enumerate(row))) for row in data]

    async def read_bytes(self, base, count):
        out = []
        for addr in range(base // self.V, (base + count + self.V - 1) // self.V):
            self.dut.rd_addr.value = addr
            await FallingEdge(self.dut.clk)
            word = int(self.dut.rd_data.value.to_unsigned())
            out += [(word >> (8 * i)) & 0xFF for i in range(self.V)]
        return np.array(out, np.uint8)

    async def run_layer(self, fields):
        self.dut.desc.value = pack(self.desc_layout, fields)
        self.dut.start.value = 1
        await FallingEdge(self.dut.clk)
        self.dut.start.value = 0
        cycles = 1
        while int(self.dut.busy.value):
            await FallingEdge(self.dut.clk)
            cycles += 1
            assert cycles < 200_000, "engine did not finish"
        return cycles


@cocotb.test()
async def layers_match_golden_model(dut):
    p = json.loads(os.environ["TB_PARAMS"])
    kind, lanes, e = p["kind"], p["lanes"], p["engine"]
    V, w_width, acc_width = e["word_bytes"], e["w_width"], e["acc_width"]
    D, T, P = e.get("drain", 1), e.get("cin_tile", 1), e.get("pixels", 1)
    rng = np.random.default_rng(p["seed"])
    tb = EngineTB(dut, p)
    await tb.reset()
    w_lane_shape = tb.harness.w_shape
    p_shape = tb.harness.p_shape
    cases = (["broadcast", "lanewise", "fc"] + (["gap"] if kind != "adder" else [])
             + (["tiled"] * 2 if T > 1 else []) + (["block"] * 2 + ["spread"] if P > 1 else []))
    for n in range(p["layers"]):
        case = cases[n % len(cases)]
        layer = random_layer(rng, kind, lanes, V, case, T, P)
        c, h, w = layer.in_shape
        oh, ow = layer.out_hw
        x = rng.integers(-128, 128, size=(c, h, w))
        x = np.where(rng.random(x.shape) < 0.1, rng.choice([-128, 127], size=x.shape), x)
        lane_w, gold_w = random_weights(rng, kind, layer, w_width)
        acc = wrap(conv_acc("mul" if kind == "shift" else kind, x[None], gold_w,
                            layer.stride, layer.pad,
                            c if layer.mode == "lanewise" and not layer.spread else 1),
                   acc_width)[0]
        M = rng.integers(-(1 << 15), 1 << 15, size=layer.out_c)
        peak = int(np.abs(acc).max() * np.abs(M).max()) or 1
        S = max(1, peak.bit_length() - 7 + int(rng.integers(-1, 2)))
        B = rng.integers(-(1 << (S + 6)), 1 << (S + 6), size=layer.out_c)
        lo, hi = ((0, 127) if rng.random() < 0.5 else (-128, 127))
        if layer.wide:
            lo, hi, S = -(1 << 15), (1 << 15) - 1, max(1, S - 8)
        has_res = rng.random() < 0.5 and not layer.wide and layer.pixels == 1
        res = rng.integers(-128, 128, size=(layer.out_c, oh, ow)) if has_res else None
        res_shift = int(rng.integers(0, S + 1))
        expect = requantize(acc[None], M, B, S, lo, hi,
                            None if res is None else res[None], res_shift)[0]

        in_bytes = c * 0 + h * w * cpad(c, V)
        out_bytes = oh * ow * cpad(layer.out_c * (2 if layer.wide else 1), V)
        in_base = V * int(rng.integers(0, 4))
        res_base = in_base + in_bytes
        out_base = res_base + (out_bytes if has_res else 0)
        w_base, p_base = int(rng.integers(0, 8)), int(rng.integers(0, 8))   # p: a word
        words = weight_words(layer, lane_w, lanes, V)
        fields = descriptor(layer, lanes=lanes, word_bytes=V, in_base=in_base,
                            out_base=out_base, w_base=w_base, p_base=p_base, shift=S,
                            lo=lo, hi=hi, res_base=res_base if has_res else None,
                            res_shift=res_shift)

        packed = spread_activation(x, V) if layer.spread else pack_activation(x, V)
        await tb.load(0, in_base // V, tb.act_words(packed))
        if has_res:
            await tb.load(0, res_base // V, tb.act_words(pack_activation(res, V)))
        guard = lanes * V         # bytes past the output that must stay untouched
        await tb.load(0, out_base // V, [0] * ((out_bytes + guard) // V))
        if kind == "shift":
            lane_vals = [[{"sign": int(v[0]), "shift": int(v[1])} for v in word] for word in words]
        else:
            lane_vals = [[int(v) for v in word] for word in words]
        await tb.load(1, w_base, [pack(w_lane_shape, vals) for vals in lane_vals])
        pw = [{"m": int(mv), "b": int(bv)} for mv, bv in param_words(M, B, S)]
        pw += [{"m": 0, "b": 0}] * (-len(pw) % D)        # words of D channels' parameters
        await tb.load(2, p_base, [pack(p_shape, pw[k:k + D]) for k in range(0, len(pw), D)])

        cycles = await tb.run_layer(fields)
        out = await tb.read_bytes(out_base, out_bytes + guard)
        assert not any(out[out_bytes:]), f"layer {n} ({case}, {layer}): wrote past its output"
        got = unpack_activation(out[:out_bytes], expect.shape, V, layer.wide)
        beats = layer.groups(lanes, V) * layer.positions() * layer.taps()
        model = layer_cycles(layer, lanes, V, D)
        dut._log.info(f"layer {n} {case} {layer}: {beats} beats, {cycles} cycles "
                      f"(cost model {model})")
        bad = np.argwhere(got != expect)
        assert bad.size == 0, (f"layer {n} ({case}, {layer}, S={S}, res={has_res}): "
                               f"{len(bad)} of {expect.size} outputs differ; first at "
                               f"{bad[0].tolist()}: got {got[tuple(bad[0])]}, expected "
                               f"{expect[tuple(bad[0])]}")
        assert cycles == model + 1, f"layer {n} ({case}, {layer}): {cycles} cycles, the cost " \
            f"model says {model} (+1: the start cycle)"
