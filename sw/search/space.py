"""The search space: a fixed macro structure (stem, block widths and strides) and, per
block, one choice of (operator type, kernel, expansion) or skip (shared/DESIGN.md section 2).

    space = Space.from_arch(sw.arch.load("archs/default/arch.json"), "hybrid")
    arch = space.arch([0, 18, ...], name="x")      # choice indices -> a validated sw.arch.Arch

``CHOICES[j]`` is ``(op, kernel, expansion)`` or ``("skip", None, None)``. Spaces:
``hybrid`` (conv, shift, adder), ``conv`` (all-conv, FBNet-like), ``mult-free`` (shift,
adder). Following NASA, the first and the last block are never adders.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from sw.arch import EXPANSIONS, KERNELS, OPS, Arch, Block

CHOICES = tuple((op, k, e) for op in OPS for k in KERNELS for e in EXPANSIONS) \
    + (("skip", None, None),)
SKIP = len(CHOICES) - 1
SPACES = {"hybrid": ("conv", "shift", "adder"), "conv": ("conv",),
          "mult-free": ("shift", "adder")}


class SpaceError(ValueError):
    """A bad space, macro or choice list (one-line message)."""


def choice_index(op, kernel=None, expansion=None):
    return SKIP if op == "skip" else CHOICES.index((op, kernel, expansion))


def label(j):
    """``conv-k3-e6`` or ``skip``: the name of choice ``j`` in logs and result.json."""
    op, k, e = CHOICES[j]
    return "skip" if op == "skip" else f"{op}-k{k}-e{e}"


def from_label(text):
    """The choice index of a :func:`label` (SpaceError if it names none)."""
    names = [label(j) for j in range(len(CHOICES))]
    if text not in names:
        raise SpaceError(f"{text!r} is not a block choice (e.g. conv-k3-e6, skip)")
    return names.index(text)


@dataclass(frozen=True)
class Space:
    """``macro``: an Arch whose block widths/strides fix the skeleton; ``allowed[i]``: the
    choice indices block ``i`` may take."""

    macro: Arch
    kind: str
    allowed: tuple

    @classmethod
    def from_arch(cls, macro, kind="hybrid"):
        if kind not in SPACES:
            raise SpaceError(f"space: {kind!r} is not one of {', '.join(SPACES)}")
        n = len(macro.blocks)
        allowed = []
        for i in range(n):
            ops = [op for op in SPACES[kind] if not (op == "adder" and i in (0, n - 1))]
            allowed.append(tuple(j for j, (op, _, _) in enumerate(CHOICES)
                                 if op in ops or op == "skip"))
        return cls(macro, kind, tuple(allowed))

    @property
    def n_blocks(self):
        return len(self.macro.blocks)

    def mask(self, choices=None):
        """Bool [blocks, len(CHOICES)]: allowed (and, if given, in the subset ``choices``
        (a predicate on ``(op, kernel, expansion)``) where that leaves any choice)."""
        m = torch.zeros(self.n_blocks, len(CHOICES), dtype=torch.bool)
        for i, js in enumerate(self.allowed):
            sub = [j for j in js if choices is None or choices(*CHOICES[j])]
            m[i, sub or list(js)] = True
        return m

    def in_channels(self, i):
        return self.macro.blocks[i - 1].out_channels if i else self.macro.stem.channels

    def blocks(self, choices):
        if len(choices) != self.n_blocks:
            raise SpaceError(f"choices: {len(choices)} given for {self.n_blocks} blocks")
        out = []
        for i, (j, b) in enumerate(zip(choices, self.macro.blocks)):
            if j not in self.allowed[i]:
                raise SpaceError(f"choices[{i}]: {CHOICES[j]} is not allowed in block {i} of "
                                 f"the {self.kind} space")
            op, k, e = CHOICES[j]
            out.append(Block(op=op, out_channels=b.out_channels, stride=b.stride, kernel=k,
                             expansion=e))
        return out

    def arch(self, choices, name=None):
        """The validated Arch of one choice per block."""
        return self.macro.replace(blocks=self.blocks(choices), name=name or self.macro.name)

    def choices_of(self, arch):
        """Choice indices of an Arch with this macro (SpaceError if it does not fit)."""
        if [(b.out_channels, b.stride) for b in arch.blocks] != \
                [(b.out_channels, b.stride) for b in self.macro.blocks] \
                or arch.stem != self.macro.stem or arch.head_channels != self.macro.head_channels:
            raise SpaceError(f"arch {arch.name!r} does not have this space's macro structure")
        return [choice_index(b.op, b.kernel, b.expansion) for b in arch.blocks]

    def random(self, gen):
        """Uniformly random choices (``gen``: a torch.Generator)."""
        return [js[int(torch.randint(len(js), (1,), generator=gen))] for js in self.allowed]
