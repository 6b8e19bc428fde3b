"""One search run: data, PGP + search epochs with checkpoint/resume, the derived network,
its one-shot evaluation beside reference and random networks, and the output files.

Every epoch draws its randomness (data order, augmentation, paths, Gumbel noise) from a
generator seeded by (seed, epoch), so a run resumed after any epoch reproduces an
uninterrupted one. Files in ``out_dir``: ``checkpoint.pt`` (after every epoch),
``log.jsonl`` (one JSON object per epoch, then one per evaluated network), ``result.json``
and ``pareto.png``; the network goes to ``arch_path``.
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from sw import arch as arch_mod
from sw.train import REPO, evaluate, load_data, to_input

from .hwcost import BOARDS, HwCost, HwError, arch_cost, fit_error, mapper_lanes, unpack
from .pgp import PHASES, WeightTrainer, pgp_epoch
from .search import CostTerm, derive, next_lam, probs, search_epoch
from .space import CHOICES, SPACES, Space, SpaceError, label
from .supernet import Supernet

FORMAT = "nasa-fpga-search-checkpoint"
# options that act only after the last epoch (the final selection and evaluation): a
# finished search may be resumed with other values to select again
SELECTION_KEYS = ("val_images", "test_images", "calib_images", "candidates",
                  "random_samples", "family_candidates", "pool_random", "proxy_networks",
                  "proxy_epochs", "proxy_images", "proxy_val_images", "proxy_margin")
# groups of the selection pool besides the most probable networks: sub-spaces by operator
FAMILIES = ("conv", "mult-free")
REFERENCES = ("default", "all-conv", "all-shift", "all-adder")


class SearchError(RuntimeError):
    """A bad option, budget or checkpoint (one-line message)."""


@dataclass
class SearchConfig:
    dataset: str = "fashion-mnist"
    board: str = "icebreaker"
    budget: float | None = None        # cycles (flops with cost=flops); None: the macro's
    objective: str = "latency"         # latency | energy
    cost: str = "model"                # model | flops
    space: str = "hybrid"
    seed: int = 0
    macro: str = "archs/default/arch.json"
    train_images: int = 24000          # subset of the train split (halves for the search)
    val_images: int = 2000             # the next training images: the final selection
    test_images: int = 2000            # one-shot evaluations (bench/search.py trains)
    batch_size: int = 64
    lr: float = 0.1
    weight_decay: float = 1e-4
    grad_clip: float = 5.0
    pgp: list = field(default_factory=lambda: [["cs-wide", 2], ["cs-all", 3],
                                               ["adder-wide", 1], ["adder-all", 1],
                                               ["all", 3]])
    search_epochs: int = 6
    alpha_lr: float = 0.01             # ~NASA's total alpha movement (3e-4 x 35k steps)
    tau0: float = 5.0
    tau_end: float = 0.5
    lam0: float = 1.0
    window: float = 0.85               # lam adapts to keep the derived net in [w*B, B]
    energy_weight: float = 0.5
    calib_images: int = 512
    candidates: int = 16               # most probable in-budget networks, ranked one-shot
    random_samples: int = 8            # random networks in the final one-shot evaluation
    # final selection (docs/search.md): a pool of in-budget networks (the ``candidates``
    # most probable, the ``family_candidates`` most probable all-conv and all-mult-free
    # ones, ``pool_random`` random ones), ranked one-shot within each group; the
    # ``proxy_networks`` best, taken from the groups in turn, are trained from scratch
    # for ``proxy_epochs`` on ``proxy_images`` of the search's training images and the
    # pick is the best on ``proxy_val_images`` held-out images (0: one-shot pick)
    family_candidates: int = 8
    pool_random: int = 8
    proxy_networks: int = 8
    proxy_epochs: int = 2
    proxy_images: int = 12000
    proxy_val_images: int = 5000
    proxy_margin: float = 1.0          # pick: the cheapest within this many binomial
                                       # standard errors of the best proxy accuracy

    @classmethod
    def quick(cls, **kw):
        """< 5 minutes on 2 shared cores: a 2000-image subset, one epoch per phase."""
        base = dict(train_images=2000, val_images=500, test_images=1000,
                    pgp=[[p, 1] for p in PHASES], search_epochs=2, calib_images=256,
                    candidates=4, random_samples=4, family_candidates=2, pool_random=2,
                    proxy_networks=2, proxy_epochs=1, proxy_images=1000,
                    proxy_val_images=500)
        return cls(**{**base, **kw})


def _generator(seed, epoch):
    g = torch.Generator()
    g.manual_seed((seed * 1_000_003 + epoch * 7919 + 12345) % (2 ** 63))
    return g


def plan(cfg, space):
    """The phase of every epoch."""
    has_adder = any(CHOICES[j][0] == "adder" for js in space.allowed for j in js)
    out = [p for p, n in cfg.pgp for _ in range(n) if has_adder or not p.startswith("adder")]
    return out + ["search"] * cfg.search_epochs


def resolve_budget(cfg, space, lanes):
    """The budget: the given one, or the macro network's own cost at ``lanes``."""
    if cfg.budget is not None:
        return cfg.budget
    return arch_cost(space.macro, cfg.board, "flops" if cfg.cost == "flops" else "cycles",
                     lanes)


