"""Size an accelerator for an integer model and a board (``accel.json``).

Today this is the documented default rule (the search-based mapper of issue 5 will
replace :func:`allocate_lanes`):

1. Lanes: a board's lane budget (``BOARD_LANES``, in multiplier-PE units; a shift or
   adder PE costs ``1/1.88`` of one) is split over the chunks in proportion to their
   share of the network's terms (NASA's rule, ``--rule proportional``); by default an
   exact search then picks the lanes that minimise the slowest chunk's busy cycles by the
   cost model (lane counts that fit the channel counts). Every chunk a layer needs gets
   at least ``WORD_BYTES`` lanes, the others 0. The activation word (``word_bytes``, the
   lanes a depthwise layer uses) is the widest power of two every chunk fills, <= 16.
2. Widths: each chunk's accumulator is the widest its layers need (the proven
   ``acc_bits``), the shift chunk's exponent the widest ``exp_bits``, ``rq_width`` the
   widest requantisation intermediate.
3. Memories: the program is compiled once with room to spare, then every memory is cut
   to the next power of two of what the program uses; ``BOARD_SLOTS`` images in flight.

Command line: ``python -m sw.mapper --qmodel Q --board B --out DIR`` writes
``DIR/accel.json`` and prints the allocation.
"""
import argparse
import sys
from dataclasses import replace
from pathlib import Path

from hw.config import CHUNK_OF_OP, AccelConfig, ChunkConfig, ConfigError
from sw.compile import compile_model
from sw.costmodel import layer_cycles
from sw.golden import model as golden
from sw.program import ProgramError

# Total PE lanes a board's logic holds with room for memories and control (calibrated
# from docs/boards.md: ~50-110 LCs per PE on the iCE40UP5K's 5280).
BOARD_LANES = {"icebreaker": 24, "ulx3s-12f": 24, "ulx3s-25f": 40, "ulx3s-45f": 64,
               "ulx3s-85f": 96}
# Images in flight (activation memory slots): the UP5K's SPRAM holds one image's
# activations next to the weights. Each bank is stored twice (two read ports), so four
# 64 KiB slots overflow even the 85F (319 of 208 DP16KD, measured); it takes two.
BOARD_SLOTS = {"icebreaker": 1, "ulx3s-12f": 1, "ulx3s-25f": 1, "ulx3s-45f": 1, "ulx3s-85f": 2}
PE_COST = {"clp": 1.0, "slp": 1 / 1.88, "alp": 1 / 1.88}
WORD_BYTES = 4


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
    work = {"clp": 0, "slp": 0, "alp": 0}
    for L, T in zip(qm.layers, qm.tensors[1:]):
        shape = T["shape"] + [1, 1]
        pixels = shape[1] * shape[2]
        if L["type"] == "gap":
            taps = qm.tensors[L["input"]]["shape"][1] * qm.tensors[L["input"]]["shape"][2]
        else:
            taps = L["in_ch"] // L["groups"] * L["kernel"] ** 2
        work[layer_chunk(qm, L)] += L["out_ch"] * pixels * taps
    return work


def allocate_lanes(work, budget, word_bytes=WORD_BYTES):
    """NASA's proportional rule: lanes per chunk from the work shares and PE costs."""
    used = {c: w for c, w in work.items() if w}
    per = budget / sum(w * PE_COST[c] for c, w in used.items())
    return {c: max(word_bytes, round(per * used[c])) if c in used else 0 for c in work}


def balance_lanes(layers, start, budget, word_bytes):
    """Exact search (HAO-style) for the lanes per chunk that minimise the slowest chunk's
    busy cycles per image (the pipeline's bottleneck, by ``sw.costmodel``) with the PE
    cost within ``budget``. ``layers``: the compiled layers; ``start``: the proportional
    allocation (which chunks exist). Returns lanes per chunk."""
    limit = 2 * max(start.values())
    busy = {}                        # chunk -> [(cycles, lanes)] for every lane count
    for c, n in start.items():
        if n:
            mine = [L.layer for L in layers if L.chunk == c]
            busy[c] = [(sum(layer_cycles(L, lanes, word_bytes) for L in mine), lanes)
                       for lanes in range(word_bytes, limit + 1)]
    best = None
    for target in sorted({cyc for options in busy.values() for cyc, _ in options}):
        pick = {c: min((lanes for cyc, lanes in options if cyc <= target), default=None)
                for c, options in busy.items()}
        if None in pick.values():
            continue
        if sum(PE_COST[c] * n for c, n in pick.items()) <= budget + 1e-9:
            best = pick
            break
    return {c: (best or start).get(c, 0) for c in start}


