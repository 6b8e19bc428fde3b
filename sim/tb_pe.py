"""cocotb testbench for ``hw.pe.PE`` and ``hw.pe.PERow`` against ``sw.golden.pe``.

``$TB_PARAMS`` (JSON): ``kind``, ``n`` (null for a single PE), ``x_width``, ``w_width``,
``acc_width``, ``beats`` (random beats to run), ``seed``.
"""
import json
import os

import cocotb
import numpy as np
from cocotb.clock import Clock
from cocotb.triggers import FallingEdge, RisingEdge

from hw.pe import PE, PERow
from hw.payload import pack, unpack
from sw.golden import pe as golden


def make_dut_model(params):
    """The Amaranth component the Verilog was made from (for its layouts)."""
    widths = {k: params[k] for k in ("x_width", "w_width", "acc_width")}
    if params["n"] is None:
        return PE(params["kind"], **widths)
    return PERow(params["kind"], params["n"], **widths)


def extreme_operands(kind, x_width, w_width):
    """Operands giving the largest-magnitude term: ``(x, w, term sign)`` choices."""
    xmin = -(1 << (x_width - 1))
    if kind == "shift":
        return xmin, (-1, (1 << w_width) - 1)
    wmin, wmax = -(1 << (w_width - 1)), (1 << (w_width - 1)) - 1
    return xmin, (wmin if kind == "mul" else wmax)


def largest_term(kind, x_width, w_width):
    return abs(int(golden.term(kind, *extreme_operands(kind, x_width, w_width))))


def wrap_run_length(kind, x_width, w_width, acc_width):
    """Beats of the largest term that overflow the accumulator."""
    return -(-(1 << (acc_width - 1)) // largest_term(kind, x_width, w_width)) + 2


def random_beats(rng, kind, lanes, count, x_width, w_width, acc_width):
    """Random operands with extremes mixed in, plus runs of the largest term long enough
    to push the accumulator past its bound. Returns ``(x, w, first, last, valid)``."""
    xmin, xmax = -(1 << (x_width - 1)), (1 << (x_width - 1)) - 1
    x = rng.integers(xmin, xmax + 1, size=(count, lanes))
    x = np.where(rng.random((count, lanes)) < 0.25, rng.choice([xmin, xmax], size=(count, lanes)), x)
    if kind == "shift":
        shift = rng.integers(0, 1 << w_width, size=(count, lanes))
        shift = np.where(rng.random((count, lanes)) < 0.25, (1 << w_width) - 1, shift)
        sign = rng.integers(-1, 2, size=(count, lanes))
    else:
        wmin, wmax = -(1 << (w_width - 1)), (1 << (w_width - 1)) - 1
        w = rng.integers(wmin, wmax + 1, size=(count, lanes))
        w = np.where(rng.random((count, lanes)) < 0.25, rng.choice([wmin, wmax], size=(count, lanes)), w)
    first = rng.random(count) < 0.2
    run = wrap_run_length(kind, x_width, w_width, acc_width)
    start = int(rng.integers(1, count - run))
    first[start:start + run] = False
    first[[0, start]] = True
    x_ext, w_ext = extreme_operands(kind, x_width, w_width)
    x[start:start + run] = x_ext
    if kind == "shift":
        sign[start:start + run], shift[start:start + run] = w_ext
        w = (sign, shift)
    else:
        w[start:start + run] = w_ext
    last = np.roll(first, -1)
    last[-1] = True
    valid = rng.random(count) < 0.9
    valid[first | last] = True
    valid[start:start + run] = True
    return x, w, first, last, valid


class PETB:
    """Drives a PE or PE row beat by beat and records the accumulator after each beat."""

    def __init__(self, dut, params):
        self.dut, self.params = dut, params
        model = make_dut_model(params)
        self.row = params["n"] is not None
        self.in_layout = model.signature.members["i"].signature.members["payload"].shape
        self.out_layout = model.signature.members["o"].signature.members["payload"].shape

    async def reset(self):
        Clock(self.dut.clk, 10, unit="ns").start()
        self.dut.rst.value = 1
        self.dut.i__valid.value = 0
        for _ in range(2):
            await RisingEdge(self.dut.clk)
        await FallingEdge(self.dut.clk)
        self.dut.rst.value = 0

    def _beat(self, x, w, first, last, lane_range):
        def lane_w(lane):
            if self.params["kind"] == "shift":
                return {"sign": int(w[0][lane]), "shift": int(w[1][lane])}
            return int(w[lane])
        xs = [int(x[lane]) for lane in lane_range]
        ws = [lane_w(lane) for lane in lane_range]
        if not self.row:
            xs, ws = xs[0], ws[0]
        return pack(self.in_layout, {"x": xs, "w": ws, "first": int(first), "last": int(last)})

    async def run(self, x, w, first, last, valid):
        """Apply the beats (invalid ones as bubbles); returns accumulators and o.valid per beat
        (as they are ``PE.LATENCY`` cycles after it)."""
        lanes = range(x.shape[1])
        accs, valids = [], []
        for i in range(len(first) + PE.LATENCY - 1):
            if i < len(first):
                wi = (w[0][i], w[1][i]) if self.params["kind"] == "shift" else w[i]
                self.dut.i__valid.value = int(valid[i])
                self.dut.i__payload.value = self._beat(x[i], wi, first[i], last[i], lanes)
            else:
                self.dut.i__valid.value = 0
            await FallingEdge(self.dut.clk)
            acc = unpack(self.out_layout, int(self.dut.o__payload.value.to_unsigned()))
            accs.append(acc if self.row else [acc])
            valids.append(int(self.dut.o__valid.value))
        skip = PE.LATENCY - 1
        return np.array(accs[skip:], dtype=np.int64), np.array(valids[skip:])


@cocotb.test()
async def pe_matches_golden_model(dut):
    params = json.loads(os.environ["TB_PARAMS"])
    kind, lanes = params["kind"], params["n"] or 1
    widths = (params["x_width"], params["w_width"], params["acc_width"])
    rng = np.random.default_rng(params["seed"])
    count = max(params["beats"], 2 * wrap_run_length(kind, *widths))
    x, w, first, last, valid = random_beats(rng, kind, lanes, count, *widths)

    tb = PETB(dut, params)
    await tb.reset()
    got, got_valid = await tb.run(x, w, first, last, valid)

    keep = valid.astype(bool)
    wk = (w[0][keep], w[1][keep]) if kind == "shift" else w[keep]
    expect_valid_accs = golden.accumulate(kind, x[keep], wk, first[keep], params["acc_width"])
    expect = np.zeros_like(got)
    expect[keep] = expect_valid_accs
    # During a bubble the accumulator holds its value.
    for i in np.flatnonzero(~keep):
        expect[i] = expect[i - 1] if i else 0
    bad = np.flatnonzero((got != expect).any(axis=1))
    assert bad.size == 0, (
        f"{bad.size} of {len(got)} beats differ; first at beat {bad[0]}: "
        f"x={x[bad[0]].tolist()} first={first[bad[0]]} got={got[bad[0]].tolist()} "
        f"expected={expect[bad[0]].tolist()}")
    assert (got_valid == (valid & last)).all(), "o.valid must pulse after each valid last beat"
    bound = 1 << (params["acc_width"] - 1)
    near = bound - largest_term(kind, params["x_width"], params["w_width"])
    assert np.abs(expect_valid_accs).max() >= near, "the accumulator never came near its bound"
