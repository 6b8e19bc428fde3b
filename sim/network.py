"""Run a network end to end on the generated accelerator's RTL (``make sim``).

``python -m sim.network --qmodel Q --accel A [--images 100] [--dataset fashion-mnist]``
compiles the program of ``Q`` for the accelerator of ``A`` (accel.json), builds the RTL
with Verilator and a free-running C++ harness (``sim/verilator_main.cpp``: no Python per
cycle), sends the whole session through the host byte protocol (ping, loads, the first
inputs, then one streaming run; inputs travel compact, ``Program.input_k`` bytes per
word: a byte per pixel), checks every logit against the golden model and prints accuracy,
per-layer cycles (measured from the chunks' busy signals) and PE utilisation.
Exit status 1 when any logit differs. The cocotb testbench ``sim/tb_accel.py`` drives the
same protocol in the test suite.
"""
import argparse
import hashlib
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from hw import protocol
from hw.accel import CHUNK_ID, Accelerator, memory_bits
from hw.config import AccelConfig, ConfigError
from hw.export import to_verilog
from sim.runner import _tool_env
from sw.compile import compile_model, execution_order
from sw import schedule
from sw.costmodel import program_cycles
from sw.golden import model as golden
from sw.program import ProgramError

HARNESS = Path(__file__).with_name("verilator_main.cpp")


class SimError(RuntimeError):
    """The simulation could not be built or run; one line."""


def build(cfg, out, harness=HARNESS):
    """Verilog + Verilator binary of ``cfg`` with the C++ ``harness`` in ``out`` (rebuilt
    only when they change)."""
    out.mkdir(parents=True, exist_ok=True)
    verilog = to_verilog(Accelerator(cfg), "accel")
    stamp = hashlib.sha256((verilog + harness.read_text()).encode()).hexdigest()
    exe = out / "obj" / "accel_sim"
    if exe.exists() and (out / "build.stamp").read_text() == stamp:
        return exe
    (out / "accel.v").write_text(verilog)
    _tool_env()
    cmd = ["verilator", "--cc", "--exe", "--build", "-j", "2", "-O3", "--x-assign", "fast",
           "-Wno-fatal", "-Wno-lint", "-Wno-UNOPTFLAT", "--top-module", "accel",
           "-Mdir", str(out / "obj"), "-o", "accel_sim", str(out / "accel.v"), str(harness)]
    t0 = time.time()
    result = subprocess.run(cmd, capture_output=True, text=True)
    if result.returncode:
        tail = (result.stderr or result.stdout).strip().splitlines()[-5:]
        raise SimError("verilator build failed: " + " | ".join(tail))
    (out / "build.stamp").write_text(stamp)
    print(f"built {exe} in {time.time() - t0:.0f} s", flush=True)
    return exe


