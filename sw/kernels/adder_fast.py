"""Fast adder kernels: a C++ extension (adder_cpu.cpp) built on first use and cached per machine.

The extension computes the forward pass and the AdderNet input gradient; the weight gradient
``sum gy * (x - w)`` is conv2d's weight gradient minus ``w * sum(gy)``, so it uses ATen's
convolution backward. Build cache: ``$TORCH_EXTENSIONS_DIR`` or ``~/.cache/nasa-fpga-kernels``,
one build per ISA level (sse2 / avx2 / avx512), torch and Python version.
"""
import functools
import os
import shutil
import sys
from pathlib import Path

import numpy as np
import torch

_SRC = Path(__file__).with_name("adder_cpu.cpp")


def _isa():
    """(tag, compiler flags, vector width in floats) for the best ISA this CPU has."""
    try:
        flags = set(Path("/proc/cpuinfo").read_text().split())
    except OSError:
        flags = set()
    if {"avx512f", "avx512dq", "avx512vl", "fma"} <= flags:
        return "avx512", ["-mavx512f", "-mavx512dq", "-mavx512vl", "-mavx2", "-mfma"], 16
    if {"avx2", "fma"} <= flags:
        return "avx2", ["-mavx2", "-mfma"], 8
    return "sse2", [], 4


def build_dir(tag):
    """Per-machine cache directory of the extension build."""
    root = os.environ.get("TORCH_EXTENSIONS_DIR") or Path.home() / ".cache" / "nasa-fpga-kernels"
    torch_ver = torch.__version__.split("+")[0].replace(".", "_")
    path = Path(root) / f"nasa_adder_{tag}_torch{torch_ver}_py{sys.version_info[0]}{sys.version_info[1]}"
    path.mkdir(parents=True, exist_ok=True)
    return path


@functools.cache
def extension():
    """Build (once per machine) and load the C++ ops; returns ``torch.ops.nasa_adder``.
    Raises when it cannot be built."""
    from torch.utils.cpp_extension import load

    cxx = os.environ.get("CXX", "c++")
    if shutil.which(cxx) is None:
        raise RuntimeError(f"C++ compiler {cxx!r} not found")
    tag, flags, vw = _isa()
    load(name=f"nasa_adder_{tag}", sources=[str(_SRC)],
         extra_cflags=["-O3", "-fopenmp", f"-DVW={vw}", *flags], extra_ldflags=["-fopenmp"],
         build_directory=str(build_dir(tag)), is_python_module=False, verbose=False)
    return torch.ops.nasa_adder


def weight_grad(x, w, gy, stride, padding, groups):
    """AdderNet weight gradient sum gy * (x_pad - w): [O, C//groups, K, K]."""
    dw = torch.ops.aten.convolution_backward(
        gy, x, w, None, [stride] * 2, [padding] * 2, [1, 1], False, [0, 0], groups,
        [False, True, False])[1]
    return dw - w * gy.sum((0, 2, 3)).view(-1, 1, 1, 1)


class Adder2dFast(torch.autograd.Function):
    """Autograd wrapper of the C++ forward / input gradient (float32, CPU)."""

    @staticmethod
    def forward(ctx, x, w, stride, padding, groups):
        x, w = x.contiguous(), w.contiguous()
        ctx.save_for_backward(x, w)
        ctx.conf = (stride, padding, groups)
        return extension().forward(x, w, stride, padding, groups)

    @staticmethod
    def backward(ctx, gy):
        x, w = ctx.saved_tensors
        gy = gy.contiguous()
        dx = extension().grad_input(x, w, gy, *ctx.conf) if ctx.needs_input_grad[0] else None
        dw = weight_grad(x, w, gy, *ctx.conf) if ctx.needs_input_grad[1] else None
        return dx, dw, None, None, None


def adder2d(x, w, stride=1, padding=0, groups=1):
    """Adder convolution, x [N, C, H, W], w [O, C//groups, K, K] -> [N, O, OH, OW]."""
    return Adder2dFast.apply(x, w, stride, padding, groups)


def adder_linear(x, w, block=64):
    """Adder fully connected layer, x [N, I], w [O, I] -> [N, O].

    Rows of x are regrouped into pointwise "images" of ``block`` pixels [N/block, I, 1, block]
    so the vectorised pixel axis is the batch (differentiable view/pad ops around adder2d)."""
    n, i = x.shape
    b = min(block, -(-n // 16) * 16)
    pad = -n % b
    xb = torch.nn.functional.pad(x, (0, 0, 0, pad)).view(-1, b, i).transpose(1, 2)
    y = adder2d(xb.unsqueeze(2), w[:, :, None, None])
    return y.squeeze(2).transpose(1, 2).reshape(n + pad, -1)[:n]


@functools.cache
def load_error():
    """None when the extension builds and imports, else a one-line reason why not."""
    try:
        extension()
    except Exception as err:  # no compiler, no ninja, failed build, ...
        lines = [ln.strip() for ln in str(err).splitlines() if ln.strip()] or [""]
        diagnostics = [ln for ln in lines if ": error:" in ln or ": fatal error:" in ln]
        return f"{type(err).__name__}: {(diagnostics or lines)[0]}"[:240]
    return None


def exact_int(x, w):
    """True when float32 sums of |x - w| over one output are exact for these integer arrays
    (every partial sum is then an integer below 2^24)."""
    def bound(a):
        return max(abs(int(a.min())), abs(int(a.max()))) if a.size else 0
    return w[0].size * (bound(x) + bound(w)) < 2 ** 24


def adder2d_int(x, w, stride=1, padding=0, groups=1):
    """Integer adder convolution through the float kernel, exact when ``exact_int(x, w)``:
    int numpy arrays x [N, C, H, W], w [O, C//groups, K, K] -> int64 [N, O, OH, OW]
    ``= -sum |x_pad - w|``. (numpy does the conversions: torch's small int ops are slow
    when other jobs load the cores.)"""
    xf = torch.from_numpy(np.ascontiguousarray(x, np.float32))
    wf = torch.from_numpy(np.ascontiguousarray(w, np.float32))
    return extension().forward(xf, wf, stride, padding, groups).numpy().astype(np.int64)
