"""sw.search: weight sharing, the space, cost tables vs the cost model, the cost gradient,
resume, the CLI's refusals, and a micro search whose network quantises and maps.

A tiny macro (3 blocks) on the synthetic data set keeps every test to seconds, except the
mapper calls (a few seconds each, on the ULX3S: the space is costed at its lanes)."""
import dataclasses
import itertools
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from sw import arch as arch_mod
from sw import mapper
from sw.compile import compile_model
from sw.costmodel import program_cycles
from sw.energy import layer_energy_pj
from sw.golden import model as gm
from sw.search import __main__ as cli
from sw.search import hwcost as H
from sw.search import run as run_mod
from sw.search.run import SearchConfig, run_search
from sw.search.search import CostTerm, gumbel, k_best, probs, top2
from sw.search.space import CHOICES, SKIP, Space, SpaceError, choice_index, from_label, label
from sw.search.supernet import Supernet
from sw.train import REPO, synthetic_data

BOARD = "ulx3s-85f"
LANES = ({"clp": 8, "slp": 12, "alp": 16}, 4)     # a fixed accelerator: no mapper calls
TINY = {"name": "tiny", "dataset": "mnist", "stem": {"channels": 8},
        "blocks": [{"op": "conv", "kernel": 3, "expansion": 1, "stride": 2, "out_channels": 8},
                   {"op": "shift", "kernel": 3, "expansion": 3, "stride": 2,
                    "out_channels": 16},
                   {"op": "adder", "kernel": 3, "expansion": 3, "stride": 1,
                    "out_channels": 16},
                   {"op": "conv", "kernel": 3, "expansion": 3, "stride": 1,
                    "out_channels": 16}]}


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def space():
    return Space.from_arch(arch_mod.Arch.from_dict(TINY))


def micro_cfg(**kw):
    base = dict(dataset="synthetic", board=BOARD, macro=str(REPO / "archs/default/arch.json"),
                train_images=64, test_images=32, batch_size=16, pgp=[["cs-wide", 1],
                                                                     ["adder-all", 1]],
                search_epochs=2, calib_images=32, val_images=32, candidates=3,
                random_samples=1, lr=0.05, family_candidates=2, pool_random=2,
                proxy_networks=2, proxy_epochs=1, proxy_images=64, proxy_val_images=32)
    base.update(kw)
    return SearchConfig(**base)


def tiny_macro(tmp_path):
    p = tmp_path / "macro.json"
    p.write_text(json.dumps(TINY))
    return str(p)


def micro_data():
    """64 training images for the search, 32 held out for its selection, 32 test."""
    x, y = synthetic_data(128, seed=3)
    return (x[:96], y[:96]), (x[96:], y[96:])


# ----------------------------------------------------------------------------------------
def test_space_choices_and_masks(space):
    assert len(CHOICES) == 19 and CHOICES[SKIP][0] == "skip"
    # NASA: no adders in the first and the last block
    for i in (0, space.n_blocks - 1):
        assert not any(CHOICES[j][0] == "adder" for j in space.allowed[i])
    assert len(space.allowed[1]) == 19
    with pytest.raises(SpaceError, match=r"choices\[0\].*not allowed"):
        space.arch([choice_index("adder", 3, 1)] + [SKIP] * 3)
    conv = Space.from_arch(space.macro, "conv")
    assert all(CHOICES[j][0] in ("conv", "skip") for js in conv.allowed for j in js)
    free = Space.from_arch(space.macro, "mult-free")
    assert not any(CHOICES[j][0] == "conv" for js in free.allowed for j in js)
    with pytest.raises(SpaceError, match="space"):
        Space.from_arch(space.macro, "bogus")
    assert [from_label(label(j)) for j in range(len(CHOICES))] == list(range(len(CHOICES)))
    assert label(choice_index("shift", 5, 3)) == "shift-k5-e3" and label(SKIP) == "skip"
    with pytest.raises(SpaceError, match="not a block choice"):
        from_label("conv-k7-e3")


def test_sampled_arch_validates_and_round_trips(space):
    gen = torch.Generator().manual_seed(0)
    for _ in range(20):
        choices = space.random(gen)
        arch = space.arch(choices, "s")
        again = arch_mod.loads(arch_mod.dumps(arch))
        assert again == arch and space.choices_of(again) == choices
        assert [b.out_channels for b in arch.blocks] == [8, 16, 16, 16]


