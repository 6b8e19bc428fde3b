"""The accelerator configuration: the single source of truth for every size and width.

The mapper writes it as ``accel.json``; the generators, the program compiler, the
testbenches and the reports read it. ``AccelConfig.from_dict`` validates and raises
:class:`ConfigError` naming the bad field.
"""
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

KIND_OF_CHUNK = {"clp": "mul", "slp": "shift", "alp": "adder"}
CHUNK_OF_OP = {kind: chunk for chunk, kind in KIND_OF_CHUNK.items()}


class ConfigError(ValueError):
    """An accelerator configuration that cannot work; the message names the field."""


def _pow2(name, value, lo, hi):
    if not isinstance(value, int) or isinstance(value, bool) or value & (value - 1) \
            or not lo <= value <= hi:
        raise ConfigError(f"{name}: {value!r} must be a power of two from {lo} to {hi}")


def _int(name, value, lo, hi):
    if not isinstance(value, int) or isinstance(value, bool) or not lo <= value <= hi:
        raise ConfigError(f"{name}: {value!r} must be an integer from {lo} to {hi}")


@dataclass(frozen=True)
class ChunkConfig:
    """One chunk: ``lanes`` PEs (0 = absent), weight / exponent bits, accumulator bits,
    and the depth of its weight memory (words of ``lanes`` weights)."""
    lanes: int = 0
    w_width: int = 8
    acc_width: int = 24
    w_words: int = 1024

    def validate(self, name, word_bytes):
        _int(f"{name}.lanes", self.lanes, 0, 256)
        if self.lanes:
            if self.lanes < word_bytes:
                raise ConfigError(f"{name}.lanes: {self.lanes} is fewer than word_bytes "
                                  f"{word_bytes} (a lanewise layer needs one lane per byte)")
            _int(f"{name}.w_width", self.w_width, 1, 5 if name == "slp" else 16)
            _int(f"{name}.acc_width", self.acc_width, 8, 48)
            _int(f"{name}.w_words", self.w_words, 1, 1 << 20)


