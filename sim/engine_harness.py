"""Test top for the layer engine: the engine with its own memories (sized by its address
widths) and host load ports.

Not a deliverable design (the accelerator's memory system replaces it): it gives a
testbench word-level access to the activation, weight and parameter memories.
Ports: ``start``/``busy``/``desc`` of the engine; ``ld_sel`` (0 activations, 1 weights,
2 parameters), ``ld_addr``, ``ld_data`` (raw bits), ``ld_en`` write one word while the
engine is idle; ``rd_addr`` -> ``rd_data`` reads an activation word (one cycle later).
"""
from amaranth.hdl import Module, Mux, Shape
from amaranth.lib import memory, wiring
from amaranth.lib.wiring import In, Out

from hw.engine import LayerEngine, RowSpec


class EngineHarness(wiring.Component):
    def __init__(self, kind, lanes, *, w_width=8, acc_width=24, **engine_kw):
        self.engine = LayerEngine([RowSpec(kind, lanes, w_width, acc_width)], **engine_kw)
        sig = self.engine.signature.members
        self.act_shape = sig["act_rd"].signature.members["data"].shape
        self.w_shape = sig["w_rd"].signature.members["data"].shape
        self.p_shape = sig["p_rd"].signature.members["data"].shape
        self.depths = {name: 1 << sig[port].signature.addr_width
                       for name, port in (("act", "act_rd"), ("w", "w_rd"), ("p", "p_rd"))}
        width = max(Shape.cast(s).width for s in (self.act_shape, self.w_shape, self.p_shape))
        addr = max(d - 1 for d in self.depths.values()).bit_length()
        super().__init__({
            "start": In(1), "busy": Out(1), "desc": In(self.engine.desc_layout),
            "ld_sel": In(2), "ld_addr": In(addr), "ld_data": In(width), "ld_en": In(1),
            "rd_addr": In(addr), "rd_data": Out(Shape.cast(self.act_shape).width),
        })

    def elaborate(self, platform):
        m = Module()
        m.submodules.engine = eng = self.engine
        act = m.submodules.act = memory.Memory(shape=self.act_shape, depth=self.depths["act"], init=[])
        wmem = m.submodules.wmem = memory.Memory(shape=self.w_shape, depth=self.depths["w"], init=[])
        pmem = m.submodules.pmem = memory.Memory(shape=self.p_shape, depth=self.depths["p"], init=[])
        m.d.comb += [eng.start.eq(self.start), self.busy.eq(eng.busy), eng.desc.eq(self.desc)]

        for port, mem in ((eng.act_rd, act), (eng.res_rd, act), (eng.w_rd, wmem), (eng.p_rd, pmem)):
            wiring.connect(m, port, mem.read_port())
        host_rd = act.read_port()
        m.d.comb += [host_rd.addr.eq(self.rd_addr), self.rd_data.eq(host_rd.data)]

        act_wr = act.write_port(granularity=1)
        host = ~eng.busy & self.ld_en
        word_en = (1 << len(act_wr.en)) - 1
        m.d.comb += [
            act_wr.addr.eq(Mux(eng.busy, eng.act_wr.addr, self.ld_addr)),
            act_wr.data.eq(Mux(eng.busy, eng.act_wr.data, self.ld_data)),
            act_wr.en.eq(Mux(eng.busy, eng.act_wr.en,
                             Mux(host & (self.ld_sel == 0), word_en, 0))),
        ]
        for sel, mem in ((1, wmem), (2, pmem)):
            wp = mem.write_port()
            m.d.comb += [wp.addr.eq(self.ld_addr), wp.data.eq(self.ld_data),
                         wp.en.eq(host & (self.ld_sel == sel))]
        return m