def test_weight_sharing_slices_weights_and_batch_norms(space):
    torch.manual_seed(0)
    net = Supernet(space)
    j = choice_index("shift", 3, 3)
    fam = net.blocks[1].families["shift"]
    assert fam.expand.op.weight.shape[0] == 8 * 6          # only the widest module exists
    assert fam.depthwise.op.weight.shape[1:] == (1, 5, 5)
    x = torch.rand(4, 1, 28, 28)
    mixes = [[(choice_index("conv", 3, 1), None)], [(j, None)], [(SKIP, None)],
             [(choice_index("conv", 5, 6), None)]]
    before = fam.expand.bn.running_mean.clone()
    net.train()(x, mixes)
    moved = (fam.expand.bn.running_mean != before)
    assert moved[:24].all() and not moved[24:].any()        # e = 3: the first 3 * 8 only
    net.eval()
    sub = net.extract([m[0][0] for m in mixes]).eval()
    assert torch.equal(sub.blocks[1].expand.op.weight, fam.expand.op.weight[:24])
    assert torch.equal(sub.blocks[1].project.op.weight, fam.project.op.weight[:, :24])
    # kernel 3: the centre of the shared 5x5 depthwise weight
    assert torch.equal(sub.blocks[1].depthwise.op.weight, fam.depthwise.op.weight[:24, :,
                                                                                  1:4, 1:4])
    assert torch.equal(sub.blocks[1].depthwise.bn.running_var,
                       fam.depthwise.bn.running_var[:24])
    assert sub.blocks[0].expand is None and sub.blocks[2].proj is None
    assert torch.allclose(sub(x), net(x, mixes), atol=1e-6)
    # training the e=3 path moves only its slice of the shared weight
    w0 = fam.depthwise.op.weight.detach().clone()
    net.train()
    net(x, mixes).sum().backward()
    g = fam.depthwise.op.weight.grad
    assert g[:24, :, 1:4, 1:4].abs().sum() > 0 and torch.all(g[24:] == 0)
    assert torch.all(g[:, :, 0] == 0) and torch.all(g[:, :, :, 4] == 0)
    assert torch.equal(w0, fam.depthwise.op.weight)


@pytest.mark.slow
def test_layers_and_lanes_match_the_compiler_and_mapper():
    arch = arch_mod.load(REPO / "archs/default/arch.json")
    qm = gm.load(REPO / "archs/default/qmodel.npz")
    cfg = mapper.default_config(qm, BOARD)
    prog = compile_model(qm, cfg)
    mine = H.arch_layers(arch)
    from dataclasses import replace
    untiled = [replace(L.layer, tile=1, pixels=1,
                       **(dict(mode="broadcast", spread=False) if L.layer.spread else {}))
               for L in prog.layers]
    # (the compiler picks input-channel tiles and pixel blocks, and spreads the stem where
    # the accelerator has pixel blocks)
    assert prog.layers[0].layer.spread == prog.input_spread and mine[0].reads_input
    assert untiled == [L.layer for L in mine]
    assert [L.chunk for L in prog.layers] == [L.chunk for L in mine]
    # the cost of a network on a given accelerator is the cost model's, drain included
    assert H.arch_cost(arch, BOARD, "cycles", H.accel_of(cfg)) == program_cycles(prog, cfg)[1]
    # the shape-only integer model's accelerator: the same word size; its lanes equalled
    # the real model's until the mapper began sizing the drain (edf49a7: the generic
    # accumulator widths now cost more requantiser logic, CLP 88 instead of 104 lanes)
    lanes, wb, _ = H.mapper_lanes(arch, BOARD)
    assert wb == cfg.word_bytes
    assert all(lanes[c] <= cfg.chunk(c).lanes for c in lanes)


def test_cost_tables_equal_the_cost_model(space):
    hw = H.HwCost(space, BOARD)
    lanes = ({"clp": 8, "slp": 12, "alp": 16}, 4)
    tables = {m: hw.table(m, lanes) for m in H.METRICS}
    gen = torch.Generator().manual_seed(1)
    for _ in range(10):
        choices = space.random(gen)
        arch = space.arch(choices)
        layers = H.arch_layers(arch)
        for metric, (fixed, table) in tables.items():
            got = fixed + sum(float(table[i, j]) for i, j in enumerate(choices))
            assert got == pytest.approx(H.arch_cost(arch, BOARD, metric, lanes), rel=1e-12)
        cycles = sum(mapper.layer_cycles(L.layer, lanes[0][L.chunk], 4) + 4 for L in layers)
        assert tables["cycles"][0] + sum(float(tables["cycles"][1][i, j])
                                         for i, j in enumerate(choices)) == cycles
        pj = sum(layer_energy_pj(L.layer, L.chunk, lanes=lanes[0][L.chunk], word_bytes=4,
                                 residual=L.residual) for L in layers)
        assert tables["energy"][0] + sum(float(tables["energy"][1][i, j])
                                         for i, j in enumerate(choices)) == pytest.approx(pj)
        macs = arch.summary()["macs"]
        assert H.arch_cost(arch, BOARD, "flops") == pytest.approx(
            macs["conv"] + macs["shift"] / 8 + macs["adder"] / 5)