def train_order(cfg, n):
    """The order of the ``n`` training images; the search uses the first
    ``cfg.train_images`` and selects on the next ``cfg.val_images`` (held out; the rest
    is free, e.g. for bench/search.py)."""
    return torch.randperm(n, generator=_generator(cfg.seed, -1)).numpy()


def _data(cfg, data):
    """(weight half, alpha half, held-out validation, test) image/label pairs."""
    (tr_x, tr_y), (te_x, te_y) = data or (load_data(cfg.dataset, "train"),
                                          load_data(cfg.dataset, "test"))
    order = train_order(cfg, len(tr_y))
    idx = order[:cfg.train_images]
    held = order[cfg.train_images:][:max(cfg.val_images, cfg.proxy_val_images
                                         if cfg.proxy_networks else 0)]
    if not len(held):
        raise SearchError(f"--train-images {cfg.train_images} leaves none of the "
                          f"{len(tr_y)} training images for the held-out selection")
    half = len(idx) // 2
    split_w = (tr_x[idx[:half]], tr_y[idx[:half]])
    split_a = (tr_x[idx[half:]], tr_y[idx[half:]])
    return split_w, split_a, (tr_x[held], tr_y[held]), (te_x[:cfg.test_images],
                                                        te_y[:cfg.test_images])


@torch.no_grad()
def recalibrate(net, images, batch_size=256):
    """Batch-norm statistics of ``net`` re-estimated on ``images`` (cumulative average)."""
    for m in net.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.reset_running_stats()
            m.momentum = None
    net.train()
    for i in range(0, len(images), batch_size):
        net(to_input(images[i:i + batch_size]))
    for m in net.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.momentum = 0.1
    return net.eval()


def one_shot(supernet, choices, calib, test):
    """Test accuracy of a sub-network with the supernet's weights (BN recalibrated)."""
    net = recalibrate(supernet.extract(choices), calib)
    return evaluate(net, test)["accuracy"]


def hw_figures(arch, lanes=None):
    """Predicted cycles and energy (uJ) per board at ``lanes`` ({board: (lanes,
    word_bytes)}; default: the mapper's accelerator for ``arch``, None where it does not
    map), and the FLOPs proxy."""
    out = {}
    for board in BOARDS:
        try:
            at = lanes[board] if lanes else mapper_lanes(arch, board)
        except HwError:
            at = None
        out[f"cycles_{board}"] = at and arch_cost(arch, board, "cycles", at)
        out[f"energy_uj_{board}"] = at and arch_cost(arch, board, "energy", at) / 1e6
        out[f"fits_{board}"] = at is not None and fit_error(arch, board, at) is None
    out["flops_proxy"] = arch_cost(arch, BOARDS[0], "flops")
    out["macs"] = arch.summary()["macs_total"]
    return out


