"""CPU kernels of the adder operator (AdderNet): float training path and integer inference path.

``adder2d(x, w, stride, padding, groups)`` and ``adder_linear(x, w)`` are autograd-aware with
the AdderNet gradients (see ``adder_ref`` for the exact definition); ``adder2d_int`` is the
integer inference path. float32 CPU tensors take the C++ kernels (``adder_fast``) unless
``$NASA_ADDER_KERNEL`` is ``ref``; ``fast`` makes a failed build an error, the default
``auto`` falls back to the reference with one warning.
"""
import os
import warnings

import numpy as np
import torch

from . import adder_fast, adder_ref

ENV = "NASA_ADDER_KERNEL"

__all__ = ["adder2d", "adder_linear", "adder2d_int", "backend", "ENV"]


def backend():
    """'fast' or 'ref': the path float32 CPU tensors take now."""
    mode = os.environ.get(ENV, "auto")
    if mode not in ("auto", "fast", "ref"):
        raise ValueError(f"{ENV}={mode!r}: expected auto, fast or ref")
    if mode == "ref":
        return "ref"
    error = adder_fast.load_error()
    if error is None:
        return "fast"
    if mode == "fast":
        raise RuntimeError(f"adder kernels: {ENV}=fast but the C++ extension failed: {error}")
    _warn_fallback(error)
    return "ref"


_warned = []


def _warn_fallback(error):
    if not _warned:
        _warned.append(error)
        warnings.warn(f"adder kernels: C++ extension unavailable ({error}); using the reference",
                      RuntimeWarning, stacklevel=3)


def _impl(*tensors):
    fast = all(t.dtype == torch.float32 and t.device.type == "cpu" for t in tensors)
    return adder_fast if fast and backend() == "fast" else adder_ref


def adder2d(x, w, stride=1, padding=0, groups=1):
    """Adder convolution, x [N, C, H, W], w [O, C//groups, K, K] -> [N, O, OH, OW]."""
    return _impl(x, w).adder2d(x, w, stride, padding, groups)


def adder_linear(x, w):
    """Adder fully connected layer, x [N, I], w [O, I] -> [N, O]."""
    return _impl(x, w).adder_linear(x, w)


def adder2d_int(x, w, stride=1, padding=0, groups=1):
    """Integer adder convolution, bit-identical to ``adder_ref.adder2d_int``.

    x [N, C, H, W], w [O, C//groups, K, K]: integer numpy arrays or CPU tensors (int8-valued
    in the golden model) -> int64 [N, O, OH, OW] = -sum |x_pad - w|, of the input's kind.
    Takes the float kernel when its sums are provably exact, else the int64 reference."""
    as_tensor = isinstance(x, torch.Tensor)
    xn = x.numpy() if as_tensor else np.asarray(x)
    wn = w.numpy() if isinstance(w, torch.Tensor) else np.asarray(w)
    if backend() == "fast" and adder_fast.exact_int(xn, wn):
        y = adder_fast.adder2d_int(xn, wn, stride, padding, groups)
    else:
        y = adder_ref.adder2d_int(xn, wn, stride, padding, groups)
    return torch.from_numpy(y) if as_tensor else y
