"""arch.json schema (sw.arch) and the networks built from it (sw.nn blocks and nets)."""
import json

import pytest
import torch

from sw import arch as A
from sw.arch import ArchError
from sw.nn import InvertedResidual, SkipBlock, build_model, count_macs_by_kind, count_params
from sw.nn.blocks import make_block

torch.set_num_threads(1)
ARCHS = ["default", "all-conv", "all-shift", "all-adder"]


def base():
    return {
        "name": "t", "dataset": "mnist", "stem": {"channels": 8},
        "blocks": [
            {"op": "conv", "kernel": 3, "expansion": 1, "stride": 1, "out_channels": 8},
            {"op": "shift", "kernel": 5, "expansion": 3, "stride": 2, "out_channels": 16},
            {"op": "adder", "kernel": 3, "expansion": 6, "stride": 1, "out_channels": 16},
            {"op": "skip", "stride": 2, "out_channels": 24},
        ],
    }


# ---------------------------------------------------------------- bundled files
@pytest.mark.parametrize("name", ARCHS)
def test_bundled_archs_load_and_round_trip(name, tmp_path):
    arch = A.load(f"archs/{name}/arch.json")
    assert arch.name == name and arch.dataset == "fashion-mnist"
    assert A.load(A.save(arch, tmp_path / "a.json")) == arch
    assert A.dumps(arch) == open(f"archs/{name}/arch.json").read()
    s = arch.summary()
    assert s["params_total"] < 100_000
    if name == "default":
        assert arch.ops_used == ["adder", "conv", "shift"]
    else:
        assert arch.ops_used == [name.split("-")[1]]


def test_comparison_nets_share_the_default_shape():
    ref = A.load("archs/default/arch.json")
    for name in ARCHS[1:]:
        a = A.load(f"archs/{name}/arch.json")
        assert [(b.kernel, b.expansion, b.stride, b.out_channels) for b in a.blocks] == \
            [(b.kernel, b.expansion, b.stride, b.out_channels) for b in ref.blocks]
        assert a.summary()["macs_total"] == ref.summary()["macs_total"]


def test_defaults_and_skip_normalisation():
    a = A.Arch.from_dict(base())
    assert a.input == (1, 28, 28) and a.num_classes == 10 and a.head_channels == 0
    assert a.shift == A.ShiftRange(-7, 0) and a.adder_eta == 0.2
    assert a.blocks[3] == A.Block("skip", 24, 2, None, None)
    assert "kernel" not in a.to_dict()["blocks"][3]
    assert A.Arch.from_dict(a.to_dict()) == a
    b = a.replace(name="u", blocks=a.blocks[:2])
    assert b.name == "u" and len(b.blocks) == 2


# ---------------------------------------------------------------- errors: exact messages
def mutate(path, value):
    d = base()
    obj = d
    keys = path.split(".")
    for k in keys[:-1]:
        obj = obj[int(k)] if isinstance(obj, list) else obj[k]
    last = keys[-1]
    if value is DELETE:
        del obj[last]
    elif isinstance(obj, list):
        obj[int(last)] = value
    else:
        obj[last] = value
    return d


