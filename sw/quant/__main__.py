"""Quantise a trained network into its integer model (the hardware's golden model).

    python -m sw.quant --checkpoint build/default/train/checkpoint.pt --out archs/default/
    python -m sw.quant --arch archs/default/arch.json --checkpoint ... --out build/default/quant

Writes ``<out>/qmodel.npz`` (docs/integer-model.md) and ``<out>/quant_report.json`` (float,
fake-quant and integer test accuracy, argmax agreement, accumulator widths, clamp counts),
and prints the same. PTQ first; QAT fine-tuning (``--qat auto``) when the integer model
loses more than ``--qat-threshold`` points of test accuracy against the float network.
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parent.parent.parent


def build_parser():
    from .core import QConfig
    d = QConfig()
    ap = argparse.ArgumentParser(prog="python -m sw.quant", description=__doc__.split("\n")[0])
    ap.add_argument("--arch", default=None, help="arch.json (default: the checkpoint's); "
                    "must match the checkpoint")
    ap.add_argument("--checkpoint", default=None,
                    help="sw.train checkpoint (default build/<arch name>/train/checkpoint.pt)")
    ap.add_argument("--out", default=None, help="output dir (default build/<name>/quant)")
    ap.add_argument("--dataset", default=None, help="default: the one it was trained on")
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--calib", type=int, default=512, help="calibration images (training split)")
    ap.add_argument("--val", type=int, default=2000,
                    help="held-out training images to choose the percentile and PTQ vs QAT")
    ap.add_argument("--percentile", default="auto",
                    help="activation range percentile of |a|, or 'auto' (best of "
                         "99.5/99.7/99.9/99.99/99.999/max on the held-out images)")
    ap.add_argument("--exp-bits", type=int, default=d.exp_bits,
                    help="shift exponent bits (shifts 0 .. 2^bits - 1)")
    ap.add_argument("--qat", choices=("auto", "always", "never"), default="auto")
    ap.add_argument("--qat-threshold", type=float, default=0.5,
                    help="auto: fine-tune when float - integer test accuracy exceeds this "
                         "many points")
    ap.add_argument("--qat-epochs", type=float, default=1.0)
    ap.add_argument("--qat-lr", type=float, default=0.002,
                    help="peak learning rate of the fine-tune (cosine to 0)")
    ap.add_argument("--limit", type=int, default=0, help="evaluate on the first N test images")
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--seed", type=int, default=0)
    return ap


def _pct(x):
    return f"{100 * x:.2f}%"


def run(args, log):
    from sw import arch as arch_mod
    from sw.golden import model as gm
    from sw.train import load_data, load_model

    from . import pipeline
    from .core import QConfig
    from .graph import build_graph
    from .qat import qat_finetune

    t_start = time.perf_counter()
    arch_file = None
    if args.arch:
        arch_file = Path(args.arch)
        arch = arch_mod.load(arch_file)
    ckpt = Path(args.checkpoint) if args.checkpoint else \
        REPO / "build" / (arch.name if args.arch else "default") / "train" / "checkpoint.pt"
    net, ck_arch, state = load_model(ckpt)
    if args.arch and ck_arch.to_dict() != arch.to_dict():
        raise ValueError(f"{ckpt}: trained for architecture {ck_arch.name!r}, which differs "
                         f"from {arch_file}; pass the matching --arch")
    arch = ck_arch
    dataset = args.dataset or state.get("config", {}).get("dataset") or arch.dataset
    out = Path(args.out) if args.out else REPO / "build" / arch.name / "quant"
    log(f"{arch.name}: checkpoint {ckpt} (epoch {state.get('epoch')}), dataset {dataset}")

    tr_x, tr_y = load_data(dataset, "train", args.data_dir)
    te_x, te_y = load_data(dataset, "test", args.data_dir)
    if args.limit:
        te_x, te_y = te_x[:args.limit], te_y[:args.limit]

    cfg = QConfig(exp_bits=args.exp_bits)
    if args.percentile == "auto":
        percentiles = pipeline.PERCENTILES
    else:
        cfg.percentile = float(args.percentile)
        percentiles = (cfg.percentile,)
    log("PTQ: calibrating activation ranges")
    nodes, tq, cfg, info = pipeline.quantize(net, tr_x, tr_y, cfg, args.calib, args.val,
                                             percentiles, args.seed, log)
    meta = {"name": arch.name, "dataset": dataset, "arch": arch.to_dict(),
            "source": {"checkpoint": str(ckpt), "epoch": state.get("epoch")}}
    qm = pipeline.build_qmodel(nodes, tq, cfg, dict(meta, method="ptq"))
    log(f"PTQ (percentile {cfg.percentile}) on {len(te_y)} test images:")
    ev_ptq = pipeline.evaluate_all(nodes, tq, cfg, qm, te_x, te_y, log)
    report = {"arch": arch.name, "dataset": dataset, "checkpoint": str(ckpt),
              "calibration": info, "ptq": ev_ptq, "qat": None, "method": "ptq"}
    final = (nodes, tq, qm, ev_ptq)

    gap = ev_ptq["float_acc"] - ev_ptq["integer_acc"]
    if args.qat == "always" or (args.qat == "auto" and gap * 100 > args.qat_threshold):
        log(f"QAT: integer model is {100 * gap:.2f} points below float; fine-tuning "
            f"{args.qat_epochs:g} epoch(s) through the fake-quantised graph")
        net2 = copy.deepcopy(net)
        nodes2 = build_graph(net2)
        ci, vi = pipeline.split_calibration(len(tr_y), args.calib, args.val, args.seed)
        mask = np.ones(len(tr_y), bool)
        mask[vi] = False                                  # keep the held-out images out
        epochs = max(1, int(np.ceil(args.qat_epochs)))
        steps = int(args.qat_epochs * np.ceil(mask.sum() / 128))
        hist = qat_finetune(net2, nodes2, tq, cfg, tr_x[mask], tr_y[mask], epochs=epochs,
                            lr=args.qat_lr, seed=args.seed, flip=dataset == "fashion-mnist",
                            log=log, max_steps=steps)
        qm2 = pipeline.build_qmodel(nodes2, tq, cfg, dict(meta, method="qat"))
        v_ptq = float((pipeline.predict_fakequant(nodes, tq, cfg, tr_x[vi], dtype=torch.float32)
                       == tr_y[vi]).mean())
        v_qat = float((pipeline.predict_fakequant(nodes2, tq, cfg, tr_x[vi], dtype=torch.float32)
                       == tr_y[vi]).mean())
        log(f"QAT on {len(te_y)} test images (held-out training accuracy: PTQ {_pct(v_ptq)}, "
            f"QAT {_pct(v_qat)}):")
        ev_qat = pipeline.evaluate_all(nodes2, tq, cfg, qm2, te_x, te_y, log)
        ev_qat["float_acc_after_qat"] = ev_qat.pop("float_acc")
        ev_qat["float_acc"] = ev_ptq["float_acc"]
        report["qat"] = dict(ev_qat, history=hist, epochs=args.qat_epochs, lr=args.qat_lr,
                             val_acc={"ptq": v_ptq, "qat": v_qat})
        if v_qat >= v_ptq:
            final = (nodes2, tq, qm2, ev_qat)
            report["method"] = "qat"
            qat_ckpt = out / "qat_checkpoint.pt"
            qat_ckpt.parent.mkdir(parents=True, exist_ok=True)
            torch.save({"arch": arch.to_dict(), "model": net2.state_dict(),
                        "quant": cfg.to_dict()}, qat_ckpt)
            report["qat"]["checkpoint"] = str(qat_ckpt)
        else:
            log("QAT did not improve the held-out accuracy; keeping the PTQ model")

    nodes, tq, qm, ev = final
    out.mkdir(parents=True, exist_ok=True)
    path = qm.save(out / "qmodel.npz")
    qm = gm.load(path)                      # round trip + overflow proof
    layers = []
    for L in qm.layers:
        layers.append({k: L.get(k) for k in ("name", "type", "op", "acc_bits",
                                              "acc_bits_generic", "rq_bits", "S", "acc_min",
                                              "acc_max", "w_clamped", "w_total", "m_clipped")})
    report.update(
        float_acc=ev["float_acc"], fakequant_acc=ev["fakequant_acc"],
        integer_acc=ev["integer_acc"], agree_int_fakequant=ev["agree_int_fakequant"],
        agree_int_float=ev["agree_int_float"], test_images=ev["images"],
        qmodel=str(path), qmodel_bytes=path.stat().st_size,
        weights=int(sum(L["w_total"] for L in qm.layers)),
        acc_bits_max=max(L["acc_bits"] for L in qm.layers),
        rq_bits_max=max(L["rq_bits"] for L in qm.layers),
        adder_weights_clamped=int(sum(L["w_clamped"] for L in qm.layers
                                      if L.get("op") == "adder")),
        shift_exponents_capped=int(sum(L["w_clamped"] for L in qm.layers
                                       if L.get("op") == "shift")),
        quant=cfg.to_dict(), layers=layers, seconds=time.perf_counter() - t_start)
    (out / "quant_report.json").write_text(json.dumps(report, indent=1) + "\n")
    log("\n".join(gm.summary(qm)))
    log(f"done ({report['method'].upper()}): float {_pct(report['float_acc'])}, fake-quant "
        f"{_pct(report['fakequant_acc'])}, integer {_pct(report['integer_acc'])} on "
        f"{report['test_images']} {dataset} test images; int/fake-quant agreement "
        f"{_pct(report['agree_int_fakequant'])}; accumulators <= {report['acc_bits_max']} "
        f"bits (proved); adder weights clamped {report['adder_weights_clamped']}, shift "
        f"exponents capped {report['shift_exponents_capped']}; wrote {path} "
        f"({report['qmodel_bytes']} bytes) and {out / 'quant_report.json'}")
    return report


def main(argv=None):
    args = build_parser().parse_args(argv)
    from sw.arch import ArchError
    from sw.datasets import DatasetError
    from sw.golden.model import QModelError
    from sw.train import CheckpointError
    try:
        if args.threads < 1 or args.calib < 1 or args.val < 0 or args.limit < 0:
            raise ValueError("--threads/--calib must be >= 1, --val/--limit >= 0")
        if args.percentile != "auto":
            try:
                p = float(args.percentile)
            except ValueError:
                raise ValueError(f"--percentile {args.percentile!r}: expected a number or "
                                 "'auto'") from None
            if not 50 <= p <= 100:
                raise ValueError("--percentile must be in [50, 100]")
        if not 1 <= args.exp_bits <= 5:
            raise ValueError("--exp-bits must be in 1..5")
        torch.set_num_threads(args.threads)
        run(args, lambda s: print(s, flush=True))
    except (ArchError, CheckpointError, DatasetError, QModelError, ValueError, OSError) as e:
        print(f"error: {str(e).splitlines()[0] if str(e) else type(e).__name__}",
              file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
