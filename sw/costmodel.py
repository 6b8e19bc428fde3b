"""Cycle model of the accelerator, exact for the v1 layer engine (hw/engine.py).

A layer of ``groups`` lane groups of ``size`` output channels (``lanes`` in broadcast
mode, ``word_bytes`` in lanewise mode; the last group has the ``last`` channels left) and
``P`` outputs (``out_h * out_w`` pixels, or blocks of ``pixels`` of them), ``taps`` beats
per output, on an engine draining ``D``
(``drain``) sums per cycle takes, with ``s = ceil(size / D)`` and ``s' = ceil(last / D)``
drain cycles per output (a block of ``pixels`` outputs walks all ``pixels * word_bytes``
lanes, a row's last block those of its pixels; ``e`` is ``s'`` up to the last valid lane),

    taps + (groups - 1) * P * max(taps, s) + (P - 1) * max(taps, s') + e + L + 4 + R

cycles from start to idle: one tap per cycle, except that an output's last tap issues
only when its sums (``L = LayerEngine.SUMS_LATENCY`` cycles on: address, memory-output,
operand and PE stages) meet the previous output's last drain step; then the last
output's sums drain, pass the memory-output and requantiser-input registers and the
requantisers (``R = Requantizer.LATENCY`` stages) and are written.
Between layers the chunk controllers hand over in a few cycles (``CONTROL`` per layer,
within a cycle or two: the next chunk may already be waiting, or still be walking the
program). With one image slot the image's cycles are the sum; with more, the chunks
overlap images and ``sim/network.py`` measures the throughput.
"""
from dataclasses import replace

from hw.accel import prog_beats
from hw.config import KIND_OF_CHUNK
from hw.engine import LayerEngine
from hw.requant import Requantizer
from sw.compile import Program, param_act_words, spread_candidate

CONTROL = 4


def layer_cycles(layer, lanes, word_bytes, drain=1):
    """Cycles of one ``sw.program.ConvLayer`` on a chunk of ``lanes`` lanes whose engine
    drains ``drain`` sums per cycle."""
    size = layer.group_size(lanes, word_bytes)
    groups = layer.groups(lanes, word_bytes)
    pixels, taps = layer.positions(), layer.taps()
    last = layer.out_c - (groups - 1) * size
    # (count, lanes drained) of the outputs but the last (each holds the next one's last
    # tap for max(taps, its drain steps)), and the lanes up to the last one's last valid
    if layer.pixels > 1:
        # every lane of a block's words is walked: P words, a row's last block fewer; per
        # row and group, blocks - 1 full blocks and a row end
        blocks, rest = layer.row_blocks()
        rows = groups * layer.out_hw[0]
        outputs = [(rows * (blocks - 1), layer.pixels * size), (rows - 1, rest * size)]
        end = (rest - 1) * size + last
    else:
        outputs = [((groups - 1) * pixels, size), (pixels - 1, last)]
        end = last
    return (taps + sum(n * max(taps, -(-walked // drain)) for n, walked in outputs)
            + -(-end // drain) + LayerEngine.SUMS_LATENCY + 4 + Requantizer.LATENCY)


def tiles(layer, kind, lanes, word_bytes, cin_tile, drain=1):
    """The input-channel tiles ``layer`` may run with on a chunk of ``lanes`` lanes of an
    engine with ``cin_tile``: 1, and ``cin_tile`` for a broadcast layer when the lanes hold
    a tile, a lane group's outputs are whole drain steps and (adder layers, where a
    channel past ``cin`` would add ``-|x|``) ``cin`` is a multiple of it."""
    ok = (cin_tile > 1 and layer.mode == "broadcast" and lanes >= cin_tile
          and (kind != "adder" or layer.in_shape[0] % cin_tile == 0)
          and lanes // cin_tile % drain == 0)
    return [1, cin_tile] if ok else [1]


def pixel_blocks(layer, lanes, word_bytes, pixels, residual=False):
    """The output-pixel blocks (``ConvLayer.pixels``) ``layer`` may run with on a chunk of
    ``lanes`` lanes of an engine computing up to ``pixels`` side by side: 1, and for a
    lanewise layer without a residual the blocks up to its output width that fit (a row's
    last block holds the rest of the row)."""
    if pixels < 2 or layer.mode != "lanewise" or residual:
        return [1]
    ok = [1]
    for p in range(2, min(pixels, lanes // word_bytes, layer.out_hw[1]) + 1):
        try:
            replace(layer, pixels=p).check(lanes, word_bytes)
            ok.append(p)
        except ValueError:
            pass
    return ok


def spread_layer(layer, word_bytes):
    """``layer`` run spread (``ConvLayer.spread``: lanewise over copies of its one input
    channel), or None where it cannot be: not a standard convolution of one input channel
    with at most ``word_bytes`` output channels."""
    if (layer.mode != "broadcast" or layer.in_shape[0] != 1 or layer.out_c > word_bytes
            or layer.wide):
        return None
    return replace(layer, mode="lanewise", spread=True, tile=1)


def best_tile(layer, kind, lanes, cfg, residual=False, spread=False):
    """``layer`` with the tile of :func:`tiles` and the pixel block of
    :func:`pixel_blocks` that take the fewest cycles (the mapper's per-layer tiling
    search; ties keep the smaller); with ``spread`` (the layer alone reads the network
    input, which the bridge can spread), also run spread in pixel blocks."""
    V, pixels = cfg.word_bytes, getattr(cfg, "pixels", 1)
    options = [replace(layer, tile=t)
               for t in tiles(layer, kind, lanes, V, cfg.cin_tile, cfg.drain)]
    options += [replace(layer, pixels=p)
                for p in pixel_blocks(layer, lanes, V, pixels, residual)[1:]]
    spread_out = spread_layer(layer, V) if spread and pixels > 1 else None
    if spread_out is not None:
        options += [replace(spread_out, pixels=p)
                    for p in pixel_blocks(spread_out, lanes, V, pixels, residual)[1:]]
    return min(options, key=lambda L: layer_cycles(L, lanes, V, cfg.drain))


def layer_tiler(qm):
    """``tile(i, layer, chunk, lanes, cfg)``: :func:`best_tile` of layer ``i`` of the
    integer model ``qm`` on ``chunk`` with ``lanes`` lanes, as the compiler asks it (a
    layer with a residual takes no pixel block; the one reader of a one-channel input,
    ``sw.compile.spread_candidate``, may run spread)."""
    residual = {i for i, L in enumerate(qm.layers) if L.get("residual") is not None}
    spreader = spread_candidate(qm)

    def tile(i, layer, chunk, lanes, cfg):
        return best_tile(layer, KIND_OF_CHUNK[chunk], lanes, cfg, residual=i in residual,
                         spread=i == spreader)
    return tile


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
