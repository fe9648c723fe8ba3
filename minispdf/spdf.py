"""The SPDF recipe as two functions: ``pretrain`` (sparse or dense) and ``finetune`` (dense or sparse).

These glue the pieces together -- tokenizer and data (``data``), the GPT (``model``), masks
(``sparsity``), the loop (``train``) and the FLOP count (``flops``) -- and are what the CLI and
the notebooks call::

    from minispdf.spdf import pretrain, finetune
    sparse = pretrain(preset="tiny", sparsity=0.75, max_steps=300, out="runs/s75")
    tuned = finetune(init_from="runs/s75", task="builtin", max_steps=200, out="runs/s75-spdf")

Every setting is validated before anything is written, so a typo never leaves a half-made run
folder; an existing run folder is never overwritten unless asked.
"""

from __future__ import annotations

import contextlib
import os
import shutil

import torch

from . import data as data_lib
from .checkpoint import check_compatible, check_out_folder, load_checkpoint, read_checkpoint
from .errors import MiniSPDFError
from .fileio import move_aside, put_back, write_json
from .flops import flop_report
from .model import GPT, PRESETS, PRETRAINED, preset_config
from .sparsity import check_mask_options, check_sparsity, densify, sparsify, target_parameters
from .train import TrainConfig, dist_info

MODEL_KEYS = ("n_layer", "n_head", "n_embd", "block_size", "dropout", "bias")


def default_tokenizer(preset: str) -> str:
    return "char" if PRESETS.get(preset, {}).get("vocab_size", 257) <= 512 else "gpt2"


def split_kwargs(kwargs: dict) -> tuple[dict, dict]:
    """Split keyword settings into (model overrides, TrainConfig fields); unknown keys are errors."""
    train_keys = set(TrainConfig.__dataclass_fields__)
    model, train, unknown = {}, {}, []
    for k, v in kwargs.items():
        if v is None:
            continue
        if k in MODEL_KEYS:
            model[k] = v
        elif k in train_keys:
            train[k] = v
        else:
            unknown.append(k)
    if unknown:
        raise MiniSPDFError(f"unknown setting(s) {', '.join(unknown)}: see `minispdf pretrain --help`")
    return model, train


def check_run_dir(out: str | None, resume: bool, overwrite: bool) -> None:
    """Refuse to clobber a finished or running experiment by accident, and refuse an ``out`` that
    cannot become a folder; touches nothing on disk."""
    if out is None:
        if resume:
            raise MiniSPDFError("--resume needs --out DIR: the run folder to continue")
        return
    check_out_folder(out)
    ckpt = os.path.join(out, "ckpt.pt")
    if resume:
        if not os.path.exists(ckpt):
            raise MiniSPDFError(f"cannot resume: {out} has no ckpt.pt: drop --resume to start a new run there")
        return
    if (os.path.exists(ckpt) or os.path.exists(os.path.join(out, "log.jsonl"))) and not overwrite:
        raise MiniSPDFError(f"{out} already holds a run: pass --resume to continue it, --overwrite to "
                            "replace it, or choose another --out")


def prepare_run_dir(out: str | None, resume: bool, overwrite: bool) -> str | None:
    """``check_run_dir``, then make the folder. With ``overwrite`` an old run is moved aside, not
    deleted: ``_run`` deletes it once the new run has finished, or puts it back if it fails.
    Returns where the old run was moved (or None)."""
    check_run_dir(out, resume, overwrite)
    if out is None or dist_info()[0] != 0:  # under torchrun, rank 0 alone owns the run folder
        return None
    backup = None
    try:
        if not resume and overwrite and os.path.isdir(out) and os.listdir(out):
            backup = move_aside(out)
        os.makedirs(out, exist_ok=True)
    except OSError as e:
        raise MiniSPDFError(f"cannot make the run folder {out} ({e.strerror or e}): choose a writable --out") from None
    return backup


def _check_resume_matches(out: str, given: dict) -> None:
    """A resumed run keeps its checkpoint's masks and data: refuse settings that say otherwise,
    rather than silently continuing a 75%-sparse run that the command line calls dense."""
    saved = read_checkpoint(os.path.join(out, "ckpt.pt")).get("meta", {})
    for key, value in given.items():
        if key in saved and saved[key] != value:
            raise MiniSPDFError(f"--{key} {value} conflicts with the run in {out} ({key} {saved[key]}): "
                                f"pass --{key} {saved[key]} to continue it, or start a new run without --resume")


