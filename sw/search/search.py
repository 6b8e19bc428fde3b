"""Differentiable, first-order bilevel search (NASA / FBNet) with a hardware-cost term.

Architecture parameters ``alpha`` [blocks, choices] (disallowed choices masked out).
Each search step:

1. weight step on a batch of split A: one path per block sampled from softmax(alpha);
2. alpha step on a batch of split B: Gumbel-softmax weights ``g = softmax((alpha + G) /
   tau)``, the top-2 paths of each block run and are mixed with ``g`` renormalised over
   them; loss ``CE + lam * |E[cost] / budget - 1|`` (TuNAS' absolute reward: the budget is
   a target to use, not only a cap; + ``mu * E[energy] / energy_ref`` for the energy
   objective), ``E[.]`` under ``p = softmax(alpha)`` from the cost tables.

``tau`` anneals geometrically from ``tau0`` to ``tau_end`` over the search epochs; ``lam``
doubles after an epoch whose derived network (argmax) lies outside the window
``[window * budget, budget]`` and halves inside it (NASA's adaptive FLOPs window).
:func:`derive` takes the argmax and, while it is over the budget, swaps the block choice
that saves the most cost per lost log-probability.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .pgp import batches, set_trainable

NEG = -1e9


def masked(alpha, mask):
    return alpha.masked_fill(~mask, NEG)


def probs(alpha, mask):
    return F.softmax(masked(alpha, mask), -1)


def tau_at(cfg, epoch):
    t = epoch / max(1, cfg.search_epochs - 1)
    return cfg.tau0 * (cfg.tau_end / cfg.tau0) ** t


def sample_paths(alpha, mask, gen):
    """One path per block drawn from softmax(alpha)."""
    p = probs(alpha.detach(), mask)
    return [[(int(torch.multinomial(row, 1, generator=gen)), None)] for row in p]


def gumbel_top2(alpha, mask, tau, gen):
    """Per block the two best Gumbel-perturbed choices, weighted by the renormalised
    Gumbel-softmax (differentiable in alpha)."""
    u = torch.rand(alpha.shape, generator=gen, dtype=alpha.dtype).clamp_(1e-9, 1 - 1e-9)
    g = F.softmax(masked(alpha - torch.log(-torch.log(u)), mask) / tau, -1)
    mixes = []
    for i, row in enumerate(g):
        k = min(2, int(mask[i].sum()))
        top = torch.topk(row.detach(), k).indices
        w = row[top] / row[top].sum()
        mixes.append([(int(j), w[n]) for n, j in enumerate(top)])
    return mixes


class CostTerm:
    """Expected hardware cost of softmax(alpha) and the penalty of the search loss."""

    def __init__(self, hw, cfg, budget, energy_ref):
        self.hw, self.cfg, self.budget, self.energy_ref = hw, cfg, budget, energy_ref
        self.metric = "flops" if cfg.cost == "flops" else "cycles"
        self.tables = {}

    def refresh(self, lanes):
        """Recompute the tables at ``lanes`` = (lanes per chunk, word_bytes)."""
        self.lanes = lanes
        self.tables = {m: self.hw.table(m, lanes) for m in
                       {self.metric, "energy" if self.cfg.objective == "energy" else
                        self.metric}}

    def expected(self, p, metric=None):
        fixed, table = self.tables[metric or self.metric]
        return fixed + (p.double() * table).sum()

    def penalty(self, p, lam):
        e = self.expected(p)
        loss = lam * (e / self.budget - 1.0).abs()
        if self.cfg.objective == "energy":
            loss = loss + self.cfg.energy_weight * self.expected(p, "energy") / self.energy_ref
        return loss.float(), e.item()


def search_epoch(trainer, alpha, alpha_opt, cost, space, split_w, split_a, gen, first_step,
                 epoch, lam, flip):
    """One search epoch (weight and alpha steps alternate; ``cost`` refreshed by the
    caller); returns stats."""
    cfg = trainer.cfg
    set_trainable(trainer.net, "all")
    trainer.net.train()
    mask = space.mask()
    tau = tau_at(cfg, epoch)
    loss_sum = acc_sum = arch_ce = seen = 0
    expected = 0.0
    for i, ((xw, yw), (xa, ya)) in enumerate(zip(
            batches(*split_w, cfg.batch_size, gen, flip),
            batches(*split_a, cfg.batch_size, gen, flip))):
        loss, ok = trainer.step(xw, yw, sample_paths(alpha, mask, gen), first_step + i)
        ce = F.cross_entropy(trainer.net(xa, gumbel_top2(alpha, mask, tau, gen)), ya)
        pen, expected = cost.penalty(probs(alpha, mask), lam)
        (alpha.grad,) = torch.autograd.grad(ce + pen, alpha)
        alpha_opt.step()
        loss_sum, acc_sum, seen = loss_sum + loss * len(yw), acc_sum + ok, seen + len(yw)
        arch_ce += ce.item() * len(ya)
    return {"loss": loss_sum / seen, "train_acc": acc_sum / seen, "arch_ce": arch_ce / seen,
            "tau": tau, "lam": lam, "expected_cost": expected}


def next_lam(lam, derived, budget, window):
    """NASA's adaptive weight: double outside ``[window * budget, budget]``, else halve."""
    return lam * 2 if not window * budget <= derived <= budget else max(lam / 2, 1e-3)


def derive(space, alpha, fixed, table, budget):
    """(choices, cost): argmax of alpha, repaired greedily to ``budget`` by the cost table
    (``fixed``, ``table``): while over it, swap the block choice that saves the most cost
    per lost log-probability."""
    mask = space.mask()
    logp = torch.log_softmax(masked(alpha.detach(), mask), -1)
    choices = [int(j) for j in logp.argmax(-1)]
    table = table.clone().masked_fill_(~mask, math.inf)

    def cost_of(ch):
        return fixed + sum(float(table[i, j]) for i, j in enumerate(ch))

    while cost_of(choices) > budget:
        best = None
        for i, j in (mask & (table < table[range(len(choices)), choices][:, None])).nonzero():
            score = float(logp[i, choices[i]] - logp[i, j]) / float(
                table[i, choices[i]] - table[i, j])
            if best is None or score < best[0]:
                best = (score, int(i), int(j))
        if best is None:
            break
        choices[best[1]] = best[2]
    return choices, cost_of(choices)
