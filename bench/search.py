"""Baselines at the search's budget, in one table (issue 6's figures).

Run: .venv/bin/python bench/search.py --search build/search/NAME [--epochs 8]
         [--train-images 12000] [--test-images 10000] [--random N] [--int] [--threads 2]
         [--conv-search DIR] [--mult-free-search DIR] [--proxy-random]
         [--up5k-lanes mapper|none|C,S,A] [--also NAME=BLOCK,BLOCK,...]
     .venv/bin/python bench/search.py --recost archs/searched/baselines.json \
         [--result archs/searched/search_result.json]    # costs only, no training

``--variance``: seed variance: the JSON's networks named by ``--nets`` (default: searched
and conv space) trained again with the ``--seeds`` (default 1,2) by the same protocol
(``--epochs``, ``--train-images``, ``--test-images`` as in the JSON, the search's image
order, ``--int`` for the integer accuracy); the runs go to ``seed_runs`` in the JSON and
a seed table to its .md:

    .venv/bin/python bench/search.py --variance archs/searched/baselines.json --int \
        --threads 1 [--nets searched,"conv space"] [--seeds 1,2]

``--place``: the network of another search (``--search``, e.g. one on another board)
trained by the protocol of a baselines JSON (its ``--epochs``, training and test images,
in the image order of the JSON's search) and put first in a copy of its table (``--out``),
the JSON's rows kept as baselines (their trained accuracies; its ``searched`` row renamed
``searched (<board>)``), every row costed again: on ``--search``'s board on that search's
reference accelerator, on the other boards on the JSON's search's:

    .venv/bin/python bench/search.py --place archs/searched/baselines.json \
        --search build/search/searched-ice40 --out archs/searched-ice40/baselines.json \
        --int --threads 2

``--recost``: the table's networks costed again with today's cost model and mapper (the
trained accuracies in the JSON are kept; nothing is trained): the ULX3S-85F reference is
the one stored in the search's ``--result`` (default: ``result.json`` in the JSON's
``search`` directory, else ``archs/searched/search_result.json``), the UP5K's the
mapper's pick for the macro network; the JSON and its ``.md`` beside it are rewritten.

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
iCE40UP5K the reference is the mapper's pick for the macro network (the small
organisation: one shared engine, sw.mapper.small_config; ``--up5k-lanes C,S,A``: that
organisation with these lanes, ``none``: no UP5K columns); "fits" says whether the
network fits it (sw.search.hwcost.fit_error: small_config compiles it at those lanes and
the resource model is within the UP5K). The last lines say which baselines dominate the
searched network (at least as accurate, integer accuracy with ``--int``, at no more
cycles, better in one); on the UP5K only among networks that fit. Writes
``build/search/bench/<search name>.{json,md}`` and redraws the search's Pareto plot with
the trained points; trained runs resume when interrupted.
"""
import argparse
import dataclasses
import json
import os
import re
import sys
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import torch  # noqa: E402

from sw import arch as arch_mod  # noqa: E402
from sw.search.hwcost import (BOARDS, HwCost, accel_of, arch_cost,  # noqa: E402
                               mapper_lanes, shape_qmodel)
from sw.search.plot import pareto  # noqa: E402
from sw.search.run import (_generator, hw_figures, load_search, one_shot,  # noqa: E402
                           SELECTION_KEYS, fit_filter, random_in_budget, rank, repo_path,
                           repo_relative, stored_lanes, train_order)
from sw.search.space import Space, from_label  # noqa: E402
from sw.train import TrainConfig, load_data, load_model, train  # noqa: E402