def _run(model, batches, tcfg, out, resume, meta, callbacks, settings, backup=None):
    from .train import train  # local import keeps `import minispdf.spdf` light for the CLI

    try:
        if out and not resume and dist_info()[0] == 0:
            write_json(os.path.join(out, "settings.json"), settings)
        result = train(model, batches, tcfg, out_dir=out, callbacks=callbacks, resume=resume, meta=meta)
    except BaseException:
        if backup:  # --overwrite of a run that then failed (or was interrupted): the old run comes back
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


def pretrain(preset: str = "tiny", data: str = "builtin", tokenizer: str | None = None,
             sparsity: float = 0.0, method: str = "random", distribution: str = "uniform",
             scope: str = "tensor", include: str | None = None, mask_seed: int = 0,
             init: str = "scratch", out: str | None = None, resume: bool = False,
             overwrite: bool = False, max_chars: int | None = None, callbacks=(), **kwargs) -> dict:
    """Pre-train a GPT, sparse if ``sparsity > 0``. Returns the train summary plus the model.

    ``kwargs`` are model overrides (n_layer, n_embd, block_size, ...) and TrainConfig fields
    (max_steps, lr, batch_size, ...). ``init="gpt2"`` starts from OpenAI's GPT-2 weights.
    """
    settings = dict(preset=preset, data=data, tokenizer=tokenizer, sparsity=sparsity, method=method,
                    distribution=distribution, scope=scope, include=include, mask_seed=mask_seed,
                    init=init, max_chars=max_chars, **kwargs)
    check_sparsity(sparsity)
    check_mask_options(method, distribution, scope, include)
    if max_chars is not None and max_chars < 1:
        raise MiniSPDFError(f"max_chars={max_chars}: give a positive number of characters (or leave it out)")
    if preset not in PRESETS:
        raise MiniSPDFError(f"unknown preset {preset!r}: choose one of {', '.join(PRESETS)}")
    if init not in ("scratch", "gpt2"):
        raise MiniSPDFError(f"init={init!r}: choose scratch or gpt2 (OpenAI's weights)")
    if init == "gpt2" and preset not in PRETRAINED:
        raise MiniSPDFError(f"--init gpt2 needs --preset {' or '.join(PRETRAINED)} (OpenAI's sizes), not {preset!r}")
    overrides, train_kwargs = split_kwargs(kwargs)
    tcfg = TrainConfig(**train_kwargs)
    check_run_dir(out, resume, overwrite)
    if resume:
        _check_resume_matches(out, dict(sparsity=sparsity, method=method, distribution=distribution, data=data,
                                        scope=scope, include=include, max_chars=max_chars))
    tok = data_lib.get_tokenizer(tokenizer or ("gpt2" if init == "gpt2" else default_tokenizer(preset)))
    config = preset_config(preset, **{**overrides, "vocab_size": tok.vocab_size})
    if sparsity > 0:
        with torch.device("meta"):  # names only, no memory: a bad --include fails before any work
            target_parameters(GPT(config), include)
    tokens = data_lib.prepare_data(data, tok.name, max_chars=max_chars)
    batches = data_lib.TokenBatches(tokens, tcfg.batch_size, config.block_size)

    torch.manual_seed(tcfg.seed)
    if init == "gpt2":
        model = GPT.from_pretrained(preset)
    else:
        model = GPT(config)
    if sparsity > 0:
        sparsify(model, sparsity, method=method, distribution=distribution, include=include,
                 scope=scope, seed=mask_seed)
    backup = prepare_run_dir(out, resume, overwrite)  # only now, when nothing is left to fail on the settings
    meta = dict(phase="pretrain", tokenizer=tok.name, data=data, sparsity=sparsity, method=method,
                distribution=distribution, scope=scope, include=include, max_chars=max_chars, preset=preset)
    return _run(model, batches, tcfg, out, resume, meta, callbacks, settings, backup)


