"""Pack Python values into the flat bit vectors of Amaranth ``data`` layouts, and back.

Values: an int for a plain shape, a dict for a ``StructLayout``, a list for an
``ArrayLayout``. Signed fields are read back as negative ints.
"""
from amaranth.hdl import Shape
from amaranth.lib import data


def _fields(layout):
    if isinstance(layout, data.StructLayout):
        return [(name, field) for name, field in layout]
    return [(index, field) for index, field in layout]  # ArrayLayout yields (index, Field)


def pack(layout, value):
    """Flat unsigned int holding ``value`` laid out as ``layout``."""
    if isinstance(layout, data.Layout):
        bits = 0
        for key, field in _fields(layout):
            bits |= pack(field.shape, value[key]) << field.offset
        return bits
    shape = Shape.cast(layout)
    if not -(1 << shape.width) < value < (1 << shape.width):
        raise ValueError(f"{value} does not fit {shape}")
    return value & ((1 << shape.width) - 1)


def unpack(layout, bits):
    """Inverse of :func:`pack`."""
    if isinstance(layout, data.Layout):
        items = {key: unpack(field.shape, bits >> field.offset) for key, field in _fields(layout)}
        return items if isinstance(layout, data.StructLayout) else [items[i] for i in range(len(items))]
    shape = Shape.cast(layout)
    bits &= (1 << shape.width) - 1
    if shape.signed and bits >> (shape.width - 1):
        bits -= 1 << shape.width
    return bits
