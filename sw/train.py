"""Train a hybrid network from an ``arch.json`` on MNIST / Fashion-MNIST (CPU).

    python -m sw.train --arch archs/default/arch.json --dataset fashion-mnist --epochs 20
    python -m sw.train --arch archs/default/arch.json --resume          # continue a run

Recipe (docs/training.md): SGD (Nesterov momentum 0.9), peak lr 0.1 for batch 128 with a
linear warmup over the first epoch then cosine decay to 0 (per step), weight decay 5e-4 on
operator weights only (not on batch norm or biases), gradient-norm clip 5, light
augmentation (random crop from a 2-pixel zero pad; random horizontal flip on Fashion-MNIST
only). Inputs are pixel / 255, shape [N, 1, 28, 28].

Writes ``<out>/checkpoint.pt`` after every epoch (atomic) and ``<out>/report.json``
(accuracy, params and MACs per operator kind, share of MACs on shift/adder layers, seconds
per epoch). ``--out`` defaults to ``build/<arch name>/train``. Every epoch is fully
determined by the seed and the epoch number (data order, augmentation), so a resumed run
reproduces an uninterrupted one.

Helpers for the quantiser and benchmarks: :func:`load_data`, :func:`evaluate`,
:func:`load_checkpoint`, :func:`load_model`, and ``count_params`` / ``count_macs_by_kind``
(re-exported from sw.nn).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import statistics
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

# Idle OpenMP threads sleep instead of spinning: on a shared 2-core machine spinning makes
# 2 threads 3x slower than 1 (only effective when torch is not imported yet, as in the CLI).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn as nn  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from sw import arch as arch_mod  # noqa: E402
from sw.arch import ArchError  # noqa: E402
from sw.nn import HybridOp, build_model, count_macs_by_kind, count_params  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
CHECKPOINT_FORMAT = "nasa-fpga-checkpoint"
CHECKPOINT_VERSION = 1
DATASETS = ("mnist", "fashion-mnist", "synthetic")
#: config fields that must match when resuming (everything but the epoch count)
_RESUME_KEYS = ("dataset", "batch_size", "lr", "momentum", "weight_decay", "warmup_epochs",
                "label_smoothing", "grad_clip", "seed", "augment", "flip")


class CheckpointError(RuntimeError):
    """An unreadable, corrupt or mismatched checkpoint (one-line message)."""


@dataclass
class TrainConfig:
    dataset: str = "fashion-mnist"
    epochs: int = 20
    batch_size: int = 128
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 5e-4
    warmup_epochs: float = 1.0
    label_smoothing: float = 0.0
    grad_clip: float = 5.0
    seed: int = 0
    augment: bool = True
    flip: bool | None = None      # None: on for fashion-mnist only

    @property
    def use_flip(self):
        return self.augment and (self.flip if self.flip is not None
                                 else self.dataset == "fashion-mnist")


# ----------------------------------------------------------------------------------------
# data
# ----------------------------------------------------------------------------------------
def synthetic_data(n, seed=0, classes=10, size=28):
    """Deterministic toy data: class c is a fixed random 7x7 binary pattern of its own,
    drawn at a random place over noise. uint8 images [n, size, size], uint8 labels [n]
    (for tests and smoke runs; GAP networks can learn it in a few epochs)."""
    patterns = np.random.default_rng(1234).random((classes, 7, 7)) < 0.5
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, classes, n).astype(np.uint8)
    images = rng.integers(0, 50, (n, size, size)).astype(np.int64)
    pos = rng.integers(0, size - 7 + 1, (n, 2))
    for i in range(n):
        r, q = pos[i]
        images[i, r:r + 7, q:q + 7] += 180 * patterns[labels[i]]
    return np.clip(images, 0, 255).astype(np.uint8), labels


def load_data(dataset, split, data_dir=None):
    """(uint8 images [N, 28, 28], uint8 labels [N]) of a dataset split."""
    if dataset == "synthetic":
        return synthetic_data(600 if split == "train" else 200, seed=0 if split == "train" else 1)
    from sw import datasets
    return datasets.load(dataset, split, data_dir)


def to_input(images):
    """uint8 [N, 28, 28] (numpy or tensor) -> float [N, 1, 28, 28] in [0, 1]."""
    x = torch.as_tensor(np.asarray(images)) if not torch.is_tensor(images) else images
    if x.dim() == 3:
        x = x[:, None]
    return x.float().div_(255.0)


def augment(x, gen, pad=2, flip=False):
    """Random crop from a ``pad``-pixel zero pad (+ random horizontal flip) of a batch."""
    b, c, h, w = x.shape
    xp = F.pad(x, (pad, pad, pad, pad))
    oy = torch.randint(0, 2 * pad + 1, (b,), generator=gen)
    ox = torch.randint(0, 2 * pad + 1, (b,), generator=gen)
    rows = (oy[:, None] + torch.arange(h))[:, :, None]
    cols = (ox[:, None] + torch.arange(w))[:, None, :]
    out = xp[torch.arange(b)[:, None, None], :, rows, cols].permute(0, 3, 1, 2)
    if flip:
        mask = torch.rand(b, generator=gen) < 0.5
        out = torch.where(mask[:, None, None, None], out.flip(3), out)
    return out.contiguous()


def _epoch_generator(seed, epoch):
    g = torch.Generator()
    g.manual_seed((seed * 1_000_003 + epoch * 7919 + 12345) % (2 ** 63))
    return g


# ----------------------------------------------------------------------------------------
# evaluation
# ----------------------------------------------------------------------------------------
@torch.no_grad()
def evaluate(model, data, split="test", data_dir=None, batch_size=1000):
    """Top-1 accuracy (0..1) and mean loss of ``model`` on ``data``: a dataset name
    (its ``split`` is loaded) or an (images, labels) pair of uint8 arrays."""
    images, labels = load_data(data, split, data_dir) if isinstance(data, str) else data
    labels = torch.as_tensor(np.asarray(labels)).long()
    was_training = model.training
    model.eval()
    correct, loss = 0, 0.0
    try:
        for i in range(0, len(labels), batch_size):
            logits = model(to_input(images[i:i + batch_size]))
            y = labels[i:i + batch_size]
            loss += F.cross_entropy(logits, y, reduction="sum").item()
            correct += (logits.argmax(1) == y).sum().item()
    finally:
        model.train(was_training)
    n = max(1, len(labels))
    return {"accuracy": correct / n, "loss": loss / n, "n": len(labels)}


@torch.no_grad()
def recalibrate_bn(model, images, seed, batches=24, batch_size=256):
    """Recompute every batch norm's running statistics as the plain average over
    ``batches`` fixed training batches (precise BN). The momentum averages lag behind
    adder layers, whose outputs (``-sum|x - w|``, in the hundreds) drift as the weights
    move: an all-adder net evaluated with them scored 10% while its batch statistics gave
    84%. Training is unaffected (it uses batch statistics); evaluation, the checkpoint
    and the quantiser's batch-norm folding get the recalibrated ones."""
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not bns:
        return
    g = torch.Generator()
    g.manual_seed(seed + 99991)
    idx = torch.randperm(len(images), generator=g)[:batches * batch_size]
    x_all = torch.as_tensor(np.asarray(images))
    was_training = model.training
    saved = [bn.momentum for bn in bns]
    for bn in bns:
        bn.reset_running_stats()
        bn.momentum = None                    # cumulative average
    model.train()
    try:
        for i in range(0, len(idx), batch_size):
            model(to_input(x_all[idx[i:i + batch_size]]))
    finally:
        for bn, m in zip(bns, saved):
            bn.momentum = m
        model.train(was_training)


