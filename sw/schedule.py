"""Cycle model of a streaming run with several image slots: the chunks' controllers, their
dependencies and the host bridge's refills, replayed event by event (``hw/accel.py``).

Each chunk's controller walks the whole program once per iteration ``k``; entry ``pc``
(on chunk ``c``, image offset ``delta``) is its own when ``c`` runs it, and then runs image
``k - delta`` once that image is in its slot with layer ``pc - 1`` done. A walk step over
another chunk's entry costs ``SKIP`` cycles (fetch, load, decide, next); an own entry
``FETCH`` cycles before it may start, its layer's cycles (``sw.costmodel.layer_cycles``),
then ``AFTER`` cycles until the controller moves on. When image ``i`` is done (and images
before it were served) the host bridge sends ``O`` + its logits, then takes the input of
image ``i + slots`` into the same slot, one byte per cycle each way (the simulation
harness's pace; a UART is slower), inputs compact (``Program.input_k`` bytes per word).

Every dependency points to an earlier ``(k, pc)``, so one pass in that order settles all
times. :func:`run_cycles` gives a run's cycles; :func:`interval` the steady-state cycles
per image, which :func:`lower_bound` (the busiest chunk, or all layers / slots) never
exceeds.
"""
import numpy as np

from hw.accel import prog_beats
from hw.host import HostBridge
from sw.costmodel import compiled_layer_cycles
from sw.program import cpad

SKIP, FETCH, AFTER, HANDOVER = 4, 3, 3, 2


def layer_times(prog, cfg):
    return [compiled_layer_cycles(L, cfg) for L in prog.layers]


def engines(prog, cfg):
    """The controller that runs each layer: its chunk's, or the shared engine's."""
    return ["engine" if cfg.shared_engine else L.chunk for L in prog.layers]


def run_cycles(prog, cfg, images, cycles=None):
    """Cycles of one streaming run of ``images`` images of ``prog`` on ``cfg``
    (``cycles``: per-layer cycles, default the cost model's)."""
    return _run(engines(prog, cfg), prog.deltas,
                cycles or layer_times(prog, cfg), cfg.slots, input_words(prog), prog.input_k,
                prog.output_bytes, images, cfg.word_bytes, prog_beats(cfg))


def interval(prog, cfg, cycles=None):
    """Steady-state cycles per image with ``cfg.slots`` slots."""
    return steady_interval(engines(prog, cfg), prog.deltas,
                           cycles or layer_times(prog, cfg), cfg.slots, input_words(prog),
                           prog.input_k, prog.output_bytes, cfg.word_bytes, prog_beats(cfg))


def steady_interval(chunks, deltas, cycles, slots, in_words, in_k, out_bytes, word_bytes,
                    beats=1):
    """Cycles per image in the steady state: the difference of runs of ``n`` and ``2n``
    images, so the pipeline's fill and drain cancel."""
    args = (chunks, deltas, cycles, slots, in_words, in_k, out_bytes)
    n = 2 * slots + 4
    return (_run(*args, 2 * n, word_bytes, beats) - _run(*args, n, word_bytes, beats)) / n


def _run(chunks, deltas, cycles, S, in_words, in_k, out_bytes, images, word_bytes, beats=1):
    """``beats``: program words per descriptor (each extra one a cycle per walk step)."""
    P = len(chunks)
    skip, fetch = SKIP + beats - 1, FETCH + beats - 1
    # the bridge: 'O', then per logits word a read, the read latency and two cycles per
    # byte sent; per input word one cycle per byte received (in_k of them) and one to store
    out_cycles = 2 + out_bytes // word_bytes * (2 * word_bytes + 2 + HostBridge.READ_LATENCY)
    in_cycles = in_words * (in_k + 1) + 1
    names = sorted(set(chunks))
    owner = [names.index(c) for c in chunks]
    clock = [0] * len(names)                   # per controller: where its walk is
    done = [[0] * P for _ in range(images)]    # [image][layer]: the cycle it is done
    ready = [0] * images                       # image -> cycle it is in its slot
    served = 0                                 # the bridge is free from this cycle on
    for k in range(images + S - 1):
        for pc in range(P):
            img = k - deltas[pc]
            o = owner[pc] if 0 <= img < images else -1
            for c in range(len(clock)):        # the others step over the entry
                if c != o:
                    clock[c] += skip
            if o < 0:
                continue
            dep = ready[img] if pc == 0 else done[img][pc - 1] + HANDOVER
            end = max(clock[o] + fetch, dep) + cycles[pc]
            done[img][pc] = end
            clock[o] = end + AFTER
            if pc == P - 1:                    # the bridge serves images in order
                served = max(served, end + HANDOVER) + out_cycles
                if img + S < images:
                    served += in_cycles
                    ready[img + S] = served
    return served + 5                          # D + cycles


def input_words(prog):
    """Activation words of one input image (what a refill writes)."""
    c, h, w = prog.input_shape
    return h * w * cpad(c, prog.word_bytes) // prog.word_bytes


def lower_bound(busy, slots):
    """Cycles per image no schedule beats: each chunk's work (``busy``: per chunk, with
    hand-overs) and each image's layers in sequence, ``slots`` images at a time."""
    busy = np.asarray(busy, float)
    total = busy.sum(0)
    return total if slots == 1 else np.maximum(busy.max(0), total / slots)
