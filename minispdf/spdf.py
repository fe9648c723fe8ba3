"""The SPDF recipe as two functions: ``pretrain`` (sparse or dense) and ``finetune`` (dense or
sparse).

These glue the pieces together -- tokenizer and data (``data``), the GPT (``model``), masks
(``sparsity``), the loop (``train``) and the FLOP count (``flops``) -- and are what the CLI and
the notebooks call::

    from minispdf.spdf import pretrain, finetune
    sparse = pretrain(preset="tiny", sparsity=0.75, max_steps=300, out="runs/s75")
    tuned = finetune(init_from="runs/s75", task="builtin", max_steps=200, out="runs/s75-spdf")

Settings are one dataclass per concern -- ``ModelConfig``, ``schedules.SparsityConfig``,
``train.TrainConfig``, ``run_folder.RunConfig``, and what each phase reads (``PretrainConfig``,
``FinetuneConfig``) -- declared once: the command line is generated from them (``config``),
and the keywords above fill them by field name. Every setting is validated before anything is
written, so a typo never leaves a half-made run folder; what the run folder holds, who may
write it and when a run may continue there is :mod:`minispdf.run_folder`'s.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import asdict, dataclass, fields

import torch

from . import data as data_lib
from .batches import TaskBatches, TokenBatches
from . import run_folder
from .checkpoint import check_compatible, load_checkpoint
from .settings import Settings, flat, from_keywords, setting
from .errors import Interrupted, MiniSPDFError
from .fileio import put_back
from .tokenizers import TOKENIZERS
from .flops import flop_report
from .model import GPT, PRESETS, PRETRAINED, GPTConfig, preset_config
from .schedules import SparsityConfig
from .sparsity import densify, target_parameters
from .tasks import TASK_SPEC, Task
from .run_folder import RunConfig
from .train import TrainConfig
from .devices import check_fits, dist_info

# ------------------------------------------------------------- the settings, one object per concern


@dataclass
class ModelConfig(Settings):
    """Model: a preset, any of its architecture changed, and the tokenizer."""
    preset: str | None = setting(None, "model size (default: tiny)", choices=PRESETS)
    tokenizer: str | None = setting(None, "char (bytes, 257 ids) or gpt2 (BPE, 50257 ids); default "
                                          "from the preset",
                                    choices=TOKENIZERS)
    arch: dict = setting({}, "Architecture: changes to the preset's", fields_of=GPTConfig,
                         skip=("vocab_size",))

    def __post_init__(self):
        super().__post_init__()
        # the vocabulary is the tokenizer's
        allowed = [f.name for f in fields(GPTConfig) if f.name != "vocab_size"]
        unknown = [k for k in self.arch if k not in allowed]
        if unknown:
            raise MiniSPDFError(f"unknown architecture setting(s) {', '.join(unknown)}: choose "
                                f"from {', '.join(allowed)}")
        preset_config(self.preset or "tiny", **self.arch)  # a bad value fails here, before any work

    def gpt_config(self, vocab_size: int) -> GPTConfig:
        return preset_config(self.preset or "tiny", **{**self.arch, "vocab_size": vocab_size})


@dataclass
class PretrainConfig(Settings):
    """Pre-training: the corpus and the initial weights."""
    data: str = setting("builtin",
                        "corpus: " + ", ".join([*data_lib.BUILTIN_SOURCES, *data_lib.HUB_SOURCES])
                        + " or a path to a .txt file (see `minispdf prepare --help`)",
                        metavar="SOURCE")
    max_chars: int | None = data_lib.max_chars_setting()
    init: str = setting("scratch", "initial weights: scratch, or gpt2 (OpenAI's; needs "
                                   "transformers and the network)",
                        choices=("scratch", "gpt2"))


@dataclass
class FinetuneConfig(Settings):
    """Fine-tuning: the checkpoint it starts from, and the task (or corpus) it trains on."""
    init_from: str | None = setting(
        None, "checkpoint or run folder to start from, with its architecture (a --preset "
                                          "given must match it); none: a new model, the "
                                          "no-pre-training baseline",
                                    metavar="RUN")
    # or a Task object
    task: str | Task | None = setting(None, f"downstream task: {TASK_SPEC}", metavar="SPEC")
    data: str | None = setting(None,
                               "or continue language modelling on this corpus (as pretrain --data)",
                               metavar="SOURCE")
    keep_masks: bool = setting(False, "keep the pre-training masks: sparse fine-tuning (SPSF)")
    train_file: str | None = setting(None, "with a bare --task name: the file to fine-tune on "
                                           "(e.g. trainset.csv)",
                                     metavar="FILE")
    val_file: str | None = setting(None, "with a bare --task name: the validation file",
                                   metavar="FILE")


def default_tokenizer(preset: str) -> str:
    return "char" if PRESETS.get(preset, {}).get("vocab_size", 257) <= 512 else "gpt2"


def _run(model, batches, tcfg: TrainConfig, run: RunConfig, meta: dict, callbacks, settings: dict,
         backup=None,
         changes: dict | None = None, schedule=None):
    """Train in the run folder; ``settings.json`` (readable by ``--config``) first, ``result.json``
    last."""
    from .train import train

    out, owner = run.out, dist_info()[0] == 0  # under torchrun, rank 0 alone writes the run folder
    try:
        if out and owner:
            run_folder.write_settings(run, settings, changes)
        result = train(model, batches, tcfg, out_dir=out, callbacks=callbacks, resume=run.resume,
                       meta=meta,
                       schedule=schedule)
    except BaseException as e:
        # both runs are kept: the new one to resume
        if backup and isinstance(e, Interrupted) and e.saved:
            kept = run_folder.keep_beside(backup, out)
            e.args = (f"{e.args[0]}; the run it replaced is kept in {kept}",)
        elif backup:  # --overwrite of a run that then failed: the old run comes back
            put_back(backup, out)
        elif out and not run.resume and owner:
            run_folder.undo_new_run(out)
        raise
    if backup:
        shutil.rmtree(backup, ignore_errors=True)
    result["flop_report"] = flop_report(model, seq_len=model.config.block_size).to_dict()
    result["phase"] = meta["phase"]
    if "mode" in meta:
        result["mode"] = meta["mode"]  # dense (SPDF) | sparse (SPSF) | from scratch
    result["model"] = model
    if out:
        run_folder.write_result(out,
                                {k: v for k, v in result.items() if k not in ("model", "history")})
    return result


def pretrain(*, pretraining: PretrainConfig | None = None, model_config: ModelConfig | None = None,
             sparsity_config: SparsityConfig | None = None, training: TrainConfig | None = None,
             run: RunConfig | None = None, callbacks=(), **settings) -> dict:
    """Pre-train a GPT, sparse if ``sparsity_config.sparsity > 0``. Returns the train summary plus
    the model.

    The settings come as one object per concern (what the CLI passes), or as keywords named like
    their fields, which fill the same objects (handy in a notebook)::

        pretrain(preset="nano", block_size=32, sparsity=0.75, max_steps=100, out="runs/s75")
    """
    pre, spec, masks, tcfg, run = from_keywords(
        settings, "pretrain", pretraining=(PretrainConfig, pretraining), model=(ModelConfig,
                                                                                model_config),
        masks=(SparsityConfig, sparsity_config), training=(TrainConfig, training),
        run=(RunConfig, run))
    preset = spec.preset or "tiny"
    if pre.init == "gpt2" and preset not in PRETRAINED:
        raise MiniSPDFError(f"--init gpt2 needs --preset {' or '.join(PRETRAINED)} (OpenAI's "
                            f"sizes), not {preset!r}")
    run_folder.check(run)
    settings = flat(pre, spec, masks, tcfg)
    tok = data_lib.get_tokenizer(spec.tokenizer
                                 or ("gpt2" if pre.init == "gpt2" else default_tokenizer(preset)))
    config = spec.gpt_config(tok.vocab_size)
    check_fits(config, tcfg)  # an absurd size fails here, not in an allocation that swaps for hours
    changes = run_folder.check_resume(run, settings, {**asdict(pre), **asdict(masks)}, config,
                                      tok.name) if run.resume else None
    if masks.sparsity > 0:
        with torch.device("meta"):  # names only, no memory: a bad --include fails before any work
            target_parameters(GPT(config), masks.include)
    tokens = data_lib.prepare_data(pre.data, tok.name, max_chars=pre.max_chars)
    # a corpus too short for the context fails before the run folder is made
    tokens.validate(config.block_size)
    batches = TokenBatches(tokens, tcfg.batch_size, config.block_size)

    # bad timing fails here
    schedule = masks.make_schedule(tcfg.max_steps) if masks.sparsity > 0 else None
    torch.manual_seed(tcfg.seed)
    net = GPT.from_pretrained(preset) if pre.init == "gpt2" else GPT(config)
    if schedule is not None:
        schedule.start(net)
    meta = dict(phase="pretrain", tokenizer=tok.name, preset=preset, **asdict(pre), **asdict(masks))
    owner = dist_info()[0] == 0  # under torchrun, rank 0 alone writes the run folder
    with run_folder.lock(run, owner):
        # only now, when nothing is left to fail on the settings
        backup = run_folder.prepare(run, owner)
        return _run(net, batches, tcfg, run, meta, callbacks, settings, backup, changes, schedule)


def finetune(*, finetuning: FinetuneConfig | None = None, model_config: ModelConfig | None = None,
             training: TrainConfig | None = None, run: RunConfig | None = None, callbacks=(),
             **settings) -> dict:
    """Fine-tune a pre-trained checkpoint: dense by default (SPDF), masks kept with ``keep_masks``.

    ``init_from`` is a checkpoint (or run folder); without it the model starts from scratch
    (the no-pre-training baseline) with the ``preset`` architecture (default ``tiny``); with
    ``init_from`` the architecture is the checkpoint's, and a ``preset`` given too must match it.
    Train on a downstream ``task`` (a spec, or a ``minispdf.tasks.Task``) or continue language
    modelling on ``data``. Settings come as objects or keywords, as for :func:`pretrain`.
    """
    ft, spec, tcfg, run = from_keywords(
        settings, "finetune", finetuning=(FinetuneConfig, finetuning), model=(ModelConfig,
                                                                              model_config),
        training=(TrainConfig, training), run=(RunConfig, run))
    task_name = ft.task if ft.task is None or isinstance(ft.task, str) else ft.task.name
    if (ft.task is None) == (ft.data is None):
        raise MiniSPDFError("finetune needs exactly one of --task NAME (downstream) or --data "
                            "SOURCE (language modelling)")
    if run.out and ft.init_from and os.path.abspath(run.out) == os.path.abspath(
            ft.init_from if os.path.isdir(ft.init_from) else os.path.dirname(ft.init_from) or "."):
        raise MiniSPDFError(f"--out {run.out} is the folder of --init_from: fine-tune into another "
                            f"folder, so the "
                            "pre-trained checkpoint survives")
    run_folder.check(run)
    settings = {**flat(ft, spec, tcfg), "task": task_name}
    net, info, tok = _starting_model(ft, spec, tcfg)
    changes = run_folder.check_resume(run, settings,
                                      dict(keep_masks=ft.keep_masks, task=task_name, data=ft.data),
                                      net.config, tok.name) if run.resume else None
    batches = _finetune_batches(ft, tok, net.config.block_size, tcfg.batch_size)

    if not ft.keep_masks:
        densify(net)  # SPDF: the zeros become ordinary trainable weights
    mode = "sparse (SPSF)" if ft.keep_masks and info and info.get("meta", {}).get("sparsity") else (
        "dense" if ft.init_from else "from scratch")
    source = dict(init_from=ft.init_from, pretrain=info.get("meta", {}) if info else None)
    meta = dict(phase="finetune", tokenizer=tok.name, task=task_name, data=ft.data,
                keep_masks=ft.keep_masks,
                mode=mode, **source)
    owner = dist_info()[0] == 0  # under torchrun, rank 0 alone writes the run folder
    with run_folder.lock(run, owner):
        # only now, when nothing is left to fail on the settings
        backup = run_folder.prepare(run, owner)
        return _run(net, batches, tcfg, run, meta, callbacks, settings, backup, changes)


def _starting_model(ft: FinetuneConfig, spec: ModelConfig, tcfg: TrainConfig):
    """(model, checkpoint info or None, tokenizer): the checkpoint's, or a new model from the
    preset."""
    if not ft.init_from:
        tok = data_lib.get_tokenizer(spec.tokenizer or default_tokenizer(spec.preset or "tiny"))
        check_fits(spec.gpt_config(tok.vocab_size), tcfg)
        torch.manual_seed(tcfg.seed)
        return GPT(spec.gpt_config(tok.vocab_size)), None, tok
    net, info = load_checkpoint(ft.init_from)
    tok_name = spec.tokenizer or info.get("tokenizer") or "char"
    check_compatible(info, None, tok_name, ft.init_from)
    if spec.arch:
        raise MiniSPDFError(f"cannot change the architecture ({', '.join(spec.arch)}) of "
                            f"a checkpoint "
                            "when fine-tuning it: drop those settings")
    if spec.preset is not None:
        check_compatible(info, preset_config(spec.preset, vocab_size=net.config.vocab_size,
                                             block_size=net.config.block_size), path=ft.init_from)
    check_fits(net.config, tcfg)  # the checkpoint's model fits, but maybe not at this --batch_size
    return net, info, data_lib.get_tokenizer(tok_name)


def _finetune_batches(ft: FinetuneConfig, tok, block_size: int, batch_size: int):
    """The task's batches (prompt masked out of the loss), or a corpus's for language modelling."""
    if ft.task is None:
        tokens = data_lib.prepare_data(ft.data, tok.name)
        tokens.validate(block_size)
        return TokenBatches(tokens, batch_size, block_size)
    from . import tasks as tasks_lib

    task = tasks_lib.resolve_task(ft.task, train_file=ft.train_file, val_file=ft.val_file)
    try:
        return TaskBatches(tok, task, block_size, batch_size)
    except MiniSPDFError as e:
        if not (ft.init_from and "larger --block_size" in str(e)):
            raise
        # the context length is the checkpoint's: say where it can be changed
        raise MiniSPDFError(str(e).replace(
            "use a larger --block_size",
            f"the context of {ft.init_from} is fixed: pre-train with a larger "
            "--block_size for this task")) from None
