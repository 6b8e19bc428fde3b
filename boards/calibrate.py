"""Per-PE resource calibration: build smoke rows of each PE kind at several sizes and
print the marginal cost per PE (a Markdown table, as in docs/boards.md).

    python -m boards.calibrate --out build/calibrate [--boards icebreaker ulx3s-85f]
"""
import argparse
import sys
from pathlib import Path

from .build import build
from .platforms import BOARDS

__all__ = ["VARIANTS", "calibrate", "main"]

#: (label, PE kind, use DSPs)
VARIANTS = (("mul (DSP)", "mul", True), ("mul (LUT)", "mul", False),
            ("shift", "shift", True), ("adder", "adder", True))
COLUMNS = ("logic", "ffs", "dsp")


def calibrate(board, out, sizes, log=print):
    """Build every variant of :data:`VARIANTS` at each of ``sizes`` PEs on ``board``;
    returns ``{label: {n: report}}`` for the builds that fit."""
    results = {}
    for label, kind, dsp in VARIANTS:
        results[label] = {}
        for n in sizes:
            result = build(board, Path(out) / board / f"{kind}{'' if dsp else '-lut'}-{n}",
                           kind=kind, pes=n, dsp=dsp, log=lambda _: None)
            report = result.report
            log(f"{board:<11} {label:<10} n={n:<3} "
                + " ".join(f"{c}={report.used(c)}" for c in COLUMNS)
                + (f" fmax={report.clocks[0].fmax_mhz:.1f}" if report.clocks else "")
                + f" ({result.seconds:.0f} s){'' if report.fits else ' does not fit'}")
            if report.fits and report.clocks:
                results[label][n] = report
    return results


def markdown(board, results):
    """Rows of the calibration table: the marginal cost per PE between the smallest and
    the largest size that fit, the fixed part (LFSR, control, fold) and the totals."""
    lines = []
    for label, by_n in results.items():
        if len(by_n) < 2:
            continue
        sizes = sorted(by_n)
        lo, hi = by_n[sizes[0]], by_n[sizes[-1]]
        per_pe = [(hi.used(c) - lo.used(c)) / (sizes[-1] - sizes[0]) for c in COLUMNS]
        fixed = lo.used("logic") - per_pe[0] * sizes[0]
        totals = ", ".join(f"{n}: {by_n[n].used('logic')}" for n in sizes)
        fmax = ", ".join(f"{by_n[n].clocks[0].fmax_mhz:.0f}" for n in sizes)
        lines.append(f"| {board} | {label} | {per_pe[0]:.0f} | {per_pe[1]:.0f} | "
                     f"{per_pe[2]:g} | {fixed:.0f} | {totals} | {fmax} |")
    return lines


HEADER = ["| board | PE | logic/PE | FFs/PE | DSPs/PE | fixed logic | logic at n PEs | "
          "fmax MHz at n PEs |", "|---|---|---|---|---|---|---|---|"]


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m boards.calibrate",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=Path("build/calibrate"))
    parser.add_argument("--boards", nargs="+", default=["icebreaker", "ulx3s-85f"],
                        choices=BOARDS)
    parser.add_argument("--sizes", type=int, nargs="+", default=[4, 8, 16])
    args = parser.parse_args(argv)
    table = list(HEADER)
    for board in args.boards:
        table += markdown(board, calibrate(board, args.out, args.sizes))
    print("\n".join(table))
    return 0


if __name__ == "__main__":
    sys.exit(main())
