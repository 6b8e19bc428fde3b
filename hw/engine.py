"""Layer engine: a sequencer, drain and requantiser running one conv-like layer from a
descriptor on a PE row (a chunk), or on one of several rows (the shared engine).

A layer is a convolution in one of two modes (the compiler picks and prepares the
descriptor, ``sw`` side):

- **broadcast** (standard KxK incl. the stem, pointwise, fully connected): lane ``l``
  computes output channel ``g*lanes + l``; every beat one input activation is broadcast
  to all lanes, each lane with its own weight. Taps per output: ``kernel^2 * cin``.
  *Tiled* (descriptor ``tiled``, an engine built with ``cin_tile`` ``t`` > 1): lane
  ``o*t + j`` takes byte ``j`` of the beat's ``t`` input channels, and the ``t`` lanes of
  output ``o`` (channel ``g*(lanes//t) + o``) are summed as they enter the shadow. Taps
  per output: ``kernel^2 * ceil(cin / t)``; for layers whose output channels are fewer
  than the lanes.
- **lanewise** (depthwise, global average pooling as a depthwise conv with unit weights):
  lane ``l < word_bytes`` computes channel ``g*word_bytes + l`` from its own input byte;
  one activation word feeds all lanes. Taps per output: ``kernel^2``. ``lanes //
  word_bytes`` groups share the weight words (group ``g`` takes the word's lanes from
  ``(g % subs) * word_bytes``), so no weight word is mostly empty.
  *Pixel blocks* (descriptor ``pixels_m1`` ``P - 1``, an engine built with ``pixels``
  > 1): lanes ``p*word_bytes ..`` compute output pixel ``ox + p`` of a block of ``P``;
  the ``kw`` loop walks the block's ``span = (P-1)*stride + K`` input pixels of each
  kernel row (taps per block: ``K * span``), and pixel ``p`` takes the weights and the
  tap-valid flag pixel ``p - 1`` had ``stride`` beats before (a register chain), so it
  adds tap ``t - p*stride`` of beat ``t`` and nothing (``x = w = 0``) outside its taps.
  A row's last block may hold fewer pixels (``last_m1``): its lanes past the row add
  padding taps and are not drained.

Loops: ``g`` (lane group) > ``oy`` > ``ox`` > ``kh`` > ``kw`` > ``c``; addresses advance by
additions only (the descriptor carries the strides). A tap outside the input is padding:
the PE sees ``x = 0`` (for adder layers that contributes ``-|w|``, as the golden model
says). When an output's last tap is in, the group's accumulators are copied to a shadow
register and its valid ones (channels below ``out_c``) drained, ``drain`` per cycle,
through the parameter memory (``drain`` words of ``M``, ``B + 2^(S-1)`` per address), the
residual read and ``drain`` :class:`~hw.requant.Requantizer` s into byte writes (two bytes,
little-endian, per output of a ``wide`` layer: the 16-bit logits), all in one activation
word. An output's last tap issues when its sums (``SUMS_LATENCY`` cycles later) will find
the shadow's last lanes draining or the shadow empty (several outputs' sums may be on
their way, each with its tag of output address and lanes): outputs are at least
``max(taps, ceil(valid lanes / drain))`` cycles apart.

Activations are bytes in ``word_bytes``-wide words, HWC order, channel stride ``cpad``
(a multiple of ``word_bytes``). Memories are outside: the engine drives two activation
read ports (operands, residuals), one byte-granular activation write port, a weight read
port (one word = ``lanes`` weights) and a parameter read port (``{m, b}`` per channel).
All reads are synchronous (data the cycle after the address) and enabled every cycle
(residual reads: while a residual layer drains);
every memory output is registered as it arrives, before any logic (byte select, slot
mux outside, PEs, requantiser), so a far block RAM only drives a wire to a flip-flop.
Latency from a tap's issue to its PE beat: 3 cycles, to its sums ``SUMS_LATENCY``; from a
drained lane to its byte write:
3 + ``Requantizer.LATENCY`` cycles.
"""
from typing import NamedTuple

from amaranth.hdl import Array, Cat, Module, Mux, Shape, Signal, Value, signed, unsigned
from amaranth.lib import data, memory, wiring
from amaranth.lib.wiring import In, Out

from hw.pe import PE, PERow, _check_width, weight_layout
from hw.requant import Requantizer

__all__ = ["LayerEngine", "RowSpec", "descriptor_layout", "param_layout"]


class RowSpec(NamedTuple):
    """One PE row of an engine: ``lanes`` PEs of ``kind`` with ``w_width``-bit weights (the
    exponent width for ``"shift"``) and ``acc_width``-bit accumulators."""
    kind: str
    lanes: int
    w_width: int = 8
    acc_width: int = 24

    @property
    def w_bits(self):
        """Bits of one weight word: a weight per lane."""
        return self.lanes * Shape.cast(weight_layout(self.kind, self.w_width)).width


