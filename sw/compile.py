"""Compile an integer model (``sw.golden.model``) into a program for the accelerator.

Every layer goes to the chunk of its operator (mul -> CLP, shift -> SLP, adder -> ALP;
global average pooling -> CLP, else SLP) in the mode of its shape (``sw.program``).
Tensors are placed in the activation memory by liveness (first fit, word aligned), weights
and requantisation parameters one layer after the other. The result holds every memory
image as packed words, ready for the host protocol or a testbench, plus the predicted
beats (PE cycles) of each layer.
"""
from dataclasses import dataclass, field

import numpy as np
from amaranth.lib import data

from hw import protocol
from hw.accel import CHUNK_ID, prog_beats, program_layout
from hw.actmem import PORTS, regions
from hw.config import CHUNK_OF_OP, KIND_OF_CHUNK
from hw.engine import param_layout
from hw.payload import pack
from hw.pe import weight_layout
from sw.program import (ConvLayer, ProgramError, cpad, descriptor, pack_activation,
                        param_words, unpack_activation, weight_words)


@dataclass
class CompiledLayer:
    name: str
    chunk: str
    layer: ConvLayer
    beats: int               # PE cycles without stalls: groups * out pixels * taps
    macs: int                # useful terms (for utilisation)


@dataclass
class Program:
    """Memory images (``mem -> {base: [words]}``) and where the input and output live."""
    images: dict = field(default_factory=dict)
    layers: list = field(default_factory=list)
    input_base: int = 0
    input_shape: tuple = ()
    output_base: int = 0
    output_shape: tuple = ()
    output_wide: bool = False
    act_bytes_used: int = 0      # the highest end in an act_bytes memory
    res_bytes_used: int = 0      # ... in the residual memory (act_split)
    word_bytes: int = 4
    pixel_shift: int = 1
    input_spread: bool = False   # the bridge spreads each input byte over its word
    deltas: list = field(default_factory=list)

    @property
    def input_k(self):
        """Bytes of each input activation word on the host link: the input's channels, at
        most a word (1 for a grey image: a byte per pixel)."""
        return min(self.input_shape[0], self.word_bytes)

    @property
    def wire_k(self):
        """``hw.protocol``'s ``k`` of the input: :attr:`input_k`, with ``SPREAD`` when the
        first layer runs spread (``sw.program.ConvLayer.spread``)."""
        return self.input_k | (protocol.SPREAD if self.input_spread else 0)

    def input_words(self, image):
        """Activation words of one uint8 image [H, W] (``pixel >> pixel_shift``) as the host
        sends them (with :attr:`input_spread` the bridge copies the byte over the word)."""
        x = (np.asarray(image, np.int64) >> self.pixel_shift).reshape(self.input_shape)
        return _words(pack_activation(x, self.word_bytes), self.word_bytes)

    @property
    def output_bytes(self):
        c, h, w = self.output_shape
        return h * w * cpad(c * (2 if self.output_wide else 1), self.word_bytes)

    def decode_output(self, data):
        """Bytes read back from the output tensor -> int64 logits [C]."""
        return unpack_activation(data, self.output_shape, self.word_bytes,
                                 self.output_wide).reshape(-1)