def test_expected_cost_gradient_reaches_alpha(space):
    hw = H.HwCost(space, BOARD)
    cfg = micro_cfg()
    term = CostTerm(hw, cfg, budget=1.0, energy_ref=1.0)      # every network is over it
    term.refresh(({"clp": 8, "slp": 8, "alp": 8}, 4))
    alpha = torch.zeros(space.n_blocks, len(CHOICES), requires_grad=True)
    mask = space.mask()
    pen, e, _ = term.penalty(probs(alpha, mask), lam=1.0)
    pen.backward()
    g = alpha.grad
    assert torch.all(g[~mask] == 0) and g[mask].abs().sum() > 0
    fixed, table = term.tables["cycles"]
    # the gradient prefers cheap choices: in block 1 skip beats the widest conv 5x5
    assert g[1, SKIP] < 0 < g[1, choice_index("conv", 5, 6)]
    with torch.no_grad():
        alpha -= 0.5 * g / g.abs().max()
    assert term.expected(probs(alpha, mask)) < e
    assert e == pytest.approx(fixed + float((probs(alpha.detach() * 0, mask).double()
                                             * table).sum()))


def test_k_best_equals_brute_force():
    """The k most probable networks within a budget, against enumerating all of them."""
    gen = torch.Generator().manual_seed(0)
    for _ in range(20):
        logp = torch.log_softmax(torch.randn(4, 5, generator=gen), -1)
        logp[1, 2] = -math.inf                                      # a disallowed choice
        table = torch.randint(0, 20, (4, 5), generator=gen).double()
        budget, k = float(torch.randint(10, 60, (1,), generator=gen)), 4
        every = sorted((sum(float(logp[i, j]) for i, j in enumerate(ch)), ch)
                       for ch in itertools.product(range(5), repeat=4)
                       if 3 + sum(float(table[i, j]) for i, j in enumerate(ch)) <= budget
                       and math.isfinite(sum(float(logp[i, j]) for i, j in enumerate(ch))))
        got = k_best(logp, 3.0, table, budget, k)
        assert [lp for _, _, lp in got] == pytest.approx([lp for lp, _ in every[::-1][:k]])
        for ch, cost, lp in got:
            assert cost == 3 + sum(float(table[i, j]) for i, j in enumerate(ch)) <= budget
    assert k_best(logp, 3.0, table, 2.0, 1) == []                   # nothing fits


def test_gumbel_sample_cost_pulls_the_sample_to_the_budget(space):
    """The penalty is on the sampled architecture's cost: its gradient lowers the cost of
    a sample over the budget, raises that of one under it; top2 mixes its two largest."""
    hw = H.HwCost(space, BOARD)
    mask = space.mask()
    alpha = torch.zeros(space.n_blocks, len(CHOICES), requires_grad=True)
    g = gumbel(alpha, mask, 0.5, torch.Generator().manual_seed(0))
    assert torch.all(g[~mask] == 0) and torch.allclose(g.sum(-1), torch.ones(space.n_blocks))
    mixes = top2(g, mask)
    for i, mix in enumerate(mixes):
        assert [j for j, _ in mix] == g[i].topk(2).indices.tolist()
        assert float(sum(w.detach() for _, w in mix)) == pytest.approx(1.0)
    for side in (0.5, 2.0):
        g = gumbel(alpha, mask, 0.5, torch.Generator().manual_seed(0))
        term = CostTerm(hw, micro_cfg(), budget=1.0, energy_ref=1.0)
        term.refresh(LANES)
        term.budget = side * term.expected(g).item()
        (grad,) = torch.autograd.grad(term.penalty(g, lam=1.0)[0], alpha)
        with torch.no_grad():
            moved = term.expected(gumbel(alpha - 0.1 * grad / grad.abs().max(), mask, 0.5,
                                         torch.Generator().manual_seed(0)))
        assert (moved < term.expected(g)) == (side == 0.5)


def test_shortlist_takes_the_best_of_each_group_in_turn():
    from sw.search.run import shortlist
    rows = [{"group": g, "choices": [n], "val_accuracy": a} for g, n, a in (
        ("k-best", 1, 0.7), ("k-best", 2, 0.9), ("k-best", 3, 0.8), ("conv", 4, 0.5),
        ("conv", 5, 0.6), ("random", 6, 0.1))]
    assert [r["choices"][0] for r in shortlist(rows, 5)] == [2, 5, 6, 3, 4]
    assert [r["choices"][0] for r in shortlist(rows, 10)] == [2, 5, 6, 3, 4, 1]
    assert shortlist(rows, 0) == []


