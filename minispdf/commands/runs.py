"""``prepare``, ``pretrain`` and ``finetune``: data in, runs out."""

from __future__ import annotations

from ..config import build
from ..data import PrepareConfig
from ..errors import MiniSPDFError, counted
from ..schedules import SparsityConfig
from ..spdf import FinetuneConfig, ModelConfig, PretrainConfig, RunConfig
from ..train import TrainConfig
from . import check_dense_options, emit


def corpora() -> str:
    """``prepare``'s epilog: the corpora it knows."""
    from ..data import describe_sources

    return ("corpora:\n" + describe_sources()
            + "\n\nsee data/README.md for sizes, licences and where the files come from")


def prepare(args):
    from ..data import corpus_stats

    s = build(PrepareConfig, args)
    if s.task is not None:
        if s.data is not None:
            raise MiniSPDFError("prepare takes --data or --task, not both: run it once for each")
        return _prepare_task(s.task, args.json)
    st = corpus_stats("builtin" if s.data is None else s.data, s.tokenizer, s.max_chars)
    tok = st["tokens"]
    emit(args.json, st,
         f"{st['source']} with the {st['tokenizer']} tokenizer, in {st['folder']}\n"
         f"  characters       {st['characters']:,}\n"
         f"  tokens           {tok['train']:,} train + {tok['val']:,} val = "
         f"{tok['train'] + tok['val']:,}\n"
         f"  vocabulary used  {st['vocab_used']:,} of {st['vocab_size']:,} ids\n"
         f"  unigram entropy  {st['unigram_entropy']:.4f} nats/token (train split: the loss of "
         "predicting by token frequency alone)")


def _prepare_task(spec: str, as_json: bool) -> None:
    from ..tasks import resolve_task, task_stats

    st = task_stats(resolve_task(spec))
    rows = [f"  {split:<5} {n['inputs']:>7,} inputs {n['references']:>8,} references "
            f"{n['characters']:>12,} characters"
            for split, n in st["splits"].items()]
    emit(as_json, st,
         f"{st['task']} (metric {st['metric']}): {st['description']}\n" + "\n".join(rows))


def _training(args) -> TrainConfig:
    # a bar would garble the JSON
    return build(TrainConfig, args, progress=args.progress and not args.json)


def _summary(result: dict) -> dict:
    return {k: v for k, v in result.items() if k not in ("model", "history")}


def pretrain(args):
    from ..spdf import pretrain

    sparsity = build(SparsityConfig, args)
    check_dense_options(sparsity, args)
    result = pretrain(pretraining=build(PretrainConfig, args),
                      model_config=build(ModelConfig, args),
                      sparsity_config=sparsity, training=_training(args),
                      run=build(RunConfig, args))
    fr = result["flop_report"]
    how = sparsity.schedule_words()
    emit(args.json, _summary(result),
         f"pre-trained {counted(result['step'], 'step')} at {fr['sparsity']:.0%} "
         f"sparsity{f' ({how})' if how else ''}: train "
         f"loss {result['train_loss']:.4f}, val loss {result['val_loss']:.4f}\n"
         f"training FLOPs: {result['flops']:.4g} (dense-equivalent {result['flops_dense']:.4g}, "
         f"{fr['reduction']:.2f}x fewer)\n{fr['note']}"
         + (f"\nrun folder: {result['out_dir']}" if result["out_dir"] else ""))


def finetune(args):
    from ..spdf import finetune

    result = finetune(finetuning=build(FinetuneConfig, args), model_config=build(ModelConfig, args),
                      training=_training(args), run=build(RunConfig, args))
    emit(args.json, _summary(result),
         f"fine-tuned ({result['mode']}) {counted(result['step'], 'step')}: train loss "
         f"{result['train_loss']:.4f}, "
         f"val loss {result['val_loss']:.4f}"
         + (f"\nrun folder: {result['out_dir']}" if result["out_dir"] else ""))
