"""The default-rule mapper, the Verilog generator CLI and the whole-network simulation CLI."""
import json

import pytest

from hw import generate
from hw.config import AccelConfig, ConfigError
from sim import network
from sw import mapper
from sw.golden import model as golden
from sw.golden.random_model import random_qmodel

SPECS = [("conv", "mul", 8, 3, 1), ("dw", "shift", 3, 2), ("conv", "adder", 12, 1, 1),
         ("res", "adder", 1), ("conv", "shift", 16, 1, 1), ("gap",), ("fc", "mul", 10)]


@pytest.fixture(scope="module")
def qmodel_path(tmp_path_factory):
    path = tmp_path_factory.mktemp("q") / "qmodel.npz"
    golden.save(random_qmodel(SPECS, seed=2), path)
    return path


@pytest.mark.parametrize("rule", ["proportional", "balanced"])
def test_default_config_fits_budget(rule):
    qm = random_qmodel(SPECS, seed=2)
    cfg = mapper.default_config(qm, "icebreaker", rule=rule)
    cost = sum(mapper.PE_COST[name] * c.lanes for name, _, c in cfg.chunks)
    assert cost <= mapper.BOARD_LANES["icebreaker"] + 2          # rounding of the rule
    assert {name for name, _, _ in cfg.chunks} == {"clp", "slp", "alp"}
    assert all(c.lanes >= cfg.word_bytes for _, _, c in cfg.chunks)
    assert all(c.acc_width >= max(L["acc_bits"] for L in qm.layers
                                  if L["type"] != "gap" and mapper.layer_chunk(qm, L) == name)
               for name, _, c in cfg.chunks)


def test_bad_board_and_rule():
    qm = random_qmodel(SPECS, seed=2)
    with pytest.raises(ConfigError, match="board: 'de10'"):
        mapper.default_config(qm, "de10")
    with pytest.raises(ConfigError, match="rule: 'best'"):
        mapper.default_config(qm, "icebreaker", rule="best")


def test_cli_map_generate_and_errors(qmodel_path, tmp_path, capsys):
    assert mapper.main(["--qmodel", str(qmodel_path), "--board", "ulx3s-85f",
                        "--out", str(tmp_path)]) == 0
    cfg = AccelConfig.load(tmp_path / "accel.json")
    assert cfg.slots == mapper.BOARD_SLOTS["ulx3s-85f"]
    assert generate.main(["--accel", str(tmp_path / "accel.json"), "--out", str(tmp_path)]) == 0
    assert "module accel" in (tmp_path / "accel.v").read_text()
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(dict(cfg.to_dict(), word_bytes=3)))
    assert generate.main(["--accel", str(bad), "--out", str(tmp_path)]) == 2
    assert "word_bytes: 3 must be a power of two" in capsys.readouterr().err
    assert mapper.main(["--qmodel", str(tmp_path / "missing.npz"), "--out", str(tmp_path)]) == 2


def test_network_simulation_cli(qmodel_path, tmp_path, capsys):
    assert mapper.main(["--qmodel", str(qmodel_path), "--out", str(tmp_path),
                        "--slots", "2"]) == 0
    assert network.main(["--qmodel", str(qmodel_path), "--accel", str(tmp_path / "accel.json"),
                         "--images", "5", "--dataset", "random"]) == 0
    out = capsys.readouterr().out
    assert "PASS: logits bit-exact with the golden model on all 5 images" in out