def test_pick_is_the_cheapest_the_proxy_cannot_tell_from_the_best():
    from sw.search.run import pick
    rows = [{"proxy_accuracy": a, "cost": c} for a, c in ((0.827, 222879), (0.824, 194880),
                                                           (0.822, 191929), (0.81, 150000))]
    # one standard error of 82.7% on 5000 images: 0.53 points
    assert pick(rows, 1.0, 5000)["cost"] == 191929
    assert pick(rows, 0.0, 5000)["cost"] == 222879
    assert pick(rows, 1.0, 100)["cost"] == 150000


def test_resume_continues_exactly(tmp_path):
    cfg = micro_cfg(macro=tiny_macro(tmp_path), random_samples=0)
    quiet = lambda s: None  # noqa: E731
    full = run_search(cfg, tmp_path / "a", tmp_path / "a.json", "m", data=micro_data(),
                      log=quiet, lanes=LANES)
    assert run_search(cfg, tmp_path / "b", tmp_path / "b.json", "m", data=micro_data(),
                      log=quiet, stop_after=3, lanes=LANES) is None
    logs = []
    resumed = run_search(cfg, tmp_path / "b", tmp_path / "b.json", "m", data=micro_data(),
                         log=logs.append, resume=True, lanes=LANES)
    assert any("after epoch 3/4" in s for s in logs)
    a = torch.load(tmp_path / "a" / "checkpoint.pt", weights_only=True)
    b = torch.load(tmp_path / "b" / "checkpoint.pt", weights_only=True)
    assert torch.equal(a["alpha"], b["alpha"]) and a["lam"] == b["lam"]
    # the reference accelerators travel with the checkpoint (the mapper may change)
    assert b["reference_lanes"][BOARD] == {"lanes": LANES[0], "word_bytes": LANES[1]}
    for key, value in a["supernet"].items():
        assert torch.equal(value, b["supernet"][key]), key
    assert resumed["blocks"] == full["blocks"] and resumed["networks"] == full["networks"]
    assert (tmp_path / "a.json").read_text() == (tmp_path / "b.json").read_text()
    lines = [json.loads(s) for s in (tmp_path / "b" / "log.jsonl").read_text().splitlines()]
    assert [x["phase"] for x in lines[:4]] == ["cs-wide", "adder-all", "search", "search"]
    # a finished search selects again with other selection options (one-shot pick here)
    again = run_search(micro_cfg(macro=cfg.macro, random_samples=0, proxy_networks=0),
                       tmp_path / "b", tmp_path / "c.json", "m", data=micro_data(),
                       log=quiet, resume=True, lanes=LANES)
    assert all(r["proxy_accuracy"] is None for r in again["selection"])
    assert again["blocks"] == max((r for r in again["selection"] if r["group"] == "k-best"),
                                  key=lambda r: r["val_accuracy"])["blocks"]
    # a different option refuses to resume
    with pytest.raises(Exception, match="seed = 0, this run has 1"):
        run_search(micro_cfg(macro=cfg.macro, random_samples=0, seed=1), tmp_path / "b",
                   tmp_path / "b.json", "m", data=micro_data(), log=quiet, resume=True,
                   lanes=LANES)


SMALL = {"clp": 2, "slp": 3, "alp": 2}     # a UP5K small organisation (mapper's at 7ab56c1)


def up5k_accel(macro):
    """The small organisation (the iCE40UP5K's) sized for ``macro`` at SMALL lanes."""
    return H.accel_of(mapper.small_config(H.shape_qmodel(macro), SMALL))


def fits_up5k(arch):
    """Independently of sw.search: small_config sizes ``arch`` at SMALL lanes and the
    resource model says it fits the UP5K."""
    from sw import resources as R
    try:
        cfg = mapper.small_config(H.shape_qmodel(arch), SMALL)
    except Exception:  # noqa: BLE001 (a compiler refusal is a network that does not fit)
        return False
    return not R.shortfalls(R.estimate(cfg, "icebreaker"), "icebreaker")


def test_up5k_costs_are_the_small_organisations_program_cycles():
    """On the shared engine a network's cycles are its compiled layers' (parameter copy
    and multi-word descriptors included), whatever the chunk."""
    from sw.search.run import board_space
    macro = arch_mod.load(REPO / "archs/default/arch.json")
    acc = up5k_accel(macro)
    assert acc[2]["organisation"] == "small" and acc[2]["param_words"] > 0
    space, _ = board_space(Space.from_arch(macro), "icebreaker", acc,
                           H.HwCost(Space.from_arch(macro), "icebreaker"))
    fixed, table = H.HwCost(space, "icebreaker").table("cycles", acc)
    gen, checked = torch.Generator().manual_seed(2), 0
    while checked < 3:
        choices = space.random(gen)
        arch = space.arch(choices)
        if not fits_up5k(arch):
            continue
        qm = H.shape_qmodel(arch)
        cfg = mapper.small_config(qm, SMALL)
        want = program_cycles(compile_model(qm, cfg), cfg)[1]
        assert fixed + sum(float(table[i, j]) for i, j in enumerate(choices)) == want
        assert H.arch_cost(arch, "icebreaker", "cycles", acc) == want
        checked += 1


