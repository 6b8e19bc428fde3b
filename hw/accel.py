"""The accelerator top: chunks (layer engines), memories, controller and host bridge.

Built from an :class:`hw.config.AccelConfig`. Memories (``amaranth.lib.memory``, so they
infer block RAM): the activation memory (``act_bytes``, words of ``word_bytes``), the
requantisation parameters, the program (layer descriptors) and one weight memory per
chunk. The controller runs the program from word 0: it starts the descriptor's chunk,
waits for it, and moves on until a descriptor marked ``last``; the active chunk owns the
activation and parameter ports. Everything is loaded and read through the host byte
protocol (:mod:`hw.protocol`) on streams ``i``/``o``.

This is the sequential first version: one chunk runs at a time (see docs/accelerator.md
for the pipelined schedule that comes next).
"""
from amaranth.hdl import Module, Mux, Shape, Signal
from amaranth.lib import data, memory, stream, wiring
from amaranth.lib.wiring import In, Out

from hw import protocol
from hw.config import KIND_OF_CHUNK
from hw.engine import LayerEngine, descriptor_layout
from hw.host import HostBridge
from hw.pe import weight_layout

__all__ = ["Accelerator", "program_layout", "memory_bits", "CHUNK_ID"]

CHUNK_ID = {name: i for i, name in enumerate(KIND_OF_CHUNK)}


def program_layout(cfg):
    """One program word: the chunk that runs it, the end marker and the descriptor."""
    return data.StructLayout({
        "chunk": 2, "last": 1,
        "desc": descriptor_layout(cfg.act_addr_bits, cfg.w_addr_bits, cfg.p_addr_bits),
    })


def memory_bits(cfg):
    """Bits of one word of each memory, in :data:`hw.protocol.MEMORIES` order (0: absent)."""
    bits = {"act": 8 * cfg.word_bytes, "param": cfg.m_width + cfg.rq_width,
            "prog": program_layout(cfg).size}
    for name, kind, c in cfg.chunks:
        bits[name] = c.lanes * Shape.cast(weight_layout(kind, c.w_width)).width
    return [bits.get(name, 0) for name in protocol.MEMORIES]


