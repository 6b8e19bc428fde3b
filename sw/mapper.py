"""Size an accelerator for an integer model and a board (``accel.json``) and predict its
cycles, energy and resources.

    python -m sw.mapper --qmodel Q --board B --out DIR [--objective latency|energy|edp]
                        [--rule search|proportional] [--slots N] [--headroom H]
                        [--min-util 0.7] [--no-split] [--unroutable]

Design space: lanes per chunk (CLP multipliers, SLP shifters, ALP adders; a chunk the
network does not use gets 0), the activation word ``word_bytes`` (the lanes a depthwise
layer uses: a power of two <= the smallest chunk, <= 16) and the image slots (images in
flight, 1 .. 8). Every point is costed exactly:

- cycles per layer by ``sw.costmodel`` (equal to the RTL's); cycles per image: the
  steady-state interval of a streaming run, replayed by ``sw.schedule`` (branch and bound
  under its lower bound); latency = cycles / fmax (``sw.resources``);
- energy per image by ``sw.energy`` (45 nm compute + memory traffic);
- logic, FFs, DSPs, block RAM and SPRAM by ``sw.resources``, kept within the board's
  budget (data-sheet totals less ``--headroom`` of logic, FFs and block RAM; by default
  ``sw.resources.HEADROOM``: 5% on the iCE40, 10% on the ECP5), and within what nextpnr
  routes (``sw.resources.ROUTABLE``: on the ECP5 at most 2 slots of dual-read memories and
  40% of the logic, since the engines' crossbar to more slots congests; ``--unroutable``
  lifts it).

Each slot's activations live either in one memory with two read ports (``chunks``: block
RAM keeps it twice) or in two single-port memories and a residual memory (``split``,
:func:`split_config`: one block RAM copy each, so more slots fit); both are searched
(``--no-split``, and by default on the ECP5, where split slots route worse: the first
only).

On parts with SPRAM (the iCE40UP5K) the small organisation (:func:`small_config`: one
shared engine, SPRAM activation memories, parameters in the activation memory) is searched
too, over the lanes per chunk (:func:`small_points`), and the objective chooses between the
organisations; the report names the one chosen.

``--rule search`` (default) takes the point that minimises the objective (``latency``,
``energy`` or ``edp``, ties to less logic) among those whose PEs are busy at least
``--min-util`` of the time (:func:`utilisation`: each chunk's useful terms / (its lanes x
cycles per image), averaged with the chunks' work as weights; default 0.7, 0 turns the
floor off), or among all that fit when none is (the small organisation's rows take turns,
so it stays well below); ``--rule proportional`` is NASA's rule: lanes
in proportion to each chunk's work, scaled up as far as the budget and the objective
want. Widths: each chunk's accumulator is the widest its layers need (the proven
``acc_bits``), the shift chunk's exponent the widest ``exp_bits``, ``rq_width`` the
widest requantisation intermediate; memories are cut to what the program uses (weights,
parameters and program to the next power of two, activation banks to 64 bytes).

Outputs in ``--out``: ``accel.json`` (the single source of truth for the generators),
``program.json`` (the layer descriptors the controller runs, decoded), ``map_report.json``
(per-layer schedule: chunk, tiling, cycles, utilisation, energy; resources vs budget) and
``map.png`` (per-layer cycles by chunk, resources vs budget).
A network that fits nowhere gets one line per resource that falls short and by how much.
"""
import argparse
import itertools
import json
import sys
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from hw.accel import CHUNK_ID
from hw.config import CHUNK_OF_OP, AccelConfig, ChunkConfig, ConfigError
from sw import energy as E
from sw import resources as R
from sw import schedule
from sw.compile import compile_model, pipeline_deltas
from sw.costmodel import (CONTROL, compiled_layer_cycles, control_cycles, layer_cycles,
                          layer_tiler)
from sw.golden import model as golden
from sw.program import ProgramError

OBJECTIVES = ("latency", "energy", "edp")
RULES = ("search", "proportional")
CHUNKS = ("clp", "slp", "alp")
# NASA's area ratio: a shift or adder PE costs 1/1.88 of a multiplier PE
PE_COST = {"clp": 1.0, "slp": 1 / 1.88, "alp": 1 / 1.88}
MAX_LANES = 128
SLOTS = (1, 2, 4, 8)
MAX_EXACT = 4000         # exact pipeline replays per word size and slot count, at most
#: the default floor on :func:`utilisation`: lanes are added for speed only while the PEs
#: stay this busy (a latency objective alone adds lanes as long as any layer gets faster)
MIN_UTIL = 0.7


class MapError(ValueError):
    """The network cannot be mapped onto the board as asked; the message says why."""


def _pow2(n, lo=2):
    return max(lo, 1 << max(0, int(n) - 1).bit_length())


def layer_chunk(qm, L):
    """The chunk a layer runs on (pooling on the multipliers when the net has any)."""
    if L["type"] != "gap":
        return CHUNK_OF_OP[L["op"]]
    has_mul = any(M["type"] != "gap" and M["op"] == "mul" for M in qm.layers)
    return "clp" if has_mul else "slp"


