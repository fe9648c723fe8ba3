"""``sample``, ``evaluate`` and ``score``: text out of a checkpoint, and its scores."""

from __future__ import annotations

import os

from ..config import build
from ..decoding import SampleConfig
from ..errors import MiniSPDFError
from ..evaluate import EvaluateConfig, ScoreConfig
from ..fileio import writer_lock
from . import emit


def _model_and_tokenizer(ckpt: str | None, command: str, wrote_it: str):
    """The checkpoint's model (in eval mode) and the tokenizer it was trained with."""
    from ..checkpoint import load_checkpoint
    from ..data import get_tokenizer
    from ..evaluate import check_tokenizer

    if not ckpt:
        raise MiniSPDFError(
            f"{command} needs --ckpt: the ckpt.pt or run folder that {wrote_it} --out wrote")
    model, info = load_checkpoint(ckpt)
    tok = get_tokenizer(info.get("tokenizer") or "char")
    check_tokenizer(model, tok)  # a damaged checkpoint can name a tokenizer its model cannot hold
    return model.eval(), tok


def sample(args):
    import torch

    s = build(SampleConfig, args)
    model, tok = _model_and_tokenizer(s.ckpt, "sample", "pretrain/finetune")
    gen = torch.Generator().manual_seed(s.seed)
    # a terminal in another encoding hands Python undecodable bytes as surrogates: show them as
    # U+FFFD
    prompt = s.prompt.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    ids = tok.encode(prompt)
    if not ids:
        raise MiniSPDFError("--prompt is empty: give some text to continue")
    x = torch.tensor([ids] * s.num_samples, dtype=torch.long)
    y = model.generate(x, s.max_new_tokens, temperature=s.temperature, top_k=s.top_k,
                       eot_id=tok.eot_id, generator=gen)
    samples = [tok.decode(row[len(ids):].tolist()) for row in y]
    emit(args.json, {"prompt": prompt, "samples": samples},
         "\n---\n".join(prompt + t for t in samples))


def evaluate(args):
    from ..evaluate import evaluate_task
    from ..metrics import format_report, parse_metrics
    from ..tasks import resolve_task, split_counts

    s = build(EvaluateConfig, args)
    model, tok = _model_and_tokenizer(s.ckpt, "evaluate", "finetune")
    task = resolve_task(s.task, test_file=s.test_file)
    metrics = parse_metrics(s.metrics, task.name)  # a typo fails before the model decodes
    examples = getattr(task, s.split)
    if not examples:
        raise MiniSPDFError(
            f"task {task.name} has no {s.split} examples: choose another --split or task file")
    pred = _predictions_path(s)
    with writer_lock(pred, "evaluate"):  # one writer per predictions file
        result = evaluate_task(model, tok, examples, method=s.decode, num_beams=s.num_beams,
                               max_new_tokens=s.max_new_tokens, limit=s.limit,
                               predictions_path=pred,
                               metric=task.metric,
                               metrics="default" if s.metrics is None else metrics,
                               task=task.name)
    result.update(task=task.name, split=s.split, ckpt=s.ckpt, read=task.description,
                  counts=split_counts(task),
                  notes=task.notes + result.get("notes", []))
    emit(args.json, result, format_report(result, f"{task.name} {s.split} ({s.decode} decoding)")
         + f"\nread: {task.description}\npredictions: {pred}")


def _predictions_path(s: EvaluateConfig) -> str:
    """Where ``evaluate`` writes its predictions: --predictions, or beside the checkpoint."""
    from ..checkpoint import check_out_folder

    pred = s.predictions
    if pred is None:
        folder = s.ckpt if os.path.isdir(s.ckpt) else os.path.dirname(s.ckpt) or "."
        pred = os.path.join(folder, f"predictions-{s.split}.jsonl")
    if os.path.isdir(pred):
        raise MiniSPDFError(
            f"--predictions {pred} is a folder: give a file path such as {pred}/predictions.jsonl")
    check_out_folder(os.path.dirname(os.path.abspath(pred)), "--predictions")
    return pred


def score(args):
    from ..evaluate import score_file
    from ..metrics import format_report

    s = build(ScoreConfig, args)
    if s.predictions is None:
        raise MiniSPDFError("score needs a predictions file: minispdf score PREDICTIONS.jsonl "
                            "[--metrics bleu,chrf]")
    name, _, path = (s.task or "").partition(":")
    # only the name chooses the metrics: a file named here would go unread
    if path and name != "builtin":
        raise MiniSPDFError(f"score --task takes the task's name ({name}), not its file: the "
                            f"references are in "
                            f"the predictions; pass --task {name}")
    result = score_file(s.predictions, s.metrics, task=s.task or "")
    result["predictions_path"] = s.predictions
    emit(args.json, result, format_report(result, f"scored {s.predictions}"))
