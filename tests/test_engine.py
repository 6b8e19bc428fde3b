"""The layer engine (one chunk) runs random layers of every kind bit-exactly (cocotb)."""
import os

import pytest

from sim.engine_harness import EngineHarness
from sim.runner import run_testbench, selected_simulators

CONFIGS = [
    ("mul", 4, dict(word_bytes=4, w_width=8, acc_width=24)),
    ("shift", 6, dict(word_bytes=2, w_width=3, acc_width=26)),
    ("adder", 8, dict(word_bytes=8, w_width=8, acc_width=20)),
]
ADDR = dict(addr_bits=12, w_addr_bits=10, p_addr_bits=7, m_width=16, rq_width=48)
SEED = int(os.environ.get("TB_SEED", "5"))


@pytest.mark.parametrize("sim", selected_simulators())
@pytest.mark.parametrize("kind,lanes,widths", CONFIGS, ids=[c[0] for c in CONFIGS])
def test_engine_layers_match_golden(sim, kind, lanes, widths):
    engine = dict(widths, **ADDR)
    run_testbench(EngineHarness(kind, lanes, **engine), name=f"engine_{kind}{lanes}",
                  test_module="sim.tb_engine", sim=sim,
                  params=dict(kind=kind, lanes=lanes, engine=engine, layers=12, seed=SEED))
