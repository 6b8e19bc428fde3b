"""cocotb testbench: a trained network (a qmodel file) on the board top's core
(:class:`boards.top.UARTAccelerator`) through its UART pins, with test images from a
dataset; the bit-level UART model is ``sim.tb_board``'s, the session
:func:`boards.host.uart_steps`' (the serial-port host's).

``$TB_PARAMS`` (JSON): ``cfg`` (AccelConfig dict), ``qmodel`` (path), ``dataset``,
``images``, ``divisor`` (clocks per bit).
"""
import json
import os

import cocotb

from hw.config import AccelConfig
from sim.tb_board import TB
from sw.datasets import load
from sw.golden import model as golden


@cocotb.test()
async def network_over_uart_matches_golden_model(dut):
    p = json.loads(os.environ["TB_PARAMS"])
    tb = TB(dut, p["divisor"])
    cfg = AccelConfig.from_dict(p["cfg"])
    qm = golden.load(p["qmodel"])
    images = load(p["dataset"], "test")[0][:p["images"]]
    # a run step waits for an image's compute: about a million cycles (250k bit times)
    await tb.run_images(qm, cfg, images, timeout_bits=2_000_000)
