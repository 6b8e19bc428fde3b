"""Quantisation-aware fine-tuning through the fake-quantised graph.

The graph is ``sw.quant.core.fakequant_forward(train=True)``: integer-valued tensors with
straight-through rounding, the integer model's 16-bit requant multipliers, its clamps. Batch
norm statistics stay frozen (they are folded into the requantisation); weights, BN affine
parameters and biases train. Activation scales stay those of the PTQ calibration, so the
exported model after QAT has the same tensor scales.
"""
from __future__ import annotations

import math
import time

import numpy as np
import torch
import torch.nn.functional as F

from .core import fakequant_forward, pixels_to_q


def _augment(pix, gen, flip):
    """Random crop from a 2-pixel zero pad (+ horizontal flip) of float pixels [B,1,H,W]
    (the training recipe's augmentation, on pixel values so they stay integers)."""
    from sw.train import augment
    return augment(pix, gen, pad=2, flip=flip)


def qat_finetune(net, nodes, tq, cfg, images, labels, epochs=1, lr=0.002, batch_size=128,
                 momentum=0.9, grad_clip=5.0, seed=0, flip=False, log=print,
                 max_steps=None):
    """Fine-tune ``net`` (in place) for ``epochs`` over (uint8 images, labels) through the
    fake-quantised graph; cosine learning rate from ``lr`` to 0. Returns per-epoch stats."""
    params = [p for p in net.parameters() if p.requires_grad]
    opt = torch.optim.SGD(params, lr=lr, momentum=momentum, nesterov=True)
    n = len(labels)
    steps_per_epoch = math.ceil(n / batch_size)
    total = steps_per_epoch * epochs if max_steps is None else min(max_steps,
                                                                   steps_per_epoch * epochs)
    gen = torch.Generator()
    gen.manual_seed(seed)
    net.eval()                      # frozen BN statistics: they are folded into requant
    labels_t = torch.as_tensor(np.asarray(labels)).long()
    images_t = torch.as_tensor(np.asarray(images))
    step, history = 0, []
    for epoch in range(epochs):
        perm = torch.randperm(n, generator=gen)
        t0, seen, correct, loss_sum = time.perf_counter(), 0, 0, 0.0
        for b in range(steps_per_epoch):
            if step >= total:
                break
            idx = perm[b * batch_size:(b + 1) * batch_size]
            pix = images_t[idx].float()[:, None]
            pix = _augment(pix, gen, flip)
            xq = pixels_to_q(pix.round().to(torch.uint8), cfg.pixel_shift)
            for g in opt.param_groups:
                g["lr"] = 0.5 * lr * (1 + math.cos(math.pi * step / total))
            logits = fakequant_forward(nodes, tq, xq, cfg, train=True)
            y = labels_t[idx]
            loss = F.cross_entropy(logits, y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if grad_clip:
                torch.nn.utils.clip_grad_norm_(params, grad_clip)
            opt.step()
            step += 1
            seen += len(idx)
            loss_sum += loss.item() * len(idx)
            correct += (logits.argmax(1) == y).sum().item()
            if b % 50 == 0:
                log(f"  qat epoch {epoch + 1}/{epochs} step {b}/{steps_per_epoch} loss "
                    f"{loss.item():.4f}")
        dt = time.perf_counter() - t0
        history.append({"epoch": epoch + 1, "loss": loss_sum / max(1, seen),
                        "train_acc": correct / max(1, seen), "seconds": dt, "steps": step})
        log(f"  qat epoch {epoch + 1}/{epochs}: loss {loss_sum / max(1, seen):.4f} train "
            f"{100 * correct / max(1, seen):.2f}% ({dt:.0f} s)")
    net.eval()
    return history
