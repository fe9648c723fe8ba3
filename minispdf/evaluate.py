"""Decoding and scoring of fine-tuned models: greedy / beam search, BLEU, perplexity.

Decoding
--------
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

Metrics
-------
:func:`bleu` is sacrebleu's corpus BLEU with ``lowercase=True`` (this reproduces the official
E2E script's BLEU), multi-reference, with the reference streams padded with ``None`` for inputs
that have fewer references (padding with ``""`` would change the score). :func:`perplexity` is
``exp`` of the mean cross-entropy over the target tokens and the eot of every (input, reference)
pair, encoded and masked exactly as in fine-tuning (see ``minispdf.tasks``). The other metrics
papers print (chrF++, TER, ROUGE, METEOR) live in :mod:`minispdf.metrics`.
:func:`evaluate_task` decodes and scores, overall and per subset (WebNLG seen/unseen, DART
source), and can write the predictions as JSONL, which :func:`score_file` (``minispdf score``)
and :func:`rescore` (BLEU only) read back.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import os
from typing import Sequence

import torch
from torch.nn import functional as F

from .errors import MiniSPDFError, one_line
from .fileio import write_text
from .metrics import bleu, score_predictions
from .model import KVCache
from .tasks import SEPARATOR, Example, FinetuneBatches, encode_prompt, training_pairs

__all__ = ["decode", "bleu", "perplexity", "evaluate_task", "rescore", "score_file", "read_predictions",
           "greedy_tokens", "beam_tokens"]

METHODS = ("greedy", "beam")
METRICS = ("bleu", "perplexity")


@contextlib.contextmanager
def _eval_mode(model):
    """model.eval() and torch.no_grad() inside; the previous training mode comes back after."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            yield
    finally:
        model.train(was_training)


def _device_of(model, device):
    return torch.device(device) if device is not None else next(model.parameters()).device


def check_tokenizer(model, tokenizer) -> int:
    eot = int(tokenizer.eot_id)
    if eot >= model.config.vocab_size:
        raise MiniSPDFError(
            f"tokenizer {getattr(tokenizer, 'name', '?')!r} (eot id {eot}) does not fit the model's "
            f"vocab_size={model.config.vocab_size}: use the tokenizer the model was trained with"
        )
    return eot


def _check_prompt(model, prompt) -> None:
    if not 0 < len(prompt) < model.config.block_size:
        raise MiniSPDFError(
            f"a prompt of {len(prompt)} tokens leaves no room in the context block_size={model.config.block_size}: "
            "cut it with tasks.encode_prompt(..., max_tokens=block_size - 1)"
        )


def _budget(model, prompt_len: int, max_new_tokens: int | None) -> int:
    """How many tokens a prompt of this length may generate: up to a full context."""
    room = model.config.block_size - prompt_len
    return room if max_new_tokens is None else min(room, max_new_tokens)


# --------------------------------------------------------------------------------------------
# Greedy decoding (batched, left padding)
# --------------------------------------------------------------------------------------------


def _greedy_batch(model, prompts: list[list[int]], eot: int, max_new_tokens, device) -> list[list[int]]:
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
    pos = (cols[None, :] - pad[:, None]).clamp_min(0)  # each row's own positions, 0 at its first token
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
        logits = model.decode_step(nxt[:, None], cache, pos[sel, col:col + 1], real[sel, None, None, :col + 1])
    return out


def greedy_tokens(model, prompts: Sequence[Sequence[int]], eot_id: int, max_new_tokens: int | None = None,
                  batch_size: int = 64, device=None) -> list[list[int]]:
    """Greedy continuations (token ids, eot excluded) of already encoded prompts, in input order.

    Each prompt must leave room in the context (``len(prompt) < block_size``). Call inside
    ``torch.no_grad()`` with the model in eval mode (:func:`decode` does both).
    """
    device = _device_of(model, device)
    prompts = [list(p) for p in prompts]
    for p in prompts:
        _check_prompt(model, p)
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
    result: list[list[int]] = [[] for _ in prompts]
    for start in range(0, len(order), batch_size):
        chunk = order[start:start + batch_size]
        for i, toks in zip(chunk, _greedy_batch(model, [prompts[i] for i in chunk], eot_id, max_new_tokens, device)):
            result[i] = toks
    return result


# --------------------------------------------------------------------------------------------
# Beam search (one input at a time, beams as the batch)
# --------------------------------------------------------------------------------------------


def beam_tokens(model, prompt: Sequence[int], eot_id: int, num_beams: int = 4, max_new_tokens: int | None = None,
                length_penalty: float = 1.0, device=None) -> tuple[list[int], float]:
    """Beam search for one encoded prompt: ``(best continuation ids without eot, its score)``.

    See the module docstring for the scoring. Call inside ``torch.no_grad()`` in eval mode.
    """
    device = _device_of(model, device)
    _check_prompt(model, prompt)
    budget = _budget(model, len(prompt), max_new_tokens)
    if budget <= 0:
        return [], 0.0
    cache = KVCache(model.config, 1, len(prompt) + budget, device=device, dtype=model.lm_head.weight.dtype)
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
                    finished.append((score / (len(beams[parent]) + 1) ** length_penalty, beams[parent]))
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


