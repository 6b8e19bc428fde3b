"""Operators of sw.nn: values against naive references, gradients, shapes."""
import math

import pytest
import torch
import torch.nn.functional as F

from sw.nn import (AdderConv2d, AdderLinear, Conv2d, Linear, ShiftConv2d, ShiftLinear,
                   make_linear, make_op, shift_quantize, shift_sign_exponent)

torch.set_num_threads(1)


def naive_adder(x, w, stride=1, padding=0, groups=1):
    """y[n,o,i,j] = -sum |x_pad - w| with explicit loops (tiny shapes only)."""
    n, c, h, wd = x.shape
    o, cg, k, _ = w.shape
    xp = F.pad(x, (padding,) * 4)
    oh, ow = (h + 2 * padding - k) // stride + 1, (wd + 2 * padding - k) // stride + 1
    y = torch.zeros(n, o, oh, ow, dtype=x.dtype)
    og = o // groups
    for b in range(n):
        for oc in range(o):
            g = oc // og
            for i in range(oh):
                for j in range(ow):
                    patch = xp[b, g * cg:(g + 1) * cg, i * stride:i * stride + k,
                               j * stride:j * stride + k]
                    y[b, oc, i, j] = -(patch - w[oc]).abs().sum()
    return y


# ---------------------------------------------------------------- shift
def test_shift_quantize_values():
    w = torch.tensor([0.3, 0.36, -0.3, 5.0, -5.0, 0.005, 2.0 ** -9, 0.0, 2.0 ** -8, 0.75,
                      0.7, -2.0 ** -3])
    q = shift_quantize(w, -7, 0)
    expect = [0.25, 0.5, -0.25, 1.0, -1.0, 2.0 ** -7, 0.0, 0.0, 2.0 ** -7, 1.0, 0.5,
              -2.0 ** -3]
    assert q.tolist() == expect


@pytest.mark.parametrize("p_min,p_max", [(-7, 0), (-3, 2), (-15, -4), (0, 0)])
def test_shift_weights_exact_powers_of_two_in_range(p_min, p_max):
    torch.manual_seed(0)
    m = ShiftConv2d(8, 6, 3, padding=1, p_min=p_min, p_max=p_max)
    with torch.no_grad():
        m.weight.copy_(torch.randn_like(m.weight) * 4.0 ** torch.randn_like(m.weight))
    q = m.effective_weight()
    sign, exponent = m.sign_exponent()
    assert sign.dtype == torch.int8 and set(sign.unique().tolist()) <= {-1, 0, 1}
    nz = sign != 0
    assert exponent[nz].min() >= p_min and exponent[nz].max() <= p_max
    assert (exponent[~nz] == 0).all()
    # q is exactly sign * 2^p, and |w| >= 2^(p_min-1) exactly where sign != 0
    assert torch.equal(q, sign.float() * torch.exp2(exponent.float()))
    assert torch.equal(nz, m.weight.abs() >= 2.0 ** (p_min - 1))
    assert torch.equal(torch.sign(q[nz]), torch.sign(m.weight[nz]))
    # nearest in the log domain, within range
    p_float = torch.log2(m.weight.abs()[nz]).clamp(p_min, p_max)
    assert ((exponent[nz].float() - p_float).abs() <= 0.5 + 1e-6).all()


def test_shift_forward_and_straight_through_gradient():
    torch.manual_seed(1)
    m = ShiftConv2d(4, 5, 3, stride=2, padding=1, bias=True)
    x = torch.randn(2, 4, 9, 9, requires_grad=True)
    y = m(x)
    wq = m.effective_weight().clone().requires_grad_(True)
    x2 = x.detach().clone().requires_grad_(True)
    y_ref = F.conv2d(x2, wq, m.bias.detach(), 2, 1)
    assert torch.allclose(y, y_ref, atol=1e-6)
    g = torch.randn_like(y)
    y.backward(g)
    y_ref.backward(g)
    # STE: the latent weight receives exactly the gradient of the quantised weight
    assert torch.allclose(m.weight.grad, wq.grad, atol=1e-5)
    assert torch.allclose(x.grad, x2.grad, atol=1e-5)
    assert m.weight.grad.abs().sum() > 0


# ---------------------------------------------------------------- adder
@pytest.mark.parametrize("cin,cout,k,s,p,g", [
    (3, 4, 3, 1, 0, 1), (3, 4, 3, 2, 1, 1), (4, 4, 3, 1, 1, 4), (6, 6, 5, 2, 2, 6),
    (4, 6, 1, 1, 0, 1), (4, 6, 3, 1, 1, 2)])
def test_adder_forward_matches_naive_loop(cin, cout, k, s, p, g):
    torch.manual_seed(2)
    m = AdderConv2d(cin, cout, k, s, p, g)
    x = torch.randn(2, cin, 6, 7)
    y = m(x)
    assert torch.allclose(y, naive_adder(x, m.weight.detach(), s, p, g), atol=1e-4)


def test_adder_padding_contributes_minus_abs_w():
    torch.manual_seed(3)
    m = AdderConv2d(2, 3, 3, padding=1)
    y = m(torch.zeros(1, 2, 4, 4))
    expect = -m.weight.detach().abs().sum((1, 2, 3))
    assert torch.allclose(y, expect[None, :, None, None].expand_as(y), atol=1e-5)
    # ones input: a corner output sees 4 image taps (|1 - w|) and 5 padding taps (|w|)
    x = torch.ones(1, 2, 4, 4)
    w = m.weight.detach()
    corner = -((1 - w[:, :, 1:, 1:]).abs().sum((1, 2, 3))
               + w.abs().sum((1, 2, 3)) - w[:, :, 1:, 1:].abs().sum((1, 2, 3)))
    assert torch.allclose(m(x)[0, :, 0, 0], corner, atol=1e-5)


