"""Build the accelerator's board top (or the PE-row smoke top) and report utilisation,
fmax and throughput.

    python -m boards.build --accel build/default-ulx3s-85f/accel.json --board ulx3s-85f \
        --out build/default-ulx3s-85f [--mhz 30] [--baud 1000000] [--qmodel Q]
    python -m boards.build --smoke --board icebreaker --out build/icebreaker [--kind all] [--pes 4]

Exits 1 with a one-line message when the design does not fit, fails timing or a tool
fails; 2 when the toolchain is missing. Writes ``<out>/top.report.json`` (accelerator)
or ``<out>/smoke.report.json``.
"""
import argparse
import json
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from hw.config import AccelConfig
from sw import resources, schedule
from sw.compile import compile_model
from sw.costmodel import program_cycles
from sw.golden import model as golden

from .platforms import BOARDS, get_board
from .pll import ecp5_pll, ice40_pll
from .report import Report, parse_nextpnr_log
from .smoke import KIND_CHOICES, SmokeTop, row_kinds
from .toolchain import ToolchainError, configure
from .top import BoardTop
from .uart import divisor_for

__all__ = ["BuildFailed", "BuildResult", "build", "build_top", "throughput", "failure", "main"]

NAME = "smoke"
TOP = "top"
DEFAULT_QMODEL = Path("archs/default/qmodel.npz")
DEFAULT_BAUD = 1_000_000


class BuildFailed(Exception):
    """The build ran but produced no usable bitstream (message says why)."""


@dataclass
class BuildResult:
    report: Report
    bitstream: Path
    report_json: Path
    seconds: float
    requested_mhz: float


def build(board_name, out, *, kind="all", pes=4, dsp=True, x_width=8, w_width=8,
          shift_width=3, acc_width=20, log=print):
    """Build the smoke top into ``out`` and return a :class:`BuildResult` (also when
    timing or fit fail: check ``result.report``). Raises :class:`BuildFailed` when a tool
    fails without a nextpnr report, :class:`ToolchainError` when a tool is missing."""
    board = get_board(board_name)
    platform = board.platform()
    configure(platform.required_tools)
    top = SmokeTop(row_kinds(kind), pes, x_width=x_width, w_width=w_width,
                   shift_width=shift_width, acc_width=acc_width)
    out = Path(out)
    requested_mhz = platform.default_clk_frequency / 1e6
    log(f"building {kind} x {pes} PEs (x {x_width}, w {w_width}, shift {shift_width}, "
        f"acc {acc_width}{'' if dsp else ', no DSPs'}) for {board.name} ({platform.device}, "
        f"{platform.default_clk} at {requested_mhz:.2f} MHz) in {out}")
    return _run(board, platform, top, NAME, out, requested_mhz, dict(
        kind=kind, pes=pes, dsp=dsp,
        widths={"x": x_width, "w": w_width, "shift": shift_width, "acc": acc_width}), dsp=dsp)


def _run(board, platform, top, name, out, requested_mhz, meta, dsp=True, figures=None):
    """Build ``top`` as ``name`` in ``out``, parse nextpnr's log and write
    ``<name>.report.json``: ``meta``, the build, the report, then ``figures(report)``."""
    start = time.monotonic()
    tim = out / f"{name}.tim"
    bitstream = out / f"{name}.{board.bitstream_ext}"
    for stale in (tim, bitstream):
        stale.unlink(missing_ok=True)
    try:
        platform.build(top, name=name, build_dir=str(out), do_program=False,
                       nextpnr_opts="--timing-allow-fail", **board.overrides(dsp=dsp, top=name))
    except subprocess.CalledProcessError:
        if not tim.exists():
            raise BuildFailed(f"synthesis failed; see {out / (name + '.rpt')}") from None
    seconds = time.monotonic() - start
    report = parse_nextpnr_log(tim.read_text())
    report_json = out / f"{name}.report.json"
    report_json.write_text(report.to_json(
        board=board.name, device=platform.device, **meta, requested_mhz=requested_mhz,
        build_seconds=round(seconds, 1),
        bitstream=str(bitstream) if bitstream.exists() else None,
        **(figures(report) if figures else {})))
    return BuildResult(report, bitstream, report_json, seconds, requested_mhz)


