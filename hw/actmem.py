"""One image slot's activation memory, as a layer engine sees it.

Three ports, all one word of ``word_bytes`` signed bytes, reads one cycle from address to
data: ``rd`` (operands), ``res`` (residuals; also the host's reads) and ``wr`` (byte
writes). Two organisations (``AccelConfig.act_split``):

- **dual** (``act_split == 0``): one memory of ``act_bytes`` with two read ports and the
  write port. Block RAM keeps such a memory twice (one copy per read port).
- **split** (``act_split == n``): ``n`` single-port memories of ``act_bytes`` each, from
  byte ``b * stride`` (``stride``: ``act_bytes`` to the next power of two), and, if
  ``res_bytes``, a memory with one read and one write port from byte ``n * stride``. Each
  access goes to the memory its address falls in. A single-port memory (iCE40 SPRAM) does
  one access per cycle: a write first, then a residual read (``res.en``), then an
operand read. The
  compiler places tensors so that no layer reads and writes one single-port memory, nor
  reads one memory twice (``sw.compile``), so only padding taps (whose data the engine
  drops) ever lose.
"""
from amaranth.hdl import Cat, Module, Mux, Signal, signed
from amaranth.lib import data, memory, wiring
from amaranth.lib.wiring import Out

__all__ = ["ActivationMemory", "PORTS", "regions", "NO_RW_CHECK"]

#: Yosys attribute: what a read returns while the same word is written is left undefined.
#: No tensor is read and written at once (the compiler places simultaneously live tensors
#: apart, on whole words), so no read whose data is used meets a write to its word; without
#: it Yosys emulates read-first behaviour around an iCE40 block RAM in flip-flops and LUTs
#: (about 150 LCs for the residual memory of the UP5K organisation).
NO_RW_CHECK = {"no_rw_check": True}


#: accesses one memory takes in a cycle: (reads, writes, reads + writes)
PORTS = {"2r1w": (2, 1, 3), "1rw": (1, 1, 1), "1r1w": (1, 1, 2)}


def regions(cfg):
    """``(first byte, bytes, ports)`` of each memory of a slot, in address order; ports is
    a key of :data:`PORTS`."""
    if not cfg.act_split:
        return [(0, cfg.act_bytes, "2r1w")]
    stride = 1 << (cfg.act_bytes - 1).bit_length()
    out = [(b * stride, cfg.act_bytes, "1rw") for b in range(cfg.act_split)]
    if cfg.res_bytes:
        out.append((cfg.act_split * stride, cfg.res_bytes, "1r1w"))
    return out


class ActivationMemory(wiring.Component):
    """A slot's activations for the configuration ``cfg`` (``word_bytes``, ``act_bytes``,
    ``act_split``, ``res_bytes``); word addresses of ``addr_width`` bits."""

    def __init__(self, cfg, addr_width):
        self.cfg = cfg
        self.word = data.ArrayLayout(signed(8), cfg.word_bytes)
        rd = memory.ReadPort.Signature(addr_width=addr_width, shape=self.word)
        super().__init__({
            "rd": Out(rd), "res": Out(rd),
            "wr": Out(memory.WritePort.Signature(addr_width=addr_width, shape=self.word,
                                                 granularity=1)),
        })

    def elaborate(self, platform):
        m = Module()
        cfg = self.cfg
        V = cfg.word_bytes
        if not cfg.act_split:
            mem = m.submodules.mem = memory.Memory(shape=self.word, depth=cfg.act_bytes // V,
                                                   init=[], attrs=NO_RW_CHECK)
            for port, ours in ((mem.read_port(), self.rd), (mem.read_port(), self.res)):
                m.d.comb += [port.addr.eq(ours.addr), port.en.eq(ours.en),
                             ours.data.eq(port.data)]
            wr = mem.write_port(granularity=1)
            m.d.comb += [wr.addr.eq(self.wr.addr), wr.data.eq(self.wr.data),
                         wr.en.eq(self.wr.en)]
            return m

        def part(addr):
            return addr[stride_bits:]

        stride_bits = (cfg.act_bytes // V - 1).bit_length()
        mems = regions(cfg)
        rd_part, res_part = Signal(range(len(mems))), Signal(range(len(mems)))
        m.d.sync += [rd_part.eq(part(self.rd.addr)), res_part.eq(part(self.res.addr))]
        outs = []                                     # each memory's read data
        for i, (_, size, ports) in enumerate(mems):
            mem = m.submodules[f"part{i}"] = memory.Memory(shape=self.word, depth=size // V,
                                                           init=[], attrs=NO_RW_CHECK)
            writing = (part(self.wr.addr) == i) & self.wr.en.any()
            read_addr = Mux((part(self.res.addr) == i) & self.res.en, self.res.addr,
                            self.rd.addr)             # the residual read first
            wr, rd = mem.write_port(granularity=1), mem.read_port()
            m.d.comb += [wr.data.eq(self.wr.data), wr.en.eq(Mux(writing, self.wr.en, 0))]
            if ports == "1rw":   # one port: a write, else a read
                addr = Signal((size // V - 1).bit_length(), name=f"part{i}_addr")
                m.d.comb += [addr.eq(Mux(writing, self.wr.addr, read_addr)),
                             wr.addr.eq(addr), rd.addr.eq(addr), rd.en.eq(~writing)]
            else:                # a read port and the write port
                m.d.comb += [wr.addr.eq(self.wr.addr), rd.addr.eq(read_addr), rd.en.eq(1)]
            outs.append(rd.data)
        for ours, sel in ((self.rd, rd_part), (self.res, res_part)):
            with m.Switch(sel):
                for i, out in enumerate(outs):
                    with m.Case(i):
                        m.d.comb += ours.data.eq(out)
        return m
