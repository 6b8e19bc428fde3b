"""Fashion-MNIST accuracy of the bundled nets, float and integer, in one table (issue 3's figures).

Run: .venv/bin/python bench/accuracy.py [--nets all-conv,default] [--train EPOCHS] [--threads N]
                                        [--dataset mnist]

It reads existing reports; it does not train unless asked. Per net: the bundled reports
archs/<net>/{train_report,quant_report}.json (archs/<net>/<dataset>/ for a dataset other
than fashion-mnist) when both exist for the dataset (--no-bundled skips them), else <build>/<net>/train/report.json (sw.train) and
<build>/<net>/quant/quant_report.json (sw.quant); <build>/<net>-<dataset>/ for a --dataset
other than fashion-mnist. With --train EPOCHS, every selected net without reports is first
trained (sw.train --resume, so an interrupted run continues) and quantised (sw.quant: PTQ,
QAT when the integer model loses > 0.5 point), one net after the other.

Targets (issue 3): all-conv >= 91%; default within 1 point of all-conv; integer within 0.5
point of float; on MNIST, default >= 99.0%. Exit status 1 when a selected net has no report
(the table shows the nets that have them).
"""
import argparse
import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
NETS = ("all-conv", "all-shift", "all-adder", "default")
DATASET = "fashion-mnist"     # --dataset changes it


def rel(p):
    try:
        return str(Path(p).resolve().relative_to(REPO))
    except ValueError:
        return str(p)


def out_dir(net, build):
    return build / (net if DATASET == "fashion-mnist" else f"{net}-{DATASET}")


def report_paths(net, build, bundled=True):
    """(train report, quant report) this net is read from."""
    arch_dir = REPO / "archs" / net / ("" if DATASET == "fashion-mnist" else DATASET)
    t, q = arch_dir / "train_report.json", arch_dir / "quant_report.json"
    if bundled and t.exists() and q.exists() and load(t).get("dataset") == DATASET:
        return t, q
    out = out_dir(net, build)
    return out / "train" / "report.json", out / "quant" / "quant_report.json"


def load(path):
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return None


def run(cmd):
    print("$ " + " ".join(cmd), flush=True)
    rc = subprocess.call(cmd, cwd=REPO)
    if rc:
        sys.exit(f"error: {cmd[2]} exited with status {rc}")


def train_missing(nets, build, epochs, threads, bundled):
    py = sys.executable
    for i, net in enumerate(nets, 1):
        t, q = report_paths(net, build, bundled)
        if t.exists() and q.exists():
            continue
        print(f"[{i}/{len(nets)}] {net}", flush=True)
        out = out_dir(net, build)
        if not t.exists():
            run([py, "-m", "sw.train", "--arch", net, "--dataset", DATASET, "--epochs",
                 str(epochs), "--threads", str(threads), "--resume", "--out", str(out / "train")])
        if not q.exists():
            run([py, "-m", "sw.quant", "--checkpoint", str(out / "train" / "checkpoint.pt"),
                 "--threads", str(threads), "--out", str(out / "quant")])


def rows(nets, build, bundled):
    """One dict per net (None fields where a report is missing) and a list of problems."""
    out, problems = [], []
    for net in nets:
        tp, qp = report_paths(net, build, bundled)
        tr, qr = load(tp), load(qp)
        row = dict(net=net, params=None, share=None, epochs=None, spe=None, flt=None,
                   int=None, method=None, src=rel(tp.parent))
        if tr is None:
            problems.append(f"{net}: no training report {rel(tp)}; run with --train EPOCHS "
                            f"(or: python -m sw.train --arch {net} --dataset {DATASET} "
                            f"--out {rel(tp.parent)})")
        elif tr.get("dataset") != DATASET:
            problems.append(f"{net}: {rel(tp)} is for {tr.get('dataset')}, not {DATASET}")
            tr = qr = None
        else:
            row.update(params=tr["params"]["total"], share=tr["mult_free_share"],
                       epochs=tr["epochs"], spe=tr["seconds_per_epoch"], flt=tr["test_accuracy"])
        if tr is not None and qr is None:
            problems.append(f"{net}: no quantisation report {rel(qp)}; run with --train EPOCHS "
                            f"(or: python -m sw.quant --checkpoint {rel(tp.parent)}/checkpoint.pt"
                            f" --out {rel(qp.parent)})")
        elif qr is not None:
            row.update(flt=qr["float_acc"], int=qr["integer_acc"], method=qr["method"])
        out.append(row)
    return out, problems


