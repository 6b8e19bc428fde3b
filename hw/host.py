"""Host bridge: the byte protocol of :mod:`hw.protocol` over two byte streams.

Decodes commands from ``i``, writes memory words through a simple bus (``wr_*``), reads
activation words (``rd_*``, one cycle latency), starts the program (``run`` with ``run_images``) and
waits for ``done``; replies go out on ``o``. Flow control both ways (``valid``/``ready``).
One byte per cycle at most in each direction.
"""
from amaranth.hdl import Array, Cat, Const, Module, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from hw import protocol

__all__ = ["HostBridge"]


class HostBridge(wiring.Component):
    """``mem_bits``: bits of a word of each memory, in :data:`hw.protocol.MEMORIES` order
    (0 for an absent memory); ``act_bits``: bits of an activation word (readable)."""

    def __init__(self, mem_bits, act_bits):
        if len(mem_bits) != len(protocol.MEMORIES):
            raise ValueError(f"mem_bits needs {len(protocol.MEMORIES)} entries, not "
                             f"{len(mem_bits)}")
        self.mem_bits = list(mem_bits)
        self.act_bytes = protocol.word_bytes(act_bits)
        self.data_bits = 8 * max(protocol.word_bytes(b) for b in mem_bits)
        super().__init__({
            "i": In(stream.Signature(8)),
            "o": Out(stream.Signature(8)),
            "wr_mem": Out(3), "wr_addr": Out(16), "wr_data": Out(self.data_bits), "wr_en": Out(1),
            "rd_addr": Out(16), "rd_en": Out(1), "rd_data": In(act_bits),
            "run": Out(1), "run_images": Out(8), "done": In(1), "cycles": In(32),
        })

    def elaborate(self, platform):
        m = Module()
        byte = self.i.payload
        # ---- transmit shift register: up to 5 bytes queued at once -------------------------
        tx = Signal(40)
        tx_left = Signal(range(6))
        m.d.comb += [self.o.valid.eq(tx_left != 0), self.o.payload.eq(tx[:8])]
        with m.If(self.o.valid & self.o.ready):
            m.d.sync += [tx.eq(tx >> 8), tx_left.eq(tx_left - 1)]
        idle_tx = tx_left == 0

        def send(data, count):
            return [tx.eq(data), tx_left.eq(count)]

        hdr = Signal(40)             # mem, addr, count as received (little-endian)
        hdr_left = Signal(range(6))
        cmd = Signal(8)
        mem = Signal(3)
        addr, count = Signal(16), Signal(16)
        word = Signal(self.data_bits)
        word_idx = Signal(range(self.data_bits // 8 + 1))   # next byte of the word
        nbytes = Array(Const(protocol.word_bytes(b), range(self.data_bits // 8 + 1))
                       for b in self.mem_bits + [0, 0])
        rd_left = Signal(range(self.act_bytes + 1))
        rd_word = Signal(8 * self.act_bytes)

        m.d.comb += [self.wr_mem.eq(mem), self.wr_addr.eq(addr), self.wr_data.eq(word),
                     self.rd_addr.eq(addr)]
        with m.FSM():
            with m.State("CMD"):
                m.d.comb += self.i.ready.eq(idle_tx)
                with m.If(self.i.valid & idle_tx):
                    m.d.sync += cmd.eq(byte)
                    with m.Switch(byte):
                        with m.Case(protocol.PING[0]):
                            m.d.sync += send(int.from_bytes(protocol.MAGIC, "little"), 4)
                        with m.Case(protocol.WRITE[0]):
                            m.d.sync += hdr_left.eq(5)
                            m.next = "HEADER"
                        with m.Case(protocol.READ[0]):
                            m.d.sync += hdr_left.eq(4)
                            m.next = "HEADER"
                        with m.Case(protocol.RUN[0]):
                            m.next = "RUN_COUNT"
                        with m.Default():
                            m.d.sync += send(Cat(Const(protocol.ERROR[0], 8), byte), 2)
            with m.State("HEADER"):
                m.d.comb += self.i.ready.eq(1)
                with m.If(self.i.valid):
                    m.d.sync += [hdr.eq(Cat(hdr[8:], byte)), hdr_left.eq(hdr_left - 1)]
                    with m.If(hdr_left == 1):
                        m.next = "DECODE"
            with m.State("DECODE"):
                with m.If(cmd == protocol.WRITE[0]):
                    m.d.sync += [mem.eq(hdr[:8]), addr.eq(hdr[8:24]), count.eq(hdr[24:40]),
                                 word_idx.eq(0)]
                    m.next = "DATA"
                with m.Else():    # read: the header is 4 bytes, in hdr[8:40]
                    m.d.sync += [mem.eq(0), addr.eq(hdr[8:24]), count.eq(hdr[24:40])]
                    m.next = "READ"
                with m.If(hdr[24:40] == 0):
                    m.next = "FINISH"
            with m.State("DATA"):
                m.d.comb += self.i.ready.eq(1)
                with m.If(self.i.valid):
                    m.d.sync += [word.word_select(word_idx, 8).eq(byte), word_idx.eq(word_idx + 1)]
                    with m.If(word_idx == nbytes[mem] - 1):
                        m.next = "STORE"
            with m.State("STORE"):
                m.d.comb += self.wr_en.eq(1)
                m.d.sync += [addr.eq(addr + 1), count.eq(count - 1), word_idx.eq(0)]
                with m.If(count == 1):
                    m.next = "FINISH"
                with m.Else():
                    m.next = "DATA"
            with m.State("READ"):
                with m.If(idle_tx & (rd_left == 0)):
                    m.d.comb += self.rd_en.eq(1)
                    m.next = "READ_WAIT"
            with m.State("READ_WAIT"):
                m.d.sync += [rd_word.eq(self.rd_data), rd_left.eq(self.act_bytes),
                             addr.eq(addr + 1), count.eq(count - 1)]
                m.next = "READ_SEND"
            with m.State("READ_SEND"):
                with m.If(idle_tx):
                    with m.If(rd_left == 0):
                        with m.If(count == 0):
                            m.next = "CMD"
                        with m.Else():
                            m.next = "READ"
                    with m.Else():
                        m.d.sync += [send(rd_word[:8], 1), rd_word.eq(rd_word >> 8),
                                     rd_left.eq(rd_left - 1)]
            with m.State("RUN_COUNT"):
                m.d.comb += self.i.ready.eq(1)
                with m.If(self.i.valid):
                    m.d.comb += [self.run.eq(1), self.run_images.eq(byte)]
                    m.next = "RUNNING"
            with m.State("RUNNING"):
                with m.If(self.done):
                    m.d.sync += send(Cat(Const(protocol.DONE[0], 8), self.cycles), 5)
                    m.next = "CMD"
            with m.State("FINISH"):
                with m.If(cmd == protocol.WRITE[0]):
                    m.d.sync += send(protocol.ACK[0], 1)
                m.next = "CMD"
        return m
