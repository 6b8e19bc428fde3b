"""Whole networks on the generated accelerator (cocotb, through the host byte protocol)."""
from dataclasses import replace

import pytest

from hw.accel import Accelerator
from hw.config import AccelConfig, ChunkConfig
from sim.runner import run_testbench, selected_simulators

SMALL = AccelConfig(word_bytes=4, act_bytes=4096, p_words=256, prog_words=16,
                    clp=ChunkConfig(4, 8, 24, 256), slp=ChunkConfig(6, 3, 24, 256),
                    alp=ChunkConfig(8, 8, 24, 256))
HYBRID = [("conv", "mul", 8, 3, 1), ("dw", "shift", 3, 2), ("conv", "adder", 8, 1, 1),
          ("dw", "adder", 5, 1), ("res", "shift", 1), ("conv", "mul", 12, 1, 1),
          ("gap",), ("fc", "mul", 10)]


@pytest.mark.parametrize("sim", selected_simulators())
def test_random_hybrid_network_bit_exact(sim):
    run_testbench(Accelerator(SMALL), name="accel_small", test_module="sim.tb_accel", sim=sim,
                  params=dict(cfg=SMALL.to_dict(), specs=HYBRID, seed=3, images=3))


def test_pipelined_slots_bit_exact():
    """Two image slots, five images streamed: the chunks work on different images at once
    and the bridge refills slots during the run."""
    cfg = replace(SMALL, slots=2)
    run_testbench(Accelerator(cfg), name="accel_slots2", test_module="sim.tb_accel",
                  sim=selected_simulators()[0],
                  params=dict(cfg=cfg.to_dict(), specs=HYBRID, seed=4, images=5))
