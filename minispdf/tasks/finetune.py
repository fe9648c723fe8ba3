"""The fine-tuning format: how an (input, reference) pair becomes tokens and a loss mask.

One training sequence is ``prompt + SEPARATOR + target + <eot>``, each piece encoded separately::

    tokens = enc(input) + enc(SEPARATOR) + enc(target) + [eot_id]

Decoding starts from :func:`encode_prompt` (``enc(input) + enc(SEPARATOR)``, the exact same
tokens) and stops at ``eot_id``. The loss mask of :func:`encode_example` is aligned with the
model's INPUT positions ``x = tokens[:-1]`` and next-token targets ``y = tokens[1:]``: it has
length ``len(tokens) - 1`` and ``mask[i]`` is 1 exactly when ``y[i]`` is a target token or the
final eot, i.e. for ``i >= len(prompt) - 1``. So the loss is averaged over the ``len(target) + 1``
predictions of the target and of the end of text, never over the prompt. Padded batches
(:class:`FinetuneBatches`) keep the same contract::

    x, y, mask = get_batch()                       # (B, T) long, long, bool
    logits = model(x)                              # (B, T, V)
    loss = F.cross_entropy(logits.view(-1, V), y.view(-1), reduction="none")[mask.view(-1)].mean()

(For a model whose forward computes the loss itself with ``ignore_index=-1``, pass
``y.masked_fill(~mask, -1)`` as its targets: the result is the same average.)
"""

from __future__ import annotations

from typing import Sequence

import torch

from minispdf.errors import MiniSPDFError

from .core import Example

#: What separates the input from the target in a fine-tuning sequence.
SEPARATOR = "\n"


def training_pairs(task_split: Sequence[Example]) -> list[tuple[str, str]]:
    """One ``(input, reference)`` pair per reference, in split order."""
    return [(ex.input, ref) for ex in task_split for ref in ex.references]


def pair_length(n_input: int, n_reference: int, n_separator: int) -> int:
    """Tokens in the fine-tuning sequence of one pair: input, separator, reference and the eot."""
    return n_input + n_separator + n_reference + 1


def pair_fits(n_input: int, n_reference: int, n_separator: int, block_size: int) -> bool:
    """The one rule for whether a pair fits the context: the model sees ``tokens[:-1]``, so a
    sequence of ``block_size + 1`` tokens fits. (``n_input=1``: can the reference be scored at all
    once the input is cut to a single token?)"""
    return pair_length(n_input, n_reference, n_separator) <= block_size + 1


def encode_prompt(tokenizer, input: str, max_tokens: int | None = None) -> list[int]:
    """The tokens decoding starts from: ``enc(input) + enc(SEPARATOR)``.

    With ``max_tokens``, the end of the input is cut (as :func:`encode_example` does) so that the
    prompt, separator included, has at most ``max_tokens`` tokens.
    """
    inp = list(tokenizer.encode(input))
    sep = list(tokenizer.encode(SEPARATOR))
    if max_tokens is not None:
        keep = max_tokens - len(sep)
        if keep < 1:
            raise MiniSPDFError(
                f"max_tokens={max_tokens} leaves no room for the input; use a larger --block_size"
            )
        inp = inp[:keep]
    return inp + sep


def encode_example(
    tokenizer,
    input: str,
    target: str,
    block_size: int,
    truncate: bool = True,
    index: int | None = None,
) -> tuple[list[int], list[int]]:
    """Encode one fine-tuning example; returns ``(tokens, loss_mask)``.

    ``tokens = enc(input) + enc(SEPARATOR) + enc(target) + [eot_id]``. ``loss_mask`` is aligned
    with ``x = tokens[:-1]`` / ``y = tokens[1:]``: ``len(loss_mask) == len(tokens) - 1`` and
    ``loss_mask[i] == 1`` iff ``tokens[i + 1]`` is a target token or the eot (0 for the prompt).

    A model sees ``x``, so ``len(tokens)`` may be at most ``block_size + 1``. A longer example
    raises :class:`MiniSPDFError` when ``truncate`` is False; when True the END of the input is cut
    so that separator, target and eot fit (and it raises if not even one input token would be left).
    ``index`` only names the example in error messages.
    """
    tokens, prompt_len, _ = _encode_ids(
        list(tokenizer.encode(input)), list(tokenizer.encode(SEPARATOR)),
        list(tokenizer.encode(target)),
        int(tokenizer.eot_id), block_size, truncate, index)
    mask = [0] * (prompt_len - 1) + [1] * (len(tokens) - prompt_len)
    return tokens, mask


