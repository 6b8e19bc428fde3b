"""Layer programs for the layer engine (hw/engine.py): memory layouts and descriptors.

Activations live in HWC order as bytes, ``cpad`` bytes per pixel (channels rounded up to
the activation word). A conv-like layer runs in one of two modes:

- ``broadcast`` (standard KxK, pointwise, fully connected): lane ``l`` of group ``g`` is
  output channel ``g*lanes + l``; weight word ``g*taps + (kh*K + kw)*cin + c`` holds
  ``w[g*lanes + l, c, kh, kw]`` for every lane. With an input-channel ``tile`` of ``t``
  (``t`` > 1, the mapper's per-layer choice) lane ``o*t + j`` of group ``g`` adds channel
  ``c*t + j`` of each tap into output channel ``g*(lanes//t) + o`` (the engine sums the
  ``t`` lanes when the output is done); weight word ``g*taps + (kh*K + kw)*ceil(cin/t) + c``
  holds ``w[g*(lanes//t) + o, c*t + j, kh, kw]`` (0 past ``cin``).
- ``lanewise`` (depthwise; global average pooling = depthwise conv with a full-size kernel
  of unit weights): lane ``l < word_bytes`` of group ``g`` is channel ``g*word_bytes + l``;
  weight word ``g*K*K + kh*K + kw`` holds ``w[g*word_bytes + l, 0, kh, kw]``. With
  ``pixels`` ``P`` > 1 (the mapper's per-layer choice; a row's last block holds the
  rest of the row, its lanes past the row undrained)
  lane ``p*word_bytes + l`` computes output pixel ``ox + p`` of a block of ``P`` in a row:
  per kernel row the engine reads the block's ``span = (P-1)*stride + K`` input pixels
  once, and pixel ``p`` takes tap ``kw = t - p*stride`` of beat ``t`` (its weights are
  pixel 0's, delayed ``p*stride`` beats). Taps per output block: ``K * span``, against
  ``K*K*P`` one pixel at a time.
  *Spread* (``spread``): a standard convolution of a one-channel input (the stem of a
  grey image) with at most ``word_bytes`` output channels, run lanewise on an input
  whose words hold the pixel in every byte (the host bridge writes the network input
  that way, ``hw.protocol.SPREAD``): lane ``l`` is output channel ``l`` and reads its
  own copy of the pixel, so the layer takes pixel blocks like a depthwise one.

Weights of unused lanes are zero. Parameter word ``p_base + channel`` holds ``M`` and
``B + 2^(S-1)`` (the rounding folded into the bias).
"""
from dataclasses import dataclass

import numpy as np

MODES = ("broadcast", "lanewise")


class ProgramError(ValueError):
    """A layer the engine cannot run as asked; the message names the field."""