DELETE = object()
ERRORS = [
    ("blocks.3.op", "conv", "blocks[3].kernel: missing required field"),
    ("blocks.1.kernel", 4, "blocks[1].kernel: 4 is not one of 3, 5"),
    ("blocks.2.expansion", 2, "blocks[2].expansion: 2 is not one of 1, 3, 6"),
    ("blocks.0.stride", 3, "blocks[0].stride: 3 is not one of 1, 2"),
    ("blocks.0.op", "mul", 'blocks[0].op: "mul" is not one of "conv", "shift", "adder", "skip"'),
    ("blocks.0.out_channels", 0, "blocks[0].out_channels: 0 is below the minimum 1"),
    ("blocks.0.out_channels", 8.0, "blocks[0].out_channels: 8.0 must be an integer (write 8)"),
    ("blocks.0.out_channels", "8", 'blocks[0].out_channels: "8" is not an integer'),
    ("blocks.0.out_channels", True, "blocks[0].out_channels: true is not an integer"),
    ("blocks.0.out_channels", DELETE, "blocks[0].out_channels: missing required field"),
    ("blocks.3.kernel", 3, "blocks[3].kernel: not allowed for a skip block"),
    ("blocks.2.kernal", 3, "blocks[2].kernal: unknown field (expected one of op, kernel, "
                           "expansion, stride, out_channels)"),
    ("blocks.1", [3], "blocks[1]: expected an object, got a list"),
    ("blocks", [], "blocks: must list at least one block"),
    ("blocks", {}, "blocks: expected a list, got an object"),
    ("blocks", DELETE, "blocks: missing required field"),
    ("name", DELETE, "name: missing required field"),
    ("name", "a/b", 'name: "a/b" must be 1-64 characters of letters, digits, \'.\', \'_\' '
                    "or '-' (it names the build directory)"),
    ("dataset", "cifar10", 'dataset: "cifar10" is not one of "mnist", "fashion-mnist"'),
    ("input", [3, 32, 32], "input: [3, 32, 32] does not match dataset mnist ([1, 28, 28])"),
    ("input", [1, 28], "input: [1, 28] is not [channels, height, width]"),
    ("num_classes", 100, "num_classes: 100 does not match dataset mnist (10 classes)"),
    ("stem", 16, "stem: expected an object, got a number"),
    ("stem.channels", DELETE, "stem.channels: missing required field"),
    ("stem.kernel", 4, "stem.kernel: 4 is not one of 3, 5"),
    ("stem.width", 4, "stem.width: unknown field (expected one of channels, kernel, stride)"),
    ("shift", {"p_min": 1, "p_max": 0}, "shift.p_min: 1 is above shift.p_max (0)"),
    ("shift", {"p_min": -32, "p_max": 0},
     "shift: [-32, 0] has 33 exponents; at most 32 (a 5-bit exponent)"),
    ("adder", {"eta": 0}, "adder.eta: 0 is not a positive number"),
    ("schema", 2, "schema: version 2 is not supported (this tool reads version 1)"),
    ("extra", 1, "extra: unknown field (expected one of schema, name, dataset, input, "
                 "num_classes, stem, blocks, head_channels, shift, adder)"),
    ("head_channels", -1, "head_channels: -1 is below the minimum 0"),
]


@pytest.mark.parametrize("path,value,message", ERRORS, ids=[e[2][:40] for e in ERRORS])
def test_validation_messages(path, value, message):
    with pytest.raises(ArchError) as e:
        A.Arch.from_dict(mutate(path, value))
    assert str(e.value) == message
    assert "\n" not in str(e.value)
    assert isinstance(e.value, ValueError)


def test_too_many_stride_two_blocks():
    d = base()
    d["blocks"] = [{"op": "skip", "stride": 2, "out_channels": 8}] * 5 + \
        [{"op": "conv", "kernel": 3, "expansion": 1, "stride": 2, "out_channels": 8}]
    with pytest.raises(ArchError, match=r"^blocks\[5\]\.stride: 2 cannot reduce the 1x1 "
                                        r"feature map any further$"):
        A.Arch.from_dict(d)


def test_top_level_not_an_object():
    with pytest.raises(ArchError, match="^expected a JSON object at the top level, got a list$"):
        A.Arch.from_dict([])


def test_load_errors_name_the_file(tmp_path):
    p = tmp_path / "arch.json"
    with pytest.raises(ArchError, match=f"^{p}: no such file$"):
        A.load(p)
    p.write_text('{"name": "x",\n "dataset": }')
    with pytest.raises(ArchError, match=rf"^{p}: invalid JSON at line 2 column 13: "
                                        "Expecting value$"):
        A.load(p)
    p.write_text(json.dumps(mutate("blocks.1.kernel", 4)))
    with pytest.raises(ArchError) as e:
        A.load(p)
    assert str(e.value) == f"{p}: blocks[1].kernel: 4 is not one of 3, 5"