def chunk_work(qm):
    """Terms (MAC-equivalents) per chunk."""
    work = {c: 0 for c in CHUNKS}
    for L, T in zip(qm.layers, qm.tensors[1:]):
        shape = T["shape"] + [1, 1]
        pixels = shape[1] * shape[2]
        if L["type"] == "gap":
            taps = qm.tensors[L["input"]]["shape"][1] * qm.tensors[L["input"]]["shape"][2]
        else:
            taps = L["in_ch"] // L["groups"] * L["kernel"] ** 2
        work[layer_chunk(qm, L)] += L["out_ch"] * pixels * taps
    return work


def utilisation(work, lanes, cycles):
    """PE utilisation weighted by work: each chunk's useful terms (``work``, per chunk) /
    (its ``lanes`` x ``cycles`` per image), averaged with the chunks' work as weights.
    ``lanes`` may hold numpy columns (one candidate per row)."""
    used = [c for c in CHUNKS if work.get(c)]
    total = sum(work[c] for c in used)
    return sum(work[c] * work[c] / lanes[c] for c in used) / total / cycles


def chunk_widths(qm):
    """``({chunk: (w_width, acc_width)}, rq_width)`` the network's layers need."""
    widths = {"clp": (8, 8), "slp": (1, 8), "alp": (8, 8)}
    rq = 8
    for L in qm.layers:
        chunk = layer_chunk(qm, L)
        w, acc = widths[chunk]
        w = max(w, L.get("exp_bits", 1) if chunk == "slp" else L.get("w_bits", 8))
        widths[chunk] = (w, max(acc, L["acc_bits"]))
        rq = max(rq, L.get("rq_bits", 0), L["acc_bits"] + 16)
    return widths, min(64, rq)


def _roomy(qm, lanes, word_bytes):
    """A config with memories large enough for anything (to compile and measure)."""
    widths, rq = chunk_widths(qm)
    return AccelConfig(word_bytes=word_bytes, act_bytes=min(1 << 18, word_bytes << 16),
                       p_words=1 << 16, prog_words=4096, rq_width=rq, slots=1,
                       **{c: ChunkConfig(lanes[c], *widths[c], 1 << 16) if lanes[c]
                          else ChunkConfig(0) for c in CHUNKS})


def size_config(qm, lanes, word_bytes, slots):
    """The accelerator with ``lanes`` per chunk and ``slots`` image slots: widths from the
    network, every memory cut to what the program uses."""
    return _size(qm, lanes, word_bytes, slots)[0]


