"""Board tops: the host bridge's input writes, the accelerator behind its UART (cocotb
through the pins), PLL settings, the host CLI (RTL simulation and its error paths),
flashing, and the board-top build."""
import json
import os
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from amaranth.hdl import Module
from amaranth.lib import memory
from amaranth.sim import Simulator

from boards import flash, host
from boards.build import main as build_main
from boards.build import lower_clock, throughput
from boards.config import DEFAULT_LANES, is_small
from boards.config import main as config_main
from boards.platforms import get_board
from boards.pll import ecp5_pll, ice40_pll
from boards.top import BoardTop, UARTAccelerator
from hw import protocol
from hw.host import HostBridge
from hw.config import AccelConfig, ChunkConfig
from sim.network import session
from sim.runner import run_testbench, selected_simulators
from sw import schedule
from sw.compile import compile_model
from sw.datasets import DatasetError, load
from sw.golden import model as golden
from sw.golden.random_model import random_qmodel
from sw.mapper import small_config

SMALL = AccelConfig(word_bytes=4, act_bytes=4096, p_words=256, prog_words=16,
                    clp=ChunkConfig(4, 8, 24, 256), slp=ChunkConfig(6, 3, 24, 256),
                    alp=ChunkConfig(8, 8, 24, 256))
SPECS = [("conv", "mul", 8, 3, 1), ("dw", "shift", 3, 2), ("conv", "adder", 8, 1, 1),
         ("res", "shift", 1), ("gap",), ("fc", "mul", 10)]
DIVISOR = 4


@pytest.fixture(scope="module")
def small_model(tmp_path_factory):
    """A random qmodel and the SMALL config, saved as files."""
    d = tmp_path_factory.mktemp("small")
    qm = random_qmodel(SPECS, seed=5)
    golden.save(qm, d / "qmodel.npz")
    SMALL.save(d / "accel.json")
    return qm, d


def bridge_session(commands, act_bits=32, depth=8, spread=False):
    """Send ``commands`` (bytes) one after the other to a :class:`HostBridge` (built with
    ``spread``) whose activation memory is a block RAM of ``depth`` words; returns each
    command's reply (the bytes sent back until the bridge is idle again)."""
    m = Module()
    m.submodules.bridge = bridge = HostBridge([act_bits, 24, 40, 64, 12, 64], act_bits,
                                              spread=spread)
    m.submodules.act = act = memory.Memory(shape=act_bits, depth=depth, init=[])
    wr, rd = act.write_port(), act.read_port()
    m.d.comb += [wr.addr.eq(bridge.wr_addr), wr.data.eq(bridge.wr_data),
                 wr.en.eq(bridge.wr_en & (bridge.wr_mem == protocol.MEM_ID["act"])),
                 rd.addr.eq(bridge.rd_addr), rd.en.eq(bridge.rd_en),
                 bridge.rd_data.eq(rd.data)]
    replies = []

    async def host(ctx):
        ctx.set(bridge.o.ready, 1)
        for command in commands:
            reply = bytearray()
            for byte in command:
                ctx.set(bridge.i.valid, 1)
                ctx.set(bridge.i.payload, byte)
                await ctx.tick().until(bridge.i.ready)
            ctx.set(bridge.i.valid, 0)
            quiet = 0
            while quiet < 20:
                await ctx.tick()
                if ctx.get(bridge.o.valid):
                    reply.append(ctx.get(bridge.o.payload))
                    quiet = 0
                quiet += 1
            replies.append(bytes(reply))

    sim = Simulator(m)
    sim.add_clock(1e-6)
    sim.add_testbench(host)
    sim.run()
    return replies


