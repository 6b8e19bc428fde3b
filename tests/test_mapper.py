"""The mapper (design-space search, NASA's rule, report, CLI), the generator CLI and the
whole-network simulation CLI."""
import json
import re

import numpy as np
import pytest

from hw import generate
from hw.config import AccelConfig
from sim import network
from sw import energy as E
from sw import mapper
from sw import resources as R
from sw import schedule
from sw.compile import compile_model
from sw.costmodel import program_cycles
from sw.golden import model as golden
from sw.golden.random_model import random_qmodel

SPECS = [("conv", "mul", 8, 3, 1), ("dw", "shift", 3, 2), ("conv", "adder", 12, 1, 1),
         ("res", "adder", 1), ("conv", "shift", 16, 1, 1), ("gap",), ("fc", "mul", 10)]
BOARD = "ulx3s-85f"


@pytest.fixture(scope="module")
def qm():
    return random_qmodel(SPECS, seed=2)


@pytest.fixture(scope="module")
def qmodel_path(tmp_path_factory, qm):
    path = tmp_path_factory.mktemp("q") / "qmodel.npz"
    golden.save(qm, path)
    return path


def evaluate(qm, lanes, V, slots, board=BOARD, drain=1, cin_tile=1, pixels=1, split=False):
    """A candidate costed through the per-config functions (not the mapper's tables)."""
    size = mapper.split_config if split else mapper.size_config
    cfg = mapper.with_options(qm, size(qm, lanes, V, slots), drain, cin_tile, pixels)
    prog = compile_model(qm, cfg)
    cycles = round(schedule.interval(prog, cfg))
    pj = E.program_energy(prog, cfg, mapper.residual_layers(qm))[1].total
    return cfg, cycles, pj, R.estimate(cfg, board)


