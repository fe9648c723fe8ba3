"""The run folder of ``pretrain`` and ``finetune``: what is in it, who writes it, and when a run
may continue there.

    OUT/settings.json   the run's settings (a ``--config`` file), with the changes made on --resume
    OUT/log.jsonl       the step and evaluation records (:class:`minispdf.callbacks.RunLog`)
    OUT/ckpt.pt         the checkpoint, rewritten atomically (:mod:`minispdf.checkpoint`)
    OUT/result.json     the summary, written last: a run that has one finished

One process writes a folder at a time (:func:`lock`). Every check comes before the first write:
a refused ``--resume`` leaves the folder as it was, and :func:`check_resume` is the one check of
whether a checkpoint can continue with the settings given (``train`` asks it too). Temporary
files of a killed write (``.tmp-*``) are removed by the next run that takes the lock.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from dataclasses import dataclass, fields

from .checkpoint import (RESUME_KEYS, check_compatible, check_out_folder, read_checkpoint,
                         require_keys)
from .config import as_flag
from .settings import Settings, setting
from .errors import MiniSPDFError
from .fileio import TMP_PREFIX, check_not_in_use, move_aside, read_json, write_json, writer_lock
from .model import GPTConfig, preset_config
from .schedules import SparsityConfig

CKPT, LOG, SETTINGS, RESULT = "ckpt.pt", "log.jsonl", "settings.json", "result.json"


@dataclass
class RunConfig(Settings):
    """Run folder: where the checkpoint, log and results go."""
    out: str | None = setting(None, "run folder for ckpt.pt, log.jsonl, settings.json and "
                              "result.json (none: nothing is written)", metavar="DIR")
    resume: bool = setting(False, "continue the run in --out from its checkpoint (with the same "
                           "settings; a larger --max_steps is allowed)")
    allow_change: str | None = setting(None, "with --resume: let these settings differ from the "
                                       "run's (e.g. lr; repeatable or comma-separated); "
                                       "settings.json records the change",
                                       metavar="NAME", append=True)
    overwrite: bool = setting(False, "replace the run in --out (it is put back if the new run "
                              "fails)")

    def __post_init__(self):
        super().__post_init__()
        names = self.allow_change
        names = [] if names is None else names if isinstance(names, (list, tuple)) else [names]
        if any(not str(part).strip(" ,-") for part in names):
            raise MiniSPDFError("--allow_change needs the name of a setting (e.g. "
                                "--allow_change lr)"
                                ": give one, or drop --allow_change")
        self.allow_change = tuple(n.strip().lstrip("-") for part in names
                                  for n in str(part).split(",") if n.strip())
        if self.allow_change and not self.resume:
            raise MiniSPDFError("--allow_change only applies to a resumed run: add --resume, or "
                                "drop it")


def path(out: str, name: str) -> str:
    return os.path.join(out, name)


# ----------------------------------------------------------------- before anything is written


def check(run: RunConfig) -> None:
    """Refuse to clobber a finished or running experiment by accident, and refuse an ``out`` that
    cannot become a folder; touches nothing on disk."""
    out = run.out
    if out is None:
        if run.resume:
            raise MiniSPDFError("--resume needs --out DIR: the run folder to continue")
        return
    check_out_folder(out)
    check_not_in_use(out)  # a run being written: say so, before judging its half-written files
    has_ckpt, has_log = os.path.exists(path(out, CKPT)), os.path.exists(path(out, LOG))
    if run.resume and not has_ckpt and has_log:  # killed before its first checkpoint
        raise MiniSPDFError(f"cannot resume: {out} has no ckpt.pt (the run stopped before its "
                            "first checkpoint): start it again with --overwrite instead of "
                            "--resume")
    if run.resume and not has_ckpt:
        raise MiniSPDFError(f"cannot resume: {out} has no ckpt.pt: drop --resume to start a new "
                            "run there")
    if not run.resume and not run.overwrite and has_ckpt:
        raise MiniSPDFError(f"{out} already holds a run: pass --resume to continue it, --overwrite "
                            "to replace it, or choose another --out")
    if not run.resume and not run.overwrite and has_log:
        raise MiniSPDFError(f"{out} holds a run that stopped before its first checkpoint "
                            "(log.jsonl, no ckpt.pt): pass --overwrite to start it again, or "
                            "choose another --out")


# Settings that change nothing a run computes: free on --resume.
OPERATIONAL = ("device", "compile", "progress", "checkpoint_interval", "stop_after")
# Checked on resume by their own messages (the checkpoint's architecture, tokenizer and masks, all
# of the masks' settings), and never changeable: the checkpoint holds them.
FIXED = ("preset", "tokenizer", "n_layer", "n_head", "n_embd", "block_size", "vocab_size", "bias",
         "init", "keep_masks", *(f.name for f in fields(SparsityConfig)))
MISSING = "(not set)"


def check_resumable(ckpt: dict, where: str, config: GPTConfig, tokenizer: str | None,
                    max_steps: int) -> None:
    """Whether the checkpoint ``ckpt`` (read from ``where``) can continue as a model of ``config``
    with ``tokenizer`` up to ``max_steps``: its training state is whole, its architecture and
    context are these, and it has steps left to train."""
    require_keys(ckpt, RESUME_KEYS, where)
    check_compatible(ckpt, config, tokenizer, where)
    saved_block = ckpt["model_config"].get("block_size")
    if saved_block != config.block_size:
        raise MiniSPDFError(f"cannot resume: {where} was trained with block_size {saved_block}, "
                            f"not {config.block_size}: pass --block_size {saved_block}")
    if ckpt["step"] >= max_steps:
        raise MiniSPDFError(f"cannot resume: the run in {os.path.dirname(where)} already reached "
                            f"step {ckpt['step']} of max_steps {max_steps}: pass a larger "
                            "--max_steps to train on")


def check_resume(run: RunConfig, settings: dict, fixed: dict, config: GPTConfig,
                 tokenizer: str) -> dict | None:
    """The one check before ``--resume`` writes anything: the checkpoint in ``run.out`` fits
    ``config`` and ``tokenizer`` and has steps left (:func:`check_resumable`), the masks and data
    it was trained with are those of ``fixed``, and the other ``settings`` are the run's (see
    :func:`settings_changes`). Returns the history entry that :func:`write_settings` records."""
    where = path(run.out, CKPT)
    ckpt = read_checkpoint(where)
    saved = ckpt.get("meta", {})
    for key, value in fixed.items():  # a 75%-sparse run the command line calls dense is refused
        if key in saved and saved[key] != value:
            fix = (f"pass {as_flag(key, saved[key])}" if saved[key] is not None
                   else f"leave --{key} out")
            raise MiniSPDFError(f"{as_flag(key, value) or f'no --{key}'} conflicts with the run in "
                                f"{run.out} ({key} {saved[key]}): {fix} to continue it, or start a "
                                "new run without --resume")
    check_resumable(ckpt, where, config, tokenizer, settings["max_steps"])
    return settings_changes(run, ckpt, settings)


def settings_changes(run: RunConfig, ckpt: dict, settings: dict) -> dict | None:
    """Compare every saved setting of the run with ``settings`` (those of this command).

    A larger ``max_steps`` is allowed; any other change is refused with one line listing the old
    and new values, unless named in ``run.allow_change``. Returns the history entry to record in
    settings.json (``{"step": N, "changed": {name: [old, new]}}``), or None."""
    saved = read_settings(run.out)
    if saved is None:  # a run written by an older version: its checkpoint's training settings
        saved = ckpt.get("train_config")
        saved = saved if isinstance(saved, dict) else {}
        settings = {k: v for k, v in settings.items() if k in saved}
    known = set(saved) | set(settings)
    _check_allowed(run.allow_change, known)

    def effective(d, key):  # an architecture setting left out means the preset's
        if d.get(key) is None and key in ("dropout",):
            return getattr(preset_config(d.get("preset") or "tiny"), key)
        return d.get(key, MISSING)

    changed = {k: [effective(saved, k), effective(settings, k)] for k in sorted(known - {"history"})
               if k not in OPERATIONAL and k not in FIXED
               and effective(saved, k) != effective(settings, k)}
    refused = {k: v for k, v in changed.items() if k not in run.allow_change
               and not (k == "max_steps" and isinstance(v[0], int) and v[1] > v[0])}
    if refused:
        listed = ", ".join(f"{k} {old} -> {new}" for k, (old, new) in refused.items())
        raise MiniSPDFError(f"cannot resume {run.out} with other settings ({listed}): repeat the "
                            f"run's settings (--config {path(run.out, SETTINGS)}), or pass "
                            f"--allow_change {','.join(refused)} to continue with the new values")
    return {"step": ckpt["step"], "changed": changed} if changed else None


def _check_allowed(allowed: tuple, known: set) -> None:
    wrong = [n for n in allowed if n not in known or n in OPERATIONAL or n in FIXED]
    if wrong:
        n = wrong[0]
        why = ("it is free on --resume anyway" if n in OPERATIONAL else "the checkpoint fixes it"
               if n in FIXED else "no such setting of this run")
        raise MiniSPDFError(f"--allow_change {n}: {why}; name settings such as lr, batch_size, "
                            "dropout")


# ----------------------------------------------------------------- writing


def lock(run: RunConfig, owner: bool = True):
    """One writer per run folder (``fileio.writer_lock``), held from the folder checks to
    result.json. ``owner``: whether this process writes the folder (under torchrun, rank 0
    alone)."""
    if run.out is None or not owner:
        return contextlib.nullcontext()
    return writer_lock(run.out, "run")


def prepare(run: RunConfig, owner: bool = True) -> str | None:
    """:func:`check`, then make the folder and remove what a killed write left in it. With
    ``overwrite`` an old run is moved aside, not deleted: the caller deletes it once the new run
    has finished, or puts it back (``fileio.put_back``) if it fails. Returns where it went (or
    None)."""
    check(run)
    out = run.out
    if out is None or not owner:
        return None
    backup = None
    try:
        if not run.resume and run.overwrite and os.path.isdir(out) and os.listdir(out):
            backup = move_aside(out)  # a symlinked --out: its target (the run) moves, not the link
        os.makedirs(os.path.realpath(out), exist_ok=True)
    except OSError as e:
        raise MiniSPDFError(f"cannot make the run folder {out} ({e.strerror or e}): choose a "
                            "writable --out") from None
    remove_temps(out)  # under the lock: nothing else is writing them
    return backup


def remove_temps(folder: str) -> None:
    """Remove the temporary files and folders (``.tmp-*``) of writes that a kill cut short."""
    for name in os.listdir(folder) if os.path.isdir(folder) else []:
        if name.startswith(TMP_PREFIX):
            p = os.path.join(folder, name)
            shutil.rmtree(p, ignore_errors=True) if os.path.isdir(p) else os.unlink(p)


def read_settings(out: str) -> dict | None:
    """The run's settings.json, or None if it is missing or unreadable."""
    saved = read_json(path(out, SETTINGS))
    return saved if isinstance(saved, dict) else None


