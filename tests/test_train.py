"""sw.train: a tiny real training run, resume determinism, checkpoint errors, helpers."""
import json

import numpy as np
import pytest
import torch

from sw import arch as A
from sw import train as T

TINY = {
    "name": "tiny", "dataset": "mnist", "stem": {"channels": 8},
    "blocks": [
        {"op": "conv", "kernel": 3, "expansion": 1, "stride": 2, "out_channels": 8},
        {"op": "shift", "kernel": 3, "expansion": 3, "stride": 2, "out_channels": 16},
        {"op": "adder", "kernel": 3, "expansion": 1, "stride": 1, "out_channels": 16},
    ],
}


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def data():
    x, y = T.synthetic_data(400, seed=0)
    return (x[:300], y[:300]), (x[300:], y[300:])


def cfg(**kw):
    base = dict(dataset="synthetic", epochs=2, batch_size=20, lr=0.2, warmup_epochs=0.1,
                seed=7)
    base.update(kw)
    return T.TrainConfig(**base)


def test_loss_decreases_and_report(data, tmp_path):
    arch = A.Arch.from_dict(TINY)
    rep = T.train(arch, cfg(epochs=3, augment=False), tmp_path, data=data, log=lambda s: None)
    h = rep["history"]
    assert len(h) == 3 and h[-1]["loss"] < h[1]["loss"] < h[0]["loss"] < 2.4
    assert h[-1]["loss"] < h[0]["loss"] - 0.1 and h[-1]["train_acc"] > h[0]["train_acc"]
    disk = json.loads((tmp_path / "report.json").read_text())
    assert disk["test_accuracy"] == h[-1]["test_acc"]
    assert disk["params"]["total"] == sum(p.numel() for p in T.build_model(arch).parameters())
    assert disk["macs"]["total"] == sum(L.macs for L in arch.layers())
    assert 0 < disk["mult_free_share"] < 1 and disk["seconds_per_epoch"] > 0
    assert (tmp_path / "checkpoint.pt").is_file()


def test_resume_reproduces_an_uninterrupted_run(data, tmp_path):
    arch = A.Arch.from_dict(TINY)
    quiet = lambda s: None  # noqa: E731
    full = T.train(arch, cfg(), tmp_path / "a", data=data, log=quiet)
    part = T.train(arch, cfg(), tmp_path / "b", data=data, log=quiet, stop_after=1)
    assert len(part["history"]) == 1
    logs = []
    resumed = T.train(arch, cfg(), tmp_path / "b", data=data, resume=True, log=logs.append)
    assert any("resuming" in s and "after epoch 1" in s for s in logs)
    for key in ("loss", "train_acc", "test_acc"):
        assert [h[key] for h in resumed["history"]] == [h[key] for h in full["history"]]
    ma, _, _ = T.load_model(tmp_path / "a" / "checkpoint.pt")
    mb, _, _ = T.load_model(tmp_path / "b" / "checkpoint.pt")
    for (n, p), (_, q) in zip(ma.state_dict().items(), mb.state_dict().items()):
        assert torch.equal(p, q), n
    # the loaded model evaluates to the recorded accuracy
    assert T.evaluate(ma, data[1])["accuracy"] == full["test_accuracy"]


def write_arch(tmp_path, d=TINY):
    p = tmp_path / "arch.json"
    p.write_text(json.dumps(d))
    return p


def run_cli(capsys, *args):
    rc = T.main(list(args))
    out = capsys.readouterr()
    return rc, out.out, out.err


def test_cli_corrupt_and_mismatched_checkpoint(tmp_path, capsys):
    arch_path = write_arch(tmp_path)
    out = tmp_path / "out"
    out.mkdir()
    (out / "checkpoint.pt").write_bytes(b"\x80\x04garbage" * 10)
    common = ["--arch", str(arch_path), "--dataset", "synthetic", "--out", str(out),
              "--threads", "1", "--epochs", "1", "--batch-size", "64"]
    rc, _, err = run_cli(capsys, *common, "--resume")
    assert rc == 2 and err.count("\n") == 1
    assert err.startswith(f"error: {out}/checkpoint.pt: not a readable checkpoint (")
    # a checkpoint of another architecture / other options
    other = A.Arch.from_dict({**TINY, "name": "other"})
    model = T.build_model(other)
    T.save_checkpoint(out / "checkpoint.pt", other, T.TrainConfig(dataset="synthetic",
                      epochs=1, batch_size=64), model, None, 1, [])
    rc, _, err = run_cli(capsys, *common, "--resume")
    assert rc == 2 and err == (f"error: {out}/checkpoint.pt: was trained for a different "
                               "architecture ('other'); drop --resume or pick another --out\n")
    arch = A.Arch.from_dict(TINY)
    T.save_checkpoint(out / "checkpoint.pt", arch, T.TrainConfig(dataset="synthetic",
                      epochs=1, batch_size=64, lr=0.2), T.build_model(arch), None, 1, [])
    rc, _, err = run_cli(capsys, *common, "--resume")
    assert rc == 2 and err == (f"error: {out}/checkpoint.pt: was trained with lr = 0.2, this "
                               "run has 0.1; use the same --lr or drop --resume\n")
    # a torch file that is not ours
    torch.save({"a": 1}, out / "checkpoint.pt")
    rc, _, err = run_cli(capsys, *common, "--resume")
    assert rc == 2 and err == f"error: {out}/checkpoint.pt: not a sw.train checkpoint\n"


