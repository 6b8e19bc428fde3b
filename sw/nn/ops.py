"""The three operator families of a hybrid network, with one constructor signature.

    make_op(kind, in_ch, out_ch, kernel, stride=1, padding=0, groups=1, bias=False, **cfg)
    make_linear(kind, in_features, out_features, bias=True, **cfg)

``kind`` is ``"conv"`` (multiply-accumulate), ``"shift"`` (DeepShift-Q: weights sign * 2^p)
or ``"adder"`` (AdderNet: y = -sum |x - w|). Standard, depthwise (``groups == in_ch ==
out_ch``) and pointwise (``kernel == 1``) shapes all use the same classes. A linear layer is
the 1x1 layer applied to a [N, C] input (equivalently a [N, C, 1, 1] map), so every layer
has a 4-D weight ``[out_ch, in_ch // groups, kernel, kernel]``.

What the quantiser and the mapper read from every operator module ``m``:

- ``m.kind``, ``m.in_ch``, ``m.out_ch``, ``m.kernel``, ``m.stride``, ``m.padding``,
  ``m.groups``, ``m.bias`` (None or a [out_ch] parameter)
- ``m.effective_weight()``: the float weight the forward pass really uses (for a shift
  layer the power-of-two weight, for the others the parameter itself)
- shift only: ``m.p_min``, ``m.p_max`` and ``m.sign_exponent()`` -> (int8 sign in {-1, 0, 1},
  int exponent in [p_min, p_max], 0 where sign == 0)
- adder only: ``m.eta`` (adaptive gradient scale; None disables it)

Shift quantisation (documented in docs/arch-json.md): ``p = clamp(round(log2|w|), p_min,
p_max)``, ``w_q = sign(w) * 2^p``, and ``w_q = 0`` where ``|w| < 2^(p_min - 1)`` (the value
is nearer to 0 than to the smallest magnitude 2^p_min). So a shift weight is exactly 0 or
+-2^p with p in range, which is what the shift PE computes (sign in {-1, 0, +1}, left shift
by p - p_min; the factor 2^p_min goes into requantisation). Gradients pass straight through
the rounding to the latent float weight.

The adder's AdderNet gradients come from ``sw.kernels.adder2d``; the per-layer adaptive
gradient scaling ``g <- eta * sqrt(numel(w)) / ||g||_2 * g`` is applied here, by an identity
autograd function on the weight (AdderNet does it inside its backward, which is equivalent),
so modules stay deep-copyable and picklable.
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

KINDS = ("conv", "shift", "adder")
DEFAULT_P_MIN, DEFAULT_P_MAX = -7, 0
DEFAULT_ETA = 0.2


# ----------------------------------------------------------------------------------------
# pure functions (also used by the quantiser)
# ----------------------------------------------------------------------------------------
def shift_sign_exponent(w, p_min=DEFAULT_P_MIN, p_max=DEFAULT_P_MAX):
    """Decompose float weights into (sign int8 in {-1,0,1}, exponent int64 in [p_min, p_max]).

    The exponent is 0 (not p_min) where the sign is 0; see the module docstring."""
    w = w.detach()
    mag = w.abs()
    p = torch.round(torch.log2(mag.clamp_min(2.0 ** (p_min - 2)))).clamp_(p_min, p_max)
    zero = mag < 2.0 ** (p_min - 1)
    sign = torch.sign(w).masked_fill(zero, 0).to(torch.int8)
    exponent = p.to(torch.int64).masked_fill(zero, 0)
    return sign, exponent


def shift_quantize(w, p_min=DEFAULT_P_MIN, p_max=DEFAULT_P_MAX):
    """The nearest value of {0} U {+-2^p : p_min <= p <= p_max} in the log domain (no grad)."""
    sign, exponent = shift_sign_exponent(w, p_min, p_max)
    return sign.to(w.dtype) * torch.exp2(exponent.to(w.dtype))


def shift_quantize_ste(w, p_min=DEFAULT_P_MIN, p_max=DEFAULT_P_MAX):
    """shift_quantize in the forward pass, identity gradient (straight-through estimator)."""
    return w + (shift_quantize(w, p_min, p_max) - w).detach()


class AdaptiveGradScale(torch.autograd.Function):
    """Identity forward; backward rescales the gradient to norm eta * sqrt(numel)."""

    @staticmethod
    def forward(ctx, w, eta):
        ctx.eta = eta
        return w.clone()

    @staticmethod
    def backward(ctx, g):
        scale = ctx.eta * math.sqrt(g.numel()) / g.norm(p=2).clamp_min(1e-12)
        return g * scale, None


def adaptive_grad_scale(w, eta=DEFAULT_ETA):
    return AdaptiveGradScale.apply(w, eta) if eta else w


# ----------------------------------------------------------------------------------------
# modules
# ----------------------------------------------------------------------------------------
class HybridOp(nn.Module):
    """Common base: shape bookkeeping, weight/bias parameters, linear-input handling."""

    kind = None

    def __init__(self, in_ch, out_ch, kernel, stride=1, padding=0, groups=1, bias=False):
        super().__init__()
        for name, v in (("in_ch", in_ch), ("out_ch", out_ch), ("kernel", kernel),
                        ("stride", stride), ("groups", groups)):
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{type(self).__name__}: {name} must be a positive integer, "
                                 f"got {v!r}")
        if isinstance(padding, bool) or not isinstance(padding, int) or padding < 0:
            raise ValueError(f"{type(self).__name__}: padding must be an integer >= 0, "
                             f"got {padding!r}")
        if in_ch % groups or out_ch % groups:
            raise ValueError(f"{type(self).__name__}: in_ch {in_ch} and out_ch {out_ch} must "
                             f"be multiples of groups {groups}")
        self.in_ch, self.out_ch, self.kernel = in_ch, out_ch, kernel
        self.stride, self.padding, self.groups = stride, padding, groups
        self.weight = nn.Parameter(torch.empty(out_ch, in_ch // groups, kernel, kernel))
        if bias:
            self.bias = nn.Parameter(torch.zeros(out_ch))
        else:
            self.register_parameter("bias", None)
        self.reset_parameters()

    # -- shape helpers -------------------------------------------------------------------
    @property
    def is_depthwise(self):
        return self.groups > 1 and self.groups == self.in_ch == self.out_ch

    @property
    def is_pointwise(self):
        return self.kernel == 1 and self.groups == 1

    def out_hw(self, h, w):
        k, s, p = self.kernel, self.stride, self.padding
        return (h + 2 * p - k) // s + 1, (w + 2 * p - k) // s + 1

    def macs_per_image(self, h, w):
        """Accumulations (of products, shifted values or |x - w|) for an h x w input."""
        oh, ow = self.out_hw(h, w)
        return oh * ow * self.weight.numel()

    # -- weights -------------------------------------------------------------------------
    def reset_parameters(self):
        # He (fan_out) initialisation, as in MobileNetV2; the adder overrides it.
        nn.init.kaiming_normal_(self.weight, mode="fan_out", nonlinearity="relu")
        if self.bias is not None:
            nn.init.zeros_(self.bias)

    def effective_weight(self):
        return self.weight

    # -- forward -------------------------------------------------------------------------
    def forward(self, x):
        if x.dim() == 2:             # linear use: [N, C] -> [N, C, 1, 1] -> [N, O]
            return self._forward4d(x[:, :, None, None]).flatten(1)
        return self._forward4d(x)

    def _forward4d(self, x):
        return self.run(x, self.weight, self.groups, self.bias)

    def run(self, x, weight, groups, bias=None, padding=None):
        """This operator on a 4-D ``x`` with another ``weight`` (e.g. a slice of
        ``self.weight``, as the search's weight-shared supernet uses), ``groups`` and
        ``padding`` (default ``self.padding``)."""
        raise NotImplementedError

    def extra_repr(self):
        s = f"{self.in_ch}, {self.out_ch}, kernel={self.kernel}"
        if self.stride != 1:
            s += f", stride={self.stride}"
        if self.padding:
            s += f", padding={self.padding}"
        if self.groups != 1:
            s += f", groups={self.groups}"
        if self.bias is None:
            s += ", bias=False"
        return s


class Conv2d(HybridOp):
    """Ordinary convolution (multiplier PEs)."""

    kind = "conv"

    def run(self, x, weight, groups, bias=None, padding=None):
        pad = self.padding if padding is None else padding
        return F.conv2d(x, weight, bias, self.stride, pad, 1, groups)


class ShiftConv2d(HybridOp):
    """DeepShift-Q convolution: latent float weights, power-of-two weights in the forward."""

    kind = "shift"

    def __init__(self, in_ch, out_ch, kernel, stride=1, padding=0, groups=1, bias=False,
                 p_min=DEFAULT_P_MIN, p_max=DEFAULT_P_MAX):
        if not (isinstance(p_min, int) and isinstance(p_max, int) and p_min <= p_max):
            raise ValueError(f"ShiftConv2d: need integers p_min <= p_max, got {p_min}, {p_max}")
        self.p_min, self.p_max = p_min, p_max
        super().__init__(in_ch, out_ch, kernel, stride, padding, groups, bias)

    def effective_weight(self):
        return shift_quantize(self.weight, self.p_min, self.p_max)

    def sign_exponent(self):
        return shift_sign_exponent(self.weight, self.p_min, self.p_max)

    def run(self, x, weight, groups, bias=None, padding=None):
        w = shift_quantize_ste(weight, self.p_min, self.p_max)
        pad = self.padding if padding is None else padding
        return F.conv2d(x, w, bias, self.stride, pad, 1, groups)

    def extra_repr(self):
        return super().extra_repr() + f", p=[{self.p_min}, {self.p_max}]"


class AdderConv2d(HybridOp):
    """AdderNet layer: y = -sum |x - w| (+ bias); must be followed by batch norm."""

    kind = "adder"

    def __init__(self, in_ch, out_ch, kernel, stride=1, padding=0, groups=1, bias=False,
                 eta=DEFAULT_ETA):
        self.eta = eta
        super().__init__(in_ch, out_ch, kernel, stride, padding, groups, bias)

    def reset_parameters(self):
        nn.init.normal_(self.weight, 0.0, 1.0)      # AdderNet: N(0, 1)
        if self.bias is not None:
            nn.init.zeros_(self.bias)

    def run(self, x, weight, groups, bias=None, padding=None):
        from sw.kernels import adder2d
        w = adaptive_grad_scale(weight, self.eta)
        pad = self.padding if padding is None else padding
        y = adder2d(x, w, stride=self.stride, padding=pad, groups=groups)
        if bias is not None:
            y = y + bias[:, None, None]
        return y

    def extra_repr(self):
        return super().extra_repr() + f", eta={self.eta}"


OP_CLASSES = {"conv": Conv2d, "shift": ShiftConv2d, "adder": AdderConv2d}


def make_op(kind, in_ch, out_ch, kernel, stride=1, padding=0, groups=1, bias=False, *,
            p_min=DEFAULT_P_MIN, p_max=DEFAULT_P_MAX, eta=DEFAULT_ETA):
    """An operator module of ``kind``; kind-specific options are ignored by other kinds."""
    if kind == "conv":
        return Conv2d(in_ch, out_ch, kernel, stride, padding, groups, bias)
    if kind == "shift":
        return ShiftConv2d(in_ch, out_ch, kernel, stride, padding, groups, bias,
                           p_min=p_min, p_max=p_max)
    if kind == "adder":
        return AdderConv2d(in_ch, out_ch, kernel, stride, padding, groups, bias, eta=eta)
    raise ValueError(f"unknown operator kind {kind!r}; expected one of {', '.join(KINDS)}")


def make_linear(kind, in_features, out_features, bias=True, **cfg):
    """A fully connected layer of ``kind``: the 1x1 operator, taking [N, C] inputs."""
    return make_op(kind, in_features, out_features, 1, bias=bias, **cfg)


def Linear(in_features, out_features, bias=True):
    return make_linear("conv", in_features, out_features, bias)


def ShiftLinear(in_features, out_features, bias=True, p_min=DEFAULT_P_MIN,
                p_max=DEFAULT_P_MAX):
    return make_linear("shift", in_features, out_features, bias, p_min=p_min, p_max=p_max)


def AdderLinear(in_features, out_features, bias=True, eta=DEFAULT_ETA):
    return make_linear("adder", in_features, out_features, bias, eta=eta)


def hybrid_ops(model):
    """(name, module) of every operator module in ``model``, in registration order."""
    return [(n, m) for n, m in model.named_modules() if isinstance(m, HybridOp)]
