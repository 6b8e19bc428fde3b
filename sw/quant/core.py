"""Quantisation of a trained hybrid network to the integer contract (docs/integer-model.md).

Pieces (all work on the node list of ``sw.quant.graph``):

* :func:`calibrate` / :func:`make_scales`: per-tensor activation scales from a few hundred
  training images (percentile of |activation|); a residual layer's output scale is its
  shortcut's scale times a power of two, so the shortcut is added with a shift, not a
  multiplier.
* :func:`quant_layer`: one layer's integer weights and the float affine map from its integer
  accumulator to its real output (conv: int8 per output channel; shift: sign + exponent with
  the layer's smallest exponent factored out; adder: int8 on the input's scale, clamped to
  the input's range with the clamped part folded exactly into the bias).
* :func:`fakequant_forward`: the float (torch) graph that mirrors the integer pass: same
  integer-valued tensors, same rounding (half up) and clamps; differentiable with
  straight-through rounding, so QAT uses it.
* :func:`export`: the integer model (``sw.golden.model.QModel``): weights, 16-bit requant
  multipliers, biases, shifts, accumulator widths proven from the integer weights.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from sw.golden import model as gm
from sw.nn.ops import adaptive_grad_scale, shift_sign_exponent


@dataclass
class QConfig:
    pixel_shift: int = 1          # input x = pixel >> pixel_shift (int8 range [0, 127])
    act_bits: int = 8             # tensors between layers
    out_bits: int = 16            # logits
    w_bits: int = 8               # conv / adder weights
    exp_bits: int = 3             # shift exponent code: shifts 0 .. 2^exp_bits - 1
    m_bits: int = gm.M_BITS       # requant multiplier (signed)
    percentile: float = 99.99     # activation range: this percentile of |a| (100 = max)
    logit_headroom: float = 2.0   # logits scale: headroom x calibrated max over 2^15 - 1

    def to_dict(self):
        return asdict(self)


@dataclass
class TQ:
    """Quantisation of one tensor: real value = scale * q, q integer in [lo, hi]."""
    scale: float
    lo: int
    hi: int
    bits: int
    amax: float = 0.0             # calibrated range (information)
    res_k: int | None = None      # residual output: scale = scale(shortcut) * 2^res_k


# ----------------------------------------------------------------------------------------
# rounding helpers (straight-through)
# ----------------------------------------------------------------------------------------
def round_half_up(v):
    """floor(v + 0.5), the rounding of the integer requantisation (``+2^(S-1) >> S``)."""
    return torch.floor(v + 0.5)


def ste(v, q):
    """q in the forward pass, identity gradient to v."""
    return v + (q - v).detach()


def pixels_to_q(images, pixel_shift=1):
    """uint8 pixels (numpy/tensor [N, H, W] or [N, C, H, W]) -> float tensor of the integer
    input ``pixel >> pixel_shift`` (the value the integer model's tensor 0 holds)."""
    x = torch.as_tensor(np.asarray(images)) if not torch.is_tensor(images) else images
    if x.dim() == 3:
        x = x[:, None]
    return torch.div(x.to(torch.int32), 1 << pixel_shift, rounding_mode="floor").float()


def input_tq(cfg):
    return TQ(scale=(1 << cfg.pixel_shift) / 255.0, lo=0, hi=255 >> cfg.pixel_shift,
              bits=cfg.act_bits, amax=1.0)


# ----------------------------------------------------------------------------------------
# calibration
# ----------------------------------------------------------------------------------------
@torch.no_grad()
def calibrate(nodes, images, cfg, percentiles=None, batch=256):
    """Run the float graph on ``images`` (uint8; fed as their quantised input value) and
    return {percentile: [amax per tensor]} for each requested percentile of |activation|
    (tensor 0 included, not used)."""
    from .graph import float_forward
    percentiles = list(percentiles or [cfg.percentile])
    s0 = input_tq(cfg).scale
    store = [[] for _ in range(len(nodes) + 1)]
    for i in range(0, len(images), batch):
        x = pixels_to_q(images[i:i + batch], cfg.pixel_shift) * s0
        for t, v in enumerate(float_forward(nodes, x, keep=True)):
            store[t].append(v.abs().flatten())
    out = {}
    cat = [torch.cat(s).numpy() for s in store]
    for p in percentiles:
        out[p] = [float(np.percentile(c, p)) if p < 100 else float(c.max()) for c in cat]
    return out


def make_scales(nodes, amax, cfg):
    """Per-tensor TQ from calibrated ranges ``amax`` (list, one per tensor)."""
    tq = [input_tq(cfg)]
    hi8 = (1 << (cfg.act_bits - 1)) - 1
    for i, n in enumerate(nodes):
        a = max(float(amax[i + 1]), 1e-3)     # a dead tensor still gets a usable scale
        last = i == len(nodes) - 1
        if last:
            hi = (1 << (cfg.out_bits - 1)) - 1
            tq.append(TQ(a * cfg.logit_headroom / hi, -hi - 1, hi, cfg.out_bits, a))
            continue
        nonneg = n.relu or (n.type == "gap" and tq[n.input].lo == 0)
        lo = 0 if nonneg else -hi8 - 1
        s = a / hi8
        k = None
        if n.residual is not None:
            s_res = tq[n.residual].scale
            k = int(round(math.log2(s / s_res)))
            s = s_res * 2.0 ** k
        tq.append(TQ(s, lo, hi8, cfg.act_bits, a, k))
    return tq


# ----------------------------------------------------------------------------------------
# per-layer quantisation
# ----------------------------------------------------------------------------------------
@dataclass
class QLayer:
    """One conv/fc layer, quantised (torch tensors, differentiable when made with train=True).

    ``w_int``: the integer weights as the PE sees them (mul: int8; shift: ``sign * 2^shift``;
    adder: int8 on the input's scale), straight-through to the float weight. ``w_real``: the
    same weights in real units (the adder runs in real units so its AdderNet gradients keep
    their meaning). The real output before batch norm is ``alpha[c] * acc + corr[c]``, and
    the batch norm is ``g[c] * real + h[c]``."""
    w_int: torch.Tensor = None
    w_real: torch.Tensor = None
    alpha: torch.Tensor = None
    corr: torch.Tensor = None
    g: torch.Tensor = None
    h: torch.Tensor = None
    ints: dict = field(default_factory=dict)      # integer arrays for the file
    stats: dict = field(default_factory=dict)


def bn_affine(node, out_ch, dtype=torch.float32):
    """(g, h) of the eval-mode batch norm after the layer (running statistics)."""
    bn = node.bn
    if bn is None:
        return torch.ones(out_ch, dtype=dtype), torch.zeros(out_ch, dtype=dtype)
    g = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    return g, bn.bias - g * bn.running_mean


def cap_shift_exponents(w, sign, exponent, exp_bits):
    """Limit a shift layer's exponents to a window of 2^exp_bits values below its largest:
    weights below the window go to the window's floor p_f, or to 0 when |w| < 2^(p_f - 1)
    (the nearest representable value in the log domain). Returns (sign, exponent, capped)."""
    nz = sign != 0
    if not nz.any():
        return sign, exponent, 0
    p_floor = int(exponent[nz].max()) - ((1 << exp_bits) - 1)
    low = nz & (exponent < p_floor)
    capped = int(low.sum())
    if capped:
        to_zero = low & (w.abs() < 2.0 ** (p_floor - 1))
        sign = sign.masked_fill(to_zero, 0)
        exponent = torch.where(low & ~to_zero, torch.full_like(exponent, p_floor), exponent)
        exponent = exponent.masked_fill(sign == 0, 0)
    return sign, exponent, capped


def quant_layer(node, tin, cfg, train=False):
    """Quantise one conv/fc node whose input tensor is quantised as ``tin`` (a TQ)."""
    m = node.module
    w = m.weight
    if train and node.op == "adder" and getattr(m, "eta", None):
        w = adaptive_grad_scale(w, m.eta)
    if not train:
        w = w.detach()
    O = w.shape[0]
    ql = QLayer()
    corr = torch.zeros(O, dtype=w.dtype)
    if node.op == "mul":
        qmax = (1 << (cfg.w_bits - 1)) - 1
        s_w = w.detach().abs().amax((1, 2, 3)).clamp_min(1e-12) / qmax
        u = w / s_w[:, None, None, None]
        q = torch.clamp(round_half_up(u), -qmax, qmax)
        ql.w_int = torch.clamp(ste(u, round_half_up(u)), -qmax, qmax)
        ql.w_real = ql.w_int * s_w[:, None, None, None]
        ql.alpha = tin.scale * s_w
        ql.ints = {"w": q.detach().to(torch.int64).numpy().astype(np.int8)}
        ql.stats = {"w_clamped": 0}
    elif node.op == "shift":
        sign, exponent = shift_sign_exponent(w, m.p_min, m.p_max)
        sign, exponent, capped = cap_shift_exponents(w.detach(), sign, exponent, cfg.exp_bits)
        nz = sign != 0
        p_base = int(exponent[nz].min()) if nz.any() else 0
        shift = torch.where(nz, exponent - p_base, torch.zeros_like(exponent))
        q = sign.to(w.dtype) * torch.exp2(shift.to(w.dtype))
        ql.w_int = ste(w * 2.0 ** -p_base, q)
        ql.w_real = ql.w_int * 2.0 ** p_base
        ql.alpha = torch.full((O,), tin.scale * 2.0 ** p_base, dtype=w.dtype)
        ql.ints = {"sign": sign.numpy().astype(np.int8),
                   "shift": shift.numpy().astype(np.uint8), "p_base": p_base}
        ql.stats = {"w_clamped": capped, "p_base": p_base, "zero_weights": int((~nz).sum())}
    elif node.op == "adder":
        u = w / tin.scale
        r = round_half_up(u)
        q = torch.clamp(r, tin.lo, tin.hi)
        clamped = (r != q).detach()
        ql.w_int = torch.clamp(ste(u, r), tin.lo, tin.hi)    # clamped ones: via corr below
        ql.w_real = ql.w_int * tin.scale
        # |x - w| = |x - q| + |w - q| for x in [lo, hi] when w lies outside [lo, hi]:
        # the clamped part is a per-channel constant, folded into the bias (exact).
        corr = corr - tin.scale * ((u - q).abs() * clamped).sum((1, 2, 3))
        ql.alpha = torch.full((O,), tin.scale, dtype=w.dtype)
        ql.ints = {"w": q.detach().to(torch.int64).numpy().astype(np.int8)}
        ql.stats = {"w_clamped": int(clamped.sum())}
    else:
        raise ValueError(f"{node.name}: unknown op {node.op}")
    if m.bias is not None:
        corr = corr + (m.bias if train else m.bias.detach())
    ql.corr = corr
    g, h = bn_affine(node, O, w.dtype)
    ql.g, ql.h = (g, h) if train else (g.detach(), h.detach())
    ql.stats["w_total"] = int(w.numel())
    return ql


def layer_acc(node, ql, x, s_in, train=False):
    """The layer's integer accumulator from the integer-valued input ``x`` (float tensor).

    Training: mul/shift as an integer-domain conv, the adder in real units (so the AdderNet
    gradient's HardTanh keeps its scale) divided back by the input scale, then rounded to
    the exact integer (straight-through). Evaluation: everything in the integer domain in
    float32, which is exact while every partial sum stays below 2^24 (checked; float64
    otherwise)."""
    m = node.module
    if node.type == "fc":
        x = x[:, :, None, None]
    if not train:
        bound = float(x.detach().abs().max()) * float(ql.w_int.detach().abs().flatten(1)
                                                        .sum(1).max())
        if node.op == "adder":
            bound += float(ql.w_int.detach().abs().flatten(1).sum(1).max()) + \
                float(x.detach().abs().max()) * ql.w_int[0].numel()
        dt = torch.float32 if bound < 2 ** 24 else torch.float64
        xi, wi = x.to(dt).contiguous(), ql.w_int.detach().to(dt).contiguous()
        if node.op == "adder":
            if dt == torch.float64:
                from sw.kernels.adder_ref import forward as adder2d
            else:
                from sw.kernels import adder2d
            acc = adder2d(xi, wi, m.stride, m.padding, m.groups)
        else:
            acc = F.conv2d(xi, wi, None, m.stride, m.padding, 1, m.groups)
        acc = acc.to(x.dtype)
    elif node.op == "adder":
        from sw.kernels import adder2d
        w = ql.w_real.to(x.dtype)
        acc = adder2d((x * s_in).contiguous(), w.contiguous(), m.stride, m.padding,
                      m.groups) / s_in
        acc = ste(acc, torch.round(acc))
    else:
        acc = F.conv2d(x, ql.w_int.to(x.dtype), None, m.stride, m.padding, 1, m.groups)
        acc = ste(acc, torch.round(acc))
    return acc[:, :, 0, 0] if node.type == "fc" else acc


# ----------------------------------------------------------------------------------------
# requantisation
# ----------------------------------------------------------------------------------------
def choose_shift(m_abs_max, cfg, min_s=1, max_s=40):
    """The per-layer S: the largest for which round(max|m| * 2^S) fits ``cfg.m_bits``."""
    mmax = (1 << (cfg.m_bits - 1)) - 1
    if m_abs_max <= 0:
        return max(min_s, min(max_s, 30))
    S = int(math.floor(math.log2((mmax + 0.5) / m_abs_max)))
    S = max(min_s, min(S, max_s))
    while S > min_s and math.floor(m_abs_max * 2.0 ** S + 0.5) > mmax:
        S -= 1
    return S


def float_requant(node, ql, tin, tout, dtype=torch.float64):
    """(m, beta): the real requantisation ``acc -> acc * m + beta`` in output units."""
    if node.type == "gap":
        hw = node.in_shape[1] * node.in_shape[2]
        m = torch.full((node.out_shape[0],), tin.scale / (hw * tout.scale), dtype=dtype)
        return m, torch.zeros_like(m)
    g = ql.g.to(dtype)
    return (g * ql.alpha.to(dtype) / tout.scale,
            (g * ql.corr.to(dtype) + ql.h.to(dtype)) / tout.scale)


def layer_requant(node, ql, tin, tout, cfg, dtype=torch.float64):
    """The requantisation of one node: returns (m_q, beta_q, S, M, B, m_clipped) where
    ``m_q = M / 2^S`` and ``beta_q = B / 2^S`` are torch tensors (straight-through to the
    float multiplier m and bias beta), M and B int64 numpy arrays. The output is
    ``clamp(round_half_up(acc * m_q + beta_q + res * 2^-k), lo, hi)`` in float and
    ``clamp((acc*M + B + (res << (S-k)) + 2^(S-1)) >> S, lo, hi)`` in integers: the same
    number (both are exact dyadic rationals)."""
    m, beta = float_requant(node, ql, tin, tout, dtype)
    min_s = max(1, tout.res_k) if node.residual is not None else 1
    S = choose_shift(float(m.detach().abs().max()), cfg, min_s)
    mmax = (1 << (cfg.m_bits - 1)) - 1
    M = torch.floor(m.detach() * 2.0 ** S + 0.5)
    m_clipped = int((M.abs() > mmax).sum())        # only degenerate (dead) layers
    M = M.clamp(-mmax, mmax)
    B = torch.floor(beta.detach() * 2.0 ** S + 0.5).clamp(-2.0 ** 61, 2.0 ** 61)
    m_q = ste(m, M * 2.0 ** -S)
    beta_q = ste(beta, B * 2.0 ** -S)
    return m_q, beta_q, S, M.to(torch.int64).numpy(), B.to(torch.int64).numpy(), m_clipped


# ----------------------------------------------------------------------------------------
# the fake-quantised float graph
# ----------------------------------------------------------------------------------------
def fakequant_forward(nodes, tq, xq, cfg, train=False, keep=False, exact=True,
                      dtype=None):
    """Mirror of the integer pass in float: ``xq`` holds the integer input (``pixels_to_q``);
    every tensor is integer-valued (``round_half_up`` + clamp, straight-through when
    ``train``). ``exact`` uses the 16-bit multipliers M / 2^S of the integer model (else the
    float multipliers: the PTQ ideal). Returns the real logits ``scale * q`` (or the list of
    integer-valued tensors when ``keep``). ``dtype`` float64 makes it bit-exact with the
    integer model (float32 sums of the accumulators are exact below 2^24 too; the
    requantisation products are not)."""
    dtype = dtype or (torch.float32 if train else torch.float64)
    ts = [xq.to(dtype)]
    for i, n in enumerate(nodes):
        tin, tout = tq[n.input], tq[i + 1]
        x = ts[n.input]
        if n.type == "gap":
            ql = None
            acc = x.sum((2, 3))
        else:
            ql = quant_layer(n, tin, cfg, train)
            acc = layer_acc(n, ql, x, tin.scale, train)
        if exact:
            m_q, beta_q = layer_requant(n, ql, tin, tout, cfg)[:2]
        else:
            m_q, beta_q = float_requant(n, ql, tin, tout, dtype)
        m_q, beta_q = m_q.to(dtype), beta_q.to(dtype)
        shape = (1, -1) + (1,) * (acc.dim() - 2)
        v = acc.to(dtype) * m_q.view(shape) + beta_q.view(shape)
        if n.residual is not None:
            v = v + ts[n.residual] * 2.0 ** -tout.res_k
        if train:   # straight through the rounding only: no gradient where clamped (ReLU)
            ts.append(torch.clamp(ste(v, round_half_up(v)), tout.lo, tout.hi))
        else:
            ts.append(torch.clamp(round_half_up(v), tout.lo, tout.hi))
    return ts if keep else ts[-1] * tq[-1].scale


# ----------------------------------------------------------------------------------------
# export to the integer model
# ----------------------------------------------------------------------------------------
@torch.no_grad()
def export(nodes, tq, cfg, meta=None):
    """Build the integer model (``sw.golden.model.QModel``) of a quantised node list."""
    layers, arrays, stats = [], {}, []
    tensors = [{"shape": [int(v) for v in nodes[0].in_shape], "scale": tq[0].scale,
                "lo": tq[0].lo, "hi": tq[0].hi, "bits": tq[0].bits}]
    for i, n in enumerate(nodes):
        tin, tout = tq[n.input], tq[i + 1]
        tensors.append({"shape": [int(v) for v in n.out_shape], "scale": tout.scale,
                        "lo": tout.lo, "hi": tout.hi, "bits": tout.bits, "amax": tout.amax})
        L = {"name": n.name, "type": n.type, "op": n.op, "input": n.input, "output": i + 1,
             "residual": n.residual, "out_ch": int(n.out_shape[0]), "relu": bool(n.relu),
             "lo": tout.lo, "hi": tout.hi}
        if n.type == "gap":
            ql = None
            L.update(in_hw=[int(v) for v in n.in_shape[1:]])
            st = {"w_clamped": 0, "w_total": 0}
        else:
            mod = n.module
            ql = quant_layer(n, tin, cfg)
            L.update(in_ch=mod.in_ch, kernel=mod.kernel, stride=mod.stride,
                     padding=mod.padding, groups=mod.groups,
                     in_hw=[int(v) for v in n.in_shape[1:]] if n.type == "conv" else [1, 1],
                     out_hw=[int(v) for v in n.out_shape[1:]] if n.type == "conv" else [1, 1])
            if n.op == "shift":
                arrays[f"{i}.sign"] = ql.ints["sign"]
                arrays[f"{i}.shift"] = ql.ints["shift"]
                L.update(exp_bits=cfg.exp_bits, p_base=ql.ints["p_base"])
            else:
                arrays[f"{i}.w"] = ql.ints["w"]
                L.update(w_bits=cfg.w_bits)
            st = dict(ql.stats)
        _, _, S, M, B, m_clipped = layer_requant(n, ql, tin, tout, cfg)
        st["m_clipped"] = m_clipped
        arrays[f"{i}.M"] = M.astype(np.int32)
        arrays[f"{i}.B"] = B.astype(np.int64)
        L["S"] = int(S)
        if n.residual is not None:
            L["res_shift"] = int(S - tout.res_k)
        L["acc_bits"] = 64         # replaced by the proven width below
        L["rq_bits"] = 64
        layers.append(L)
        stats.append(st)
    header = {"format": gm.FORMAT, "version": gm.VERSION,
              "input": {"pixel_shift": cfg.pixel_shift, "scale": tq[0].scale},
              "tensors": tensors, "layers": layers, "quant": cfg.to_dict()}
    header.update(meta or {})
    header["arrays"] = {k: gm._arr_info(v) for k, v in arrays.items()}
    qm = gm.QModel(header, arrays)
    for i, b in enumerate(gm.prove(qm)):
        L = layers[i]
        L["acc_bits"] = b["acc_bits"]
        L["rq_bits"] = b["rq_bits"]
        L["acc_min"], L["acc_max"] = b["acc_min"], b["acc_max"]
        L["acc_bits_generic"] = gm.generic_acc_bits(L, qm.tensors[L["input"]]["bits"])
        for k in ("w_clamped", "w_total", "m_clipped"):
            L[k] = int(stats[i].get(k, 0))
    gm.validate(qm)
    gm.prove(qm)
    return qm