# ----------------------------------------------------------------------------------------
# optimisation
# ----------------------------------------------------------------------------------------
def make_optimizer(model, cfg):
    op_weights = [m.weight for m in model.modules() if isinstance(m, HybridOp)]
    ids = {id(p) for p in op_weights}
    rest = [p for p in model.parameters() if id(p) not in ids]
    return torch.optim.SGD([{"params": op_weights, "weight_decay": cfg.weight_decay},
                            {"params": rest, "weight_decay": 0.0}],
                           lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.momentum > 0)


def clip_parameters(model):
    """Parameters under the gradient-norm clip: all but adder weights, whose gradients are
    already rescaled to norm eta * sqrt(numel) (large by design: clipping them together
    with the rest would shrink every other layer's step)."""
    adder = {id(m.weight) for m in model.modules()
             if isinstance(m, HybridOp) and m.kind == "adder"}
    return [p for p in model.parameters() if id(p) not in adder]


def lr_at(step, total_steps, warmup_steps, peak):
    """Linear warmup to ``peak`` over ``warmup_steps``, then cosine decay to 0."""
    if step < warmup_steps:
        return peak * (step + 1) / warmup_steps
    t = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return peak * 0.5 * (1.0 + math.cos(math.pi * min(1.0, t)))


def train_one_epoch(model, opt, images, labels, cfg, epoch, total_epochs, log=None,
                    progress_every_s=60.0):
    """One epoch; returns {"loss", "train_acc", "seconds", "images_per_s"}."""
    gen = _epoch_generator(cfg.seed, epoch)
    n = len(labels)
    steps = math.ceil(n / cfg.batch_size)
    order = torch.randperm(n, generator=gen)
    x_all = torch.as_tensor(np.asarray(images))
    y_all = torch.as_tensor(np.asarray(labels)).long()
    total_steps = steps * total_epochs
    warmup = round(cfg.warmup_epochs * steps)
    clipped = clip_parameters(model)
    model.train()
    t0 = last = time.perf_counter()
    loss_sum, correct, seen = 0.0, 0, 0
    for i in range(steps):
        idx = order[i * cfg.batch_size:(i + 1) * cfg.batch_size]
        x = to_input(x_all[idx])
        if cfg.augment:
            x = augment(x, gen, 2, cfg.use_flip)
        y = y_all[idx]
        lr = lr_at(epoch * steps + i, total_steps, warmup, cfg.lr)
        for group in opt.param_groups:
            group["lr"] = lr
        logits = model(x)
        loss = F.cross_entropy(logits, y, label_smoothing=cfg.label_smoothing)
        if not torch.isfinite(loss):
            raise FloatingPointError(f"epoch {epoch + 1} step {i}: loss is {loss.item()}; "
                                     "lower --lr")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.grad_clip:
            nn.utils.clip_grad_norm_(clipped, cfg.grad_clip)
        opt.step()
        loss_sum += loss.item() * len(y)
        correct += (logits.argmax(1) == y).sum().item()
        seen += len(y)
        now = time.perf_counter()
        if log and progress_every_s and now - last > progress_every_s and i + 1 < steps:
            last = now
            log(f"  epoch {epoch + 1}: {i + 1}/{steps} batches, loss {loss_sum / seen:.4f}, "
                f"{seen / (now - t0):.0f} img/s")
    secs = time.perf_counter() - t0
    return {"loss": loss_sum / seen, "train_acc": correct / seen, "seconds": secs,
            "images_per_s": seen / secs}