def best_random(net, space, n, cfg, ref, calib, val, seed):
    """The best of ``n`` random in-budget networks of ``space`` by one-shot accuracy (on
    the UP5K: networks that fit it)."""
    gen = torch.Generator().manual_seed(seed)
    fits = fit_filter(space, cfg.board, ref[cfg.board])
    best, tried = None, 0
    found = 0
    while found < n and tried < 50 * n:
        tried += 1
        choices = space.random(gen)
        if arch_cost(space.arch(choices), cfg.board, "cycles", ref[cfg.board]) > cfg.budget:
            continue
        if fits is not None and not fits(choices):
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
                            _generator(cfg.seed + 1, 10 ** 6 + 1),
                            fits=fit_filter(space, cfg.board, ref[cfg.board]))
    held = order[cfg.train_images:][:max(cfg.val_images, cfg.proxy_val_images)]
    tr = order[:cfg.proxy_images]
    choices, _, rows = rank(cfg, space, net, {"random": pool}, calib,
                            (tr_x[held[:cfg.val_images]], tr_y[held[:cfg.val_images]]), log,
                            (tr_x[tr], tr_y[tr]),
                            (tr_x[held[:cfg.proxy_val_images]], tr_y[held[:cfg.proxy_val_images]]),
                            proxy_dir)
    return ("random (proxy)", f"hybrid (random {n}, {cfg.proxy_networks} proxy-trained)",
            choices)


def up5k_reference(macro, spec):
    """The UP5K reference accelerator (:func:`sw.search.hwcost.accel_of` form): the
    mapper's pick for ``macro`` (``spec`` "mapper"), the small organisation with lanes
    "C,S,A", or None ("none")."""
    if spec in ("none", ""):
        return None
    if spec == "mapper":
        return mapper_lanes(macro, "icebreaker")
    from sw.mapper import small_config
    lanes = dict(zip(("clp", "slp", "alp"), map(int, spec.split(","))))
    return accel_of(small_config(shape_qmodel(macro), lanes))


def cost_row(row, arch, ref):
    """``row`` with the predicted figures of ``arch`` on the reference accelerators
    ``ref`` ({board: accelerator}) and, as ``own_*``, on the accelerator the mapper sizes
    for it (None where it finds none)."""
    row.update(hw_figures(arch, ref))
    row.update({f"own_{k}": v for k, v in hw_figures(arch).items()
                if k.endswith(BOARDS) and not k.startswith("fits")})
    return row


def _ref_text(acc):
    lanes, wb = acc[0], acc[1]
    org = acc[2].get("organisation", "chunks") if len(acc) > 2 and acc[2] else "chunks"
    return f"{'/'.join(str(lanes[c]) for c in ('clp', 'slp', 'alp'))} lanes, {wb}-byte " \
        f"words, {org} organisation"


def variance(path, nets, seeds, integer, log=print):
    """Train the rows ``nets`` of a baselines JSON again with each of ``seeds`` (same
    protocol as the table); adds ``seed_runs`` to the JSON and rewrites its .md."""
    from sw.search.run import SearchConfig
    import time
    path = Path(path)
    data = json.loads(path.read_text())
    result = json.loads(_result_path(data).read_text())
    cfg = SearchConfig(**{k: v for k, v in result["config"].items()
                          if k in {f.name for f in dataclasses.fields(SearchConfig)}})
    macro = arch_mod.load(repo_path(cfg.macro))
    space = Space.from_arch(macro, cfg.space)
    tr_x, tr_y = load_data(cfg.dataset, "train")
    te_x, te_y = load_data(cfg.dataset, "test")
    order = train_order(cfg, len(tr_y))
    train_xy = (tr_x[order[:data["train_images"]]], tr_y[order[:data["train_images"]]])
    test_xy = (te_x[:data["test_images"]], te_y[:data["test_images"]])
    runs = data.setdefault("seed_runs", {})
    by_net = {r["net"]: r for r in data["rows"]}
    for net in nets:
        row = by_net[net]
        arch = space.arch([from_label(b) for b in row["blocks"]],
                          net.replace(" (", "-").replace(")", "").replace(" ", "-"))
        have = {r["seed"] for r in runs.get(net, [])}
        for seed in seeds:
            if seed in have:
                continue
            out = REPO / "build" / "search" / "bench" / f"seed{seed}" / arch.name
            t0 = time.perf_counter()
            rep = train(arch, TrainConfig(dataset=cfg.dataset, epochs=data["epochs"],
                                          seed=seed), out, resume=True,
                        data=(train_xy, test_xy), log=log)
            run = {"seed": seed, "accuracy": rep["test_accuracy"],
                   "seconds": round(time.perf_counter() - t0)}
            if integer:
                run["integer_accuracy"] = quantised_accuracy(out, train_xy, test_xy)
            runs.setdefault(net, []).append(run)
            log(f"{net} seed {seed}: {100 * run['accuracy']:.2f}% float"
                + (f", {100 * run['integer_accuracy']:.2f}% integer" if integer else "")
                + f" ({run['seconds']} s)")
            path.write_text(json.dumps(data, indent=1) + "\n")
    md = path.with_suffix(".md")
    text = md.read_text() if md.is_file() else ""
    text = text.split("\n## Seed variance")[0].rstrip("\n") + "\n\n" + seed_table(data)
    md.write_text(text)
    print(seed_table(data))
    return 0


