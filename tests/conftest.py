"""Shared test helpers: deterministic batch sources, a small fine-tuning task, the ``slow``
marker."""

import os

os.environ["HF_HUB_OFFLINE"] = "1"  # never touch the network from tests

import pytest
import torch

# Small models on a shared 2-core machine: one intra-op thread avoids spin-wait contention.
torch.set_num_threads(1)


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: takes more than ~10 s on 2 CPU cores")


class RandomBatches:
    """``get_batch(split, generator, device) -> (x, y, None)`` of random token sequences.

    Rows are drawn one at a time from ``generator``, so two micro-batches of 4 are exactly the
    rows of one batch of 8 drawn from the same generator state (grad-accumulation tests).
    """

    def __init__(self, vocab_size: int, block_size: int, batch_size: int):
        self.vocab_size = vocab_size
        self.block_size = block_size
        self.batch_size = batch_size

    def get_batch(self, split, generator, device="cpu"):
        rows = [torch.randint(0, self.vocab_size, (self.block_size + 1,), generator=generator)
                for _ in range(self.batch_size)]
        seq = torch.stack(rows)
        # contiguous: GPT.forward calls targets.view(-1), which fails on a strided slice
        return seq[:, :-1].contiguous().to(device), seq[:, 1:].contiguous().to(device), None


REF_LEN = 16  # bytes (= char tokens) of every reference of small_task()


def small_task(n_train: int = 24, n_val: int = 6):
    """A data-to-text ``Task`` that fits the nano preset's 64-token context with the char tokenizer.

    Inputs have different lengths (so fine-tuning batches are padded and the prompts differ);
    every reference is exactly ``REF_LEN`` bytes, so a batch of B pairs holds exactly
    ``B * (REF_LEN + 1)`` target tokens (the reference and its end of text), whatever was drawn.
    """
    from minispdf.tasks import Example, Task

    names = ["Al", "Bea", "Cyrus", "Dorothea", "Eli", "Fitzgerald", "Gus", "Hana"]
    foods = ["Thai", "French", "Indian", "English"]

    def example(i):
        ref = f"Place {i:03d} is ok."
        assert len(ref.encode()) == REF_LEN
        return Example(f"name[{names[i % len(names)]}], food[{foods[i % len(foods)]}]", [ref])

    return Task("small", "bleu", train=[example(i) for i in range(n_train)],
                val=[example(n_train + i) for i in range(n_val)])


@pytest.fixture(autouse=True)
def _offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
