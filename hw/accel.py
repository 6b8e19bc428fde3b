"""The accelerator top: chunks (layer engines), memories, controller and host bridge.

Built from an :class:`hw.config.AccelConfig`. Memories (``amaranth.lib.memory``, so they
infer block RAM): the activation memory (``act_bytes``, words of ``word_bytes``), the
requantisation parameters, the program (layer descriptors) and one weight memory per
chunk. Everything is loaded and read through the host byte protocol (:mod:`hw.protocol`)
on streams ``i``/``o``.

Images in flight: a run streams ``n`` images through ``slots`` activation banks (image
``i`` in bank ``i % slots``; the host bridge refills a bank when its image is done).
Each chunk has its own controller walking the program once per iteration ``k``: an entry
of its chunk runs image ``k - delta`` as soon as that image's previous layer is done
(per-image progress counters). The compiler's ``delta`` rises along the program, so a
chunk starts the early layers of a later image while other chunks finish earlier images;
every dependency points to an earlier (image + delta, layer), so the schedule cannot
deadlock. Only one chunk works on an image at a time, so each bank has one user.

With ``shared_engine`` one engine holds every chunk's PE row and one weight memory holds
every chunk's weights (a region of ``w_words`` per chunk, ``cfg.w_bases``); its one
controller runs every entry, layers one at a time (program deltas are all 0).
"""
from amaranth.hdl import Array, Cat, Module, Mux, Shape, Signal, Value, signed
from amaranth.lib import data, memory, stream, wiring
from amaranth.lib.wiring import In, Out

from hw import protocol
from hw.config import KIND_OF_CHUNK
from hw.actmem import NO_RW_CHECK, ActivationMemory
from hw.engine import LayerEngine, RowSpec, descriptor_layout
from hw.host import HostBridge
from hw.pe import weight_layout

__all__ = ["Accelerator", "program_layout", "prog_beats", "memory_bits", "CHUNK_ID"]

CHUNK_ID = {name: i for i, name in enumerate(KIND_OF_CHUNK)}


def program_layout(cfg):
    """One program word: the chunk that runs it, the end marker and the descriptor."""
    return data.StructLayout({
        "chunk": 2, "last": 1,
        "delta": 3,          # the chunk runs this layer for image (iteration - delta)
        "desc": descriptor_layout(cfg.act_addr_bits, cfg.w_addr_bits, cfg.p_base_bits,
                                  cin_tile=cfg.cin_tile, pixels=cfg.pixels),
    })