def test_cli_bad_arch_and_options(tmp_path, capsys):
    bad = json.loads(json.dumps(TINY))
    bad["blocks"][1]["kernel"] = 4
    p = write_arch(tmp_path, bad)
    rc, _, err = run_cli(capsys, "--arch", str(p), "--dataset", "synthetic")
    assert rc == 2 and err == f"error: {p}: blocks[1].kernel: 4 is not one of 3, 5\n"
    rc, _, err = run_cli(capsys, "--arch", str(p), "--epochs", "0")
    assert rc == 2 and err == "error: --epochs must be at least 1\n"
    rc, _, err = run_cli(capsys, "--arch", str(tmp_path / "none.json"))
    assert rc == 2 and err == f"error: {tmp_path / 'none.json'}: no such file\n"


def test_cli_runs_and_resumes_finished_run(tmp_path, capsys):
    arch_path = write_arch(tmp_path)
    out = tmp_path / "o"
    common = ["--arch", str(arch_path), "--dataset", "synthetic", "--out", str(out),
              "--threads", "1", "--epochs", "1", "--batch-size", "100"]
    rc, stdout, _ = run_cli(capsys, *common)
    assert rc == 0 and "epoch   1/1  loss" in stdout and "img/s" in stdout
    assert "done: tiny on synthetic: test accuracy" in stdout
    rc, stdout, _ = run_cli(capsys, *common, "--resume")
    assert rc == 0 and "resuming" in stdout and "epoch   1/1" not in stdout
    assert json.loads((out / "report.json").read_text())["epochs"] == 1


def test_lr_schedule():
    assert T.lr_at(0, 100, 10, 1.0) == pytest.approx(0.1)
    assert T.lr_at(9, 100, 10, 1.0) == pytest.approx(1.0)
    assert T.lr_at(10, 100, 10, 1.0) == pytest.approx(1.0)
    assert T.lr_at(55, 100, 10, 1.0) == pytest.approx(0.5)
    assert T.lr_at(100, 100, 10, 1.0) == pytest.approx(0.0)


def test_augment_is_a_shifted_copy():
    x = torch.rand(16, 1, 28, 28)
    g1, g2 = torch.Generator().manual_seed(1), torch.Generator().manual_seed(1)
    a, b = T.augment(x, g1, 2, flip=True), T.augment(x, g2, 2, flip=True)
    assert torch.equal(a, b) and a.shape == x.shape
    y = T.augment(x, torch.Generator().manual_seed(2), 2, flip=False)
    xp = torch.nn.functional.pad(x, (2, 2, 2, 2))
    for i in range(16):
        assert any(torch.equal(y[i, 0], xp[i, 0, dy:dy + 28, dx:dx + 28])
                   for dy in range(5) for dx in range(5))


def test_flip_only_for_fashion_by_default():
    assert T.TrainConfig(dataset="fashion-mnist").use_flip
    assert not T.TrainConfig(dataset="mnist").use_flip
    assert not T.TrainConfig(dataset="fashion-mnist", augment=False).use_flip
    assert T.TrainConfig(dataset="mnist", flip=True).use_flip


def test_synthetic_data_deterministic():
    a, b = T.synthetic_data(50, seed=3), T.synthetic_data(50, seed=3)
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
    assert a[0].dtype == np.uint8 and a[0].shape == (50, 28, 28)


def test_gradient_clip_leaves_adder_weights_out():
    model = T.build_model(A.Arch.from_dict(TINY))
    clipped = {id(p) for p in T.clip_parameters(model)}
    adder = model.blocks[2].project.op
    assert adder.kind == "adder" and id(adder.weight) not in clipped
    assert id(model.blocks[1].project.op.weight) in clipped
    assert id(model.blocks[2].project.bn.weight) in clipped
    n_adder = sum(1 for m in model.modules() if getattr(m, "kind", None) == "adder"
                  and hasattr(m, "weight"))
    assert len(clipped) == len(list(model.parameters())) - n_adder


def test_arch_argument_forms():
    assert T.resolve_arch_path("all-conv") == T.REPO / "archs" / "all-conv" / "arch.json"
    assert T.resolve_arch_path(str(T.REPO / "archs" / "default")) == \
        T.REPO / "archs" / "default" / "arch.json"
    assert T.resolve_arch_path("x/y.json") == T.Path("x/y.json")


def test_recalibrated_batch_norm_is_the_plain_average(data):
    arch = A.Arch.from_dict(TINY)
    model = T.build_model(arch, seed=1).eval()
    images = data[0][0]
    stem_bn = model.stem.bn
    stem_bn.running_mean.fill_(123.0)                 # stale statistics
    T.recalibrate_bn(model, images, seed=3, batches=3, batch_size=50)
    assert not model.training and stem_bn.momentum == 0.1
    g = torch.Generator()
    g.manual_seed(3 + 99991)
    idx = torch.randperm(len(images), generator=g)[:150]
    with torch.no_grad():
        x = model.stem.op(T.to_input(torch.as_tensor(images)[idx]))
    means = x.mean((0, 2, 3))
    assert torch.allclose(stem_bn.running_mean, means, atol=1e-4)
