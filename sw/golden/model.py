"""The integer model of a hybrid network: file format, pure-integer forward pass, and the
proof that no accumulator (or requantisation intermediate) can overflow.

This is the golden model of the accelerator: every number the hardware produces is defined
here, in int64 numpy arithmetic, and nowhere uses a float. ``docs/integer-model.md`` is the
human description of the same contract.

    from sw.golden.model import load, forward, prove
    qm = load("archs/default/qmodel.npz")      # QModelError (one line) when unusable
    logits = forward(qm, images)               # uint8 [N, 28, 28] -> int64 [N, classes]
    prove(qm)                                  # raises WidthError if a width is too small

Command line: ``python -m sw.golden.model info|prove|eval PATH`` (see ``main``).

Contract in short (each layer reads tensor ``input`` and writes tensor ``output``):

* tensors are signed integers in ``[lo, hi]`` (``lo = 0`` after a ReLU): int8 between
  layers, ``out_bits`` (16) for the logits. Tensor 0 is the image: ``x = pixel >> pixel_shift``.
* ``conv`` (standard, depthwise, grouped, pointwise) and ``fc``: one PE term per tap,
  ``mul: x*w``, ``shift: sign*(x << shift)``, ``adder: -|x - w|`` (sw/golden/pe.py); zero
  padding feeds ``x = 0``; accumulated in ``acc_bits`` two's complement.
* ``gap``: ``acc = sum`` of the ``H*W`` values of a channel.
* requantisation, once per output:
  ``y = clamp((acc*M[c] + B[c] + (res << res_shift) + (1 << (S-1))) >> S, lo, hi)``
  (``>>`` arithmetic, i.e. floor; ``res`` only for layers with a residual input).
"""
from __future__ import annotations

import argparse
import json
import sys
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .pe import wrap

FORMAT = "hybrid-qmodel"
VERSION = 1
LAYER_TYPES = ("conv", "fc", "gap")
OPS = ("mul", "shift", "adder")
M_BITS = 16            # requant multiplier: signed 16 bit (one SB_MAC16 / MULT18X18D port)
MAX_S = 62             # requant shift: 1..62
MAX_EXP_BITS = 5       # shift exponent code: at most 5 bits (shifts 0..31)
FAST_ADDER_BATCH = 16  # adder layers of this many images or more use sw.kernels.adder2d_int


class QModelError(ValueError):
    """An unusable integer model (missing, corrupt, inconsistent file); one-line message."""


class WidthError(QModelError):
    """A stored accumulator / requantisation width is narrower than the proven worst case."""


# ----------------------------------------------------------------------------------------
# the model object
# ----------------------------------------------------------------------------------------
@dataclass
class QModel:
    """``header`` (JSON-able dict) + ``arrays`` (name -> integer numpy array)."""

    header: dict
    arrays: dict

    @property
    def layers(self):
        return self.header["layers"]

    @property
    def tensors(self):
        return self.header["tensors"]

    @property
    def name(self):
        return self.header.get("name", "?")

    def weights(self, i):
        """Integer weights of layer ``i`` as int64: ``w`` (mul/adder) or ``sign << shift``
        (shift; exactly the product the shift PE forms), None for gap."""
        L = self.layers[i]
        if L["type"] == "gap":
            return None
        if L["op"] == "shift":
            sign = self.arrays[f"{i}.sign"].astype(np.int64)
            return sign * (np.int64(1) << self.arrays[f"{i}.shift"].astype(np.int64))
        return self.arrays[f"{i}.w"].astype(np.int64)

    def save(self, path):
        return save(self, path)


def _signed_bits(v):
    """Bits of the narrowest two's-complement integer holding the Python int ``v``."""
    v = int(v)
    return (v if v >= 0 else -v - 1).bit_length() + 1