def fmt(x, spec, scale=1.0):
    return "-" if x is None else format(x * scale if scale != 1.0 else x, spec)


def table(rs):
    ref = next((r for r in rs if r["net"] == "all-conv" and r["flt"] is not None), None)
    head = ("net", "params", "MACs on shift/adder", "epochs", "s/epoch", "float",
            "integer", "float-int (pt)", "float vs all-conv (pt)")
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rs:
        gap = None if r["flt"] is None or r["int"] is None else r["flt"] - r["int"]
        vs = None if ref is None or r["flt"] is None else r["flt"] - ref["flt"]
        cells = (r["net"], fmt(r["params"], ","), fmt(r["share"], ".1%"),
                 fmt(r["epochs"], "d"), fmt(r["spe"], ".0f"), fmt(r["flt"], ".2%"),
                 fmt(r["int"], ".2%") + (f" ({r['method'].upper()})" if r["method"] else ""),
                 fmt(gap, "+.2f", 100), fmt(vs, "+.2f", 100))
        lines.append("| " + " | ".join(cells) + " |")
    return lines, ref


def targets(rs, ref):
    by = {r["net"]: r for r in rs}
    out = []
    d = by.get("default")
    if DATASET == "mnist" and d and d["flt"] is not None:
        out.append(f"default >= 99.0% on MNIST: {'yes' if d['flt'] >= 0.99 else 'NO'} "
                   f"({d['flt']:.2%})")
    if ref is not None and DATASET == "fashion-mnist":
        out.append(f"all-conv >= 91%: {'yes' if ref['flt'] >= 0.91 else 'NO'} "
                   f"({ref['flt']:.2%})")
        if d and d["flt"] is not None:
            gap = 100 * (ref["flt"] - d["flt"])
            out.append(f"default within 1 point of all-conv: {'yes' if gap <= 1 else 'NO'} "
                       f"(default - all-conv = {-gap:+.2f} points; epochs {d['epochs']} vs "
                       f"{ref['epochs']})")
    for r in rs:
        if r["flt"] is not None and r["int"] is not None:
            gap = 100 * (r["flt"] - r["int"])
            out.append(f"{r['net']}: integer within 0.5 point of float: "
                       f"{'yes' if gap <= 0.5 else 'NO'} ({gap:+.2f})")
    return out


def main(argv=None):
    global DATASET
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--nets", default=",".join(NETS),
                    help=f"comma-separated subset of {','.join(NETS)}")
    ap.add_argument("--train", type=int, metavar="EPOCHS",
                    help="first train + quantise every selected net that has no report")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--dataset", default=DATASET, choices=("fashion-mnist", "mnist", "synthetic"),
                    help="default fashion-mnist ('synthetic': smoke test of --train)")
    ap.add_argument("--build", default="build", help="build directory (default build/)")
    ap.add_argument("--no-bundled", action="store_true",
                    help="ignore archs/<net>/*_report.json, read <build>/<net>/ only")
    args = ap.parse_args(argv)
    DATASET = args.dataset
    nets = [n.strip() for n in args.nets.split(",") if n.strip()]
    bad = [n for n in nets if not (REPO / "archs" / n / "arch.json").exists()]
    if bad or not nets:
        ap.error(f"--nets: unknown net(s) {', '.join(bad) or '(none)'}; bundled: "
                 f"{', '.join(sorted(p.parent.name for p in REPO.glob('archs/*/arch.json')))}")
    if args.train is not None and args.train < 1:
        ap.error("--train EPOCHS must be >= 1")
    build = (REPO / args.build).resolve()
    bundled = not args.no_bundled

    if args.train:
        train_missing(nets, build, args.train, args.threads, bundled)

    rs, problems = rows(nets, build, bundled)
    lines, ref = table(rs)
    print(f"{DATASET} test accuracy; float = trained checkpoint, integer = sw.golden integer "
          f"model")
    print("\n".join(lines))
    print("reports: " + "; ".join(f"{r['net']}: {r['src']}" for r in rs))
    for t in targets(rs, ref):
        print("  " + t)
    for p in problems:
        print("error: " + p, file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
