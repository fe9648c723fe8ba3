"""The SPDF recipe as two functions: ``pretrain`` (sparse or dense) and ``finetune`` (dense or sparse).

These glue the pieces together -- tokenizer and data (``data``), the GPT (``model``), masks
(``sparsity``), the loop (``train``) and the FLOP count (``flops``) -- and are what the CLI and
the notebooks call::

    from minispdf.spdf import pretrain, finetune
    sparse = pretrain(preset="tiny", sparsity=0.75, max_steps=300, out="runs/s75")
    tuned = finetune(init_from="runs/s75", task="builtin", max_steps=200, out="runs/s75-spdf")

Settings are one dataclass per concern -- ``ModelConfig``, ``schedules.SparsityConfig``,
``train.TrainConfig``, ``RunConfig``, and what each phase reads (``PretrainConfig``,
``FinetuneConfig``) -- declared once: the command line is generated from them (``config``),
and the keywords above fill them by field name. Every setting is validated before anything is
written, so a typo never leaves a half-made run folder; an existing run folder is never
overwritten unless asked.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from dataclasses import asdict, dataclass, fields

import torch

from . import data as data_lib
from .batches import TaskBatches, TokenBatches
from .checkpoint import check_compatible, check_out_folder, load_checkpoint, read_checkpoint
from .config import Settings, as_flag, flat, from_keywords, setting
from .errors import Interrupted, MiniSPDFError
from .fileio import check_not_in_use, move_aside, put_back, read_json, write_json, writer_lock
from .tokenizers import TOKENIZERS
from .flops import flop_report
from .model import GPT, PRESETS, PRETRAINED, GPTConfig, preset_config
from .schedules import SparsityConfig
from .sparsity import densify, target_parameters
from .tasks import TASK_SPEC, Task
from .train import TrainConfig, check_fits, dist_info

# ------------------------------------------------------------------------------ the settings, one object per concern


@dataclass
class ModelConfig(Settings):
    """Model: a preset, any of its architecture changed, and the tokenizer."""
    preset: str | None = setting(None, "model size (default: tiny)", choices=PRESETS)
    tokenizer: str | None = setting(None, "char (bytes, 257 ids) or gpt2 (BPE, 50257 ids); default from the preset",
                                    choices=TOKENIZERS)
    arch: dict = setting({}, "Architecture: changes to the preset's", fields_of=GPTConfig, skip=("vocab_size",))

    def __post_init__(self):
        super().__post_init__()
        allowed = [f.name for f in fields(GPTConfig) if f.name != "vocab_size"]  # the vocabulary is the tokenizer's
        unknown = [k for k in self.arch if k not in allowed]
        if unknown:
            raise MiniSPDFError(f"unknown architecture setting(s) {', '.join(unknown)}: choose from {', '.join(allowed)}")
        preset_config(self.preset or "tiny", **self.arch)  # a bad value fails here, before any work

    def gpt_config(self, vocab_size: int) -> GPTConfig:
        return preset_config(self.preset or "tiny", **{**self.arch, "vocab_size": vocab_size})


@dataclass
class RunConfig(Settings):
    """Run folder: where the checkpoint, log and results go."""
    out: str | None = setting(None, "run folder for ckpt.pt, log.jsonl, settings.json and result.json "
                                    "(none: nothing is written)", metavar="DIR")
    resume: bool = setting(False, "continue the run in --out from its checkpoint (with the same settings; a larger "
                                  "--max_steps is allowed)")
    allow_change: str | None = setting(None, "with --resume: let these settings differ from the run's (e.g. lr; "
                                             "repeatable or comma-separated); settings.json records the change",
                                       metavar="NAME", append=True)
    overwrite: bool = setting(False, "replace the run in --out (it is put back if the new run fails)")

    def __post_init__(self):
        super().__post_init__()
        names = self.allow_change if isinstance(self.allow_change, (list, tuple)) else [self.allow_change or ""]
        self.allow_change = tuple(n.strip().lstrip("-") for part in names for n in str(part).split(",") if n.strip())
        if self.allow_change and not self.resume:
            raise MiniSPDFError("--allow_change only applies to a resumed run: add --resume, or drop it")


@dataclass
class PretrainConfig(Settings):
    """Pre-training: the corpus and the initial weights."""
    data: str = setting("builtin", "corpus: " + ", ".join([*data_lib.BUILTIN_SOURCES, *data_lib.HUB_SOURCES])
                        + " or a path to a .txt file (see `minispdf prepare --help`)", metavar="SOURCE")
    max_chars: int | None = data_lib.max_chars_setting()
    init: str = setting("scratch", "initial weights: scratch, or gpt2 (OpenAI's; needs transformers and the network)",
                        choices=("scratch", "gpt2"))


@dataclass
class FinetuneConfig(Settings):
    """Fine-tuning: the checkpoint it starts from, and the task (or corpus) it trains on."""
    init_from: str | None = setting(None, "checkpoint or run folder to start from, with its architecture (a --preset "
                                          "given must match it); none: a new model, the no-pre-training baseline",
                                    metavar="RUN")
    task: str | Task | None = setting(None, f"downstream task: {TASK_SPEC}", metavar="SPEC")  # or a Task object
    data: str | None = setting(None, "or continue language modelling on this corpus (as pretrain --data)",
                               metavar="SOURCE")
    keep_masks: bool = setting(False, "keep the pre-training masks: sparse fine-tuning (SPSF)")
    train_file: str | None = setting(None, "with a bare --task name: the file to fine-tune on (e.g. trainset.csv)",
                                     metavar="FILE")
    val_file: str | None = setting(None, "with a bare --task name: the validation file", metavar="FILE")


def default_tokenizer(preset: str) -> str:
    return "char" if PRESETS.get(preset, {}).get("vocab_size", 257) <= 512 else "gpt2"


def check_run_dir(run: RunConfig) -> None:
    """Refuse to clobber a finished or running experiment by accident, and refuse an ``out`` that
    cannot become a folder; touches nothing on disk."""
    out, resume, overwrite = run.out, run.resume, run.overwrite
    if out is None:
        if resume:
            raise MiniSPDFError("--resume needs --out DIR: the run folder to continue")
        return
    check_out_folder(out)
    check_not_in_use(out)  # a run being written: say so, before judging its half-written files
    ckpt = os.path.join(out, "ckpt.pt")
    if resume:
        if not os.path.exists(ckpt):
            raise MiniSPDFError(f"cannot resume: {out} has no ckpt.pt: drop --resume to start a new run there")
        return
    if (os.path.exists(ckpt) or os.path.exists(os.path.join(out, "log.jsonl"))) and not overwrite:
        raise MiniSPDFError(f"{out} already holds a run: pass --resume to continue it, --overwrite to "
                            "replace it, or choose another --out")


def run_lock(run: RunConfig):
    """One writer per run folder (``fileio.writer_lock``), held from the folder checks to result.json.
    Under torchrun rank 0 holds it: the other ranks write nothing there."""
    if run.out is None or dist_info()[0] != 0:
        return contextlib.nullcontext()
    return writer_lock(run.out, "run")


def prepare_run_dir(run: RunConfig) -> str | None:
    """``check_run_dir``, then make the folder. With ``overwrite`` an old run is moved aside, not
    deleted: ``_run`` deletes it once the new run has finished, or puts it back if it fails.
    Returns where the old run was moved (or None)."""
    check_run_dir(run)
    out, resume, overwrite = run.out, run.resume, run.overwrite
    if out is None or dist_info()[0] != 0:  # under torchrun, rank 0 alone owns the run folder
        return None
    backup = None
    try:
        if not resume and overwrite and os.path.isdir(out) and os.listdir(out):
            backup = move_aside(out)  # a symlinked --out: its target (the run) is moved, the link stays
        os.makedirs(os.path.realpath(out), exist_ok=True)
    except OSError as e:
        raise MiniSPDFError(f"cannot make the run folder {out} ({e.strerror or e}): choose a writable --out") from None
    return backup


def _check_resume_matches(out: str, given: dict) -> None:
    """A resumed run keeps its checkpoint's masks and data: refuse settings that say otherwise,
    rather than silently continuing a 75%-sparse run that the command line calls dense."""
    saved = read_checkpoint(os.path.join(out, "ckpt.pt")).get("meta", {})
    for key, value in given.items():
        if key in saved and saved[key] != value:
            fix = f"pass {as_flag(key, saved[key])}" if saved[key] is not None else f"leave --{key} out"
            raise MiniSPDFError(f"{as_flag(key, value) or f'no --{key}'} conflicts with the run in {out} ({key} "
                                f"{saved[key]}): {fix} to continue it, or start a new run without --resume")


# Settings that change nothing a run computes: free on --resume.
OPERATIONAL = ("device", "compile", "progress", "checkpoint_interval", "stop_after")
# Checked on resume by their own messages (the checkpoint's architecture, tokenizer and masks), and
# never changeable: the checkpoint holds them.
FIXED = ("preset", "tokenizer", "n_layer", "n_head", "n_embd", "block_size", "vocab_size", "bias", "init", "sparsity",
         "method", "distribution", "scope", "include", "mask_seed", "keep_masks", "schedule", "update_interval",
         "drop_fraction", "stop_fraction", "gmp_start", "gmp_end", "nm", "dense_from")
MISSING = "(not set)"


def _resume_changes(out: str, settings: dict, allowed: tuple) -> dict | None:
    """Compare every saved setting of the run in ``out`` with ``settings`` (those of this command).

    A larger ``max_steps`` is allowed; any other change is refused with one line listing the old
    and new values, unless named in ``allowed`` (``--allow_change``). Returns the history entry
    to record in settings.json (``{"step": N, "changed": {name: [old, new]}}``), or None."""
    ckpt = read_checkpoint(os.path.join(out, "ckpt.pt"))
    step = ckpt.get("step")
    if isinstance(step, int) and step >= settings.get("max_steps", 0):
        return None  # train() refuses it, saying how far the run got
    saved = read_settings(out)
    if saved is None:  # a run written by an older version: its checkpoint's training settings
        saved = ckpt.get("train_config") if isinstance(ckpt.get("train_config"), dict) else {}
        settings = {k: v for k, v in settings.items() if k in saved}
    known = set(saved) | set(settings)
    wrong = [n for n in allowed if n not in known or n in OPERATIONAL or n in FIXED]
    if wrong:
        n = wrong[0]
        why = ("it is free on --resume anyway" if n in OPERATIONAL else "the checkpoint fixes it"
               if n in FIXED else "no such setting of this run")
        raise MiniSPDFError(f"--allow_change {n}: {why}; name settings such as lr, batch_size, dropout")

    def effective(d, key):  # an architecture setting left out means the preset's
        if d.get(key) is None and key in ("dropout",):
            return getattr(preset_config(d.get("preset") or "tiny"), key)
        return d.get(key, MISSING)

    changed = {k: [effective(saved, k), effective(settings, k)] for k in sorted(known - {"history"})
               if k not in OPERATIONAL and k not in FIXED and effective(saved, k) != effective(settings, k)}
    refused = {k: v for k, v in changed.items() if k not in allowed
               and not (k == "max_steps" and isinstance(v[0], int) and v[1] > v[0])}
    if refused:
        listed = ", ".join(f"{k} {old} -> {new}" for k, (old, new) in refused.items())
        raise MiniSPDFError(f"cannot resume {out} with other settings ({listed}): repeat the run's settings "
                            f"(--config {os.path.join(out, 'settings.json')}), or pass --allow_change "
                            f"{','.join(refused)} to continue with the new values")
    return {"step": step, "changed": changed} if changed else None


def read_settings(out: str) -> dict | None:
    """The run's settings.json, or None if it is missing or unreadable."""
    saved = read_json(os.path.join(out, "settings.json"))
    return saved if isinstance(saved, dict) else None


