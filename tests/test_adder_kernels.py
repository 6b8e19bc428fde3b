"""Adder kernels: reference vs naive loops, AdderNet gradients (gradcheck against explicit
surrogate formulas), fast path vs reference, fallback, integer path."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from sw.kernels import adder_ref as ref

# (C, O, K, stride, padding, groups) on odd spatial sizes
SHAPES = [
    (5, 7, 1, 1, 0, 1),    # pointwise
    (6, 6, 3, 1, 1, 6),    # depthwise
    (6, 12, 3, 2, 1, 6),   # depthwise, channel multiplier 2
    (4, 6, 3, 1, 1, 1),    # standard 3x3
    (4, 6, 3, 2, 2, 2),    # grouped, stride 2, padding 2
    (3, 5, 5, 1, 2, 1),    # 5x5
    (4, 3, 1, 2, 0, 1),    # strided pointwise
]


pytestmark = pytest.mark.usefixtures("one_thread")


def naive(x, w, stride, padding, groups, term=lambda d: d.abs()):
    """-sum term(x_pad - w) with explicit loops over output pixels (tiny shapes only)."""
    o, cg, k, _ = w.shape
    xp = F.pad(x, (padding,) * 4)
    oh = (x.shape[2] + 2 * padding - k) // stride + 1
    ow = (x.shape[3] + 2 * padding - k) // stride + 1
    rows = []
    for oo in range(o):
        g = oo // (o // groups)
        for i in range(oh):
            for j in range(ow):
                patch = xp[:, g * cg:(g + 1) * cg, i * stride:i * stride + k, j * stride:j * stride + k]
                rows.append(-term(patch - w[oo]).sum((1, 2, 3)))
    return torch.stack(rows, 1).view(x.shape[0], o, oh, ow)


def explicit(x, w, stride, padding, groups, term):
    """-sum term(x_pad - w) by unfolding and broadcasting: [N, O, OH, OW]."""
    o, cg, k, _ = w.shape
    cols = F.unfold(x, k, padding=padding, stride=stride)
    cols = cols.view(x.shape[0], groups, 1, cg * k * k, -1)
    wg = w.reshape(groups, o // groups, -1, 1)
    oh = (x.shape[2] + 2 * padding - k) // stride + 1
    return -term(cols - wg).sum(3).view(x.shape[0], o, oh, -1)


def huber(d):
    """Huber loss (delta 1): its derivative is HardTanh(d)."""
    return torch.where(d.abs() <= 1, 0.5 * d * d, d.abs() - 0.5)


def make(shape, n=2, h=7, wd=6, dtype=torch.float64, seed=0):
    c, o, k, _, _, g = shape
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, c, h, wd, generator=gen, dtype=dtype)
    w = torch.randn(o, c // g, k, k, generator=gen, dtype=dtype)
    return x, w


@pytest.mark.parametrize("shape", SHAPES)
def test_reference_forward_matches_naive(shape):
    x, w = make(shape)
    s, p, g = shape[3:]
    torch.testing.assert_close(ref.forward(x, w, s, p, g), naive(x, w, s, p, g))


class _Surrogate(torch.autograd.Function):
    """Forward: an explicit formula whose true derivative is the AdderNet gradient of one input;
    backward: the reference kernel's AdderNet gradient of that input."""

    @staticmethod
    def forward(ctx, x, w, conf, wrt):
        ctx.save_for_backward(x, w)
        ctx.conf, ctx.wrt = conf, wrt
        term = huber if wrt == "x" else (lambda d: 0.5 * d * d)
        return explicit(x, w, *conf, term)

    @staticmethod
    def backward(ctx, gy):
        dx, dw = ref.backward(*ctx.saved_tensors, gy, *ctx.conf)
        return (dx, None, None, None) if ctx.wrt == "x" else (None, dw, None, None)


@pytest.mark.parametrize("shape", SHAPES)
def test_reference_gradients_gradcheck(shape):
    x, w = make(shape, n=2, h=5, wd=4)
    conf = shape[3:]
    assert torch.autograd.gradcheck(
        lambda a: _Surrogate.apply(a, w, conf, "x"), (x.requires_grad_(),))
    assert torch.autograd.gradcheck(
        lambda b: _Surrogate.apply(x.detach(), b, conf, "w"), (w.requires_grad_(),))


