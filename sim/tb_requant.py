"""cocotb testbench for ``hw.requant.Requantizer`` against ``sw.golden.model.requantize``.

``$TB_PARAMS`` (JSON): the Requantizer's widths, ``beats`` per layer setting, ``seed``.
"""
import json
import os

import cocotb
import numpy as np
from cocotb.clock import Clock
from cocotb.triggers import FallingEdge, RisingEdge

from hw.requant import Requantizer
from hw.payload import pack
from sw.golden.model import requantize

LATENCY = Requantizer.LATENCY


def random_setting(rng, p):
    """One layer's (shift, res_shift, lo, hi) and random beats that keep every
    intermediate inside rq_width (as the quantiser's proof guarantees)."""
    out_max = (1 << (p["out_width"] - 1)) - 1
    relu = bool(rng.integers(2))
    lo, hi = (0 if relu else -out_max - 1), int(rng.integers(out_max // 2, out_max + 1))
    shift = int(rng.integers(1, p["rq_width"] - p["out_width"]))
    res_shift = int(rng.integers(0, p["rq_width"] - p["res_width"] - 2))
    n = p["beats"]

    def ints(bits, size):
        lim = 1 << (bits - 1)
        v = rng.integers(-lim, lim, size=size)
        return np.where(rng.random(size) < 0.1, rng.choice([-lim, lim - 1], size=size), v)

    acc, m = ints(p["acc_width"], n), ints(p["m_width"], n)
    b = ints(p["rq_width"] - 2, n) >> int(rng.integers(0, p["rq_width"] - 4))
    res = ints(p["res_width"], n)
    budget = p["rq_width"] - 1
    fits = lambda v: np.abs(v) < (1 << (budget - 1))
    keep = fits(acc * m) & fits(b + (res << res_shift)) & fits(acc * m + b + (res << res_shift))
    return (shift, res_shift, lo, hi), acc[keep], m[keep], b[keep], res[keep]


class RequantTB:
    def __init__(self, dut, params):
        self.dut = dut
        widths = {k: params[k] for k in ("acc_width", "m_width", "rq_width", "res_width",
                                         "out_width")}
        self.layout = Requantizer(**widths).signature.members["i"].signature.members["payload"].shape

    async def reset(self):
        Clock(self.dut.clk, 10, unit="ns").start()
        self.dut.rst.value = 1
        self.dut.i__valid.value = 0
        await RisingEdge(self.dut.clk)
        await FallingEdge(self.dut.clk)
        self.dut.rst.value = 0

    async def run(self, setting, acc, m, b, res):
        shift, res_shift, lo, hi = setting
        self.dut.shift.value, self.dut.res_shift.value = shift, res_shift
        self.dut.lo.value, self.dut.hi.value = lo, hi
        got = []
        for i in range(len(acc) + LATENCY):
            if i < len(acc):
                self.dut.i__valid.value = 1
                self.dut.i__payload.value = pack(self.layout, {
                    "acc": int(acc[i]), "m": int(m[i]), "b": int(b[i]), "res": int(res[i])})
            else:
                self.dut.i__valid.value = 0
            await FallingEdge(self.dut.clk)
            if int(self.dut.o__valid.value):
                got.append(self.dut.o__payload.value.to_signed())
        return np.array(got, dtype=np.int64)


@cocotb.test()
async def requant_matches_golden_model(dut):
    params = json.loads(os.environ["TB_PARAMS"])
    rng = np.random.default_rng(params["seed"])
    tb = RequantTB(dut, params)
    await tb.reset()
    clamped = 0
    for _ in range(params["settings"]):
        setting, acc, m, b, res = random_setting(rng, params)
        shift, res_shift, lo, hi = setting
        got = await tb.run(setting, acc, m, b, res)
        # The unit adds b_round = B + 2^(S-1); the golden model adds the rounding itself.
        expect = requantize(acc[None], m, b - (1 << (shift - 1)), shift, lo, hi,
                            res[None], res_shift)[0]
        assert len(got) == len(expect), f"{len(got)} outputs for {len(expect)} inputs"
        bad = np.flatnonzero(got != expect)
        assert bad.size == 0, (f"setting {setting}: {bad.size} wrong; first: acc={acc[bad[0]]} "
                               f"m={m[bad[0]]} b={b[bad[0]]} res={res[bad[0]]} "
                               f"got {got[bad[0]]} expected {expect[bad[0]]}")
        clamped += int(((expect == lo) | (expect == hi)).sum())
    assert 0 < clamped < params["settings"] * params["beats"], "clamping never (or always) hit"
