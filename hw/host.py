"""Host bridge: the byte protocol of :mod:`hw.protocol` over two byte streams.

Decodes commands from ``i``, writes memory words through a simple bus (``wr_*``), reads
activation words (``rd_*``: data :attr:`HostBridge.READ_LATENCY` cycles after ``rd_en``)
and replies on ``o``; flow control both ways, at most one byte per cycle each way. An input write (``I``) and a run's inputs carry
only the low ``k`` bytes of each activation word; the bridge fills the rest of the word
with zeros (``k = 1``: one byte per pixel of a one-channel image, the word the byte's
value). During a run it serves the image slots in image order: when image ``next_image``
is finished (``out_ready``) it sends ``O`` + that image's logits from its slot, takes the
input of image ``next_image + slots`` from the host into the same slot and pulses
``refill``; after the last image (and ``done``) it sends ``D`` + cycles and pulses
``finish``. A word is written one cycle after its last byte arrives (``wr_en`` for one
cycle, then the next byte is taken). A bridge built with ``spread`` also takes ``k`` with
:data:`hw.protocol.SPREAD` set: each word is then its one byte copied into every byte.
"""
from amaranth.hdl import Array, Cat, Const, Module, Mux, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from hw import protocol

__all__ = ["HostBridge"]


class HostBridge(wiring.Component):
    """``mem_bits``: bits of a word of each memory, in :data:`hw.protocol.MEMORIES` order
    (0 for an absent memory); ``act_bits``: bits of an activation word; ``slots`` (a power
    of two) image slots of ``2**slot_shift`` activation words each; ``spread``: inputs
    may be spread (:data:`hw.protocol.SPREAD`)."""

    #: cycles from ``rd_en`` to ``rd_data``: the block RAM's, and a register per bank in the
    #: accelerator (a far block RAM's depth mux drives only a flip-flop, not the slot mux
    #: and the read-word shifter). A source with less latency holds its data (read enable).
    READ_LATENCY = 2

    def __init__(self, mem_bits, act_bits, slots=1, slot_shift=0, spread=False):
        if len(mem_bits) != len(protocol.MEMORIES):
            raise ValueError(f"mem_bits needs {len(protocol.MEMORIES)} entries, not "
                             f"{len(mem_bits)}")
        if slots < 1 or slots & (slots - 1):
            raise ValueError(f"slots must be a power of two, not {slots}")
        self.mem_bits = list(mem_bits)
        self.slots, self.slot_shift, self.spread = slots, slot_shift, spread
        self.act_bytes = protocol.word_bytes(act_bits)
        self.data_bits = 8 * max(protocol.word_bytes(b) for b in mem_bits)
        super().__init__({
            "i": In(stream.Signature(8)),
            "o": Out(stream.Signature(8)),
            "wr_mem": Out(3), "wr_addr": Out(16), "wr_data": Out(self.data_bits), "wr_en": Out(1),
            "rd_addr": Out(16), "rd_en": Out(1), "rd_data": In(act_bits),
            "run": Out(1), "run_images": Out(16), "next_image": Out(16),
            "out_ready": In(1), "refill": Out(1), "done": In(1), "finish": Out(1),
            "cycles": In(32),
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

        hdr = Signal(88)             # command arguments as received (little-endian)
        hdr_left = Signal(range(12))
        cmd = Signal(8)
        mem = Signal(3)
        addr, count = Signal(16), Signal(16)
        word = Signal(self.data_bits)
        word_idx = Signal(range(self.data_bits // 8 + 1))   # next byte of the word
        nbytes = Array(Const(protocol.word_bytes(b), range(self.data_bits // 8 + 1))
                       for b in self.mem_bits + [0, 0])
        wire_bytes = Signal.like(word_idx)   # bytes per word on the wire (the rest are 0)

        spreading = Signal()         # input words spread from their one byte
        flag = protocol.SPREAD.bit_length() - 1

        def input_bytes(k):
            """The ``k`` of an input write or run, 0 or past a word meaning a whole word
            (with ``spread``, :data:`~hw.protocol.SPREAD` set spreads a one-byte word)."""
            if self.spread:
                k = Mux(k[flag], 1, k)
            return Mux((k == 0) | (k > self.act_bytes), self.act_bytes, k)

        rd_left = Signal(range(self.act_bytes + 1))
        rd_word = Signal(8 * self.act_bytes)
        rd_pipe = Signal(self.READ_LATENCY)     # rd_en, delayed: the data is in at the top
        m.d.sync += rd_pipe.eq(Cat(self.rd_en, rd_pipe[:-1]))
        # run arguments: images, input and output tensors (word offsets within a slot); they
        # stay in ``hdr`` while the run lasts (no command is decoded before it ends)
        images, in_addr, in_words, out_addr, out_words = (hdr[i:i + 16]
                                                          for i in range(0, 80, 16))
        next_image = self.next_image
        in_run = Signal()
        slot_base = Signal(16)
        m.d.comb += slot_base.eq((next_image & (self.slots - 1)) << self.slot_shift)

        m.d.comb += [self.wr_mem.eq(mem), self.wr_addr.eq(addr), self.wr_data.eq(word),
                     self.rd_addr.eq(addr), self.run_images.eq(images)]
        with m.FSM():
            with m.State("CMD"):
                m.d.comb += self.i.ready.eq(idle_tx)
                with m.If(self.i.valid & idle_tx):
                    m.d.sync += cmd.eq(byte)
                    with m.Switch(byte):
                        with m.Case(protocol.PING[0]):
                            m.d.sync += send(int.from_bytes(protocol.MAGIC, "little"), 4)
                        with m.Case(protocol.WRITE[0], protocol.INPUT[0]):
                            m.d.sync += hdr_left.eq(5)
                            m.next = "HEADER"
                        with m.Case(protocol.READ[0]):
                            m.d.sync += hdr_left.eq(4)
                            m.next = "HEADER"
                        with m.Case(protocol.RUN[0]):
                            m.d.sync += hdr_left.eq(11)
                            m.next = "HEADER"
                        with m.Default():
                            m.d.sync += send(Cat(Const(protocol.ERROR[0], 8), byte), 2)
            with m.State("HEADER"):
                m.d.comb += self.i.ready.eq(1)
                with m.If(self.i.valid):
                    m.d.sync += [hdr.eq(Cat(hdr[8:], byte)), hdr_left.eq(hdr_left - 1)]
                    with m.If(hdr_left == 1):
                        m.next = "DECODE"
            with m.State("DECODE"):   # the arguments end at the top of hdr
                with m.Switch(cmd):
                    with m.Case(protocol.WRITE[0], protocol.INPUT[0]):
                        m.d.sync += [addr.eq(hdr[56:72]), count.eq(hdr[72:88]),
                                     word_idx.eq(0), in_run.eq(0)]
                        with m.If(cmd == protocol.WRITE[0]):
                            m.d.sync += [mem.eq(hdr[48:51]), wire_bytes.eq(nbytes[hdr[48:51]])]
                            if self.spread:
                                m.d.sync += spreading.eq(0)
                        with m.Else():
                            m.d.sync += [mem.eq(protocol.MEM_ID["act"]),
                                         wire_bytes.eq(input_bytes(hdr[48:56]))]
                            if self.spread:
                                m.d.sync += spreading.eq(hdr[48 + flag])
                        m.next = "DATA"
                        with m.If(hdr[72:88] == 0):
                            m.next = "FINISH"
                    with m.Case(protocol.READ[0]):
                        m.d.sync += [mem.eq(0), addr.eq(hdr[56:72]), count.eq(hdr[72:88]),
                                     in_run.eq(0)]
                        m.next = "READ"
                        with m.If(hdr[72:88] == 0):
                            m.next = "CMD"
                    with m.Default():     # run
                        m.d.sync += [wire_bytes.eq(input_bytes(hdr[80:88])),
                                     next_image.eq(0), in_run.eq(1)]
                        if self.spread:
                            m.d.sync += spreading.eq(hdr[80 + flag])
                        m.d.comb += self.run.eq(1)
                        m.next = "RUN_WAIT"
            with m.State("DATA"):
                m.d.comb += self.i.ready.eq(1)
                with m.If(self.i.valid):
                    m.d.sync += [word.word_select(word_idx, 8).eq(byte), word_idx.eq(word_idx + 1)]
                    if self.spread:
                        with m.If(spreading):
                            m.d.sync += word[:8 * self.act_bytes].eq(byte.replicate(self.act_bytes))
                    with m.If(word_idx == wire_bytes - 1):
                        m.next = "STORE"
            with m.State("STORE"):
                m.d.comb += self.wr_en.eq(1)
                m.d.sync += [addr.eq(addr + 1), count.eq(count - 1), word_idx.eq(0), word.eq(0)]
                with m.If(count != 1):
                    m.next = "DATA"
                with m.Elif(in_run):
                    m.d.comb += self.refill.eq(1)
                    m.d.sync += next_image.eq(next_image + 1)
                    m.next = "RUN_WAIT"
                with m.Else():
                    m.next = "FINISH"
            with m.State("READ"):
                with m.If(idle_tx & (rd_left == 0)):
                    m.d.comb += self.rd_en.eq(1)
                    m.next = "READ_WAIT"
            with m.State("READ_WAIT"):
                with m.If(rd_pipe[-1]):
                    m.d.sync += [rd_word.eq(self.rd_data), rd_left.eq(self.act_bytes),
                                 addr.eq(addr + 1), count.eq(count - 1)]
                    m.next = "READ_SEND"
            with m.State("READ_SEND"):
                with m.If(idle_tx):
                    with m.If(rd_left != 0):
                        m.d.sync += [send(rd_word[:8], 1), rd_word.eq(rd_word >> 8),
                                     rd_left.eq(rd_left - 1)]
                    with m.Elif(count != 0):
                        m.next = "READ"
                    with m.Elif(in_run):
                        m.next = "RUN_INPUT"
                    with m.Else():
                        m.next = "CMD"
            with m.State("RUN_WAIT"):
                with m.If(next_image == images):
                    with m.If(self.done & idle_tx):
                        m.d.comb += self.finish.eq(1)
                        m.d.sync += [send(Cat(Const(protocol.DONE[0], 8), self.cycles), 5),
                                     in_run.eq(0)]
                        m.next = "CMD"
                with m.Elif(self.out_ready & idle_tx):
                    m.d.sync += [send(protocol.OUTPUT[0], 1), mem.eq(0),
                                 addr.eq(slot_base | out_addr), count.eq(out_words)]
                    m.next = "READ"
            with m.State("RUN_INPUT"):      # the next image for this slot, if any
                with m.If(next_image + self.slots < images):
                    m.d.sync += [mem.eq(protocol.MEM_ID["act"]), addr.eq(slot_base | in_addr),
                                 count.eq(in_words), word_idx.eq(0)]
                    m.next = "DATA"
                with m.Else():
                    m.d.sync += next_image.eq(next_image + 1)
                    m.next = "RUN_WAIT"
            with m.State("FINISH"):
                m.d.sync += send(protocol.ACK[0], 1)
                m.next = "CMD"
        return m