def _encode_ids(inp: list[int], sep: list[int], tgt: list[int], eot: int, block_size: int,
                truncate: bool, index: int | None) -> tuple[list[int], int, bool]:
    """(tokens, prompt length after truncation, whether the input was cut): see encode_example."""
    n = pair_length(len(inp), len(tgt), len(sep))
    what = f"example {index}" if index is not None else "example"
    cut = not pair_fits(len(inp), len(tgt), len(sep), block_size)
    if cut:
        if not truncate:
            raise MiniSPDFError(
                f"{what} is {n} tokens, longer than the context block_size {block_size} (+1 for "
                f"the shifted target); "
                "use a larger --block_size, or truncate=True to cut the end of the input"
            )
        if not pair_fits(1, len(tgt), len(sep), block_size):
            raise MiniSPDFError(
                f"{what}: its reference alone is {len(tgt)} tokens (+{len(sep)} separator +1 eot), "
                f"leaving no room "
                f"for the input in block_size {block_size}; use a larger --block_size"
            )
        inp = inp[:block_size + 1 - pair_length(0, len(tgt), len(sep))]  # as many as fit
    return inp + sep + tgt + [eot], len(inp) + len(sep), cut


class FinetuneBatches:
    """Random padded batches of encoded (input, reference) pairs (each encoded once, as
    :func:`encode_example` does); averaging the per-position cross-entropy over ``mask`` gives
    the loss over target tokens and the eot only (see the module docstring).

    Call it (``get_batch()`` or ``get_batch(generator)``) to get ``(x, y, mask)``: ``x``, ``y``
    LongTensors and ``mask`` a BoolTensor, all ``(B, T)`` with ``T`` = the longest
    ``len(tokens) - 1`` in the batch (<= block_size). ``y`` is ``x`` shifted by one; ``mask[b, t]``
    is True iff ``y[b, t]`` is a target or eot token; padding (``pad_id`` in both ``x`` and ``y``)
    is masked out. Examples are drawn with ``torch.randint(generator=...)``, so saving and
    restoring the generator's state restores the data position. ``n_truncated`` counts the pairs
    whose input was cut; ``n_target_tokens`` the loss terms (target tokens + eot) of all pairs.
    """

    def __init__(self, tokenizer, pairs: Sequence[tuple[str, str]], block_size: int,
                 batch_size: int,
                 generator: torch.Generator, pad_id: int | None = None, truncate: bool = True):
        if block_size < 2 or batch_size < 1:
            raise MiniSPDFError(
                f"block_size={block_size}, batch_size={batch_size} are too small; use block_size "
                f">= 2 and batch_size >= 1"
            )
        if not pairs:
            raise MiniSPDFError("no fine-tuning pairs: the task split is empty; load a task that "
                                "has training examples")
        self.block_size = block_size
        self.batch_size = batch_size
        self.generator = generator
        self.pad_id = int(tokenizer.eot_id if pad_id is None else pad_id)
        self.tokens: list[torch.Tensor] = []
        self.prompt_lens: list[int] = []
        self.n_truncated = 0
        sep = list(tokenizer.encode(SEPARATOR))
        eot = int(tokenizer.eot_id)
        for i, (inp, tgt) in enumerate(pairs):
            toks, prompt_len, cut = _encode_ids(list(tokenizer.encode(inp)), sep,
                                                list(tokenizer.encode(tgt)),
                                                eot, block_size, truncate, i)
            self.n_truncated += cut
            self.tokens.append(torch.tensor(toks, dtype=torch.long))
            self.prompt_lens.append(prompt_len)
        self.n_target_tokens = sum(len(t) - p for t, p in zip(self.tokens, self.prompt_lens))

    def __len__(self) -> int:
        """Number of encoded pairs (one per reference)."""
        return len(self.tokens)

    def __call__(self,
                 generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor,
                                                                    torch.Tensor]:
        g = self.generator if generator is None else generator
        idx = torch.randint(len(self.tokens), (self.batch_size,), generator=g).tolist()
        return self.collate(idx)

    def collate(self, indices: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The padded ``(x, y, mask)`` batch of the given pair indices (deterministic)."""
        seqs = [self.tokens[i] for i in indices]
        T = max(len(s) for s in seqs) - 1
        B = len(seqs)
        x = torch.full((B, T), self.pad_id, dtype=torch.long)
        y = torch.full((B, T), self.pad_id, dtype=torch.long)
        mask = torch.zeros((B, T), dtype=torch.bool)
        for b, (i, s) in enumerate(zip(indices, seqs)):
            n = len(s) - 1
            x[b, :n] = s[:-1]
            y[b, :n] = s[1:]
            mask[b, self.prompt_lens[i] - 1:n] = True
        return x, y, mask
