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

from hw.accel import CHUNK_ID, program_layout
from hw.config import CHUNK_OF_OP
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
    act_bytes_used: int = 0
    word_bytes: int = 4
    pixel_shift: int = 1
    deltas: list = field(default_factory=list)

    def input_words(self, image):
        """Activation words of one uint8 image [H, W] (``pixel >> pixel_shift``)."""
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


def _shape3(shape):
    return tuple(shape) if len(shape) == 3 else (shape[0], 1, 1)


def _tensor_bytes(T, word_bytes):
    c, h, w = _shape3(T["shape"])
    return h * w * cpad(c * (2 if T["bits"] > 8 else 1), word_bytes)


def _place_tensors(qm, word_bytes, act_bytes):
    """Byte address of every tensor: first fit, freeing a tensor after its last reader."""
    layers, tensors = qm.layers, qm.tensors
    last_use = {t: -1 for t in range(len(tensors))}
    for i, L in enumerate(layers):
        for t in (L["input"], L.get("residual")):
            if t is not None:
                last_use[t] = i
    last_use[len(tensors) - 1] = len(layers)          # the logits stay
    live, addr = {}, {}

    def alloc(t):
        size = _tensor_bytes(tensors[t], word_bytes)
        start = 0
        for base, end in sorted(live.values()):
            if start + size <= base:
                break
            start = max(start, end)
        if start + size > act_bytes:
            raise ProgramError(f"activation memory: tensor {t} ({size} bytes) does not fit in "
                               f"{act_bytes} bytes (raise act_bytes in accel.json)")
        live[t] = (start, start + size)
        addr[t] = start

    alloc(0)
    for i, L in enumerate(layers):
        alloc(L["output"])
        for t in list(live):
            if last_use[t] == i:
                del live[t]
    peak = max(a + _tensor_bytes(tensors[t], word_bytes) for t, a in addr.items())
    return addr, peak


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


def compile_model(qm, cfg):
    """Program for integer model ``qm`` on accelerator ``cfg``; ProgramError names what
    does not fit."""
    V = cfg.word_bytes
    addr, peak = _place_tensors(qm, V, cfg.act_bytes)
    prog = Program(word_bytes=V, pixel_shift=qm.header["input"]["pixel_shift"],
                   input_base=addr[0], input_shape=_shape3(qm.tensors[0]["shape"]),
                   act_bytes_used=peak)
    out_t = len(qm.tensors) - 1
    prog.output_base, prog.output_shape = addr[out_t], _shape3(qm.tensors[out_t]["shape"])
    prog.output_wide = qm.tensors[out_t]["bits"] > 8
    w_next = {name: 0 for name, _, _ in cfg.chunks}
    weights = {name: [] for name in w_next}
    params, program = [], []
    p_layout = param_layout(cfg.m_width, cfg.rq_width)
    prog_layout = program_layout(cfg)
    if len(qm.layers) > cfg.prog_words:
        raise ProgramError(f"prog_words: {len(qm.layers)} layers do not fit {cfg.prog_words} "
                           "program words")
    for i, L in enumerate(qm.layers):
        name = f"layers[{i}] ({L.get('name', '?')})"
        chunk = _chunk_for(cfg, L, name)
        cc = cfg.chunk(chunk)
        kind = {"clp": "mul", "slp": "shift", "alp": "adder"}[chunk]
        if L["acc_bits"] > cc.acc_width:
            raise ProgramError(f"{chunk}.acc_width: {name} needs {L['acc_bits']} accumulator "
                               f"bits, the chunk has {cc.acc_width}")
        if L.get("rq_bits", 0) > cfg.rq_width:
            raise ProgramError(f"rq_width: {name} needs {L['rq_bits']} requantisation bits, "
                               f"the accelerator has {cfg.rq_width}")
        if kind == "shift" and L["type"] != "gap" and L["exp_bits"] > cc.w_width:
            raise ProgramError(f"slp.w_width: {name} needs {L['exp_bits']} exponent bits")
        layer = _conv_layer(qm, i, L)
        layer.check(cc.lanes, V)
        words = weight_words(layer, _lane_weights(qm, i, L, kind, layer), cc.lanes, V)
        w_base = w_next[chunk]
        if w_base + len(words) > cc.w_words:
            raise ProgramError(f"{chunk}.w_words: weights of {name} end at word "
                               f"{w_base + len(words)}, the memory has {cc.w_words}")
        lane_layout = weight_layout(kind, cc.w_width)
        for word in words:
            lanes = [{"sign": int(v[0]), "shift": int(v[1])} for v in word] if kind == "shift" \
                else [int(v) for v in word]
            weights[chunk].append(pack(data.ArrayLayout(lane_layout, cc.lanes), lanes))
        w_next[chunk] += len(words)
        p_base = len(params)
        for mv, bv in param_words(qm.arrays[f"{i}.M"], qm.arrays[f"{i}.B"], L["S"]):
            params.append(pack(p_layout, {"m": int(mv), "b": int(bv)}))
        if len(params) > cfg.p_words:
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
        beats = layer.groups(cc.lanes, V) * oh * ow * layer.taps()
        macs = layer.out_c * oh * ow * layer.taps()
        prog.layers.append(CompiledLayer(L.get("name", str(i)), chunk, layer, beats, macs))
    deltas = pipeline_deltas([chunk for chunk, _ in program], cfg.slots)
    prog.deltas = deltas
    words = [pack(prog_layout, {"chunk": CHUNK_ID[chunk], "last": int(i == len(program) - 1),
                                "delta": delta, "desc": fields})
             for i, ((chunk, fields), delta) in enumerate(zip(program, deltas))]
    prog.images = {"param": {0: params}, "prog": {0: words}}
    prog.images.update({chunk: {0: words} for chunk, words in weights.items() if words})
    return prog