@dataclass(frozen=True)
class AccelConfig:
    """Sizes and widths of the whole accelerator."""
    word_bytes: int = 4           # activation memory word (bytes)
    act_bytes: int = 1 << 16      # activation memory per image slot (bytes, a multiple of 64)
    slots: int = 1                # image slots: images in flight through the chunks
    act_split: int = 0            # 0: each slot one dual-read memory; n: n single-port
                                  # memories of act_bytes (iCE40 SPRAM), one slot only
    res_bytes: int = 0            # with act_split: a 1-read 1-write memory for tensors that
                                  # are read as residuals (a multiple of 64; 0: none)
    p_words: int = 1024           # requantisation parameters (one per output channel)
    params_in_act: bool = False   # parameters stored in the activation memory; each layer
                                  # first copies its own into the p_words parameter memory
    prog_words: int = 64          # layer descriptors
    prog_width: int = 0           # program memory word bits (0: one descriptor per word;
                                  # else a descriptor is loaded over several words)
    cin_tile: int = 1             # input channels a tiled broadcast layer takes per beat
                                  # (1: none; the compiler tiles a layer when faster)
    drain: int = 1                # sums each engine requantises and writes per cycle (its
                                  # requantisers; parameter words hold this many channels)
    pixels: int = 1               # output pixels a lanewise layer computes side by side
                                  # (1: one; the compiler blocks a layer when faster)
    m_width: int = 16             # requant multiplier
    rq_width: int = 48            # requant intermediates
    shared_engine: bool = False   # one engine (sequencer, drain, requantiser) and one weight
                                  # memory for all chunks' PE rows: layers run one at a time
    clp: ChunkConfig = field(default_factory=lambda: ChunkConfig(8, 8))
    slp: ChunkConfig = field(default_factory=lambda: ChunkConfig(8, 3))
    alp: ChunkConfig = field(default_factory=lambda: ChunkConfig(8, 8))

    def __post_init__(self):
        _pow2("word_bytes", self.word_bytes, 1, 16)
        _int("act_bytes", self.act_bytes, 64, 1 << 22)
        if self.act_bytes % 64:
            raise ConfigError(f"act_bytes: {self.act_bytes} is not a multiple of 64")
        _pow2("slots", self.slots, 1, 8)
        _int("act_split", self.act_split, 0, 4)
        _int("res_bytes", self.res_bytes, 0, 1 << 22)
        if self.res_bytes % 64:
            raise ConfigError(f"res_bytes: {self.res_bytes} is not a multiple of 64")
        if self.res_bytes and not self.act_split:
            raise ConfigError(f"res_bytes: {self.res_bytes} needs act_split (the dual-read "
                              "memory has its own residual port)")
        if self.slots * self.slot_words > 1 << 16:
            raise ConfigError(f"act_bytes: {self.slots} slots of {self.slot_words} words exceed "
                              f"the host protocol's 65536 activation words")
        _pow2("p_words", self.p_words, 2, 1 << 16)
        _pow2("prog_words", self.prog_words, 2, 4096)
        if self.prog_width:
            _int("prog_width", self.prog_width, 8, 1024)
        _pow2("cin_tile", self.cin_tile, 1, 16)
        if self.cin_tile > self.word_bytes:
            raise ConfigError(f"cin_tile: {self.cin_tile} exceeds word_bytes {self.word_bytes} "
                              "(a beat's channels come from one activation word)")
        _pow2("drain", self.drain, 1, 8)
        _int("pixels", self.pixels, 1, 16)
        if self.pixels > 1 and self.shared_engine:
            raise ConfigError(f"pixels: {self.pixels} needs an engine per chunk (not "
                              "shared_engine)")
        if self.drain > 1:
            bad = [f"{name}.lanes {c.lanes}" for name, _, c in self.chunks if c.lanes % self.drain]
            if 2 * self.drain > self.word_bytes or self.params_in_act or bad \
                    or self.p_words < self.drain:
                raise ConfigError(f"drain: {self.drain} needs 2 * drain <= word_bytes "
                                  f"({self.word_bytes}), every chunk's lanes a multiple of it"
                                  f"{' (not ' + ', '.join(bad) + ')' if bad else ''}, "
                                  "p_words >= drain and no params_in_act")
        _int("m_width", self.m_width, 2, 18)
        _int("rq_width", self.rq_width, 8, 64)
        for name in ("shared_engine", "params_in_act"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(f"{name}: {getattr(self, name)!r} must be true or false")
        if self.params_in_act and not (self.shared_engine and self.slots == 1):
            raise ConfigError("params_in_act: needs shared_engine and slots 1 (one engine "
                              "fills the parameter memory, from one slot's activations)")
        for name in KIND_OF_CHUNK:
            self.chunk(name).validate(name, self.word_bytes)
        if not any(self.chunk(name).lanes for name in KIND_OF_CHUNK):
            raise ConfigError("clp/slp/alp: every chunk has 0 lanes")

    def chunk(self, name):
        return getattr(self, name)

    @property
    def chunks(self):
        """Present chunks as ``(name, kind, ChunkConfig)``, in a fixed order."""
        return [(name, kind, self.chunk(name)) for name, kind in KIND_OF_CHUNK.items()
                if self.chunk(name).lanes]

    @property
    def spread_input(self):
        """The host bridge can spread a one-byte input over its word
        (``hw.protocol.SPREAD``): accelerators with pixel blocks, where a one-channel stem
        runs spread (``sw.program.ConvLayer.spread``)."""
        return self.pixels > 1

    @property
    def slot_bytes(self):
        """Bytes of a slot's address space: ``act_bytes``, or past the last split memory
        (``act_split`` memories at power-of-two strides, then ``res_bytes``)."""
        if not self.act_split:
            return self.act_bytes
        return (self.act_split << (self.act_bytes - 1).bit_length()) + self.res_bytes

    @property
    def slot_words(self):
        """Activation words between the starts of two slots on the host bus: the next power
        of two of a slot's ``slot_bytes / word_bytes``."""
        return 1 << (self.slot_bytes // self.word_bytes - 1).bit_length()

    @property
    def act_addr_bits(self):
        return (self.slot_bytes - 1).bit_length()

    @property
    def w_bases(self):
        """First word of each present chunk's weights: 0 in its own memory, or its region of
        the shared engine's one weight memory (``w_words`` per chunk, in chunk order)."""
        bases, nxt = {}, 0
        for name, _, c in self.chunks:
            bases[name] = nxt if self.shared_engine else 0
            nxt += c.w_words
        return bases

    @property
    def w_addr_bits(self):
        if self.shared_engine:
            return (sum(c.w_words for _, _, c in self.chunks) - 1).bit_length()
        return max((c.w_words - 1).bit_length() for _, _, c in self.chunks)

    @property
    def p_base_bits(self):
        """Bits of a descriptor's ``p_base``: a parameter memory address, or an activation
        word address with ``params_in_act``."""
        if self.params_in_act:
            return self.act_addr_bits - (self.word_bytes.bit_length() - 1)
        return self.p_addr_bits

    @property
    def p_addr_bits(self):
        """Bits of a parameter memory address (words of ``drain`` parameters)."""
        return (self.p_words // self.drain - 1).bit_length()

    def to_dict(self):
        return asdict(self)

    @classmethod
    def from_dict(cls, d):
        if not isinstance(d, dict):
            raise ConfigError("accel config: expected a JSON object")
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(d) - known)
        if unknown:
            raise ConfigError(f"{unknown[0]}: unknown field (expected one of "
                              f"{', '.join(sorted(known))})")
        kw = dict(d)
        for name in KIND_OF_CHUNK:
            if name in kw:
                sub = kw[name]
                if not isinstance(sub, dict) or set(sub) - set(ChunkConfig.__dataclass_fields__):
                    raise ConfigError(f"{name}: expected an object with fields "
                                      f"{', '.join(ChunkConfig.__dataclass_fields__)}")
                kw[name] = ChunkConfig(**sub)
        return cls(**kw)

    def save(self, path):
        Path(path).write_text(json.dumps(self.to_dict(), indent=2) + "\n")

    @classmethod
    def load(cls, path):
        try:
            return cls.from_dict(json.loads(Path(path).read_text()))
        except FileNotFoundError:
            raise ConfigError(f"{path}: no such accelerator config (run `make map`)") from None
        except json.JSONDecodeError as e:
            raise ConfigError(f"{path}: not valid JSON ({e.msg} at line {e.lineno})") from None