def throughput(cfg, qm, clk_mhz, fmax_mhz, baud):
    """Images/s of ``qm`` on ``cfg``: compute-bound at ``clk_mhz`` and at ``fmax_mhz``
    (``sw.costmodel.program_cycles``: one image, layers one after another), streaming
    through ``cfg.slots`` slots at ``clk_mhz`` (``sw.schedule.interval``), and UART-bound
    (8N1: ``baud / 10`` bytes/s over an image's input bytes, one per pixel for a grey image,
    plus its logits frame)."""
    prog = compile_model(qm, cfg)
    _, cycles = program_cycles(prog, cfg)
    interval = schedule.interval(prog, cfg)
    in_bytes = schedule.input_words(prog) * prog.input_k
    out_bytes = 1 + prog.output_bytes
    return {"cycles_per_image": cycles, "interval_cycles": round(interval),
            "images_per_s": round(clk_mhz * 1e6 / cycles, 1),
            "images_per_s_at_fmax": round(fmax_mhz * 1e6 / cycles, 1) if fmax_mhz else None,
            "images_per_s_streaming": round(clk_mhz * 1e6 / interval, 1),
            "uart_bytes_per_image": {"in": in_bytes, "out": out_bytes},
            "uart_images_per_s": round(baud / 10 / (in_bytes + out_bytes), 1)}


def lower_clock(board, fmax_mhz, baud):
    """The fastest clock not above ``fmax_mhz`` that ``board`` makes (a PLL output, or
    the board clock) and at which ``baud`` works; ``None`` when there is none."""
    board_mhz = board.platform().default_clk_frequency / 1e6
    pll = ice40_pll if board.family == "ice40" else ecp5_pll
    want = fmax_mhz
    for _ in range(64):
        try:
            out = pll(board_mhz, want, at_most=True).out_mhz
        except ValueError:
            break
        if out <= board_mhz:
            break
        try:
            divisor_for(out * 1e6, baud)
            return out
        except ValueError:
            want = out - 1e-6
    if board_mhz <= fmax_mhz:
        try:
            divisor_for(board_mhz * 1e6, baud)
            return board_mhz
        except ValueError:
            pass
    return None


#: Builds after the first when the routed fmax misses the default clock.
FALLBACKS = 2
#: Each fallback clock is at most the last routed fmax less this share (a new route
#: at a lower constraint comes out a little slower: 24 MHz asked, 21.50 routed; then
#: 21.375 asked, 20.37 routed).
FALLBACK_MARGIN = 0.02


def build_top(accel, board_name, out, *, qmodel=DEFAULT_QMODEL, mhz=None, baud=DEFAULT_BAUD,
              fallback=0, log=print):
    """Build the accelerator board top of ``accel`` (accel.json) for ``board_name`` at
    ``mhz`` (default: the board's ``top_mhz``) and ``baud`` into ``out``; the report JSON
    adds the clock, the UART and :func:`throughput`. ``fallback``: up to that many more
    builds while it fits but the routed fmax misses the clock, each at
    :func:`lower_clock` of the fmax less :data:`FALLBACK_MARGIN` (the JSON's
    ``clock.fallback_from`` lists the clocks tried and their fmax). Raises like
    :func:`build`, and ``ValueError`` for a bad config, model, clock or baud."""
    board = get_board(board_name)
    cfg = AccelConfig.load(accel)
    qm = golden.load(qmodel)
    want = mhz if mhz is not None else board.top_mhz
    tried = []
    while True:
        result = _build_top(cfg, qm, accel, qmodel, board, out, want, baud, tried or None,
                            log)
        report = result.report
        if not (len(tried) < fallback and report.fits and not report.errors
                and report.clocks and not report.timing_met):
            return result
        worst = min(report.clocks, key=lambda clock: clock.fmax_mhz)
        tried.append({"mhz": worst.target_mhz, "fmax_mhz": worst.fmax_mhz})
        want = lower_clock(board, worst.fmax_mhz * (1 - FALLBACK_MARGIN), baud)
        if want is None or want >= worst.target_mhz:
            log(f"timing failed at {worst.target_mhz:.3f} MHz (routed fmax "
                f"{worst.fmax_mhz:.2f} MHz) and {board.name} makes no slower clock for it")
            return result
        log(f"timing failed at {worst.target_mhz:.3f} MHz (routed fmax "
            f"{worst.fmax_mhz:.2f} MHz); building again at {want:.3f} MHz, the fastest "
            f"clock {board.name} makes at or below the fmax less "
            f"{FALLBACK_MARGIN:.0%}")


def _build_top(cfg, qm, accel, qmodel, board, out, mhz, baud, fallback_from, log):
    top = BoardTop(cfg, board, mhz, baud)
    platform = board.platform()
    configure(platform.required_tools)
    out = Path(out)
    clk_mhz = top.clk_hz / 1e6
    chunks = ", ".join(f"{name.upper()} {c.lanes}" for name, _, c in cfg.chunks)
    log(f"building the accelerator ({chunks} lanes, {cfg.slots} slot(s)) for {board.name} "
        f"({platform.device}) at {clk_mhz:.3f} MHz "
        f"({'PLL ' + str(top.pll.dividers) if top.pll else 'board clock'}), UART {baud} baud "
        f"(divisor {top.divisor}) in {out}")
    past = resources.past_routable(cfg, board.name)
    if past:
        log(f"warning: this accelerator is past what nextpnr routes on {board.name} "
            f"({'; '.join(past)}; sw.resources.ROUTABLE): routing may not finish")

    def figures(report):
        fmax = min((c.fmax_mhz for c in report.clocks), default=None)
        return throughput(cfg, qm, clk_mhz, fmax, baud)

    return _run(board, platform, top, TOP, out, clk_mhz, dict(
        accel=str(accel), qmodel=str(qmodel),
        clock={"board_mhz": platform.default_clk_frequency / 1e6, "mhz": clk_mhz,
               "pll": top.pll.dividers if top.pll else None, "fallback_from": fallback_from},
        baud=baud, divisor=top.divisor), figures=figures)


