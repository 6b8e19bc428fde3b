"""PEs and PE rows in RTL simulation (cocotb, Icarus and/or Verilator) vs the golden model."""
import pytest

from hw.pe import PE, PERow
from sim.runner import run_testbench, selected_simulators

# (kind, lanes or None for a single PE, x_width, w_width, acc_width)
CONFIGS = [
    ("mul", None, 8, 8, 20),
    ("shift", None, 8, 3, 20),
    ("adder", None, 8, 8, 16),
    ("mul", 4, 6, 9, 18),
    ("shift", 3, 9, 2, 14),
    ("adder", 5, 7, 5, 12),
]


@pytest.mark.parametrize("sim", selected_simulators())
@pytest.mark.parametrize("kind,n,x_width,w_width,acc_width", CONFIGS,
                         ids=[f"{c[0]}-{'pe' if c[1] is None else f'row{c[1]}'}" for c in CONFIGS])
def test_pe_rtl_matches_golden(sim, kind, n, x_width, w_width, acc_width):
    widths = dict(x_width=x_width, w_width=w_width, acc_width=acc_width)
    dut = PE(kind, **widths) if n is None else PERow(kind, n, **widths)
    name = f"{kind}_{'pe' if n is None else f'row{n}'}"
    run_testbench(dut, name=name, test_module="sim.tb_pe", sim=sim,
                  params=dict(kind=kind, n=n, beats=3000, seed=7, **widths))