def finetune(init_from: str | None = None, task: str | None = None, data: str | None = None,
             keep_masks: bool = False, train_file: str | None = None, val_file: str | None = None,
             preset: str | None = None, tokenizer: str | None = None,
             out: str | None = None, resume: bool = False, overwrite: bool = False,
             callbacks=(), **kwargs) -> dict:
    """Fine-tune a pre-trained checkpoint: dense by default (SPDF), masks kept with ``keep_masks``.

    ``init_from`` is a checkpoint (or run folder); without it the model starts from scratch
    (the no-pre-training baseline) with the ``preset`` architecture (default ``tiny``); with
    ``init_from`` the architecture is the checkpoint's, and a ``preset`` given too must match it.
    Train on a downstream ``task`` (see ``minispdf.tasks``) or continue language modelling on ``data``.
    """
    settings = dict(init_from=init_from, task=task if task is None or isinstance(task, str) else task.name,
                    train_file=train_file, val_file=val_file, data=data, keep_masks=keep_masks, preset=preset, tokenizer=tokenizer, **kwargs)
    if (task is None) == (data is None):
        raise MiniSPDFError("finetune needs exactly one of --task NAME (downstream) or --data SOURCE (language modelling)")
    overrides, train_kwargs = split_kwargs(kwargs)
    tcfg = TrainConfig(**train_kwargs)
    if out and init_from and os.path.abspath(out) == os.path.abspath(
            init_from if os.path.isdir(init_from) else os.path.dirname(init_from) or "."):
        raise MiniSPDFError(f"--out {out} is the folder of --init_from: fine-tune into another folder, so the "
                            "pre-trained checkpoint survives")
    check_run_dir(out, resume, overwrite)
    if resume:
        _check_resume_matches(out, dict(keep_masks=keep_masks, task=settings["task"], data=data))
    if init_from:
        model, info = load_checkpoint(init_from)
        tok_name = tokenizer or info.get("tokenizer") or "char"
        check_compatible(info, None, tok_name, init_from)
        if overrides:
            raise MiniSPDFError(f"cannot change the architecture ({', '.join(overrides)}) of a checkpoint "
                                "when fine-tuning it: drop those settings")
        if preset is not None:  # preset_config refuses an unknown name
            check_compatible(info, preset_config(preset, vocab_size=model.config.vocab_size,
                                                     block_size=model.config.block_size), path=init_from)
        source = dict(init_from=init_from, pretrain=info.get("meta", {}))
    else:
        preset = preset or "tiny"
        tok_name = tokenizer or default_tokenizer(preset)
        if preset not in PRESETS:
            raise MiniSPDFError(f"unknown preset {preset!r}: choose one of {', '.join(PRESETS)}")
        info = None
        source = dict(init_from=None)
    tok = data_lib.get_tokenizer(tok_name)
    if not init_from:
        torch.manual_seed(tcfg.seed)
        model = GPT(preset_config(preset, **{**overrides, "vocab_size": tok.vocab_size}))
    if task is not None:
        from . import tasks as tasks_lib

        task_obj = tasks_lib.resolve_task(task, train_file=train_file, val_file=val_file)
        try:
            batches = tasks_lib.TaskBatches(tok, task_obj, model.config.block_size, tcfg.batch_size)
        except MiniSPDFError as e:
            if not (init_from and "larger --block_size" in str(e)):
                raise
            # the context length is the checkpoint's: say where it can be changed
            raise MiniSPDFError(str(e).replace(
                "use a larger --block_size", f"the context of {init_from} is fixed: pre-train with a larger "
                "--block_size for this task")) from None
    else:
        tokens = data_lib.prepare_data(data, tok.name)
        batches = data_lib.TokenBatches(tokens, tcfg.batch_size, model.config.block_size)
    backup = prepare_run_dir(out, resume, overwrite)

    if not keep_masks:
        densify(model)  # SPDF: the zeros become ordinary trainable weights
    mode = "sparse (SPSF)" if keep_masks and info and info.get("meta", {}).get("sparsity") else (
        "dense" if init_from else "from scratch")
    meta = dict(phase="finetune", tokenizer=tok.name, task=task if isinstance(task, str) else getattr(task, "name", None),
                data=data, keep_masks=keep_masks, mode=mode, **source)
    return _run(model, batches, tcfg, out, resume, meta, callbacks, settings, backup)
