"""The requantisation unit in RTL simulation vs the golden model, and its parameter checks."""
import pytest

from hw.requant import Requantizer
from sim.runner import run_testbench, selected_simulators

CONFIGS = [
    dict(acc_width=24, m_width=16, rq_width=48, res_width=8, out_width=8),
    dict(acc_width=13, m_width=9, rq_width=30, res_width=6, out_width=16),
]


@pytest.mark.parametrize("sim", selected_simulators())
@pytest.mark.parametrize("widths", CONFIGS, ids=["default", "narrow"])
def test_requant_rtl_matches_golden(sim, widths):
    name = "requant_" + "_".join(str(v) for v in widths.values())
    run_testbench(Requantizer(**widths), name=name, test_module="sim.tb_requant", sim=sim,
                  params=dict(widths, beats=400, settings=8, seed=11))


@pytest.mark.parametrize("kwargs,error,text", [
    (dict(acc_width=0), ValueError, "acc_width must be between 2 and 48, not 0"),
    (dict(m_width=19), ValueError, "m_width must be between 2 and 18, not 19"),
    (dict(out_width="8"), TypeError, "out_width must be an int"),
    (dict(acc_width=40, rq_width=48), ValueError, "rq_width 48 cannot hold acc\\*m"),
])
def test_bad_parameters(kwargs, error, text):
    with pytest.raises(error, match=text):
        Requantizer(**kwargs)
