"""The layer engine (one chunk) runs random layers of every kind bit-exactly (cocotb).

``TB_SEED`` (env) reseeds the random layers and the random engine configurations, to
explore beyond the fixed CI seed: ``TB_SEED=123 make test``.
"""
import os
import random

import pytest

from sim.engine_harness import EngineHarness
from sim.runner import run_testbench, selected_simulators
from sw.golden.pe import term_width

CONFIGS = [
    ("mul", 4, dict(word_bytes=4, w_width=8, acc_width=24)),
    ("shift", 6, dict(word_bytes=2, w_width=3, acc_width=26, pixels=3)),
    ("adder", 8, dict(word_bytes=2, w_width=8, acc_width=20, cin_tile=2, pixels=4)),
    # 4 sums per cycle, 4 input channels per beat, blocks of 2 pixels
    ("mul", 16, dict(word_bytes=8, w_width=6, acc_width=22, drain=4, cin_tile=4, pixels=2)),
]
ADDR = dict(addr_bits=12, w_addr_bits=10, p_addr_bits=7, m_width=16, rq_width=48)
SEED = int(os.environ.get("TB_SEED", "5"))


@pytest.mark.parametrize("sim", selected_simulators())
@pytest.mark.parametrize("kind,lanes,widths", CONFIGS,
                         ids=[f"{c[0]}-drain{c[2].get('drain', 1)}-tile{c[2].get('cin_tile', 1)}"
                              f"-pix{c[2].get('pixels', 1)}"
                              for c in CONFIGS])
def test_engine_layers_match_golden(sim, kind, lanes, widths):
    engine = dict(widths, **ADDR)
    run_testbench(EngineHarness(kind, lanes, **engine), name=f"engine_{kind}{lanes}",
                  test_module="sim.tb_engine", sim=sim,
                  params=dict(kind=kind, lanes=lanes, engine=engine, layers=12, seed=SEED))


def random_configs(seed, count=2):
    """Random engine configurations (kind, lanes, word and accumulator widths, drain,
    input-channel tile, pixel blocks)."""
    rng = random.Random(seed)
    out = []
    for _ in range(count):
        kind = rng.choice(["mul", "shift", "adder"])
        word_bytes = rng.choice([1, 2, 4, 8])
        lanes = rng.randint(word_bytes, 12)
        w_width = rng.randint(1, 4) if kind == "shift" else rng.randint(3, 9)
        acc_width = rng.randint(term_width(kind, 8, w_width), 28)
        drains = [d for d in (1, 2, 4) if 2 * d <= word_bytes and lanes % d == 0] or [1]
        drain = rng.choice(drains)
        tiles = [t for t in (1, 2, 4, 8) if t <= min(word_bytes, lanes) and lanes // t % drain == 0]
        out.append((kind, lanes, dict(word_bytes=word_bytes, w_width=w_width,
                                      acc_width=acc_width, drain=drain,
                                      cin_tile=rng.choice(tiles),
                                      pixels=rng.randint(1, lanes // word_bytes))))
    return out


@pytest.mark.parametrize("kind,lanes,widths", random_configs(SEED),
                         ids=lambda v: str(v) if not isinstance(v, dict) else "w")
def test_random_engine_configs(kind, lanes, widths):
    sim = selected_simulators()[0]   # the fast-building one (Icarus when installed)
    engine = dict(widths, **ADDR)
    run_testbench(EngineHarness(kind, lanes, **engine),
                  name=f"engine_rand_{kind}{lanes}_{widths['word_bytes']}_{widths['drain']}"
                       f"_{widths['cin_tile']}_{widths['pixels']}",
                  sim=sim,
                  test_module="sim.tb_engine",
                  params=dict(kind=kind, lanes=lanes, engine=engine, layers=8, seed=SEED + 1))