def test_bridge_input_writes_expand_bytes_to_words():
    """``I`` writes ``k`` bytes per activation word and zero-fills the rest (``k`` 0 or
    past a word: whole words); ``W act`` still writes whole words. Read back with ``R``."""
    replies = bridge_session([
        protocol.write("act", 0, [0x11223344, 0x55667788, 0xDEADBEEF], 32),
        protocol.write_input(0, [0x7F, 0x01], 1),       # over the whole words at 0 and 1
        protocol.write_input(3, [0x030201], 3),
        protocol.INPUT + bytes([0, 4, 0, 1, 0]) + bytes([0xDD, 0xCC, 0xBB, 0xAA]),
        protocol.INPUT + bytes([9, 5, 0, 1, 0]) + bytes([1, 2, 3, 4]),
        protocol.write_input(6, [], 1),
        protocol.read(0, 6),
    ])
    assert replies[:6] == [protocol.ACK] * 6
    words = [int.from_bytes(replies[6][i:i + 4], "little") for i in range(0, 24, 4)]
    assert words == [0x7F, 0x01, 0xDEADBEEF, 0x030201, 0xAABBCCDD, 0x04030201]


def test_bridge_spreads_input_bytes_over_words():
    """With ``k = 1 | SPREAD`` a bridge built with ``spread`` writes each input byte into
    every byte of its word (the input of a spread stem); a later ``W act`` and a plain
    ``I`` are not spread."""
    replies = bridge_session([
        protocol.write_input(0, [0x7F, 0x01, 0x80], 1 | protocol.SPREAD),
        protocol.write("act", 3, [0x11223344], 32),
        protocol.write_input(4, [0x05], 1),
        protocol.read(0, 5),
    ], spread=True)
    assert replies[:3] == [protocol.ACK] * 3
    words = [int.from_bytes(replies[3][i:i + 4], "little") for i in range(0, 20, 4)]
    assert words == [0x7F7F7F7F, 0x01010101, 0x80808080, 0x11223344, 0x05]


def test_board_core_over_uart_pins():
    """Three images through the UART pins (4 clocks per bit) and two image slots (the
    third image's input goes out after the first image's logits) give the golden model's
    logits; a byte with a low stop bit is dropped and lights the error LED."""
    cfg = replace(SMALL, slots=2)
    run_testbench(UARTAccelerator(cfg, DIVISOR, clk_hz=1000), name="board_core",
                  test_module="sim.tb_board", sim=selected_simulators()[0],
                  params=dict(cfg=cfg.to_dict(), specs=SPECS, seed=2, images=3,
                              divisor=DIVISOR))


#: blocks whose residual is the block input (tests/test_accel.py): the small organisation
#: places them in its split activation memories
BLOCKS = [("conv", "mul", 8, 3, 1), ("conv", "shift", 16, 1, 1), ("dw", "adder", 3, 1),
          ("res", "shift", 1, 2), ("dw", "shift", 5, 2), ("conv", "adder", 12, 1, 1),
          ("gap",), ("fc", "mul", 10)]


def test_board_core_small_organisation_over_uart_pins():
    """The iCEBreaker's organisation (``boards.config``: ``sw.mapper.small_config`` with
    4 / 6 / 4 lanes: shared engine, two SPRAM-sized single-port activation memories and a
    residual memory, parameters in the activation memory, 16-bit program words, 2-byte
    words) behind the UART: two images bit-exact through the pins."""
    cfg = small_config(random_qmodel(BLOCKS, seed=7), dict(zip(("clp", "slp", "alp"),
                                                               DEFAULT_LANES)))
    assert is_small(cfg) and cfg.params_in_act and cfg.prog_width == 16
    run_testbench(UARTAccelerator(cfg, DIVISOR, clk_hz=1000), name="board_core_small",
                  test_module="sim.tb_board", sim=selected_simulators()[0],
                  params=dict(cfg=cfg.to_dict(), specs=BLOCKS, seed=7, images=2,
                              divisor=DIVISOR))


