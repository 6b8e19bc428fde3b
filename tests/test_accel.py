"""Whole networks on the generated accelerator (cocotb, through the host byte protocol)."""
from dataclasses import replace

import pytest

from hw.accel import Accelerator
from hw.config import AccelConfig, ChunkConfig, ConfigError
from sim.runner import run_testbench, selected_simulators

SMALL = AccelConfig(word_bytes=4, act_bytes=4096, p_words=256, prog_words=16,
                    clp=ChunkConfig(4, 8, 24, 256), slp=ChunkConfig(6, 3, 24, 256),
                    alp=ChunkConfig(8, 8, 24, 256))
HYBRID = [("conv", "mul", 8, 3, 1), ("dw", "shift", 3, 2), ("conv", "adder", 8, 1, 1),
          ("dw", "adder", 5, 1), ("res", "shift", 1), ("conv", "mul", 12, 1, 1),
          ("gap",), ("fc", "mul", 10)]
#: blocks whose residual is the block input (expand, depthwise, project + residual)
BLOCKS = [("conv", "mul", 8, 3, 1), ("conv", "shift", 16, 1, 1), ("dw", "adder", 3, 1),
          ("res", "shift", 1, 2), ("dw", "shift", 5, 2), ("conv", "adder", 12, 1, 1),
          ("gap",), ("fc", "mul", 10)]


@pytest.mark.parametrize("sim", selected_simulators())
def test_random_hybrid_network_bit_exact(sim):
    run_testbench(Accelerator(SMALL), name="accel_small", test_module="sim.tb_accel", sim=sim,
                  params=dict(cfg=SMALL.to_dict(), specs=HYBRID, seed=3, images=3))


def test_pipelined_slots_bit_exact():
    """Two image slots, five images streamed: the chunks work on different images at once
    and the bridge refills slots during the run. The banks hold 832 bytes (208 words, not a
    power of two: the host still addresses slot 1 from word 256)."""
    cfg = replace(SMALL, slots=2, act_bytes=832)
    run_testbench(Accelerator(cfg), name="accel_slots2", test_module="sim.tb_accel",
                  sim=selected_simulators()[0],
                  params=dict(cfg=cfg.to_dict(), specs=HYBRID, seed=4, images=5))


def test_shared_engine_bit_exact():
    """One engine runs every chunk's layers (its rows selected per layer) from one weight
    memory; two slots let the host refill one bank while the engine runs the other."""
    cfg = replace(SMALL, shared_engine=True, slots=2, act_bytes=832)
    run_testbench(Accelerator(cfg), name="accel_shared", test_module="sim.tb_accel",
                  sim=selected_simulators()[0],
                  params=dict(cfg=cfg.to_dict(), specs=HYBRID, seed=5, images=4))


def test_split_activation_memory_bit_exact():
    """Two single-port activation memories (iCE40 SPRAM) and a residual memory under the
    shared engine: the compiler puts each layer's operands, residuals and outputs in
    different memories, so the single ports never lose a real access. The program memory
    is 16 bits wide (a descriptor loads over 19 words) and the parameters live in the
    activation memory: each layer first copies its own into a 16-word parameter memory."""
    cfg = replace(SMALL, shared_engine=True, act_split=2, act_bytes=2048, res_bytes=512,
                  prog_width=16, params_in_act=True, p_words=16)
    run_testbench(Accelerator(cfg), name="accel_split", test_module="sim.tb_accel",
                  sim=selected_simulators()[0],
                  params=dict(cfg=cfg.to_dict(), specs=BLOCKS, seed=6, images=3))


def test_split_memories_in_pipelined_slots_bit_exact():
    """Per-chunk engines on split activation memories with two image slots (the ECP5 way
    to more slots: one block RAM copy per memory instead of one per read port): each slot
    has its own single-port memories and residual memory, chunks work on different
    images at once."""
    cfg = replace(SMALL, act_split=2, act_bytes=1024, res_bytes=512, slots=2)
    run_testbench(Accelerator(cfg), name="accel_split_slots", test_module="sim.tb_accel",
                  sim=selected_simulators()[0],
                  params=dict(cfg=cfg.to_dict(), specs=BLOCKS, seed=7, images=5))


#: layers with more input channels than a lane group's outputs: tiled on 16 lanes
TILED = [("conv", "mul", 24, 3, 1), ("conv", "shift", 4, 1, 1), ("conv", "adder", 24, 1, 1),
         ("conv", "adder", 4, 1, 1), ("gap",), ("fc", "mul", 10)]


def test_drain_and_input_channel_tiles_bit_exact():
    """Engines that drain two sums per cycle and run layers over input-channel tiles of 4
    (the compiler tiles the layers where that is faster: here all but the stem and the
    pooling)."""
    from sw.compile import compile_model
    from sw.golden.random_model import random_qmodel
    cfg = replace(SMALL, drain=2, cin_tile=4, **{c: ChunkConfig(16, w, 24, 256) for c, w in
                                                 (("clp", 8), ("slp", 3), ("alp", 8))})
    tiles = [L.layer.tile for L in compile_model(random_qmodel(TILED, seed=8), cfg).layers]
    assert tiles == [1, 4, 4, 4, 1, 4]
    run_testbench(Accelerator(cfg), name="accel_drain_tiles", test_module="sim.tb_accel",
                  sim=selected_simulators()[0],
                  params=dict(cfg=cfg.to_dict(), specs=TILED, seed=8, images=3))