def prog_beats(cfg):
    """Program memory words per descriptor (``cfg.prog_width``: 1 when 0)."""
    size = program_layout(cfg).size
    return -(-size // cfg.prog_width) if cfg.prog_width else 1


def memory_bits(cfg):
    """Bits of one word of each memory, in :data:`hw.protocol.MEMORIES` order (0: absent)."""
    bits = {"act": 8 * cfg.word_bytes,
            "param": 0 if cfg.params_in_act else cfg.drain * (cfg.m_width + cfg.rq_width),
            "prog": cfg.prog_width or program_layout(cfg).size}
    widths = {name: c.lanes * Shape.cast(weight_layout(kind, c.w_width)).width
              for name, kind, c in cfg.chunks}
    for name, width in widths.items():
        bits[name] = max(widths.values()) if cfg.shared_engine else width
    return [bits.get(name, 0) for name in protocol.MEMORIES]


class Accelerator(wiring.Component):
    """Ports: ``i``/``o`` host byte streams, ``busy`` (a program is running),
    ``chunk_busy`` (one bit per chunk, in :data:`CHUNK_ID` order: for LEDs and traces)."""

    def __init__(self, cfg):
        self.cfg = cfg
        rows = {name: RowSpec(kind, c.lanes, c.w_width, c.acc_width)
                for name, kind, c in cfg.chunks}
        #: engine name -> the chunks whose layers it runs (one each, or all: shared)
        self.engine_chunks = ({"engine": list(rows)} if cfg.shared_engine
                              else {name: [name] for name in rows})
        self.engines = {
            ename: LayerEngine([rows[name] for name in names], word_bytes=cfg.word_bytes,
                               m_width=cfg.m_width, rq_width=cfg.rq_width,
                               addr_bits=cfg.act_addr_bits, w_addr_bits=cfg.w_addr_bits,
                               p_addr_bits=cfg.p_addr_bits, params_in_act=cfg.params_in_act,
                               drain=cfg.drain, cin_tile=cfg.cin_tile, pixels=cfg.pixels)
            for ename, names in self.engine_chunks.items()}
        some = next(iter(self.engines.values())).signature.members
        self.act_shape = some["act_rd"].signature.members["data"].shape
        self.param_shape = some["p_rd"].signature.members["data"].shape
        self.prog_shape = program_layout(cfg)
        self.w_shapes = {name: e.signature.members["w_rd"].signature.members["data"].shape
                         for name, e in self.engines.items()}
        self.mem_bits = memory_bits(cfg)
        self.host = HostBridge(self.mem_bits, 8 * cfg.word_bytes, cfg.slots,
                               (cfg.slot_words - 1).bit_length(), spread=cfg.spread_input)
        super().__init__({
            "i": In(stream.Signature(8)),
            "o": Out(stream.Signature(8)),
            "busy": Out(1),
            "chunk_busy": Out(len(CHUNK_ID)),
        })

    def elaborate(self, platform):
        m = Module()
        cfg = self.cfg
        S = cfg.slots
        m.submodules.host = host = self.host
        wiring.connect(m, wiring.flipped(self.i), host.i)
        wiring.connect(m, host.o, wiring.flipped(self.o))
        for name, engine in self.engines.items():
            m.submodules[name] = engine

        act_words_bits = cfg.act_addr_bits - (cfg.word_bytes.bit_length() - 1)
        banks = []
        for s in range(S):
            banks.append(ActivationMemory(cfg, act_words_bits))
            m.submodules[f"act{s}"] = banks[-1]
        params = m.submodules.params = memory.Memory(shape=self.param_shape,
                                                     depth=cfg.p_words // cfg.drain,
                                                     init=[], attrs=NO_RW_CHECK)
        prog = m.submodules.prog = memory.Memory(shape=cfg.prog_width or self.prog_shape,
                                                 depth=cfg.prog_words * prog_beats(cfg),
                                                 init=[], attrs=NO_RW_CHECK)
        wmems = {name: memory.Memory(shape=self.w_shapes[name], init=[],
                                     depth=sum(cfg.chunk(c).w_words for c in chunks))
                 for name, chunks in self.engine_chunks.items()}
        for name, mem in wmems.items():
            m.submodules[f"w_{name}"] = mem

        # ---- run state: per slot, its image, layers done, finished ------------------------
        running, cycles = Signal(), Signal(32)
        images = host.run_images
        slot_img = [Signal(16, name=f"slot{s}_image") for s in range(S)]
        progress = [Signal(range(cfg.prog_words + 1), name=f"slot{s}_progress") for s in range(S)]
        img_done = [Signal(name=f"slot{s}_done") for s in range(S)]
        m.d.comb += [self.busy.eq(running), host.cycles.eq(cycles)]
        with m.If(running):
            m.d.sync += cycles.eq(cycles + 1)
        serve = host.next_image[:max(1, (S - 1).bit_length())] if S > 1 else 0
        m.d.comb += host.out_ready.eq(Array(img_done)[serve]
                                      & (Array(slot_img)[serve] == host.next_image))
        with m.If(host.run):
            m.d.sync += [running.eq(1), cycles.eq(0)]
            m.d.sync += [t.eq(s) for s, t in enumerate(slot_img)]
            m.d.sync += [p.eq(0) for p in progress] + [d.eq(0) for d in img_done]
        with m.If(host.refill):
            for s in range(S):
                with m.If(serve == s):
                    m.d.sync += [slot_img[s].eq(slot_img[s] + S), progress[s].eq(0),
                                 img_done[s].eq(0)]
        with m.If(host.finish):
            m.d.sync += running.eq(0)

        # ---- one controller per chunk: walk the program, run own layers in order ----------
        finished, slot_of = {}, {}
        for name, engine in self.engines.items():
            finished[name], slot_of[name] = self._chunk_controller(
                m, name, engine, prog.read_port(), running, images, slot_img, progress,
                img_done)
        m.d.comb += host.done.eq(Cat(*finished.values()).all())

        # ---- memory ports: each bank to the chunk working on its image, else the host -----
        slot_bits = (cfg.slot_words - 1).bit_length()    # slot s: host words s << slot_bits
        host_bank = host.wr_addr[slot_bits:] if S > 1 else 0
        host_rd_bank = host.rd_addr[slot_bits:] if S > 1 else 0
        rd_data = []
        for s, bank in enumerate(banks):
            rd, res, wr = bank.rd, bank.res, self._bank_write_port(m, bank, s)
            rd_data.append((rd.data, res.data))
            # Owner flags are registered (from the start pulse on), so a bank's port muxes
            # select from flip-flops; a flag outlives its layer by one idle cycle.
            engine_on_bank = Signal(name=f"act{s}_engine")
            for name, engine in self.engines.items():
                owner = Signal(name=f"act{s}_{name}")
                m.d.sync += owner.eq(running & (engine.start | engine.busy)
                                     & (slot_of[name] == s))
                with m.If(owner):
                    m.d.comb += [
                        engine_on_bank.eq(1),
                        rd.addr.eq(engine.act_rd.addr), rd.en.eq(engine.act_rd.en),
                        res.addr.eq(engine.res_rd.addr), res.en.eq(engine.res_rd.en),
                        wr.addr.eq(engine.act_wr.addr), wr.data.eq(engine.act_wr.data),
                        wr.en.eq(engine.act_wr.en)]
            with m.If(~engine_on_bank):    # the host: idle banks, even during a run
                m.d.comb += [
                    res.addr.eq(host.rd_addr), res.en.eq(host.rd_en & (host_rd_bank == s)),
                    wr.addr.eq(host.wr_addr), wr.data.eq(host.wr_data),
                    wr.en.eq(Mux(host.wr_en & (host.wr_mem == protocol.MEM_ID["act"])
                                 & (host_bank == s), (1 << cfg.word_bytes) - 1, 0))]
        # the host's reads: each bank's data registered as it arrives, then the slot's
        # (HostBridge.READ_LATENCY: the address's bank two cycles on)
        host_slot = [Signal(range(S), name=f"host_slot{i}") for i in range(2)]
        m.d.sync += [host_slot[0].eq(host_rd_bank), host_slot[1].eq(host_slot[0])]
        host_res = [Signal.like(res, name=f"act{s}_host_rd") for s, (_, res) in enumerate(rd_data)]
        m.d.sync += [q.eq(res) for q, (_, res) in zip(host_res, rd_data)]
        m.d.comb += host.rd_data.eq(Array(host_res)[host_slot[1]])
        for name, engine in self.engines.items():
            p_rd = params.read_port()
            m.d.comb += [
                engine.w_rd.data.eq(self._single_port(m, wmems[name], engine.w_rd.addr, running,
                                                      self.engine_chunks[name], f"w_{name}")),
                p_rd.addr.eq(engine.p_rd.addr), p_rd.en.eq(engine.p_rd.en),
                engine.p_rd.data.eq(p_rd.data),
                engine.act_rd.data.eq(Array(rd for rd, _ in rd_data)[slot_of[name]]),
                engine.res_rd.data.eq(Array(res for _, res in rd_data)[slot_of[name]]),
            ]

        if cfg.params_in_act:    # the engine copies each layer's parameters in
            (engine,) = self.engines.values()
            wp = params.write_port()
            m.d.comb += [wp.addr.eq(engine.p_wr.addr), wp.data.eq(engine.p_wr.data),
                         wp.en.eq(engine.p_wr.en)]
        else:
            self._host_write(m, params, ["param"], running, "params")
        self._host_write(m, prog, ["prog"], running, "prog")
        return m

    @property
    def _write_registers(self):
        """Whether memory write ports get a register next to the memory: per-chunk
        organisations (many block RAMs spread over the die, so a register's far wires
        would otherwise follow mux logic or the host's registers); not the shared engine
        (small FPGAs, logic-bound, few memories)."""
        return not self.cfg.shared_engine

    def _bank_write_port(self, m, bank, s):
        """The write port the bank muxes drive, registered next to the bank when
        :attr:`_write_registers`: a write lands a cycle later, which no reader sees (a
        tensor is read only by a later layer, which starts several cycles after the
        writer's last byte; the host reads logits only after ``O``)."""
        if not self._write_registers:
            return bank.wr
        wr = bank.wr.signature.create(path=(f"act{s}_wr",))
        m.d.sync += [bank.wr.addr.eq(wr.addr), bank.wr.data.eq(wr.data), bank.wr.en.eq(wr.en)]
        return wr

    def _host_side(self, m, mem, names, label):
        """The host's ``(address, data, enable)`` for ``mem`` (protocol memories ``names``),
        a registered copy per memory when :attr:`_write_registers` (the host writes these
        memories only between runs, so a cycle later changes nothing)."""
        host = self.host
        en = host.wr_en & Cat(host.wr_mem == protocol.MEM_ID[n] for n in names).any()
        if not self._write_registers:
            return host.wr_addr, host.wr_data, en
        width = Shape.cast(mem.shape).width               # the bits this memory keeps
        addr = Signal.like(host.wr_addr, name=f"{label}_host_addr")
        data = Signal(width, name=f"{label}_host_data")
        en_q = Signal(name=f"{label}_host_en")
        m.d.sync += [addr.eq(host.wr_addr), data.eq(host.wr_data[:width]), en_q.eq(en)]
        return addr, data, en_q

    def _host_write(self, m, mem, names, running, label):
        """The host's write port on ``mem`` (protocol memories ``names``), between runs
        (``label`` names its signals)."""
        wp = mem.write_port()
        addr, data, en = self._host_side(m, mem, names, label)
        m.d.comb += [wp.addr.eq(addr), wp.data.eq(data), wp.en.eq(~running & en)]
        return wp

    def _single_port(self, m, mem, addr, running, names, label):
        """One read/write port on ``mem`` (a weight memory): ``addr`` reads while a program
        runs, the host writes between runs. A single-port memory is what iCE40 SPRAM
        offers (its reads are disabled during writes). Returns the read data."""
        h_addr, h_data, h_en = self._host_side(m, mem, names, label)
        shared = Signal.like(addr, name=f"{label}_addr")
        wp, rd = mem.write_port(), mem.read_port()
        m.d.comb += [shared.eq(Mux(running, addr, h_addr)),
                     wp.addr.eq(shared), wp.data.eq(h_data), wp.en.eq(~running & h_en),
                     rd.addr.eq(shared), rd.en.eq(~wp.en)]
        return rd.data

    def _chunk_controller(self, m, name, engine, prog_rd, running, images, slot_img, progress,
                          img_done):
        """Walk the program once per iteration ``k``; entry ``pc`` of this engine's chunks
        runs image ``k - delta`` once that image is in its slot with layer ``pc - 1`` done.
        Drives the ``chunk_busy`` bits of its chunks. A descriptor takes ``prog_beats``
        program words (read one per cycle, the first at the bottom). Returns (finished,
        slot)."""
        cfg = self.cfg
        S, B = cfg.slots, prog_beats(cfg)
        pc = Signal(range(cfg.prog_words), name=f"{name}_pc")
        pa = Signal(range(cfg.prog_words * B + 1), name=f"{name}_pa")   # next word to read
        beat = Signal(range(B), name=f"{name}_beat")
        k = Signal(17, name=f"{name}_k")
        # the current entry; with several words per descriptor they shift in from the top
        # (the engine is idle while its controller loads), so the register is whole words
        size = self.prog_shape.size
        raw = Signal(B * cfg.prog_width if B > 1 else size, name=f"{name}_cur")
        cur = self.prog_shape(raw[:size])
        img = Signal(signed(18), name=f"{name}_img")
        slot = Signal(range(S), name=f"{name}_slot")
        finished = Signal(name=f"{name}_finished")
        shifted = Cat(raw[cfg.prog_width:], prog_rd.data) if B > 1 else Value.cast(prog_rd.data)
        loaded = self.prog_shape(shifted[:size])     # the entry once its last word is in
        m.d.comb += [prog_rd.addr.eq(pa), engine.desc.eq(cur.desc),
                     slot.eq(img[:max(1, (S - 1).bit_length())] if S > 1 else 0)]
        chunks = self.engine_chunks[name]
        is_chunk = {c: cur.chunk == CHUNK_ID[c] for c in chunks}
        for i, c in enumerate(chunks):
            m.d.comb += self.chunk_busy[CHUNK_ID[c]].eq(engine.busy & is_chunk[c])
            if len(chunks) > 1:
                with m.If(is_chunk[c]):
                    m.d.comb += engine.row.eq(i)
        # The entry's image is in its slot with the previous layer done: registered (the
        # engine's start fans out to every loop register). The entry is fixed from DECIDE
        # on and the condition, once true, stays so until the layer runs, so the register
        # is never stale in WAIT_INPUT and costs no cycle.
        ready = Signal(name=f"{name}_ready")
        m.d.sync += ready.eq((Array(slot_img)[slot] == img) & (Array(progress)[slot] == pc))
        with m.FSM(name=f"{name}_ctrl"):
            with m.State("IDLE"):
                with m.If(running & ~finished):
                    m.d.sync += [pc.eq(0), pa.eq(0), k.eq(0)]
                    m.next = "FETCH"
                with m.If(~running):
                    m.d.sync += finished.eq(0)
            with m.State("FETCH"):
                m.d.sync += [pa.eq(pa + 1), beat.eq(0)]
                m.next = "LOAD"                      # one cycle of read latency
            with m.State("LOAD"):
                with m.If(beat == B - 1):
                    m.d.sync += [raw.eq(shifted), img.eq(k - loaded.delta)]
                    m.next = "DECIDE"
                if B > 1:
                    with m.Else():
                        m.d.sync += [raw.eq(shifted), beat.eq(beat + 1),
                                     pa.eq(pa + 1)]
            with m.State("DECIDE"):
                mine = Cat(is_chunk.values()).any() & (img >= 0) & (img < images)
                with m.If(mine):
                    m.next = "WAIT_INPUT"
                with m.Else():
                    m.next = "NEXT"
            with m.State("WAIT_INPUT"):
                with m.If(ready):
                    m.d.comb += engine.start.eq(1)
                    m.next = "RUN"
            with m.State("RUN"):
                with m.If(~engine.busy):
                    for s, p in enumerate(progress):
                        with m.If(slot == s):
                            m.d.sync += [p.eq(pc + 1), img_done[s].eq(cur.last)]
                    m.next = "NEXT"
            with m.State("NEXT"):
                with m.If(~cur.last):
                    m.d.sync += pc.eq(pc + 1)
                    m.next = "FETCH"
                with m.Elif(k + 1 < images + S - 1):
                    m.d.sync += [pc.eq(0), pa.eq(0), k.eq(k + 1)]
                    m.next = "FETCH"
                with m.Else():
                    m.d.sync += finished.eq(1)
                    m.next = "IDLE"
        return finished, slot