def test_reference_autograd_uses_addernet_gradients():
    x, w = make(SHAPES[3])
    x.requires_grad_(), w.requires_grad_()
    gy = torch.randn(ref.forward(x, w, 1, 1, 1).shape, dtype=x.dtype)
    ref.adder2d(x, w, 1, 1, 1).backward(gy)
    dx, dw = ref.backward(x.detach(), w.detach(), gy, 1, 1, 1)
    torch.testing.assert_close(x.grad, dx)
    torch.testing.assert_close(w.grad, dw)


def test_reference_linear():
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(5, 7, generator=gen, dtype=torch.float64, requires_grad=True)
    w = torch.randn(3, 7, generator=gen, dtype=torch.float64, requires_grad=True)
    y = ref.adder_linear(x, w)
    torch.testing.assert_close(y, -(x[:, None] - w[None]).abs().sum(-1))
    gy = torch.randn(5, 3, generator=gen, dtype=torch.float64)
    y.backward(gy)
    torch.testing.assert_close(w.grad, torch.einsum("no,noi->oi", gy, x[:, None] - w[None]))
    torch.testing.assert_close(
        x.grad, torch.einsum("no,noi->ni", gy, (w[None] - x[:, None]).clamp(-1, 1)))


@pytest.mark.parametrize("shape", SHAPES)
def test_integer_reference_matches_float(shape):
    c, o, k, s, p, g = shape
    rng = np.random.default_rng(0)
    x = rng.integers(-128, 128, (2, c, 7, 6))
    w = rng.integers(-128, 128, (o, c // g, k, k))
    y = ref.adder2d_int(x, w, s, p, g)
    assert y.dtype == np.int64
    np.testing.assert_array_equal(y, naive(torch.tensor(x), torch.tensor(w), s, p, g).numpy())


# ---------------------------------------------------------------- fast path vs reference

FAST_SHAPES = SHAPES + [
    (8, 16, 3, 1, 0, 1),   # standard, no padding
    (6, 4, 3, 2, 1, 2),    # grouped, stride 2
    (9, 9, 5, 2, 2, 9),    # depthwise 5x5, stride 2
    (5, 5, 3, 1, 2, 5),    # depthwise, padding 2
    (3, 4, 2, 3, 1, 1),    # even kernel, stride 3
    (20, 37, 1, 1, 0, 1),  # pointwise, more rows than a register tile
]


@pytest.fixture(scope="module")
def fast():
    from sw.kernels import adder_fast
    if adder_fast.load_error():
        pytest.fail(f"C++ extension did not build: {adder_fast.load_error()}")
    return adder_fast


def run_both(fn_fast, fn_ref, x, w):
    """Outputs and AdderNet gradients of two implementations on the same inputs/grad."""
    results = []
    for fn in (fn_fast, fn_ref):
        a, b = x.clone().requires_grad_(), w.clone().requires_grad_()
        y = fn(a, b)
        y.backward(torch.linspace(-2, 2, y.numel()).view(y.shape))
        results.append((y.detach(), a.grad, b.grad))
    return results


def assert_close_sums(got, want, scale):
    """Equal to float32 rounding of sums whose terms are up to ``scale`` in magnitude."""
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5 * scale)


@pytest.mark.parametrize("shape", FAST_SHAPES)
@pytest.mark.parametrize("size", [(9, 11), (5, 4)])
def test_fast_matches_reference(fast, shape, size):
    x, w = make(shape, n=3, h=size[0], wd=size[1], dtype=torch.float32, seed=2)
    c, o, k, s, p, g = shape
    if (size[0] + 2 * p - k) < 0:
        pytest.skip("empty output")
    (y, dx, dw), (yr, dxr, dwr) = run_both(
        lambda a, b: fast.adder2d(a, b, s, p, g), lambda a, b: ref.adder2d(a, b, s, p, g), x, w)
    d = w[0].numel()
    assert_close_sums(y, yr, d * 4)
    assert_close_sums(dx, dxr, o * 2)
    assert_close_sums(dw, dwr, 3 * size[0] * size[1] * 8)


def test_fast_threaded_matches_reference(fast):
    shape = (6, 8, 3, 2, 1, 2)
    x, w = make(shape, n=7, h=9, wd=8, dtype=torch.float32, seed=5)
    torch.set_num_threads(2)
    try:
        (y, dx, dw), (yr, dxr, dwr) = run_both(
            lambda a, b: fast.adder2d(a, b, 2, 1, 2), lambda a, b: ref.adder2d(a, b, 2, 1, 2), x, w)
    finally:
        torch.set_num_threads(1)
    assert_close_sums(y, yr, 27 * 4)
    assert_close_sums(dx, dxr, 8 * 2)
    assert_close_sums(dw, dwr, 7 * 72 * 8)


@pytest.mark.parametrize("n", [1, 5, 64, 130])
def test_fast_linear_matches_reference(fast, n):
    gen = torch.Generator().manual_seed(n)
    x, w = torch.randn(n, 27, generator=gen), torch.randn(10, 27, generator=gen)
    (y, dx, dw), (yr, dxr, dwr) = run_both(fast.adder_linear, ref.adder_linear, x, w)
    assert_close_sums(y, yr, 27 * 4)
    assert_close_sums(dx, dxr, 10 * 2)
    assert_close_sums(dw, dwr, n * 8)


def test_dispatch_and_forced_reference(fast, monkeypatch):
    import sw.kernels as kernels
    x, w = make(SHAPES[3], dtype=torch.float32)
    monkeypatch.setenv(kernels.ENV, "fast")
    assert kernels.backend() == "fast"
    y_fast = kernels.adder2d(x, w, 1, 1, 1)
    monkeypatch.setenv(kernels.ENV, "ref")
    assert kernels.backend() == "ref"
    assert_close_sums(y_fast, kernels.adder2d(x, w, 1, 1, 1), 36 * 4)
    monkeypatch.setenv(kernels.ENV, "bogus")
    with pytest.raises(ValueError):
        kernels.backend()


def test_fallback_warns_once_when_build_fails(monkeypatch):
    import sw.kernels as kernels
    monkeypatch.delenv(kernels.ENV, raising=False)
    monkeypatch.setattr(kernels.adder_fast, "load_error", lambda: "RuntimeError: no compiler")
    monkeypatch.setattr(kernels, "_warned", [])
    x, w = make(SHAPES[1], dtype=torch.float32)
    with pytest.warns(RuntimeWarning, match="no compiler") as record:
        y = kernels.adder2d(x, w, 1, 1, 6)
        kernels.adder2d(x, w, 1, 1, 6)
    assert len(record) == 1
    torch.testing.assert_close(y, ref.forward(x, w, 1, 1, 6))
    monkeypatch.setenv(kernels.ENV, "fast")
    with pytest.raises(RuntimeError, match="no compiler"):
        kernels.adder2d(x, w, 1, 1, 6)


def test_fallback_without_compiler(tmp_path):
    """A real failed build (no compiler): one warning, reference results."""
    import os
    import subprocess
    import sys
    code = ("import torch, sw.kernels as k\n"
            "x, w = torch.randn(2, 3, 5, 5), torch.randn(4, 3, 3, 3)\n"
            "y = k.adder2d(x, w, 1, 1)\n"
            "torch.testing.assert_close(y, k.adder_ref.forward(x, w, 1, 1))\n"
            "k.adder_linear(torch.randn(2, 27), w.flatten(1))\n"
            "print(k.backend())\n")
    env = dict(os.environ, CXX=str(tmp_path / "no-such-g++"), TORCH_EXTENSIONS_DIR=str(tmp_path),
               NASA_ADDER_KERNEL="auto", PYTHONPATH=os.getcwd())
    run = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         timeout=120)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "ref"
    warnings = [ln for ln in run.stderr.splitlines() if "Warning" in ln]
    assert len(warnings) == 1 and "no-such-g++" in warnings[0], run.stderr