def _run(model, batches, tcfg: TrainConfig, run: RunConfig, meta: dict, callbacks, settings: dict, backup=None,
         changes: dict | None = None, schedule=None):
    """Train in the run folder; ``settings.json`` (readable by ``--config``) first, ``result.json`` last."""
    from .train import train

    out, resume = run.out, run.resume
    try:
        if out and not resume and dist_info()[0] == 0:
            write_json(os.path.join(out, "settings.json"), settings)
        elif out and dist_info()[0] == 0:  # resumed: today's settings, after the history of the changes
            old = read_settings(out) or {}
            history = [*old.get("history", []), *([changes] if changes else [])]
            new = {**settings, **({"history": history} if history else {})}
            if new != old:
                write_json(os.path.join(out, "settings.json"), new)
        result = train(model, batches, tcfg, out_dir=out, callbacks=callbacks, resume=resume, meta=meta,
                       schedule=schedule)
    except BaseException as e:
        if backup and isinstance(e, Interrupted) and e.saved:  # both runs are kept: the new one to resume
            kept = _keep_beside(backup, out)
            e.args = (f"{e.args[0]}; the run it replaced is kept in {kept}",)
        elif backup:  # --overwrite of a run that then failed: the old run comes back
            put_back(backup, out)
        elif out and not resume and dist_info()[0] == 0 and not os.path.exists(os.path.join(out, "ckpt.pt")):
            # a new run that failed before its first checkpoint: leave no half-made run behind
            for name in ("settings.json", "log.jsonl", "result.json"):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(os.path.join(out, name))
            with contextlib.suppress(OSError):
                os.rmdir(out)  # only if now empty: the user's own files stay
        raise
    if backup:
        shutil.rmtree(backup, ignore_errors=True)
    result["flop_report"] = flop_report(model, seq_len=model.config.block_size).to_dict()
    result["phase"] = meta["phase"]
    if "mode" in meta:
        result["mode"] = meta["mode"]  # dense (SPDF) | sparse (SPSF) | from scratch
    result["model"] = model
    if out:
        summary = {k: v for k, v in result.items() if k not in ("model", "history")}
        write_json(os.path.join(out, "result.json"), summary)
    return result


