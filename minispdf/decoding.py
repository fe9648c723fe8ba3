"""Decoding of fine-tuned models: batched greedy decoding and beam search, with the KV cache.

A prompt is ``tasks.encode_prompt(tokenizer, input)`` (the input, then ``SEPARATOR``), exactly
the tokens the model was fine-tuned on. Generation stops at ``tokenizer.eot_id``, after
``max_new_tokens`` tokens, or when prompt + continuation fill the context (``block_size``
tokens), whichever comes first; the continuation (without the eot) is decoded and stripped.

A prompt that does not leave room for at least one new token is cut like
``encode_prompt(..., max_tokens=block_size - 1)`` does: the END of the input text is dropped,
the separator is kept. (Fine-tuning cuts over-long examples the same way.)

Both methods use the model's key/value cache (:class:`minispdf.model.KVCache`,
:meth:`GPT.decode_step`), so each token goes through the network once instead of once per step.

greedy
    Batched. Prompts are sorted by length (less padding), cut into batches of ``batch_size``, and
    LEFT-padded to the longest prompt of their batch. Every row gets its own position ids (its
    first real token is position 0) and an attention mask that hides the padding, so a row sees
    exactly what it would see alone: the output for an input does not depend on its batch. Rows
    that finish are dropped from the batch (and the cache) as they go.
beam
    One input at a time, its ``num_beams`` beams forming the batch. Beams are ranked by their
    cumulative log-probability; a beam that emits the eot (within the top ``num_beams``
    candidates) becomes a finished hypothesis scored ``logprob / length ** length_penalty``
    (length = generated tokens, eot included). Search stops once ``num_beams`` hypotheses have
    finished; if the length limit comes first, the live beams are scored the same way. The best
    score wins. ``num_beams=1`` is greedy decoding.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Sequence

import torch
from torch.nn import functional as F

from .settings import Settings, setting
from .errors import MiniSPDFError
from .model import KVCache
from .tasks import encode_prompt

__all__ = ["decode", "greedy_tokens", "beam_tokens", "check_tokenizer"]

METHODS = ("greedy", "beam")


@dataclass
class SampleConfig(Settings):
    """Sampling."""
    ckpt: str | None = setting(None, "checkpoint or run folder", metavar="RUN")
    prompt: str = setting("\n", "text to continue")
    max_new_tokens: int = setting(200, "tokens to generate", min=1, max=100_000,
                                  hint="one token at a time: 100,000 take hours on a CPU")
    temperature: float = setting(0.8, "softmax temperature (0: greedy)", min=0, hint="0 = greedy")
    top_k: int = setting(50, "sample from the k most likely tokens", min=1)
    seed: int = setting(0, "sampling seed")
    num_samples: int = setting(1, "how many samples", min=1, max=10_000,
                               hint="a batch of them is held in memory")


@contextlib.contextmanager
def eval_mode(model):
    """model.eval() and torch.no_grad() inside; the previous training mode comes back after."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            yield
    finally:
        model.train(was_training)


def device_of(model, device):
    return torch.device(device) if device is not None else next(model.parameters()).device


def check_tokenizer(model, tokenizer) -> int:
    eot = int(tokenizer.eot_id)
    if eot >= model.config.vocab_size:
        raise MiniSPDFError(
            f"tokenizer {getattr(tokenizer, 'name', '?')!r} (eot id {eot}) does not fit "
            f"the model's "
            f"vocab_size={model.config.vocab_size}: use the tokenizer the model was trained with"
        )
    return eot


def _check_prompt(model, prompt) -> None:
    if not 0 < len(prompt) < model.config.block_size:
        raise MiniSPDFError(
            f"a prompt of {len(prompt)} tokens leaves no room in the context "
            f"block_size={model.config.block_size}: "
            "cut it with tasks.encode_prompt(..., max_tokens=block_size - 1)"
        )