def seed_table(data):
    """Markdown: per network, the table's run (seed 0) and the ``seed_runs``."""
    lines = ["## Seed variance", "",
             f"Same protocol ({data['epochs']} epochs, {data['train_images']} training "
             f"images, {data['test_images']} test images), other training seeds.", "",
             "| net | seed | float | integer |", "|---|---|---|---|"]
    by_net = {r["net"]: r for r in data["rows"]}
    for net, runs in data.get("seed_runs", {}).items():
        r0 = by_net[net]
        all_runs = [{"seed": 0, "accuracy": r0["accuracy"],
                     "integer_accuracy": r0.get("integer_accuracy")}] + runs
        for r in all_runs:
            lines.append(f"| {net} | {r['seed']} | {_pct(r['accuracy'])} | "
                         f"{_pct(r.get('integer_accuracy'))} |")
        for key in ("accuracy", "integer_accuracy"):
            v = [r[key] for r in all_runs if r.get(key) is not None]
            if len(v) > 1:
                m = sum(v) / len(v)
                sd = (sum((x - m) ** 2 for x in v) / (len(v) - 1)) ** 0.5
                kind = "float" if key == "accuracy" else "integer"
                lines.append(f"| {net} | mean +- sd ({kind}) | {100 * m:.2f}% +- "
                             f"{100 * sd:.2f} | |")
    return "\n".join(lines) + "\n"


def arch_tag(net):
    """An architecture name (letters, digits, '.', '_', '-') for a table row's ``net``."""
    return re.sub(r"[^A-Za-z0-9._-]+", "-", net).strip("-")


def _result_path(data):
    cands = [repo_path(data["search"]) / "result.json",
             REPO / "archs/searched/search_result.json"]
    return next((p for p in cands if p.is_file()), cands[-1])


def recost(path, result_path=None, up5k="mapper"):
    """Rewrite a baselines JSON (and its .md) with today's cost model: no training."""
    path = Path(path)
    data = json.loads(path.read_text())
    if result_path is None:
        result_path = _result_path(data)
    result = json.loads(Path(result_path).read_text())
    macro = arch_mod.load(repo_path(result["config"]["macro"]))
    space = Space.from_arch(macro, result["config"]["space"])
    ref = stored_lanes(result["reference_lanes"])
    if data.get("baselines"):   # a --place table: the other boards on its baselines' search's
        base = json.loads(_result_path(json.loads(repo_path(data["baselines"]).read_text()))
                          .read_text())
        ref = {**stored_lanes(base["reference_lanes"]), data["board"]: ref[data["board"]]}
    if data["board"] != "icebreaker":
        ref["icebreaker"] = up5k_reference(macro, up5k)
    for row in data["rows"]:
        arch = space.arch([from_label(b) for b in row["blocks"]], arch_tag(row["net"]))
        for k in [k for k in row if k.startswith(("cycles_", "energy_uj_", "own_", "fits_"))]:
            del row[k]
        cost_row(row, arch, ref)
        print(f"{row['net']}: " + ", ".join(
            f"{b} {row[f'cycles_{b}']:,} cycles" + ("" if row[f"fits_{b}"] else " (does not fit)")
            for b in BOARDS if row.get(f"cycles_{b}") is not None), flush=True)
    data["reference"] = {b: v and _ref_text(v) for b, v in ref.items()}
    data["default_cycles_today"] = {b: ref[b] and arch_cost(macro, b, "cycles", ref[b])
                                    for b in BOARDS}
    path.write_text(json.dumps(data, indent=1) + "\n")
    cfg = argparse.Namespace(budget=data["budget"], board=data["board"])
    args = argparse.Namespace(epochs=data["epochs"], train_images=data["train_images"],
                              test_images=data["test_images"])
    table = write_table(data["rows"], cfg, args, data)
    path.with_suffix(".md").write_text(table + ("\n" + seed_table(data)
                                                if data.get("seed_runs") else ""))
    print(table)
    return 0