# ----------------------------------------------------------------------------------------
# checkpoints
# ----------------------------------------------------------------------------------------
def save_checkpoint(path, arch, cfg, model, opt, epoch, history):
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {
        "format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION,
        "arch": arch.to_dict(), "config": dataclasses.asdict(cfg), "epoch": epoch,
        "model": model.state_dict(), "optimizer": opt.state_dict() if opt else None,
        "history": history, "torch": str(torch.__version__),
    }
    tmp = path.with_name(path.name + ".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def load_checkpoint(path):
    """The checkpoint dict (validated: format, version, arch); raises CheckpointError."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises many types for damaged files
        msg = _first_line(e)
        raise CheckpointError(f"{path}: not a readable checkpoint ({msg[:160]}); delete it "
                              "or train without --resume") from None
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{path}: not a sw.train checkpoint")
    if state.get("version") != CHECKPOINT_VERSION:
        raise CheckpointError(f"{path}: checkpoint version {state.get('version')} is not "
                              f"supported (expected {CHECKPOINT_VERSION})")
    try:
        state["arch_obj"] = arch_mod.Arch.from_dict(state["arch"])
    except (ArchError, KeyError) as e:
        raise CheckpointError(f"{path}: its architecture is invalid ({e})") from None
    return state


def _first_line(e):
    """A short one-line description of an exception (torch's load errors are long)."""
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    for ln in lines:
        if ln.startswith("WeightsUnpickler error:"):
            return ln[len("WeightsUnpickler error:"):].strip().split(". ")[0]
    return lines[0] if lines else type(e).__name__


def load_model(path):
    """(model in eval mode, Arch, checkpoint dict) from a checkpoint file."""
    state = load_checkpoint(path)
    arch = state["arch_obj"]
    model = build_model(arch)
    try:
        model.load_state_dict(state["model"])
    except (RuntimeError, KeyError, TypeError) as e:
        first = _first_line(e)
        raise CheckpointError(f"{path}: weights do not fit arch {arch.name!r} "
                              f"({first[:160]})") from None
    return model.eval(), arch, state


def _check_resume(path, state, arch, cfg):
    if state["arch"] != arch.to_dict():
        name = state["arch"].get("name")
        raise CheckpointError(f"{path}: was trained for a different architecture "
                              f"({name!r}); drop --resume or pick another --out")
    old = state.get("config", {})
    for key in _RESUME_KEYS:
        new_v = getattr(cfg, key)
        if old.get(key) != new_v:
            opt = "--" + key.replace("_", "-")
            raise CheckpointError(f"{path}: was trained with {key} = {old.get(key)!r}, this "
                                  f"run has {new_v!r}; use the same {opt} or drop --resume")


# ----------------------------------------------------------------------------------------
# the training run
# ----------------------------------------------------------------------------------------
def adder_kernel_name():
    try:
        import sw.kernels as k
        return k.backend() if hasattr(k, "backend") else k.adder2d.__module__
    except Exception:
        return None


def train(arch, cfg, out_dir, resume=False, data=None, data_dir=None, log=print,
          arch_file=None, stop_after=None):
    """Train ``arch`` under ``cfg``; write checkpoint + report into ``out_dir``.

    ``data``: optional ((train images, labels), (test images, labels)) instead of loading
    ``cfg.dataset``. ``stop_after``: train at most this many epochs in this call (the
    schedule still spans ``cfg.epochs``; resume later). Returns the report dict."""
    out_dir = Path(out_dir)
    ckpt_path = out_dir / "checkpoint.pt"
    if data is None:
        data = (load_data(cfg.dataset, "train", data_dir), load_data(cfg.dataset, "test",
                                                                      data_dir))
    (tr_x, tr_y), (te_x, te_y) = data
    model = build_model(arch, seed=cfg.seed)
    opt = make_optimizer(model, cfg)
    start, history = 0, []
    if resume:
        if ckpt_path.is_file():
            state = load_checkpoint(ckpt_path)
            _check_resume(ckpt_path, state, arch, cfg)
            try:
                model.load_state_dict(state["model"])
                opt.load_state_dict(state["optimizer"])
            except (RuntimeError, KeyError, TypeError, ValueError) as e:
                first = _first_line(e)
                raise CheckpointError(f"{ckpt_path}: does not fit this model "
                                      f"({first[:160]})") from None
            start, history = int(state["epoch"]), list(state["history"])
            if state["config"].get("epochs") != cfg.epochs:
                log(f"note: checkpoint was for {state['config'].get('epochs')} epochs, now "
                    f"{cfg.epochs}: the rest of the cosine schedule is re-shaped")
            log(f"resuming {ckpt_path} after epoch {start}")
        else:
            log(f"no checkpoint at {ckpt_path}; starting from scratch")

    params = count_params(model)
    macs = count_macs_by_kind(model, arch.input)
    log(f"{arch.name}: {params['total']} params (conv {params['conv']}, shift "
        f"{params['shift']}, adder {params['adder']}, other {params['other']}); "
        f"{macs['total'] / 1e6:.2f} M MACs/image, {100 * macs['mult_free_share']:.1f}% on "
        f"shift/adder; {cfg.dataset} {len(tr_y)}/{len(te_y)} images; "
        f"{torch.get_num_threads()} threads")

    end = cfg.epochs if stop_after is None else min(cfg.epochs, start + stop_after)
    for epoch in range(start, end):
        stats = train_one_epoch(model, opt, tr_x, tr_y, cfg, epoch, cfg.epochs, log=log)
        t = time.perf_counter()
        recalibrate_bn(model, tr_x, cfg.seed)
        ev = evaluate(model, (te_x, te_y))
        steps = math.ceil(len(tr_y) / cfg.batch_size)
        stats.update(epoch=epoch + 1, test_acc=ev["accuracy"], test_loss=ev["loss"],
                     eval_seconds=time.perf_counter() - t,
                     lr=lr_at((epoch + 1) * steps - 1, steps * cfg.epochs,
                              round(cfg.warmup_epochs * steps), cfg.lr))
        history.append(stats)
        log(f"epoch {epoch + 1:3d}/{cfg.epochs}  loss {stats['loss']:.4f}  train "
            f"{100 * stats['train_acc']:6.2f}%  test {100 * stats['test_acc']:6.2f}%  "
            f"{stats['seconds']:6.1f} s  {stats['images_per_s']:6.0f} img/s")
        save_checkpoint(ckpt_path, arch, cfg, model, opt, epoch + 1, history)

    report = make_report(arch, cfg, model, history, params, macs, arch_file)
    (out_dir / "report.json").parent.mkdir(parents=True, exist_ok=True)
    (out_dir / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    return report


def make_report(arch, cfg, model, history, params=None, macs=None, arch_file=None):
    params = params or count_params(model)
    macs = macs or count_macs_by_kind(model, arch.input)
    last = history[-1] if history else {}
    secs = [h["seconds"] for h in history]
    return {
        "arch": arch.name, "arch_file": str(arch_file) if arch_file else None,
        "dataset": cfg.dataset, "epochs": len(history), "config": dataclasses.asdict(cfg),
        "test_accuracy": last.get("test_acc"),
        "best_test_accuracy": max((h["test_acc"] for h in history), default=None),
        "train_accuracy": last.get("train_acc"), "train_loss": last.get("loss"),
        "params": params,
        "macs": {k: macs[k] for k in ("conv", "shift", "adder", "total")},
        "mult_free_share": macs["mult_free_share"],
        "seconds_per_epoch": statistics.median(secs) if secs else None,
        "images_per_second": statistics.median(h["images_per_s"] for h in history)
        if history else None,
        "threads": torch.get_num_threads(), "torch": str(torch.__version__),
        "adder_kernel": adder_kernel_name() if macs["adder"] else None,
        "history": history,
    }


# ----------------------------------------------------------------------------------------
# CLI
# ----------------------------------------------------------------------------------------
def build_parser():
    d = TrainConfig()
    ap = argparse.ArgumentParser(prog="python -m sw.train", description=__doc__.split("\n")[0])
    ap.add_argument("--arch", default=str(REPO / "archs" / "default" / "arch.json"),
                    help="arch.json file or a bundled arch name (default: archs/default)")
    ap.add_argument("--dataset", choices=DATASETS, default=None,
                    help="default: the arch's dataset ('synthetic' = tiny generated set "
                         "for smoke tests)")
    ap.add_argument("--epochs", type=int, default=d.epochs)
    ap.add_argument("--batch-size", type=int, default=d.batch_size)
    ap.add_argument("--lr", type=float, default=d.lr, help="peak learning rate")
    ap.add_argument("--weight-decay", type=float, default=d.weight_decay)
    ap.add_argument("--momentum", type=float, default=d.momentum)
    ap.add_argument("--warmup-epochs", type=float, default=d.warmup_epochs)
    ap.add_argument("--label-smoothing", type=float, default=d.label_smoothing)
    ap.add_argument("--grad-clip", type=float, default=d.grad_clip, help="0 disables")
    ap.add_argument("--no-augment", dest="augment", action="store_false")
    ap.add_argument("--flip", choices=("auto", "on", "off"), default="auto",
                    help="random horizontal flips (auto: Fashion-MNIST only)")
    ap.add_argument("--seed", type=int, default=d.seed)
    ap.add_argument("--resume", action="store_true",
                    help="continue from <out>/checkpoint.pt when it exists")
    ap.add_argument("--stop-after", type=int, default=None, metavar="N",
                    help="train at most N epochs in this run (continue with --resume)")
    ap.add_argument("--out", default=None, help="output dir (default build/<arch>/train)")
    ap.add_argument("--data-dir", default=None, help="default $DATA_DIR or <repo>/data")
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    return ap


def resolve_arch_path(spec):
    """An arch.json path from FILE, a directory holding arch.json, or a bundled arch name."""
    p = Path(spec)
    if p.is_dir():
        return p / "arch.json"
    if not p.exists() and "/" not in spec and not spec.endswith(".json"):
        return REPO / "archs" / spec / "arch.json"
    return p


def main(argv=None):
    args = build_parser().parse_args(argv)
    try:
        for name in ("epochs", "batch_size", "threads", "stop_after"):
            if getattr(args, name) is not None and getattr(args, name) < 1:
                raise ValueError(f"--{name.replace('_', '-')} must be at least 1")
        if not args.lr > 0:
            raise ValueError("--lr must be positive")
        torch.set_num_threads(args.threads)
        arch_path = resolve_arch_path(args.arch)
        arch = arch_mod.load(arch_path)
        cfg = TrainConfig(dataset=args.dataset or arch.dataset, epochs=args.epochs,
                          batch_size=args.batch_size, lr=args.lr, momentum=args.momentum,
                          weight_decay=args.weight_decay, warmup_epochs=args.warmup_epochs,
                          label_smoothing=args.label_smoothing, grad_clip=args.grad_clip,
                          seed=args.seed, augment=args.augment,
                          flip={"auto": None, "on": True, "off": False}[args.flip])
        out = Path(args.out) if args.out else REPO / "build" / arch.name / "train"
        report = train(arch, cfg, out, resume=args.resume, data_dir=args.data_dir,
                       arch_file=arch_path, stop_after=args.stop_after,
                       log=lambda s: print(s, flush=True))
    except (ArchError, CheckpointError, ValueError, FloatingPointError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted (the last finished epoch is in the checkpoint; --resume "
              "continues)", file=sys.stderr)
        return 130
    if report["test_accuracy"] is not None:
        print(f"done: {arch.name} on {cfg.dataset}: test accuracy "
              f"{100 * report['test_accuracy']:.2f}% after {report['epochs']} epochs, "
              f"{report['seconds_per_epoch']:.1f} s/epoch; wrote {out}/report.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
