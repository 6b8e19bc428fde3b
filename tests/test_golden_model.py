"""The integer golden model: vectorised layers == naive loops on the PE terms, requantisation,
the accumulator-overflow proof (bound attained, too-narrow widths rejected), the model file
(round trip, corrupt and mismatched files), and the no-float rule."""
import json
import zipfile

import numpy as np
import pytest

from sw.golden import model as gm
from sw.golden import naive
from sw.golden.random_model import random_qmodel
from sw.kernels import adder_ref

OPS = ("mul", "shift", "adder")
# (C, O, K, stride, padding, groups): standard, strided, padded, depthwise, channel
# multiplier, grouped, pointwise, strided pointwise, 5x5
SHAPES = [
    (3, 4, 3, 1, 1, 1), (3, 4, 3, 2, 1, 1), (2, 3, 3, 1, 0, 1), (2, 3, 3, 2, 2, 1),
    (4, 4, 3, 1, 1, 4), (4, 4, 3, 2, 1, 4), (3, 6, 3, 1, 1, 3), (4, 6, 3, 1, 1, 2),
    (5, 3, 1, 1, 0, 1), (4, 3, 1, 2, 0, 1), (2, 2, 5, 1, 2, 2), (3, 2, 5, 2, 2, 1),
]


def _weights(rng, op, shape, lo=-128, hi=127):
    if op == "shift":
        return (rng.integers(-1, 2, shape), rng.integers(0, 8, shape))
    if op == "adder":
        return rng.integers(lo, hi + 1, shape)
    return rng.integers(-127, 128, shape)


def _product_weight(op, w):
    if op == "shift":
        sign, shift = w
        return np.asarray(sign, np.int64) << np.asarray(shift, np.int64)
    return np.asarray(w, np.int64)