def _arr_info(a):
    a = np.ascontiguousarray(a)
    return {"dtype": a.dtype.str, "shape": list(a.shape),
            "crc32": zlib.crc32(a.tobytes()) & 0xFFFFFFFF}


# ----------------------------------------------------------------------------------------
# save / load / validate
# ----------------------------------------------------------------------------------------
def save(qm, path):
    """Write ``qm`` as one ``.npz`` (arrays + a JSON header entry with array checksums)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    header = dict(qm.header)
    header["format"], header["version"] = FORMAT, VERSION
    header["arrays"] = {k: _arr_info(v) for k, v in sorted(qm.arrays.items())}
    validate(QModel(header, qm.arrays))
    blob = np.frombuffer(json.dumps(header, sort_keys=True).encode(), np.uint8)
    tmp = path.with_name(path.name + ".tmp.npz")
    np.savez_compressed(tmp, __header__=blob, **qm.arrays)
    tmp.replace(path)
    qm.header = header
    return path


def load(path, verify=True):
    """Read an integer model file; any problem raises QModelError with a one-line message."""
    path = Path(path)
    if not path.is_file():
        raise QModelError(f"{path}: no such integer model file (run `python -m sw.quant` "
                          "to make one)")
    try:
        with np.load(path, allow_pickle=False) as z:
            if "__header__" not in z.files:
                raise QModelError(f"{path}: not an integer model (no __header__ entry)")
            header = json.loads(z["__header__"].tobytes().decode())
            arrays = {k: z[k] for k in z.files if k != "__header__"}
    except QModelError:
        raise
    except (zipfile.BadZipFile, EOFError, OSError, ValueError, KeyError,
            UnicodeDecodeError, zlib.error) as e:
        msg = str(e).splitlines()[0] if str(e) else ""
        raise QModelError(f"{path}: corrupt or unreadable integer model "
                          f"({type(e).__name__}: {msg})") from None
    qm = QModel(header, arrays)
    try:
        validate(qm, check_crc=True)
    except QModelError as e:
        raise QModelError(f"{path}: {e}") from None
    if verify:
        try:
            prove(qm)
        except WidthError as e:
            raise WidthError(f"{path}: {e}") from None
    return qm


def _need(cond, msg):
    if not cond:
        raise QModelError(msg)


def _is_int(v):
    return isinstance(v, int) and not isinstance(v, bool)


def validate(qm, check_crc=False):
    """Structural checks of header and arrays (format, version, fields, shapes, dtypes,
    value ranges, checksums). Raises QModelError naming the first problem."""
    h = qm.header
    _need(isinstance(h, dict), "header is not a JSON object")
    _need(h.get("format") == FORMAT, f"not an integer model (format {h.get('format')!r}, "
          f"expected {FORMAT!r})")
    _need(h.get("version") == VERSION, f"integer model version {h.get('version')!r} is not "
          f"supported (this tool reads version {VERSION})")
    info = h.get("arrays")
    _need(isinstance(info, dict), "header.arrays missing")
    _need(set(info) == set(qm.arrays), "arrays in the file do not match the header "
          f"(missing {sorted(set(info) - set(qm.arrays))[:3]}, "
          f"extra {sorted(set(qm.arrays) - set(info))[:3]})")
    for k, a in qm.arrays.items():
        want = info[k]
        _need(a.dtype.str == want["dtype"] and list(a.shape) == want["shape"],
              f"array {k}: {a.dtype.str}{list(a.shape)} does not match the header "
              f"({want['dtype']}{want['shape']})")
        _need(a.dtype.kind in "iu", f"array {k}: dtype {a.dtype} is not an integer type")
        if check_crc:
            _need(_arr_info(a)["crc32"] == want["crc32"], f"array {k}: checksum mismatch "
                  "(file corrupted)")
    inp = h.get("input")
    _need(isinstance(inp, dict) and _is_int(inp.get("pixel_shift"))
          and 0 <= inp["pixel_shift"] <= 8, "header.input.pixel_shift missing or invalid")
    tensors, layers = h.get("tensors"), h.get("layers")
    _need(isinstance(tensors, list) and tensors, "header.tensors missing")
    _need(isinstance(layers, list) and layers, "header.layers missing")
    _need(len(tensors) == len(layers) + 1, f"{len(tensors)} tensors for {len(layers)} layers "
          "(expected layers + 1)")
    for t, T in enumerate(tensors):
        where = f"tensors[{t}]"
        _need(isinstance(T, dict), f"{where}: not an object")
        for f in ("shape", "lo", "hi", "bits"):
            _need(f in T, f"{where}.{f}: missing")
        _need(_is_int(T["bits"]) and 2 <= T["bits"] <= 32, f"{where}.bits: invalid")
        lim = 1 << (T["bits"] - 1)
        _need(_is_int(T["lo"]) and _is_int(T["hi"]) and -lim <= T["lo"] <= 0 <= T["hi"] < lim,
              f"{where}: [lo, hi] = [{T['lo']}, {T['hi']}] must contain 0 and fit "
              f"{T['bits']} bits")
        _need(isinstance(T["shape"], list) and all(_is_int(s) and s > 0 for s in T["shape"]),
              f"{where}.shape: invalid")
    T0 = tensors[0]
    _need(T0["lo"] == 0 and T0["hi"] == 255 >> inp["pixel_shift"],
          "tensors[0]: range must be [0, 255 >> pixel_shift]")
    for i, L in enumerate(layers):
        _validate_layer(qm, i, L, tensors)


def _validate_layer(qm, i, L, tensors):
    where = f"layers[{i}] ({L.get('name', '?') if isinstance(L, dict) else '?'})"
    _need(isinstance(L, dict), f"{where}: not an object")
    for f in ("type", "input", "output", "out_ch", "acc_bits", "S", "lo", "hi"):
        _need(f in L, f"{where}.{f}: missing")
    typ = L["type"]
    _need(typ in LAYER_TYPES, f"{where}.type: {typ!r} is not one of {', '.join(LAYER_TYPES)}")
    _need(L["output"] == i + 1, f"{where}.output: must be {i + 1}")
    _need(_is_int(L["input"]) and 0 <= L["input"] <= i, f"{where}.input: must name an "
          "earlier tensor")
    Tin, Tout = tensors[L["input"]], tensors[L["output"]]
    _need(L["lo"] == Tout["lo"] and L["hi"] == Tout["hi"], f"{where}: lo/hi differ from "
          f"tensors[{i + 1}]")
    res = L.get("residual")
    if res is not None:
        _need(_is_int(res) and 0 <= res <= i, f"{where}.residual: must name an earlier tensor")
        _need(tensors[res]["shape"] == Tout["shape"], f"{where}.residual: shape "
              f"{tensors[res]['shape']} differs from the output {Tout['shape']}")
        _need(_is_int(L.get("res_shift")) and 0 <= L["res_shift"] <= L["S"] + 8,
              f"{where}.res_shift: invalid")
    _need(_is_int(L["S"]) and 1 <= L["S"] <= MAX_S, f"{where}.S: must be in 1..{MAX_S}")
    _need(_is_int(L["acc_bits"]) and 2 <= L["acc_bits"] <= 64, f"{where}.acc_bits: invalid")
    O = L["out_ch"]
    for name, lo_, hi_ in (("M", -(1 << (M_BITS - 1)), (1 << (M_BITS - 1)) - 1),
                           ("B", -(1 << 62), 1 << 62)):
        a = qm.arrays.get(f"{i}.{name}")
        _need(a is not None and a.shape == (O,), f"{where}: array {i}.{name} missing or not "
              f"[{O}]")
        _need(a.size == 0 or (int(a.min()) >= lo_ and int(a.max()) <= hi_),
              f"{where}: {name} outside [{lo_}, {hi_}]")
    if typ == "gap":
        _need(len(Tin["shape"]) == 3 and Tout["shape"] == [Tin["shape"][0]],
              f"{where}: gap maps [C, H, W] to [C]")
        _need(O == Tin["shape"][0], f"{where}.out_ch: must equal the input channels")
        return
    for f in ("op", "in_ch", "kernel", "stride", "padding", "groups"):
        _need(f in L, f"{where}.{f}: missing")
    op = L["op"]
    _need(op in OPS, f"{where}.op: {op!r} is not one of {', '.join(OPS)}")
    C, K, s, p, g = L["in_ch"], L["kernel"], L["stride"], L["padding"], L["groups"]
    _need(all(_is_int(v) and v >= 1 for v in (C, O, K, s, g)) and _is_int(p) and p >= 0,
          f"{where}: in_ch/out_ch/kernel/stride/groups must be positive, padding >= 0")
    _need(C % g == 0 and O % g == 0, f"{where}: channels not divisible by groups")
    if typ == "fc":
        _need(Tin["shape"] == [C] and Tout["shape"] == [O] and K == 1 and s == 1 and p == 0
              and g == 1, f"{where}: fc maps [in_ch] to [out_ch] (kernel 1, no padding)")
    else:
        _need(len(Tin["shape"]) == 3 and Tin["shape"][0] == C, f"{where}: input tensor "
              f"shape {Tin['shape']} does not have {C} channels")
        h, w = Tin["shape"][1:]
        oh, ow = (h + 2 * p - K) // s + 1, (w + 2 * p - K) // s + 1
        _need(oh >= 1 and ow >= 1 and Tout["shape"] == [O, oh, ow], f"{where}: output "
              f"tensor shape {Tout['shape']} should be {[O, oh, ow]}")
    wshape = (O, C // g, K, K)
    if op == "shift":
        eb = L.get("exp_bits")
        _need(_is_int(eb) and 1 <= eb <= MAX_EXP_BITS, f"{where}.exp_bits: must be in "
              f"1..{MAX_EXP_BITS}")
        sg, sh = qm.arrays.get(f"{i}.sign"), qm.arrays.get(f"{i}.shift")
        _need(sg is not None and sh is not None and sg.shape == wshape and sh.shape == wshape,
              f"{where}: arrays {i}.sign/{i}.shift missing or not {list(wshape)}")
        _need(np.isin(sg, (-1, 0, 1)).all(), f"{where}: sign outside {{-1, 0, 1}}")
        _need(int(sh.min()) >= 0 and int(sh.max()) < (1 << eb), f"{where}: shift outside "
              f"0..{(1 << eb) - 1}")
    else:
        w = qm.arrays.get(f"{i}.w")
        _need(w is not None and w.shape == wshape, f"{where}: array {i}.w missing or not "
              f"{list(wshape)}")
        wb = L.get("w_bits", 8)
        _need(_is_int(wb) and 2 <= wb <= 16, f"{where}.w_bits: invalid")
        lim = 1 << (wb - 1)
        _need(w.size == 0 or (int(w.min()) >= -lim and int(w.max()) < lim),
              f"{where}: weights outside {wb}-bit range")


# ----------------------------------------------------------------------------------------
# integer layer kernels (int64 only)
# ----------------------------------------------------------------------------------------
def _int(a):
    """Assert an integer array (the pass must never touch floats) and make it int64."""
    a = np.asarray(a)
    if a.dtype.kind not in "iu":
        raise TypeError(f"integer model pass got a {a.dtype} array")
    return a.astype(np.int64, copy=False)


def image_to_input(images, pixel_shift=1):
    """uint8 images [N, H, W] or [N, C, H, W] -> int64 [N, C, H, W] = pixel >> pixel_shift."""
    images = np.asarray(images)
    if images.dtype != np.uint8:
        raise TypeError(f"images must be uint8 pixels, got {images.dtype}")
    if images.ndim == 3:
        images = images[:, None]
    return images.astype(np.int64) >> pixel_shift


def _windows(x, k, stride, padding):
    """x [N, C, H, W] -> (view [N, C, OH, OW, K, K] of the zero-padded input, OH, OW)."""
    if padding:
        x = np.pad(x, ((0, 0), (0, 0), (padding, padding), (padding, padding)))
    win = np.lib.stride_tricks.sliding_window_view(x, (k, k), axis=(2, 3))
    win = win[:, :, ::stride, ::stride]
    return win, win.shape[2], win.shape[3]


def conv_acc(op, x, w, stride=1, padding=0, groups=1):
    """Accumulators of a conv-like layer: int64 x [N, C, H, W], weights [O, C//g, K, K]
    (for ``op == "shift"`` the product weight ``sign << shift``) -> int64 [N, O, OH, OW].

    ``acc[n, o, i, j] = sum_{c, kh, kw} term(x_pad[n, g*Cg + c, i*s + kh, j*s + kw], w[o, c,
    kh, kw])`` with the PE term of ``op``; padding taps see ``x = 0`` (so an adder tap there
    adds ``-|w|``). ``sign * (x << shift) == x * (sign << shift)`` exactly, so mul and shift
    share the product path."""
    x, w = _int(x), _int(w)
    if op not in OPS:
        raise ValueError(f"unknown op {op!r}")
    if op == "adder" and x.shape[0] >= FAST_ADDER_BATCH:
        # The CPU adder kernel's integer path (sw/kernels): bit-identical (it keeps to
        # sums that are exact, else the int64 reference), much faster on batches. Imported
        # here so that small uses of the golden model never load torch.
        from sw.kernels import adder2d_int
        return adder2d_int(x, w, stride, padding, groups).astype(np.int64)
    n, c = x.shape[:2]
    o, cg, k, _ = w.shape
    og = o // groups
    win, oh, ow = _windows(x, k, stride, padding)
    # the adder's |x - w| fits 16 bits and its sums 32 bits for 8-bit operands: narrower
    # integer arrays make the loops ~2x faster (still exact: checked before use)
    span = int(np.abs(x).max(initial=0)) + int(np.abs(w).max(initial=0))
    narrow = op == "adder" and span < (1 << 15) and span * cg * k * k < (1 << 31)
    if narrow:
        x, w = x.astype(np.int16), w.astype(np.int16)
        win = _windows(x, k, stride, padding)[0]
    acc_t = np.int32 if narrow else np.int64
    if cg == 1:        # depthwise (and channel multipliers): one tap at a time
        src = np.arange(o) // og                      # input channel of each output
        acc = np.zeros((n, o, oh, ow), acc_t)
        for kh in range(k):
            for kw in range(k):
                xs = win[..., kh, kw]                 # [N, C, OH, OW]
                if c != o and c != 1:
                    xs = xs[:, src]
                wt = w[:, 0, kh, kw][None, :, None, None]
                if op != "adder":
                    acc += xs * wt
                else:
                    acc -= np.abs(xs - wt)
        return acc.astype(np.int64, copy=False)
    acc = np.empty((n, o, oh, ow), np.int64)
    for g in range(groups):
        xg = win[:, g * cg:(g + 1) * cg]
        wg = w[g * og:(g + 1) * og]
        if op != "adder":
            cols = xg.transpose(0, 2, 3, 1, 4, 5).reshape(n * oh * ow, cg * k * k)
            acc[:, g * og:(g + 1) * og] = (cols @ wg.reshape(og, -1).T) \
                .reshape(n, oh, ow, og).transpose(0, 3, 1, 2)
        else:
            a = np.zeros((n, og, oh, ow), acc_t)
            for ci in range(cg):
                for kh in range(k):
                    for kw in range(k):
                        a -= np.abs(xg[:, ci, None, :, :, kh, kw]
                                    - wg[None, :, ci, kh, kw, None, None])
            acc[:, g * og:(g + 1) * og] = a
    return acc


def requantize(acc, M, B, S, lo, hi, res=None, res_shift=0):
    """``clamp((acc*M[c] + B[c] + (res << res_shift) + (1 << (S-1))) >> S, lo, hi)``, the
    channel axis being axis 1; ``>>`` is the arithmetic (floor) shift."""
    acc, M, B = _int(acc), _int(M), _int(B)
    shape = (1, -1) + (1,) * (acc.ndim - 2)
    v = acc * M.reshape(shape) + B.reshape(shape) + (np.int64(1) << np.int64(S - 1))
    if res is not None:
        v = v + (_int(res) << np.int64(res_shift))
    return np.clip(v >> np.int64(S), lo, hi)


def layer_acc(qm, i, x):
    """The (un-wrapped) accumulators of layer ``i`` for its int64 input ``x``."""
    L = qm.layers[i]
    if L["type"] == "gap":
        return _int(x).sum((2, 3))
    w = qm.weights(i)
    if L["type"] == "fc":
        return conv_acc(L["op"], _int(x)[:, :, None, None], w)[:, :, 0, 0]
    return conv_acc(L["op"], x, w, L["stride"], L["padding"], L["groups"])


def run_layer(qm, i, x, res=None, check=False):
    """Layer ``i``: accumulate, wrap to ``acc_bits`` (as the PEs do), requantise."""
    L = qm.layers[i]
    acc = layer_acc(qm, i, x)
    if check:
        lim = 1 << (L["acc_bits"] - 1)
        if acc.size and (int(acc.min()) < -lim or int(acc.max()) >= lim):
            raise WidthError(f"layers[{i}] ({L.get('name')}): accumulator leaves "
                             f"{L['acc_bits']} bits")
    if L["acc_bits"] < 64:         # int64 itself is the 64-bit two's complement
        acc = wrap(acc, L["acc_bits"])
    return requantize(acc, qm.arrays[f"{i}.M"], qm.arrays[f"{i}.B"], L["S"], L["lo"],
                      L["hi"], res, L.get("res_shift", 0) or 0)


def forward(qm, images, batch=256, return_all=False, check=False, inputs=None):
    """Integer forward pass: uint8 images [N, H, W] -> int64 logits [N, classes].

    ``inputs`` (int64 [N, C, H, W], already ``pixel >> pixel_shift``) replaces ``images``.
    ``return_all`` returns the list of every tensor (0 = input) instead, unbatched.
    ``check`` raises WidthError if an accumulator leaves its width (never, once proved)."""
    x0 = image_to_input(images, qm.header["input"]["pixel_shift"]) if inputs is None \
        else _int(inputs)
    if return_all:
        return _forward_all(qm, x0, check)
    outs = [_forward_all(qm, x0[s:s + batch], check)[-1] for s in range(0, len(x0), batch)]
    if not outs:
        return np.zeros((0, qm.tensors[-1]["shape"][0]), np.int64)
    return np.concatenate(outs)


def _forward_all(qm, x0, check):
    ts = [x0]
    for i, L in enumerate(qm.layers):
        res = ts[L["residual"]] if L.get("residual") is not None else None
        ts.append(run_layer(qm, i, ts[L["input"]], res, check))
    return ts


def predict(qm, images, batch=256):
    """Class indices (argmax of the integer logits; ties go to the lowest index)."""
    return forward(qm, images, batch).argmax(1)


# ----------------------------------------------------------------------------------------
# the overflow proof
# ----------------------------------------------------------------------------------------
def acc_bounds(qm, i):
    """Exact per-output-channel [min, max] of layer ``i``'s accumulator over every input the
    producing tensor can hold (its full [lo, hi] range, not calibration data), zero padding
    included: lists of Python ints.

    Each tap's term ranges over x in [lo, hi] (which contains 0, the padding value): mul and
    shift terms are linear in x (extremes at lo or hi), the adder term -|x - w| is concave
    (minimum at an end, maximum at the point of [lo, hi] nearest w). A sum of independent
    taps reaches the sum of their extremes, and it does, for every channel, at any output
    whose window lies inside the image, so the bound is attained, not just safe."""
    L = qm.layers[i]
    T = qm.tensors[L["input"]]
    lo, hi = T["lo"], T["hi"]
    if L["type"] == "gap":
        n = int(np.prod(T["shape"][1:]))
        return [n * lo] * L["out_ch"], [n * hi] * L["out_ch"]
    w = qm.weights(i).reshape(L["out_ch"], -1)
    if L["op"] == "adder":
        tmin = -np.maximum(np.abs(lo - w), np.abs(hi - w))
        tmax = -np.abs(np.clip(w, lo, hi) - w)
    else:
        tmin = np.minimum(w * lo, w * hi)
        tmax = np.maximum(w * lo, w * hi)
    # |term| < 2^(8 + 31 + 1) and taps < 2^20: int64 sums cannot overflow here
    assert w.shape[1] < (1 << 20) and np.abs(w).max(initial=0) < (1 << 40)
    return [int(v) for v in tmin.sum(1)], [int(v) for v in tmax.sum(1)]


def layer_bounds(qm, i):
    """Proven widths of layer ``i``: accumulator and every requantisation intermediate
    (``acc*M``, ``+B``, ``+residual``, ``+round``), all in Python ints."""
    L = qm.layers[i]
    amin, amax = acc_bounds(qm, i)
    M = [int(v) for v in qm.arrays[f"{i}.M"]]
    B = [int(v) for v in qm.arrays[f"{i}.B"]]
    S = L["S"]
    if L.get("residual") is not None:
        R = qm.tensors[L["residual"]]
        rlo, rhi = R["lo"] << L["res_shift"], R["hi"] << L["res_shift"]
    else:
        rlo = rhi = 0
    rq_bits, acc_bits = 0, 0
    vmin_all, vmax_all = None, None
    for c in range(L["out_ch"]):
        acc_bits = max(acc_bits, _signed_bits(amin[c]), _signed_bits(amax[c]))
        p = (amin[c] * M[c], amax[c] * M[c])
        lo_, hi_ = min(p), max(p)
        steps = [(lo_, hi_)]
        lo_, hi_ = lo_ + B[c], hi_ + B[c]
        steps.append((lo_, hi_))
        lo_, hi_ = lo_ + rlo, hi_ + rhi
        steps.append((lo_, hi_))
        lo_, hi_ = lo_ + (1 << (S - 1)), hi_ + (1 << (S - 1))
        steps.append((lo_, hi_))
        for a, b in steps:
            rq_bits = max(rq_bits, _signed_bits(a), _signed_bits(b))
        vmin_all = lo_ >> S if vmin_all is None else min(vmin_all, lo_ >> S)
        vmax_all = hi_ >> S if vmax_all is None else max(vmax_all, hi_ >> S)
    return {
        "acc_min": min(amin, default=0), "acc_max": max(amax, default=0),
        "acc_bits": acc_bits, "rq_bits": rq_bits,
        "shifted_min": vmin_all, "shifted_max": vmax_all,
    }


def prove(qm):
    """Prove for every layer that its accumulator fits ``acc_bits`` and every requantisation
    intermediate fits ``rq_bits`` (<= 64, so the int64 pass is exact). Returns the per-layer
    bounds; raises WidthError naming the first layer whose stored width is too narrow."""
    out = []
    for i, L in enumerate(qm.layers):
        b = layer_bounds(qm, i)
        name = f"layers[{i}] ({L.get('name', '?')})"
        if b["acc_bits"] > L["acc_bits"]:
            raise WidthError(f"{name}: accumulator needs {b['acc_bits']} bits (range "
                             f"[{b['acc_min']}, {b['acc_max']}]) but acc_bits is "
                             f"{L['acc_bits']}")
        stored = L.get("rq_bits", 64)
        if b["rq_bits"] > min(stored, 64):
            raise WidthError(f"{name}: requantisation needs {b['rq_bits']} bits but rq_bits "
                             f"is {stored}")
        out.append(b)
    return out


def generic_acc_bits(L, x_bits=8):
    """Weight-independent accumulator width: term width + ceil(log2(taps)) (a design bound;
    the proof above is tighter and is what ``acc_bits`` stores)."""
    from .pe import term_width
    if L["type"] == "gap":
        taps = 1
        for s in L.get("in_hw", [1, 1]):
            taps *= s
        return x_bits + max(0, (taps - 1).bit_length())
    taps = (L["in_ch"] // L["groups"]) * L["kernel"] ** 2
    wb = L["exp_bits"] if L["op"] == "shift" else L.get("w_bits", 8)
    return term_width(L["op"], x_bits, wb) + max(0, (taps - 1).bit_length())


# ----------------------------------------------------------------------------------------
# summaries and the CLI
# ----------------------------------------------------------------------------------------
def summary(qm):
    """Lines describing every layer (type, op, shapes, acc width, S, clamp range)."""
    rows = [f"{qm.name}: {len(qm.layers)} layers, input x = pixel >> "
            f"{qm.header['input']['pixel_shift']}",
            f"{'#':>2} {'name':26s} {'type':4s} {'op':5s} {'in':>4s} {'out':>4s} {'k':>2s} "
            f"{'s':>2s} {'g':>4s} {'acc':>3s} {'rq':>3s} {'S':>3s} {'range':>12s} res"]
    for i, L in enumerate(qm.layers):
        rows.append(
            f"{i:2d} {L.get('name', ''):26s} {L['type']:4s} {L.get('op') or '-':5s} "
            f"{L.get('in_ch', L['out_ch']):4d} {L['out_ch']:4d} {L.get('kernel', 0):2d} "
            f"{L.get('stride', 0):2d} {L.get('groups', 0):4d} {L['acc_bits']:3d} "
            f"{L.get('rq_bits', 0):3d} {L['S']:3d} {'[%d, %d]' % (L['lo'], L['hi']):>12s} "
            + (f"t{L['residual']}<<{L['res_shift']}" if L.get("residual") is not None else ""))
    return rows


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m sw.golden.model",
                                 description="inspect, prove or evaluate an integer model")
    ap.add_argument("command", choices=("info", "prove", "eval"))
    ap.add_argument("path")
    ap.add_argument("--dataset", default=None, help="eval: dataset (default: the model's)")
    ap.add_argument("--limit", type=int, default=0, help="eval: first N test images only")
    args = ap.parse_args(argv)
    try:
        qm = load(args.path, verify=args.command != "info")
    except QModelError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.command == "info":
        print("\n".join(summary(qm)))
    elif args.command == "prove":
        for i, b in enumerate(prove(qm)):
            L = qm.layers[i]
            print(f"{i:2d} {L.get('name', ''):26s} acc [{b['acc_min']}, {b['acc_max']}] "
                  f"needs {b['acc_bits']} <= {L['acc_bits']} bits; requant needs "
                  f"{b['rq_bits']} <= {L.get('rq_bits', 64)} bits")
        print("OK: no accumulator or requantisation intermediate can overflow")
    else:
        from sw.datasets import load as load_data
        ds = args.dataset or qm.header.get("dataset", "fashion-mnist")
        images, labels = load_data(ds, "test")
        if args.limit:
            images, labels = images[:args.limit], labels[:args.limit]
        pred = predict(qm, images)
        acc = float((pred == labels).mean())
        print(f"{ds} test: integer accuracy {100 * acc:.2f}% ({len(labels)} images)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
