"""Differentiable, first-order bilevel search (NASA / FBNet) with a hardware-cost term.

Architecture parameters ``alpha`` [blocks, choices] (disallowed choices masked out).
Each search step:

1. weight step on a batch of split A: one path per block sampled uniformly among its
   choices (SPOS), not from softmax(alpha): sampled from alpha, only the paths it
   favoured early kept training, and the final one-shot ranking compared trained paths
   with starved ones (all-shift 56.5% one-shot against 77% for the adder-heavy argmax);
2. alpha step on a batch of split B: Gumbel-softmax weights ``g = softmax((alpha + G) /
   tau)``, the top-2 paths of each block run and are mixed with ``g`` renormalised over
   them; loss ``CE + lam * |cost(g) / budget - 1|`` (TuNAS' absolute reward: the budget
   is a target to use, not only a cap; + ``mu * energy(g) / energy_ref`` for the energy
   objective; + ``FIT_WEIGHT * misfit`` of the network drawn and of the most probable
   one where the board's organisation can run out, :meth:`CostTerm.penalty`),
   ``cost(g)`` the cost of the sampled architecture ``g`` from the cost tables (FBNet).
   A penalty on the expected cost under ``softmax(alpha)`` holds only on average: in a
   quick run it sat at the budget (230k of 233k cycles) while the argmax network cost
   137-162k.

``tau`` anneals geometrically from ``tau0`` to ``tau_end`` over the search epochs; ``lam``
doubles after an epoch whose derived network (argmax) lies outside the window
``[window * budget, budget]`` and halves inside it (NASA's adaptive FLOPs window).
:func:`derive` gives the most probable networks within the budget (exact, by
:func:`k_best`); the run then picks among them by one-shot validation accuracy.
"""
from __future__ import annotations

import heapq
import math

import torch
import torch.nn.functional as F

from .pgp import batches, sample_uniform, set_trainable

NEG = -1e9
#: weight of the misfit term (:meth:`CostTerm.misfit`; small organisation only): a sample
#: whose weight words lie 10% of the largest feasible depth outside every feasible range
#: adds 0.4 to the loss, about what a 40% budget miss adds at ``lam`` 1
FIT_WEIGHT = 4.0


def masked(alpha, mask):
    return alpha.masked_fill(~mask, NEG)


def probs(alpha, mask):
    return F.softmax(masked(alpha, mask), -1)


def tau_at(cfg, epoch):
    t = epoch / max(1, cfg.search_epochs - 1)
    return cfg.tau0 * (cfg.tau_end / cfg.tau0) ** t


def gumbel(alpha, mask, tau, gen):
    """A Gumbel-softmax sample ``softmax((alpha + G) / tau)`` [blocks, choices]
    (differentiable in alpha; 0 on disallowed choices)."""
    u = torch.rand(alpha.shape, generator=gen, dtype=alpha.dtype).clamp_(1e-9, 1 - 1e-9)
    return F.softmax(masked(alpha - torch.log(-torch.log(u)), mask) / tau, -1)


def top2(g, mask):
    """Per block the two largest entries of the sample ``g``, weighted by ``g``
    renormalised over them: the supernet's ``mixes``."""
    mixes = []
    for i, row in enumerate(g):
        k = min(2, int(mask[i].sum()))
        top = torch.topk(row.detach(), k).indices
        w = row[top] / row[top].sum()
        mixes.append([(int(j), w[n]) for n, j in enumerate(top)])
    return mixes


def straight_through(p):
    """The one-hot of ``p``'s largest entry per block, with ``p``'s gradient."""
    hard = F.one_hot(p.detach().argmax(-1), p.shape[-1]).to(p.dtype)
    return hard - p.detach() + p


class CostTerm:
    """Hardware cost of (a distribution over) networks and the penalty of the search
    loss."""

    def __init__(self, hw, cfg, budget, energy_ref):
        self.hw, self.cfg, self.budget, self.energy_ref = hw, cfg, budget, energy_ref
        self.metric = "flops" if cfg.cost == "flops" else "cycles"
        self.tables, self.fit = {}, None

    def refresh(self, lanes):
        """Recompute the tables at ``lanes`` = (lanes per chunk, word_bytes[, extra]), and
        the fit tables where that organisation can run out (the UP5K's small one)."""
        self.lanes = lanes
        self.fit = self.hw.fit_tables(lanes)
        self.tables = {m: self.hw.table(m, lanes) for m in
                       {self.metric, "energy" if self.cfg.objective == "energy" else
                        self.metric}}

    def expected(self, p, metric=None):
        """``fixed + sum(p * table)``: the cost of a sample ``p``, or the expected cost
        when ``p`` is the choice distribution."""
        fixed, table = self.tables[metric or self.metric]
        return fixed + (p.double() * table).sum()

    def misfit(self, p):
        """How far the network of ``p``'s largest entry per block lies outside what fits
        the board, with the straight-through gradient of ``p`` (0 where every network
        fits). On a soft sample itself a mixture of networks that do not fit may average
        to one that does: in the first search epoch of a quick UP5K run (tau 5) no soft
        sample had a misfit, while 69% of the networks drawn did not fit."""
        if not self.fit:
            return torch.zeros((), dtype=torch.float64)
        return self.fit.misfit(straight_through(p))

    def penalty(self, p, lam, dist=None):
        """(loss term, cost of ``p``, misfit of ``p``). The fit term is on the network
        drawn by the sample ``p`` and, given the choice distribution ``dist``, on its
        most probable network (the derived one): with alpha still flat the draws are
        random networks, mostly too large for the UP5K, and a term on them alone pushed
        the derived network, the most probable choice per block, down into the weight
        memory's gap (quick UP5K runs, 16 alpha steps per epoch: 3,500-4,700 words)."""
        e, miss = self.expected(p), self.misfit(p)
        fit = miss + (self.misfit(dist) if dist is not None else 0)
        loss = lam * (e / self.budget - 1.0).abs() + FIT_WEIGHT * fit
        if self.cfg.objective == "energy":
            loss = loss + self.cfg.energy_weight * self.expected(p, "energy") / self.energy_ref
        return loss.float(), e.item(), miss.item()


