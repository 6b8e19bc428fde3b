"""Reference semantics of the three processing-element types (int64 numpy, vectorised).

Every PE accumulates one term per valid beat into a two's-complement accumulator of
``acc_width`` bits: ``acc <- wrap((0 if first else acc) + term(x, w), acc_width)``.

- multiplier PE: ``term = x * w``                   (x, w signed)
- shift PE:      ``term = sign * (x << shift)``      (x signed, sign in {-1, 0, +1},
  shift an unsigned exponent; left shifts only: the layer scale 2^-max_shift is folded
  into requantisation, so the integer result is exact)
- adder PE:      ``term = -|x - w|``                 (x, w signed)

Accumulator widths are chosen so that a network never wraps (a test proves it per layer);
wrapping is still defined here so that hardware and model agree bit for bit on any input.
"""
import numpy as np

KINDS = ("mul", "shift", "adder")


def wrap(value, width):
    """Reduce ``value`` to a signed two's-complement integer of ``width`` bits."""
    value = np.asarray(value, dtype=np.int64)
    half = np.int64(1) << (width - 1)
    return ((value + half) & ((half << 1) - 1)) - half


def mul_term(x, w):
    return np.asarray(x, np.int64) * np.asarray(w, np.int64)


def shift_term(x, sign, shift):
    sign = np.asarray(sign, np.int64)
    if np.any((sign < -1) | (sign > 1)):
        raise ValueError(f"shift weight sign must be -1, 0 or +1, got {np.unique(sign)}")
    return sign * (np.asarray(x, np.int64) << np.asarray(shift, np.int64))


def adder_term(x, w):
    return -np.abs(np.asarray(x, np.int64) - np.asarray(w, np.int64))


def term(kind, x, w):
    """One PE term; for ``kind == "shift"`` ``w`` is a ``(sign, shift)`` pair."""
    if kind == "mul":
        return mul_term(x, w)
    if kind == "shift":
        return shift_term(x, *w)
    if kind == "adder":
        return adder_term(x, w)
    raise ValueError(f"unknown PE kind {kind!r}; expected one of {KINDS}")


def accumulate(kind, x, w, first, acc_width, acc0=0):
    """Run a PE over a sequence of beats; returns the accumulator after every beat.

    ``x``, ``w`` (or the ``(sign, shift)`` pair) and ``first`` are 1-D sequences of equal
    length (a leading axis of beats; trailing axes, e.g. PEs of a row, broadcast).
    """
    terms = term(kind, x, w)
    first = np.asarray(first, bool)
    out = np.empty_like(terms)
    acc = np.broadcast_to(np.int64(acc0), terms.shape[1:]).copy()
    for i in range(terms.shape[0]):
        acc = wrap(np.where(first[i], 0, acc) + terms[i], acc_width)
        out[i] = acc
    return out


def term_width(kind, x_width, w_width):
    """Bits of a signed integer that holds any single term (w_width = shift exponent bits
    for the shift PE)."""
    if kind == "mul":
        return x_width + w_width
    if kind == "shift":
        return x_width + (1 << w_width) - 1 + 1
    if kind == "adder":
        return max(x_width, w_width) + 1
    raise ValueError(f"unknown PE kind {kind!r}; expected one of {KINDS}")