def test_up5k_search_never_picks_a_network_that_does_not_fit():
    """Choices that cannot fit the UP5K leave the space; the selection pool holds only
    networks that fit, even where the most probable ones do not."""
    from sw.search.run import board_space, fit_filter, selection_pool
    macro = arch_mod.load(REPO / "archs/default/arch.json")
    acc = up5k_accel(macro)
    full = Space.from_arch(macro)
    space, dropped = board_space(full, "icebreaker", acc, H.HwCost(full, "icebreaker"))
    # e.g. block 0 expanding 16 channels at 28x28 to 48: 37,632 bytes > one 32 KiB SPRAM
    assert (0, choice_index("conv", 3, 3)) in dropped
    for i, j in dropped:                     # sound: such a network never fits
        assert not fits_up5k(full.arch([j if b == i else js[0]
                                        for b, js in enumerate(full.allowed)]))
    assert all(j in full.allowed[i] for i, js in enumerate(space.allowed) for j in js)
    # alpha favours the widest choices; a budget nothing reaches
    alpha = torch.zeros(space.n_blocks, len(CHOICES))
    for j, (op, k, e) in enumerate(CHOICES):
        alpha[:, j] = 3.0 if e == 6 else 0.0
    cfg = SearchConfig(board="icebreaker", budget=1e12, candidates=2, family_candidates=1,
                       pool_random=2)
    tables = H.HwCost(space, "icebreaker").table("cycles", acc)
    blind = selection_pool(cfg, space, alpha, tables)
    assert not any(fits_up5k(space.arch(c[0])) for c in blind["k-best"])
    pool = selection_pool(cfg, space, alpha, tables, fit_filter(space, "icebreaker", acc))
    nets = [c for g in pool.values() for c in g]
    assert len(pool["random"]) == 2 and all(fits_up5k(space.arch(c[0])) for c in nets)


def up5k_space(macro, acc):
    from sw.search.run import board_space
    full = Space.from_arch(macro)
    return board_space(full, "icebreaker", acc, H.HwCost(full, "icebreaker"))[0]


def test_fit_tables_say_which_networks_fit_the_up5k():
    """The fit term's sums are the compiled network's (weight words, parameter bytes), and
    a network's misfit is 0 exactly when it fits the UP5K (random networks, both kinds);
    the per-chunk organisation has no fit term."""
    from sw import resources as R
    macro = arch_mod.load(REPO / "archs/default/arch.json")
    acc = up5k_accel(macro)
    space = up5k_space(macro, acc)
    fit = H.HwCost(space, "icebreaker").fit_tables(acc)
    # block RAM, then a hole, then SPRAM: each range's top fits, one step above does not
    assert len(fit.ranges) >= 2 and fit.ranges[0][0] == 0
    cfg = mapper.small_config(H.shape_qmodel(macro), SMALL)

    def fits_depth(words):
        names = [n for n, _, _ in cfg.chunks]
        sized = dataclasses.replace(cfg, **{n: dataclasses.replace(
            cfg.chunk(n), w_words=words - len(names) + 1 if k == 0 else 1)
            for k, n in enumerate(names)})
        return not R.shortfalls(R.estimate(sized, "icebreaker"), "icebreaker")
    for lo, hi in fit.ranges:
        assert fits_depth(max(lo, 3)) and fits_depth(hi) and not fits_depth(hi + 1)
        assert lo == 0 or not fits_depth(lo - 1)
    gen, seen = torch.Generator().manual_seed(5), set()
    for _ in range(12):
        choices = space.random(gen)
        arch = space.arch(choices)
        words, act = fit.amounts(choices)
        g = torch.zeros(fit.words.shape, dtype=torch.float64)
        g[range(len(choices)), choices] = 1.0
        ok = fits_up5k(arch)
        assert (float(fit.misfit(g)) == 0) == ok
        seen.add(ok)
        if ok:
            qm = H.shape_qmodel(arch)
            prog = compile_model(qm, mapper.small_config(qm, SMALL))
            assert words == sum(len(w) for c in ("clp", "slp", "alp")
                                for w in prog.images.get(c, {}).values())
            params = sum(len(w) for w in prog.images["act"].values()) * 2  # 2-byte words
            assert act - params == max(H.pair_bytes(L, 2) for L in H.arch_layers(arch))
    assert seen == {True, False}
    assert H.HwCost(space, BOARD).fit_tables(LANES) is None