def search_epoch(trainer, alpha, alpha_opt, cost, space, split_w, split_a, gen, first_step,
                 epoch, lam, flip):
    """One search epoch (weight and alpha steps alternate; ``cost`` refreshed by the
    caller); returns stats."""
    cfg = trainer.cfg
    set_trainable(trainer.net, "all")
    trainer.net.train()
    mask = space.mask()
    tau = tau_at(cfg, epoch)
    loss_sum = acc_sum = arch_ce = seen = misfit = misses = 0
    for i, ((xw, yw), (xa, ya)) in enumerate(zip(
            batches(*split_w, cfg.batch_size, gen, flip),
            batches(*split_a, cfg.batch_size, gen, flip))):
        loss, ok = trainer.step(xw, yw, sample_uniform(mask, gen), first_step + i)
        g = gumbel(alpha, mask, tau, gen)
        ce = F.cross_entropy(trainer.net(xa, top2(g, mask)), ya)
        pen, _, miss = cost.penalty(g, lam, probs(alpha, mask))
        misfit, misses = misfit + miss, misses + (miss > 0)
        (alpha.grad,) = torch.autograd.grad(ce + pen, alpha)
        alpha_opt.step()
        loss_sum, acc_sum, seen = loss_sum + loss * len(yw), acc_sum + ok, seen + len(yw)
        arch_ce += ce.item() * len(ya)
    stats = {"loss": loss_sum / seen, "train_acc": acc_sum / seen, "arch_ce": arch_ce / seen,
             "tau": tau, "lam": lam,
             "expected_cost": cost.expected(probs(alpha.detach(), mask)).item()}
    if cost.fit:          # mean misfit of the samples, and the share that did not fit
        stats.update(misfit=misfit / (i + 1), misfit_share=misses / (i + 1))
    return stats


def next_lam(lam, derived, budget, window):
    """NASA's adaptive weight: double outside ``[window * budget, budget]``, else halve."""
    return lam * 2 if not window * budget <= derived <= budget else max(lam / 2, 1e-3)


def k_best(logp, fixed, table, budget, k):
    """The ``k`` choice lists of highest total log-probability whose cost ``fixed + sum_i
    table[i, c_i]`` is within ``budget``, best first, as [(choices, cost, logp)]; [] when
    none is. Exact: a multiple-choice knapsack solved block by block, dropping a partial
    network when ``k`` others cost no more and are at least as likely (any completion of
    it is then beaten ``k`` times). Disallowed choices: ``logp`` = -inf."""
    logp, table = logp.double(), table.double()
    ok = torch.isfinite(logp) & torch.isfinite(table)
    rest = [0.0] * (len(logp) + 1)                  # cheapest completion of blocks i..
    for i in reversed(range(len(logp))):
        rest[i] = rest[i + 1] + float(table[i][ok[i]].min())
    states = [((), float(fixed), 0.0)]
    for i in range(len(logp)):
        grown = [(ch + (j,), c + float(table[i, j]), lp + float(logp[i, j]))
                 for ch, c, lp in states for j in ok[i].nonzero().flatten().tolist()
                 if c + float(table[i, j]) + rest[i + 1] <= budget]
        states, best = [], []                      # best: the k highest logp seen so far
        for state in sorted(grown, key=lambda s: (s[1], -s[2])):
            if len(best) < k or state[2] > best[0]:
                states.append(state)
                heapq.heappush(best, state[2])
                if len(best) > k:
                    heapq.heappop(best)
    return [(list(ch), c, lp) for ch, c, lp in sorted(states, key=lambda s: -s[2])[:k]]


def derive(space, alpha, fixed, table, budget, k=1):
    """The ``k`` most probable networks under softmax(alpha) within ``budget`` (see
    :func:`k_best`), as [(choices, cost, logp)]; when none is, the cheapest network."""
    mask = space.mask()
    logp = torch.log_softmax(masked(alpha.detach(), mask), -1).masked_fill(~mask, -math.inf)
    found = k_best(logp, fixed, table, budget, k)
    if found:
        return found
    cheap = [int(j) for j in table.masked_fill(~mask, math.inf).argmin(-1)]
    return [(cheap, fixed + sum(float(table[i, j]) for i, j in enumerate(cheap)),
             sum(float(logp[i, j]) for i, j in enumerate(cheap)))]