def _keep_beside(holder: str, out: str) -> str:
    """Move the run that ``move_aside`` put in ``holder`` to a visible ``OUT.old``, ``OUT.old2``, ..."""
    real = os.path.realpath(out)
    n, kept = 1, f"{real}.old"
    while os.path.lexists(kept):
        n += 1
        kept = f"{real}.old{n}"
    os.replace(os.path.join(holder, os.path.basename(real)), kept)
    os.rmdir(holder)
    return kept


def pretrain(*, pretraining: PretrainConfig | None = None, model_config: ModelConfig | None = None,
             sparsity_config: SparsityConfig | None = None, training: TrainConfig | None = None,
             run: RunConfig | None = None, callbacks=(), **settings) -> dict:
    """Pre-train a GPT, sparse if ``sparsity_config.sparsity > 0``. Returns the train summary plus the model.

    The settings come as one object per concern (what the CLI passes), or as keywords named like
    their fields, which fill the same objects (handy in a notebook)::

        pretrain(preset="nano", block_size=32, sparsity=0.75, max_steps=100, out="runs/s75")
    """
    pre, spec, masks, tcfg, run = from_keywords(
        settings, "pretrain", pretraining=(PretrainConfig, pretraining), model=(ModelConfig, model_config),
        masks=(SparsityConfig, sparsity_config), training=(TrainConfig, training), run=(RunConfig, run))
    preset = spec.preset or "tiny"
    if pre.init == "gpt2" and preset not in PRETRAINED:
        raise MiniSPDFError(f"--init gpt2 needs --preset {' or '.join(PRETRAINED)} (OpenAI's sizes), not {preset!r}")
    check_run_dir(run)
    settings = flat(pre, spec, masks, tcfg)
    changes = None
    if run.resume:
        _check_resume_matches(run.out, {**asdict(pre), **asdict(masks)})
        changes = _resume_changes(run.out, settings, run.allow_change)
    tok = data_lib.get_tokenizer(spec.tokenizer or ("gpt2" if pre.init == "gpt2" else default_tokenizer(preset)))
    config = spec.gpt_config(tok.vocab_size)
    check_fits(config, tcfg)  # an absurd size fails here, not in an allocation that swaps for hours
    if masks.sparsity > 0:
        with torch.device("meta"):  # names only, no memory: a bad --include fails before any work
            target_parameters(GPT(config), masks.include)
    tokens = data_lib.prepare_data(pre.data, tok.name, max_chars=pre.max_chars)
    tokens.validate(config.block_size)  # a corpus too short for the context fails before the run folder is made
    batches = TokenBatches(tokens, tcfg.batch_size, config.block_size)

    schedule = masks.make_schedule(tcfg.max_steps) if masks.sparsity > 0 else None  # bad timing fails here
    torch.manual_seed(tcfg.seed)
    net = GPT.from_pretrained(preset) if pre.init == "gpt2" else GPT(config)
    if schedule is not None:
        schedule.start(net)
    meta = dict(phase="pretrain", tokenizer=tok.name, preset=preset, **asdict(pre), **asdict(masks))
    with run_lock(run):
        backup = prepare_run_dir(run)  # only now, when nothing is left to fail on the settings
        return _run(net, batches, tcfg, run, meta, callbacks, settings, backup, changes, schedule)


