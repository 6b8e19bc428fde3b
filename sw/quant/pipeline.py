"""PTQ (+ QAT when needed) of a trained network and the evaluation figures of the report."""
from __future__ import annotations

import copy
import time

import numpy as np
import torch

from sw.golden import model as gm

from .core import QConfig, calibrate, export, fakequant_forward, make_scales, pixels_to_q
from .graph import build_graph, float_forward

PERCENTILES = (99.5, 99.7, 99.9, 99.99, 99.999, 100.0)


@torch.no_grad()
def predict_float(nodes, images, batch=500):
    """Class predictions of the float network on pixel / 255 (as trained)."""
    out = []
    for i in range(0, len(images), batch):
        x = torch.as_tensor(np.asarray(images[i:i + batch])).float()[:, None] / 255.0
        out.append(float_forward(nodes, x).argmax(1).numpy())
    return np.concatenate(out) if out else np.zeros(0, np.int64)


@torch.no_grad()
def predict_fakequant(nodes, tq, cfg, images, batch=500, exact=True, dtype=None):
    out = []
    for i in range(0, len(images), batch):
        xq = pixels_to_q(images[i:i + batch], cfg.pixel_shift)
        out.append(fakequant_forward(nodes, tq, xq, cfg, exact=exact, dtype=dtype)
                   .argmax(1).numpy())
    return np.concatenate(out) if out else np.zeros(0, np.int64)


def split_calibration(n_train, calib_n, val_n, seed=0):
    """Disjoint random (calibration, validation) index sets of the training split."""
    perm = np.random.default_rng(seed).permutation(n_train)
    return perm[:calib_n], perm[calib_n:calib_n + val_n]


def quantize(net, train_images, train_labels, cfg=None, calib_n=512, val_n=2000,
             percentiles=PERCENTILES, seed=0, log=print):
    """Post-training quantisation: calibrate activation ranges on ``calib_n`` training
    images for each candidate percentile, keep the one whose fake-quantised accuracy on
    ``val_n`` other training images is best. Returns (nodes, tq, cfg, info)."""
    cfg = copy.deepcopy(cfg or QConfig())
    net.eval()
    nodes = build_graph(net)
    ci, vi = split_calibration(len(train_labels), calib_n, val_n, seed)
    t = time.perf_counter()
    if cfg.percentile not in percentiles and len(percentiles) == 1:
        percentiles = (cfg.percentile,)
    amax = calibrate(nodes, train_images[ci], cfg, percentiles)
    table = {}
    best = None
    for p in percentiles:
        tq = make_scales(nodes, amax[p], cfg)
        if len(percentiles) == 1 or val_n == 0:
            best = (p, tq)
            break
        pred = predict_fakequant(nodes, tq, cfg, train_images[vi], dtype=torch.float32)
        acc = float((pred == np.asarray(train_labels[vi])).mean())
        table[str(p)] = acc
        log(f"  calibration percentile {p}: fake-quant accuracy {100 * acc:.2f}% on "
            f"{len(vi)} held-out training images")
        if best is None or acc > table[str(best[0])]:
            best = (p, tq)
    cfg.percentile = best[0]
    info = {"calib_images": int(len(ci)), "val_images": int(len(vi)),
            "percentile": best[0], "percentile_val_acc": table,
            "calib_seconds": time.perf_counter() - t}
    return nodes, best[1], cfg, info


def build_qmodel(nodes, tq, cfg, meta):
    return export(nodes, tq, cfg, meta)


def evaluate_all(nodes, tq, cfg, qm, images, labels, log=print):
    """Float, fake-quant and integer accuracy on (images, labels), and argmax agreement."""
    labels = np.asarray(labels)
    t = time.perf_counter()
    pf = predict_float(nodes, images)
    t_float = time.perf_counter() - t
    t = time.perf_counter()
    pq = predict_fakequant(nodes, tq, cfg, images)
    t_fq = time.perf_counter() - t
    t = time.perf_counter()
    pi = gm.predict(qm, images)
    t_int = time.perf_counter() - t
    out = {
        "images": int(len(labels)),
        "float_acc": float((pf == labels).mean()),
        "fakequant_acc": float((pq == labels).mean()),
        "integer_acc": float((pi == labels).mean()),
        "agree_int_fakequant": float((pi == pq).mean()),
        "agree_int_float": float((pi == pf).mean()),
        "seconds": {"float": t_float, "fakequant": t_fq, "integer": t_int},
    }
    log(f"  float {100 * out['float_acc']:.2f}%  fake-quant {100 * out['fakequant_acc']:.2f}%"
        f"  integer {100 * out['integer_acc']:.2f}%  (int/fake-quant argmax agreement "
        f"{100 * out['agree_int_fakequant']:.2f}%, int/float {100 * out['agree_int_float']:.2f}%;"
        f" integer pass {t_int:.0f} s)")
    return out
