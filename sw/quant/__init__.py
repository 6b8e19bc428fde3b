"""Quantisation of trained hybrid networks to the integer contract (docs/integer-model.md).

    from sw.quant import quantize, export, fakequant_forward
    nodes, tq, cfg, info = quantize(net, train_images, train_labels)   # PTQ calibration
    qm = export(nodes, tq, cfg, {"name": "default"})                    # sw.golden QModel
    qm.save("archs/default/qmodel.npz")

Command line: ``python -m sw.quant --checkpoint build/<name>/train/checkpoint.pt --out DIR``.
"""
from .core import (QConfig, TQ, calibrate, export, fakequant_forward, make_scales,
                   pixels_to_q, quant_layer)
from .graph import Node, build_graph, float_forward
from .pipeline import evaluate_all, predict_fakequant, predict_float, quantize
from .qat import qat_finetune

__all__ = ["QConfig", "TQ", "calibrate", "export", "fakequant_forward", "make_scales",
           "pixels_to_q", "quant_layer", "Node", "build_graph", "float_forward",
           "evaluate_all", "predict_fakequant", "predict_float", "quantize", "qat_finetune"]