def cpad(channels, word_bytes):
    """Bytes per pixel of a tensor with ``channels`` channels."""
    return -(-channels // word_bytes) * word_bytes


def _dtype(wide):
    return np.dtype("<i2") if wide else np.dtype("i1")


def pack_activation(x, word_bytes, wide=False):
    """int [C, H, W] -> uint8 bytes in HWC order, ``cpad`` bytes per pixel; values are
    int8, or little-endian int16 when ``wide``."""
    c, h, w = x.shape
    dt = _dtype(wide)
    out = np.zeros((h, w, cpad(c * dt.itemsize, word_bytes)), np.uint8)
    vals = np.asarray(x, np.int64).transpose(1, 2, 0).astype(dt)
    out[:, :, :c * dt.itemsize] = vals.view(np.uint8).reshape(h, w, -1)
    return out.reshape(-1)


def spread_activation(x, word_bytes):
    """int [1, H, W] -> bytes of a spread input (:class:`ConvLayer` ``spread``): each
    pixel's word holds the pixel in every byte."""
    return pack_activation(np.repeat(np.asarray(x)[:1], word_bytes, 0), word_bytes)


def unpack_activation(data, shape, word_bytes, wide=False):
    """Inverse of :func:`pack_activation`: bytes -> int64 [C, H, W]."""
    c, h, w = shape
    dt = _dtype(wide)
    hwc = np.asarray(data, np.uint8)[:h * w * cpad(c * dt.itemsize, word_bytes)].reshape(h, w, -1)
    vals = np.ascontiguousarray(hwc[:, :, :c * dt.itemsize]).view(dt)
    return vals.astype(np.int64).transpose(2, 0, 1)


@dataclass(frozen=True)
class ConvLayer:
    """One conv-like layer as the engine sees it (shapes, not values)."""
    mode: str                 # "broadcast" or "lanewise"
    in_shape: tuple           # (C, H, W)
    out_c: int
    kernel: int
    stride: int = 1
    pad: int = 0
    wide: bool = False        # 16-bit outputs (two bytes per channel)
    tile: int = 1             # broadcast: input channels per beat (lanes summed per output)
    pixels: int = 1           # lanewise: output pixels of a row computed side by side
    spread: bool = False      # lanewise over copies of a one-channel input (see above)

    @property
    def out_hw(self):
        _, h, w = self.in_shape
        k, s, p = self.kernel, self.stride, self.pad
        return (h + 2 * p - k) // s + 1, (w + 2 * p - k) // s + 1

    def check(self, lanes, word_bytes, drain=1):
        c, h, w = self.in_shape
        if self.mode not in MODES:
            raise ProgramError(f"mode: {self.mode!r} is not one of {', '.join(MODES)}")
        if self.spread and (self.mode != "lanewise" or c != 1 or self.out_c > word_bytes):
            raise ProgramError(f"spread: needs a lanewise layer of one input channel and at "
                               f"most word_bytes {word_bytes} output channels, not {c} -> "
                               f"{self.out_c}")
        if self.mode == "lanewise" and self.out_c != c and not self.spread:
            raise ProgramError(f"out_c: a lanewise layer keeps its {c} channels, not "
                               f"{self.out_c}")
        oh, ow = self.out_hw
        for name, value, hi in (("in_h", h, 255), ("in_w", w, 255), ("out_h", oh, 255),
                                ("out_w", ow, 255), ("kernel", self.kernel, 31),
                                ("stride", self.stride, 7), ("pad", self.pad, 15),
                                ("out_c", self.out_c, 1023), ("cin", c, 1023)):
            if not 1 <= value <= hi and not (name == "pad" and value == 0):
                raise ProgramError(f"{name}: {value} is outside 1..{hi}")
        if self.tile != 1 and (self.mode != "broadcast" or self.tile not in (2, 4, 8, 16)
                               or self.tile > min(word_bytes, lanes)):
            raise ProgramError(f"tile: {self.tile} must be 1, or for a broadcast layer a power "
                               f"of two up to word_bytes {word_bytes} and the lanes {lanes}")
        if self.pixels != 1:
            _, ow = self.out_hw
            if (self.mode != "lanewise" or not 1 < self.pixels <= ow
                    or self.pixels * word_bytes > lanes or self.stride > 2 or self.wide
                    or self.span() > 31):
                raise ProgramError(f"pixels: {self.pixels} needs a lanewise layer of stride "
                                   f"1 or 2 with 8-bit outputs, at most its output width "
                                   f"{ow}, {self.pixels} words of {word_bytes} bytes within "
                                   f"the {lanes} lanes and a span of at most 31 input pixels")
        if self.group_size(lanes, word_bytes) % drain:
            raise ProgramError(f"tile: {self.group_size(lanes, word_bytes)} outputs per lane "
                               f"group are not a multiple of drain {drain}")
        if self.wide and word_bytes < 2:
            raise ProgramError("wide: 16-bit outputs need word_bytes >= 2")
        if self.groups(lanes, word_bytes) > 255:
            raise ProgramError(f"out_c: {self.out_c} channels need more than 255 lane groups")

    def group_size(self, lanes, word_bytes):
        """Output channels of one lane group."""
        return lanes // self.tile if self.mode == "broadcast" else word_bytes

    def groups(self, lanes, word_bytes):
        return -(-self.out_c // self.group_size(lanes, word_bytes))

    def terms(self):
        """Useful terms (MACs) per output: ``kernel^2 * cin`` (broadcast) or ``kernel^2``."""
        cin = self.in_shape[0] if self.mode == "broadcast" else 1
        return self.kernel * self.kernel * cin

    def span(self):
        """Input pixels a kernel row of a block of ``pixels`` outputs reads."""
        return (self.pixels - 1) * self.stride + self.kernel

    def taps(self):
        """Beats per output (per block of ``pixels`` outputs): a tiled layer takes ``tile``
        channels per beat."""
        if self.mode == "lanewise":
            return self.kernel * self.span()
        return self.kernel * self.kernel * -(-self.in_shape[0] // self.tile)

    def w_taps(self):
        """Weight words per lane group: one per beat, or per kernel tap (lanewise)."""
        return self.kernel * self.kernel if self.mode == "lanewise" else self.taps()

    def row_blocks(self):
        """``(blocks, pixels of the last)`` of an output row: blocks of ``pixels``, the
        last one holding the rest of the row."""
        ow = self.out_hw[1]
        blocks = -(-ow // self.pixels)
        return blocks, ow - (blocks - 1) * self.pixels

    def positions(self):
        """Outputs (blocks of ``pixels``) a lane group computes one after another."""
        return self.out_hw[0] * self.row_blocks()[0]

    def subs(self, lanes, word_bytes):
        """Lane groups sharing a weight word: a lanewise group uses ``word_bytes`` of the
        word's lanes, so ``lanes // word_bytes`` groups go side by side."""
        return 1 if self.mode == "broadcast" else lanes // word_bytes

    def w_words(self, lanes, word_bytes):
        """Weight words of the layer (``taps`` per word-sharing set of groups)."""
        return -(-self.groups(lanes, word_bytes) // self.subs(lanes, word_bytes)) * self.w_taps()


def weight_words(layer, w, lanes, word_bytes):
    """Weights [O, Cg, K, K] (ints, or any per-weight value array with those leading axes,
    e.g. shift ``(sign, shift)`` pairs stacked last) -> array [w_words, lanes, ...]: group
    ``g`` in word block ``g // subs``, lanes from ``(g % subs) * group_size``."""
    w = np.asarray(w)
    size = layer.group_size(lanes, word_bytes)
    groups, k = layer.groups(lanes, word_bytes), layer.kernel
    r = layer.subs(lanes, word_bytes)
    blocks = -(-groups // r)
    out = np.zeros((blocks, layer.w_taps(), lanes) + w.shape[4:], w.dtype)
    for g in range(groups):
        chans = np.arange(g * size, min((g + 1) * size, layer.out_c))
        if layer.mode == "broadcast":
            # tap order (kh, kw, c), lane o*t + j: [n, C, K, K] -> [K*K*ceil(C/t), n*t]
            t = layer.tile
            cw = -(-w.shape[1] // t)
            wt = np.zeros((len(chans), cw * t) + w.shape[2:], w.dtype)
            wt[:, :w.shape[1]] = w[chans]
            wt = wt.reshape(len(chans), cw, t, *w.shape[2:])       # [n, cw, t, K, K, ...]
            block = wt.transpose(3, 4, 1, 0, 2, *range(5, wt.ndim)).reshape(
                k * k * cw, len(chans) * t, *w.shape[4:])
        else:
            block = w[chans, 0].reshape(len(chans), k * k, *w.shape[4:]).swapaxes(0, 1)
        lo = g % r * size
        out[g // r, :, lo:lo + block.shape[1]] = block
    return out.reshape(blocks * layer.w_taps(), lanes, *w.shape[4:])


def param_words(M, B, S):
    """Per-channel (m, b_round) pairs: ``b_round = B + 2^(S-1)``."""
    return np.stack([np.asarray(M, np.int64), np.asarray(B, np.int64) + (1 << (S - 1))], 1)


def descriptor(layer, *, lanes, word_bytes, in_base, out_base, w_base, p_base, shift, lo, hi,
               res_base=None, res_shift=0):
    """Descriptor fields (a dict for ``hw.engine.descriptor_layout``) of ``layer`` with its
    input at byte ``in_base``, output at ``out_base``, weights from word ``w_base`` and
    parameters from word ``p_base``; ``res_base`` names a residual tensor of the output's
    shape. Bases of tensors must be word aligned."""
    layer.check(lanes, word_bytes)
    if layer.pixels > 1 and res_base is not None:
        raise ProgramError(f"pixels: {layer.pixels} with a residual; a block of pixels takes none")
    for name, base in (("in_base", in_base), ("out_base", out_base), ("res_base", res_base)):
        if base is not None and base % word_bytes:
            raise ProgramError(f"{name}: {base} is not a multiple of word_bytes {word_bytes}")
    c, h, w = layer.in_shape
    oh, ow = layer.out_hw
    in_cpad = cpad(c, word_bytes)
    out_cpad = cpad(layer.out_c * (2 if layer.wide else 1), word_bytes)
    row_stride = w * in_cpad
    lanewise = layer.mode == "lanewise"
    P = layer.pixels
    blocks, last = layer.row_blocks()
    return {
        "lanewise": int(lanewise), "in_h": h, "in_w": w, "out_h_m1": oh - 1,
        "out_w_m1": blocks - 1, "cin_m1": 0 if lanewise else -(-c // layer.tile) - 1,
        "kernel_m1": layer.kernel - 1, "span_m1": layer.span() - 1, "pixels_m1": P - 1,
        "last_m1": last - 1,
        "tiled": int(layer.tile > 1),
        "stride": layer.stride, "ox_step": P * layer.stride, "pad": layer.pad,
        "groups_m1": layer.groups(lanes, word_bytes) - 1, "out_c": layer.out_c,
        "in_start": in_base - layer.pad * (row_stride + in_cpad),
        "in_cpad": in_cpad, "row_stride": row_stride,
        "col_step": P * layer.stride * in_cpad, "row_step": layer.stride * row_stride,
        "out_base": out_base, "res_off": 0 if res_base is None else res_base - out_base,
        "out_cpad": out_cpad, "out_step": P * out_cpad,
        "last_step": last * out_cpad,
        "w_base": w_base, "taps": layer.w_taps(), "p_base": p_base,
        "has_res": int(res_base is not None), "shift": shift, "res_shift": res_shift,
        "wide": int(layer.wide), "lo": lo, "hi": hi,
    }
