"""What the training loop eats: one batch protocol, for pre-training and for fine-tuning.

``minispdf.train.train(model, batches, ...)`` calls only ``batches.get_batch(split, generator,
device)``. Two kinds of batches follow :class:`Batches`:

* :class:`TokenBatches` (pre-training): random windows of a tokenized corpus; no loss mask;
* :class:`TaskBatches` (fine-tuning): a task's (input, reference) pairs, padded, with a loss mask
  over the reference tokens (the format of :mod:`minispdf.tasks.finetune`).

Both check their data when built, so a corpus too small for the context or a task without
training examples is refused before any training starts.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import torch

from .errors import MiniSPDFError
from .tasks.core import Task, counts_text, seeded_order
from .tasks.finetune import FinetuneBatches, training_pairs


@runtime_checkable
class Batches(Protocol):
    """``get_batch(split, generator, device) -> (x, y, loss_mask)``.

    ``split`` is ``"train"`` or ``"val"``. ``x`` and ``y`` are ``(B, T)`` LongTensors, ``y`` being
    ``x`` shifted by one token; ``loss_mask`` is a ``(B, T)`` BoolTensor of the positions whose loss
    counts, or None when all do. Sampling draws from ``generator`` only, so restoring its state
    restores the data position (what a resumed run relies on).
    """

    def get_batch(self, split: str, generator: torch.Generator,
                  device="cpu") -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]: ...


class TokenBatches:
    """Language-model batches of a prepared corpus (:class:`minispdf.data.TokenData`) with a fixed
    batch size and context; every position counts (``loss_mask`` is None)."""

    def __init__(self, data, batch_size: int, block_size: int):
        data.validate(block_size)
        self.data, self.batch_size, self.block_size = data, batch_size, block_size

    def get_batch(self, split: str, generator: torch.Generator, device="cpu"):
        x, y = self.data.get_batch(split, self.batch_size, self.block_size, generator, device)
        return x, y, None


class TaskBatches:
    """A task's train and val splits as padded batches with a loss mask over the references.

    A task with training examples but no val split gets a seeded 10% of the training *inputs*
    held out for validation (so no input is in both).
    """

    def __init__(self, tokenizer, task: Task, block_size: int, batch_size: int,
                 truncate: bool = True,
                 seed: int = 0):
        if not task.train:
            raise MiniSPDFError(
                f"task {task.name} has no training examples ({counts_text(task)}): pass a "
                f"directory or "
                "train file (e.g. --train_file devset.csv), or a task with a train split"
            )
        train, val = task.train, task.val
        if not val:
            if len(train) < 2:
                raise MiniSPDFError(
                    f"task {task.name} has a single training input: give a val file or more data")
            order = seeded_order(len(train), seed)
            n_val = max(1, round(0.1 * len(train)))
            val = [train[i] for i in sorted(order[:n_val])]
            train = [train[i] for i in sorted(order[n_val:])]
        self.task = task
        self.splits = {name: FinetuneBatches(tokenizer, training_pairs(examples), block_size,
                                             batch_size,
                                             torch.Generator(), truncate=truncate)
                       for name, examples in (("train", train), ("val", val))}

    def get_batch(self, split: str, generator: torch.Generator, device="cpu"):
        x, y, mask = self.splits[split](generator)
        return x.to(device), y.to(device), mask.to(device)
