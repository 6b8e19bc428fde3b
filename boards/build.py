"""Build the PE-row smoke bitstream for a board and report utilisation and fmax.

    python -m boards.build --board icebreaker --out build/icebreaker [--kind all] [--pes 4]

Exits 1 with a one-line message when the design does not fit, fails timing or a tool
fails; 2 when the toolchain is missing. Writes ``<out>/smoke.report.json``.
"""
import argparse
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from .platforms import BOARDS, get_board
from .report import Report, parse_nextpnr_log
from .smoke import KIND_CHOICES, SmokeTop, row_kinds
from .toolchain import ToolchainError, configure

__all__ = ["BuildFailed", "BuildResult", "build", "failure", "main"]

NAME = "smoke"


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
    start = time.monotonic()
    tim = out / f"{NAME}.tim"
    bitstream = out / f"{NAME}.{board.bitstream_ext}"
    for stale in (tim, bitstream):
        stale.unlink(missing_ok=True)
    try:
        platform.build(top, name=NAME, build_dir=str(out), do_program=False,
                       nextpnr_opts="--timing-allow-fail", **board.overrides(dsp=dsp))
    except subprocess.CalledProcessError:
        if not tim.exists():
            raise BuildFailed(f"synthesis failed; see {out / (NAME + '.rpt')}") from None
    seconds = time.monotonic() - start
    report = parse_nextpnr_log(tim.read_text())
    report_json = out / f"{NAME}.report.json"
    report_json.write_text(report.to_json(
        board=board.name, device=platform.device, kind=kind, pes=pes, dsp=dsp,
        widths={"x": x_width, "w": w_width, "shift": shift_width, "acc": acc_width},
        requested_mhz=requested_mhz, build_seconds=round(seconds, 1),
        bitstream=str(bitstream) if bitstream.exists() else None))
    return BuildResult(report, bitstream, report_json, seconds, requested_mhz)


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
    parser.add_argument("--kind", default="all", choices=KIND_CHOICES,
                        help="PE kind of the row, or one row of each (default: all)")
    parser.add_argument("--pes", type=int, default=4, help="PEs per row (default: 4)")
    parser.add_argument("--no-dsp", dest="dsp", action="store_false",
                        help="keep multipliers out of DSP blocks (LUT-only MACs)")
    args = parser.parse_args(argv)
    try:
        result = build(args.board, args.out, kind=args.kind, pes=args.pes, dsp=args.dsp)
    except ToolchainError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except (BuildFailed, ValueError, TypeError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(result.report.table())
    print(f"report: {result.report_json} (build {result.seconds:.1f} s)")
    reason = failure(result, get_board(args.board).platform_cls.device)
    if reason:
        print(f"error: {reason}", file=sys.stderr)
        return 1
    print(f"bitstream: {result.bitstream}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