def place(path, search_dir, out_path, integer, log=print):
    """``--place``: the network of ``search_dir`` trained by the protocol of the baselines
    JSON ``path`` and put first in a copy of its table at ``out_path`` (+ .md)."""
    from sw.search.run import SearchConfig
    data = json.loads(Path(path).read_text())
    base = json.loads(_result_path(data).read_text())
    base_cfg = SearchConfig(**{k: v for k, v in base["config"].items()
                               if k in {f.name for f in dataclasses.fields(SearchConfig)}})
    cfg, space, _, _ = load_search(search_dir)
    if cfg.macro != base_cfg.macro or cfg.dataset != base_cfg.dataset:
        raise SystemExit(f"error: {search_dir} searched {cfg.macro} on {cfg.dataset}, the "
                         f"table's search {base_cfg.macro} on {base_cfg.dataset}")
    choices, result = searched_choices(space, search_dir)
    ref = stored_lanes(base["reference_lanes"])
    ref[cfg.board] = stored_lanes(result["reference_lanes"])[cfg.board]
    tr_x, tr_y = load_data(cfg.dataset, "train")
    te_x, te_y = load_data(cfg.dataset, "test")
    order = train_order(base_cfg, len(tr_y))[:data["train_images"]]
    train_xy, test_xy = (tr_x[order], tr_y[order]), (te_x[:data["test_images"]],
                                                      te_y[:data["test_images"]])
    name = Path(search_dir).name
    arch = space.arch(choices, name)
    out = REPO / "build" / "search" / "bench" / "placed" / name
    rep = train(arch, TrainConfig(dataset=cfg.dataset, epochs=data["epochs"], seed=0), out,
                resume=True, data=(train_xy, test_xy), log=log)
    row = {"net": "searched", "how": f"hybrid (searched on {cfg.board}, proxy selection)",
           "blocks": [b for b in result["blocks"]], "one_shot_val": None,
           "accuracy": rep["test_accuracy"], "epochs": rep["epochs"],
           "params": rep["params"]["total"]}
    if integer:
        row["integer_accuracy"] = quantised_accuracy(out, train_xy, test_xy)
    log(f"searched ({name}): {100 * row['accuracy']:.2f}% float"
        + (f", {100 * row['integer_accuracy']:.2f}% integer" if integer else ""))
    macro = space.macro
    full = Space.from_arch(macro, base_cfg.space)
    rows = [cost_row(row, arch, ref)]
    for old in data["rows"]:
        old = {k: v for k, v in old.items()
               if not k.startswith(("cycles_", "energy_uj_", "own_", "fits_"))}
        if old["net"] == "searched":
            old["net"] = f"searched ({data['board']})"
        rows.append(cost_row(old, full.arch([from_label(b) for b in old["blocks"]],
                                            arch_tag(old["net"])), ref))
    new = {"search": repo_relative(Path(search_dir).resolve()), "board": cfg.board,
           "budget": cfg.budget, "epochs": data["epochs"],
           "train_images": data["train_images"], "test_images": data["test_images"],
           "baselines": repo_relative(Path(path).resolve()), "rows": rows,
           "reference": {b: v and _ref_text(v) for b, v in ref.items()},
           "default_cycles_today": {b: ref[b] and arch_cost(macro, b, "cycles", ref[b])
                                    for b in BOARDS}}
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text(json.dumps(new, indent=1) + "\n")
    args = argparse.Namespace(epochs=data["epochs"], train_images=data["train_images"],
                              test_images=data["test_images"])
    table = write_table(rows, argparse.Namespace(budget=cfg.budget, board=cfg.board), args,
                        new)
    out_path.with_suffix(".md").write_text(table)
    print(table)
    return 0


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
    ap.add_argument("--search", help="a search's output dir (build/search/NAME)")
    ap.add_argument("--recost", metavar="JSON", help="re-cost a baselines JSON, no training")
    ap.add_argument("--result", help="with --recost: the search's result.json")
    ap.add_argument("--variance", metavar="JSON", help="retrain --nets of a baselines JSON "
                    "with other --seeds")
    ap.add_argument("--nets", default="searched,conv space")
    ap.add_argument("--seeds", default="1,2")
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
    ap.add_argument("--up5k-lanes", default="mapper", metavar="mapper|none|CLP,SLP,ALP",
                    help="the iCE40UP5K reference: the mapper's pick for the macro network "
                         "(default), the small organisation with these lanes, or none")
    ap.add_argument("--place", metavar="JSON", help="put --search's network, trained by "
                    "this baselines JSON's protocol, first in a copy of its table (--out)")
    ap.add_argument("--out", help="with --place: the JSON to write (and its .md)")
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.place:
        if not (args.search and args.out):
            ap.error("--place needs --search and --out")
        return place(args.place, args.search, args.out, args.int,
                     lambda t: print(t, flush=True))
    if args.recost:
        return recost(args.recost, args.result, args.up5k_lanes)
    if args.variance:
        return variance(args.variance, args.nets.split(","),
                        [int(x) for x in args.seeds.split(",")], args.int,
                        lambda t: print(t, flush=True))
    if not args.search:
        ap.error("--search or --recost is required")
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
    if cfg.board != "icebreaker":
        ref["icebreaker"] = up5k_reference(space.macro, args.up5k_lanes)
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
        # the choices the search's supernet holds (on the UP5K: those that can fit)
        sp = dataclasses.replace(sp, allowed=tuple(tuple(j for j in js if j in space.allowed[i])
                                                   for i, js in enumerate(sp.allowed)))
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
        row = cost_row({"net": label, "how": how, "blocks": [
            "skip" if b.op == "skip" else f"{b.op}-k{b.kernel}-e{b.expansion}"
            for b in arch.blocks], "one_shot_val": one_shot(net, ch, calib, val),
            "accuracy": rep["test_accuracy"], "epochs": rep["epochs"],
            "params": rep["params"]["total"]}, arch, ref)
        if args.int:
            row["integer_accuracy"] = quantised_accuracy(out, train_xy, test_xy)
        rows.append(row)
        log(f"{label}: {100 * row['accuracy']:.2f}% after {row['epochs']} epochs")
    out_root.mkdir(parents=True, exist_ok=True)
    data = {"search": repo_relative(Path(args.search).resolve()), "board": cfg.board,
            "budget": cfg.budget, "epochs": args.epochs, "train_images": args.train_images,
            "test_images": args.test_images, "rows": rows,
            "reference": {b: v and _ref_text(v) for b, v in ref.items()},
            "default_cycles_today": {b: ref[b] and arch_cost(space.macro, b, "cycles", ref[b])
                                     for b in BOARDS}}
    (out_root.parent / f"{name}.json").write_text(json.dumps(data, indent=1) + "\n")
    table = write_table(rows, cfg, args, data)
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