def descriptor_layout(addr_bits, w_addr_bits, p_addr_bits, shift_bits=6, cin_tile=1,
                      pixels=1):
    """Fields of one layer descriptor. Byte addresses are signed (``addr_bits + 2``):
    padding taps start before the tensor. ``p_addr_bits``: bits of ``p_base`` (a parameter
    memory address, or an activation word address when parameters live there). The
    ``tiled`` flag exists when the engine has a ``cin_tile``, the pixel-block fields when
    it has ``pixels``."""
    a = signed(addr_bits + 2)
    blocks = {
        "pixels_m1": 4,         # output pixels of a block less one (lanewise)
        "last_m1": 4,           # output pixels of a row's last block less one (<= pixels_m1)
        "span_m1": 5,           # input pixels of a block's kernel row less one (kw bound)
        "ox_step": 6,           # input columns between blocks: pixels * stride
        "out_step": a,          # output bytes between blocks: pixels * out_cpad
        "last_step": a,         # output bytes after a row's last block: (last_m1+1) * out_cpad
    } if pixels > 1 else {}
    return data.StructLayout({
        "lanewise": 1,          # 1: lanewise mode, 0: broadcast mode
        **({"tiled": 1} if cin_tile > 1 else {}),   # broadcast over cin_tile channels
        **blocks,
        "in_h": 8, "in_w": 8,   # input size (padding bounds)
        # loop bounds less one (the loop-end compares then see flip-flops only)
        "out_h_m1": 8, "out_w_m1": 8,
        "cin_m1": 10,           # channel taps per kernel position, less one (0: lanewise)
        "kernel_m1": 5, "stride": 3, "pad": 4,
        "groups_m1": 8,         # lane groups less one
        "out_c": 10,            # output channels (later ones are not written)
        "in_start": a,          # in_base - pad*row_stride - pad*in_cpad
        "in_cpad": a,           # byte stride between input pixels
        "row_stride": a,        # in_w * in_cpad
        "col_step": a,          # stride * in_cpad (pixels * stride * in_cpad)
        "row_step": a,          # stride * row_stride
        "out_base": a,
        "res_off": a,           # residual byte address - output byte address
        "out_cpad": a,          # byte stride between output pixels
        "w_base": w_addr_bits, "taps": w_addr_bits,   # weight words per lane group
        "p_base": p_addr_bits,
        "has_res": 1, "shift": shift_bits, "res_shift": shift_bits,
        "wide": 1,              # 16-bit outputs (logits): two bytes per channel
        "lo": signed(16), "hi": signed(16),
    })


def param_layout(m_width, rq_width, drain=1):
    """One word of the parameter memory: ``drain`` channels' requantisation multiplier and
    rounded bias (channel ``p * drain + j`` in element ``j`` of word ``p``)."""
    return data.ArrayLayout(data.StructLayout({"m": signed(m_width), "b": signed(rq_width)}),
                            drain)