def _save(path, state):
    tmp = path.with_name(path.name + ".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def _load(path):
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises many types for damaged files
        raise SearchError(f"{path}: not a readable checkpoint ({type(e).__name__}); delete "
                          "it or drop --resume") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise SearchError(f"{path}: not a sw.search checkpoint")
    return state


def _check_resume(path, old, cfg, finished=False):
    """Every option must match, except the selection's (:data:`SELECTION_KEYS`) when the
    checkpoint is past its last epoch (missing ones: the checkpoint predates them)."""
    for key, value in dataclasses.asdict(cfg).items():
        if finished and key in SELECTION_KEYS:
            continue
        if old.get(key) != value:
            raise SearchError(f"{path}: was run with {key} = {old.get(key)!r}, this run has "
                              f"{value!r}; use the same options or drop --resume")


def load_search(out_dir):
    """(config, space, supernet, alpha) of a search's checkpoint in ``out_dir``."""
    path = Path(out_dir) / "checkpoint.pt"
    if not path.is_file():
        raise SearchError(f"{path}: no such checkpoint; run python -m sw.search first")
    state = _load(path)
    cfg = SearchConfig(**state["config"])
    space = _space(cfg)
    if "reference_lanes" in state:
        ref = stored_lanes(state["reference_lanes"])[cfg.board]
        space = board_space(space, cfg.board, ref, HwCost(space, cfg.board))[0]
    net = Supernet(space)
    net.load_state_dict(state["supernet"])
    return cfg, space, net.eval(), state["alpha"]


def repo_relative(path):
    """``path`` as result.json stores it: relative to the repository root where it lies
    inside it (the tree may be checked out anywhere), else absolute; a relative ``path``
    is taken as relative to the root already."""
    if not Path(path).is_absolute():
        return Path(path).as_posix()
    path = Path(path).resolve()
    try:
        return path.relative_to(REPO.resolve()).as_posix()
    except ValueError:
        return str(path)


def repo_path(text):
    """The inverse of :func:`repo_relative`: a stored path (relative to the repository
    root, or absolute as older result.json files have it) as a Path."""
    path = Path(text)
    return path if path.is_absolute() else REPO / path


def _space(cfg):
    macro = arch_mod.load(repo_path(cfg.macro))
    if cfg.dataset != "synthetic":
        macro = macro.replace(dataset=cfg.dataset)
    return Space.from_arch(macro, cfg.space)


def reference_lanes(macro, board, lanes=None):
    """{board: (lanes, word_bytes)}: the accelerators the mapper sizes for the macro
    network (None on another board where it does not map; HwError on ``board``). Given
    ``lanes`` are used on every board instead: no mapper calls."""
    out = {}
    for b in BOARDS:
        try:
            out[b] = lanes or mapper_lanes(macro, b)
        except HwError:
            if b == board:
                raise
            out[b] = None
    return out


def _lanes_out(ref):
    """{board: (lanes, word_bytes[, extra]) or None} as result.json / the checkpoint
    store it: {"lanes", "word_bytes", and extra's keys}."""
    return {b: v and {"lanes": v[0], "word_bytes": v[1], **unpack(v)[2]}
            for b, v in ref.items()}


def stored_lanes(stored):
    """The inverse of :func:`_lanes_out` (a pair where nothing but lanes and word size is
    stored: the per-chunk organisation, as older checkpoints have it)."""
    def one(v):
        extra = {k: x for k, x in v.items() if k not in ("lanes", "word_bytes")}
        return (v["lanes"], v["word_bytes"], extra) if extra else (v["lanes"], v["word_bytes"])
    return {b: v and one(v) for b, v in stored.items()}


def board_space(space, board, acc, hw):
    """``space`` without the block choices that cannot fit ``board``'s accelerator ``acc``
    whatever the other blocks are (:meth:`HwCost.choice_fit`: only the small organisation
    can run out), and {(block, choice): reason} of those removed. SearchError when a
    block keeps no choice."""
    drop = hw.choice_fit(acc)
    if not drop:
        return space, {}
    allowed = tuple(tuple(j for j in js if (i, j) not in drop)
                    for i, js in enumerate(space.allowed))
    for i, js in enumerate(allowed):
        if not js:
            raise SearchError(f"block {i}: no choice fits {board} ("
                              f"{drop[i, space.allowed[i][0]]})")
    return dataclasses.replace(space, allowed=allowed), drop


def fit_filter(space, board, acc):
    """A predicate on choice lists: whether the network fits ``board``'s accelerator
    ``acc`` (:func:`sw.search.hwcost.fit_error`); None where every network fits (the
    per-chunk organisation)."""
    if unpack(acc)[2].get("organisation") != "small":
        return None
    return lambda ch: fit_error(space.arch(ch), board, acc) is None


def run_search(cfg, out_dir, arch_path, name, resume=False, data=None, log=print,
               stop_after=None, lanes=None):
    """Run (or resume) a search; writes the arch and the outputs, returns result.json's
    dict. ``data``: ((train images, labels), (test images, labels)) instead of loading
    ``cfg.dataset``; ``stop_after``: run at most this many epochs now (returns None;
    resume later); ``lanes``: (lanes, word_bytes) of the accelerator to cost networks on
    (default: the mapper's for the macro network on each board)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    space = _space(cfg)
    macro = space.macro
    ckpt, log_path = out_dir / "checkpoint.pt", out_dir / "log.jsonl"
    state = _load(ckpt) if resume and ckpt.is_file() else None
    # a resumed run keeps its reference accelerators: the mapper may size others today
    ref = stored_lanes(state["reference_lanes"]) if state and "reference_lanes" in state \
        else reference_lanes(macro, cfg.board, lanes)
    # choices that cannot fit the board's accelerator (the UP5K's small organisation) are
    # out of the space; whole networks are checked where they are picked (fit_filter)
    space, dropped = board_space(space, cfg.board, ref[cfg.board], HwCost(space, cfg.board))
    hw = HwCost(space, cfg.board)
    fits = fit_filter(space, cfg.board, ref[cfg.board])
    for (i, j), why in sorted(dropped.items()):
        log(f"infeasible on {cfg.board}: block {i} {label(j)}: {why}")
    if state and cfg.budget is None:          # the budget the run resolved when it began
        cfg = dataclasses.replace(cfg, budget=state["config"].get("budget"))
    cfg = dataclasses.replace(cfg, budget=resolve_budget(cfg, space, ref[cfg.board]))
    split_w, split_a, val, test = _data(cfg, data)
    phases = plan(cfg, space)
    both = tuple(torch.cat([torch.as_tensor(a), torch.as_tensor(b)]).numpy()
                 for a, b in zip(split_w, split_a))
    n_train = len(split_w[1]) + len(split_a[1])
    steps = [math.ceil((n_train if p != "search" else len(split_w[1])) / cfg.batch_size)
             for p in phases]
    torch.manual_seed(cfg.seed)
    net = Supernet(space)
    trainer = WeightTrainer(net, cfg, sum(steps), steps[0] // 2)
    alpha = torch.full((space.n_blocks, len(CHOICES)), 1e-3, requires_grad=True)
    alpha_opt = torch.optim.Adam([alpha], lr=cfg.alpha_lr, betas=(0.5, 0.999))
    cost = CostTerm(hw, cfg, cfg.budget, arch_cost(macro, cfg.board, "energy",
                                                   ref[cfg.board]))
    cost.refresh(ref[cfg.board])
    start, lam, history = 0, cfg.lam0, []
    if state:
        _check_resume(ckpt, state["config"], cfg, finished=state["epoch"] >= len(phases))
        net.load_state_dict(state["supernet"])
        trainer.opt.load_state_dict(state["opt"])
        with torch.no_grad():
            alpha.copy_(state["alpha"])
        alpha_opt.load_state_dict(state["alpha_opt"])
        start, lam, history = state["epoch"], state["lam"], state["history"]
        log(f"resuming {ckpt} after epoch {start}/{len(phases)}")
    else:
        log_path.write_text("")
    log(f"search {name}: {cfg.space} space, {space.n_blocks} blocks, board {cfg.board}, "
        f"budget {cfg.budget:.0f} {cost.metric}, objective {cfg.objective}; "
        f"{len(phases)} epochs ({', '.join(phases)}); {n_train} train images")
    metric = cost.metric
    end = len(phases) if stop_after is None else min(len(phases), start + stop_after)
    for epoch in range(start, end):
        phase, gen, t0 = phases[epoch], _generator(cfg.seed, epoch), time.perf_counter()
        flip = cfg.dataset == "fashion-mnist"
        first = sum(steps[:epoch])
        if phase == "search":
            stats = search_epoch(trainer, alpha, alpha_opt, cost, space, split_w, split_a, gen,
                                 first, epoch - phases.index("search"), lam, flip)
            choices, derived, _ = derive(space, alpha, *cost.tables[metric], math.inf)[0]
            stats.update(derived=[label(j) for j in choices], derived_cost=derived)
            if fits is not None:
                stats["derived_fits"] = fit_error(space.arch(choices), cfg.board,
                                                  ref[cfg.board]) or "fits"
            lam = next_lam(lam, derived, cfg.budget, cfg.window)
        else:
            stats = pgp_epoch(trainer, space, phase, both, gen, first, flip)
        stats.update(epoch=epoch + 1, phase=phase, seconds=time.perf_counter() - t0)
        history.append(stats)
        with log_path.open("a") as f:
            f.write(json.dumps(stats) + "\n")
        log(_progress(stats, len(phases), metric))
        _save(ckpt, {"format": FORMAT, "config": dataclasses.asdict(cfg), "epoch": epoch + 1,
                     "supernet": net.state_dict(), "opt": trainer.opt.state_dict(),
                     "alpha": alpha.detach(), "alpha_opt": alpha_opt.state_dict(),
                     "lam": lam, "history": history, "reference_lanes": _lanes_out(ref)})
    if end < len(phases):
        return None
    return _finish(cfg, space, net, alpha, split_w, both, val, test, out_dir, arch_path, name,
                   history, ref, cost, log, mapped=lanes is None, fits=fits,
                   dropped=dropped)


def _progress(s, total, metric):
    line = (f"epoch {s['epoch']:2d}/{total} {s['phase']:10s} loss {s['loss']:.4f}  train "
            f"{100 * s['train_acc']:5.1f}%  {s['seconds']:6.1f} s")
    if s["phase"] == "search":
        line += (f"  tau {s['tau']:.2f} lam {s['lam']:.3g} E[{metric}] "
                 f"{s['expected_cost']:.0f} derived {s['derived_cost']:.0f}")
        if "derived_fits" in s:
            line += f" ({'fits' if s['derived_fits'] == 'fits' else 'does not fit'})"
        if "misfit_share" in s:
            line += f" samples not fitting {100 * s['misfit_share']:.0f}%"
    return line


def network_cost(fixed, table, choices):
    return fixed + sum(float(table[i, j]) for i, j in enumerate(choices))


def random_in_budget(space, fixed, table, budget, n, gen, tries=50, fits=None):
    """Up to ``n`` distinct uniformly random networks of ``space`` within ``budget`` (at
    most ``tries * n`` draws), as [(choices, cost, None)]; with ``fits`` (a predicate on
    choices), only networks it accepts."""
    out, seen = [], set()
    for _ in range(tries * n):
        if len(out) == n:
            break
        ch = space.random(gen)
        cost = network_cost(fixed, table, ch)
        if cost <= budget and tuple(ch) not in seen:
            seen.add(tuple(ch))
            if fits is None or fits(ch):
                out.append((ch, cost, None))
    return out


#: with a fit check, the k most probable networks that fit are sought among this many
#: times k most probable ones
FIT_OVERSAMPLE = 8


def most_probable(space, alpha, fixed, table, budget, n, fits=None):
    """The ``n`` most probable networks of ``space`` within ``budget`` (:func:`derive`);
    with ``fits`` (a predicate on choices), those of the ``FIT_OVERSAMPLE * n`` most
    probable that it accepts (fewer than ``n`` where fewer do)."""
    nets = derive(space, alpha, fixed, table, budget, n if fits is None else
                  n * FIT_OVERSAMPLE)
    return [c for c in nets if c[1] <= budget and (fits is None or fits(c[0]))][:n]


def selection_pool(cfg, space, alpha, tables, fits=None):
    """{group: [(choices, cost, log-probability or None)]}, every network within the
    budget (and, with ``fits``, a predicate on choices, every one it accepts: the networks
    that fit the board): ``k-best``, the ``cfg.candidates`` most probable
    (:func:`derive`); per operator family that is a proper part of the space (all-conv,
    multiplication-free), its ``cfg.family_candidates`` most probable networks (alpha
    restricted to the family; the space contains them, so the search must be able to pick
    them); ``random``: ``cfg.pool_random`` random networks of the space."""
    fixed, table = tables
    groups = {"k-best": most_probable(space, alpha, fixed, table, cfg.budget,
                                      cfg.candidates, fits)}
    ops = set(SPACES[space.kind])
    for fam in FAMILIES:
        if cfg.family_candidates and set(SPACES[fam]) < ops:
            sub = Space.from_arch(space.macro, fam)
            sub = dataclasses.replace(sub, allowed=tuple(
                tuple(j for j in js if j in space.allowed[i])
                for i, js in enumerate(sub.allowed)))
            groups[fam] = most_probable(sub, alpha, fixed, table, cfg.budget,
                                        cfg.family_candidates, fits)
    if cfg.pool_random:
        groups["random"] = random_in_budget(space, fixed, table, cfg.budget,
                                            cfg.pool_random, _generator(cfg.seed, 10 ** 6 + 1),
                                            fits=fits)
    return groups


def shortlist(rows, n):
    """``n`` distinct networks of ``rows`` (dicts with ``group``, ``choices``,
    ``val_accuracy``): the best one-shot of each group in turn (groups in order of first
    appearance), then the second best of each, and so on."""
    by_group = {}
    for r in rows:
        by_group.setdefault(r["group"], []).append(r)
    queues = [sorted(g, key=lambda r: -r["val_accuracy"]) for g in by_group.values()]
    out, seen = [], set()
    while len(out) < n and any(queues):
        for q in queues:
            while q and tuple(q[0]["choices"]) in seen:
                q.pop(0)
            if q and len(out) < n:
                r = q.pop(0)
                seen.add(tuple(r["choices"]))
                out.append(r)
    return out


def proxy_train(cfg, space, choices, train_xy, val_xy, out_dir, log=None):
    """Validation accuracy of the network ``choices`` trained from scratch by sw.train
    (its recipe, seed ``cfg.seed``) for ``cfg.proxy_epochs`` on ``train_xy``, evaluated on
    ``val_xy``; the run lives in ``out_dir`` (a finished one is reused on resume)."""
    from sw.train import TrainConfig, train
    arch = space.arch(choices, "proxy")
    tcfg = TrainConfig(dataset=cfg.dataset, epochs=cfg.proxy_epochs, seed=cfg.seed,
                       warmup_epochs=min(1.0, cfg.proxy_epochs / 4))
    rep = train(arch, tcfg, out_dir, resume=True, data=(train_xy, val_xy),
                log=log or (lambda s: None))
    return rep["test_accuracy"]


def select(cfg, space, net, alpha, tables, calib, val, log, train_xy=None, proxy_val=None,
           proxy_dir=None, fits=None):
    """The final network: :func:`rank` of :func:`selection_pool` (``fits``: a predicate on
    choices, the networks that fit the board). Returns (choices, cost, [one row per pool
    network]); SearchError when no network of the space is within the budget and fits."""
    groups = selection_pool(cfg, space, alpha, tables, fits)
    if not any(groups.values()):
        raise SearchError(f"no network of the space is within the budget {cfg.budget:.0f}"
                          + (f" and fits {cfg.board}" if fits else "")
                          + "; raise --budget")
    if fits is not None:
        log(f"selection pool: {sum(map(len, groups.values()))} networks within the budget "
            f"that fit {cfg.board} (networks that do not fit are left out)")
    return rank(cfg, space, net, groups, calib, val, log, train_xy, proxy_val, proxy_dir)


def rank(cfg, space, net, groups, calib, val, log, train_xy=None, proxy_val=None,
         proxy_dir=None):
    """The best network of ``groups`` ({group: [(choices, cost, logp or None)]}). Every
    one gets its one-shot accuracy on the held-out ``val`` images; with
    ``cfg.proxy_networks`` (and ``train_xy``), the :func:`shortlist` of that many is
    trained from scratch (:func:`proxy_train`, evaluated on ``proxy_val``) and the pick is
    the cheapest within ``cfg.proxy_margin`` standard errors of the best proxy accuracy
    (:func:`pick`); without, the best one-shot accuracy of the first group. Returns (choices, cost, [one row per network])."""
    rows, seen = [], set()
    for group, nets in groups.items():
        for ch, cost, logp in nets:
            if tuple(ch) in seen:
                continue
            seen.add(tuple(ch))
            rows.append({"group": group, "blocks": [label(j) for j in ch], "choices": ch,
                         "cost": cost, "log_prob": logp,
                         "val_accuracy": one_shot(net, ch, calib, val),
                         "proxy_accuracy": None})
            log(f"pool {len(rows):2d} {group:9s}: one-shot val "
                f"{100 * rows[-1]['val_accuracy']:5.1f}%  {cost:8.0f}"
                + (f"  logp {logp:7.2f}" if logp is not None else " " * 14)
                + f"  {' '.join(rows[-1]['blocks'])}")
    if not cfg.proxy_networks or train_xy is None:
        first = [r for r in rows if r["group"] == rows[0]["group"]]
        best = max(first, key=lambda r: r["val_accuracy"])
        return best["choices"], best["cost"], rows
    short = shortlist(rows, cfg.proxy_networks)
    for n, r in enumerate(short):
        t0 = time.perf_counter()
        r["proxy_accuracy"] = proxy_train(
            cfg, space, r["choices"], train_xy, proxy_val,
            Path(proxy_dir) / proxy_run_name(cfg, r["blocks"]))
        r["proxy_seconds"] = time.perf_counter() - t0
        log(f"proxy {n + 1:2d}/{len(short)} {r['group']:9s}: {cfg.proxy_epochs} epochs, val "
            f"{100 * r['proxy_accuracy']:5.1f}%  {r['cost']:8.0f}  {r['proxy_seconds']:5.0f} s"
            f"  {' '.join(r['blocks'])}")
    best = pick(short, cfg.proxy_margin, len(proxy_val[1]))
    return best["choices"], best["cost"], rows


def proxy_run_name(cfg, blocks):
    """Directory of a proxy training: the network and the recipe (epochs, training and
    held-out images), so a selection with other proxy options trains anew."""
    return (f"{'_'.join(blocks)}-{cfg.proxy_epochs}ep-{cfg.proxy_images}img-"
            f"{cfg.proxy_val_images}val")


def pick(rows, margin, n):
    """The cheapest row whose ``proxy_accuracy`` is within ``margin`` binomial standard
    errors (on ``n`` images) of the best one: networks the proxy cannot tell apart are
    told apart by their cost (the search's objective); ties: the more accurate."""
    top = max(r["proxy_accuracy"] for r in rows)
    floor = top - margin * math.sqrt(top * (1 - top) / max(1, n))
    return min((r for r in rows if r["proxy_accuracy"] >= floor - 1e-12),
               key=lambda r: (r["cost"], -r["proxy_accuracy"]))


def _finish(cfg, space, net, alpha, split_w, both, val, test, out_dir, arch_path, name,
            history, ref, cost_term, log, mapped, fits=None, dropped=None):
    """Select, evaluate beside the references and random networks (costed on the reference
    accelerators ``ref``), write the outputs; ``mapped``: also cost the searched network
    on the accelerators the mapper sizes for it."""
    from .plot import pareto
    metric = cost_term.metric
    calib = split_w[0][:cfg.calib_images]
    t0 = time.perf_counter()
    proxy_xy = (both[0][:cfg.proxy_images], both[1][:cfg.proxy_images])
    choices, cost, selection = select(
        cfg, space, net, alpha, cost_term.tables[metric], calib,
        (val[0][:cfg.val_images], val[1][:cfg.val_images]), log, proxy_xy,
        (val[0][:cfg.proxy_val_images], val[1][:cfg.proxy_val_images]), out_dir / "proxy",
        fits)
    selection_seconds = time.perf_counter() - t0
    arch = space.arch(choices, name)
    gen = _generator(cfg.seed, 10 ** 6)
    candidates = [("searched", choices)]
    for known in REFERENCES:
        try:
            candidates.append((known, space.choices_of(
                arch_mod.load(REPO / "archs" / known / "arch.json"))))
            space.arch(candidates[-1][1])
        except (SpaceError, arch_mod.ArchError):
            candidates = [c for c in candidates if c[0] != known]
    candidates += [(f"random-{i}", space.random(gen)) for i in range(cfg.random_samples)]
    rows = []
    with (out_dir / "log.jsonl").open("a") as f:
        for net_name, ch in candidates:
            a = space.arch(ch, name)
            row = {"net": net_name, "blocks": [label(j) for j in ch],
                   "one_shot_accuracy": one_shot(net, ch, calib, test), **hw_figures(a, ref)}
            if net_name == "searched":
                row["proxy_accuracy"] = next((r["proxy_accuracy"] for r in selection
                                              if r["choices"] == ch), None)
            rows.append(row)
            f.write(json.dumps(row) + "\n")
    arch_mod.save(arch, arch_path)
    p = probs(alpha.detach(), space.mask())
    result = {"name": name, "config": dataclasses.asdict(cfg),
              "arch_file": repo_relative(arch_path),
              "blocks": [label(j) for j in choices], "cost": cost, "metric": metric,
              "within_budget": cost <= cfg.budget, "probabilities": p.tolist(),
              "reference_lanes": _lanes_out(ref),
              "infeasible_choices": [{"block": i, "choice": label(j), "why": why}
                                     for (i, j), why in sorted((dropped or {}).items())],
              "mapped": hw_figures(arch) if mapped else None, "selection": selection,
              "seconds": sum(h["seconds"] for h in history),
              "selection_seconds": selection_seconds, "networks": rows}
    (out_dir / "result.json").write_text(json.dumps(result, indent=1) + "\n")
    pareto(result, out_dir / "pareto.png")
    s = rows[0]
    if cost > cfg.budget:
        log(f"warning: no network of the space found within the budget {cfg.budget:.0f} "
            f"{metric}; the closest costs {cost:.0f}")
    if fits is not None:
        log(f"searched {name} fits {cfg.board}'s reference accelerator ("
            f"{unpack(ref[cfg.board])[2].get('organisation')} organisation, lanes "
            f"{'/'.join(str(v) for v in ref[cfg.board][0].values())})"
            + ("" if s[f"fits_{cfg.board}"] else " NOT (a bug)"))
    log(f"searched {name}: {' '.join(result['blocks'])}; {s['cycles_' + cfg.board]:.0f} cycles "
        f"on {cfg.board}'s reference accelerator (budget {cfg.budget:.0f} {metric}), one-shot "
        f"accuracy "
        f"{100 * s['one_shot_accuracy']:.2f}%; wrote {arch_path}, {out_dir}/result.json, "
        f"pareto.png")
    return result
