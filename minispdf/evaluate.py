"""Scoring of fine-tuned models: BLEU, perplexity, ``evaluate_task`` and predictions files.

:func:`bleu` is sacrebleu's corpus BLEU with ``lowercase=True`` (this reproduces the official
E2E script's BLEU), multi-reference, with the reference streams padded with ``None`` for inputs
that have fewer references (padding with ``""`` would change the score). :func:`perplexity` is
``exp`` of the mean cross-entropy over the target tokens and the eot of every (input, reference)
pair, encoded and masked exactly as in fine-tuning (see ``minispdf.tasks``). The other metrics
papers print (chrF++, TER, ROUGE, METEOR) live in :mod:`minispdf.metrics`.
:func:`evaluate_task` decodes and scores, overall and per subset (WebNLG seen/unseen, DART
source), and can write the predictions as JSONL, which :func:`score_file` (``minispdf score``)
reads back.

Decoding (greedy and beam search) is in :mod:`minispdf.decoding`.
"""

from __future__ import annotations

import io
import json
import math
import os
from dataclasses import dataclass

import torch
from torch.nn import functional as F

from .decoding import check_tokenizer, decode, device_of, eval_mode
from .errors import MiniSPDFError, one_line
from .fileio import file_problem, valid_unicode, write_text
from .settings import Settings, setting
from .metrics import METRICS as SCORE_METRICS, bleu, score_predictions
from .tasks import (SEPARATOR, TASK_METRICS, TASK_SPEC, Example, FinetuneBatches, pair_fits,
                    training_pairs)

__all__ = ["decode", "bleu", "perplexity", "evaluate_task", "score_file", "read_predictions"]



def perplexity(model, tokenizer, examples: list[Example], block_size: int | None = None,
               batch_size: int = 32,
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
            f"block_size={block_size} is larger than the model's context "
            f"{model.config.block_size}: use a smaller one"
        )
    pairs = training_pairs(examples)
    if not pairs:
        raise MiniSPDFError(
            "no (input, reference) pairs to score: give examples that have references")
    sep = len(tokenizer.encode(SEPARATOR))  # a reference is scored if it fits with one input token
    fitting = [(i, r) for i, r in pairs if pair_fits(1, len(tokenizer.encode(r)), sep, block_size)]
    if not fitting:
        raise MiniSPDFError(f"no reference fits the context block_size {block_size} "
                            f"with its input: "
                            "use a model with a larger block_size")
    batches = FinetuneBatches(tokenizer, fitting, block_size, batch_size, torch.Generator())
    device = device_of(model, device)
    total, count = 0.0, 0
    with eval_mode(model):
        for start in range(0, len(batches), batch_size):
            x, y, mask = batches.collate(range(start, min(start + batch_size, len(batches))))
            x, y, mask = x.to(device), y.to(device), mask.to(device)
            logits, _ = model(x, y)
            nll = F.cross_entropy(logits.float().view(-1, logits.size(-1)), y.view(-1),
                                  reduction="none")
            total += float(nll[mask.view(-1)].double().sum())
            count += int(mask.sum())
    loss = total / count
    ppl = math.exp(loss) if loss < 700 else float("inf")
    return {"perplexity": ppl, "loss": loss, "tokens": count,
            "pairs_skipped": len(pairs) - len(fitting)}