def failure(result, device):
    """One line saying why ``result`` is unusable, or ``None`` when it passed."""
    report = result.report
    if not report.fits:
        over = ", ".join(f"{u.cell} {u.used}/{u.total}" for u in report.resources.values()
                         if not u.fits)
        return f"design does not fit the {device}: {over}"
    if report.errors:
        return f"nextpnr failed: {report.errors[0]}"
    if not report.clocks:
        return "nextpnr reported no clock timing"
    if not report.timing_met:
        worst = min(report.clocks, key=lambda clock: clock.fmax_mhz)
        return (f"timing failed: fmax {worst.fmax_mhz:.2f} MHz < requested "
                f"{worst.target_mhz:.2f} MHz on {worst.clock}")
    if not result.bitstream.exists():
        return f"no bitstream at {result.bitstream}"
    return None


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m boards.build", description=__doc__.split("\n")[0])
    parser.add_argument("--board", required=True, choices=BOARDS)
    parser.add_argument("--out", required=True, type=Path, help="build directory")
    top = parser.add_argument_group("accelerator board top")
    top.add_argument("--accel", type=Path, help="accelerator config (accel.json from make map)")
    top.add_argument("--qmodel", type=Path, default=DEFAULT_QMODEL,
                     help=f"integer model, for cycles and bytes per image (default: {DEFAULT_QMODEL})")
    top.add_argument("--mhz", type=float, help="clock (default: 30 on ULX3S, 24 on "
                     "iCEBreaker); a PLL makes it unless it is the board clock")
    top.add_argument("--fallback", type=int, metavar="N",
                     help="when the routed fmax misses the clock, build up to N more times, "
                          "each at the fastest clock the board makes at or below the fmax "
                          f"less {FALLBACK_MARGIN:.0%}% (default: {FALLBACKS}, 0 when --mhz "
                          "is given)")
    top.add_argument("--baud", type=int, default=DEFAULT_BAUD,
                     help=f"UART baud rate (default: {DEFAULT_BAUD})")
    smoke = parser.add_argument_group("smoke top (PE rows fed by LFSRs)")
    smoke.add_argument("--smoke", action="store_true", help="build the smoke top instead")
    smoke.add_argument("--kind", default="all", choices=KIND_CHOICES,
                       help="PE kind of the row, or one row of each (default: all)")
    smoke.add_argument("--pes", type=int, default=4, help="PEs per row (default: 4)")
    smoke.add_argument("--no-dsp", dest="dsp", action="store_false",
                       help="keep multipliers out of DSP blocks (LUT-only MACs)")
    args = parser.parse_args(argv)
    if args.smoke == (args.accel is not None):
        parser.error("give --accel ACCEL_JSON (the accelerator) or --smoke, not both or neither")
    try:
        if args.smoke:
            result = build(args.board, args.out, kind=args.kind, pes=args.pes, dsp=args.dsp)
        else:
            fallback = args.fallback if args.fallback is not None else \
                (FALLBACKS if args.mhz is None else 0)
            result = build_top(args.accel, args.board, args.out, qmodel=args.qmodel,
                               mhz=args.mhz, baud=args.baud, fallback=fallback)
    except ToolchainError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except (BuildFailed, ValueError, TypeError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(result.report.table())
    if not args.smoke:
        data = json.loads(result.report_json.read_text())
        print(f"{data['cycles_per_image']} cycles/image: {data['images_per_s']} images/s at "
              f"{data['clock']['mhz']:.2f} MHz ({data['images_per_s_at_fmax']} at fmax; "
              f"streaming {data['interval_cycles']} cycles/image, "
              f"{data['images_per_s_streaming']} images/s); "
              f"UART {args.baud} baud: {data['uart_images_per_s']} images/s "
              f"({data['uart_bytes_per_image']['in']} + {data['uart_bytes_per_image']['out']}"
              " bytes/image)")
    print(f"report: {result.report_json} (build {result.seconds:.1f} s)")
    reason = failure(result, get_board(args.board).platform_cls.device)
    if reason:
        print(f"error: {reason}", file=sys.stderr)
        return 1
    print(f"bitstream: {result.bitstream}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