def test_fit_term_steers_a_wide_alpha_to_a_network_that_fits(monkeypatch):
    """alpha favours the widest choices, the budget is their cost (the cycle term does not
    pull): the alpha steps on the Gumbel sample end at a derived network that fits the
    UP5K with the fit term, and at one that does not without it."""
    from sw.search import search as S
    macro = arch_mod.load(REPO / "archs/default/arch.json")
    acc = up5k_accel(macro)
    space = up5k_space(macro, acc)
    hw, mask = H.HwCost(space, "icebreaker"), space.mask()
    start = torch.zeros(space.n_blocks, len(CHOICES))
    for j, (op, k, e) in enumerate(CHOICES):
        start[:, j] = 1.0 if e == 6 else 0.0
    fixed, table = hw.table("cycles", acc)
    wide, budget, _ = S.derive(space, start, fixed, table, math.inf)[0]
    assert not fits_up5k(space.arch(wide))
    cfg = SearchConfig(board="icebreaker", budget=budget)
    derived, on = {}, S.FIT_WEIGHT
    for weight in (on, 0.0):
        monkeypatch.setattr(S, "FIT_WEIGHT", weight)
        term = CostTerm(hw, cfg, budget, energy_ref=1.0)
        term.refresh(acc)
        alpha = start.clone().requires_grad_(True)
        opt = torch.optim.Adam([alpha], lr=0.05, betas=(0.5, 0.999))
        gen = torch.Generator().manual_seed(0)
        for _ in range(100):
            g = gumbel(alpha, mask, 1.0, gen)
            loss = term.penalty(g, lam=1.0, dist=probs(alpha, mask))[0]
            (alpha.grad,) = torch.autograd.grad(loss, alpha)
            opt.step()
        derived[weight] = S.derive(space, alpha, fixed, table, math.inf)[0][0]
    assert fits_up5k(space.arch(derived[on]))
    assert not fits_up5k(space.arch(derived[0.0]))


def test_micro_up5k_search_returns_a_network_that_fits(tmp_path):
    macro = arch_mod.load(REPO / "archs/default/arch.json")
    logs = []
    res = run_search(micro_cfg(board="icebreaker", pgp=[["all", 1]], search_epochs=1,
                               random_samples=1, proxy_networks=0, budget=1e12),
                     tmp_path / "s", tmp_path / "arch.json", "up5k", data=micro_data(),
                     log=logs.append, lanes=up5k_accel(macro))
    assert any(s.startswith("infeasible on icebreaker: block 0") for s in logs)
    assert res["infeasible_choices"] and res["networks"][0]["fits_icebreaker"]
    assert fits_up5k(arch_mod.load(tmp_path / "arch.json"))
    assert all(fits_up5k(macro.replace(blocks=Space.from_arch(macro).blocks(r["choices"])))
               for r in res["selection"])


