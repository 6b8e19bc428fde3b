"""Random but valid integer models for tests and hardware testbenches (no torch needed).

    qm = random_qmodel([("conv", "mul", 4, 3, 1), ("dw", "adder", 3, 2), ...], seed=0)

Layer specs (the previous tensor is the input):

* ``("conv", op, out_ch, kernel, stride[, relu])``: standard / pointwise conv, padding k//2
* ``("dw", op, kernel, stride[, relu])``: depthwise, padding k//2
* ``("group", op, out_ch, kernel, stride, groups[, relu])``: grouped conv
* ``("res", op, kernel[, back])``: ``op`` layer (stride 1, no ReLU) plus a residual from
  the tensor ``back`` layers before its input (default 0: its input), whose shape its
  output takes
* ``("gap",)`` and ``("fc", op, out_ch)`` (the last layer gets 16-bit outputs)

Weights are uniform over their full ranges; M, B, S are drawn so outputs use their range.
Accumulator and requantisation widths come from the proof in ``sw.golden.model``.
"""
from __future__ import annotations

import numpy as np

from . import model as gm


def random_qmodel(specs, seed=0, input_shape=(1, 8, 8), pixel_shift=1, exp_bits=3,
                  name="random"):
    rng = np.random.default_rng(seed)
    tensors = [{"shape": list(input_shape), "scale": 1.0, "lo": 0, "hi": 255 >> pixel_shift,
                "bits": 8}]
    layers, arrays = [], {}
    for i, spec in enumerate(specs):
        kind = spec[0]
        last = i == len(specs) - 1
        cur = len(tensors) - 1
        T = tensors[cur]
        L = {"name": f"l{i}.{kind}", "input": cur, "output": i + 1, "residual": None}
        relu = True
        if kind == "gap":
            c = T["shape"][0]
            L.update(type="gap", op=None, out_ch=c, in_hw=T["shape"][1:])
            out_shape = [c]
            relu = T["lo"] == 0
        else:
            if kind == "fc":
                _, op, o = spec
                c = T["shape"][0]
                k, s, g, p = 1, 1, 1, 0
                out_shape = [o]
                relu = False
                typ = "fc"
            else:
                typ = "conv"
                c, h, w = T["shape"]
                if kind == "conv":
                    op, o, k, s = spec[1:5]
                    g = 1
                    relu = spec[5] if len(spec) > 5 else True
                elif kind == "dw":
                    op, k, s = spec[1:4]
                    o, g = c, c
                    relu = spec[4] if len(spec) > 4 else True
                elif kind == "group":
                    op, o, k, s, g = spec[1:6]
                    relu = spec[6] if len(spec) > 6 else True
                elif kind == "res":
                    op, k = spec[1:3]
                    src = cur - (spec[3] if len(spec) > 3 else 0)
                    if tensors[src]["shape"][1:] != [h, w]:
                        raise ValueError(f"{spec!r}: the residual's shape "
                                         f"{tensors[src]['shape']} is not {c}x{h}x{w}'s")
                    o, s, g = tensors[src]["shape"][0], 1, 1
                    relu = False
                    L["residual"] = src
                else:
                    raise ValueError(f"unknown layer spec {spec!r}")
                p = k // 2
                out_shape = [o, (h + 2 * p - k) // s + 1, (w + 2 * p - k) // s + 1]
            L.update(type=typ, op=op, out_ch=o, in_ch=c, kernel=k, stride=s, padding=p,
                     groups=g)
            wshape = (o, c // g, k, k)
            if op == "shift":
                arrays[f"{i}.sign"] = rng.integers(-1, 2, wshape).astype(np.int8)
                arrays[f"{i}.shift"] = rng.integers(0, 1 << exp_bits, wshape).astype(np.uint8)
                L["exp_bits"] = exp_bits
            elif op == "adder":
                arrays[f"{i}.w"] = rng.integers(T["lo"], T["hi"] + 1, wshape).astype(np.int8)
                L["w_bits"] = 8
            else:
                arrays[f"{i}.w"] = rng.integers(-127, 128, wshape).astype(np.int8)
                L["w_bits"] = 8
        bits = 16 if last else 8
        hi = (1 << (bits - 1)) - 1
        lo = 0 if relu else -hi - 1
        L.update(lo=lo, hi=hi, relu=relu)
        tensors.append({"shape": out_shape, "scale": 1.0, "lo": lo, "hi": hi, "bits": bits})
        layers.append(L)
        # requant: scale the typical accumulator spread to about the output range
        qm_tmp = gm.QModel({"layers": layers, "tensors": tensors}, arrays)
        amin, amax = gm.acc_bounds(qm_tmp, i)
        spread = max(1, max(amax[j] - amin[j] for j in range(len(amin))))
        S = 16
        target = (hi - lo) * 4.0 / spread          # a few times more than the full range
        M = np.clip(np.round(target * 2 ** S * rng.uniform(0.5, 1.0, L["out_ch"])
                             * rng.choice([-1, 1], L["out_ch"])), -32767, 32767)
        mid = np.array([(a + b) / 2 for a, b in zip(amin, amax)])
        B = np.round(-mid * M + rng.normal(0, 2 ** S * 4, L["out_ch"])).astype(np.int64)
        arrays[f"{i}.M"] = M.astype(np.int32)
        arrays[f"{i}.B"] = B
        L["S"] = S
        if L["residual"] is not None:
            L["res_shift"] = int(rng.integers(S - 2, S + 2))
        L["acc_bits"], L["rq_bits"] = 64, 64
    header = {"format": gm.FORMAT, "version": gm.VERSION, "name": name,
              "input": {"pixel_shift": pixel_shift}, "tensors": tensors, "layers": layers}
    header["arrays"] = {k: gm._arr_info(v) for k, v in arrays.items()}
    qm = gm.QModel(header, arrays)
    for i, b in enumerate(gm.prove(qm)):
        layers[i]["acc_bits"] = b["acc_bits"]
        layers[i]["rq_bits"] = b["rq_bits"]
    gm.validate(qm)
    return qm