def default_config(qm, board, slots=None, rule="balanced"):
    """The accelerator the default rule gives ``qm`` on ``board`` (``slots`` images in
    flight: default ``BOARD_SLOTS``; ``rule`` ``proportional`` (NASA) or ``balanced``)."""
    if board not in BOARD_LANES:
        raise ConfigError(f"board: {board!r} is not one of {', '.join(BOARD_LANES)}")
    if rule not in ("proportional", "balanced"):
        raise ConfigError(f"rule: {rule!r} is not one of proportional, balanced")
    lanes = allocate_lanes(chunk_work(qm), BOARD_LANES[board])
    # Depthwise layers use word_bytes lanes: the widest word every chunk can fill.
    word_bytes = min(16, 1 << (min(n for n in lanes.values() if n).bit_length() - 1))
    if rule == "balanced":
        probe = AccelConfig(word_bytes=word_bytes, act_bytes=1 << 18, p_words=1 << 16,
                            prog_words=4096, rq_width=64,
                            **{c: ChunkConfig(n, 5 if c == "slp" else 16, 48, 1 << 16)
                               if n else ChunkConfig(0) for c, n in lanes.items()})
        lanes = balance_lanes(compile_model(qm, probe).layers, lanes, BOARD_LANES[board],
                              word_bytes)
    widths = {"clp": (8, 8), "slp": (1, 8), "alp": (8, 8)}   # (w_width, acc_width) floors
    rq = 8
    for L in qm.layers:
        chunk = layer_chunk(qm, L)
        w, acc = widths[chunk]
        w = max(w, L.get("exp_bits", 1) if chunk == "slp" else L.get("w_bits", 8))
        widths[chunk] = (w, max(acc, L["acc_bits"]))
        rq = max(rq, L.get("rq_bits", 0), L["acc_bits"] + 16)
    chunks = {c: ChunkConfig(lanes[c], *widths[c], 1 << 16) if lanes[c] else ChunkConfig(0)
              for c in lanes}
    roomy = AccelConfig(word_bytes=word_bytes, act_bytes=1 << 18, p_words=1 << 16,
                        prog_words=4096, rq_width=min(64, rq), **chunks)
    prog = compile_model(qm, roomy)
    used_w = {c: 0 for c in chunks}
    for layer in prog.layers:
        cc = roomy.chunk(layer.chunk)
        used_w[layer.chunk] += layer.layer.groups(cc.lanes, word_bytes) * layer.layer.taps()
    return replace(
        roomy,
        slots=slots or BOARD_SLOTS[board],
        act_bytes=_pow2(prog.act_bytes_used, 64),
        p_words=_pow2(sum(len(w) for w in prog.images["param"].values())),
        prog_words=_pow2(len(prog.layers)),
        **{c: replace(chunks[c], w_words=_pow2(used_w[c])) for c in chunks if lanes[c]})


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m sw.mapper", description=__doc__.splitlines()[0])
    ap.add_argument("--qmodel", required=True, help="integer model (qmodel.npz)")
    ap.add_argument("--board", default="icebreaker", help=", ".join(BOARD_LANES))
    ap.add_argument("--out", required=True, help="output directory for accel.json")
    ap.add_argument("--slots", type=int, default=None,
                    help="images in flight (default: per board, see BOARD_SLOTS)")
    ap.add_argument("--rule", default="balanced", choices=("balanced", "proportional"),
                    help="lane allocation: cost-model search (default) or NASA's proportional")
    args = ap.parse_args(argv)
    try:
        qm = golden.load(args.qmodel)
        cfg = default_config(qm, args.board, args.slots, args.rule)
    except (golden.QModelError, ConfigError, ProgramError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    cfg.save(out / "accel.json")
    work = chunk_work(qm)
    print(f"{qm.name} on {args.board}: lane budget {BOARD_LANES[args.board]}")
    for name, kind, c in cfg.chunks:
        print(f"  {name.upper()} ({kind}): {c.lanes} lanes, {work[name]} terms/image, "
              f"acc {c.acc_width} bits, {c.w_words} weight words")
    print(f"  activations {cfg.slots} x {cfg.act_bytes} B, params {cfg.p_words} words, "
          f"program {cfg.prog_words} words -> {out / 'accel.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