def test_uart_steps_pace_the_run():
    qm = random_qmodel(SPECS, seed=5)
    cfg = replace(SMALL, slots=2)
    prog = compile_model(qm, cfg)
    images = np.zeros((5, 8, 8), np.uint8) + np.arange(5)[:, None, None]
    cmds = session(prog, cfg, images)
    steps = host.uart_steps(cmds, cfg.slots, len(images))
    # the bytes sent and the reply lengths are those of the session, in order
    assert b"".join(s.send for s in steps) == b"".join(c for c, _ in cmds)
    assert sum(s.reply for s in steps) == sum(n for _, n in cmds)
    frames = [s for s in steps if s.image is not None]
    assert [s.image for s in frames] == [0, 1, 2, 3, 4]
    one_input = 8 * 8          # one byte per pixel (a grey 8x8 image)
    assert schedule.input_words(prog) * prog.input_k == one_input
    # after image i's logits, the input of image i + 2 (images 2, 3, 4), then nothing
    assert frames[0].send[:1] == protocol.RUN and len(frames[0].send) == host.RUN_HEADER
    assert [len(s.send) for s in frames[1:]] == [one_input] * 3 + [0]
    assert steps[-1] == host.Step(b"", 5)


def test_pll_settings():
    s = ice40_pll(12, 24)
    d = s.dividers
    assert s.out_mhz == 12 * (d["DIVF"] + 1) / (d["DIVR"] + 1) / 2 ** d["DIVQ"] == 24
    assert 533 <= 12 / (d["DIVR"] + 1) * (d["DIVF"] + 1) <= 1066
    s = ecp5_pll(25, 40)
    d = s.dividers
    assert s.out_mhz == 25 / d["CLKI_DIV"] * d["CLKFB_DIV"] == 40
    assert 400 <= 40 * d["CLKOP_DIV"] <= 800
    assert abs(ice40_pll(12, 30).out_mhz - 30) < 0.5
    with pytest.raises(ValueError, match="no iCE40 PLL setting makes 24 MHz from 1 MHz"):
        ice40_pll(1, 24)


def test_board_top_clock_choice():
    ulx3s, ice = get_board("ulx3s-85f"), get_board("icebreaker")
    top = BoardTop(SMALL, ulx3s, 40)
    assert (top.clk_hz, top.divisor, top.pll.dividers["CLKFB_DIV"]) == (40e6, 40, 8)
    assert BoardTop(SMALL, ulx3s, 25).pll is None        # the board clock, no PLL
    top = BoardTop(SMALL, ice, None, baud=3_000_000)
    assert (top.pll, top.clk_hz, top.divisor) == (None, 12e6, 4)
    with pytest.raises(ValueError, match="baud 6000000 is too fast for a 12 MHz clock"):
        BoardTop(SMALL, ice, None, baud=6_000_000)
    # elaborates for the platforms (no build), with the PLL primitive; only the board
    # clock is constrained (nextpnr derives the PLL output's from it and the dividers)
    for board, primitive, constraints, line in (
            (ice, "SB_PLL40_PAD", "t.pcf", "set_frequency clk12_0__io 12.0"),
            (ulx3s, "EHXPLLL", "t.lpf", 'FREQUENCY PORT "clk25_0__io" 25000000.0 HZ;')):
        files = board.platform().prepare(BoardTop(SMALL, board, 30), name="t").files
        assert primitive in files["t.il"] and line in files[constraints].splitlines()
        assert sum("FREQUENCY" in x or "set_frequency" in x
                   for x in files[constraints].splitlines()) == 1


def test_lower_clock_for_a_missed_fmax():
    """The fallback clock: the fastest PLL output at or below the routed fmax at which the
    baud works (22.5 MHz would be 2.3% off 1 Mbaud), else the board clock, else none."""
    ice, ulx3s = get_board("icebreaker"), get_board("ulx3s-85f")
    assert lower_clock(ice, 23.73, 1_000_000) == 23.625        # 12 MHz x 63 / 32
    assert lower_clock(ice, 22.6, 1_000_000) == 22.125
    assert lower_clock(ice, 14.0, 1_000_000) == 12.0           # below the PLL's 16 MHz
    assert lower_clock(ice, 11.0, 1_000_000) is None
    assert lower_clock(ulx3s, 29.1, 1_000_000) == 25 * 8 / 7
    assert ice.top_mhz == 24.0


