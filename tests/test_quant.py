"""Quantisation (sw.quant): graph == Net, the integer model == the fake-quantised float graph,
exact adder clamping, shift exponent capping, requant parameters, QAT, and the CLI.

A tiny hybrid net (conv stem, shift / adder / conv blocks with residuals, stride 2, a 5x5
adder depthwise) is trained for two short epochs on 3000 Fashion-MNIST images (~10 s)."""
import copy
import json

import numpy as np
import pytest
import torch

from sw import arch as arch_mod
from sw.golden import model as gm
from sw.quant import core, pipeline
from sw.quant.graph import build_graph, float_forward

TINY = {"name": "tiny", "dataset": "fashion-mnist",
        "stem": {"channels": 8, "kernel": 3, "stride": 2},
        "blocks": [{"op": "shift", "kernel": 3, "expansion": 3, "stride": 1, "out_channels": 8},
                   {"op": "adder", "kernel": 3, "expansion": 3, "stride": 2, "out_channels": 12},
                   {"op": "adder", "kernel": 5, "expansion": 1, "stride": 1, "out_channels": 12},
                   {"op": "conv", "kernel": 3, "expansion": 3, "stride": 1, "out_channels": 16}]}


@pytest.fixture(scope="module")
def data():
    from sw.datasets import load
    x, y = load("fashion-mnist", "train")
    xt, yt = load("fashion-mnist", "test")
    return x[:6000], y[:6000], xt[:1000], yt[:1000]


@pytest.fixture(scope="module")
def trained(data, tmp_path_factory):
    from sw.train import TrainConfig, load_model, train
    torch.set_num_threads(1)      # pytest runs with -n 2: one thread per worker
    x, y, xt, yt = data
    out = tmp_path_factory.mktemp("tiny")
    arch = arch_mod.Arch.from_dict(TINY)
    train(arch, TrainConfig(epochs=2, batch_size=32, warmup_epochs=0.1, lr=0.05),
          out, data=((x[:3000], y[:3000]), (xt[:200], yt[:200])), log=lambda s: None)
    net, arch, _ = load_model(out / "checkpoint.pt")
    return net, out / "checkpoint.pt"


@pytest.fixture(scope="module")
def quantised(trained, data):
    net, _ = trained
    x, y, _, _ = data
    nodes, tq, cfg, info = pipeline.quantize(net, x, y, calib_n=256, val_n=300,
                                             log=lambda s: None)
    qm = core.export(nodes, tq, cfg, {"name": "tiny"})
    return nodes, tq, cfg, qm


def test_graph_equals_net(trained):
    net, _ = trained
    x = torch.rand(5, 1, 28, 28)
    with torch.no_grad():
        torch.testing.assert_close(float_forward(build_graph(net), x), net(x), rtol=0,
                                   atol=0)


def test_integer_model_equals_fakequant_graph(quantised, data):
    """The float64 fake-quantised graph is bit-exact with the integer pass on every tensor;
    in float32 (the QAT graph) and with unquantised requant multipliers (the PTQ ideal) a
    small documented fraction of argmaxes may differ."""
    nodes, tq, cfg, qm = quantised
    _, _, xt, yt = data
    ints = gm.forward(qm, xt[:300], return_all=True)
    with torch.no_grad():
        fq = core.fakequant_forward(nodes, tq, core.pixels_to_q(xt[:300]), cfg, keep=True)
    for t, (a, b) in enumerate(zip(ints, fq)):
        assert a.dtype == np.int64
        np.testing.assert_array_equal(a, b.numpy().astype(np.int64), err_msg=f"tensor {t}")
    pi = gm.predict(qm, xt)
    assert (pi == pipeline.predict_fakequant(nodes, tq, cfg, xt)).all()
    p32 = pipeline.predict_fakequant(nodes, tq, cfg, xt, dtype=torch.float32)
    assert (p32 == pi).mean() >= 0.995
    pfm = pipeline.predict_fakequant(nodes, tq, cfg, xt, exact=False)
    assert (pfm == pi).mean() >= 0.97
    with torch.no_grad():      # the training-mode graph computes the same values
        lt = core.fakequant_forward(nodes, tq, core.pixels_to_q(xt[:200]), cfg, train=True)
    assert (lt.argmax(1).numpy() == pi[:200]).mean() >= 0.99
    acc_f = (pipeline.predict_float(nodes, xt) == yt).mean()
    acc_i = (pi == yt).mean()
    assert acc_f > 0.4 and abs(acc_f - acc_i) < 0.05