def test_cli(tmp_path, capsys):
    assert A.main(["archs/default/arch.json"]) == 0
    assert "shift+adder share of MACs 76.2%" in capsys.readouterr().out
    p = tmp_path / "bad.json"
    p.write_text(json.dumps(mutate("blocks.1.kernel", 4)))
    assert A.main([str(p)]) == 2
    err = capsys.readouterr().err
    assert err == f"error: {p}: blocks[1].kernel: 4 is not one of 3, 5\n"


# ---------------------------------------------------------------- blocks and nets
def test_inverted_residual_structure():
    ir = make_block(A.Block("shift", 8, 1, 3, 1), 8)
    assert isinstance(ir, InvertedResidual) and ir.expand is None and ir.use_residual
    assert ir.depthwise.op.is_depthwise and ir.depthwise.op.kind == "shift"
    assert not ir.project.relu and ir.depthwise.relu
    ir = make_block(A.Block("adder", 16, 2, 5, 6), 8)
    assert ir.expand.op.out_ch == 48 and ir.depthwise.op.kernel == 5
    assert ir.depthwise.op.stride == 2 and ir.depthwise.op.padding == 2
    assert not ir.use_residual
    assert ir(torch.randn(2, 8, 14, 14)).shape == (2, 16, 7, 7)
    ir = make_block(A.Block("conv", 16, 1, 3, 3), 8)     # channels change: no shortcut
    assert not ir.use_residual


def test_residual_is_added():
    torch.manual_seed(0)
    ir = make_block(A.Block("conv", 8, 1, 3, 3), 8).eval()
    x = torch.randn(2, 8, 6, 6)
    body = ir.project(ir.depthwise(ir.expand(x)))
    assert torch.allclose(ir(x), body + x, atol=1e-6)


def test_skip_block():
    s = make_block(A.Block("skip", 8, 1, None, None), 8)
    assert isinstance(s, SkipBlock) and s.proj is None
    x = torch.randn(2, 8, 6, 6)
    assert torch.equal(s(x), x)
    s = make_block(A.Block("skip", 12, 2, None, None), 8)
    assert s.proj.op.kind == "conv" and s.proj.op.kernel == 1 and s.proj.relu
    assert s(x).shape == (2, 12, 3, 3)


@pytest.mark.parametrize("name", ARCHS)
def test_net_matches_layer_specs(name):
    arch = A.load(f"archs/{name}/arch.json")
    model = build_model(arch, seed=0)
    assert model(torch.randn(2, 1, 28, 28)).shape == (2, 10)
    modules = dict(model.named_modules())
    specs = arch.layers()
    macs = count_macs_by_kind(model)
    assert [n for n, _, _ in macs["layers"]] == [L.name for L in specs]
    for L, (_, kind, m) in zip(specs, macs["layers"]):
        op = modules[L.name]
        assert (op.kind, op.in_ch, op.out_ch, op.kernel, op.stride, op.padding, op.groups) == \
            (L.kind, L.in_ch, L.out_ch, L.kernel, L.stride, L.padding, L.groups)
        assert m == L.macs
    s = arch.summary()
    assert {k: macs[k] for k in ("conv", "shift", "adder")} == s["macs"]
    params = count_params(model)
    assert {k: params[k] for k in ("conv", "shift", "adder")} == s["params"]
    assert params["total"] < 100_000


def test_net_config_reaches_operators():
    d = base()
    d["shift"] = {"p_min": -5, "p_max": 1}
    d["adder"] = {"eta": 0.1}
    d["head_channels"] = 32
    model = build_model(A.Arch.from_dict(d), seed=0)
    assert model.blocks[1].expand.op.p_min == -5 and model.blocks[1].expand.op.p_max == 1
    assert model.blocks[2].project.op.eta == 0.1
    assert model.head.op.out_ch == 32 and model.classifier.in_ch == 32
    assert model(torch.randn(1, 1, 28, 28)).shape == (1, 10)


def test_build_model_seeded():
    arch = A.Arch.from_dict(base())
    a, b = build_model(arch, seed=3), build_model(arch, seed=3)
    for (n, p), (_, q) in zip(a.state_dict().items(), b.state_dict().items()):
        assert torch.equal(p, q), n
    c = build_model(arch, seed=4)
    assert not torch.equal(a.stem.op.weight, c.stem.op.weight)
