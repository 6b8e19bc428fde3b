"""Cycle model of the accelerator, exact for the v1 layer engine (hw/engine.py).

A layer of ``groups`` lane groups of ``size`` output channels (``lanes`` in broadcast
mode, ``word_bytes`` in lanewise mode; the last group has the ``last`` channels left) and
``P = out_h * out_w`` pixels, ``taps`` beats per output, on an engine draining ``D``
(``drain``) sums per cycle takes, with ``s = ceil(size / D)`` and ``s' = ceil(last / D)``
drain cycles per output,

    taps + (groups - 1) * P * max(taps, s, 5) + (P - 1) * max(taps, s', 5) + s' + 8 + R

cycles from start to idle: one tap per cycle, except that an output's last tap issues
only when its sums (4 cycles on: memory-output, operand and PE stages) meet the previous
output's last drain step, and after those sums are out (so at least 5 cycles apart);
then the last output's sums drain, pass the memory-output and requantiser-input
registers and the requantisers (``R = Requantizer.LATENCY`` stages) and are written.
Between layers the chunk controllers hand over in a few cycles (``CONTROL`` per layer,
within a cycle or two: the next chunk may already be waiting, or still be walking the
program). With one image slot the image's cycles are the sum; with more, the chunks
overlap images and ``sim/network.py`` measures the throughput.
"""
from dataclasses import replace

from hw.accel import prog_beats
from hw.engine import LayerEngine
from hw.requant import Requantizer
from sw.compile import Program, param_act_words

CONTROL = 4


def layer_cycles(layer, lanes, word_bytes, drain=1):
    """Cycles of one ``sw.program.ConvLayer`` on a chunk of ``lanes`` lanes whose engine
    drains ``drain`` sums per cycle."""
    size = layer.group_size(lanes, word_bytes)
    groups = layer.groups(lanes, word_bytes)
    oh, ow = layer.out_hw
    pixels, taps, gap = oh * ow, layer.taps(), LayerEngine.SUMS_LATENCY + 1
    last = layer.out_c - (groups - 1) * size
    s, s_last = -(-size // drain), -(-last // drain)
    return (taps + (groups - 1) * pixels * max(taps, s, gap)
            + (pixels - 1) * max(taps, s_last, gap) + s_last + 8 + Requantizer.LATENCY)


def tiles(layer, kind, lanes, word_bytes, cin_tile, drain=1):
    """The input-channel tiles ``layer`` may run with on a chunk of ``lanes`` lanes of an
    engine with ``cin_tile``: 1, and ``cin_tile`` for a broadcast layer when the lanes hold
    a tile, a lane group's outputs are whole drain steps and (adder layers, where a
    channel past ``cin`` would add ``-|x|``) ``cin`` is a multiple of it."""
    ok = (cin_tile > 1 and layer.mode == "broadcast" and lanes >= cin_tile
          and (kind != "adder" or layer.in_shape[0] % cin_tile == 0)
          and lanes // cin_tile % drain == 0)
    return [1, cin_tile] if ok else [1]


def best_tile(layer, kind, lanes, cfg):
    """``layer`` with the tile of :func:`tiles` that takes the fewest cycles (the mapper's
    per-layer tiling search; ties keep 1)."""
    options = [replace(layer, tile=t)
               for t in tiles(layer, kind, lanes, cfg.word_bytes, cfg.cin_tile, cfg.drain)]
    return min(options, key=lambda L: layer_cycles(L, lanes, cfg.word_bytes, cfg.drain))


def control_cycles(cfg):
    """Hand-over cycles per layer: ``CONTROL``, plus a cycle per extra program word of a
    descriptor (``prog_width``)."""
    return CONTROL + prog_beats(cfg) - 1


def compiled_layer_cycles(L, cfg):
    """Cycles of a compiled layer on ``cfg``: :func:`layer_cycles`, after copying its
    parameters in (``params_in_act``: ``out_c`` parameters of a few activation words, one
    word per cycle, plus 2 cycles of read latency)."""
    cycles = layer_cycles(L.layer, cfg.chunk(L.chunk).lanes, cfg.word_bytes, cfg.drain)
    if cfg.params_in_act:
        cycles += L.layer.out_c * param_act_words(cfg) + 2
    return cycles


def program_cycles(prog: Program, cfg):
    """Per-layer cycles and the total for one image (layers run one after another)."""
    per_layer = [compiled_layer_cycles(L, cfg) for L in prog.layers]
    return per_layer, sum(per_layer) + control_cycles(cfg) * len(per_layer)