def test_model_file_widths_and_proof(quantised, tmp_path):
    nodes, tq, cfg, qm = quantised
    back = gm.load(qm.save(tmp_path / "q.npz"))
    bounds = gm.prove(back)
    for L, b in zip(back.layers, bounds):
        assert b["acc_bits"] == L["acc_bits"] <= L["acc_bits_generic"]
        assert b["rq_bits"] <= L["rq_bits"] <= 64
        M = back.arrays[f"{back.layers.index(L)}.M"]
        assert np.abs(M).max() <= 32767
        # S is the largest shift for which the largest multiplier fits 16 bits
        if L.get("residual") is None:
            assert 2 * np.abs(M).max() + 1 > 32767
    kinds = {(L["type"], L.get("op")) for L in back.layers}
    assert {("conv", "mul"), ("conv", "shift"), ("conv", "adder"), ("gap", None),
            ("fc", "mul")} <= kinds
    assert sum(L.get("residual") is not None for L in back.layers) == 2


def test_adder_clamping_is_exact(quantised, data):
    """Adder weights outside the input's range are clamped to it; |x - w| = |x - q| +
    |w - q| for every x in range, so the float layer equals the integer one plus the
    per-channel constant folded into the bias."""
    nodes, tq, cfg, _ = quantised
    n = next(n for n in nodes if n.op == "adder" and n.module.kernel == 1)
    tin = tq[n.input]
    node = copy.copy(n)
    node.module = copy.deepcopy(n.module)
    with torch.no_grad():
        w = node.module.weight
        w.copy_(torch.round(w / tin.scale) * tin.scale)           # on the grid ...
        w[0, :3] = (tin.hi + 40.3) * tin.scale                      # ... except far above
        w[1, :2] = (tin.lo - 17.6) * tin.scale                      # and below the range
        ql = core.quant_layer(node, tin, cfg)
        assert ql.stats["w_clamped"] == 5
        xq = torch.randint(tin.lo, tin.hi + 1, (4, node.module.in_ch, 5, 5)).float()
        acc = core.layer_acc(node, ql, xq, tin.scale)
        real = node.module(xq * tin.scale)                        # the float layer
        rebuilt = ql.alpha.view(1, -1, 1, 1) * acc + ql.corr.view(1, -1, 1, 1)
        torch.testing.assert_close(rebuilt, real, rtol=1e-5, atol=1e-4)


def test_shift_exponent_window():
    w = torch.tensor([1.0, -0.5, 0.25, 2 ** -5, -(2 ** -6), 2 ** -7, 0.0, 2 ** -3.8])
    sign = torch.sign(w).to(torch.int8)
    exponent = torch.round(torch.log2(w.abs().clamp_min(2 ** -9))).to(torch.int64)
    exponent = exponent.masked_fill(sign == 0, 0)
    s2, e2, capped = core.cap_shift_exponents(w, sign, exponent, exp_bits=2)
    # window of 4 exponents below the largest (0): -3..0
    assert capped == 4
    nz = s2 != 0
    assert int(e2[nz].min()) >= -3 and int(e2[nz].max()) == 0
    assert s2.tolist() == [1, -1, 1, 0, 0, 0, 0, 1]       # 2^-3.8 >= 2^-4: up to 2^-3
    assert e2.tolist()[-1] == -3