@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "c%do%dk%ds%dp%dg%d" % s)
def test_conv_matches_naive_loops(op, shape):
    c, o, k, s, p, g = shape
    rng = np.random.default_rng(hash((op, shape)) % 2 ** 32)
    x = rng.integers(-128, 128, (2, c, 7, 6))
    w = _weights(rng, op, (o, c // g, k, k))
    got = gm.conv_acc(op, x, _product_weight(op, w), s, p, g)
    want = naive.conv_acc_naive(op, x, w, s, p, g)
    assert got.dtype == np.int64
    np.testing.assert_array_equal(got, want)
    if op == "adder":   # and the adder kernel package's integer reference
        np.testing.assert_array_equal(got, adder_ref.adder2d_int(x, w, s, p, g))


@pytest.mark.parametrize("op", OPS)
def test_fc_and_gap_match_naive(op):
    rng = np.random.default_rng(7)
    x = rng.integers(-128, 128, (3, 6))
    w = _weights(rng, op, (4, 6, 1, 1))
    got = gm.conv_acc(op, x[:, :, None, None], _product_weight(op, w))[:, :, 0, 0]
    want = naive.conv_acc_naive(op, x[:, :, None, None], w)[:, :, 0, 0]
    np.testing.assert_array_equal(got, want)
    xm = rng.integers(-128, 128, (2, 3, 4, 5))
    np.testing.assert_array_equal(xm.astype(np.int64).sum((2, 3)), naive.gap_acc_naive(xm))


def test_requantize_matches_naive_including_residual_and_edges():
    rng = np.random.default_rng(3)
    acc = rng.integers(-2 ** 20, 2 ** 20, (2, 5, 3, 3))
    acc[0, 0, 0, 0], acc[0, 1, 0, 0] = -2 ** 20, 2 ** 20 - 1
    M = rng.integers(-32768, 32768, 5)
    M[0] = -32768
    B = rng.integers(-2 ** 40, 2 ** 40, 5)
    res = rng.integers(-128, 128, acc.shape)
    for S, lo, hi, r, rs in ((20, -128, 127, None, 0), (1, 0, 127, None, 0),
                             (24, -128, 127, res, 21), (30, -32768, 32767, res, 33)):
        got = gm.requantize(acc, M, B, S, lo, hi, r, rs)
        want = naive.requantize_naive(acc, M, B, S, lo, hi, r, rs)
        np.testing.assert_array_equal(got, want)
    # round half up, floor for negatives: (v + 2^(S-1)) >> S
    one = np.ones(1, np.int64)
    assert gm.requantize(np.array([[3], [-3], [5], [-5]]), one, 0 * one, 1, -9, 9).ravel() \
        .tolist() == [2, -1, 3, -2]


SPECS = [("conv", "mul", 4, 3, 1), ("dw", "shift", 3, 2), ("conv", "adder", 6, 1, 1),
         ("res", "shift", 1), ("dw", "adder", 5, 1), ("group", "mul", 6, 3, 1, 2),
         ("res", "adder", 1), ("conv", "shift", 4, 3, 2, False), ("dw", "mul", 3, 1),
         ("gap",), ("fc", "adder", 5)]


@pytest.fixture(scope="module")
def qm():
    return random_qmodel(SPECS, seed=11, input_shape=(1, 12, 11))


def test_forward_matches_naive_network_and_is_integer_only(qm):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (3, 12, 11)).astype(np.uint8)
    images[0] = 255          # extremes too
    images[1] = 0
    got = gm.forward(qm, images, return_all=True, check=True)
    want = naive.forward_naive(qm, gm.image_to_input(images))
    assert len(got) == len(qm.layers) + 1
    for t, (a, b) in enumerate(zip(got, want)):
        assert a.dtype == np.int64, f"tensor {t} is {a.dtype}"
        np.testing.assert_array_equal(a, b, err_msg=f"tensor {t}")
        T = qm.tensors[t]
        assert a.min() >= T["lo"] and a.max() <= T["hi"]
    np.testing.assert_array_equal(gm.forward(qm, images, batch=2), got[-1])
    with pytest.raises(TypeError):
        gm.forward(qm, images.astype(np.float32))
    with pytest.raises(TypeError):
        gm.forward(qm, None, inputs=gm.image_to_input(images).astype(np.float64))
    with pytest.raises(TypeError):
        gm.conv_acc("mul", np.zeros((1, 1, 3, 3)), np.zeros((1, 1, 1, 1), np.int64))


def _extreme_input(qm, i, c, want_max):
    """An input tensor for layer i whose channel-c accumulator at the output position (1, 1)
    hits the proven bound (every tap at the extreme that maximises / minimises its term)."""
    L = qm.layers[i]
    T = qm.tensors[L["input"]]
    lo, hi = T["lo"], T["hi"]
    w = qm.weights(i)[c]
    if L["op"] == "adder":
        best = np.clip(w, lo, hi) if want_max else \
            np.where(np.abs(lo - w) >= np.abs(hi - w), lo, hi)
    else:
        pos = w > 0
        best = np.where(pos == want_max, hi, lo)
    x = np.zeros([1] + T["shape"], np.int64)
    k, s, p, g = L["kernel"], L["stride"], L["padding"], L["groups"]
    cg = L["in_ch"] // g
    c0 = (c // (L["out_ch"] // g)) * cg
    i0 = -(-p // s)                       # first output whose window is inside the image
    r0 = i0 * s - p
    assert r0 + k <= min(T["shape"][1:]), "no interior output window"
    x[0, c0:c0 + cg, r0:r0 + k, r0:r0 + k] = best
    return x, i0


@pytest.mark.parametrize("layer", [0, 1, 2, 3, 4, 5, 6, 8])
def test_accumulator_bound_is_attained_and_fits(qm, layer):
    bounds = gm.prove(qm)[layer]
    amin, amax = gm.acc_bounds(qm, layer)
    L = qm.layers[layer]
    lim = 1 << (L["acc_bits"] - 1)
    for c in range(L["out_ch"]):
        for want_max, target in ((True, amax[c]), (False, amin[c])):
            x, i0 = _extreme_input(qm, layer, c, want_max)
            acc = gm.layer_acc(qm, layer, x)
            assert acc[0, c, i0, i0] == target
            assert -lim <= target < lim
            assert acc.min() >= min(amin) and acc.max() <= max(amax)
    assert bounds["acc_bits"] == L["acc_bits"]
    # the width is tight: one bit less cannot hold the attained extreme
    assert max(gm._signed_bits(v) for v in amin + amax) == L["acc_bits"]


def test_too_narrow_widths_are_rejected(qm, tmp_path):
    bad = gm.QModel(json.loads(json.dumps(qm.header)), dict(qm.arrays))
    bad.layers[2]["acc_bits"] -= 1
    with pytest.raises(gm.WidthError, match=r"layers\[2\].*accumulator needs"):
        gm.prove(bad)
    x, _ = _extreme_input(qm, 2, 0, True)
    with pytest.raises(gm.WidthError):
        gm.run_layer(bad, 2, x, check=True)
    path = gm.save(gm.QModel(json.loads(json.dumps(qm.header)), dict(qm.arrays)),
                   tmp_path / "ok.npz")
    bad.header["arrays"] = qm.header["arrays"]
    blob = np.frombuffer(json.dumps(bad.header).encode(), np.uint8)
    np.savez(tmp_path / "narrow.npz", __header__=blob, **bad.arrays)
    with pytest.raises(gm.WidthError, match="narrow.npz"):
        gm.load(tmp_path / "narrow.npz")
    assert gm.load(path)
    bad2 = gm.QModel(json.loads(json.dumps(qm.header)), dict(qm.arrays))
    bad2.layers[5]["rq_bits"] = 20
    with pytest.raises(gm.WidthError, match="requantisation needs"):
        gm.prove(bad2)


def test_wrapping_matches_pe_semantics(qm):
    """Narrow accumulators wrap exactly like the PE (so a wrong width is visible)."""
    bad = gm.QModel(json.loads(json.dumps(qm.header)), dict(qm.arrays))
    bad.layers[0]["acc_bits"] = 8
    x, _ = _extreme_input(qm, 0, 0, True)
    acc = gm.layer_acc(qm, 0, x)
    from sw.golden.pe import wrap
    want = gm.requantize(wrap(acc, 8), qm.arrays["0.M"], qm.arrays["0.B"],
                         qm.layers[0]["S"], qm.layers[0]["lo"], qm.layers[0]["hi"])
    np.testing.assert_array_equal(gm.run_layer(bad, 0, x), want)


def test_file_round_trip(qm, tmp_path):
    path = gm.save(qm, tmp_path / "m.npz")
    back = gm.load(path)
    assert back.header["layers"] == json.loads(json.dumps(qm.header["layers"]))
    assert set(back.arrays) == set(qm.arrays)
    for k in qm.arrays:
        assert back.arrays[k].dtype == qm.arrays[k].dtype
        np.testing.assert_array_equal(back.arrays[k], qm.arrays[k])
    images = np.random.default_rng(1).integers(0, 256, (4, 12, 11)).astype(np.uint8)
    np.testing.assert_array_equal(gm.forward(back, images), gm.forward(qm, images))
    assert gm.main(["info", str(path)]) == 0
    assert gm.main(["prove", str(path)]) == 0


def _one_line_error(path, match):
    with pytest.raises(gm.QModelError, match=match) as e:
        gm.load(path)
    assert "\n" not in str(e.value)
    assert str(path) in str(e.value)


def test_corrupt_and_mismatched_files(qm, tmp_path):
    good = gm.save(qm, tmp_path / "m.npz")
    raw = good.read_bytes()
    _one_line_error(tmp_path / "missing.npz", "no such integer model")
    (tmp_path / "trunc.npz").write_bytes(raw[: len(raw) // 2])
    _one_line_error(tmp_path / "trunc.npz", "corrupt or unreadable")
    (tmp_path / "junk.npz").write_bytes(b"not a zip file at all")
    _one_line_error(tmp_path / "junk.npz", "corrupt or unreadable")

    def rewrite(name, header=None, arrays=None, drop_header=False):
        h = json.loads(json.dumps(qm.header)) if header is None else header
        a = dict(qm.arrays) if arrays is None else arrays
        extra = {} if drop_header else {"__header__": np.frombuffer(json.dumps(h).encode(),
                                                                    np.uint8)}
        np.savez(tmp_path / name, **extra, **a)
        return tmp_path / name

    _one_line_error(rewrite("nohdr.npz", drop_header=True), "no __header__")
    h = json.loads(json.dumps(qm.header))
    h["version"] = 99
    _one_line_error(rewrite("ver.npz", header=h), "version 99 is not supported")
    h = json.loads(json.dumps(qm.header))
    h["format"] = "something-else"
    _one_line_error(rewrite("fmt.npz", header=h), "not an integer model")
    a = dict(qm.arrays)
    a["3.M"] = a["3.M"].copy()
    a["3.M"][0] += 1
    _one_line_error(rewrite("crc.npz", arrays=a), "checksum mismatch")
    a = dict(qm.arrays)
    del a["0.w"]
    _one_line_error(rewrite("miss.npz", arrays=a), "do not match the header")
    h = json.loads(json.dumps(qm.header))
    h["layers"][1]["stride"] = 1
    _one_line_error(rewrite("shape.npz", header=h), r"layers\[1\].*output tensor shape")
    h = json.loads(json.dumps(qm.header))
    h["layers"][0]["type"] = "pool"
    _one_line_error(rewrite("type.npz", header=h), r"layers\[0\].*type")
    # a flipped byte inside the compressed archive
    bad = bytearray(raw)
    with zipfile.ZipFile(good) as z:
        info = z.getinfo("0.w.npy")
    h0 = info.header_offset
    n_name = int.from_bytes(raw[h0 + 26:h0 + 28], "little")
    n_extra = int.from_bytes(raw[h0 + 28:h0 + 30], "little")
    off = h0 + 30 + n_name + n_extra + info.compress_size // 2    # inside the data
    bad[off] ^= 0xFF
    (tmp_path / "flip.npz").write_bytes(bytes(bad))
    _one_line_error(tmp_path / "flip.npz", "corrupt|checksum|does not match")
    assert gm.main(["info", str(tmp_path / "trunc.npz")]) == 2


def test_adder_batches_take_the_kernel_path_bit_exactly(monkeypatch):
    """Batches of FAST_ADDER_BATCH images or more go through sw.kernels.adder2d_int; the
    accumulators equal the numpy loops' for every shape kind, extremes included."""
    rng = np.random.default_rng(9)
    for c, o, k, s, p, g in [(5, 7, 3, 1, 1, 1), (6, 6, 3, 2, 1, 6), (4, 9, 1, 1, 0, 1)]:
        x = rng.integers(-128, 128, size=(gm.FAST_ADDER_BATCH, c, 7, 6))
        x[0, 0, 0, 0] = -128
        w = rng.integers(-128, 128, size=(o, c // g, k, k))
        w[0, 0, 0, 0] = 127
        fast = gm.conv_acc("adder", x, w, s, p, g)
        monkeypatch.setattr(gm, "FAST_ADDER_BATCH", 10 ** 9)
        slow = gm.conv_acc("adder", x, w, s, p, g)
        monkeypatch.undo()
        assert fast.dtype == np.int64 and np.array_equal(fast, slow)
