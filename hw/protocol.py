"""The host byte protocol of the accelerator (stream ports in simulation, UART on boards).

All multi-byte fields are little-endian. Commands (one byte each) and their replies:

| command | bytes after it | reply |
|---|---|---|
| ``P`` ping | | ``N A S`` + version (4 bytes) |
| ``W`` write | mem (1), addr (2), count (2), then ``count`` words of ``word_bytes(mem)`` bytes | ``K`` |
| ``I`` input write | ``k`` (1), addr (2), count (2), then ``count`` activation words of ``k`` bytes | ``K`` |
| ``R`` read activations | addr (2), count (2) (activation words) | ``count * word_bytes`` bytes |
| ``X`` run | images ``n``, input offset, input words, output offset, output words (2 each), ``k`` (1), then the inputs of images ``slots .. n-1``, ``k`` bytes per word | ``O`` + logits words, per image in order, then ``D`` + cycles (4 bytes) |

Anything else is answered ``E`` + the byte, and the bridge waits for the next command.
Inputs travel compact: ``k`` bytes per activation word, the word's low bytes; the bridge
zero-fills the rest (``k`` = the input's channels, at most ``word_bytes``: one byte per
pixel, ``pixel >> pixel_shift``, for a grey image; ``k`` 0 or past a word means a whole
word). ``k = 1 | SPREAD`` (bridges of accelerators with pixel blocks,
``AccelConfig.spread_input``): one byte per word, copied into every byte of the word (the
input of a spread stem, ``sw.program.ConvLayer.spread``). ``W`` to ``act`` still writes
whole words.
A run streams ``n`` images through ``slots`` activation slots (slot ``s`` starts at word
``s * slot_words``, ``slot_words`` the next power of two of ``act_bytes / word_bytes``:
``AccelConfig.slot_words``; offsets are within a slot). Before ``X`` the host writes
the inputs of images ``0 .. slots-1`` into their slots; after each ``O`` reply (image
``i`` done) the bridge takes the input of image ``i + slots`` for that slot, so the host
may send all remaining inputs right after ``X``: flow control paces them.
Memories: ``ACT`` (activation words), ``PARAM`` (requant ``{m, b}`` per channel),
``PROG`` (layer descriptors), ``WEIGHTS[chunk]`` (one word = the chunk's lanes of weights).
"""
import struct

VERSION = 2
PING, WRITE, INPUT, READ, RUN = b"P", b"W", b"I", b"R", b"X"
ACK, DONE, ERROR, OUTPUT = b"K", b"D", b"E", b"O"
MAGIC = b"NAS" + bytes([VERSION])
MEMORIES = ("act", "param", "prog", "clp", "slp", "alp")
MEM_ID = {name: i for i, name in enumerate(MEMORIES)}
SPREAD = 0x80          # flag of an input ``k``: each word is its one byte in every byte


def word_bytes(bits):
    """Bytes a word of ``bits`` bits takes on the wire."""
    return (bits + 7) // 8


def write(mem, addr, values, bits):
    """Bytes of a write command for ``values`` (ints) of ``bits`` bits into ``mem``."""
    return WRITE + struct.pack("<BHH", MEM_ID[mem], addr, len(values)) + pack_words(values, bits)


def write_input(addr, values, k):
    """Bytes of an input write: activation words ``values`` (ints) from word ``addr``, ``k``
    bytes each (:func:`pack_input`)."""
    return INPUT + struct.pack("<BHH", k, addr, len(values)) + pack_input(values, k)


def read(addr, count):
    return READ + struct.pack("<HH", addr, count)


def run(images, in_addr, in_words, out_addr, out_words, k):
    """A run command (the inputs of images ``slots..`` follow it, :func:`pack_input` with
    ``k`` bytes per word)."""
    return RUN + struct.pack("<HHHHHB", images, in_addr, in_words, out_addr, out_words, k)


def pack_words(values, bits):
    """Raw little-endian words, as a write command carries them."""
    n = word_bytes(bits)
    return b"".join(int(w & ((1 << bits) - 1)).to_bytes(n, "little") for w in values)


def pack_input(values, k):
    """The low ``k`` bytes of each activation word (the others must be 0, else
    OverflowError); with :data:`SPREAD` in ``k``, the low byte of each."""
    if k & SPREAD:
        return bytes(int(w) & 0xFF for w in values)
    return b"".join(int(w).to_bytes(k, "little") for w in values)


def parse_done(reply):
    """Cycles from a run reply (``D`` + 4 bytes)."""
    if len(reply) != 5 or reply[:1] != DONE:
        raise ValueError(f"expected a run reply D+4 bytes, got {reply!r}")
    return int.from_bytes(reply[1:], "little")