def test_requant_params_fit_and_round():
    cfg = core.QConfig()
    for top in (1e-6, 0.37, 1.0, 3.9, 1000.0):
        S = core.choose_shift(top, cfg)
        assert np.floor(top * 2.0 ** S + 0.5) <= 32767
        if S < 40:
            assert np.floor(top * 2.0 ** (S + 1) + 0.5) > 32767


def test_fakequant_gradients_match_float_graph(trained, quantised, data):
    """The QAT graph's weight gradients are those of the float network (straight-through
    rounding only: clamps, hence ReLUs, still stop the gradient), not amplified per layer."""
    import torch.nn.functional as F
    net, _ = trained
    nodes, tq, cfg, _ = quantised
    x, y, _, _ = data
    yb = torch.as_tensor(y[:128]).long()
    net.zero_grad()
    F.cross_entropy(net(torch.as_tensor(x[:128, None]).float() / 255), yb).backward()
    gf = {n: p.grad.norm().item() for n, p in net.named_parameters()}
    net.zero_grad()
    logits = core.fakequant_forward(nodes, tq, core.pixels_to_q(x[:128]), cfg, train=True)
    F.cross_entropy(logits, yb).backward()
    for n, p in net.named_parameters():
        if n.endswith("op.weight") or n.startswith("classifier"):
            ratio = p.grad.norm().item() / max(gf[n], 1e-12)
            assert 0.33 < ratio < 3.0, (n, ratio)
    net.zero_grad()


def test_qat_steps_and_export(trained, quantised, data):
    from sw.quant.qat import qat_finetune
    net, _ = trained
    _, tq, cfg, _ = quantised
    x, y, xt, _ = data
    net2 = copy.deepcopy(net)
    nodes2 = build_graph(net2)
    before = [p.detach().clone() for p in net2.parameters()]
    hist = qat_finetune(net2, nodes2, tq, cfg, x[:256], y[:256], epochs=1, lr=0.005,
                        batch_size=64, log=lambda s: None)
    assert hist[0]["steps"] == 4 and np.isfinite(hist[0]["loss"])
    assert any(not torch.equal(a, b) for a, b in zip(before, net2.parameters()))
    qm2 = core.export(nodes2, tq, cfg, {"name": "tiny-qat"})
    gm.prove(qm2)
    assert (gm.predict(qm2, xt[:200]) ==
            pipeline.predict_fakequant(nodes2, tq, cfg, xt[:200])).all()


def test_cli_writes_model_and_report(trained, tmp_path, capsys):
    from sw.quant.__main__ import main
    _, ckpt = trained
    out = tmp_path / "q"
    rc = main(["--checkpoint", str(ckpt), "--out", str(out), "--limit", "300", "--calib",
               "128", "--val", "200", "--percentile", "99.99", "--qat", "never",
               "--threads", "1"])
    assert rc == 0
    rep = json.loads((out / "quant_report.json").read_text())
    for k in ("float_acc", "fakequant_acc", "integer_acc", "agree_int_fakequant",
              "acc_bits_max", "adder_weights_clamped", "layers"):
        assert k in rep
    assert rep["agree_int_fakequant"] == 1.0 and rep["test_images"] == 300
    qm = gm.load(out / "qmodel.npz")
    assert qm.header["name"] == "tiny" and qm.header["dataset"] == "fashion-mnist"
    assert "integer" in capsys.readouterr().out


def test_cli_errors_are_one_line(tmp_path, capsys):
    from sw.quant.__main__ import main
    assert main(["--checkpoint", str(tmp_path / "nope.pt"), "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "no such checkpoint" in err and "\n" not in err
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"\x80\x02garbage")
    assert main(["--checkpoint", str(bad), "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "\n" not in err
    assert main(["--checkpoint", str(bad), "--percentile", "abc"]) == 2
    assert "--percentile" in capsys.readouterr().err
