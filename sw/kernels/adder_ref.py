"""Reference adder kernels (AdderNet): unfold + cdist forward, explicit AdderNet backward.

Shapes: x [N, C, H, W], w [O, C // groups, K, K], y [N, O, OH, OW] with
``y[n, o, i, j] = -sum_{c, kh, kw} |x_pad[n, g*Cg + c, i*s + kh, j*s + kw] - w[o, c, kh, kw]|``
(g = o // (O // groups)); zero padding takes part as x = 0, so it contributes -|w|.

Gradients (AdderNet, not the true derivatives):
``dL/dw = sum gy * (x - w)`` and ``dL/dx = sum gy * HardTanh(w - x)``.
The adaptive gradient scaling belongs to the module, not here.
This is the fallback of the fast kernels and the definition they are tested against.
"""
import numpy as np
import torch
import torch.nn.functional as F

_CHUNK = 1 << 24  # max elements of the broadcast tensor built in the backward pass


def out_size(size, k, stride, padding):
    """Output extent of a convolution along one axis."""
    return (size + 2 * padding - k) // stride + 1


def _columns(x, k, stride, padding, groups):
    """x [N, C, H, W] -> zero-padded columns [N, G, Cg*K*K, L]."""
    cols = F.unfold(x, k, padding=padding, stride=stride)
    return cols.view(x.shape[0], groups, -1, cols.shape[-1])


def sad_columns(cols, wg):
    """cols [N, G, D, L], wg [G, Og, D] -> [N, G, Og, L] = -sum_d |cols - wg|."""
    n, g, d, l = cols.shape
    x1 = cols.transpose(2, 3).reshape(n * g, l, d)
    x2 = wg.unsqueeze(0).expand(n, -1, -1, -1).reshape(n * g, -1, d)
    return -torch.cdist(x1, x2, p=1).view(n, g, l, -1).transpose(2, 3)


def grad_columns(cols, wg, gy):
    """AdderNet input gradient in column space: sum_o gy * HardTanh(wg - cols).

    cols [N, G, D, L], wg [G, Og, D], gy [N, G, Og, L] -> [N, G, D, L]."""
    n, g, d, l = cols.shape
    step = max(1, _CHUNK // max(1, wg.shape[1] * g * d * l))
    parts = []
    for s in range(0, n, step):
        diff = (wg[None, :, :, :, None] - cols[s:s + step, :, None]).clamp_(-1, 1)
        parts.append(torch.einsum("ngodl,ngol->ngdl", diff, gy[s:s + step]))
    return torch.cat(parts)


def grad_weight(cols, wg, gy):
    """AdderNet weight gradient sum_{n,l} gy * (cols - wg): [G, Og, D]."""
    return torch.einsum("ngol,ngdl->god", gy, cols) - wg * gy.sum((0, 3))[..., None]


def forward(x, w, stride=1, padding=0, groups=1):
    """Plain (non-autograd) forward: x [N, C, H, W], w [O, C//groups, K, K] -> [N, O, OH, OW]."""
    k = w.shape[-1]
    cols = _columns(x, k, stride, padding, groups)
    y = sad_columns(cols, w.reshape(groups, w.shape[0] // groups, -1))
    oh, ow = out_size(x.shape[2], k, stride, padding), out_size(x.shape[3], k, stride, padding)
    return y.reshape(x.shape[0], w.shape[0], oh, ow)


def backward(x, w, gy, stride=1, padding=0, groups=1):
    """AdderNet gradients (dx [N, C, H, W], dw like w) for output gradient gy [N, O, OH, OW]."""
    n, k = x.shape[0], w.shape[-1]
    cols = _columns(x, k, stride, padding, groups)
    wg = w.reshape(groups, w.shape[0] // groups, -1)
    gyg = gy.reshape(n, groups, wg.shape[1], -1)
    dcols = grad_columns(cols, wg, gyg).reshape(n, -1, cols.shape[-1])
    dx = F.fold(dcols, x.shape[2:], k, padding=padding, stride=stride)
    return dx, grad_weight(cols, wg, gyg).reshape(w.shape)


class Adder2dRef(torch.autograd.Function):
    """Autograd wrapper of the reference forward/backward."""

    @staticmethod
    def forward(ctx, x, w, stride, padding, groups):
        ctx.save_for_backward(x, w)
        ctx.conf = (stride, padding, groups)
        return forward(x, w, stride, padding, groups)

    @staticmethod
    def backward(ctx, gy):
        x, w = ctx.saved_tensors
        dx, dw = backward(x, w, gy.contiguous(), *ctx.conf)
        return dx, dw, None, None, None


def adder2d(x, w, stride=1, padding=0, groups=1):
    """Adder convolution, x [N, C, H, W], w [O, C//groups, K, K] -> [N, O, OH, OW]."""
    return Adder2dRef.apply(x, w, stride, padding, groups)


def adder_linear(x, w):
    """Adder fully connected layer, x [N, I], w [O, I] -> [N, O]."""
    return adder2d(x[:, :, None, None], w[:, :, None, None]).flatten(1)


def adder2d_int(x, w, stride=1, padding=0, groups=1):
    """Integer reference: int arrays x [N, C, H, W], w [O, C//groups, K, K] -> int64
    [N, O, OH, OW] = -sum |x_pad - w| (a Python loop over the K*K taps only)."""
    x, w = np.asarray(x, np.int64), np.asarray(w, np.int64)
    n, c, h, wd = x.shape
    o, cg, k, _ = w.shape
    oh, ow = out_size(h, k, stride, padding), out_size(wd, k, stride, padding)
    xp = np.pad(x, ((0, 0), (0, 0), (padding, padding), (padding, padding)))
    xp = xp.reshape(n, groups, 1, cg, h + 2 * padding, wd + 2 * padding)
    wg = w.reshape(groups, o // groups, cg, k, k)
    y = np.zeros((n, groups, o // groups, oh, ow), np.int64)
    for kh in range(k):
        for kw in range(k):
            xs = xp[..., kh:kh + stride * (oh - 1) + 1:stride, kw:kw + stride * (ow - 1) + 1:stride]
            y -= np.abs(xs - wg[None, :, :, :, kh, kw, None, None]).sum(3)
    return y.reshape(n, o, oh, ow)