def _budget(model, prompt_len: int, max_new_tokens: int | None) -> int:
    """How many tokens a prompt of this length may generate: up to a full context."""
    room = model.config.block_size - prompt_len
    return room if max_new_tokens is None else min(room, max_new_tokens)


# --------------------------------------------------------------------------------------------
# Greedy decoding (batched, left padding)
# --------------------------------------------------------------------------------------------


def _greedy_batch(model, prompts: list[list[int]], eot: int, max_new_tokens,
                  device) -> list[list[int]]:
    """Greedy continuations (token ids, eot excluded) of one batch of prompts."""
    n = len(prompts)
    lens = [len(p) for p in prompts]
    budgets = [_budget(model, m, max_new_tokens) for m in lens]
    out: list[list[int]] = [[] for _ in range(n)]
    if max(budgets) <= 0:
        return out
    P = max(lens)
    width = P + max(budgets)  # cache columns: left padding + prompt + fed continuation
    pad = torch.tensor([P - m for m in lens], device=device)
    idx = torch.tensor([[eot] * (P - len(p)) + p for p in prompts], dtype=torch.long, device=device)
    cols = torch.arange(width, device=device)
    real = cols[None, :] >= pad[:, None]  # (n, width): column holds a real token of that row
    # each row's own positions, 0 at its first token
    pos = (cols[None, :] - pad[:, None]).clamp_min(0)
    # Prefill mask: causal, real keys only; a padding query sees itself so no softmax row is empty.
    causal = torch.ones(P, P, dtype=torch.bool, device=device).tril()
    eye = torch.eye(P, dtype=torch.bool, device=device)
    mask = causal[None] & (real[:, None, :P] | eye[None])
    cache = KVCache(model.config, n, width, device=device, dtype=model.lm_head.weight.dtype)
    logits = model.decode_step(idx, cache, pos[:, :P], mask[:, None])
    rows = list(range(n))  # original row of each row still in the batch
    for step in range(max(budgets)):
        nxt = logits.argmax(dim=-1)
        keep = []
        for j, (r, tok) in enumerate(zip(rows, nxt.tolist())):
            if tok != eot and len(out[r]) < budgets[r]:
                out[r].append(tok)
                if len(out[r]) < budgets[r]:
                    keep.append(j)
        if not keep:
            break
        if len(keep) < len(rows):  # drop finished rows from the batch and the cache
            cache.reorder(keep)
            rows = [rows[j] for j in keep]
            nxt = nxt[keep]
        sel = torch.tensor(rows, device=device)
        col = P + step  # the column this step's token goes into
        logits = model.decode_step(nxt[:, None], cache, pos[sel, col:col + 1],
                                   real[sel, None, None, :col + 1])
    return out


def greedy_tokens(model, prompts: Sequence[Sequence[int]], eot_id: int,
                  max_new_tokens: int | None = None,
                  batch_size: int = 64, device=None) -> list[list[int]]:
    """Greedy continuations (token ids, eot excluded) of already encoded prompts, in input order.

    Each prompt must leave room in the context (``len(prompt) < block_size``). Call inside
    ``torch.no_grad()`` with the model in eval mode (:func:`decode` does both).
    """
    device = device_of(model, device)
    prompts = [list(p) for p in prompts]
    for p in prompts:
        _check_prompt(model, p)
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
    result: list[list[int]] = [[] for _ in prompts]
    for start in range(0, len(order), batch_size):
        chunk = order[start:start + batch_size]
        for i, toks in zip(chunk, _greedy_batch(model, [prompts[i] for i in chunk], eot_id,
                                                max_new_tokens, device)):
            result[i] = toks
    return result


# --------------------------------------------------------------------------------------------
# Beam search (one input at a time, beams as the batch)
# --------------------------------------------------------------------------------------------