def write_table(rows, cfg, args, data):
    """The markdown table and, per board, the verdict."""
    return markdown(rows, cfg, args, data) + "\n" + "\n\n".join(
        verdict(rows, b) for b in [cfg.board] + [b for b in BOARDS if b != cfg.board]
        if all(r.get(f"cycles_{b}") is not None for r in rows)) + "\n"


def dominates(a, b, board):
    """Whether row ``a`` dominates row ``b``: at least as accurate (integer accuracy where
    both have it) at no more cycles on ``board``, and better in one of the two."""
    key = "integer_accuracy" if "integer_accuracy" in a and "integer_accuracy" in b \
        else "accuracy"
    acc, cyc = (a[key], b[key]), (a[f"cycles_{board}"], b[f"cycles_{board}"])
    return acc[0] >= acc[1] and cyc[0] <= cyc[1] and (acc[0] > acc[1] or cyc[0] < cyc[1])


def verdict(rows, board):
    """Whether the searched network (the first row) is on the Pareto front of the others,
    and one line per baseline saying which of the two dominates the other. Networks that
    do not fit ``board`` (``fits_<board>`` false) dominate nothing there."""
    s = rows[0]
    fit = lambda r: r.get(f"fits_{board}", True)  # noqa: E731
    out = []
    for r in rows[1:]:
        if not fit(r):
            out.append(f"- {r['net']} does not fit {board}")
            continue
        rel = "dominates the searched network" if dominates(r, s, board) else \
            "is dominated by the searched network" if fit(s) and dominates(s, r, board) \
            else "and the searched network do not dominate each other"
        out.append(f"- {r['net']} {rel}")
    if not fit(s):
        rivals = [r for r in rows[1:] if fit(r)]
        front = [r["net"] for r in rivals if not any(dominates(q, r, board) for q in rivals)]
        return (f"Searched network on {board}: does not fit, so it is on no front there. "
                f"Front of the networks that fit: {', '.join(front) or 'none'}.\n"
                + "\n".join(f"- {r['net']} does not fit {board}" if not fit(r) else
                             f"- {r['net']} fits" for r in rows[1:]))
    rivals = [r for r in rows[1:] if fit(r)]
    on = not any(dominates(r, s, board) for r in rivals)
    every = all(dominates(s, r, board) for r in rivals)
    return (f"Searched network on {board}: {'on' if on else 'NOT on'} the Pareto front of "
            f"the baselines that fit{'; it dominates every one' if every else ''}.\n"
            + "\n".join(out))