def test_adder_weight_init_is_standard_normal():
    torch.manual_seed(4)
    w = AdderConv2d(64, 64, 3).weight.detach()
    assert abs(w.mean()) < 0.02 and abs(w.std() - 1) < 0.02


@pytest.mark.parametrize("eta", [0.2, 0.05])
def test_adder_adaptive_gradient_scaling(eta):
    torch.manual_seed(5)
    m = AdderConv2d(3, 4, 3, padding=1, groups=1, eta=eta)
    x = torch.randn(2, 3, 5, 5, requires_grad=True)
    g = torch.randn(2, 4, 5, 5)
    m(x).backward(g)
    norm = m.weight.grad.norm().item()
    assert math.isclose(norm, eta * math.sqrt(m.weight.numel()), rel_tol=1e-5)
    # direction: the AdderNet gradient sum gy * (x - w), unscaled
    xd = x.detach()
    cols = F.unfold(xd, 3, padding=1)                           # [N, C*9, L]
    w = m.weight.detach().reshape(4, -1)                       # [O, C*9]
    gy = g.reshape(2, 4, -1)                                   # [N, O, L]
    raw = torch.einsum("nol,ndl->od", gy, cols) - w * gy.sum((0, 2))[:, None]
    expect = raw / raw.norm() * eta * math.sqrt(raw.numel())
    assert torch.allclose(m.weight.grad.reshape(4, -1), expect, atol=1e-4)
    # input gradient: sum gy * HardTanh(w - x)
    diff = (w[None, :, :, None] - cols[:, None]).clamp(-1, 1)  # [N, O, D, L]
    dcols = torch.einsum("nodl,nol->ndl", diff, gy)
    assert torch.allclose(x.grad, F.fold(dcols, (5, 5), 3, padding=1), atol=1e-4)


def test_adder_scaling_disabled_with_eta_none():
    torch.manual_seed(6)
    a, b = AdderConv2d(2, 3, 1, eta=None), AdderConv2d(2, 3, 1, eta=0.2)
    b.load_state_dict(a.state_dict())
    x = torch.randn(4, 2, 3, 3)
    a(x).sum().backward()
    b(x).sum().backward()
    assert not math.isclose(a.weight.grad.norm().item(), b.weight.grad.norm().item())
    assert torch.allclose(a.weight.grad / a.weight.grad.norm(),
                          b.weight.grad / b.weight.grad.norm(), atol=1e-5)


# ---------------------------------------------------------------- shapes, factory
@pytest.mark.parametrize("kind", ["conv", "shift", "adder"])
def test_shapes_standard_depthwise_pointwise_linear(kind):
    x = torch.randn(2, 8, 14, 14)
    std = make_op(kind, 8, 12, 3, stride=2, padding=1)
    dw = make_op(kind, 8, 8, 5, stride=1, padding=2, groups=8)
    pw = make_op(kind, 8, 16, 1)
    assert std(x).shape == (2, 12, 7, 7) and std.kind == kind
    assert dw(x).shape == (2, 8, 14, 14) and dw.is_depthwise and dw.weight.shape == (8, 1, 5, 5)
    assert pw(x).shape == (2, 16, 14, 14) and pw.is_pointwise
    lin = make_linear(kind, 8, 10)
    assert lin(torch.randn(3, 8)).shape == (3, 10) and lin.bias.shape == (10,)
    assert torch.allclose(lin(torch.randn(3, 8)[:, :, None, None] * 0 + 1).flatten(1),
                          lin(torch.ones(3, 8)), atol=1e-6)
    assert std.macs_per_image(14, 14) == 7 * 7 * 12 * 8 * 9


def test_conv_and_linear_match_torch():
    torch.manual_seed(7)
    m = Conv2d(4, 6, 3, stride=2, padding=1, groups=2, bias=True)
    x = torch.randn(2, 4, 8, 8)
    assert torch.allclose(m(x), F.conv2d(x, m.weight, m.bias, 2, 1, 1, 2), atol=1e-6)
    lin = Linear(5, 3)
    v = torch.randn(4, 5)
    assert torch.allclose(lin(v), F.linear(v, lin.weight[:, :, 0, 0], lin.bias), atol=1e-6)
    assert isinstance(ShiftLinear(5, 3), ShiftConv2d)
    assert isinstance(AdderLinear(5, 3), AdderConv2d)
    assert (AdderLinear(5, 3, bias=False)(v) <= 0).all()


def test_factory_errors():
    with pytest.raises(ValueError, match="unknown operator kind 'mul'"):
        make_op("mul", 4, 4, 3)
    with pytest.raises(ValueError, match="multiples of groups"):
        make_op("conv", 4, 6, 3, groups=4)
    with pytest.raises(ValueError, match="p_min <= p_max"):
        make_op("shift", 4, 4, 1, p_min=1, p_max=0)


def test_modules_deepcopy_and_pickle():
    import copy
    import io
    m = torch.nn.Sequential(make_op("adder", 2, 3, 3), make_op("shift", 3, 3, 1))
    m2 = copy.deepcopy(m)
    buf = io.BytesIO()
    torch.save(m, buf)
    x = torch.randn(1, 2, 5, 5)
    assert torch.equal(m(x), m2(x))


def test_shift_sign_exponent_zero_weight():
    s, e = shift_sign_exponent(torch.tensor([0.0, -0.0, 1e-9, -1.0]))
    assert s.tolist() == [0, 0, 0, -1] and e.tolist() == [0, 0, 0, 0]
