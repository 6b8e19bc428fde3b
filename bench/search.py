"""Baselines at the search's budget, in one table (issue 6's figures).

Run: .venv/bin/python bench/search.py --search build/search/NAME [--epochs 8]
         [--train-images 12000] [--test-images 10000] [--random N] [--int] [--threads 2]
         [--conv-search DIR] [--mult-free-search DIR] [--proxy-random] [--up5k-lanes 4,6,4]
         [--also NAME=BLOCK,BLOCK,...]

Networks, all on the search's macro and within its budget (cycles on the search's
reference accelerator: the one the mapper sized for the macro network on its board):

- ``searched``: the network of the search in ``--search``;
- ``random``: random search in the same (hybrid) space: the best of ``--random`` random
  networks within the budget, ranked by one-shot accuracy (the search's supernet weights,
  batch norm recalibrated) on the held-out training images the search selected on (not
  test images). ``--random`` defaults to the search's ``candidates`` (16 in full mode);
- ``random (proxy)`` with ``--proxy-random``: random search with the search's own final
  selection: as many random in-budget networks as the search's selection pool held,
  ranked one-shot, the search's ``proxy_networks`` best trained by the same proxy
  (sw.search.run.rank), the best proxy accuracy wins: equal evaluation budget;
- ``conv space`` (FBNet-like) and ``mult-free space`` (shift + adder): the best-of-N random
  network of that space, ranked the same way; plus ``conv search`` / ``mult-free search``,
  the network of a ``--space conv`` / ``--space mult-free`` search, when given;
- ``default``: the hand-made ``archs/default``.

Each is trained from scratch by sw.train for the same ``--epochs`` on the same
``--train-images`` (seed 0), evaluated on ``--test-images`` Fashion-MNIST test images and,
with ``--int``, quantised (sw.quant PTQ, as ``make quant`` before any QAT) and evaluated as
the integer model. Predicted
cycles and energy come from sw.search.hwcost on icebreaker and ulx3s-85f, on the
reference accelerators (the same hardware for every network) and on the accelerator the
mapper sizes for each network ("own"; "does not fit" where the mapper finds none). On the
iCE40UP5K the reference is the small organisation (sw.mapper.small_config) with
``--up5k-lanes`` lanes (default 4,6,4: the one bench/accel.py --small builds) and 2-byte
words; ``own`` there: whether small_config sizes the network with those lanes ("sized")
or its error (it does not check the LC budget: the resource model does not cover it). The
last lines say which baselines dominate the searched network (at least as accurate,
integer accuracy with ``--int``, at no more cycles, better in one). Writes
``build/search/bench/<search name>.{json,md}`` and redraws the search's Pareto plot with
the trained points; trained runs resume when interrupted.
"""
import argparse
import dataclasses
import json
import os
import sys
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import torch  # noqa: E402

from sw import arch as arch_mod  # noqa: E402
from sw.search.hwcost import BOARDS, HwCost, arch_cost, shape_qmodel  # noqa: E402
from sw.search.plot import pareto  # noqa: E402
from sw.search.run import (_generator, hw_figures, load_search, one_shot,  # noqa: E402
                           SELECTION_KEYS, random_in_budget, rank, repo_relative,
                           stored_lanes, train_order)
from sw.search.space import Space, from_label  # noqa: E402
from sw.train import TrainConfig, load_data, load_model, train  # noqa: E402


def best_random(net, space, n, cfg, ref, calib, val, seed):
    """The best of ``n`` random in-budget networks of ``space`` by one-shot accuracy."""
    gen = torch.Generator().manual_seed(seed)
    best, tried = None, 0
    found = 0
    while found < n and tried < 50 * n:
        tried += 1
        choices = space.random(gen)
        if arch_cost(space.arch(choices), cfg.board, "cycles", ref[cfg.board]) > cfg.budget:
            continue
        found += 1
        acc = one_shot(net, choices, calib, val)
        if best is None or acc > best[0]:
            best = (acc, choices)
    return best


def proxy_random(net, space, cfg, result, ref, calib, order, tr_x, tr_y, log, proxy_dir):
    """Random search with the search's own final selection (sw.search.run.rank): as many
    random in-budget networks as the search's pool held, the same one-shot ranking and
    proxy training on the same images; a (label, how, choices) row."""
    n = len(result["selection"])
    fixed, table = HwCost(space, cfg.board).table("cycles", ref[cfg.board])
    pool = random_in_budget(space, fixed, table, cfg.budget, n,
                            _generator(cfg.seed + 1, 10 ** 6 + 1))
    held = order[cfg.train_images:][:max(cfg.val_images, cfg.proxy_val_images)]
    tr = order[:cfg.proxy_images]
    choices, _, rows = rank(cfg, space, net, {"random": pool}, calib,
                            (tr_x[held[:cfg.val_images]], tr_y[held[:cfg.val_images]]), log,
                            (tr_x[tr], tr_y[tr]),
                            (tr_x[held[:cfg.proxy_val_images]], tr_y[held[:cfg.proxy_val_images]]),
                            proxy_dir)
    return ("random (proxy)", f"hybrid (random {n}, {cfg.proxy_networks} proxy-trained)",
            choices)