def test_bench_recost_keeps_accuracies_and_costs_on_both_boards(tmp_path):
    """bench/search.py --recost: today's cycles on the stored ULX3S reference and on the
    UP5K's small organisation, the trained accuracies untouched, no training."""
    import importlib.util
    spec = importlib.util.spec_from_file_location("bench_search", REPO / "bench/search.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    macro = arch_mod.load(REPO / "archs/default/arch.json")
    space = Space.from_arch(macro)
    blocks = ["conv-k3-e3", "conv-k3-e1", "conv-k5-e1", "conv-k5-e1", "conv-k5-e1",
              "conv-k5-e1", "conv-k3-e3"]                 # block 0 does not fit the UP5K
    rows = [{"net": n, "how": "x", "blocks": b, "one_shot_val": 0.5, "accuracy": acc,
             "epochs": 1, "params": 1, "cycles_ulx3s-85f": 1}
            for n, b, acc in (("searched", blocks, 0.9),
                              ("default", [label(j) for j in space.choices_of(macro)], 0.8))]
    (tmp_path / "b.json").write_text(json.dumps({
        "search": "nowhere", "board": BOARD, "budget": 1e6, "epochs": 1, "train_images": 1,
        "test_images": 1, "rows": rows}))
    (tmp_path / "r.json").write_text(json.dumps({
        "config": {"macro": "archs/default/arch.json", "space": "hybrid"},
        "reference_lanes": {BOARD: {"lanes": LANES[0], "word_bytes": LANES[1]},
                            "icebreaker": None}}))
    assert bench.recost(tmp_path / "b.json", tmp_path / "r.json", "2,3,2") == 0
    out = json.loads((tmp_path / "b.json").read_text())["rows"]
    acc = up5k_accel(macro)
    for row, old in zip(out, rows):
        arch = space.arch([from_label(b) for b in row["blocks"]])
        assert row["accuracy"] == old["accuracy"]
        assert row["cycles_" + BOARD] == H.arch_cost(arch, BOARD, "cycles", LANES)
        assert row["cycles_icebreaker"] == H.arch_cost(arch, "icebreaker", "cycles", acc)
        assert row["fits_icebreaker"] == fits_up5k(arch)
    assert not out[0]["fits_icebreaker"] and out[1]["fits_icebreaker"]
    md = (tmp_path / "b.md").read_text()
    assert "Searched network on icebreaker: does not fit" in md


def test_result_files_name_paths_relative_to_the_repository():
    from sw.search.run import repo_path, repo_relative
    assert repo_relative(REPO / "archs" / "x" / "arch.json") == "archs/x/arch.json"
    assert repo_relative("archs/default/arch.json") == "archs/default/arch.json"
    assert repo_path("archs/x/arch.json") == REPO / "archs/x/arch.json"
    assert repo_path("/elsewhere/arch.json") == Path("/elsewhere/arch.json")   # old files
    for name in ("search_result.json", "conv_search_result.json"):
        res = json.loads((REPO / "archs/searched" / name).read_text())
        assert not Path(res["arch_file"]).is_absolute(), name
        arch = arch_mod.load(repo_path(res["arch_file"]))
        assert [label(choice_index(b.op, b.kernel, b.expansion)) for b in arch.blocks] == \
            res["blocks"], name


def test_cli_selection_options_reach_the_search(monkeypatch, capsys, tmp_path):
    """The final selection's options on the command line land in the SearchConfig (over
    the mode's defaults); a value below its least is a one-line error."""
    got = []
    monkeypatch.setattr(cli, "run_search", lambda cfg, *a, **k: got.append(cfg))
    assert cli.main(["--name", "nonexistent-x", "--quick", "--out", str(tmp_path),
                     "--proxy-epochs", "3", "--proxy-margin", "0", "--pool-random", "5"]) == 0
    quick = SearchConfig.quick()
    assert (got[0].proxy_epochs, got[0].proxy_margin, got[0].pool_random) == (3, 0.0, 5)
    assert got[0].proxy_networks == quick.proxy_networks
    assert cli.main(["--name", "nonexistent-x", "--proxy-epochs", "0"]) == 2
    assert "--proxy-epochs 0: must be >= 1" in capsys.readouterr().err
    # a proxy run's directory names its recipe: other proxy options train anew
    assert run_mod.proxy_run_name(quick, ["conv-k3-e1"]) == "conv-k3-e1-1ep-1000img-500val"


def test_cli_refuses_to_overwrite_and_bad_budget(capsys):
    before = (REPO / "archs/default/arch.json").read_text()
    assert cli.main(["--name", "default", "--quick"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "--force" in err and "\n" not in err
    # --resume without a checkpoint of that name is no licence to overwrite either
    assert cli.main(["--name", "default", "--quick", "--resume"]) == 2
    assert "--force" in capsys.readouterr().err
    assert (REPO / "archs/default/arch.json").read_text() == before
    assert cli.main(["--name", "nonexistent-x", "--budget", "5ms"]) == 2
    assert "--fmax" in capsys.readouterr().err
    assert cli.main(["--name", "nonexistent-x", "--budget", "lots"]) == 2
    assert "expected cycles" in capsys.readouterr().err
    assert cli.parse_budget("2ms", 50.0) == 100000.0
    assert not (REPO / "archs/nonexistent-x").exists()


def test_micro_search_within_budget_quantises_and_maps(tmp_path):
    """The search's network trains, quantises and is accepted by the mapper."""
    from sw.quant import core, pipeline
    from sw.train import TrainConfig, load_model, train
    macro = tiny_macro(tmp_path)
    space = Space.from_arch(arch_mod.load(macro))
    budget = 0.8 * H.arch_cost(space.macro, BOARD, "cycles", LANES)
    search_cfg = micro_cfg(macro=macro, budget=budget)
    res = run_search(search_cfg, tmp_path / "s",
                     tmp_path / "arch.json", "micro", data=micro_data(), log=lambda s: None,
                     lanes=LANES)
    assert res["within_budget"] and res["cost"] <= budget and res["mapped"] is None
    # the pool: the 3 most probable in-budget networks, the 2 most probable all-conv and
    # multiplication-free ones, 2 random ones; all distinct and within the budget
    sel = res["selection"]
    assert all(r["cost"] <= budget for r in sel)
    assert len({tuple(r["choices"]) for r in sel}) == len(sel)
    kbest = [r for r in sel if r["group"] == "k-best"]
    assert len(kbest) == 3
    assert [r["log_prob"] for r in kbest] == sorted((r["log_prob"] for r in kbest),
                                                    reverse=True)
    for fam, ops in (("conv", {"conv", "skip"}), ("mult-free", {"shift", "adder", "skip"})):
        assert all({CHOICES[j][0] for j in r["choices"]} <= ops
                   for r in sel if r["group"] == fam)
    assert {r["group"] for r in sel} <= {"k-best", "conv", "mult-free", "random"}
    # the pick: the best proxy (from-scratch) accuracy of the shortlist, which takes the
    # best one-shot network of each group in turn
    trained = [r for r in sel if r["proxy_accuracy"] is not None]
    assert len(trained) == 2 and trained[0]["group"] != trained[1]["group"]
    for r in trained:
        assert r["val_accuracy"] == max(x["val_accuracy"] for x in sel
                                        if x["group"] == r["group"])
    top = max(r["proxy_accuracy"] for r in trained)
    floor = top - math.sqrt(top * (1 - top) / 32)             # one standard error
    best = min((r for r in trained if r["proxy_accuracy"] >= floor),
               key=lambda r: (r["cost"], -r["proxy_accuracy"]))
    assert res["blocks"] == best["blocks"] and res["cost"] == best["cost"]
    assert res["networks"][0]["proxy_accuracy"] == best["proxy_accuracy"]
    assert (tmp_path / "s" / "proxy" / run_mod.proxy_run_name(search_cfg, best["blocks"])
            / "report.json").is_file()
    arch = arch_mod.load(tmp_path / "arch.json")
    assert arch.name == "micro" and H.arch_cost(arch, BOARD, "cycles", LANES) == res["cost"]
    assert res["networks"][0]["cycles_" + BOARD] == res["cost"]
    assert res["networks"][0]["net"] == "searched" and (tmp_path / "s/pareto.png").is_file()
    assert 0 <= res["networks"][0]["one_shot_accuracy"] <= 1
    (tr_x, tr_y), test = micro_data()
    train(arch, TrainConfig(dataset="synthetic", epochs=1, batch_size=16), tmp_path / "t",
          data=((tr_x, tr_y), test), log=lambda s: None)
    net, _, _ = load_model(tmp_path / "t" / "checkpoint.pt")
    nodes, tq, qcfg, _ = pipeline.quantize(net, tr_x, tr_y, calib_n=32, val_n=0,
                                           log=lambda s: None)
    qm = core.export(nodes, tq, qcfg, {"name": "micro"})
    cfg = mapper.default_config(qm, BOARD)
    assert sum(cfg.chunk(c).lanes for c in ("clp", "slp", "alp")) > 0
    logits = gm.forward(qm, test[0][:4])
    assert logits.shape == (4, 10) and np.isfinite(logits).all()


@pytest.mark.slow
def test_quick_cli_end_to_end(tmp_path, capsys):
    """``python -m sw.search --quick`` (a few minutes): progress lines, files, the arch."""
    name = "test-quick-search"
    arch_dir = REPO / "archs" / name
    assert not arch_dir.exists()
    try:
        assert cli.main(["--quick", "--name", name, "--board", BOARD, "--out",
                         str(tmp_path), "--threads", "1"]) == 0
        out = capsys.readouterr().out
        assert "epoch  7/7 search" in out and "searched test-quick-search" in out
        arch = arch_mod.load(arch_dir / "arch.json")
        res = json.loads((tmp_path / "result.json").read_text())
        assert res["within_budget"] and (tmp_path / "pareto.png").is_file()
        assert len((tmp_path / "log.jsonl").read_text().splitlines()) == 7 + len(
            res["networks"])
        from sw.search.run import stored_lanes
        assert H.arch_cost(arch, BOARD, "cycles", stored_lanes(res["reference_lanes"])[
            BOARD]) == res["cost"] <= res["config"]["budget"]
        assert cli.main(["--quick", "--name", name]) == 2          # exists now
    finally:
        import shutil
        shutil.rmtree(arch_dir, ignore_errors=True)


@pytest.mark.parametrize("option", [{"cost": "flops"}, {"objective": "energy"}])
def test_flops_proxy_and_energy_objective_run(tmp_path, option):
    macro = tiny_macro(tmp_path)
    cfg = micro_cfg(macro=macro, pgp=[["all", 1]], search_epochs=1, random_samples=0,
                    **option)
    res = run_search(cfg, tmp_path / "s", tmp_path / "a.json", "o", data=micro_data(),
                     log=lambda s: None, lanes=LANES)
    arch = arch_mod.load(tmp_path / "a.json")
    metric = "flops" if option.get("cost") == "flops" else "cycles"
    assert res["metric"] == metric and res["within_budget"]
    assert res["cost"] == pytest.approx(H.arch_cost(arch, BOARD, metric, LANES))
    # default budget: the macro network's own cost in that metric
    macro_arch = arch_mod.load(macro)
    assert res["config"]["budget"] == pytest.approx(H.arch_cost(macro_arch, BOARD, metric,
                                                                LANES))