def evaluate_task(model, tokenizer, examples: list[Example], method: str = "greedy",
                  num_beams: int = 4,
                  max_new_tokens: int | None = None, limit: int | None = None,
                  predictions_path: str | None = None,
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
    examples = _examples_to_score(examples, metric, limit)
    if metrics is None:
        metrics = ["bleu"] if metric == "bleu" else []
    elif metrics == "default":
        metrics = None  # score_predictions picks the task's usual set
    labels = [ex.meta.get("subset") for ex in examples]
    has_subsets = any(label is not None for label in labels)
    result: dict = {"bleu": None}
    ppl = perplexity(model, tokenizer, examples, batch_size=batch_size)
    result.update(perplexity=ppl["perplexity"], loss=ppl["loss"])
    written, decoded = None, metrics is None or len(metrics) > 0
    if decoded:
        preds = decode(model, tokenizer, [ex.input for ex in examples], method=method,
                       num_beams=num_beams,
                       max_new_tokens=max_new_tokens, batch_size=batch_size)
        refs = [list(ex.references) for ex in examples]
        result.update(score_predictions(preds, refs, metrics, labels if has_subsets else None,
                                        task=task))
        if predictions_path is not None:
            written = _write_predictions(predictions_path, examples, preds, refs)
    elif has_subsets:
        result["subsets"] = {}
    _add_subset_perplexities(result, model, tokenizer, examples, labels, batch_size)
    result.update(n_inputs=len(examples), n_references=sum(len(ex.references) for ex in examples),
                  method=method if decoded else None, predictions_path=written)
    if ppl["pairs_skipped"]:
        result["perplexity_pairs_skipped"] = ppl["pairs_skipped"]
        result["notes"] = result.get("notes", []) + [
            f"perplexity left out {ppl['pairs_skipped']} of "
            f"{sum(len(ex.references) for ex in examples)} (input, "
            "reference) pairs: their reference alone does not fit the model's context"]
    return result


def _examples_to_score(examples: list[Example], metric: str, limit: int | None) -> list[Example]:
    """The first ``limit`` examples (all with None), after checking ``metric`` and ``limit``; none
    left is an error."""
    if metric not in TASK_METRICS:
        raise MiniSPDFError(f"unknown metric {metric!r}: use one of {', '.join(TASK_METRICS)}")
    if limit is not None:
        if limit < 1:
            raise MiniSPDFError(f"limit={limit} must be at least 1 (or None for all inputs)")
        examples = examples[:limit]
    if not examples:
        raise MiniSPDFError(
            "no examples to evaluate: the split is empty; load a task that has this split")
    return examples


def _write_predictions(predictions_path, examples: list[Example], preds: list[str],
                       refs: list[list[str]]) -> str:
    """One JSON line per input, its ``meta`` included, written atomically; returns the path."""
    text = "".join(
        json.dumps({"input": ex.input, "prediction": p, "references": r, **ex.meta},
                   ensure_ascii=False) + "\n"
        for ex, p, r in zip(examples, preds, refs))
    write_text(str(predictions_path), text)
    return str(predictions_path)


def _add_subset_perplexities(result: dict, model, tokenizer, examples: list[Example], labels: list,
                             batch_size: int) -> None:
    """Fill each row of ``result["subsets"]`` with its perplexity and sizes."""
    for name, row in result.get("subsets", {}).items():
        sub = [ex for ex, label in zip(examples, labels) if label == name]
        sub_ppl = perplexity(model, tokenizer, sub, batch_size=batch_size)
        row.update(perplexity=sub_ppl["perplexity"], loss=sub_ppl["loss"], n_inputs=len(sub),
                   n_references=sum(len(ex.references) for ex in sub))


def read_predictions(predictions_path: str) -> tuple[list[str], list[list[str]], list]:
    """``(predictions, references, subset labels)`` of a predictions JSONL.

    Each line is ``{"prediction": str, "references": [str, ...]}``, optionally with ``"subset"``
    (a string, a list of strings, or null); other fields (``input``, ``category``) are ignored.
    """
    path = os.fspath(predictions_path)
    why = file_problem(path)
    if why:
        where = (f"no predictions file at {path}" if why == "does not exist"
                 else f"predictions file {path} {why}")
        raise MiniSPDFError(f"{where}: pass the JSONL that evaluate --predictions wrote")
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
                if not valid_unicode(row):
                    raise ValueError(f"line {lineno} holds a lone surrogate (an unpaired "
                                     f"\\ud800-\\udfff escape)")
                pred, ref, label = row["prediction"], row["references"], row.get("subset")
                if (not isinstance(pred, str) or not isinstance(ref, list)
                    or not all(isinstance(r, str) for r in ref)):
                    raise ValueError(f"line {lineno} has the wrong field types")
                if not ref or not all(r.strip() for r in ref):
                    raise ValueError(
                        f"line {lineno} has an empty reference: every reference needs some text")
                if not (label is None or isinstance(label, str)
                        or (isinstance(label, list) and all(isinstance(x, str) for x in label))):
                    raise ValueError(
                        f"line {lineno} has a subset that is not a string or a list of strings")
                preds.append(pred)
                refs.append(ref)
                labels.append(label)
    except (ValueError, KeyError, TypeError, UnicodeDecodeError, AttributeError,
            RecursionError) as e:
        if isinstance(e, RecursionError):
            kind = "a line nested too deeply"
        elif isinstance(e, KeyError):
            kind = f"missing field {e}"
        elif isinstance(e, UnicodeDecodeError):
            kind = "not UTF-8 text"
        elif isinstance(e, ValueError):
            kind = one_line(e)
        else:
            kind = "a line that is not a JSON object"
        raise MiniSPDFError(
            f"{path} is not a predictions JSONL ({kind}): the file is corrupt or in another "
            f"format; each line "
            'must be {"prediction": "...", "references": ["...", ...]}; re-run the evaluation '
            'that wrote it'
        ) from None
    if not preds:
        raise MiniSPDFError(f"{path} holds no predictions: re-run the evaluation that wrote it")
    return preds, refs, labels


def score_file(predictions_path: str, metrics=None, task: str = "") -> dict:
    """Every metric (and subset) of :func:`minispdf.metrics.score_predictions` for a predictions
    JSONL."""
    preds, refs, labels = read_predictions(predictions_path)
    has_subsets = any(label is not None for label in labels)
    return score_predictions(preds, refs, metrics, labels if has_subsets else None, task=task)


# -------------------------------------------------------------- settings (minispdf evaluate, score)

METRICS_HELP = f"comma-separated {','.join(SCORE_METRICS)} (default: the task's usual set)"


@dataclass
class EvaluateConfig(Settings):
    """Evaluation."""
    ckpt: str | None = setting(None, "checkpoint or run folder", metavar="RUN")
    task: str = setting("builtin", f"task: {TASK_SPEC}", metavar="SPEC")
    split: str = setting("test", "which split to decode", choices=("train", "val", "test"))
    decode: str = setting("greedy", "decoding", choices=("greedy", "beam"))
    num_beams: int = setting(4, "beams for --decode beam", min=1)
    max_new_tokens: int | None = setting(None,
                                         "tokens to generate per input (default: fill the context)",
                                         min=1)
    limit: int | None = setting(None, "evaluate only the first N inputs", min=1)
    test_file: str | None = setting(None, "with a bare --task name: the file to evaluate (e.g. "
                                          "testset_w_refs.csv)",
                                    metavar="FILE")
    predictions: str | None = setting(None, "where to write the predictions JSONL (default: "
                                            "RUN/predictions-SPLIT.jsonl)",
                                      metavar="FILE")
    metrics: str | None = setting(None, METRICS_HELP)


@dataclass
class ScoreConfig(Settings):
    """Scoring."""
    predictions: str | None = setting(None,
                                      "the predictions JSONL (evaluate's, or one in its format)",
                                      positional=True, metavar="PREDICTIONS.jsonl")
    metrics: str | None = setting(None, METRICS_HELP)
    task: str | None = setting(
        None, "the task (name or spec) whose usual metrics are the default (curation: ROUGE; "
                                     "others: all)", metavar="SPEC")