def finetune(*, finetuning: FinetuneConfig | None = None, model_config: ModelConfig | None = None,
             training: TrainConfig | None = None, run: RunConfig | None = None, callbacks=(), **settings) -> dict:
    """Fine-tune a pre-trained checkpoint: dense by default (SPDF), masks kept with ``keep_masks``.

    ``init_from`` is a checkpoint (or run folder); without it the model starts from scratch
    (the no-pre-training baseline) with the ``preset`` architecture (default ``tiny``); with
    ``init_from`` the architecture is the checkpoint's, and a ``preset`` given too must match it.
    Train on a downstream ``task`` (a spec, or a ``minispdf.tasks.Task``) or continue language
    modelling on ``data``. Settings come as objects or keywords, as for :func:`pretrain`.
    """
    ft, spec, tcfg, run = from_keywords(
        settings, "finetune", finetuning=(FinetuneConfig, finetuning), model=(ModelConfig, model_config),
        training=(TrainConfig, training), run=(RunConfig, run))
    task_name = ft.task if ft.task is None or isinstance(ft.task, str) else ft.task.name
    if (ft.task is None) == (ft.data is None):
        raise MiniSPDFError("finetune needs exactly one of --task NAME (downstream) or --data SOURCE (language modelling)")
    if run.out and ft.init_from and os.path.abspath(run.out) == os.path.abspath(
            ft.init_from if os.path.isdir(ft.init_from) else os.path.dirname(ft.init_from) or "."):
        raise MiniSPDFError(f"--out {run.out} is the folder of --init_from: fine-tune into another folder, so the "
                            "pre-trained checkpoint survives")
    check_run_dir(run)
    settings = {**flat(ft, spec, tcfg), "task": task_name}
    changes = None
    if run.resume:
        _check_resume_matches(run.out, dict(keep_masks=ft.keep_masks, task=task_name, data=ft.data))
        changes = _resume_changes(run.out, settings, run.allow_change)
    net, info, tok = _starting_model(ft, spec, tcfg)
    batches = _finetune_batches(ft, tok, net.config.block_size, tcfg.batch_size)

    if not ft.keep_masks:
        densify(net)  # SPDF: the zeros become ordinary trainable weights
    mode = "sparse (SPSF)" if ft.keep_masks and info and info.get("meta", {}).get("sparsity") else (
        "dense" if ft.init_from else "from scratch")
    source = dict(init_from=ft.init_from, pretrain=info.get("meta", {}) if info else None)
    meta = dict(phase="finetune", tokenizer=tok.name, task=task_name, data=ft.data, keep_masks=ft.keep_masks,
                mode=mode, **source)
    with run_lock(run):
        backup = prepare_run_dir(run)
        return _run(net, batches, tcfg, run, meta, callbacks, settings, backup, changes)


def _starting_model(ft: FinetuneConfig, spec: ModelConfig, tcfg: TrainConfig):
    """(model, checkpoint info or None, tokenizer): the checkpoint's, or a new model from the preset."""
    if not ft.init_from:
        tok = data_lib.get_tokenizer(spec.tokenizer or default_tokenizer(spec.preset or "tiny"))
        check_fits(spec.gpt_config(tok.vocab_size), tcfg)
        torch.manual_seed(tcfg.seed)
        return GPT(spec.gpt_config(tok.vocab_size)), None, tok
    net, info = load_checkpoint(ft.init_from)
    tok_name = spec.tokenizer or info.get("tokenizer") or "char"
    check_compatible(info, None, tok_name, ft.init_from)
    if spec.arch:
        raise MiniSPDFError(f"cannot change the architecture ({', '.join(spec.arch)}) of a checkpoint "
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
            "use a larger --block_size", f"the context of {ft.init_from} is fixed: pre-train with a larger "
            "--block_size for this task")) from None