def markdown(rows, cfg, args, data=None):
    data = data or {}
    refs = "; ".join(f"{b}: {t}" for b, t in (data.get("reference") or {}).items() if t)
    today = data.get("default_cycles_today") or {}
    head = (f"Budget {cfg.budget:,.0f} cycles on {cfg.board} (the search's); {args.epochs} "
            f"epochs on {args.train_images} Fashion-MNIST training images, "
            f"{args.test_images} test images. Cycles and energy per image on each board's "
            f"reference accelerator ({refs}), today's cost model"
            + (" (the default network costs " + ", ".join(
                f"{v:,.0f} on {b}" for b, v in today.items() if v) + ")" if today else "")
            + "; 'fits': the network fits that reference; 'own': cycles on the accelerator "
            "the mapper sizes for the network itself ('does not fit': it finds none)."
            + "\n\n| net | how | blocks | one-shot val | float | integer | params | "
            + " | ".join(f"cycles {b} | uJ {b} | fits {b} | own cycles {b}" for b in BOARDS)
            + " |\n|" + "---|" * (7 + 4 * len(BOARDS)) + "\n")
    lines = [f"| {r['net']} | {r['how']} | {' '.join(r['blocks'])} | "
             f"{_pct(r['one_shot_val'])} | {_pct(r['accuracy'])} | "
             f"{_pct(r.get('integer_accuracy'))} | {r['params']:,} | "
             + " | ".join(f"{_fmt(r[f'cycles_{b}'], none='-')} | "
                          f"{_fmt(r[f'energy_uj_{b}'], 1, 1, '-')} | "
                          f"{'yes' if r.get(f'fits_{b}', True) else 'no'} | "
                          f"{_fmt(r[f'own_cycles_{b}'], none='does not fit')}"
                          for b in BOARDS) + " |" for r in rows]
    return head + "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