def random_candidates(rng, n):
    """``n`` random (lanes, word, slots, drain, tile, pixels) of the search's space (the
    slots nextpnr routes on the ECP5)."""
    for _ in range(n):
        V = int(rng.choice([2, 4, 8]))
        options = mapper.engine_options(V)
        drain, tile, pixels = options[int(rng.integers(len(options)))]
        lanes = {c: drain * int(rng.integers(-(-V // drain), 40 // drain)) for c in mapper.CHUNKS}
        yield lanes, V, int(rng.choice([1, 2])), drain, tile, pixels


@pytest.mark.parametrize("objective", mapper.OBJECTIVES)
def test_search_point_is_consistent_and_best(qm, objective):
    """Without the utilisation floor: the objective's best of all that fit."""
    p = mapper.search(qm, BOARD, objective, min_util=0)
    cfg, cycles, pj, use = evaluate(qm, p.lanes, p.word_bytes, p.slots, drain=p.drain,
                                    cin_tile=p.cin_tile, pixels=p.pixels,
                                    split=p.organisation == "split")
    assert (p.cycles, use) == (cycles, p.usage)
    assert p.energy_pj == pytest.approx(pj, rel=1e-9)
    assert not R.shortfalls(use, BOARD)
    assert {name for name, _, _ in cfg.chunks} == {"clp", "slp", "alp"}
    score = {"latency": lambda c, e: c, "energy": lambda c, e: e, "edp": lambda c, e: c * e}
    best = score[objective](p.cycles, p.energy_pj)
    # random feasible candidates are never better
    for lanes, V, slots, drain, tile, pixels in random_candidates(np.random.default_rng(0), 12):
        _, c, e, use = evaluate(qm, lanes, V, slots, drain=drain, cin_tile=tile, pixels=pixels)
        if not R.shortfalls(use, BOARD):
            assert score[objective](c, e) >= best * (1 - 1e-9)


def utilisation_of(qm, cfg, cycles):
    """PE utilisation by work, counted from the compiled program's layers."""
    prog = compile_model(qm, cfg)
    work = {c: sum(L.macs for L in prog.layers if L.chunk == c) for c in mapper.CHUNKS}
    total = sum(work.values())
    return sum(w * w / (cfg.chunk(c).lanes * cycles) for c, w in work.items() if w) / total


def test_utilisation_floor(qm):
    """By default the search takes the fastest design whose PEs are busy at least
    ``MIN_UTIL`` of the time (by work); without the floor it is faster and less busy; a
    floor no design reaches gives the fastest of all; a floor outside [0, 1) is refused.
    (This network reaches the floor with 4 slots: past what nextpnr routes.)"""
    p = mapper.search(qm, BOARD, routable=False)
    fast = mapper.search(qm, BOARD, min_util=0, routable=False)
    cfg = mapper.point_config(qm, p)
    assert p.utilisation == pytest.approx(utilisation_of(qm, cfg, p.cycles), rel=1e-9)
    assert p.utilisation >= mapper.MIN_UTIL > fast.utilisation
    assert fast.cycles < p.cycles and fast.usage["logic"] > p.usage["logic"]
    # random feasible candidates as busy are never faster
    for lanes, V, slots, drain, tile, pixels in random_candidates(np.random.default_rng(1), 12):
        cand, c, _, use = evaluate(qm, lanes, V, slots, drain=drain, cin_tile=tile,
                                   pixels=pixels)
        if not R.shortfalls(use, BOARD) and utilisation_of(qm, cand, c) >= mapper.MIN_UTIL:
            assert c >= p.cycles
    assert mapper.search(qm, BOARD, min_util=0.999, routable=False) == fast
    with pytest.raises(mapper.MapError, match="min_util: 1.5 is not a share"):
        mapper.search(qm, BOARD, min_util=1.5)


def test_objectives_trade_off(qm):
    lat, en = (mapper.search(qm, BOARD, objective, min_util=0)
               for objective in ("latency", "energy"))
    assert lat.cycles <= en.cycles and en.energy_pj <= lat.energy_pj
    assert (lat.cycles, lat.energy_pj) != (en.cycles, en.energy_pj)


def test_one_slot_interval_is_layers_plus_transfers(qm):
    p = mapper.search(qm, BOARD, "latency", slots=1)
    cfg = mapper.point_config(qm, p)
    prog = compile_model(qm, cfg)
    per_layer, with_control = program_cycles(prog, cfg)
    transfers = schedule.input_words(prog) * prog.input_k + prog.output_bytes
    assert sum(per_layer) + transfers < p.cycles < with_control + 3 * transfers


def test_proportional_rule_follows_work_shares():
    qm = golden.load("archs/default/qmodel.npz")
    p = mapper.search(qm, BOARD, rule="proportional", slots=1, min_util=0)
    best = mapper.search(qm, BOARD, slots=1, min_util=0)
    assert best.cycles <= p.cycles
    work = mapper.chunk_work(qm)
    # lanes / work share is one scale for every chunk, up to rounding
    scale = [p.lanes[c] / work[c] for c in work]
    assert all(p.lanes[c] > p.word_bytes for c in work)
    assert max(scale) / min(scale) - 1 <= 1.5 / min(p.lanes.values())


def test_no_fit_names_the_short_resource(qm):
    with pytest.raises(mapper.MapError, match=r"does not fit icebreaker .*logic: needs \d+ "
                                              r"logic cells, icebreaker has 52 .*: \d+ short"):
        mapper.search(qm, "icebreaker", headroom=0.99)


def test_bad_arguments(qm):
    with pytest.raises(R.ResourceError, match="board: 'de10'"):
        mapper.search(qm, "de10")
    with pytest.raises(mapper.MapError, match="rule: 'best'"):
        mapper.search(qm, BOARD, rule="best")
    with pytest.raises(mapper.MapError, match="objective: 'speed'"):
        mapper.search(qm, BOARD, "speed")
    with pytest.raises(mapper.MapError, match="slots: 3"):
        mapper.search(qm, BOARD, slots=3)
    with pytest.raises(mapper.MapError, match="slots: 4 is more than nextpnr routes on "
                                              "ulx3s-85f .2, .*--unroutable"):
        mapper.search(qm, BOARD, slots=4)


def test_cli_map_report_generate_and_errors(qm, qmodel_path, tmp_path, capsys):
    assert mapper.main(["--qmodel", str(qmodel_path), "--board", BOARD, "--objective", "edp",
                        "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "objective edp" in out and "energy nJ" in out and "resources (predicted)" in out
    rep = json.loads((tmp_path / "map_report.json").read_text())
    assert len(rep["layers"]) == len(SPECS) and rep["objective"] == "edp"
    assert "PE utilisation by work" in out and rep["min_util"] == mapper.MIN_UTIL
    assert rep["routable"] == {"slots": 2, "logic": 33456, "split": False}
    assert rep["accel"]["slots"] <= 2 and rep["organisation"] == "chunks"
    assert ("kept to what nextpnr routes on ulx3s-85f: at most 2 slots and 33456 logic, "
            "dual-read memories") in out
    assert rep["utilisation_by_work"] == pytest.approx(utilisation_of(
        qm, AccelConfig.load(tmp_path / "accel.json"), rep["interval_cycles"]), rel=1e-9)
    assert (tmp_path / "map.png").read_bytes()[:4] == b"\x89PNG"
    cfg = AccelConfig.load(tmp_path / "accel.json")
    assert rep["accel"] == cfg.to_dict()
    listing = json.loads((tmp_path / "program.json").read_text())
    assert [e["chunk"] for e in listing] == [r["chunk"] for r in rep["layers"]]
    assert [e["last"] for e in listing] == [0] * (len(SPECS) - 1) + [1]
    assert listing[0]["desc"]["kernel_m1"] == 2 and listing[-1]["desc"]["out_c"] == 10
    assert generate.main(["--accel", str(tmp_path / "accel.json"), "--out", str(tmp_path)]) == 0
    assert "module accel" in (tmp_path / "accel.v").read_text()
    # --no-split: dual-read activation banks only
    assert mapper.main(["--qmodel", str(qmodel_path), "--board", BOARD, "--no-split",
                        "--no-plot", "--out", str(tmp_path / "dual")]) == 0
    dual = json.loads((tmp_path / "dual" / "map_report.json").read_text())
    assert dual["organisation"] == "chunks" and dual["accel"]["act_split"] == 0
    capsys.readouterr()
    # --unroutable: no limit in the report, and --slots past the limit is an error without it
    assert mapper.main(["--qmodel", str(qmodel_path), "--board", BOARD, "--unroutable",
                        "--slots", "4", "--no-plot", "--out", str(tmp_path / "u")]) == 0
    free = json.loads((tmp_path / "u" / "map_report.json").read_text())
    assert free["routable"] is None and free["accel"]["slots"] == 4
    assert "kept to what nextpnr routes" not in capsys.readouterr().out
    assert mapper.main(["--qmodel", str(qmodel_path), "--board", BOARD, "--slots", "4",
                        "--no-plot", "--out", str(tmp_path / "u4")]) == 2
    assert "slots: 4 is more than nextpnr routes" in capsys.readouterr().err
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(dict(cfg.to_dict(), word_bytes=3)))
    assert generate.main(["--accel", str(bad), "--out", str(tmp_path)]) == 2
    assert "word_bytes: 3 must be a power of two" in capsys.readouterr().err
    assert mapper.main(["--qmodel", str(tmp_path / "missing.npz"), "--out", str(tmp_path)]) == 2
    assert mapper.main(["--qmodel", str(qmodel_path), "--board", "icebreaker", "--headroom",
                        "0.99", "--out", str(tmp_path / "x")]) == 2
    assert "short" in capsys.readouterr().err and not (tmp_path / "x").exists()
    assert mapper.main(["--qmodel", str(qmodel_path), "--board", BOARD, "--min-util", "2",
                        "--out", str(tmp_path / "y")]) == 2
    assert "error: min_util: 2.0 is not a share in [0, 1)" in capsys.readouterr().err


@pytest.mark.parametrize("slots", [1, 2])
def test_network_simulation_cli(qmodel_path, tmp_path, capsys, slots):
    assert mapper.main(["--qmodel", str(qmodel_path), "--board", BOARD, "--out", str(tmp_path),
                        "--slots", str(slots), "--no-plot"]) == 0
    assert network.main(["--qmodel", str(qmodel_path), "--accel", str(tmp_path / "accel.json"),
                         "--images", "5", "--dataset", "random"]) == 0
    out = capsys.readouterr().out
    assert "PASS: logits bit-exact with the golden model on all 5 images" in out
    # the pipelined run's cycles: the schedule replay within 2% of the RTL
    measured = int(re.search(r"in one run of (\d+) cycles", out).group(1))
    cfg = AccelConfig.load(tmp_path / "accel.json")
    predicted = schedule.run_cycles(compile_model(golden.load(qmodel_path), cfg), cfg, 5)
    assert abs(predicted - measured) <= 0.02 * measured


def test_small_config_fits_the_up5k_memories():
    """The small-FPGA organisation of the default network: its weights fit two SPRAMs of
    32-bit words, each activation memory one SPRAM, the parameters ride in the activations
    and the program compiles with every layer's ports free of conflicts."""
    qm = golden.load("archs/default/qmodel.npz")
    cfg = mapper.small_config(qm, {"clp": 4, "slp": 6, "alp": 4})
    assert cfg.shared_engine and cfg.params_in_act and cfg.act_split == 2
    assert sum(cfg.chunk(c).w_words for c in ("clp", "slp", "alp")) <= 16384
    prog = compile_model(qm, cfg)
    assert prog.act_bytes_used <= mapper.SPRAM_BYTES and "param" not in prog.images
    assert prog.res_bytes_used <= cfg.res_bytes < prog.res_bytes_used + 64
    per_layer, total = program_cycles(prog, cfg)
    assert total == pytest.approx(1_107_000, rel=0.01)


def test_icebreaker_gets_the_small_organisation_within_its_budget(tmp_path, capsys):
    """On the iCE40UP5K the per-chunk organisation does not fit; the search chooses the
    small one (shared engine, SPRAM memories) with lanes whose predicted resources fit the
    budget, costed as the sized config costs, and no feasible neighbour is faster."""
    qm = golden.load("archs/default/qmodel.npz")
    p = mapper.search(qm, "icebreaker")
    assert p.organisation == "small" and (p.slots, p.word_bytes) == (1, mapper.SMALL_WORD)
    cfg = mapper.point_config(qm, p)
    assert mapper.organisation(cfg) == "small" and cfg.shared_engine and cfg.act_split == 2
    use = R.estimate(cfg, "icebreaker")
    assert use == p.usage and not R.shortfalls(use, "icebreaker")
    assert use["spram"] <= 4 and use["logic"] <= R.budget("icebreaker")["logic"]
    prog = compile_model(qm, cfg)
    assert p.cycles == round(schedule.interval(prog, cfg))
    assert p.energy_pj == pytest.approx(
        E.program_energy(prog, cfg, mapper.residual_layers(qm))[1].total, rel=1e-9)
    for c in mapper.CHUNKS:      # one more lane anywhere: over the budget, or no faster
        more = mapper.small_config(qm, dict(p.lanes, **{c: p.lanes[c] + 1}))
        if not R.shortfalls(R.estimate(more, "icebreaker"), "icebreaker"):
            assert schedule.interval(compile_model(qm, more), more) >= p.cycles
    # without headroom the search finds the hand-sized UP5K config (docs/accelerator.md)
    assert mapper.search(qm, "icebreaker", headroom=0.0).lanes == {"clp": 4, "slp": 6, "alp": 4}
    assert mapper.main(["--qmodel", "archs/default/qmodel.npz", "--board", "icebreaker",
                        "--out", str(tmp_path), "--no-plot"]) == 0
    out = capsys.readouterr().out
    assert "organisation: small" in out and "spram 4/4" in out
    assert AccelConfig.load(tmp_path / "accel.json") == cfg
    listing = json.loads((tmp_path / "program.json").read_text())
    assert [e["chunk"] for e in listing] == [L.chunk for L in prog.layers]
    assert listing[-1]["last"] == 1 and listing[-1]["desc"]["out_c"] == 10


def test_ecp5_default_is_what_nextpnr_routes():
    """No SPRAM on the ECP5: the search is over engines per chunk. By default it keeps to
    what nextpnr routes (``sw.resources.ROUTABLE``: 2 slots of dual-read memories, 40% of
    the logic), where the default network's ECP5-85F design has 24 / 48 / 48 lanes and
    reaches no utilisation floor of 70%. Past those limits (``routable=False``) split
    memories (each slot in two single-port memories and a residual memory, one block-RAM
    copy per memory) give 4 slots: at the floor 48/64/64 lanes (16-byte words, 4 sums
    drained per cycle), far faster than the best dual-read design (``--no-split``:
    32/128/128 lanes, 2 slots, draining 8, no floor reached); all with input-channel tiles
    of 4. The point's cycles are the schedule's on the sized config."""
    qm = golden.load("archs/default/qmodel.npz")
    p = mapper.search(qm, BOARD)
    assert p.organisation == "chunks" and (p.word_bytes, p.slots) == (16, 2)
    assert p.lanes == {"clp": 24, "slp": 48, "alp": 48} and p.utilisation < mapper.MIN_UTIL
    assert p.usage["logic"] <= R.routable_limits(BOARD)["logic"] == int(83640 * 0.4)
    have = R.budget(BOARD)
    assert all(p.usage[r] <= have[r] for r in R.RESOURCES)
    dual = mapper.search(qm, BOARD, split=False, min_util=0, routable=False)
    assert dual.organisation == "chunks" and (dual.word_bytes, dual.slots) == (16, 2)
    assert dual.lanes == {"clp": 32, "slp": 128, "alp": 128} and dual.drain == 8
    assert dual.utilisation < mapper.MIN_UTIL
    assert dual.usage["logic"] > R.routable_limits(BOARD)["logic"]
    fast = mapper.search(qm, BOARD, routable=False)
    assert fast.organisation == "split" and (fast.word_bytes, fast.slots) == (16, 4)
    assert fast.lanes == {"clp": 48, "slp": 64, "alp": 64}
    assert fast.utilisation >= mapper.MIN_UTIL and fast.drain == 4
    assert all(q.cin_tile == 4 for q in (p, fast, dual))
    assert (fast.pixels, dual.pixels) == (16, 16)
    assert fast.cycles < 0.9 * dual.cycles < 0.9 * p.cycles
    cfg = mapper.point_config(qm, fast)
    assert cfg.act_split == 2 and not cfg.shared_engine and cfg.slots == fast.slots
    assert mapper.organisation(cfg) == "split"
    cfg = mapper.point_config(qm, p)
    assert mapper.organisation(cfg) == "chunks" and cfg.slots == 2
    prog = compile_model(qm, cfg)
    assert p.cycles == round(schedule.interval(prog, cfg))
    assert p.pixels == 1 and not prog.input_spread      # no pixel blocks: no spread stem


def test_split_memories_past_the_host_address_space_are_left_out():
    """A network whose split slot would need more activation words than the host protocol
    addresses gets no split organisation (it used to raise ConfigError out of the search,
    so such networks "did not fit" the ECP5 at all)."""
    qm = random_qmodel([("conv", "mul", 4, 3, 1), ("gap",), ("fc", "mul", 10)], seed=1)
    cfg = AccelConfig(word_bytes=2, act_bytes=1 << 17)      # 65536 words: the whole space
    assert mapper.split_memories(qm, cfg) is None
