"""Hybrid (conv / shift / adder) network modules for training: operators, blocks, nets.

    from sw.nn import make_op, build_model
    from sw.arch import load
    model = build_model(load("archs/default/arch.json"), seed=0)
"""
from .blocks import InvertedResidual, OpBN, SkipBlock, make_block
from .net import Net, build_model
from .ops import (KINDS, AdderConv2d, AdderLinear, Conv2d, HybridOp, Linear, ShiftConv2d,
                  ShiftLinear, adaptive_grad_scale, hybrid_ops, make_linear, make_op,
                  shift_quantize, shift_quantize_ste, shift_sign_exponent)
from .stats import count_macs_by_kind, count_params

__all__ = [
    "KINDS", "HybridOp", "Conv2d", "ShiftConv2d", "AdderConv2d", "Linear", "ShiftLinear",
    "AdderLinear", "make_op", "make_linear", "hybrid_ops", "shift_quantize",
    "shift_quantize_ste", "shift_sign_exponent", "adaptive_grad_scale", "OpBN",
    "InvertedResidual", "SkipBlock", "make_block", "Net", "build_model", "count_params",
    "count_macs_by_kind",
]