def write_settings(run: RunConfig, settings: dict, changes: dict | None) -> None:
    """settings.json: a new run's settings; a resumed run's as of today, with the history of its
    changes."""
    if not run.resume:
        write_json(path(run.out, SETTINGS), settings)
        return
    old = read_settings(run.out) or {}
    history = [*old.get("history", []), *([changes] if changes else [])]
    new = {**settings, **({"history": history} if history else {})}
    if new != old:
        write_json(path(run.out, SETTINGS), new)


def write_result(out: str, summary: dict) -> None:
    write_json(path(out, RESULT), summary)


def undo_new_run(out: str) -> None:
    """A new run that failed before its first checkpoint: leave no half-made run behind."""
    if os.path.exists(path(out, CKPT)):
        return
    for name in (SETTINGS, LOG, RESULT):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path(out, name))
    with contextlib.suppress(OSError):
        os.rmdir(out)  # only if now empty: the user's own files stay


def keep_beside(holder: str, out: str) -> str:
    """Move the run that ``move_aside`` put in ``holder`` to a visible ``OUT.old`` (or .old2...)."""
    real = os.path.realpath(out)
    n, kept = 1, f"{real}.old"
    while os.path.lexists(kept):
        n += 1
        kept = f"{real}.old{n}"
    os.replace(os.path.join(holder, os.path.basename(real)), kept)
    os.rmdir(holder)
    return kept