# --------------------------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------------------------


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
        raise MiniSPDFError(f"max_new_tokens={max_new_tokens} is negative: use 0 or more (or None for a full context)")
    if batch_size < 1:
        raise MiniSPDFError(f"batch_size={batch_size} must be at least 1")
    eot = check_tokenizer(model, tokenizer)
    if model.config.block_size < 2:
        raise MiniSPDFError("the model's block_size is 1: there is no room to decode; use a larger block_size")
    device = _device_of(model, device)
    prompts = [encode_prompt(tokenizer, text, max_tokens=model.config.block_size - 1) for text in inputs]
    with _eval_mode(model):
        if method == "greedy":
            token_lists = greedy_tokens(model, prompts, eot, max_new_tokens, batch_size, device)
        else:
            token_lists = [beam_tokens(model, p, eot, num_beams, max_new_tokens, length_penalty, device)[0]
                           for p in prompts]
    return [tokenizer.decode(toks).strip() for toks in token_lists]


def perplexity(model, tokenizer, examples: list[Example], block_size: int | None = None, batch_size: int = 32,
               device=None) -> dict:
    """Perplexity over every (input, reference) pair: target tokens and the eot, as in fine-tuning.

    Pairs are encoded by :class:`minispdf.tasks.FinetuneBatches` (inputs that do not fit are cut at
    the end) and scored in fixed consecutive chunks of ``batch_size``. A pair whose reference alone
    does not fit the context (with the separator, the eot and one input token) cannot be scored:
    it is left out and counted. Returns ``{"perplexity": exp(loss), "loss": total NLL / tokens
    (nats per target token), "tokens": target tokens, "pairs_skipped": pairs left out}``.
    """
    check_tokenizer(model, tokenizer)
    block_size = model.config.block_size if block_size is None else int(block_size)
    if block_size > model.config.block_size:
        raise MiniSPDFError(
            f"block_size={block_size} is larger than the model's context {model.config.block_size}: use a smaller one"
        )
    pairs = training_pairs(examples)
    if not pairs:
        raise MiniSPDFError("no (input, reference) pairs to score: give examples that have references")
    room = block_size - len(tokenizer.encode(SEPARATOR)) - 1  # tokens a reference may have
    fitting = [(i, r) for i, r in pairs if len(tokenizer.encode(r)) <= room]
    if not fitting:
        raise MiniSPDFError(f"no reference fits the context block_size {block_size} with its input: "
                            "use a model with a larger block_size")
    batches = FinetuneBatches(tokenizer, fitting, block_size, batch_size, torch.Generator())
    device = _device_of(model, device)
    total, count = 0.0, 0
    with _eval_mode(model):
        for start in range(0, len(batches), batch_size):
            x, y, mask = batches.collate(range(start, min(start + batch_size, len(batches))))
            x, y, mask = x.to(device), y.to(device), mask.to(device)
            logits, _ = model(x, y)
            nll = F.cross_entropy(logits.float().view(-1, logits.size(-1)), y.view(-1), reduction="none")
            total += float(nll[mask.view(-1)].double().sum())
            count += int(mask.sum())
    loss = total / count
    ppl = math.exp(loss) if loss < 700 else float("inf")
    return {"perplexity": ppl, "loss": loss, "tokens": count, "pairs_skipped": len(pairs) - len(fitting)}


