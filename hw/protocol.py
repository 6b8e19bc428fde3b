"""The host byte protocol of the accelerator (stream ports in simulation, UART on boards).

All multi-byte fields are little-endian. Commands (one byte each) and their replies:

| command | bytes after it | reply |
|---|---|---|
| ``P`` ping | | ``N A S`` + version (4 bytes) |
| ``W`` write | mem (1), addr (2), count (2), then ``count`` words of ``word_bytes(mem)`` bytes | ``K`` |
| ``R`` read activations | addr (2), count (2) (activation words) | ``count * word_bytes`` bytes |
| ``X`` run the program | images ``n`` (1), ``1 <= n <= slots`` | ``D`` + cycles taken (4 bytes) |

Anything else is answered ``E`` + the byte, and the bridge waits for the next command.
A run processes images ``0 .. n-1``, image ``i`` in activation slot ``i`` (activation word
addresses ``i * act_bytes / word_bytes`` onward); the chunks pipeline them.
Memories: ``ACT`` (activation words), ``PARAM`` (requant ``{m, b}`` per channel),
``PROG`` (layer descriptors), ``WEIGHTS[chunk]`` (one word = the chunk's lanes of weights).
"""
import struct

VERSION = 1
PING, WRITE, READ, RUN = b"P", b"W", b"R", b"X"
ACK, DONE, ERROR = b"K", b"D", b"E"
MAGIC = b"NAS" + bytes([VERSION])
MEMORIES = ("act", "param", "prog", "clp", "slp", "alp")
MEM_ID = {name: i for i, name in enumerate(MEMORIES)}


def word_bytes(bits):
    """Bytes a word of ``bits`` bits takes on the wire."""
    return (bits + 7) // 8


def write(mem, addr, words, bits):
    """Bytes of a write command for ``words`` (ints) of ``bits`` bits into ``mem``."""
    n = word_bytes(bits)
    body = b"".join(int(w & ((1 << bits) - 1)).to_bytes(n, "little") for w in words)
    return WRITE + struct.pack("<BHH", MEM_ID[mem], addr, len(words)) + body


def read(addr, count):
    return READ + struct.pack("<HH", addr, count)


def run(images=1):
    return RUN + bytes([images])


def parse_done(reply):
    """Cycles from a run reply (``D`` + 4 bytes)."""
    if len(reply) != 5 or reply[:1] != DONE:
        raise ValueError(f"expected a run reply D+4 bytes, got {reply!r}")
    return int.from_bytes(reply[1:], "little")