def test_pixel_blocks_bit_exact():
    """Per-chunk engines that run depthwise layers over blocks of output pixels (up to 3
    words of 4 lanes on 16-lane chunks): the compiler blocks both depthwise layers, the
    8-pixel rows of the first in blocks of 3, 3 and 2 (a short last block), the 4-pixel
    rows of the second in blocks of 2."""
    from sw.compile import compile_model
    from sw.golden.random_model import random_qmodel
    cfg = replace(SMALL, pixels=3, **{c: ChunkConfig(16, w, 24, 256) for c, w in
                                      (("clp", 8), ("slp", 3), ("alp", 8))})
    layers = compile_model(random_qmodel(BLOCKS, seed=9), cfg).layers
    assert [L.layer.pixels for L in layers if L.layer.mode == "lanewise"] == [3, 2, 1]
    run_testbench(Accelerator(cfg), name="accel_pixel_blocks", test_module="sim.tb_accel",
                  sim=selected_simulators()[0],
                  params=dict(cfg=cfg.to_dict(), specs=BLOCKS, seed=9, images=3))


#: a stem of as many channels as a word holds: run spread, in pixel blocks
SPREAD_STEM = [("conv", "adder", 4, 3, 1), ("dw", "shift", 3, 1), ("conv", "mul", 8, 1, 1),
               ("gap",), ("fc", "mul", 10)]


def test_spread_stem_bit_exact():
    """A one-channel stem of 4 output channels on 16-lane chunks with 4-byte words and
    blocks of up to 4 pixels: the compiler runs it spread (lanewise over copies of the
    pixel, which the bridge writes when the input comes with ``SPREAD``) in blocks of 4
    pixels, its adder lanes' padding taps adding ``-|w|`` as the golden model says; two
    slots, so the run's refills are spread too."""
    from sw.compile import compile_model
    from sw.golden.random_model import random_qmodel
    cfg = replace(SMALL, pixels=4, slots=2, act_bytes=1024,
                  **{c: ChunkConfig(16, w, 24, 256) for c, w in
                     (("clp", 8), ("slp", 3), ("alp", 8))})
    prog = compile_model(random_qmodel(SPREAD_STEM, seed=10), cfg)
    stem = prog.layers[0].layer
    assert prog.input_spread and stem.spread and stem.pixels == 4
    run_testbench(Accelerator(cfg), name="accel_spread_stem", test_module="sim.tb_accel",
                  sim=selected_simulators()[0],
                  params=dict(cfg=cfg.to_dict(), specs=SPREAD_STEM, seed=10, images=5))


def test_config_activation_banks():
    """Banks need not be powers of two; slots are addressed at power-of-two strides."""
    cfg = replace(SMALL, slots=4, act_bytes=832)
    assert cfg.slot_words == 256 and cfg.act_addr_bits == 10
    with pytest.raises(ConfigError, match="act_bytes: 100 is not a multiple of 64"):
        replace(SMALL, act_bytes=100)
    with pytest.raises(ConfigError, match="act_bytes: 8 slots of 16384 words exceed"):
        replace(SMALL, slots=8, act_bytes=40000)


def test_config_small_fpga_fields():
    """The shared engine, split memories and narrow program words: their sizes and the
    one-line errors that name the field."""
    cfg = replace(SMALL, shared_engine=True, act_split=2, act_bytes=1024, res_bytes=512)
    assert cfg.w_bases == {"clp": 0, "slp": 256, "alp": 512} and cfg.w_addr_bits == 10
    assert cfg.slot_bytes == 2 * 1024 + 512 and cfg.act_addr_bits == 12
    for bad, message in [(dict(res_bytes=512), "res_bytes: 512 needs act_split"),
                         (dict(act_split=1, res_bytes=100), "res_bytes: 100 is not a multiple"),
                         (dict(prog_width=4), "prog_width: 4 must be an integer from 8"),
                         (dict(shared_engine="yes"), "shared_engine: 'yes' must be true or false")]:
        with pytest.raises(ConfigError, match=message):
            replace(SMALL, **bad)


def test_split_memory_placement_errors_name_the_fix():
    """A layer reading one tensor as operand and residual cannot use single-port memories;
    tensors too big for them say which field to raise."""
    from sw.compile import compile_model
    from sw.golden.random_model import random_qmodel
    from sw.program import ProgramError
    split = replace(SMALL, shared_engine=True, act_split=2, act_bytes=1024, res_bytes=512)
    with pytest.raises(ProgramError, match="no placement in 2 single-port memories"):
        compile_model(random_qmodel(HYBRID, seed=1, input_shape=(1, 8, 8)), split)
    with pytest.raises(ProgramError, match="raise act_bytes or res_bytes"):
        compile_model(random_qmodel(BLOCKS, seed=1, input_shape=(1, 8, 8)),
                      replace(split, act_bytes=128, res_bytes=64))
    with pytest.raises(ProgramError, match=r"params_in_act: 90 parameters .*\(raise act_bytes"):
        compile_model(random_qmodel(BLOCKS, seed=1, input_shape=(1, 8, 8)),
                      replace(split, params_in_act=True, p_words=16))