def session(prog, cfg, images):
    """Stimulus bytes and the reply length of each command, in order: ping, loads, the
    inputs of the first ``slots`` images (compact input writes), then one streaming run of
    all images (the other inputs, compact, follow the run command; the bridge paces them)."""
    bits = dict(zip(protocol.MEMORIES, memory_bits(cfg)))
    V, k = cfg.word_bytes, prog.wire_k
    slot_words = cfg.slot_words
    cmds = [(protocol.PING, 4)]
    for mem, blocks in prog.images.items():
        for base, words in blocks.items():
            for at in range(0, len(words), 4096):
                cmds.append((protocol.write(mem, base + at, words[at:at + 4096], bits[mem]), 1))
    in_words = [prog.input_words(image) for image in images]
    for slot, words in enumerate(in_words[:cfg.slots]):
        cmds.append((protocol.write_input(slot * slot_words + prog.input_base // V, words, k),
                     1))
    out_words = prog.output_bytes // V
    run = protocol.run(len(images), prog.input_base // V, len(in_words[0]),
                       prog.output_base // V, out_words, k)
    run += b"".join(protocol.pack_input(w, k) for w in in_words[cfg.slots:])
    cmds.append((run, len(images) * (1 + out_words * V) + 5))
    return cmds


def parse(cmds, reply, prog, n_images):
    """Logits [N, C] and the run's cycles from the concatenated replies."""
    pos, logits, cycles = 0, [], []
    for i, (cmd, size) in enumerate(cmds):
        chunk = reply[pos:pos + size]
        pos += size
        if len(chunk) < size:
            raise SimError(f"the accelerator stopped answering at command {i} ({cmd[:1]!r}): "
                           f"{len(chunk)} of {size} reply bytes")
        if cmd == protocol.PING and chunk != protocol.MAGIC:
            raise SimError(f"ping answered {chunk!r}, expected {protocol.MAGIC!r}")
        if cmd[:1] in (protocol.WRITE, protocol.INPUT) and chunk != protocol.ACK:
            raise SimError(f"write answered {chunk!r}, expected {protocol.ACK!r}")
        if cmd[:1] == protocol.RUN:
            per = (size - 5) // n_images
            for j in range(n_images):
                frame = chunk[j * per:(j + 1) * per]
                if frame[:1] != protocol.OUTPUT:
                    raise SimError(f"image {j}: expected an output frame, got {frame[:8]!r}")
                logits.append(prog.decode_output(np.frombuffer(frame[1:], np.uint8)))
            cycles.append(protocol.parse_done(chunk[-5:]))
    return np.array(logits).reshape(n_images, -1), cycles


def layer_cycles(trace_path, prog, cfg, images):
    """Cycles of each layer of image 0, from the chunk_busy trace of the first run."""
    spans = {}
    start, prev = {}, 0
    for line in Path(trace_path).read_text().split("\n"):
        if not line:
            continue
        cycle, mask = map(int, line.split())
        for chunk, bit in CHUNK_ID.items():
            was, now = prev >> bit & 1, mask >> bit & 1
            if now and not was:
                start[chunk] = cycle
            if was and not now:
                began = start.pop(chunk)
                spans.setdefault(chunk, []).append(cycle - began)
        prev = mask
    order = execution_order(prog, images, cfg.slots)
    measured = [0] * len(prog.layers)
    for chunk, pairs in order.items():
        for (img, layer), cycles in zip(pairs, spans.get(chunk, [])):
            if img == 0:
                measured[layer] = cycles
    return measured


def print_report(prog, cfg, measured, cycles, acc, n):
    predicted, predicted_total = program_cycles(prog, cfg)
    print(f"{'layer':<22} {'chunk':<5} {'mode':<10} {'lanes':>5} {'beats':>8} {'cycles':>8} "
          f"{'model':>8} {'util':>6}")
    busy, macs = {}, {}
    for L, cyc, pred in zip(prog.layers, measured, predicted):
        lanes = cfg.chunk(L.chunk).lanes
        print(f"{L.name:<22} {L.chunk:<5} {L.layer.mode:<10} {lanes:>5} {L.beats:>8} {cyc:>8} "
              f"{pred:>8} {L.macs / (lanes * cyc):>6.1%}")
        busy[L.chunk] = busy.get(L.chunk, 0) + cyc
        macs[L.chunk] = macs.get(L.chunk, 0) + L.macs
    per_image = round(sum(cycles) / n)           # throughput of the streaming run
    total_pe_cycles = sum(cfg.chunk(c).lanes for c in busy) * per_image
    for c in sorted(busy):
        lanes = cfg.chunk(c).lanes
        print(f"{c.upper()}: {lanes} lanes, busy {busy[c]} cycles per image: utilisation "
              f"{macs[c] / (lanes * busy[c]):.1%} while busy, {macs[c] / (lanes * per_image):.1%} "
              "of all cycles")
    print(f"overall PE utilisation {sum(macs.values()) / total_pe_cycles:.1%} (work-weighted); "
          f"{per_image} cycles per image with {cfg.slots} image slot(s) "
          f"({n} images in one run of {cycles[0]} cycles)")
    run = schedule.run_cycles(prog, cfg, n)
    print(f"cost model: this run {run} cycles predicted ({run / n:.0f} per image), "
          f"{abs(cycles[0] - run) / cycles[0]:.2%} off; one image's layers {predicted_total} "
          f"cycles; steady state {schedule.interval(prog, cfg):.0f} cycles per image")
    if acc is not None:
        print(f"accuracy on {n} test images: RTL {acc[0]:.2%}, golden model {acc[1]:.2%}")


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m sim.network", description=__doc__.splitlines()[0])
    ap.add_argument("--qmodel", required=True)
    ap.add_argument("--accel", required=True)
    ap.add_argument("--images", type=int, default=100)
    ap.add_argument("--dataset", default="fashion-mnist", help="fashion-mnist, mnist or random")
    ap.add_argument("--out", default=None, help="build directory (default: next to accel.json)")
    args = ap.parse_args(argv)
    try:
        cfg = AccelConfig.load(args.accel)
        qm = golden.load(args.qmodel)
        prog = compile_model(qm, cfg)
        if args.dataset == "random":
            rng = np.random.default_rng(0)
            images = rng.integers(0, 256, (args.images,) + tuple(qm.tensors[0]["shape"][1:]),
                                  dtype=np.uint8)
            labels = None
        else:
            from sw.datasets import DatasetError, load
            try:
                images, labels = load(args.dataset, "test")
            except DatasetError as e:
                raise SimError(str(e)) from None
            images, labels = images[:args.images], labels[:args.images]
        out = Path(args.out or Path(args.accel).parent / "sim")
        exe = build(cfg, out)
        cmds = session(prog, cfg, images)
        (out / "stimulus.bin").write_bytes(b"".join(c for c, _ in cmds))
        print(f"simulating {len(images)} images ({args.dataset}) on Verilator ...", flush=True)
        t0 = time.time()
        run = subprocess.run([str(exe), str(out / "stimulus.bin"), str(out / "response.bin"),
                              str(out / "trace.txt"), str(2_000_000 * (len(images) + 1))],
                             capture_output=True, text=True)
        seconds = time.time() - t0
        if run.returncode:
            raise SimError(f"simulation failed: {run.stderr.strip()[-300:]}")
        logits, cycles = parse(cmds, (out / "response.bin").read_bytes(), prog, len(images))
    except (ConfigError, golden.QModelError, ProgramError, SimError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    expect = golden.forward(qm, images)
    bad = np.flatnonzero((logits != expect).any(axis=1))
    acc = None if labels is None else ((logits.argmax(1) == labels).mean(),
                                       (expect.argmax(1) == labels).mean())
    print_report(prog, cfg, layer_cycles(out / "trace.txt", prog, cfg, len(images)), cycles,
                 acc, len(images))
    print(f"simulated {len(images)} images in {seconds:.1f} s "
          f"({60 * len(images) / seconds:.0f} images/minute, "
          f"{sum(cycles) / seconds / 1e6:.2f} M cycles/s)")
    if bad.size:
        print(f"FAIL: logits differ from the golden model on {bad.size} of {len(images)} images "
              f"(first: image {bad[0]})", file=sys.stderr)
        return 1
    print(f"PASS: logits bit-exact with the golden model on all {len(images)} images")
    return 0


if __name__ == "__main__":
    sys.exit(main())
