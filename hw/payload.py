"""Pack Python values into the flat bit vectors of Amaranth ``data`` layouts, and back.

Values: an int for a plain shape, a dict for a ``StructLayout``, a list for an
``ArrayLayout``. Signed fields are read back as negative ints.
"""
from amaranth.hdl import Shape
from amaranth.lib import data

_CACHE = {}      # id(layout) -> (layout, fields, width): amaranth rebuilds fields per walk


def _info(layout):
    hit = _CACHE.get(id(layout))
    if hit is None or hit[0] is not layout:
        if isinstance(layout, data.Layout):
            hit = (layout, tuple(layout), layout.size)
        else:
            hit = (layout, (), Shape.cast(layout).width)
        _CACHE[id(layout)] = hit
    return hit


def _fields(layout):
    """``(key, field)`` pairs of a layout (ArrayLayout keys are indices)."""
    return _info(layout)[1]


def pack(layout, value):
    """Flat unsigned int holding ``value`` laid out as ``layout``."""
    if isinstance(layout, data.ArrayLayout):        # new objects per word: walk by offset
        elem = layout.elem_shape
        width = _info(elem)[2]
        bits = 0
        for i, v in enumerate(value[:layout.length]):
            bits |= pack(elem, v) << (i * width)
        return bits
    if isinstance(layout, data.Layout):
        bits = 0
        for key, field in _fields(layout):
            bits |= pack(field.shape, value[key]) << field.offset
        return bits
    width = _info(layout)[2]
    if not -(1 << width) < value < (1 << width):
        raise ValueError(f"{value} does not fit {Shape.cast(layout)}")
    return value & ((1 << width) - 1)


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
