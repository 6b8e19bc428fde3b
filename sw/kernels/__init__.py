"""CPU kernels of the adder operator (AdderNet): float training path and integer inference path.

``adder2d(x, w, stride, padding, groups)`` and ``adder_linear(x, w)`` are autograd-aware with
the AdderNet gradients; see ``adder_ref`` for the exact definition.
"""
from .adder_ref import adder2d, adder2d_int, adder_linear

__all__ = ["adder2d", "adder_linear", "adder2d_int"]