def evaluate_task(model, tokenizer, examples: list[Example], method: str = "greedy", num_beams: int = 4,
                  max_new_tokens: int | None = None, limit: int | None = None, predictions_path: str | None = None,
                  metric: str = "bleu", batch_size: int = 64, metrics=None, task: str = "") -> dict:
    """Score a model on a task split: perplexity, and the metrics of its decoded outputs.

    ``metrics`` (a list or ``"bleu,chrf,ter,rouge,meteor"``, see :mod:`minispdf.metrics`) chooses
    what the decoded outputs are scored with; ``"default"`` is ``task``'s usual set. Left at None
    it is BLEU for ``metric="bleu"`` and nothing for ``metric="perplexity"``, where nothing is
    decoded, ``bleu`` is None and no predictions file is written (as before ``metrics`` existed).
    Examples that carry ``meta["subset"]`` are also scored per subset (``result["subsets"]``,
    perplexity included). ``limit`` keeps the first N inputs. ``predictions_path`` gets one JSON
    line per input, ``{"input", "prediction", "references"}`` plus the input's ``meta`` (e.g.
    ``category``, ``subset``), written atomically; :func:`score_file` recomputes the same scores.
    """
    if metric not in METRICS:
        raise MiniSPDFError(f"unknown metric {metric!r}: use one of {', '.join(METRICS)}")
    if limit is not None:
        if limit < 1:
            raise MiniSPDFError(f"limit={limit} must be at least 1 (or None for all inputs)")
        examples = examples[:limit]
    if not examples:
        raise MiniSPDFError("no examples to evaluate: the split is empty; load a task that has this split")
    if metrics is None:
        metrics = ["bleu"] if metric == "bleu" else []
    elif metrics == "default":
        metrics = None  # score_predictions picks the task's usual set
    labels = [ex.meta.get("subset") for ex in examples]
    has_subsets = any(label is not None for label in labels)
    result: dict = {"bleu": None}
    ppl = perplexity(model, tokenizer, examples, batch_size=batch_size)
    result.update(perplexity=ppl["perplexity"], loss=ppl["loss"])
    ppl_note = [] if not ppl["pairs_skipped"] else [
        f"perplexity left out {ppl['pairs_skipped']} of {sum(len(ex.references) for ex in examples)} (input, "
        "reference) pairs: their reference alone does not fit the model's context"]
    written, decoded = None, metrics is None or len(metrics) > 0
    if decoded:
        preds = decode(model, tokenizer, [ex.input for ex in examples], method=method, num_beams=num_beams,
                       max_new_tokens=max_new_tokens, batch_size=batch_size)
        refs = [list(ex.references) for ex in examples]
        result.update(score_predictions(preds, refs, metrics, labels if has_subsets else None, task=task))
        if predictions_path is not None:
            text = "".join(json.dumps({"input": ex.input, "prediction": p, "references": r, **ex.meta},
                                      ensure_ascii=False) + "\n" for ex, p, r in zip(examples, preds, refs))
            write_text(str(predictions_path), text)
            written = str(predictions_path)
    elif has_subsets:
        result["subsets"] = {}
    for name, row in result.get("subsets", {}).items():
        sub = [ex for ex, label in zip(examples, labels) if label == name]
        sub_ppl = perplexity(model, tokenizer, sub, batch_size=batch_size)
        row.update(perplexity=sub_ppl["perplexity"], loss=sub_ppl["loss"], n_inputs=len(sub),
                   n_references=sum(len(ex.references) for ex in sub))
    result.update(n_inputs=len(examples), n_references=sum(len(ex.references) for ex in examples),
                  method=method if decoded else None, predictions_path=written)
    if ppl_note:
        result["perplexity_pairs_skipped"] = ppl["pairs_skipped"]
        result["notes"] = result.get("notes", []) + ppl_note
    return result


def read_predictions(predictions_path: str) -> tuple[list[str], list[list[str]], list]:
    """``(predictions, references, subset labels)`` of a predictions JSONL.

    Each line is ``{"prediction": str, "references": [str, ...]}``, optionally with ``"subset"``
    (a string, a list of strings, or null); other fields (``input``, ``category``) are ignored.
    """
    path = os.fspath(predictions_path)
    if not os.path.isfile(path):
        raise MiniSPDFError(f"no predictions file at {path}: pass the JSONL that evaluate --predictions wrote")
    preds, refs, labels = [], [], []
    try:
        with io.open(path, encoding="utf-8") as f:
            for lineno, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError:
                    raise ValueError(f"line {lineno} is not JSON") from None
                pred, ref, label = row["prediction"], row["references"], row.get("subset")
                if not isinstance(pred, str) or not isinstance(ref, list) or not all(isinstance(r, str) for r in ref):
                    raise ValueError(f"line {lineno} has the wrong field types")
                if not (label is None or isinstance(label, str)
                        or (isinstance(label, list) and all(isinstance(x, str) for x in label))):
                    raise ValueError(f"line {lineno} has a subset that is not a string or a list of strings")
                preds.append(pred)
                refs.append(ref)
                labels.append(label)
    except (ValueError, KeyError, TypeError, UnicodeDecodeError, AttributeError) as e:
        if isinstance(e, KeyError):
            kind = f"missing field {e}"
        elif isinstance(e, UnicodeDecodeError):
            kind = "not UTF-8 text"
        elif isinstance(e, ValueError):
            kind = one_line(e)
        else:
            kind = "a line that is not a JSON object"
        raise MiniSPDFError(
            f"{path} is not a predictions JSONL ({kind}): the file is corrupt or in another format; each line "
            'must be {"prediction": "...", "references": ["...", ...]}; re-run the evaluation that wrote it'
        ) from None
    if not preds:
        raise MiniSPDFError(f"{path} holds no predictions: re-run the evaluation that wrote it")
    return preds, refs, labels


def score_file(predictions_path: str, metrics=None, task: str = "") -> dict:
    """Every metric (and subset) of :func:`minispdf.metrics.score_predictions` for a predictions JSONL."""
    preds, refs, labels = read_predictions(predictions_path)
    has_subsets = any(label is not None for label in labels)
    return score_predictions(preds, refs, metrics, labels if has_subsets else None, task=task)


def rescore(predictions_path: str) -> float:
    """BLEU recomputed from a predictions JSONL written by :func:`evaluate_task`."""
    preds, refs, _ = read_predictions(predictions_path)
    return bleu(preds, refs)