class Accelerator(wiring.Component):
    """Ports: ``i``/``o`` host byte streams, ``busy`` (a program is running),
    ``chunk_busy`` (one bit per chunk, in :data:`CHUNK_ID` order: for LEDs and traces)."""

    def __init__(self, cfg):
        self.cfg = cfg
        self.engines = {
            name: LayerEngine(kind, c.lanes, word_bytes=cfg.word_bytes, w_width=c.w_width,
                              acc_width=c.acc_width, m_width=cfg.m_width,
                              rq_width=cfg.rq_width, addr_bits=cfg.act_addr_bits,
                              w_addr_bits=cfg.w_addr_bits, p_addr_bits=cfg.p_addr_bits)
            for name, kind, c in cfg.chunks}
        some = next(iter(self.engines.values())).signature.members
        self.act_shape = some["act_rd"].signature.members["data"].shape
        self.param_shape = some["p_rd"].signature.members["data"].shape
        self.prog_shape = program_layout(cfg)
        self.w_shapes = {name: e.signature.members["w_rd"].signature.members["data"].shape
                         for name, e in self.engines.items()}
        self.mem_bits = memory_bits(cfg)
        self.host = HostBridge(self.mem_bits, 8 * cfg.word_bytes)
        super().__init__({
            "i": In(stream.Signature(8)),
            "o": Out(stream.Signature(8)),
            "busy": Out(1),
            "chunk_busy": Out(len(CHUNK_ID)),
        })

    def elaborate(self, platform):
        m = Module()
        cfg = self.cfg
        m.submodules.host = host = self.host
        wiring.connect(m, wiring.flipped(self.i), host.i)
        wiring.connect(m, host.o, wiring.flipped(self.o))
        for name, engine in self.engines.items():
            m.submodules[name] = engine
            m.d.comb += self.chunk_busy[CHUNK_ID[name]].eq(engine.busy)

        act = m.submodules.act = memory.Memory(
            shape=self.act_shape, depth=cfg.act_bytes // cfg.word_bytes, init=[])
        params = m.submodules.params = memory.Memory(shape=self.param_shape, depth=cfg.p_words,
                                                     init=[])
        prog = m.submodules.prog = memory.Memory(shape=self.prog_shape, depth=cfg.prog_words,
                                                 init=[])
        wmems = {name: memory.Memory(shape=self.w_shapes[name], depth=cfg.chunk(name).w_words,
                                     init=[]) for name in self.engines}
        for name, mem in wmems.items():
            m.submodules[f"w_{name}"] = mem

        # ---- controller ---------------------------------------------------------------
        pc = Signal(range(cfg.prog_words))
        cur = Signal(self.prog_shape)
        cycles = Signal(32)
        prog_rd = prog.read_port()
        m.d.comb += prog_rd.addr.eq(pc)
        running = Signal()
        m.d.comb += [self.busy.eq(running), host.cycles.eq(cycles)]
        with m.If(running):
            m.d.sync += cycles.eq(cycles + 1)
        engine_busy = Signal()
        with m.Switch(cur.chunk):
            for name, engine in self.engines.items():
                with m.Case(CHUNK_ID[name]):
                    m.d.comb += engine_busy.eq(engine.busy)
        with m.FSM():
            with m.State("IDLE"):
                with m.If(host.run):
                    m.d.sync += [pc.eq(0), cycles.eq(0), running.eq(1)]
                    m.next = "FETCH"
            with m.State("FETCH"):
                m.next = "LOAD"           # program word read (one cycle latency)
            with m.State("LOAD"):
                m.d.sync += cur.eq(prog_rd.data)
                m.next = "START"
            with m.State("START"):
                for name, engine in self.engines.items():
                    m.d.comb += engine.start.eq(cur.chunk == CHUNK_ID[name])
                m.next = "WAIT"
            with m.State("WAIT"):
                with m.If(~engine_busy):
                    with m.If(cur.last):
                        m.d.comb += host.done.eq(1)
                        m.d.sync += running.eq(0)
                        m.next = "IDLE"
                    with m.Else():
                        m.d.sync += pc.eq(pc + 1)
                        m.next = "FETCH"

        # ---- memory ports: the active chunk, else the host ------------------------------
        act_rd, act_res, act_wr = act.read_port(), act.read_port(), act.write_port(granularity=1)
        p_rd, p_wr = params.read_port(), params.write_port()
        for name, engine in self.engines.items():
            m.d.comb += engine.desc.eq(cur.desc)
            w_rd = wmems[name].read_port()
            m.d.comb += [w_rd.addr.eq(engine.w_rd.addr), w_rd.en.eq(engine.w_rd.en),
                         engine.w_rd.data.eq(w_rd.data),
                         engine.act_rd.data.eq(act_rd.data), engine.res_rd.data.eq(act_res.data),
                         engine.p_rd.data.eq(p_rd.data)]
        with m.Switch(cur.chunk):
            for name, engine in self.engines.items():
                with m.Case(CHUNK_ID[name]):
                    m.d.comb += [
                        act_rd.addr.eq(engine.act_rd.addr), act_rd.en.eq(engine.act_rd.en),
                        p_rd.addr.eq(engine.p_rd.addr), p_rd.en.eq(engine.p_rd.en),
                        act_res.addr.eq(Mux(running, engine.res_rd.addr, host.rd_addr)),
                        act_res.en.eq(Mux(running, engine.res_rd.en, host.rd_en)),
                    ]
                    with m.If(running):
                        m.d.comb += [act_wr.addr.eq(engine.act_wr.addr),
                                     act_wr.data.eq(engine.act_wr.data),
                                     act_wr.en.eq(engine.act_wr.en)]
        m.d.comb += host.rd_data.eq(act_res.data)

        host_wr = ~running & host.wr_en
        with m.If(~running):
            m.d.comb += [act_wr.addr.eq(host.wr_addr), act_wr.data.eq(host.wr_data),
                         act_wr.en.eq(Mux(host_wr & (host.wr_mem == protocol.MEM_ID["act"]),
                                          (1 << cfg.word_bytes) - 1, 0))]
        for name, mem in [("param", params), ("prog", prog)] + list(wmems.items()):
            wp = p_wr if mem is params else mem.write_port()
            m.d.comb += [wp.addr.eq(host.wr_addr), wp.data.eq(host.wr_data),
                         wp.en.eq(host_wr & (host.wr_mem == protocol.MEM_ID[name]))]
        return m
