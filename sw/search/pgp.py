"""NASA's progressive pretraining (PGP) of the supernet, architecture parameters frozen.

Phases (each some epochs; every step samples one path per block, uniformly among the
phase's choices, for the whole batch):

=============  =========================================  ======================
phase          paths sampled                              parameters trained
=============  =========================================  ======================
``cs-wide``    conv, shift, skip; widest expansion only   all but adder paths
``cs-all``     conv, shift, skip; every expansion         all but adder paths
``adder-wide`` adder, widest expansion                    adder paths only
``adder-all``  adder, every expansion                     adder paths only
``all``        every choice                               everything
=============  =========================================  ======================

Blocks with no choice of a phase's kind (no adders in the first and last block) sample
among all their choices. Adder phases are left out in spaces without adders.
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from sw.arch import EXPANSIONS
from sw.train import augment, clip_parameters, lr_at, to_input

PHASES = {
    "cs-wide": lambda op, k, e: op != "adder" and e in (None, max(EXPANSIONS)),
    "cs-all": lambda op, k, e: op != "adder",
    "adder-wide": lambda op, k, e: op == "adder" and e == max(EXPANSIONS),
    "adder-all": lambda op, k, e: op == "adder",
    "all": None,
}


def trains(phase, name):
    """Whether parameter ``name`` of the supernet is trained in ``phase``."""
    adder = ".families.adder" in name
    if phase.startswith("adder"):
        return adder
    return not adder if phase.startswith("cs") else True


def set_trainable(supernet, phase):
    for name, p in supernet.named_parameters():
        p.requires_grad_(trains(phase, name))


def sample_uniform(mask, gen):
    """One choice per block, uniform over each row of the bool mask."""
    return [[(int(row.nonzero()[torch.randint(int(row.sum()), (1,), generator=gen)]), None)]
            for row in mask]


class WeightTrainer:
    """SGD over the supernet's weights on a per-step cosine schedule across all epochs."""

    def __init__(self, supernet, cfg, total_steps, warmup_steps):
        self.net, self.cfg = supernet, cfg
        self.total, self.warmup = total_steps, warmup_steps
        decay = [p for n, p in supernet.named_parameters() if n.endswith("op.weight")]
        ids = {id(p) for p in decay}
        rest = [p for p in supernet.parameters() if id(p) not in ids]
        self.opt = torch.optim.SGD([{"params": decay, "weight_decay": cfg.weight_decay},
                                    {"params": rest, "weight_decay": 0.0}], lr=cfg.lr,
                                   momentum=0.9, nesterov=True)
        self.clipped = clip_parameters(supernet)

    def step(self, x, y, mixes, global_step):
        lr = lr_at(global_step, self.total, self.warmup, self.cfg.lr)
        for group in self.opt.param_groups:
            group["lr"] = lr
        logits = self.net(x, mixes)
        loss = F.cross_entropy(logits, y)
        if not torch.isfinite(loss):
            raise FloatingPointError(f"step {global_step}: loss is {loss.item()}; lower --lr")
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_([p for p in self.clipped if p.grad is not None],
                                 self.cfg.grad_clip)
        self.opt.step()
        return loss.item(), (logits.argmax(1) == y).sum().item()


def batches(images, labels, batch_size, gen, flip):
    """Shuffled, augmented (x, y) batches of uint8 arrays, drawn from ``gen``."""
    order = torch.randperm(len(labels), generator=gen)
    x_all, y_all = torch.as_tensor(images), torch.as_tensor(labels).long()
    for i in range(math.ceil(len(labels) / batch_size)):
        idx = order[i * batch_size:(i + 1) * batch_size]
        yield augment(to_input(x_all[idx]), gen, 2, flip), y_all[idx]


def pgp_epoch(trainer, space, phase, data, gen, first_step, flip):
    """One PGP epoch; returns {"loss", "train_acc"}."""
    set_trainable(trainer.net, phase)
    trainer.net.train()
    mask = space.mask(PHASES[phase])
    loss_sum, correct, seen = 0.0, 0, 0
    for i, (x, y) in enumerate(batches(*data, trainer.cfg.batch_size, gen, flip)):
        loss, ok = trainer.step(x, y, sample_uniform(mask, gen), first_step + i)
        loss_sum, correct, seen = loss_sum + loss * len(y), correct + ok, seen + len(y)
    return {"loss": loss_sum / seen, "train_acc": correct / seen}