class LayerEngine(wiring.Component):
    """One sequencer, drain and requantiser driving one or more PE rows (:class:`RowSpec`).

    A chunk's engine has one row. A *shared* engine (``AccelConfig.shared_engine``) has a
    row per chunk kind and runs each layer on the row its ``row`` input selects (held while
    busy): the rows see the same beats, only the selected one accumulates, and its sums
    go to the one drain, so timing is that of a one-row engine.

    Widths: activations are bytes; per row ``w_width`` and ``acc_width`` (the drain and the
    requantisers take the widest), ``m_width``/``rq_width`` (requantisation), ``word_bytes``
    (activation word, at most every row's lanes), ``addr_bits`` (byte address),
    ``w_addr_bits``, ``p_addr_bits``. ``drain``: sums requantised and written per cycle
    (1, or a power of two dividing every row's lanes with ``2 * drain <= word_bytes``).
    ``cin_tile``: input channels a tiled broadcast layer takes per beat (1: no tiling, or a
    power of two up to ``word_bytes``). ``pixels``: output pixels a lanewise layer may
    compute side by side (1, or up to 16 for a one-row engine; the row holds
    ``lanes // word_bytes`` of them). A weight
    word holds one weight per lane of the row
    (several rows: the low bits of a word as wide as the widest row's).
    Control: pulse ``start`` with ``desc`` valid; ``busy`` stays high until the last
    output byte is written; ``desc`` must hold while busy. One tap per cycle for all lanes.
    """

    #: cycles from a last tap's issue to its sums at the shadow: address, memory output
    #: and operand registers, then the PEs
    SUMS_LATENCY = 3 + PE.LATENCY

    def __init__(self, rows, *, word_bytes=4, m_width=16, rq_width=48, addr_bits=16,
                 w_addr_bits=12, p_addr_bits=10, params_in_act=False, drain=1, cin_tile=1,
                 pixels=1):
        rows = [RowSpec(*r) for r in rows]
        if not rows:
            raise ValueError("rows: an engine needs at least one PE row")
        for r in rows:
            _check_width("lanes", r.lanes, 1, 256)
        lanes = max(r.lanes for r in rows)
        if word_bytes not in (1, 2, 4, 8, 16) or word_bytes > min(r.lanes for r in rows):
            raise ValueError(f"word_bytes must be a power of two from 1 to 16 and at most "
                             f"every row's lanes ({min(r.lanes for r in rows)}), not "
                             f"{word_bytes!r}")
        if drain not in (1, 2, 4, 8) or (drain > 1 and (2 * drain > word_bytes or params_in_act
                                                       or any(r.lanes % drain for r in rows))):
            raise ValueError(f"drain must be 1, or 2/4/8 dividing every row's lanes with "
                             f"2 * drain <= word_bytes {word_bytes} and no params_in_act, "
                             f"not {drain!r}")
        if cin_tile not in (1, 2, 4, 8, 16) or cin_tile > word_bytes:
            raise ValueError(f"cin_tile must be a power of two up to word_bytes {word_bytes}, "
                             f"not {cin_tile!r}")
        if not isinstance(pixels, int) or not 1 <= pixels <= 16 or (pixels > 1 and len(rows) > 1):
            raise ValueError(f"pixels must be 1, or up to 16 for a one-row engine, not "
                             f"{pixels!r}")
        for name, value in (("addr_bits", addr_bits), ("w_addr_bits", w_addr_bits),
                            ("p_addr_bits", p_addr_bits)):
            _check_width(name, value, 1, 24)
        self.specs, self.lanes, self.word_bytes, self.drain = rows, lanes, word_bytes, drain
        self.cin_tile, self.pixels = cin_tile, pixels
        self.acc_width = max(r.acc_width for r in rows)
        self.addr_bits = addr_bits
        self.rows = [PERow(r.kind, r.lanes, x_width=8, w_width=r.w_width,
                           acc_width=r.acc_width) for r in rows]
        self.requants = [Requantizer(acc_width=self.acc_width, m_width=m_width,
                                     rq_width=rq_width, res_width=8, out_width=16)
                         for _ in range(drain)]
        act_word = data.ArrayLayout(signed(8), word_bytes)
        act_addr = addr_bits - (word_bytes.bit_length() - 1)
        w_word = (data.ArrayLayout(weight_layout(rows[0].kind, rows[0].w_width), lanes)
                  if len(rows) == 1 else unsigned(max(r.w_bits for r in rows)))
        self.params_in_act = params_in_act
        self.desc_layout = descriptor_layout(addr_bits, w_addr_bits,
                                             act_addr if params_in_act else p_addr_bits,
                                             cin_tile=cin_tile, pixels=pixels)
        members = {
            "start": In(1),
            "busy": Out(1),
            "desc": In(self.desc_layout),
            "act_rd": In(memory.ReadPort.Signature(addr_width=act_addr, shape=act_word)),
            "res_rd": In(memory.ReadPort.Signature(addr_width=act_addr, shape=act_word)),
            "act_wr": In(memory.WritePort.Signature(addr_width=act_addr, shape=act_word,
                                                    granularity=1)),
            "w_rd": In(memory.ReadPort.Signature(addr_width=w_addr_bits, shape=w_word)),
            "p_rd": In(memory.ReadPort.Signature(addr_width=p_addr_bits,
                                                 shape=param_layout(m_width, rq_width,
                                                                    drain))),
        }
        if params_in_act:
            members["p_wr"] = In(memory.WritePort.Signature(
                addr_width=p_addr_bits, shape=param_layout(m_width, rq_width)))
        if len(rows) > 1:
            members["row"] = In(range(len(rows)))
        super().__init__(members)

    def elaborate(self, platform):
        m = Module()
        for i, row in enumerate(self.rows):
            m.submodules[f"row{i}"] = row
        for j, rq in enumerate(self.requants):
            m.submodules[f"requant{j or ''}"] = rq
        d = self.desc
        lanes, V, D, T = self.lanes, self.word_bytes, self.drain, self.cin_tile
        tiled = d.tiled if T > 1 else 0
        Pg = min(self.pixels, lanes // V)         # pixel groups of lanes (1: no blocks)
        block = (d.lanewise & (d.pixels_m1 != 0)) if Pg > 1 else 0
        ws = V.bit_length() - 1
        a_shape = signed(self.addr_bits + 2)

        # ---- stage 0: loop counters and running addresses -------------------------------
        g, oy, ox = Signal(8), Signal(8), Signal(8)
        kh, kw, c = Signal(5), Signal(5), Signal(10)
        iy0, ix0 = Signal(signed(10)), Signal(signed(10))   # oy*stride - pad, ox*stride - pad
        iy, ix = Signal(signed(10)), Signal(signed(10))     # + kh, + kw
        a_g, a_oy, a_ox, a_kh, a_kw, a_c = (Signal(a_shape, name=f"a_{n}")
                                            for n in ("g", "oy", "ox", "kh", "kw", "c"))
        w_g, w_t = Signal.like(d.w_base), Signal.like(d.w_base)
        selected = [self.row == i if len(self.rows) > 1 else 1 for i in range(len(self.rows))]
        sub = Signal(range(max(spec.lanes // V for spec in self.specs)))   # lanewise: the
        last_sub = Signal()        # group's lanes in the weight word; the word's last group
        for spec, sel in zip(self.specs, selected):
            with m.If(sel):
                m.d.comb += last_sub.eq(~d.lanewise | (sub == spec.lanes // V - 1))
        o_g, o_pix = Signal(a_shape), Signal(a_shape)       # output address of lane 0
        ch_g = Signal(10)                                   # output channel of lane 0
        ch_left = Signal(10)                                # out_c - ch_g
        running = Signal()
        # output channels per lane group: the row's lanes (broadcast) or word_bytes
        group_ch = Signal(range(lanes + 1))
        for spec, sel in zip(self.specs, selected):
            with m.If(sel):
                m.d.comb += group_ch.eq(Mux(d.lanewise, V, Mux(tiled, spec.lanes // T,
                                                                spec.lanes)))

        # the descriptor holds the loop bounds less one, and the tap loops' end flags are
        # registers set with their counters: `issue` (which enables every counter) and the
        # loop-end compares see flip-flops only
        cin_m1, k_m1 = d.cin_m1, d.kernel_m1
        span_m1 = d.span_m1 if Pg > 1 else k_m1          # the kw loop's bound
        ox_step = d.ox_step if Pg > 1 else d.stride      # input columns per ox step
        out_step = d.out_step if Pg > 1 else d.out_cpad  # output bytes per ox step
        row_out_step = d.last_step if Pg > 1 else d.out_cpad   # ... after a row's last one
        last_c, last_kw, last_kh = Signal(), Signal(), Signal()
        last_ox, last_oy, last_g = ox == d.out_w_m1, oy == d.out_h_m1, g == d.groups_m1
        first_tap = (c == 0) & (kw == 0) & (kh == 0)
        last_tap = last_c & last_kw & last_kh

        # ---- pipeline registers -----------------------------------------------------------
        subs = max(spec.lanes // V for spec in self.specs)   # lanewise groups per weight word
        s1 = Signal(data.StructLayout({"valid": 1, "first": 1, "last": 1, "pad": 1,
                                       "byte": range(V), "sub": range(subs),
                                       "kv": 1}))      # kv: a tap of pixel 0 (kw < K)
        s1q = Signal.like(s1)                                   # stage 1b: data registered
        act_q = Signal.like(self.act_rd.data)
        w_q = Signal.like(self.w_rd.data)
        # output address, channel and valid lanes of a last tap, travelling with its beat
        # (tags[0] the cycle after its issue; tags[-1] when its sums reach the shadow)
        L = self.SUMS_LATENCY
        o_shape = unsigned(self.addr_bits)        # output addresses are never negative
        tag_layout = data.StructLayout({"out": o_shape, "ch": 10, "n": range(lanes + 1),
                                        "nch": range(lanes + 1)})   # valid lanes per word
        tags = [Signal(tag_layout, name=f"tag{i}") for i in range(L)]
        tag = tags[-1]
        shadow = Signal(data.ArrayLayout(signed(self.acc_width), lanes))   # shifts out lane 0
        drain_left = Signal(range(lanes + 1))     # valid lanes still to drain
        # running addresses of the lanes being drained (registers: no adder before a memory)
        drain_out, drain_res = Signal(o_shape), Signal(o_shape)
        drain_p = Signal.like(d.p_base)
        d1 = Signal(data.StructLayout({"valid": D, "acc": data.ArrayLayout(signed(self.acc_width), D),
                                       "out": o_shape, "byte": range(V)}))
        d1q = Signal.like(d1)                    # stage 2b: parameters and residual registered
        p_q = Signal.like(self.p_rd.data)
        res_q = Signal.like(self.res_rd.data)
        rq_in = self.requants[0].i.payload.shape()
        d2 = Signal(data.ArrayLayout(rq_in, D))  # stage 2c: registered requantiser inputs
        d2_valid, d2_out = Signal(D), Signal(o_shape)
        rq_lat = Requantizer.LATENCY
        w_pipe = [Signal(o_shape, name=f"waddr{i}") for i in range(rq_lat)]

        beat = Signal(data.StructLayout({                 # stage 1c: registered PE operands
            "x": data.ArrayLayout(signed(8), lanes), "w": self.w_rd.data.shape(),
            "first": 1, "last": 1}))
        beat_valid = Signal()
        pe_valid = Signal(PE.LATENCY - 1)             # beats inside the PEs
        sums_valid = Signal()                         # the selected row's sums are out
        issue = Signal()
        # parameter load (params_in_act): out_c parameters of pl_k activation words each
        pl_k = -(-Shape.cast(self.p_rd.data.shape()).width // (8 * V))
        pl_addr = Signal.like(self.act_rd.addr)             # next word to read
        pl_left = Signal(range(1024 * pl_k + 1))            # reads still to issue
        pl_word = Signal(range(pl_k))                       # word of the arriving parameter
        pl_idx = Signal.like(self.p_rd.addr)                # parameter memory address
        loading = Signal()
        # a last tap waits until its sums (SUMS_LATENCY cycles on) cannot land on an
        # undrained shadow: the shadow takes them while its last lane drains, so last taps
        # issue at least ceil(valid lanes / drain) cycles apart (`spacing` counts down)
        n_valid = Signal(range(lanes + 1))      # lanes the drain walks
        n_ch = Signal(range(lanes + 1))         # valid lanes (per pixel word of a block)
        spacing = Signal(range(lanes // D + 1))
        m.d.comb += [n_ch.eq(Mux(ch_left < group_ch, ch_left, group_ch)),
                     n_valid.eq(Mux(block, (Mux(last_ox, d.last_m1, d.pixels_m1) + 1) << ws,
                                    n_ch) if Pg > 1 else n_ch),
                     issue.eq(running & ~(last_tap & (spacing != 0)))]
        with m.If(issue & last_tap):
            m.d.sync += spacing.eq(((n_valid + D - 1) >> (D.bit_length() - 1)) - 1)
        with m.Elif(spacing != 0):
            m.d.sync += spacing.eq(spacing - 1)

        pad = (iy < 0) | (iy >= d.in_h) | (ix < 0) | (ix >= d.in_w)
        m.d.comb += [
            self.act_rd.addr.eq(a_c[ws:] if not self.params_in_act
                                else Mux(loading, pl_addr, a_c[ws:])), self.act_rd.en.eq(1),
            self.w_rd.addr.eq(w_t), self.w_rd.en.eq(1),
        ]
        m.d.sync += [
            s1.valid.eq(issue), s1.first.eq(first_tap), s1.last.eq(last_tap),
            s1.pad.eq(pad), s1.byte.eq(a_c[:ws] if ws else 0), s1.sub.eq(sub),
            s1.kv.eq(kw <= k_m1),
        ]
        m.d.sync += [tags[0].out.eq(o_pix), tags[0].ch.eq(ch_g), tags[0].n.eq(n_valid),
                     tags[0].nch.eq(n_ch),
                     *(b.eq(a) for a, b in zip(tags, tags[1:]))]

        def taps_from(base):
            return [a_kh.eq(base), a_kw.eq(base), a_c.eq(base)]

        rq_busy = Signal(rq_lat)   # valid bits inside the requantiser
        m.d.sync += rq_busy.eq(Cat(d2_valid.any(), rq_busy[:-1]))
        with m.FSM() as fsm:
            with m.State("IDLE"):
                with m.If(self.start):
                    m.d.sync += [
                        g.eq(0), oy.eq(0), ox.eq(0), kh.eq(0), kw.eq(0), c.eq(0),
                        iy0.eq(-d.pad), ix0.eq(-d.pad), iy.eq(-d.pad), ix.eq(-d.pad),
                        a_g.eq(d.in_start), a_oy.eq(d.in_start), a_ox.eq(d.in_start),
                        *taps_from(d.in_start), sub.eq(0),
                        w_g.eq(d.w_base), w_t.eq(d.w_base),
                        o_g.eq(d.out_base), o_pix.eq(d.out_base), ch_g.eq(0),
                        ch_left.eq(d.out_c),
                        last_c.eq(cin_m1 == 0), last_kw.eq(span_m1 == 0),
                        last_kh.eq(k_m1 == 0),
                    ]
                    if self.params_in_act:
                        m.d.sync += [pl_addr.eq(d.p_base), pl_left.eq(d.out_c * pl_k),
                                     pl_word.eq(0), pl_idx.eq(0)]
                        m.next = "PARAMS"
                    else:
                        m.d.sync += running.eq(1)
                        m.next = "RUN"
            if self.params_in_act:
                self._load_params(m, act_q, pl_addr, pl_left, pl_word, pl_idx, pl_k, running,
                                  loading)
            with m.State("RUN"):
                with m.If(issue):
                    with m.If(~last_c):
                        m.d.sync += [c.eq(c + 1), a_c.eq(a_c + Mux(tiled, T, 1)),
                                     w_t.eq(w_t + 1),
                                     last_c.eq(c + 1 == cin_m1)]
                    with m.Elif(~last_kw):
                        # (a block's weights advance over the kernel's K taps only)
                        m.d.sync += [c.eq(0), kw.eq(kw + 1), ix.eq(ix + 1),
                                     w_t.eq(w_t + (kw < k_m1) if Pg > 1 else w_t + 1),
                                     a_kw.eq(a_kw + d.in_cpad), a_c.eq(a_kw + d.in_cpad),
                                     last_c.eq(cin_m1 == 0), last_kw.eq(kw + 1 == span_m1)]
                    with m.Elif(~last_kh):
                        m.d.sync += [c.eq(0), kw.eq(0), kh.eq(kh + 1), w_t.eq(w_t + 1),
                                     ix.eq(ix0), iy.eq(iy + 1), *taps_from(a_kh + d.row_stride),
                                     last_c.eq(cin_m1 == 0), last_kw.eq(span_m1 == 0),
                                     last_kh.eq(kh + 1 == k_m1)]
                    with m.Else():   # output complete: next pixel, row or lane group
                        m.d.sync += [c.eq(0), kw.eq(0), kh.eq(0), w_t.eq(w_g),
                                     last_c.eq(cin_m1 == 0), last_kw.eq(span_m1 == 0),
                                     last_kh.eq(k_m1 == 0)]
                        with m.If(~last_ox):
                            m.d.sync += [ox.eq(ox + 1), ix0.eq(ix0 + ox_step),
                                         ix.eq(ix0 + ox_step), iy.eq(iy0),
                                         a_ox.eq(a_ox + d.col_step), *taps_from(a_ox + d.col_step),
                                         o_pix.eq(o_pix + out_step)]
                        with m.Elif(~last_oy):
                            m.d.sync += [ox.eq(0), oy.eq(oy + 1), ix0.eq(-d.pad), ix.eq(-d.pad),
                                         iy0.eq(iy0 + d.stride), iy.eq(iy0 + d.stride),
                                         a_oy.eq(a_oy + d.row_step), a_ox.eq(a_oy + d.row_step),
                                         *taps_from(a_oy + d.row_step),
                                         o_pix.eq(o_pix + row_out_step)]
                        with m.Elif(~last_g):
                            nxt = a_g + Mux(d.lanewise, V, 0)   # lanewise: next word
                            m.d.sync += [ox.eq(0), oy.eq(0), g.eq(g + 1),
                                         iy0.eq(-d.pad), ix0.eq(-d.pad),
                                         iy.eq(-d.pad), ix.eq(-d.pad),
                                         a_g.eq(nxt), a_oy.eq(nxt), a_ox.eq(nxt), *taps_from(nxt),
                                         o_g.eq(o_g + (group_ch << d.wide)),
                                         o_pix.eq(o_g + (group_ch << d.wide)),
                                         ch_g.eq(ch_g + group_ch),
                                         ch_left.eq(ch_left - group_ch)]
                            with m.If(last_sub):      # next weight word block
                                m.d.sync += [sub.eq(0), w_g.eq(w_g + d.taps),
                                             w_t.eq(w_g + d.taps)]
                            with m.Else():            # next lanes of the same words
                                m.d.sync += [sub.eq(sub + 1), w_t.eq(w_g)]
                        with m.Else():
                            m.d.sync += running.eq(0)
                            m.next = "FLUSH"
            with m.State("FLUSH"):
                empty = (~s1.valid & ~s1q.valid & ~beat_valid & ~pe_valid.any() & ~sums_valid
                         & (drain_left == 0)
                         & ~d1.valid.any() & ~d1q.valid.any() & ~d2_valid.any())
                with m.If(empty & ~rq_busy.any()):
                    m.next = "IDLE"
        m.d.comb += self.busy.eq(~fsm.ongoing("IDLE"))

        # ---- stage 1: memory outputs registered, then bytes selected and registered ----------
        m.d.sync += [s1q.eq(s1), act_q.eq(self.act_rd.data), w_q.eq(self.w_rd.data)]
        x_lanes = Signal(data.ArrayLayout(signed(8), lanes))
        w_lanewise = Signal(len(Value.cast(w_q)))   # lanes sub*V.. of the word to lanes 0..V-1
        w_sub = Signal(V * max(spec.w_bits // spec.lanes for spec in self.specs))
        on = [Signal(name=f"pix_on{p}") for p in range(Pg)]   # pixel p has a tap this beat
        if Pg > 1:
            self._pixel_chain(m, s1q, w_sub, w_lanewise, on)
        else:
            m.d.comb += [on[0].eq(1), w_lanewise.eq(w_sub)]
        with m.If(d.lanewise):
            for lane in range(min(lanes, Pg * V)):
                m.d.comb += x_lanes[lane].eq(Mux(on[lane // V], act_q[lane % V], 0))
        if T > 1:
            with m.Elif(tiled):     # lane o*T + j: byte j of the beat's T channels
                at = s1q.byte[T.bit_length() - 1:]
                x_t = [Array(act_q[k * T + j] for k in range(V // T))[at] if V > T else act_q[j]
                       for j in range(T)]
                for lane in range(lanes):
                    m.d.comb += x_lanes[lane].eq(x_t[lane % T])
        with m.Else():
            byte = act_q[s1q.byte] if V > 1 else act_q[0]
            for lane in range(lanes):
                m.d.comb += x_lanes[lane].eq(byte)
        for spec, sel in zip(self.specs, selected):
            wb = spec.w_bits // spec.lanes
            parts = [Value.cast(w_q)[j * V * wb:(j + 1) * V * wb] for j in range(spec.lanes // V)]
            with m.If(sel):
                m.d.comb += w_sub.eq(Array(parts)[s1q.sub] if len(parts) > 1 else parts[0])
        m.d.sync += [
            beat_valid.eq(s1q.valid),
            beat.first.eq(s1q.first),
            beat.last.eq(s1q.last),
            beat.w.eq(Mux(d.lanewise, w_lanewise, w_q) if subs > 1 or Pg > 1 else w_q),
            beat.x.eq(Mux(s1q.pad, 0, x_lanes)),
        ]
        for row, spec, sel in zip(self.rows, self.specs, selected):
            m.d.comb += [
                row.i.valid.eq(beat_valid & sel),
                row.i.payload.first.eq(beat.first), row.i.payload.last.eq(beat.last),
                row.i.payload.w.as_value().eq(Value.cast(beat.w)[:spec.w_bits]),
                *(row.i.payload.x[lane].eq(beat.x[lane]) for lane in range(spec.lanes)),
            ]
        m.d.sync += pe_valid.eq(Cat(beat_valid, pe_valid[:-1]))
        m.d.comb += sums_valid.eq(Cat(row.o.valid for row in self.rows).any())

        # ---- stage 2: sums to the shadow; drain `drain` valid lanes per cycle ---------------
        draining = drain_left != 0
        m.d.comb += [
            self.p_rd.addr.eq(drain_p), self.p_rd.en.eq(1),
            self.res_rd.addr.eq(drain_res[ws:]), self.res_rd.en.eq(d.has_res & draining),
        ]
        lane_ok = [draining if j == 0 else drain_left > j for j in range(D)]
        if Pg > 1:   # a block's words: lane drain_j + j of a word is valid below drain_nch
            drain_j, drain_nch = Signal(range(lanes + 1)), Signal(range(lanes + 1))
            drain_p0, jump = Signal.like(drain_p), Signal(o_shape)
            word_end = block & (drain_j == V - D)          # the next step starts a pixel word
            m.d.sync += jump.eq(d.out_cpad + (D - V))      # to the next pixel's first byte
            lane_ok = [ok & (drain_j + j < drain_nch) for j, ok in enumerate(lane_ok)]
        m.d.sync += [
            d1.valid.eq(Cat(*lane_ok)),
            d1.acc.eq(shadow.as_value()[:D * self.acc_width]),
            d1.out.eq(drain_out),
            d1.byte.eq(drain_res[:ws] if ws else 0),
        ]
        ch_word = tag.ch >> (D.bit_length() - 1)   # the parameter word of a group's lane 0
        with m.If(sums_valid):
            for row, spec, sel in zip(self.rows, self.specs, selected):
                with m.If(sel):
                    m.d.sync += [shadow[lane].eq(row.o.payload[lane]) for lane in range(row.n)]
                    if T > 1:       # tiled: output o is the sum of lanes o*T .. o*T+T-1,
                        with m.If(tiled):   # wrapped to the row's accumulator like each
                            for o in range(row.n // T):
                                total = Signal(signed(spec.acc_width), name=f"tile_sum{o}")
                                m.d.comb += total.eq(sum(row.o.payload[o * T + j]
                                                         for j in range(T)))
                                m.d.sync += shadow[o].eq(total)
            p_first = ch_word if self.params_in_act else d.p_base + ch_word
            m.d.sync += [drain_left.eq(tag.n),
                         drain_out.eq(tag.out), drain_res.eq(tag.out + d.res_off),
                         drain_p.eq(p_first)]
            if Pg > 1:
                m.d.sync += [drain_j.eq(0), drain_nch.eq(tag.nch), drain_p0.eq(p_first)]
        with m.Elif(draining):
            step = Mux(d.wide, 2 * D, D)
            m.d.sync += [drain_left.eq(Mux(drain_left > D, drain_left - D, 0) if D > 1
                                       else drain_left - 1),
                         shadow.eq(shadow.as_value() >> (D * self.acc_width)),
                         drain_out.eq(drain_out + step), drain_res.eq(drain_res + D),
                         drain_p.eq(drain_p + 1)]
            if Pg > 1:
                with m.If(word_end):
                    m.d.sync += [drain_j.eq(0), drain_out.eq(drain_out + jump),
                                 drain_p.eq(drain_p0)]
                with m.Else():
                    m.d.sync += drain_j.eq(drain_j + D)

        # ---- stage 3: parameters and residual registered, requantise, write the byte ------
        # lanes j of a drain step are channels ch..ch+D-1 (ch a multiple of D): their
        # residual and output bytes lie side by side in one word, from byte `byte`
        m.d.sync += [d1q.eq(d1), p_q.eq(self.p_rd.data), res_q.eq(self.res_rd.data)]
        m.d.sync += [d2_valid.eq(d1q.valid), d2_out.eq(d1q.out)]
        for j in range(D):
            if D == 1:
                res_byte = res_q[d1q.byte] if V > 1 else res_q[0]
            else:
                res_byte = Array(res_q[k * D + j] for k in range(V // D))[
                    d1q.byte[D.bit_length() - 1:]]
            m.d.sync += [d2[j].acc.eq(d1q.acc[j]), d2[j].m.eq(p_q[j].m), d2[j].b.eq(p_q[j].b),
                         d2[j].res.eq(Mux(d.has_res, res_byte, 0))]
        for j, rq in enumerate(self.requants):
            m.d.comb += [
                rq.i.valid.eq(d2_valid[j]), rq.i.payload.eq(d2[j]),
                rq.shift.eq(d.shift), rq.res_shift.eq(d.res_shift), rq.lo.eq(d.lo),
                rq.hi.eq(d.hi),
            ]
        m.d.sync += [w_pipe[0].eq(d2_out)] + [w_pipe[i + 1].eq(w_pipe[i])
                                              for i in range(rq_lat - 1)]
        waddr = w_pipe[-1]
        valid = Cat(rq.o.valid for rq in self.requants)
        wide_en = Cat(Cat(v, v) for v in valid)           # two bytes per channel
        m.d.comb += [
            self.act_wr.addr.eq(waddr[ws:]),
            self.act_wr.en.eq(Mux(d.wide, wide_en, valid) << (waddr[:ws] if ws else 0)),
        ]
        def out_byte(lane, half):
            return self.requants[lane].o.payload[8 * half:8 * half + 8]
        for byte in range(V):
            narrow, wide = (byte % D, 0), (byte % (2 * D) // 2, byte % 2)
            m.d.comb += self.act_wr.data[byte].eq(
                out_byte(*narrow) if narrow == wide else
                Mux(d.wide, out_byte(*wide), out_byte(*narrow)))
        return m

    def _pixel_chain(self, m, s1q, w_sub, w_lanewise, on):
        """Pixel blocks (one row): pixel ``p`` of a block takes the weights ``w_sub`` and
        the tap flag ``s1q.kv`` pixel 0 had ``p * stride`` beats before, through a chain of
        two registers per pixel that moves on every beat (stride 1 takes the first, 2 the
        second); drives ``on[p]`` (pixel ``p`` adds a term) and ``w_lanewise`` (zero where
        off). The flags are cleared when a layer starts."""
        d, V, Pg = self.desc, self.word_bytes, len(on)
        n = len(w_sub)
        held = [(w_sub, s1q.kv)]               # pixel p's weights and flag this beat
        for p in range(1, Pg):
            regs = [Signal(n + 1, name=f"pix{p}_d{k}") for k in (1, 2)]
            w_p, kv_p = Signal(n, name=f"pix{p}_w"), Signal(name=f"pix{p}_kv")
            m.d.comb += Cat(w_p, kv_p).eq(Mux(d.stride == 1, regs[0], regs[1]))
            with m.If(self.start):
                m.d.sync += [r[-1].eq(0) for r in regs]
            with m.Elif(s1q.valid):
                m.d.sync += [regs[0].eq(Cat(*held[-1])), regs[1].eq(regs[0])]
            held.append((w_p, kv_p))
        for p, (w_p, kv_p) in enumerate(held):
            m.d.comb += [on[p].eq(kv_p & (p <= d.pixels_m1)),
                         w_lanewise[p * n:(p + 1) * n].eq(Mux(on[p], w_p, 0))]

    def _load_params(self, m, act_q, pl_addr, pl_left, pl_word, pl_idx, pl_k, running,
                     loading):
        """State PARAMS (inside the sequencer's FSM): read the layer's ``out_c`` parameters,
        ``pl_k`` activation words each (the first at the bottom), from word ``p_base`` into
        the parameter memory, one word per cycle; then run. Takes ``out_c * pl_k + 2``
        cycles (the reads' latency into ``act_q``)."""
        V = self.word_bytes
        width = Shape.cast(self.p_wr.data.shape()).width
        part = Signal(max(1, (pl_k - 1) * 8 * V))          # the parameter's words so far
        full = Cat(part, act_q) if pl_k > 1 else Value.cast(act_q)
        v1, v2 = Signal(), Signal()          # a read issued 1 / 2 cycles ago: act_q has it
        m.d.sync += [v1.eq(loading & (pl_left != 0)), v2.eq(v1)]
        with m.State("PARAMS"):
            m.d.comb += loading.eq(1)
            with m.If(pl_left != 0):
                m.d.sync += [pl_addr.eq(pl_addr + 1), pl_left.eq(pl_left - 1)]
            with m.If(v2):
                with m.If(pl_word == pl_k - 1):
                    m.d.comb += [self.p_wr.addr.eq(pl_idx), self.p_wr.data.eq(full[:width]),
                                 self.p_wr.en.eq(1)]
                    m.d.sync += [pl_idx.eq(pl_idx + 1), pl_word.eq(0)]
                if pl_k > 1:
                    with m.Else():
                        m.d.sync += [part.eq(full[8 * V:]), pl_word.eq(pl_word + 1)]
            with m.If((pl_left == 0) & ~v1):
                m.d.sync += running.eq(1)
                m.next = "RUN"