def up5k_sized(arch, lanes):
    """"sized" if sw.mapper.small_config sizes ``arch`` with ``lanes``, else its error."""
    from sw.mapper import small_config
    try:
        small_config(shape_qmodel(arch), lanes)
        return "sized"
    except Exception as e:  # noqa: BLE001 (any mapper/compiler refusal is a table entry)
        return f"no: {str(e).splitlines()[0][:60]}"


def searched_choices(space, search_dir):
    """(choices, result.json's dict) of the network a search selected."""
    result = json.loads((Path(search_dir) / "result.json").read_text())
    return [from_label(b) for b in result["blocks"]], result


def quantised_accuracy(out, train_xy, test_xy):
    """Test accuracy of the integer model ``make quant`` makes by PTQ (activation
    percentile chosen on 2000 of the training images), run by the golden model."""
    from sw.golden import model as gm
    from sw.quant import core, pipeline
    net, _, _ = load_model(out / "checkpoint.pt")
    nodes, tq, qcfg, _ = pipeline.quantize(net, *train_xy, log=lambda s: None)
    qm = core.export(nodes, tq, qcfg, {"name": "bench"})
    pred = gm.forward(qm, test_xy[0]).argmax(1)
    return float((pred == test_xy[1]).mean())


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--search", required=True, help="a search's output dir (build/search/NAME)")
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument("--train-images", type=int, default=12000)
    ap.add_argument("--test-images", type=int, default=10000)
    ap.add_argument("--random", type=int, default=None,
                    help="random networks per space (default: as many as the search ranked)")
    ap.add_argument("--int", action="store_true", help="also the integer (PTQ) accuracy")
    ap.add_argument("--conv-search", default=None, help="a --space conv search's dir")
    ap.add_argument("--mult-free-search", default=None, help="a --space mult-free search's dir")
    ap.add_argument("--also", action="append", default=[], metavar="NAME=BLOCK,BLOCK,...",
                    help="one more network of the search's space (e.g. another pick)")
    ap.add_argument("--proxy-random", action="store_true",
                    help="add random search ranked by the search's own proxy selection")
    ap.add_argument("--up5k-lanes", default="4,6,4", metavar="CLP,SLP,ALP",
                    help="lanes of the iCE40UP5K small organisation ('' to leave it out)")
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    log = lambda s: print(s, flush=True)  # noqa: E731
    cfg, space, net, _ = load_search(args.search)
    tr_x, tr_y = load_data(cfg.dataset, "train")
    te_x, te_y = load_data(cfg.dataset, "test")
    order = train_order(cfg, len(tr_y))
    held = order[cfg.train_images:cfg.train_images + cfg.val_images]
    val = (tr_x[held], tr_y[held])
    calib = tr_x[order[:cfg.calib_images]]
    choices, result = searched_choices(space, args.search)
    # the selection options the run finished with (a finished search may select again)
    cfg = dataclasses.replace(cfg, **{k: result["config"][k] for k in SELECTION_KEYS
                                      if k in result["config"]})
    args.random = args.random or cfg.candidates
    ref = stored_lanes(result["reference_lanes"])
    up5k = None
    if args.up5k_lanes:
        up5k = (dict(zip(("clp", "slp", "alp"), map(int, args.up5k_lanes.split(",")))), 2)
        ref["icebreaker"] = up5k
    how = "hybrid (searched, proxy selection)" if any(
        r.get("proxy_accuracy") is not None for r in result.get("selection") or ()) \
        else "hybrid (searched)"
    nets = [("searched", how, choices)]
    for spec in args.also:
        tag, _, blocks = spec.partition("=")
        nets.append((tag, "given", [from_label(b) for b in blocks.split(",")]))
    if args.proxy_random:
        nets.append(proxy_random(net, space, cfg, result, ref, calib, order, tr_x, tr_y,
                                 log, REPO / "build" / "search" / "bench" /
                                 f"{Path(args.search).name}-proxy-random"))
    for kind, given in (("hybrid", None), ("conv", args.conv_search),
                        ("mult-free", args.mult_free_search)):
        sp = Space.from_arch(space.macro, kind)
        if given:
            nets.append((f"{kind} search", f"{kind} space (searched)",
                         searched_choices(sp, given)[0]))
        best = best_random(net, sp, args.random, cfg, ref, calib, val, seed=1)
        label = "random" if kind == "hybrid" else f"{kind} space"
        if best:
            nets.append((label, f"{kind} (best of {args.random} random)", best[1]))
            log(f"{label}: best one-shot {100 * best[0]:.2f}% of {args.random} in budget")
        else:
            log(f"{label}: no random network within the budget")
    nets.append(("default", "hand-made", space.choices_of(
        arch_mod.load(REPO / "archs/default/arch.json"))))
    train_xy = (tr_x[order[:args.train_images]], tr_y[order[:args.train_images]])
    test_xy = (te_x[:args.test_images], te_y[:args.test_images])
    name = Path(args.search).name
    out_root = REPO / "build" / "search" / "bench" / name
    rows = []
    for label, how, ch in nets:
        arch = space.arch(ch, label.replace(" (", "-").replace(")", "").replace(" ", "-"))
        out = out_root / arch.name
        rep = train(arch, TrainConfig(dataset=cfg.dataset, epochs=args.epochs, seed=0), out,
                    resume=True, data=(train_xy, test_xy), log=log)
        row = {"net": label, "how": how, "blocks": [
            "skip" if b.op == "skip" else f"{b.op}-k{b.kernel}-e{b.expansion}"
            for b in arch.blocks], "one_shot_val": one_shot(net, ch, calib, val),
            "accuracy": rep["test_accuracy"], "epochs": rep["epochs"],
            "params": rep["params"]["total"], **hw_figures(arch, ref),
            **{f"own_{k}": v for k, v in hw_figures(arch).items() if k.endswith(BOARDS)}}
        if up5k:
            row["own_cycles_icebreaker"] = up5k_sized(arch, up5k[0])
        if args.int:
            row["integer_accuracy"] = quantised_accuracy(out, train_xy, test_xy)
        rows.append(row)
        log(f"{label}: {100 * row['accuracy']:.2f}% after {row['epochs']} epochs")
    out_root.mkdir(parents=True, exist_ok=True)
    (out_root.parent / f"{name}.json").write_text(json.dumps(
        {"search": repo_relative(Path(args.search).resolve()), "board": cfg.board, "budget": cfg.budget,
         "epochs": args.epochs, "train_images": args.train_images,
         "test_images": args.test_images, "rows": rows}, indent=1) + "\n")
    table = markdown(rows, cfg, args) + "\n" + "\n\n".join(
        verdict(rows, b) for b in [cfg.board] + [b for b in BOARDS if b != cfg.board]
        if all(r.get(f"cycles_{b}") is not None for r in rows)) + "\n"
    (out_root.parent / f"{name}.md").write_text(table)
    pareto(result, Path(args.search) / "pareto.png", trained=rows)
    print(table)
    return 0


