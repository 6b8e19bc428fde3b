"""Naive loop implementations of the integer layers (tiny shapes only): the plain-reading
definition the vectorised kernels of ``sw.golden.model`` are tested against, built directly
on the PE terms of ``sw.golden.pe`` (one ``term()`` call per tap, a Python int accumulator,
the accumulator wrapped after every term exactly as a PE does)."""
from __future__ import annotations

import numpy as np

from .pe import term, wrap


def conv_acc_naive(op, x, weights, stride=1, padding=0, groups=1, acc_bits=64):
    """x [N, C, H, W] ints; weights [O, C//g, K, K] ints, or for op "shift" a pair
    (sign, shift) of such arrays. Returns int64 [N, O, OH, OW]."""
    x = np.asarray(x, np.int64)
    n, c, h, wd = x.shape
    if op == "shift":
        sign, shift = (np.asarray(a, np.int64) for a in weights)
        shape = sign.shape
    else:
        w = np.asarray(weights, np.int64)
        shape = w.shape
    o, cg, k, _ = shape
    og = o // groups
    oh, ow = (h + 2 * padding - k) // stride + 1, (wd + 2 * padding - k) // stride + 1
    out = np.zeros((n, o, oh, ow), np.int64)
    for b in range(n):
        for oo in range(o):
            g = oo // og
            for i in range(oh):
                for j in range(ow):
                    acc = 0
                    for ci in range(cg):
                        for kh in range(k):
                            for kw in range(k):
                                r, s = i * stride + kh - padding, j * stride + kw - padding
                                xv = x[b, g * cg + ci, r, s] if 0 <= r < h and 0 <= s < wd else 0
                                if op == "shift":
                                    wv = (sign[oo, ci, kh, kw], shift[oo, ci, kh, kw])
                                else:
                                    wv = w[oo, ci, kh, kw]
                                acc += int(term(op, xv, wv))
                                if acc_bits < 64:
                                    acc = int(wrap(acc, acc_bits))
                    out[b, oo, i, j] = acc
    return out


def requantize_naive(acc, M, B, S, lo, hi, res=None, res_shift=0):
    """Element by element with Python ints: floor((acc*M + B + res*2^res_shift +
    2^(S-1)) / 2^S), clamped. Channel axis 1."""
    acc = np.asarray(acc, np.int64)
    out = np.zeros(acc.shape, np.int64)
    for idx in np.ndindex(*acc.shape):
        c = idx[1]
        v = int(acc[idx]) * int(M[c]) + int(B[c]) + (1 << (S - 1))
        if res is not None:
            v += int(res[idx]) * (1 << res_shift)
        q = v // (1 << S)          # Python floor division == arithmetic shift
        out[idx] = min(max(q, lo), hi)
    return out


def gap_acc_naive(x):
    x = np.asarray(x, np.int64)
    n, c = x.shape[:2]
    out = np.zeros((n, c), np.int64)
    for b in range(n):
        for ci in range(c):
            out[b, ci] = sum(int(v) for v in x[b, ci].ravel())
    return out


def forward_naive(qm, inputs):
    """The whole integer network with the naive kernels (tiny models only)."""
    ts = [np.asarray(inputs, np.int64)]
    for i, L in enumerate(qm.layers):
        x = ts[L["input"]]
        if L["type"] == "gap":
            acc = gap_acc_naive(x)
        else:
            if L["op"] == "shift":
                w = (qm.arrays[f"{i}.sign"], qm.arrays[f"{i}.shift"])
            else:
                w = qm.arrays[f"{i}.w"]
            if L["type"] == "fc":
                acc = conv_acc_naive(L["op"], x[:, :, None, None], w,
                                     acc_bits=L["acc_bits"])[:, :, 0, 0]
            else:
                acc = conv_acc_naive(L["op"], x, w, L["stride"], L["padding"], L["groups"],
                                     acc_bits=L["acc_bits"])
        res = ts[L["residual"]] if L.get("residual") is not None else None
        ts.append(requantize_naive(acc, qm.arrays[f"{i}.M"], qm.arrays[f"{i}.B"], L["S"],
                                   L["lo"], L["hi"], res, L.get("res_shift") or 0))
    return ts
