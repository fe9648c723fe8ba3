"""The kit's own answer to each exercise, with the student's signature, built on the library.

A lesson's cells below an exercise use the exercise's function (to draw a mask, count FLOPs, ...).
Until the student's version passes its checks, :func:`.exercises.check` hands those cells the
function here instead and says so, so that Run All on a fresh student copy reaches the last cell.
Each is the oracle its exercise is checked against (``tests/test_assignments.py`` checks that every
one passes its own exercise's checks).
"""

from __future__ import annotations

import math

import torch


def model_sparsity(shapes, masked, sparsity):
    zeros = sum(math.prod(shapes[n]) - round((1 - sparsity) * math.prod(shapes[n])) for n in masked)
    return zeros / sum(math.prod(shape) for shape in shapes.values())


def random_mask(shape, sparsity, generator=None):
    from ..sparsity import random_mask as library_random_mask

    return library_random_mask(tuple(shape), sparsity,
                               generator or torch.Generator().manual_seed(0))


def magnitude_mask(weight, sparsity):
    from .checks import library_mask

    return library_mask(tuple(weight.shape), sparsity, "magnitude", weight=weight.detach())


def block_forward_flops(d_model, seq_len, n_head, sparsity):
    from ..flops import flop_report
    from ..model import GPTConfig

    cfg = GPTConfig(n_layer=1, n_embd=d_model, n_head=n_head, block_size=seq_len, vocab_size=257)
    rep = flop_report(cfg, sparsity=sparsity, seq_len=seq_len)
    return sum(v["sparse"] for k, v in rep.components.items() if k not in ("embedding", "logits"))


def masked_adamw_step(params, masks, optimizer):
    from .checks import _reference_step

    _reference_step(params, masks, optimizer)


def loss_mask(prompt_len, n_tokens):
    # x = tokens[:-1]; position i predicts tokens[i + 1], a target token from index prompt_len on
    return [int(i + 1 >= prompt_len) for i in range(n_tokens - 1)]


def benefit_lost(arm, dense, scratch, measure):
    from ..study.claims import benefit_lost as study_benefit_lost

    cell = dict(task="t", size="s", set="full")
    rows = [dict(seed=s, arm=name, **cell, **{measure: v})
            for name, values in (("arm", arm), ("dense", dense), ("scratch", scratch))
            for s, v in values.items()]
    return study_benefit_lost(rows, measure, "arm", cell)


def equal_flop_steps(sparse_steps, sparse_flops_per_step, dense_flops_per_step):
    return max(1, round(sparse_steps * sparse_flops_per_step / dense_flops_per_step))


def two_four_mask(weight):
    from ..schedules import nm_mask

    return nm_mask(weight.detach(), 2, 4)


ANSWERS = {"model_sparsity": model_sparsity, "random_mask": random_mask,
           "magnitude_mask": magnitude_mask,
           "block_flops": block_forward_flops, "masked_step": masked_adamw_step,
           "loss_mask": loss_mask,
           "benefit_lost": benefit_lost, "equal_flop_steps": equal_flop_steps,
           "two_four_mask": two_four_mask}