def _fmt(v, scale=1.0, digits=0, none="-"):
    if isinstance(v, str):
        return v
    return none if v is None else f"{v * scale:,.{digits}f}"


def _pct(v):
    return "-" if v is None else f"{100 * v:.2f}%"


def dominates(a, b, board):
    """Whether row ``a`` dominates row ``b``: at least as accurate (integer accuracy where
    both have it) at no more cycles on ``board``, and better in one of the two."""
    key = "integer_accuracy" if "integer_accuracy" in a and "integer_accuracy" in b \
        else "accuracy"
    acc, cyc = (a[key], b[key]), (a[f"cycles_{board}"], b[f"cycles_{board}"])
    return acc[0] >= acc[1] and cyc[0] <= cyc[1] and (acc[0] > acc[1] or cyc[0] < cyc[1])


def verdict(rows, board):
    """Whether the searched network (the first row) is on the Pareto front of the others,
    and one line per baseline saying which of the two dominates the other."""
    s = rows[0]
    out = []
    for r in rows[1:]:
        rel = "dominates the searched network" if dominates(r, s, board) else \
            "is dominated by the searched network" if dominates(s, r, board) else \
            "and the searched network do not dominate each other"
        out.append(f"- {r['net']} {rel}")
    on = not any(dominates(r, s, board) for r in rows[1:])
    every = all(dominates(s, r, board) for r in rows[1:])
    return (f"Searched network on {board}: {'on' if on else 'NOT on'} the Pareto front of "
            f"the baselines{'; it dominates every one' if every else ''}.\n" + "\n".join(out))


def markdown(rows, cfg, args):
    head = (f"Budget {cfg.budget:,.0f} cycles on {cfg.board}; {args.epochs} epochs on "
            f"{args.train_images} Fashion-MNIST training images, {args.test_images} test "
            "images."
            + (f" icebreaker: the iCE40UP5K small organisation (sw.mapper.small_config) with "
               f"{args.up5k_lanes} CLP/SLP/ALP lanes, 2-byte words; its 'own' column says "
               "whether small_config sizes the network (LC budget not checked)."
               if args.up5k_lanes else "")
            + "\n\n| net | how | blocks | one-shot val | float | integer | params | "
            + " | ".join(f"cycles {b} | uJ {b} | own cycles {b}" for b in BOARDS) + " |\n|"
            + "---|" * (7 + 3 * len(BOARDS)) + "\n")
    lines = [f"| {r['net']} | {r['how']} | {' '.join(r['blocks'])} | "
             f"{_pct(r['one_shot_val'])} | {_pct(r['accuracy'])} | "
             f"{_pct(r.get('integer_accuracy'))} | {r['params']:,} | "
             + " | ".join(f"{_fmt(r[f'cycles_{b}'], none='does not fit')} | "
                          f"{_fmt(r[f'energy_uj_{b}'], 1, 1, '-')} | "
                          f"{_fmt(r[f'own_cycles_{b}'], none='does not fit')}"
                          for b in BOARDS) + " |" for r in rows]
    return head + "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
