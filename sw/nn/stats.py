"""Counting: parameters and multiply(-free) accumulates per operator kind."""
from __future__ import annotations

import torch

from .ops import KINDS, HybridOp, hybrid_ops


def count_params(model):
    """Parameters by kind: operator weights per kind, plus 'other' (BN, biases); 'total'."""
    out = {k: 0 for k in KINDS}
    op_weights = set()
    for _, m in hybrid_ops(model):
        out[m.kind] += m.weight.numel()
        op_weights.add(id(m.weight))
    out["other"] = sum(p.numel() for p in model.parameters() if id(p) not in op_weights)
    out["total"] = sum(p.numel() for p in model.parameters())
    return out


@torch.no_grad()
def count_macs_by_kind(model, input_shape=(1, 28, 28)):
    """Accumulations per image by operator kind, measured by running one dummy image.

    Returns {"conv": n, "shift": n, "adder": n, "total": n, "mult_free_share": f,
    "layers": [(name, kind, macs), ...]}."""
    layers = []
    hooks = []
    for name, m in hybrid_ops(model):
        def hook(mod, inp, out, name=name):
            x = inp[0]
            if x.dim() == 2:
                h = w = 1
            else:
                h, w = x.shape[2:]
            layers.append((name, mod.kind, mod.macs_per_image(h, w)))
        hooks.append(m.register_forward_hook(hook))
    was_training = model.training
    model.eval()
    try:
        p = next(model.parameters())
        model(torch.zeros((1, *input_shape), dtype=p.dtype, device=p.device))
    finally:
        for h in hooks:
            h.remove()
        model.train(was_training)
    out = {k: 0 for k in KINDS}
    for _, kind, macs in layers:
        out[kind] += macs
    out["total"] = sum(out[k] for k in KINDS)
    out["mult_free_share"] = (out["shift"] + out["adder"]) / out["total"] if out["total"] else 0.0
    out["layers"] = layers
    return out


__all__ = ["count_params", "count_macs_by_kind", "HybridOp"]
