"""The ``arch.json`` schema: a typed, validated description of one hybrid network.

An architecture is a conv stem, a list of blocks (inverted residuals with one operator type
each, or skips), an optional 1x1 head, global average pooling and a linear classifier.
``docs/arch-json.md`` documents the file format; this module is its only parser.

    arch = load("archs/default/arch.json")     # -> Arch, or raises ArchError
    arch.layers()                              # every weight layer with shapes and MACs
    save(arch, "build/x/arch.json")

Every problem with a file raises :class:`ArchError` whose message is one line naming the
field path, e.g. ``blocks[3].kernel: 4 is not one of 3, 5``.

Command line: ``python -m sw.arch archs/default/arch.json`` validates a file and prints its
layer table (``--json`` prints the normalised file instead).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

SCHEMA_VERSION = 1
OPS = ("conv", "shift", "adder")            # operator types of weight layers
BLOCK_OPS = OPS + ("skip",)                 # choices of a block
KERNELS = (3, 5)
EXPANSIONS = (1, 3, 6)
STRIDES = (1, 2)
STEM_KERNELS = (3, 5)
#: input shape (channels, height, width) and class count of every known dataset
DATASETS = {"mnist": ((1, 28, 28), 10), "fashion-mnist": ((1, 28, 28), 10)}
MAX_CHANNELS = 1024
#: bounds of the shift exponent p (weights are sign * 2^p); at most 32 values (5-bit code)
SHIFT_P_LIMITS = (-32, 31)
SHIFT_MAX_LEVELS = 32
_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


class ArchError(ValueError):
    """A malformed or inconsistent architecture; ``str(e)`` is one line naming the field."""

    def __init__(self, path, message):
        self.path = path
        self.detail = message
        super().__init__(f"{path}: {message}" if path else message)


# ----------------------------------------------------------------------------------------
# dataclasses
# ----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Stem:
    channels: int = 16
    kernel: int = 3
    stride: int = 1


@dataclass(frozen=True)
class Block:
    """One searched cell. ``kernel`` and ``expansion`` are ``None`` for ``op == "skip"``."""

    op: str
    out_channels: int
    stride: int = 1
    kernel: int | None = 3
    expansion: int | None = 1


@dataclass(frozen=True)
class ShiftRange:
    """Shift weights are sign * 2^p with p an integer in [p_min, p_max] (or exactly 0)."""

    p_min: int = -7
    p_max: int = 0

    @property
    def levels(self):
        return self.p_max - self.p_min + 1

    @property
    def exponent_bits(self):
        return max(1, (self.levels - 1).bit_length())


@dataclass(frozen=True)
class LayerSpec:
    """One weight layer of the network, as the mapper and the quantiser see it.

    ``name`` is the dotted path of the operator module inside :class:`sw.nn.net.Net`.
    A linear layer (the classifier) is a 1x1 layer on a 1x1 map.
    """

    name: str
    kind: str             # conv | shift | adder
    role: str             # stem | expand | depthwise | project | skip | head | classifier
    in_ch: int
    out_ch: int
    kernel: int
    stride: int
    padding: int
    groups: int
    in_hw: tuple
    out_hw: tuple
    bn: bool              # followed by batch norm (folded into requantisation)
    relu: bool            # followed by ReLU
    residual: bool = False  # the block's shortcut is added after this layer's BN

    @property
    def params(self):
        return self.out_ch * (self.in_ch // self.groups) * self.kernel * self.kernel

    @property
    def macs(self):
        """Multiply (or shift, or |x - w|) accumulates per image."""
        return self.out_hw[0] * self.out_hw[1] * self.params


@dataclass(frozen=True)
class Arch:
    name: str
    dataset: str
    blocks: tuple
    stem: Stem = field(default_factory=Stem)
    input: tuple = (1, 28, 28)
    num_classes: int = 10
    head_channels: int = 0
    shift: ShiftRange = field(default_factory=ShiftRange)
    adder_eta: float = 0.2
    schema: int = SCHEMA_VERSION

    # -- conversion ----------------------------------------------------------------------
    @classmethod
    def from_dict(cls, data):
        """Build and validate an Arch from parsed JSON; raises ArchError."""
        return _parse(data)

    def to_dict(self):
        blocks = []
        for b in self.blocks:
            d = {"op": b.op}
            if b.op != "skip":
                d["kernel"] = b.kernel
                d["expansion"] = b.expansion
            d["stride"] = b.stride
            d["out_channels"] = b.out_channels
            blocks.append(d)
        return {
            "schema": self.schema,
            "name": self.name,
            "dataset": self.dataset,
            "input": list(self.input),
            "num_classes": self.num_classes,
            "stem": dataclasses.asdict(self.stem),
            "blocks": blocks,
            "head_channels": self.head_channels,
            "shift": dataclasses.asdict(self.shift),
            "adder": {"eta": self.adder_eta},
        }

    def replace(self, **changes):
        """A validated copy with some fields changed (e.g. ``blocks=...``)."""
        return Arch.from_dict({**self.to_dict(), **_dictify(changes)})

    # -- derived -------------------------------------------------------------------------
    def layers(self):
        """Every weight layer in forward order (see :class:`LayerSpec`)."""
        return _layers(self)

    @property
    def ops_used(self):
        return sorted({b.op for b in self.blocks if b.op != "skip"})

    def summary(self):
        """Totals: params and MACs per operator kind (weights only; BN not counted)."""
        params = {k: 0 for k in OPS}
        macs = {k: 0 for k in OPS}
        for layer in self.layers():
            params[layer.kind] += layer.params
            macs[layer.kind] += layer.macs
        total = sum(macs.values())
        return {
            "params": params, "params_total": sum(params.values()),
            "macs": macs, "macs_total": total,
            "mult_free_share": (macs["shift"] + macs["adder"]) / total if total else 0.0,
        }


def _dictify(changes):
    out = {}
    for key, value in changes.items():
        if key == "blocks":
            value = [dataclasses.asdict(b) if isinstance(b, Block) else b for b in value]
            for b in value:
                if b.get("op") == "skip":
                    b.pop("kernel", None), b.pop("expansion", None)
        elif key == "adder_eta":
            key, value = "adder", {"eta": value}
        elif dataclasses.is_dataclass(value):
            value = dataclasses.asdict(value)
        out[key] = value
    return out


# ----------------------------------------------------------------------------------------
# load / save
# ----------------------------------------------------------------------------------------
def load(path):
    """Read and validate an ``arch.json``; errors are ArchError prefixed with the file."""
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise ArchError(str(path), "no such file") from None
    except IsADirectoryError:
        raise ArchError(str(path), "is a directory, expected an arch.json file") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ArchError(str(path), f"cannot read ({e.__class__.__name__}: {e})") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise ArchError(str(path), f"invalid JSON at line {e.lineno} column {e.colno}: "
                        f"{e.msg}") from None
    try:
        return _parse(data)
    except ArchError as e:
        raise ArchError(f"{path}: {e.path}" if e.path else str(path), e.detail) from None


def loads(text):
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise ArchError("", f"invalid JSON at line {e.lineno} column {e.colno}: {e.msg}") \
            from None
    return _parse(data)


def dumps(arch):
    """The canonical JSON text of an arch (blocks one per line)."""
    d = arch.to_dict()
    lines = ["{"]
    items = list(d.items())
    for i, (key, value) in enumerate(items):
        comma = "," if i < len(items) - 1 else ""
        if key == "blocks":
            lines.append('  "blocks": [')
            for j, b in enumerate(value):
                bc = "," if j < len(value) - 1 else ""
                lines.append(f"    {json.dumps(b)}{bc}")
            lines.append(f"  ]{comma}")
        else:
            lines.append(f"  {json.dumps(key)}: {json.dumps(value)}{comma}")
    lines.append("}")
    return "\n".join(lines) + "\n"


def save(arch, path):
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(dumps(arch))
    return path


# ----------------------------------------------------------------------------------------
# validation
# ----------------------------------------------------------------------------------------
def _fmt_choices(choices):
    return ", ".join(str(c) for c in choices)


_MISSING = object()


def _lookup(obj, key, path, required):
    """(field path, value), the value ``_MISSING`` when absent; raises if required."""
    p = f"{path}.{key}" if path else key
    if key not in obj:
        if required:
            raise ArchError(p, "missing required field")
        return p, _MISSING
    return p, obj[key]


def _int(obj, key, path, *, default=None, required=False, choices=None, lo=None, hi=None):
    p, v = _lookup(obj, key, path, required)
    if v is _MISSING:
        return default
    if isinstance(v, bool) or not isinstance(v, int):
        if isinstance(v, float) and v.is_integer():
            raise ArchError(p, f"{v!r} must be an integer (write {int(v)})")
        raise ArchError(p, f"{json.dumps(v)} is not an integer")
    if choices is not None and v not in choices:
        raise ArchError(p, f"{v} is not one of {_fmt_choices(choices)}")
    if lo is not None and v < lo:
        raise ArchError(p, f"{v} is below the minimum {lo}")
    if hi is not None and v > hi:
        raise ArchError(p, f"{v} is above the maximum {hi}")
    return v


def _str(obj, key, path, *, default=None, required=False, choices=None):
    p, v = _lookup(obj, key, path, required)
    if v is _MISSING:
        return default
    if not isinstance(v, str):
        raise ArchError(p, f"{json.dumps(v)} is not a string")
    if choices is not None and v not in choices:
        raise ArchError(p, f"{json.dumps(v)} is not one of "
                        f"{', '.join(json.dumps(c) for c in choices)}")
    return v


def _obj(obj, key, path, *, required=False):
    p, v = _lookup(obj, key, path, required)
    if v is _MISSING:
        return None
    if not isinstance(v, dict):
        raise ArchError(p, f"expected an object, got {_json_type(v)}")
    return v


def _json_type(v):
    if isinstance(v, dict):
        return "an object"
    if isinstance(v, list):
        return "a list"
    if isinstance(v, str):
        return "a string"
    if isinstance(v, bool):
        return "a boolean"
    if v is None:
        return "null"
    return "a number"


def _no_unknown(obj, allowed, path):
    for key in obj:
        if key not in allowed:
            p = f"{path}.{key}" if path else key
            raise ArchError(p, f"unknown field (expected one of {', '.join(allowed)})")


_TOP_FIELDS = ("schema", "name", "dataset", "input", "num_classes", "stem", "blocks",
               "head_channels", "shift", "adder")
_BLOCK_FIELDS = ("op", "kernel", "expansion", "stride", "out_channels")


def _parse(data):
    if not isinstance(data, dict):
        raise ArchError("", f"expected a JSON object at the top level, got {_json_type(data)}")
    _no_unknown(data, _TOP_FIELDS, "")
    schema = _int(data, "schema", "", default=SCHEMA_VERSION)
    if schema != SCHEMA_VERSION:
        raise ArchError("schema", f"version {schema} is not supported (this tool reads "
                        f"version {SCHEMA_VERSION})")
    name = _str(data, "name", "", required=True)
    if not _NAME_RE.fullmatch(name):
        raise ArchError("name", f"{json.dumps(name)} must be 1-64 characters of letters, "
                        "digits, '.', '_' or '-' (it names the build directory)")
    dataset = _str(data, "dataset", "", required=True, choices=tuple(DATASETS))
    (ds_shape, ds_classes) = DATASETS[dataset]

    shape = ds_shape
    if "input" in data:
        v = data["input"]
        if (not isinstance(v, list) or len(v) != 3
                or any(isinstance(x, bool) or not isinstance(x, int) for x in v)):
            raise ArchError("input", f"{json.dumps(v)} is not [channels, height, width]")
        if tuple(v) != ds_shape:
            raise ArchError("input", f"{json.dumps(v)} does not match dataset {dataset} "
                            f"({json.dumps(list(ds_shape))})")
        shape = tuple(v)
    num_classes = _int(data, "num_classes", "", default=ds_classes)
    if num_classes != ds_classes:
        raise ArchError("num_classes", f"{num_classes} does not match dataset {dataset} "
                        f"({ds_classes} classes)")

    s = _obj(data, "stem", "", required=True)
    _no_unknown(s, ("channels", "kernel", "stride"), "stem")
    stem = Stem(channels=_int(s, "channels", "stem", required=True, lo=1, hi=MAX_CHANNELS),
                kernel=_int(s, "kernel", "stem", default=3, choices=STEM_KERNELS),
                stride=_int(s, "stride", "stem", default=1, choices=STRIDES))

    if "blocks" not in data:
        raise ArchError("blocks", "missing required field")
    raw_blocks = data["blocks"]
    if not isinstance(raw_blocks, list):
        raise ArchError("blocks", f"expected a list, got {_json_type(raw_blocks)}")
    if not raw_blocks:
        raise ArchError("blocks", "must list at least one block")
    blocks = []
    for i, b in enumerate(raw_blocks):
        p = f"blocks[{i}]"
        if not isinstance(b, dict):
            raise ArchError(p, f"expected an object, got {_json_type(b)}")
        _no_unknown(b, _BLOCK_FIELDS, p)
        op = _str(b, "op", p, required=True, choices=BLOCK_OPS)
        stride = _int(b, "stride", p, default=1, choices=STRIDES)
        out = _int(b, "out_channels", p, required=True, lo=1, hi=MAX_CHANNELS)
        if op == "skip":
            for key in ("kernel", "expansion"):
                if key in b:
                    raise ArchError(f"{p}.{key}", "not allowed for a skip block")
            blocks.append(Block(op=op, out_channels=out, stride=stride, kernel=None,
                                expansion=None))
        else:
            kernel = _int(b, "kernel", p, required=True, choices=KERNELS)
            expansion = _int(b, "expansion", p, required=True, choices=EXPANSIONS)
            blocks.append(Block(op=op, out_channels=out, stride=stride, kernel=kernel,
                                expansion=expansion))

    head = _int(data, "head_channels", "", default=0, lo=0, hi=MAX_CHANNELS)

    sh = _obj(data, "shift", "")
    shift = ShiftRange()
    if sh is not None:
        _no_unknown(sh, ("p_min", "p_max"), "shift")
        lo, hi = SHIFT_P_LIMITS
        p_min = _int(sh, "p_min", "shift", default=shift.p_min, lo=lo, hi=hi)
        p_max = _int(sh, "p_max", "shift", default=shift.p_max, lo=lo, hi=hi)
        if p_min > p_max:
            raise ArchError("shift.p_min", f"{p_min} is above shift.p_max ({p_max})")
        if p_max - p_min + 1 > SHIFT_MAX_LEVELS:
            raise ArchError("shift", f"[{p_min}, {p_max}] has {p_max - p_min + 1} exponents; "
                            f"at most {SHIFT_MAX_LEVELS} (a 5-bit exponent)")
        shift = ShiftRange(p_min, p_max)

    ad = _obj(data, "adder", "")
    eta = 0.2
    if ad is not None:
        _no_unknown(ad, ("eta",), "adder")
        if "eta" in ad:
            eta = ad["eta"]
            if isinstance(eta, bool) or not isinstance(eta, (int, float)) or not eta > 0:
                raise ArchError("adder.eta", f"{json.dumps(eta)} is not a positive number")
            eta = float(eta)

    arch = Arch(name=name, dataset=dataset, blocks=tuple(blocks), stem=stem, input=shape,
                num_classes=num_classes, head_channels=head, shift=shift, adder_eta=eta,
                schema=schema)
    _check_shapes(arch)
    return arch


def _conv_out(hw, kernel, stride, padding):
    return tuple((n + 2 * padding - kernel) // stride + 1 for n in hw)


def _check_shapes(arch):
    hw = _conv_out(arch.input[1:], arch.stem.kernel, arch.stem.stride, arch.stem.kernel // 2)
    for i, b in enumerate(arch.blocks):
        if b.stride == 2 and min(hw) < 2:
            raise ArchError(f"blocks[{i}].stride", f"2 cannot reduce the {hw[0]}x{hw[1]} "
                            "feature map any further")
        k = b.kernel or 1
        hw = _conv_out(hw, k, b.stride, k // 2)


# ----------------------------------------------------------------------------------------
# layer enumeration (no torch needed: the mapper and cost models use it)
# ----------------------------------------------------------------------------------------
def _layers(arch):
    out = []
    c, hw = arch.input[0], tuple(arch.input[1:])

    def add(name, kind, role, cin, cout, k, s, groups, bn=True, relu=True, residual=False):
        nonlocal hw
        pad = k // 2
        o = _conv_out(hw, k, s, pad)
        out.append(LayerSpec(name, kind, role, cin, cout, k, s, pad, groups, hw, o, bn,
                             relu, residual))
        hw = o

    st = arch.stem
    add("stem.op", "conv", "stem", c, st.channels, st.kernel, st.stride, 1)
    c = st.channels
    for i, b in enumerate(arch.blocks):
        pre = f"blocks.{i}"
        if b.op == "skip":
            if c != b.out_channels or b.stride != 1:
                add(f"{pre}.proj.op", "conv", "skip", c, b.out_channels, 1, b.stride, 1)
            c = b.out_channels
            continue
        residual = c == b.out_channels and b.stride == 1
        hidden = c * b.expansion
        if b.expansion != 1:
            add(f"{pre}.expand.op", b.op, "expand", c, hidden, 1, 1, 1)
        add(f"{pre}.depthwise.op", b.op, "depthwise", hidden, hidden, b.kernel, b.stride,
            hidden)
        add(f"{pre}.project.op", b.op, "project", hidden, b.out_channels, 1, 1, 1,
            relu=False, residual=residual)
        c = b.out_channels
    if arch.head_channels:
        add("head.op", "conv", "head", c, arch.head_channels, 1, 1, 1)
        c = arch.head_channels
    hw = (1, 1)   # global average pool
    add("classifier", "conv", "classifier", c, arch.num_classes, 1, 1, 1, bn=False,
        relu=False)
    return out


# ----------------------------------------------------------------------------------------
# CLI
# ----------------------------------------------------------------------------------------
def format_table(arch):
    rows = [f"{'layer':28s} {'kind':6s} {'in':>4s} {'out':>4s} {'k':>2s} {'s':>2s} "
            f"{'groups':>6s} {'in hw':>6s} {'out hw':>6s} {'params':>7s} {'MACs':>9s}"]
    for L in arch.layers():
        rows.append(f"{L.name:28s} {L.kind:6s} {L.in_ch:4d} {L.out_ch:4d} {L.kernel:2d} "
                    f"{L.stride:2d} {L.groups:6d} {L.in_hw[0]:>3d}x{L.in_hw[1]:<2d} "
                    f"{L.out_hw[0]:>3d}x{L.out_hw[1]:<2d} {L.params:7d} {L.macs:9d}")
    s = arch.summary()
    rows.append("totals: params " + ", ".join(f"{k} {v}" for k, v in s["params"].items())
                + f" (all {s['params_total']}); MACs "
                + ", ".join(f"{k} {v}" for k, v in s["macs"].items())
                + f" (all {s['macs_total']}); shift+adder share of MACs "
                f"{100 * s['mult_free_share']:.1f}%")
    return "\n".join(rows)


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m sw.arch",
                                 description="validate an arch.json and print its layers")
    ap.add_argument("path", nargs="+", help="arch.json file(s)")
    ap.add_argument("--json", action="store_true", help="print the normalised file instead")
    args = ap.parse_args(argv)
    status = 0
    for path in args.path:
        try:
            arch = load(path)
        except ArchError as e:
            print(f"error: {e}", file=sys.stderr)
            status = 2
            continue
        if args.json:
            sys.stdout.write(dumps(arch))
        else:
            print(f"{path}: {arch.name} ({arch.dataset}, {len(arch.blocks)} blocks) OK")
            print(format_table(arch))
    return status


if __name__ == "__main__":
    sys.exit(main())