def test_board_config_is_the_small_organisation(tmp_path, capsys):
    """``boards.config`` (make bitstream's accel.json): the iCEBreaker gets the small
    organisation (the mapper's when it chooses it, else small_config 4,6,4); ``--lanes``
    sizes it with other lanes."""
    qmodel = str(Path(__file__).resolve().parents[1] / "archs/default/qmodel.npz")
    assert config_main(["--qmodel", qmodel, "--board", "icebreaker", "--out",
                        str(tmp_path / "a")]) == 0
    cfg = AccelConfig.load(tmp_path / "a" / "accel.json")
    assert is_small(cfg) and cfg.slots == 1 and cfg.prog_width == 16 and cfg.params_in_act
    assert config_main(["--qmodel", qmodel, "--board", "icebreaker", "--out",
                        str(tmp_path / "b"), "--lanes", "2,2,2"]) == 0
    cfg = AccelConfig.load(tmp_path / "b" / "accel.json")
    assert is_small(cfg) and [c.lanes for _, _, c in cfg.chunks] == [2, 2, 2]
    assert "small_config lanes 2,2,2" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        config_main(["--qmodel", qmodel, "--board", "icebreaker", "--out",
                     str(tmp_path / "c"), "--lanes", "2,2"])


def test_throughput_figures(small_model):
    qm, _ = small_model
    figures = throughput(SMALL, qm, clk_mhz=10, fmax_mhz=20, baud=1_000_000)
    cycles = figures["cycles_per_image"]
    assert figures["images_per_s"] == round(10e6 / cycles, 1)
    assert figures["images_per_s_at_fmax"] == round(20e6 / cycles, 1)
    # one slot: streaming adds the byte-stream transfers to the sequential cycles
    assert cycles < figures["interval_cycles"] < 1.5 * cycles
    # 8x8 one-channel input, a byte per pixel; 'O' + 10 16-bit logits (20 bytes)
    assert figures["uart_bytes_per_image"] == {"in": 64, "out": 21}
    assert figures["uart_images_per_s"] == round(100_000 / (64 + 21), 1)


def test_host_sim_end_to_end(small_model, capsys):
    """``boards.host run --sim``: the protocol over pipes to the Verilator RTL."""
    _, d = small_model
    assert host.main(["run", "--sim", "--images", "5", "--dataset", "random",
                      "--qmodel", str(d / "qmodel.npz"), "--accel", str(d / "accel.json"),
                      "--timeout", "120"]) == 0
    out = capsys.readouterr().out
    assert [line.split(":")[0] for line in out.splitlines() if line.startswith("image ")] \
        == [f"image {i}" for i in range(5)]
    assert "logits bit-exact with the golden model on all 5 images" in out
    assert "images/s" in out


class FakeLink:
    """A link answering each read from a script of byte strings (``b""``: silence)."""

    def __init__(self, replies):
        self.replies, self.sent = list(replies), bytearray()

    def write(self, data):
        self.sent += data

    def read_some(self, n, timeout):
        if not self.replies:
            return b""
        data, self.replies[0] = self.replies[0][:n], self.replies[0][n:]
        if not self.replies[0]:
            self.replies.pop(0)
        return data


def _session_args(small_model):
    qm, _ = small_model
    return compile_model(qm, SMALL), SMALL, np.zeros((2, 8, 8), np.uint8)


def test_host_wrong_bitstream(small_model):
    with pytest.raises(host.HostError, match=r"wrong bitstream: ping answered b'\\x00abc'"):
        host.run_session(FakeLink([b"\x00abc"]), *_session_args(small_model))
    with pytest.raises(host.HostError, match="protocol version 9, this host 2"):
        host.run_session(FakeLink([b"NAS\x09"]), *_session_args(small_model))


