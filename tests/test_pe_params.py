"""PE construction checks and a quick Amaranth-simulator check of each PE kind."""
import numpy as np
import pytest
from amaranth.sim import Simulator

from hw.pe import PE, PERow
from hw.payload import pack
from sw.golden import pe as golden


@pytest.mark.parametrize("kwargs,error,text", [
    (dict(kind="div"), ValueError, "'div'"),
    (dict(kind="mul", x_width=8.0), TypeError, "8.0"),
    (dict(kind="mul", x_width=True), TypeError, "True"),
    (dict(kind="mul", x_width=1), ValueError, "x_width must be between 2 and 32, not 1"),
    (dict(kind="adder", w_width=0), ValueError, "w_width must be between 1 and 32, not 0"),
    (dict(kind="shift", w_width=6), ValueError, "w_width must be between 1 and 5, not 6"),
    (dict(kind="mul", acc_width="20"), TypeError, "'20'"),
    (dict(kind="mul", acc_width=15), ValueError, "acc_width 15 cannot hold one mul term"),
    (dict(kind="shift", w_width=4, acc_width=20), ValueError, "needs at least 24"),
])
def test_bad_parameters_name_the_value(kwargs, error, text):
    with pytest.raises(error, match=text.replace("(", r"\(")):
        PE(**kwargs)


@pytest.mark.parametrize("n", [0, -1, 2.5])
def test_bad_row_length(n):
    with pytest.raises((TypeError, ValueError), match=str(n)):
        PERow("mul", n)


def test_signature_widths():
    row = PERow("shift", 3, x_width=8, w_width=3, acc_width=20)
    payload = row.signature.members["i"].signature.members["payload"].shape
    assert payload.size == 3 * 8 + 3 * (3 + 2) + 2
    assert row.signature.members["o"].signature.members["payload"].shape.size == 3 * 20


@pytest.mark.parametrize("kind,w_width", [("mul", 8), ("shift", 3), ("adder", 8)])
def test_amaranth_sim_matches_golden(kind, w_width):
    rng = np.random.default_rng(3)
    dut = PE(kind, x_width=8, w_width=w_width, acc_width=20)
    layout = dut.signature.members["i"].signature.members["payload"].shape
    x = rng.integers(-128, 128, 64)
    if kind == "shift":
        w = (rng.integers(-1, 2, 64), rng.integers(0, 8, 64))
        beat_w = [{"sign": int(s), "shift": int(p)} for s, p in zip(*w)]
    else:
        w = rng.integers(-128, 128, 64)
        beat_w = [int(v) for v in w]
    first = np.arange(64) % 8 == 0
    expect = golden.accumulate(kind, x, w, first, 20)
    got = []

    async def bench(ctx):
        for i in range(64 + PE.LATENCY - 1):    # the sum of beat i: LATENCY ticks on
            ctx.set(dut.i.valid, int(i < 64))
            if i < 64:
                ctx.set(dut.i.payload.as_value(), pack(layout, {
                    "x": int(x[i]), "w": beat_w[i], "first": int(first[i]), "last": 0}))
            await ctx.tick()
            if i >= PE.LATENCY - 1:
                got.append(ctx.get(dut.o.payload))

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    assert got == expect.tolist()