# ---------------------------------------------------------------- integer path

@pytest.mark.parametrize("shape", FAST_SHAPES)
def test_integer_path_bit_identical(shape):
    import sw.kernels as kernels
    c, o, k, s, p, g = shape
    rng = np.random.default_rng(3)
    x = rng.integers(0, 256, (2, c, 9, 11))        # uint8-valued activations
    w = rng.integers(-128, 128, (o, c // g, k, k))  # int8-valued weights
    want = ref.adder2d_int(x, w, s, p, g)
    got = kernels.adder2d_int(x, w, s, p, g)
    assert isinstance(got, np.ndarray) and got.dtype == np.int64
    np.testing.assert_array_equal(got, want)
    got_t = kernels.adder2d_int(torch.tensor(x, dtype=torch.int32), torch.tensor(w), s, p, g)
    assert got_t.dtype == torch.int64
    np.testing.assert_array_equal(got_t.numpy(), want)


def test_integer_path_large_values_stay_exact():
    import sw.kernels as kernels
    rng = np.random.default_rng(4)
    x = rng.integers(-2**22, 2**22, (1, 4, 5, 5))
    w = rng.integers(-2**22, 2**22, (3, 4, 3, 3))
    np.testing.assert_array_equal(kernels.adder2d_int(x, w, 1, 1), ref.adder2d_int(x, w, 1, 1))