def test_host_timeout_names_the_step(small_model):
    link = FakeLink([protocol.MAGIC, protocol.ACK])       # then silence
    with pytest.raises(host.HostError, match=r"timeout: no reply for 0.01 s waiting for a "
                                             r"write \(got 0 of 1 bytes\); check --baud"):
        host.run_session(link, *_session_args(small_model), timeout=0.01)
    assert link.sent.startswith(protocol.PING + protocol.WRITE)


def test_host_over_a_pty_times_out(small_model, capsys):
    """A real tty (pty) with nothing behind it: the ping times out, one line, exit 1."""
    _, d = small_model
    master, slave = os.openpty()
    try:
        code = host.main(["run", "--port", os.ttyname(slave), "--images", "1", "--dataset",
                          "random", "--qmodel", str(d / "qmodel.npz"),
                          "--accel", str(d / "accel.json"), "--timeout", "0.2"])
        sent = os.read(master, 16)
    finally:
        os.close(master)
        os.close(slave)
    err = capsys.readouterr().err
    assert code == 1 and sent == protocol.PING
    assert err.count("\n") == 1 and "timeout: no reply for 0.2 s waiting for the ping" in err


def test_host_missing_port_and_bad_files(small_model, capsys):
    _, d = small_model
    args = ["run", "--images", "1", "--dataset", "random", "--qmodel", str(d / "qmodel.npz"),
            "--accel", str(d / "accel.json")]
    assert host.main(args + ["--port", "/dev/ttyNOPE9"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: cannot open serial port /dev/ttyNOPE9") and \
        err.count("\n") == 1
    assert host.main(args[:-1] + [str(d / "missing.json"), "--port", "x"]) == 2
    assert "no such accelerator config" in capsys.readouterr().err


def test_flash_missing_tool(tmp_path, monkeypatch, capsys):
    bitstream = tmp_path / "top.bit"
    bitstream.write_bytes(b"\0")
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.delenv("OPENFPGALOADER", raising=False)
    assert flash.main(["--board", "ulx3s-85f", "--bitstream", str(bitstream)]) == 2
    err = capsys.readouterr().err
    assert err == ("error: openFPGALoader not found; install it (apt install openfpgaloader) "
                   "or set $OPENFPGALOADER\n")
    monkeypatch.delenv("ICEPROG", raising=False)
    assert flash.main(["--board", "icebreaker", "--bitstream", str(bitstream)]) == 2
    assert "iceprog not found; install it (apt install fpga-icestorm)" in capsys.readouterr().err


def test_flash_no_board_and_no_bitstream(tmp_path, monkeypatch, capsys):
    """A programmer that finds no board: one line, exit 2; a missing bitstream: exit 1."""
    fake = tmp_path / "iceprog"
    fake.write_text("#!/bin/sh\necho \"init..\"\necho \"Can't find iCE FTDI USB device "
                    "(vendor_id 0x0403, device_id 0x6010 or 0x6014).\" >&2\nexit 2\n")
    fake.chmod(0o755)
    monkeypatch.setenv("ICEPROG", str(fake))
    bitstream = tmp_path / "top.bin"
    bitstream.write_bytes(b"\0")
    assert flash.main(["--board", "icebreaker", "--bitstream", str(bitstream)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: no iCEBreaker found by iceprog") and err.count("\n") == 1
    assert flash.main(["--board", "icebreaker", "--bitstream", str(tmp_path / "x.bin")]) == 1
    assert "no bitstream at" in capsys.readouterr().err


def test_build_cli_errors(small_model, tmp_path, capsys):
    _, d = small_model
    with pytest.raises(SystemExit):
        build_main(["--board", "icebreaker", "--out", str(tmp_path)])
    assert "give --accel ACCEL_JSON" in capsys.readouterr().err
    assert build_main(["--board", "icebreaker", "--out", str(tmp_path), "--accel",
                       str(d / "accel.json"), "--qmodel", str(d / "qmodel.npz"),
                       "--baud", "7000000"]) == 1
    assert capsys.readouterr().err == \
        "error: baud 7000000 is too fast for a 24 MHz clock (needs at least 4 clocks per bit)\n"


@pytest.mark.slow
def test_build_board_top_ulx3s_85f(small_model, tmp_path):
    """The board top of a small accelerator builds for the ECP5-85F with its default
    30 MHz PLL and its report has the figures."""
    _, d = small_model
    out = tmp_path / "ulx3s"
    assert build_main(["--board", "ulx3s-85f", "--out", str(out), "--accel",
                       str(d / "accel.json"), "--qmodel", str(d / "qmodel.npz")]) == 0
    data = json.loads((out / "top.report.json").read_text())
    assert data["passed"] and data["clock"]["mhz"] == 30.0 and data["divisor"] == 30
    assert data["clock"]["pll"] == {"CLKI_DIV": 5, "CLKFB_DIV": 6, "CLKOP_DIV": 14}
    assert data["resources"]["dsp"]["used"] > 0 and data["resources"]["bram"]["used"] > 0
    assert all(c["fmax_mhz"] >= 30 for c in data["clocks"])
    assert data["images_per_s"] > 0 and data["uart_images_per_s"] > 0


@pytest.mark.slow
def test_build_board_top_icebreaker_small_organisation(tmp_path):
    """The small organisation's board top (the BLOCKS net, small_config 4,6,4) builds for
    the iCE40UP5K at the 12 MHz board clock: the activation memories in SPRAM (the zero
    inits dropped), the multipliers in SB_MAC16s, and its report has the figures."""
    qm = random_qmodel(BLOCKS, seed=7)
    golden.save(qm, tmp_path / "qmodel.npz")
    small_config(qm, dict(zip(("clp", "slp", "alp"), DEFAULT_LANES))).save(
        tmp_path / "accel.json")
    out = tmp_path / "icebreaker"
    assert build_main(["--board", "icebreaker", "--out", str(out), "--accel",
                       str(tmp_path / "accel.json"), "--qmodel", str(tmp_path / "qmodel.npz"),
                       "--mhz", "12"]) == 0
    data = json.loads((out / "top.report.json").read_text())
    assert data["passed"] and data["clock"] == {"board_mhz": 12.0, "mhz": 12.0, "pll": None,
                                                "fallback_from": None}
    assert data["resources"]["spram"]["used"] >= 2 and data["resources"]["dsp"]["used"] > 0
    assert data["cycles_per_image"] > 0 and data["uart_images_per_s"] > 0


@pytest.mark.slow
def test_board_core_icebreaker_default_network_over_uart_pins():
    """The default network on the iCEBreaker's config (``boards.config``: small_config
    4,6,4) behind the UART pins: program, parameters and weights loaded and one
    Fashion-MNIST test image sent through the rx pin, its logits (from the tx pin)
    bit-exact with the golden model. About 2.4M cycles (1.2M of them loading ~31 KB at
    4 clocks per bit); Verilator when installed."""
    repo = Path(__file__).resolve().parents[1]
    qmodel = repo / "archs/default/qmodel.npz"
    try:
        load("fashion-mnist", "test")
    except DatasetError as error:
        pytest.skip(str(error))
    cfg = small_config(golden.load(qmodel), dict(zip(("clp", "slp", "alp"), DEFAULT_LANES)))
    sims = selected_simulators()
    run_testbench(UARTAccelerator(cfg, DIVISOR, clk_hz=1000), name="board_core_default",
                  test_module="boards.tb_network",
                  sim="verilator" if "verilator" in sims else sims[0],
                  params=dict(cfg=cfg.to_dict(), qmodel=str(qmodel), dataset="fashion-mnist",
                              images=1, divisor=DIVISOR))