def beam_tokens(model, prompt: Sequence[int], eot_id: int, num_beams: int = 4,
                max_new_tokens: int | None = None,
                length_penalty: float = 1.0, device=None) -> tuple[list[int], float]:
    """Beam search for one encoded prompt: ``(best continuation ids without eot, its score)``.

    See the module docstring for the scoring. Call inside ``torch.no_grad()`` in eval mode.
    """
    device = device_of(model, device)
    _check_prompt(model, prompt)
    budget = _budget(model, len(prompt), max_new_tokens)
    if budget <= 0:
        return [], 0.0
    cache = KVCache(model.config, 1, len(prompt) + budget, device=device,
                    dtype=model.lm_head.weight.dtype)
    logits = model.decode_step(torch.tensor([list(prompt)], dtype=torch.long, device=device), cache)
    beams: list[list[int]] = [[]]
    scores = torch.zeros(1, device=device)
    finished: list[tuple[float, list[int]]] = []
    vocab = logits.size(-1)
    for step in range(budget):
        cand = (scores[:, None] + F.log_softmax(logits.float(), dim=-1)).view(-1)
        top_scores, top_ids = cand.topk(min(2 * num_beams, cand.numel()))
        new_beams, new_scores, parents = [], [], []
        for rank, (score, flat) in enumerate(zip(top_scores.tolist(), top_ids.tolist())):
            parent, tok = divmod(flat, vocab)
            if tok == eot_id:
                if rank < num_beams:  # an eot only counts when it ranks among the live beams
                    finished.append((score / (len(beams[parent]) + 1) ** length_penalty,
                                     beams[parent]))
                continue
            new_beams.append(beams[parent] + [tok])
            new_scores.append(score)
            parents.append(parent)
            if len(new_beams) == num_beams:
                break
        if len(finished) >= num_beams:
            break
        beams, scores = new_beams, torch.tensor(new_scores, device=device)
        if step == budget - 1:  # length limit: the live beams are hypotheses too
            finished += [(s / len(b) ** length_penalty, b) for s, b in zip(new_scores, beams)]
            break
        if parents != list(range(cache.kv.size(2))):  # skip the copy when every beam extends itself
            cache.reorder(parents)
        logits = model.decode_step(torch.tensor([[b[-1]] for b in beams], device=device), cache)
    best_score, best = max(finished, key=lambda h: h[0])  # of equal scores, the first found
    return best, best_score


def decode(model, tokenizer, inputs: list[str], method: str = "greedy", num_beams: int = 4,
           max_new_tokens: int | None = None, batch_size: int = 64, length_penalty: float = 1.0,
           device=None) -> list[str]:
    """Continuations of ``inputs`` (stripped text), by greedy decoding or beam search.

    See the module docstring for the prompt, the stopping rules, truncation and the methods.
    """
    if method not in METHODS:
        raise MiniSPDFError(f"unknown decoding method {method!r}: use one of {', '.join(METHODS)}")
    if method == "beam" and (not isinstance(num_beams, int) or num_beams < 1):
        raise MiniSPDFError(f"num_beams={num_beams!r} must be a positive integer")
    if max_new_tokens is not None and max_new_tokens < 0:
        raise MiniSPDFError(f"max_new_tokens={max_new_tokens} is negative: use 0 or more (or None "
                            f"for a full context)")
    if batch_size < 1:
        raise MiniSPDFError(f"batch_size={batch_size} must be at least 1")
    eot = check_tokenizer(model, tokenizer)
    if model.config.block_size < 2:
        raise MiniSPDFError(
            "the model's block_size is 1: there is no room to decode; use a larger block_size")
    device = device_of(model, device)
    prompts = [encode_prompt(tokenizer, text, max_tokens=model.config.block_size - 1)
               for text in inputs]
    with eval_mode(model):
        if method == "greedy":
            token_lists = greedy_tokens(model, prompts, eot, max_new_tokens, batch_size, device)
        else:
            token_lists = [beam_tokens(model, p, eot, num_beams, max_new_tokens, length_penalty,
                                       device)[0]
                           for p in prompts]
    return [tokenizer.decode(toks).strip() for toks in token_lists]