def pipeline_deltas(chunks, slots):
    """Image offset of each program entry: runs of layers on one chunk get offsets rising
    evenly from 0 to ``slots - 1`` along the program (non-decreasing: deadlock-free)."""
    runs = [0]
    for prev, cur in zip(chunks, chunks[1:]):
        runs.append(runs[-1] + (cur != prev))
    last = runs[-1]
    return [r * (slots - 1) // last if last else 0 for r in runs]


def execution_order(prog, images, slots):
    """Per chunk, the (image, layer) pairs its controller runs, in order."""
    order = {}
    for k in range(images + slots - 1):
        for i, (L, delta) in enumerate(zip(prog.layers, prog.deltas)):
            if 0 <= k - delta < images:
                order.setdefault(L.chunk, []).append((k - delta, i))
    return order


def _words(data, word_bytes):
    data = np.asarray(data, np.uint8).reshape(-1, word_bytes)
    return [int.from_bytes(row.tobytes(), "little") for row in data]


def _split(values, width, n):
    """Each int of ``values`` as ``n`` words of ``width`` bits, the lowest first."""
    mask = (1 << width) - 1
    return [v >> (j * width) & mask for v in values for j in range(n)]


def _shape3(shape):
    return tuple(shape) if len(shape) == 3 else (shape[0], 1, 1)


def _tensor_bytes(T, word_bytes):
    c, h, w = _shape3(T["shape"])
    return h * w * cpad(c * (2 if T["bits"] > 8 else 1), word_bytes)


def _place_tensors(qm, cfg):
    """Byte address of every tensor (``hw.actmem.regions``: the slot's memories): first fit
    in one memory, freeing a tensor after its last reader. With single-port memories the
    memories are chosen depth first, backtracking, so that no layer makes more accesses to
    a memory than its ports take (``hw.actmem.PORTS``); tensors read as residuals try the
    residual memory first. Returns (addresses, the highest end in each memory)."""
    layers, tensors = qm.layers, qm.tensors
    mems = regions(cfg)
    size = [_tensor_bytes(T, cfg.word_bytes) for T in tensors]
    last_use = {t: -1 for t in range(len(tensors))}
    residuals = set()
    for i, L in enumerate(layers):
        for t in (L["input"], L.get("residual")):
            if t is not None:
                last_use[t] = i
        if L.get("residual") is not None:
            residuals.add(L["residual"])
    last_use[len(tensors) - 1] = len(layers)          # the logits stay
    order = [(0, -1)] + [(L["output"], i) for i, L in enumerate(layers)]
    where, offset = {}, {}

    def first_fit(t, k, born):
        start = 0
        for base, end in sorted((offset[u], offset[u] + size[u]) for u in where
                                if where[u] == k and last_use[u] >= born):
            if start + size[t] <= base:
                break
            start = max(start, end)
        return start if start + size[t] <= mems[k][1] else None

    def ports_ok(i):
        L = layers[i]
        use = {}
        for t, write in ((L["input"], 0), (L.get("residual"), 0), (L["output"], 1)):
            if t is not None:
                r, w = use.get(where[t], (0, 0))
                use[where[t]] = (r + 1 - write, w + write)
        return all(r <= PORTS[mems[k][2]][0] and w <= PORTS[mems[k][2]][1]
                   and r + w <= PORTS[mems[k][2]][2] for k, (r, w) in use.items())

    steps = [0]

    def place(j):
        if j == len(order):
            return True
        steps[0] += 1
        if steps[0] > 100_000:
            return False
        t, born = order[j]
        prefer = sorted(range(len(mems)),
                        key=lambda k: (t in residuals) != (mems[k][2] == "1r1w"))
        for k in prefer:
            start = first_fit(t, k, born)
            if start is None:
                continue
            where[t], offset[t] = k, start
            if (born < 0 or ports_ok(born)) and place(j + 1):
                return True
            del where[t], offset[t]
        return False

    if not place(0):
        if len(mems) == 1:
            big = max(range(len(tensors)), key=lambda t: size[t])
            raise ProgramError(f"activation memory: the tensors do not fit in {cfg.act_bytes} "
                               f"bytes (the largest, tensor {big}, has {size[big]}; raise "
                               "act_bytes in accel.json)")
        raise ProgramError(f"activation memory: no placement in {cfg.act_split} single-port "
                           f"memories of {cfg.act_bytes} bytes and {cfg.res_bytes} bytes of "
                           "residual memory lets every layer read and write different memories "
                           "(raise act_bytes or res_bytes in accel.json)")
    addr = {t: mems[k][0] + offset[t] for t, k in where.items()}
    ends = [max([offset[t] + size[t] for t in where if where[t] == k] or [0])
            for k in range(len(mems))]
    return addr, ends


def _place_params(cfg, ends, count):
    """First activation word of ``count`` parameters (``params_in_act``; each
    :func:`param_act_words` words) in the first memory with room above its tensors; grows
    that memory's entry of ``ends``."""
    size = count * param_act_words(cfg) * cfg.word_bytes
    for k, (first, limit, _) in enumerate(regions(cfg)):
        if ends[k] + size <= limit:
            ends[k] += size
            return (first + ends[k] - size) // cfg.word_bytes
    raise ProgramError(f"params_in_act: {count} parameters ({size} bytes) fit in no activation "
                       "memory beside the tensors (raise act_bytes in accel.json)")


def param_act_words(cfg):
    """Activation words per parameter (``m`` and ``b``) when parameters live there."""
    return -(-(cfg.m_width + cfg.rq_width) // (8 * cfg.word_bytes))


def _conv_layer(qm, i, L):
    T_in, T_out = qm.tensors[L["input"]], qm.tensors[L["output"]]
    wide = T_out["bits"] > 8
    name = f"layers[{i}] ({L.get('name', '?')})"
    if L["type"] == "gap":
        c, h, w = T_in["shape"]
        if h != w:
            raise ProgramError(f"{name}: global average pooling needs a square input, not {h}x{w}")
        return ConvLayer("lanewise", (c, h, w), c, h, wide=wide)
    if L["type"] == "fc":
        return ConvLayer("broadcast", (L["in_ch"], 1, 1), L["out_ch"], 1, wide=wide)
    c, g = L["in_ch"], L["groups"]
    if g == 1:
        mode = "broadcast"
    elif g == c == L["out_ch"]:
        mode = "lanewise"
    else:
        raise ProgramError(f"{name}: grouped convolution ({g} groups) is not supported; only "
                           "standard (1 group) and depthwise")
    return ConvLayer(mode, tuple(T_in["shape"]), L["out_ch"], L["kernel"], L["stride"],
                     L["padding"], wide=wide)


def _lane_weights(qm, i, L, kind, layer):
    """Per-weight values as the chunk's weight layout wants them."""
    if L["type"] == "gap":
        ones = np.ones((layer.out_c, 1, layer.kernel, layer.kernel), np.int64)
        return np.stack([ones, 0 * ones], -1) if kind == "shift" else ones
    if kind == "shift":
        return np.stack([qm.arrays[f"{i}.sign"].astype(np.int64),
                         qm.arrays[f"{i}.shift"].astype(np.int64)], -1)
    return qm.arrays[f"{i}.w"].astype(np.int64)


def _chunk_for(cfg, L, name):
    if L["type"] == "gap":
        for chunk in ("clp", "slp"):
            if cfg.chunk(chunk).lanes:
                return chunk
        raise ProgramError(f"{name}: global average pooling needs a CLP or SLP chunk")
    chunk = CHUNK_OF_OP[L["op"]]
    if not cfg.chunk(chunk).lanes:
        raise ProgramError(f"{name}: a {L['op']} layer needs the {chunk.upper()} chunk, which "
                           "this accelerator does not have (lanes 0)")
    return chunk


def spread_candidate(qm):
    """Index of the layer that may run spread (``sw.program.ConvLayer.spread``): the one
    layer reading a one-channel network input (None where there is none)."""
    readers = [i for i, L in enumerate(qm.layers) for t in (L["input"], L.get("residual"))
               if t == 0]
    shape = qm.tensors[0]["shape"]
    return readers[0] if len(shape) == 3 and shape[0] == 1 and len(readers) == 1 else None


def compile_model(qm, cfg):
    """Program for integer model ``qm`` on accelerator ``cfg``; ProgramError names what
    does not fit."""
    from sw.costmodel import layer_tiler   # (sw.costmodel imports this module)
    V = cfg.word_bytes
    addr, ends = _place_tensors(qm, cfg)
    if cfg.params_in_act:
        p_act = _place_params(cfg, ends, sum(L["out_ch"] for L in qm.layers))
        widest = max(L["out_ch"] for L in qm.layers)
        if widest > cfg.p_words:
            raise ProgramError(f"p_words: a layer has {widest} output channels, the parameter "
                               f"memory holds {cfg.p_words}")
    kinds = [ports for _, _, ports in regions(cfg)]
    prog = Program(word_bytes=V, pixel_shift=qm.header["input"]["pixel_shift"],
                   input_base=addr[0], input_shape=_shape3(qm.tensors[0]["shape"]),
                   act_bytes_used=max(e for e, k in zip(ends, kinds) if k != "1r1w"),
                   res_bytes_used=max([e for e, k in zip(ends, kinds) if k == "1r1w"] or [0]))
    out_t = len(qm.tensors) - 1
    prog.output_base, prog.output_shape = addr[out_t], _shape3(qm.tensors[out_t]["shape"])
    prog.output_wide = qm.tensors[out_t]["bits"] > 8
    tile = layer_tiler(qm)
    w_next = {name: 0 for name, _, _ in cfg.chunks}
    weights = {name: [] for name in w_next}
    params, program = [], []
    p_layout = param_layout(cfg.m_width, cfg.rq_width).elem_shape     # one channel's
    prog_layout = program_layout(cfg)
    if len(qm.layers) > cfg.prog_words:
        raise ProgramError(f"prog_words: {len(qm.layers)} layers do not fit {cfg.prog_words} "
                           "program words")
    for i, L in enumerate(qm.layers):
        name = f"layers[{i}] ({L.get('name', '?')})"
        chunk = _chunk_for(cfg, L, name)
        cc = cfg.chunk(chunk)
        kind = KIND_OF_CHUNK[chunk]
        if L["acc_bits"] > cc.acc_width:
            raise ProgramError(f"{chunk}.acc_width: {name} needs {L['acc_bits']} accumulator "
                               f"bits, the chunk has {cc.acc_width}")
        if L.get("rq_bits", 0) > cfg.rq_width:
            raise ProgramError(f"rq_width: {name} needs {L['rq_bits']} requantisation bits, "
                               f"the accelerator has {cfg.rq_width}")
        if kind == "shift" and L["type"] != "gap" and L["exp_bits"] > cc.w_width:
            raise ProgramError(f"slp.w_width: {name} needs {L['exp_bits']} exponent bits")
        layer = tile(i, _conv_layer(qm, i, L), chunk, cc.lanes, cfg)
        prog.input_spread |= layer.spread
        layer.check(cc.lanes, V, cfg.drain)
        words = weight_words(layer, _lane_weights(qm, i, L, kind, layer), cc.lanes, V)
        if w_next[chunk] + len(words) > cc.w_words:
            raise ProgramError(f"{chunk}.w_words: weights of {name} end at word "
                               f"{w_next[chunk] + len(words)}, the memory has {cc.w_words}")
        w_base = cfg.w_bases[chunk] + w_next[chunk]
        lane_layout = weight_layout(kind, cc.w_width)
        for word in words:
            lanes = [{"sign": int(v[0]), "shift": int(v[1])} for v in word] if kind == "shift" \
                else [int(v) for v in word]
            weights[chunk].append(pack(data.ArrayLayout(lane_layout, cc.lanes), lanes))
        w_next[chunk] += len(words)
        params += [0] * (-len(params) % cfg.drain)   # a layer starts a parameter word
        p_base = len(params) // cfg.drain
        for mv, bv in param_words(qm.arrays[f"{i}.M"], qm.arrays[f"{i}.B"], L["S"]):
            params.append(pack(p_layout, {"m": int(mv), "b": int(bv)}))
        if cfg.params_in_act:
            p_base = p_act + p_base * param_act_words(cfg)
        elif len(params) > cfg.p_words:
            raise ProgramError(f"p_words: {len(params)} output channels need more than "
                               f"{cfg.p_words} parameter words")
        res = L.get("residual")
        fields = descriptor(layer, lanes=cc.lanes, word_bytes=V, in_base=addr[L["input"]],
                            out_base=addr[L["output"]], w_base=w_base, p_base=p_base,
                            shift=L["S"], lo=L["lo"], hi=L["hi"],
                            res_base=None if res is None else addr[res],
                            res_shift=L.get("res_shift") or 0)
        program.append((chunk, fields))
        oh, ow = layer.out_hw
        beats = layer.groups(cc.lanes, V) * layer.positions() * layer.taps()
        macs = layer.out_c * oh * ow * layer.terms()
        prog.layers.append(CompiledLayer(L.get("name", str(i)), chunk, layer, beats, macs))
    runs_on = ["engine" if cfg.shared_engine else chunk for chunk, _ in program]
    deltas = pipeline_deltas(runs_on, cfg.slots)
    prog.deltas = deltas
    words = [pack(prog_layout, {"chunk": CHUNK_ID[chunk], "last": int(i == len(program) - 1),
                                "delta": delta, "desc": fields})
             for i, ((chunk, fields), delta) in enumerate(zip(program, deltas))]
    if cfg.prog_width:       # each descriptor over prog_beats words, the first at the bottom
        words = _split(words, cfg.prog_width, prog_beats(cfg))
    prog.images = {"prog": {0: words}}
    if cfg.params_in_act:
        prog.images["act"] = {p_act: _split(params, 8 * V, param_act_words(cfg))}
    else:
        width = p_layout.size
        params += [0] * (-len(params) % cfg.drain)
        prog.images["param"] = {0: [sum(v << (j * width) for j, v in
                                        enumerate(params[k:k + cfg.drain]))
                                    for k in range(0, len(params), cfg.drain)]}
    prog.images.update({chunk: {cfg.w_bases[chunk]: words}
                        for chunk, words in weights.items() if words})
    return prog