def _size(qm, lanes, word_bytes, slots):
    """:func:`size_config` and the program compiled on the roomy config (its layers,
    shapes and peak activation use are those of the sized one)."""
    roomy = _roomy(qm, lanes, word_bytes)
    prog = compile_model(qm, roomy)
    used_w = {c: 0 for c in CHUNKS}
    for layer in prog.layers:
        used_w[layer.chunk] += layer.layer.w_words(lanes[layer.chunk], word_bytes)
    return replace(
        roomy,
        slots=slots,
        act_bytes=-(-prog.act_bytes_used // 64) * 64,    # banks need not be powers of two
        p_words=_pow2(sum(len(w) for w in prog.images["param"].values())),
        prog_words=_pow2(len(prog.layers)),
        **{c: replace(roomy.chunk(c), w_words=_pow2(used_w[c])) for c in CHUNKS if lanes[c]}), \
        prog


def split_memories(qm, cfg):
    """``cfg`` with each slot in two single-port activation memories and a residual memory
    (``act_split = 2``): the smallest part (from half the dual bank up) the compiler can
    place the network in, the residual memory cut to its use; ``None`` when none works."""
    whole = cfg.act_bytes
    for eighths in range(4, 9):
        try:    # (a split slot's address space may exceed the host protocol's)
            trial = replace(cfg, act_split=2, act_bytes=-(-whole * eighths // 8 // 64) * 64,
                            res_bytes=-(-whole // 64) * 64)
            prog = compile_model(qm, trial)
        except (ProgramError, ConfigError):
            continue
        return replace(trial, res_bytes=-(-prog.res_bytes_used // 64) * 64)
    return None


def split_config(qm, lanes, word_bytes, slots):
    """:func:`size_config` with split activation memories (:func:`split_memories`): one
    block RAM copy per memory instead of one per read port, so more slots fit."""
    cfg = split_memories(qm, size_config(qm, lanes, word_bytes, slots))
    if cfg is None:
        raise MapError("act_split: the compiler cannot place this network in two "
                       "single-port activation memories")
    return cfg


def split_regions(cfg):
    """A split slot's memories as ``sw.resources.act_usage`` regions: ``(bytes, copies,
    single_port)``."""
    from hw.actmem import regions
    return [(size, 1, ports == "1rw") for _, size, ports in regions(cfg)]


#: pixel blocks the search tries: none, or as many pixels as each chunk's lanes hold
PIXEL_OPTIONS = (1, 16)


def engine_options(word_bytes):
    """``(drain, cin_tile, pixels)`` the search tries with ``word_bytes``-byte words: drain
    widths with ``2 * drain <= word_bytes`` (a wide layer's two-byte outputs of one step
    share a word), input-channel tiles of 1 or 4, and :data:`PIXEL_OPTIONS`."""
    drains = [d for d in (1, 2, 4, 8) if d == 1 or 2 * d <= word_bytes]
    tiles = [1, 4] if word_bytes >= 4 else [1]
    return [(d, t, p) for d in drains for t in tiles for p in PIXEL_OPTIONS]


def with_options(qm, cfg, drain=1, cin_tile=1, pixels=1):
    """``cfg`` draining ``drain`` sums per cycle (its parameter memory holds each layer's
    parameters from a word boundary, words of ``drain`` channels) with input-channel
    tiles of ``cin_tile`` and pixel blocks of up to ``pixels``."""
    used = sum(-(-L["out_ch"] // drain) * drain for L in qm.layers)
    p_words = cfg.p_words if drain == cfg.drain else _pow2(max(used, drain))
    out = replace(cfg, drain=drain, cin_tile=cin_tile, pixels=pixels, p_words=p_words)
    if cin_tile == cfg.cin_tile:
        return out
    # tiled layers pack their weights differently: weight memories cut to the new use
    lanes = {c: cfg.chunk(c).lanes for c in CHUNKS}
    used_w = {c: 0 for c in CHUNKS}
    tile = layer_tiler(qm)
    for i, L in enumerate(compile_model(qm, _roomy(qm, lanes, cfg.word_bytes)).layers):
        tiled = tile(i, L.layer, L.chunk, lanes[L.chunk], out)
        used_w[L.chunk] += tiled.w_words(lanes[L.chunk], cfg.word_bytes)
    return replace(out, **{c: replace(cfg.chunk(c), w_words=_pow2(used_w[c]))
                           for c in CHUNKS if lanes[c]})


SPRAM_BYTES = 32768      # one iCE40 SB_SPRAM256KA: 16K words of 16 bits


def small_config(qm, lanes, word_bytes=2):
    """The small-FPGA organisation (docs/accelerator.md, iCE40UP5K) with ``lanes`` per
    chunk: one shared engine, two single-port activation memories of one SPRAM each plus
    a residual memory cut to its use, 16-bit program words, parameters in the activation
    memory (a parameter memory for the widest layer), weight regions cut to their use.
    :func:`search` considers it on parts with SPRAM (:func:`small_points`)."""
    sized = size_config(qm, lanes, word_bytes, 1)
    cfg = replace(sized, shared_engine=True, act_split=2, act_bytes=SPRAM_BYTES,
                  res_bytes=SPRAM_BYTES // 2, prog_width=16, params_in_act=True,
                  p_words=_pow2(max(L["out_ch"] for L in qm.layers)))
    prog = compile_model(qm, cfg)
    used = {c: len(words) for c, blocks in prog.images.items() if c in CHUNKS
            for words in blocks.values()}
    return replace(cfg, res_bytes=-(-prog.res_bytes_used // 64) * 64,
                   **{c: replace(cfg.chunk(c), w_words=n) for c, n in used.items()})


def residual_layers(qm):
    return {i for i, L in enumerate(qm.layers) if L.get("residual") is not None}


@dataclass
class Point:
    """One candidate accelerator and its predicted costs per image."""
    lanes: dict
    word_bytes: int
    slots: int
    cycles: int              # cycles per image (the pipeline interval with several slots)
    latency_s: float
    energy_pj: float
    usage: dict
    organisation: str = "chunks"     # a key of ORGANISATIONS
    drain: int = 1                   # sums each engine writes per cycle
    cin_tile: int = 1                # input channels a tiled layer takes per beat
    pixels: int = 1                  # output pixels a lanewise layer takes side by side
    utilisation: float = 0.0         # :func:`utilisation` at ``cycles``

    def score(self, objective):
        return {"latency": self.latency_s, "energy": self.energy_pj,
                "edp": self.latency_s * self.energy_pj}[objective]


# columns of a chunk table
LANES, CYCLES, PJ = 0, 1, 2
USE = {r: 3 + i for i, r in enumerate(R.RESOURCES)}


def chunk_table(qm, layers, chunk, sized, fam, lane_counts):
    """One row per lane count of ``chunk``: lanes, busy cycles per image (with the
    controller's hand-over), energy per image (pJ) and the chunk's own resources (PEs,
    layer engine with ``sized.drain`` requantisers, weight memory). ``sized``: a config
    with the shared memories' sizes and the drain width."""
    word_bytes, drain = sized.word_bytes, sized.drain
    widths, _ = chunk_widths(qm)
    w_width, acc = widths[chunk]
    w_bits = E.stored_w_bits(chunk, w_width)
    res, tile = residual_layers(qm), layer_tiler(qm)
    untiled = [(i, L.layer) for i, L in enumerate(layers) if L.chunk == chunk]
    rows = []
    for n in lane_counts:
        mine = [(i, tile(i, L, chunk, n, sized)) for i, L in untiled]
        depth = _pow2(sum(L.w_words(n, word_bytes) for _, L in mine))
        mem = E.Memories(act_bytes=sized.act_bytes, weight_bytes=depth * n * w_bits // 8,
                         param_bytes=sized.p_words * (sized.m_width + sized.rq_width) // 8,
                         m_width=sized.m_width, rq_width=sized.rq_width)
        cycles = sum(layer_cycles(L, n, word_bytes, drain) + CONTROL for _, L in mine)
        pj = sum(E.layer_energy_pj(L, chunk, lanes=n, word_bytes=word_bytes, w_bits=w_bits,
                                   acc_bits=acc, residual=i in res, mem=mem) for i, L in mine)
        use = R.chunk_usage(fam, chunk, n, w_width, depth, word_bytes, drain, sized.cin_tile,
                            sized.pixels)
        rows.append([n, cycles, pj] + [use[r] for r in R.RESOURCES])
    return np.array(rows, dtype=float)


def pareto_rows(table):
    """Rows (lane counts ascending) faster or more frugal than every smaller lane count:
    the others cost resources for nothing."""
    keep, best_c, best_e = [], np.inf, np.inf
    for row in table:
        if row[CYCLES] < best_c or row[PJ] < best_e * (1 - 1e-9):
            keep.append(row)
            best_c, best_e = min(best_c, row[CYCLES]), min(best_e, row[PJ])
    return np.array(keep)


def proportional_lanes(work, word_bytes, scale):
    """NASA's rule: lanes ``max(word_bytes, round(scale * share / PE_COST))`` per chunk,
    in multiplier-PE units (``scale`` = total PE budget)."""
    present = [c for c in CHUNKS if work[c]]
    per = scale / sum(work[c] * PE_COST[c] for c in present)
    return {c: max(word_bytes, round(per * work[c])) if c in present else 0 for c in CHUNKS}


#: the small organisation's activation word (its SPRAMs are 16 bits wide) and the most
#: lanes per chunk it is searched over
SMALL_WORD = 2
SMALL_MAX_LANES = 32
ORGANISATIONS = {"chunks": "an engine per chunk (pipelined chunks, dual-read banks)",
                 "split": "an engine per chunk (pipelined chunks), each slot in 2 single-port "
                          "activation memories + a residual memory",
                 "small": "small: one shared engine, 2 single-port SPRAM activation memories "
                          "+ a residual memory, parameters in the activation memory, "
                          "16-bit program words"}


def small_points(qm, board, headroom=None, rule="search", routable=True):
    """``(points that fit, the candidate of least logic)`` of the small organisation
    (:func:`small_config`) on ``board``: every lane count per chunk from ``SMALL_WORD`` to
    ``SMALL_MAX_LANES`` (``rule="proportional"``: NASA's ray only), costed exactly as
    :func:`small_config` sizes it (cycles by ``sw.schedule`` on the compiled program,
    energy by ``sw.energy``, resources by ``sw.resources.estimate``). The layers do not
    depend on the lanes, so the program is compiled once; per lane count only the weight
    regions change (``w_words``, packed as the compiler packs them)."""
    V = SMALL_WORD
    work = chunk_work(qm)
    present = [c for c in CHUNKS if work[c]]
    try:
        base = small_config(qm, {c: V if c in present else 0 for c in CHUNKS})
    except (ProgramError, ConfigError):
        return [], None
    prog = compile_model(qm, base)
    res = residual_layers(qm)
    have = R.budget(board, headroom, routable)
    fmax = R.fmax_mhz(board) * 1e6
    mine = {c: [L.layer for L in prog.layers if L.chunk == c] for c in present}

    def config(lanes):
        return replace(base, **{c: replace(base.chunk(c), lanes=lanes[c], w_words=max(1, sum(
            L.w_words(lanes[c], V) for L in mine[c]))) for c in present})

    if rule == "proportional":
        combos = []
        for scale in range(V, 4 * SMALL_MAX_LANES):
            lanes = proportional_lanes(work, V, scale)
            if max(lanes.values()) > SMALL_MAX_LANES:
                break
            if lanes not in combos:
                combos.append(lanes)
    else:
        combos = None
    points, smallest = [], None

    def visit(lanes):
        """Cost one candidate; False when it is over the logic budget (more lanes of the
        last chunk only add logic)."""
        nonlocal smallest
        cfg = config(lanes)
        use = R.estimate(cfg, board)
        if smallest is None or use["logic"] < smallest["logic"]:
            smallest = use
        if use["logic"] > have["logic"]:
            return False
        if all(use[r] <= have[r] for r in R.RESOURCES):
            cycles = schedule.interval(prog, cfg)
            pj = E.program_energy(prog, cfg, res)[1].total
            points.append(Point(dict(lanes), V, 1, round(cycles), cycles / fmax, pj, use,
                                "small", utilisation=utilisation(work, lanes, cycles)))
        return True

    if combos is not None:
        for lanes in combos:
            visit({c: lanes.get(c, 0) for c in CHUNKS})
        return points, smallest

    def walk(i, lanes):
        """Whether some candidate with ``lanes`` so far is within the logic budget; logic
        only grows with lanes, so a chunk's lane counts stop at the first over it."""
        if i == len(present):
            return visit(lanes)
        first = True
        for n in range(V, SMALL_MAX_LANES + 1):
            if not walk(i + 1, {**lanes, present[i]: n}):
                return not first
            first = False
        return True

    walk(0, {c: 0 for c in CHUNKS})
    return points, smallest


def _search_word(qm, fam, objective, have, fmax, work, present, sized, prog, slots, rule,
                 split, min_util):
    """:func:`search` for one word size and drain width (``sized``): per organisation and
    slot count of ``slots``, ``(best point or None, the candidate of least logic's
    resources)``; the best among the points of :func:`utilisation` >= ``min_util``."""
    V = sized.word_bytes
    shared = R.shared_usage(sized, fam)
    tables = {c: chunk_table(qm, prog.layers, c, sized, fam,
                              range(V, MAX_LANES + 1, sized.drain)) for c in present}
    if rule == "proportional":
        # one point per scale: every chunk's row at its proportional lane count
        rows = []
        for scale in range(V, 4 * MAX_LANES):
            lanes = proportional_lanes(work, V, scale)
            if max(lanes.values()) > MAX_LANES:
                break
            rows.append([tables[c][lanes[c] - V] for c in present])
        cols = {c: np.array([r[j] for r in rows]) for j, c in enumerate(present)}
    else:
        tables = {c: pareto_rows(t) for c, t in tables.items()}
        grid = np.meshgrid(*[np.arange(len(tables[c])) for c in present], indexing="ij")
        cols = {c: tables[c][g.ravel()] for c, g in zip(present, grid)}
    busy = np.stack([cols[c][:, CYCLES] for c in present])
    # utilisation x cycles: the utilisation at a bound on the cycles bounds it from above
    util_cycles = utilisation(work, {c: cols[c][:, LANES] for c in present}, 1)
    pj = sum(cols[c][:, PJ] for c in present) + E.offchip_pj(prog)
    chunks = [L.chunk for L in prog.layers]
    in_words = schedule.input_words(prog)
    exact_cache, layer_cache = {}, {}
    tile = layer_tiler(qm)

    def cycles_on(i, n):
        """Cycles of layer ``i`` on its chunk with ``n`` lanes."""
        if (i, n) not in layer_cache:
            L = prog.layers[i]
            layer_cache[i, n] = layer_cycles(tile(i, L.layer, L.chunk, n, sized), n, V,
                                             sized.drain)
        return layer_cache[i, n]

    def exact(k, s):
        """Steady-state cycles per image of candidate ``k`` with ``s`` slots."""
        lanes = {c: int(cols[c][k, LANES]) for c in present}
        key = (tuple(lanes.values()), s)
        if key not in exact_cache:
            cyc = [cycles_on(i, lanes[L.chunk]) for i, L in enumerate(prog.layers)]
            exact_cache[key] = schedule.steady_interval(
                chunks, pipeline_deltas(chunks, s), cyc, s, in_words, prog.input_k,
                prog.output_bytes, V)
        return exact_cache[key]

    orgs = [("chunks", sized, None)]
    halves = split_memories(qm, sized) if split else None
    if halves is not None:
        orgs.append(("split", halves, split_regions(halves)))
    for (org, mem, regions), s in itertools.product(orgs, slots):
        if s * mem.slot_words > 1 << 16:           # the host protocol's address space
            continue
        act = R.act_usage(fam, V, mem.act_bytes, s, len(present), regions)
        use = {r: np.round(sum(cols[c][:, USE[r]] for c in present) + shared[r] + act[r])
               for r in R.RESOURCES}
        bound = schedule.lower_bound(busy, s)
        ok = np.all([use[r] <= have[r] for r in R.RESOURCES], 0)
        k_small = int(np.argmin(use["logic"]))
        least = {r: round(v[k_small]) for r, v in use.items()}
        ok &= util_cycles >= min_util * bound
        if not ok.any():
            yield None, least
            continue
        weight = pj if objective == "edp" else 1.0
        first = pj if objective == "energy" else bound * weight
        order = np.lexsort((use["logic"], first))
        order = order[ok[order]]
        # branch and bound: the bound never exceeds the exact interval (energy is exact)
        found, k = (np.inf, None), None
        for j in order[:MAX_EXACT]:
            if first[j] >= found[0]:
                break
            cyc = exact(j, s)
            if util_cycles[j] < min_util * cyc:
                continue
            score = pj[j] if objective == "energy" else cyc * (
                weight[j] if objective == "edp" else 1)
            if score < found[0]:
                found, k = (score, cyc), int(j)
        if k is None:
            yield None, least
            continue
        cycles = found[1]
        point = Point({c: int(cols[c][k, LANES]) if c in present else 0 for c in CHUNKS},
                      V, s, round(cycles), cycles / fmax, float(pj[k]),
                      {r: round(v[k]) for r, v in use.items()}, org, sized.drain,
                      sized.cin_tile, sized.pixels, float(util_cycles[k] / cycles))
        yield point, least


def search(qm, board, objective="latency", headroom=None, slots=None, rule="search",
           split=True, min_util=MIN_UTIL, routable=True):
    """The best :class:`Point` for ``qm`` on ``board`` under its budget, among those of
    :func:`utilisation` >= ``min_util`` when there are any (else among all). ``split``:
    also the split activation memories (:func:`split_config`); ``routable``: within the
    slots, logic and memories nextpnr routes on the board (``sw.resources.ROUTABLE``). Raises
    :class:`MapError` naming what falls short when nothing fits."""
    if not 0 <= min_util < 1:
        raise MapError(f"min_util: {min_util!r} is not a share in [0, 1)")
    if objective not in OBJECTIVES:
        raise MapError(f"objective: {objective!r} is not one of {', '.join(OBJECTIVES)}")
    if rule not in RULES:
        raise MapError(f"rule: {rule!r} is not one of {', '.join(RULES)}")
    if slots is not None and slots not in SLOTS:
        raise MapError(f"slots: {slots!r} is not one of {', '.join(map(str, SLOTS))}")
    lim = R.routable_limits(board) if routable else {"slots": max(SLOTS), "split": True}
    most = lim["slots"]
    if slots is not None and slots > most:
        raise MapError(f"slots: {slots} is more than nextpnr routes on {board} ({most}, "
                       "sw.resources.ROUTABLE); --unroutable maps it anyway")
    slots = (slots,) if slots is not None else tuple(s for s in SLOTS if s <= most)
    split = split and lim["split"]
    best, smallest = _search(qm, board, objective, headroom, slots, rule, split, min_util,
                             routable)
    if best is None and min_util:
        best, smallest = _search(qm, board, objective, headroom, slots, rule, split, 0,
                                 routable)
    if best is None:
        short = R.shortfalls(smallest, board, headroom, routable) if smallest else \
            ["no activation word size can run its layers"]
        raise MapError(f"{qm.name} does not fit {board} even with the fewest lanes: "
                       + "; ".join(short))
    return best


def _search(qm, board, objective, headroom, slots, rule, split, min_util, routable):
    """:func:`search` at one floor, over the slot counts ``slots``: ``(best point or None,
    the candidate of least logic's resources or None)``."""
    fam = R.family(board)
    have = R.budget(board, headroom, routable)
    fmax = R.fmax_mhz(board) * 1e6
    work = chunk_work(qm)
    present = [c for c in CHUNKS if work[c]]
    best, smallest = None, None
    for V in (1, 2, 4, 8, 16):
        probe = {c: max(V, 16) if c in present else 0 for c in CHUNKS}
        try:
            sized, prog = _size(qm, probe, V, 1)
        except (ProgramError, ConfigError):
            continue
        for D, T, P in engine_options(V) if rule == "search" else [(1, 1, 1)]:
            for point, least in _search_word(qm, fam, objective, have, fmax, work, present,
                                             with_options(qm, sized, D, T, P), prog, slots,
                                             rule, split, min_util):
                if smallest is None or least["logic"] < smallest["logic"]:
                    smallest = least
                if point is not None and (best is None or (
                        point.score(objective), point.usage["logic"]) <
                        (best.score(objective), best.usage["logic"])):
                    best = point
    if R.PARTS[R.part_of(board)]["spram"] and 1 in slots:
        # parts with SPRAM (the iCE40UP5K): the small organisation too
        points, least = small_points(qm, board, headroom, rule, routable)
        for point in points:
            if point.utilisation < min_util:
                continue
            if best is None or (point.score(objective), point.usage["logic"]) < \
                    (best.score(objective), best.usage["logic"]):
                best = point
        if least is not None and (smallest is None or least["logic"] < smallest["logic"]):
            smallest = least
    return best, smallest


def point_config(qm, p):
    """The accelerator of a :class:`Point`, sized for ``qm`` in its organisation."""
    if p.organisation == "small":
        return small_config(qm, p.lanes, p.word_bytes)
    if p.organisation == "split":
        return with_options(qm, split_config(qm, p.lanes, p.word_bytes, p.slots), p.drain,
                            p.cin_tile, p.pixels)
    return with_options(qm, size_config(qm, p.lanes, p.word_bytes, p.slots), p.drain,
                        p.cin_tile, p.pixels)


def organisation(cfg):
    """The key of :data:`ORGANISATIONS` that ``cfg`` is: ``"small"`` (a shared engine over
    split activation memories), ``"split"`` (engines per chunk over split memories) or
    ``"chunks"``."""
    if cfg.act_split:
        return "small" if cfg.shared_engine else "split"
    return "chunks"


def default_config(qm, board, slots=None, rule="search", objective="latency",
                   headroom=None, split=True, min_util=MIN_UTIL, routable=True):
    """The accelerator :func:`search` picks for ``qm`` on ``board``."""
    return point_config(qm, search(qm, board, objective, headroom, slots, rule, split,
                                   min_util, routable))


def program_listing(prog, cfg):
    """The program the controller runs, decoded from its memory image: per entry the
    chunk, the image offset ``delta`` and the layer descriptor's fields."""
    from hw.accel import prog_beats, program_layout
    from hw.payload import unpack
    chunk_of = {v: k for k, v in CHUNK_ID.items()}
    words, beats = prog.images["prog"][0], prog_beats(cfg)
    if cfg.prog_width:       # a descriptor over ``beats`` words, the first at the bottom
        words = [sum(int(w) << (cfg.prog_width * b)
                     for b, w in enumerate(words[i * beats:(i + 1) * beats]))
                 for i in range(len(words) // beats)]
    entries = []
    for L, word in zip(prog.layers, words):
        entry = unpack(program_layout(cfg), word)
        entries.append({"layer": L.name, "chunk": chunk_of[entry.pop("chunk")], **entry})
    return entries


def layer_report(qm, cfg):
    """Per-layer rows of the schedule ``cfg`` runs ``qm`` with: chunk, mode, tiling, cycles,
    PE utilisation and energy."""
    prog = compile_model(qm, cfg)
    per_layer, total = E.program_energy(prog, cfg, residual_layers(qm))
    rows = []
    for L, e, delta in zip(prog.layers, per_layer, prog.deltas):
        lanes = cfg.chunk(L.chunk).lanes
        size = L.layer.group_size(lanes, cfg.word_bytes)
        oh, ow = L.layer.out_hw
        cycles = compiled_layer_cycles(L, cfg)      # with a parameter copy (params_in_act)
        rows.append({
            "layer": L.name, "chunk": L.chunk,
            "mode": "spread" if L.layer.spread else L.layer.mode,
            "tiling": f"{L.layer.groups(lanes, cfg.word_bytes)}x{size} ch"
                      + (f" x{L.layer.tile} cin" if L.layer.tile > 1 else "")
                      + f", {oh}x{ow} px"
                      + (f" by {L.layer.pixels}" if L.layer.pixels > 1 else "")
                      + (" spread" if L.layer.spread else "")
                      + f", {L.layer.taps()} taps",
            "delta": delta, "cycles": cycles, "macs": L.macs,
            "utilisation": L.macs / (lanes * cycles), "energy_nj": e.total / 1e3,
            "energy_split_nj": {k: v / 1e3 for k, v in vars(e).items()}})
    return rows, total


def report(qm, cfg, board, objective, headroom=None, min_util=MIN_UTIL, routable=True):
    """Everything ``map_report.json`` holds (the table the CLI prints, in data)."""
    rows, total = layer_report(qm, cfg)
    busy = {c: sum(r["cycles"] + control_cycles(cfg) for r in rows if r["chunk"] == c)
            for c in CHUNKS if cfg.chunk(c).lanes}
    image = sum(busy.values())
    interval = round(schedule.interval(compile_model(qm, cfg), cfg))
    usage = R.estimate(cfg, board)
    fmax = R.fmax_mhz(board)
    macs = sum(r["macs"] for r in rows)
    return {
        "network": qm.name, "board": board, "part": R.part_of(board), "objective": objective,
        "organisation": organisation(cfg), "accel": cfg.to_dict(), "layers": rows,
        "chunks": {c: {"lanes": cfg.chunk(c).lanes, "busy_cycles": busy[c],
                       "utilisation": sum(r["macs"] for r in rows if r["chunk"] == c)
                       / (cfg.chunk(c).lanes * interval)} for c in busy},
        "cycles_per_image": image, "interval_cycles": interval,
        "utilisation": macs / (sum(cfg.chunk(c).lanes for c in busy) * interval),
        "utilisation_by_work": utilisation(chunk_work(qm), {c: cfg.chunk(c).lanes
                                                           for c in CHUNKS}, interval),
        "min_util": min_util,
        "fmax_mhz": fmax, "latency_ms": image / fmax / 1e3,
        "images_per_s": fmax * 1e6 / interval,
        "energy_uj": total.total / 1e6,
        "energy_split_uj": {k: v / 1e6 for k, v in vars(total).items()},
        "resources": usage, "budget": R.budget(board, headroom, routable),
        "part_totals": R.PARTS[R.part_of(board)], "headroom": R.headroom_of(board, headroom),
        "routable": R.routable_limits(board) if routable else None,
    }


def print_report(rep, out=None):
    p = lambda *a: print(*a, file=out or sys.stdout)     # noqa: E731
    acc = rep["accel"]
    p(f"{rep['network']} on {rep['board']} ({rep['part']}), objective {rep['objective']}: "
      + ", ".join(f"{c.upper()} {acc[c]['lanes']} lanes" for c in CHUNKS)
      + f", word {acc['word_bytes']} B, {acc['slots']} image slot(s), "
        f"drain {acc['drain']} sums/cycle, input-channel tile {acc['cin_tile']}, "
        f"pixel blocks up to {acc['pixels']}")
    p(f"organisation: {ORGANISATIONS[rep['organisation']]}")
    p(f"{'layer':<24}{'chunk':<6}{'tiling':<32}{'cycles':>9}{'util':>7}{'energy nJ':>11}")
    for r in rep["layers"]:
        p(f"{r['layer']:<24}{r['chunk']:<6}{r['tiling']:<32}{r['cycles']:>9}"
          f"{r['utilisation']:>7.1%}{r['energy_nj']:>11.1f}")
    for c, v in rep["chunks"].items():
        p(f"  {c.upper()}: {v['lanes']} lanes, busy {v['busy_cycles']} cycles per image, "
          f"utilisation {v['utilisation']:.1%} of the pipeline interval")
    split = ", ".join(f"{k} {v:.2f}" for k, v in rep["energy_split_uj"].items())
    p(f"per image: {rep['cycles_per_image']} cycles, interval {rep['interval_cycles']} cycles "
      f"({rep['images_per_s']:.1f} images/s at {rep['fmax_mhz']:g} MHz, latency "
      f"{rep['latency_ms']:.2f} ms), PE utilisation {rep['utilisation']:.1%}; energy "
      f"{rep['energy_uj']:.2f} uJ ({split})")
    floor = rep["min_util"]
    p(f"PE utilisation by work (chunks weighted by their work): "
      f"{rep['utilisation_by_work']:.1%}" + (
          "" if not floor else f", floor {floor:.0%}" if rep["utilisation_by_work"] >= floor
          else f", under the {floor:.0%} floor: no design that fits reaches it, so the "
               f"objective chose among all"))
    p("resources (predicted)  " + "  ".join(
        f"{r} {rep['resources'][r]}/{rep['budget'][r]}" for r in R.RESOURCES
        if rep["part_totals"][r]))
    lim = rep.get("routable")
    if lim and (lim["slots"] < max(SLOTS) or lim["logic"] < rep["part_totals"]["logic"]):
        p(f"kept to what nextpnr routes on {rep['board']}: at most {lim['slots']} slots and "
          f"{lim['logic']} logic" + ("" if lim["split"] else ", dual-read memories")
          + " (sw.resources.ROUTABLE; --unroutable lifts it)")


def plot(rep, path):
    """Per-layer cycles by chunk and resources against the budget, as a PNG."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    colours = {"clp": "tab:red", "slp": "tab:blue", "alp": "tab:green"}
    fig, (a, b) = plt.subplots(1, 2, figsize=(13, 4.5), gridspec_kw={"width_ratios": [3, 1]})
    rows = rep["layers"]
    a.bar(range(len(rows)), [r["cycles"] for r in rows],
          color=[colours[r["chunk"]] for r in rows])
    a.set_xticks(range(len(rows)), [r["layer"].replace(".op", "") for r in rows],
                 rotation=75, fontsize=7)
    a.set_ylabel("cycles per image")
    a.set_title(f"{rep['network']} on {rep['board']} ({rep['organisation']} organisation): "
                f"cycles per layer "
                f"({', '.join(f'{c.upper()} {colours[c][4:]}' for c in rep['chunks'])})")
    res = [r for r in R.RESOURCES if rep["part_totals"][r]]
    shares = [rep["resources"][r] / rep["part_totals"][r] for r in res]
    b.bar(res, shares, color=["tab:orange" if rep["resources"][r] > rep["budget"][r]
                               else "tab:gray" for r in res])
    b.hlines([rep["budget"][r] / rep["part_totals"][r] for r in res],
             [i - 0.4 for i in range(len(res))], [i + 0.4 for i in range(len(res))],
             ls="--", color="k", lw=0.8, label="budget")
    b.set_ylabel("share of the part")
    b.set_title(f"resources on {rep['part']}")
    b.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m sw.mapper", description=__doc__.splitlines()[0])
    ap.add_argument("--qmodel", required=True, help="integer model (qmodel.npz)")
    ap.add_argument("--board", default="icebreaker", help=", ".join(R.BOARD_PART))
    ap.add_argument("--out", required=True, help="output directory")
    ap.add_argument("--objective", default="latency", choices=OBJECTIVES)
    ap.add_argument("--rule", default="search", choices=RULES,
                    help="search the design space (default) or NASA's proportional rule")
    ap.add_argument("--slots", type=int, default=None,
                    help="images in flight (default: searched, 1/2/4/8)")
    ap.add_argument("--headroom", type=float, default=None,
                    help="share of logic, FFs and block RAM kept free (default: 0.05 on "
                         "the iCE40, 0.1 on the ECP5)")
    ap.add_argument("--min-util", type=float, default=MIN_UTIL,
                    help="least PE utilisation by work a design may have, when some design "
                         "that fits reaches it (default 0.7; 0: no floor)")
    ap.add_argument("--no-split", dest="split", action="store_false",
                    help="only dual-read activation memories (by default split ones, a "
                         "block RAM copy per memory and so more slots, are searched too)")
    ap.add_argument("--unroutable", dest="routable", action="store_false",
                    help="lift the limits of what nextpnr routes on the board (sw.resources."
                         "ROUTABLE: on the ECP5 2 slots of dual-read memories, 40%% of the "
                         "logic): faster designs that may not route")
    ap.add_argument("--no-plot", action="store_true", help="skip map.png")
    args = ap.parse_args(argv)
    try:
        qm = golden.load(args.qmodel)
        cfg = default_config(qm, args.board, args.slots, args.rule, args.objective,
                             args.headroom, args.split, args.min_util, args.routable)
        rep = report(qm, cfg, args.board, args.objective, args.headroom, args.min_util,
                     args.routable)
    except (golden.QModelError, ConfigError, ProgramError, MapError, R.ResourceError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    cfg.save(out / "accel.json")
    (out / "map_report.json").write_text(json.dumps(rep, indent=1) + "\n")
    (out / "program.json").write_text(json.dumps(
        program_listing(compile_model(qm, cfg), cfg), indent=1) + "\n")
    print_report(rep)
    if not args.no_plot:
        plot(rep, out / "map.png")
    print(f"wrote {out / 'accel.json'}, {out / 'map_report.json'}, {out / 'program.json'}"
          + ("" if args.no_plot else f", {out / 'map.png'}"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
