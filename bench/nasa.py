"""NASA's comparison on our hardware: the hybrid accelerator running the hybrid network vs a
multiplier-only accelerator running the all-conv network of similar accuracy, at the same
board budget (issue 5, point 7), within what nextpnr routes (sw.resources.ROUTABLE).

Run: .venv/bin/python bench/nasa.py [--boards icebreaker ulx3s-85f] [--objective latency]
                                    [--hybrid default] [--baseline all-conv] [--measure N]
                                    [--headroom H] [--min-util 0.7] [--unroutable]

Per board both designs are sized by the mapper (``sw.mapper.search``: the same budget,
objective and resource model, and on the iCE40UP5K the same choice of organisation: an
engine per chunk, or the small organisation with one shared engine and SPRAM memories);
the mul-only one gets only a CLP chunk because its network has only multiplications.
Printed per design: integer accuracy (the bundled ``archs/<net>/quant_report.json``), the
organisation, lanes, image slots, cycles per image (the pipeline interval), images/s at
the family's fmax, energy per image (45 nm model), predicted resources (block RAM +
SPRAM); then the ratios hybrid / mul-only. ``--measure N`` also runs N test images of
each design on the RTL (``sim.network``, Verilator) and uses the measured cycles.
Target (issue 5): hybrid >= 1.5x the throughput of multiplier-only on iCE40UP5K and ECP5-85F.
"""
import argparse
import json
import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from sw import mapper  # noqa: E402
from sw import resources as R  # noqa: E402
from sw.golden import model as golden  # noqa: E402


def accuracy(net):
    try:
        rep = json.loads((REPO / "archs" / net / "quant_report.json").read_text())
    except FileNotFoundError:
        return None
    return (rep.get("qat") or rep["ptq"])["integer_acc"]


def measure(net, board, cfg, images):
    """Cycles per image of ``cfg`` running ``net`` on the RTL (Verilator, streaming run)."""
    out = REPO / "build" / "nasa" / f"{net}-{board}"
    out.mkdir(parents=True, exist_ok=True)
    cfg.save(out / "accel.json")
    run = subprocess.run([sys.executable, "-m", "sim.network", "--qmodel",
                          str(REPO / "archs" / net / "qmodel.npz"), "--accel",
                          str(out / "accel.json"), "--images", str(images)],
                         cwd=REPO, capture_output=True, text=True)
    found = re.search(r"(\d+) cycles per image with", run.stdout)
    if run.returncode or not found:
        sys.exit(f"error: RTL simulation of {net} on {board} failed: "
                 f"{(run.stderr or run.stdout).strip()[-300:]}")
    return int(found.group(1))


def design(net, board, objective, images, headroom=None, min_util=mapper.MIN_UTIL,
           routable=True):
    qm = golden.load(REPO / "archs" / net / "qmodel.npz")
    try:
        p = mapper.search(qm, board, objective, headroom, min_util=min_util,
                          routable=routable)
    except mapper.MapError as e:
        return {"net": net, "fits": False, "why": str(e)}
    cfg = mapper.point_config(qm, p)
    cycles = measure(net, board, cfg, images) if images else p.cycles
    fmax = R.fmax_mhz(board)
    return {"net": net, "fits": True, "acc": accuracy(net), "lanes": p.lanes,
            "org": p.organisation, "word": p.word_bytes,
            "slots": p.slots, "util": p.utilisation, "cycles": cycles, "measured": bool(images),
            "ips": fmax * 1e6 / cycles, "uj": p.energy_pj / 1e6, "use": p.usage}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--boards", nargs="+", default=["icebreaker", "ulx3s-85f"],
                    choices=list(R.BOARD_PART))
    ap.add_argument("--objective", default="latency", choices=mapper.OBJECTIVES)
    ap.add_argument("--hybrid", default="default")
    ap.add_argument("--baseline", default="all-conv")
    ap.add_argument("--headroom", type=float, default=None,
                    help="share of logic, FFs and block RAM kept free (default: the "
                         "mapper's, 0.05 on the iCE40 and 0.1 on the ECP5)")
    ap.add_argument("--min-util", type=float, default=mapper.MIN_UTIL,
                    help="the mapper's utilisation floor for both designs (default 0.7)")
    ap.add_argument("--unroutable", dest="routable", action="store_false",
                    help="lift the mapper's limits of what nextpnr routes (sw.resources."
                         "ROUTABLE) for both designs")
    ap.add_argument("--measure", type=int, default=0, metavar="N",
                    help="measure cycles on the RTL with N test images (Verilator)")
    args = ap.parse_args(argv)
    print("| board | design | net (integer acc.) | organisation | lanes CLP/SLP/ALP | word B "
          "| slots | cycles/image | PE util. by work | images/s | energy uJ/image | logic | FFs "
          "| DSP | BRAM | SPRAM |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    ratios = []
    for board in args.boards:
        rows = {}
        for label, net in (("hybrid", args.hybrid), ("mul-only", args.baseline)):
            d = rows[label] = design(net, board, args.objective, args.measure, args.headroom,
                                     args.min_util, args.routable)
            if not d["fits"]:
                print(f"| {board} | {label} | {net} | does not fit: {d['why']} |")
                continue
            acc = f"{d['acc']:.2%}" if d["acc"] is not None else "?"
            u = d["use"]
            print(f"| {board} @ {R.fmax_mhz(board):g} MHz | {label} | {net} ({acc}) | "
                  f"{d['org']} | " + "/".join(str(d["lanes"][c]) for c in mapper.CHUNKS)
                  + f" | {d['word']} | {d['slots']} | {d['cycles']}"
                  f"{' (RTL)' if d['measured'] else ''} | {d['util']:.1%} | {d['ips']:.1f} | "
                  f"{d['uj']:.2f} | "
                  f"{u['logic']} | {u['ffs']} | {u['dsp']} | {u['bram']} | {u['spram']} |")
        h, m = rows["hybrid"], rows["mul-only"]
        if h["fits"] and m["fits"]:
            ratios.append((board, h["ips"] / m["ips"], m["uj"] / h["uj"],
                           h["use"]["logic"] / m["use"]["logic"]))
    print()
    for board, speed, energy, logic in ratios:
        verdict = "meets" if speed >= 1.5 else "misses"
        print(f"{board}: hybrid throughput {speed:.2f}x mul-only ({verdict} the 1.5x target), "
              f"energy per image {energy:.2f}x lower, logic {logic:.2f}x")
    missing = [b for b in args.boards if b not in {r[0] for r in ratios}]
    if missing:
        print(f"no comparison on {', '.join(missing)}: a design does not fit (see the table)")
    return 0 if not missing and all(r[1] >= 1.5 for r in ratios) else 1


if __name__ == "__main__":
    sys.exit(main())
