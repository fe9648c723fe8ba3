"""The bad-input suite: every command and option given the wrong kinds of value.

``python -m minispdf.badinput`` (``--fast`` for the subset the tests run) generates its cases from
the parsers of :mod:`minispdf.cli`, which are generated from the settings' declared fields: for
each option the values of the wrong kind for its type and its bounds (empty, not a number, NaN,
inf, out of range, just past a bound), for each path a missing file, a FIFO, a device, a socket,
a folder, a file that is not UTF-8 or not what it should be, and for each option that belongs to
one mode (``applies``) the option given in the other mode. Each case runs in this process through
``cli.main`` inside a scratch folder and passes when it prints one ``error:`` line, exits with
status 2 within :data:`TIMEOUT_S` seconds of CPU time (and a few times that of waiting) and leaves
every file there byte-identical. A command
that exits 0 is "accepted" (listed, not failed); anything else -- a traceback, a hang, a second
line, a changed file -- fails.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import io
import json
import math
import os
import re
import signal
import socket
import sys
import tempfile
import time
from typing import NamedTuple

from . import cli
from .settings import value_type
from .errors import MiniSPDFError

TIMEOUT_S = 20  # CPU seconds, far above any refusal: work that starts runs into it
# a read that blocks uses no CPU: it runs into 5x that of wall time (slack for a busy machine)
WAIT_FACTOR = 5
# A base command line per command (and mode), small enough that an accepted case finishes at once.
BASES = {
    "prepare": [], "flops": ["--preset", "nano"], "score": ["preds.jsonl"],
    "pretrain": ["--preset", "nano", "--max_steps", "1", "--eval_iters", "1", "--no-progress",
                 "--out", "new"],
    "finetune": ["--init_from", "ckpt", "--max_steps", "1", "--eval_iters", "1", "--no-progress",
                 "--out", "new"],
    "bench": ["--preset", "nano", "--steps", "1", "--warmup", "0"],
    "bench --kernels": ["--kernels", "--preset", "nano", "--repeats", "1", "--no-step",
                        "--sparsities", "0.5"],
    "sample": ["--ckpt", "ckpt", "--max_new_tokens", "1"],
    "evaluate": ["--ckpt", "ckpt", "--limit", "1", "--max_new_tokens", "1",
                 "--predictions", "new.jsonl"],
    "demo": ["--quick", "--out", "new"], "reproduce": ["--dry_run", "--grid", "smoke"],
}
# what the test command tries (each kind of value once: seconds)
FAST = ("prepare", "sample", "flops", "score")
# Bad paths, named in the scratch folder that :func:`scratch` fills.
BAD_FILES = ("missing", "", "fifo", "sock", "/dev/zero", "folder", "latin1.txt")
BAD_DIRS = ("missing", "", "fifo", "sock", "/dev/null", "latin1.txt", "latin1.txt/sub")
BAD_CHECKPOINTS = ("nan", "badstep", "latin1.txt")
BAD_TASK_FILES = ("dart:surrogate.json", "dart:latin1.txt", "webnlg:fifo", "e2e:missing.csv",
                  "e2e:/dev/zero")
# written, not read: a FIFO or device there is refused, not opened
OUTPUTS = {"out", "predictions", "csv"}


class Case(NamedTuple):
    command: str
    argv: list
    kind: str


class Outcome(NamedTuple):
    case: Case
    verdict: str  # "clean", "accepted" or what went wrong
    detail: str


# ------------------------------------------------------------------------------ the cases


def _fields(name: str) -> dict:
    """``{dest: (settings class, field)}`` of a command's options."""
    from dataclasses import fields

    out = {}
    for entry in cli.COMMANDS[name][2]:
        cls = entry[0] if isinstance(entry, tuple) else entry
        for f in fields(cls):
            sub = f.metadata.get("fields_of")
            out.update({g.name: (sub, g) for g in fields(sub)} if sub else {f.name: (cls, f)})
    return out


def _number_values(typ, bounds) -> list[str]:
    """The wrong numbers for a field of type ``typ`` with ``bounds`` (lo, lo_open, hi, hi_open)."""
    values = ["", "abc", "nan", "inf", "-inf"] + (["1.5", "1e30"] if typ is int else [])
    lo, lo_open, hi, hi_open = bounds or (None, False, None, False)
    step = 1 if typ is int else 0.5
    if lo is not None:
        values.append(str(lo if lo_open else lo - step))
    if hi is not None:
        values.append(str(hi if hi_open else hi + step))
    return values


def _values(meta: dict, typ, dest: str, metavar) -> list[tuple[str, str]]:
    """``(kind, value)`` pairs that ``--dest`` must refuse."""
    if typ in (int, float):
        return [("number", v) for v in _number_values(typ, meta.get("bounds"))]
    if meta.get("choices"):
        return [("choice", ""), ("choice", "no-such-choice")]
    if dest in OUTPUTS:  # a new folder is fine here
        return [("folder", v) for v in BAD_DIRS if v != "missing"]
    if metavar == "DIR":  # read: a file under a file is just missing
        return [("folder", v) for v in BAD_DIRS if v != "latin1.txt/sub"]
    if metavar in ("RUN",):
        return [("path", v) for v in BAD_FILES + BAD_CHECKPOINTS]
    if metavar in ("FILE", "SOURCE", "NAME|FILE", "PREDICTIONS.jsonl"):
        return [("path", v) for v in BAD_FILES]
    if metavar == "SPEC":
        return [("task", v) for v in BAD_TASK_FILES]
    # other text (a regex, N:M, a device, a list): empty, nonsense, and the lone surrogate that a
    # terminal in
    # another encoding hands over for a byte that is not UTF-8
    return [("text", v) for v in ("", "no-such-value", "\udcff")]


def _mode(action) -> tuple[str, list]:
    """The base command line's key and the flags that select the mode ``action`` belongs to."""
    switch, on = getattr(action, "applies", None) or (None, None)
    if switch is None:
        return "", []
    if isinstance(on, bool):
        return ((" --kernels" if (switch, on) == ("kernels", True) else ""),
                ([f"--{switch}"] if on else []))
    return "", [f"--{switch}", on[0]]


def _other_mode(action) -> list:
    switch, on = action.applies
    if isinstance(on, bool):
        return [f"--{switch}" if not on else f"--no-{switch}"]
    return [f"--{switch}", "static" if "static" not in on else "nm"]


def _without(argv: list, flag: str) -> list:
    """``argv`` less ``flag`` and its value."""
    if flag not in argv:
        return list(argv)
    i = argv.index(flag)
    return argv[:i] + argv[i + 1 + (i + 1 < len(argv) and not argv[i + 1].startswith("--")):]


def generated(commands=None) -> list[Case]:
    """Every option of every command (or of ``commands``) with each wrong kind of value, and each
    option given in the mode it does not belong to."""
    _, parsers = cli.build_parser()
    cases = []
    for name, parser in parsers.items():
        if commands is not None and name not in commands:
            continue
        known = _fields(name)
        for action in parser._actions:
            dest = action.dest
            if dest == "config":
                cases += [Case(name, [*BASES[name], f"--config={v}"], "config") for v in BAD_FILES]
            if dest not in known or action.nargs == 0:
                continue
            cls, f = known[dest]
            key, mode = _mode(action)
            flag = bool(action.option_strings)
            for kind, value in _values(f.metadata, value_type(cls, f), dest, action.metavar):
                # --x=VALUE: a value such as "-inf" is not taken for an option
                argv = ([*_without(BASES[name + key], f"--{dest}"), *mode, f"--{dest}={value}"]
                        if flag else [value])
                cases.append(Case(name, argv, kind))
            if getattr(action, "applies", None) and action.default is not None:
                value = (str(action.default).lower() if isinstance(action.default, bool)
                         else str(action.default))
                extra = [f"--{dest}"] if isinstance(action.default, bool) else [f"--{dest}", value]
                cases.append(Case(name, [*BASES[name], *_other_mode(action), *extra], "mode"))
    return cases


# Bad inputs that are not one option's value: files with the wrong contents, and options that do
# nothing.
HANDMADE = [
    Case("pretrain", [*BASES["pretrain"][:-1], ""], "folder"),  # --out '': nothing would be saved
    # names nothing, and no --resume
    Case("pretrain", [*BASES["pretrain"], "--allow_change="], "mode"),
    Case("finetune", [*BASES["finetune"], "--task", "builtin", "--train_file", "x.csv"], "mode"),
    Case("reproduce", ["--cells", "3", "--dry_run"], "mode"),
    Case("reproduce", ["--dry_run", "--grid", "negative.toml"], "grid"),
    Case("reproduce", ["--dry_run", "--grid", "huge.toml"], "grid"),
    Case("reproduce", ["--dry_run", "--grid", "latin1.toml"], "grid"),
    Case("reproduce", ["--dry_run", "--grid", "smoke", "--power_from", "folder"], "folder"),
    Case("sample", ["--ckpt", "ckpt", "--max_new_tokens", "1000000000000"], "size"),
    Case("flops", ["--preset", "nano", "--max_steps", "1000000000000"], "size"),
    Case("pretrain", ["--preset", "nano", "--n_layer", "2", "--n_embd", "65536", "--n_head", "1"],
         "size"),
    Case("assign", ["grade", "old.ipynb"], "notebook"),
    Case("assign", ["grade", "fifo"], "notebook"),
]


# ------------------------------------------------------------------------------ the scratch folder


def scratch(folder: str) -> None:
    """Fill ``folder`` with what the cases name: a tiny checkpoint, damaged ones, special files."""
    from .checkpoint import save_checkpoint
    from .model import GPT, GPTConfig

    config = GPTConfig(block_size=16, vocab_size=257, n_layer=1, n_head=1, n_embd=8)
    model = GPT(config)
    good = dict(model=model.state_dict(), model_config=config.to_dict(), tokenizer="char", step=1)
    nan = {k: v.clone().fill_(math.nan) if v.is_floating_point() else v
           for k, v in model.state_dict().items()}
    for name, payload in (("ckpt", good), ("nan", {**good, "model": nan}),
                          ("badstep", {**good, "step": "ten"})):
        save_checkpoint(os.path.join(folder, name, "ckpt.pt"), payload)
    os.mkfifo(os.path.join(folder, "fifo"))
    with socket.socket(socket.AF_UNIX) as s:
        s.bind(os.path.join(folder, "sock"))
    os.makedirs(os.path.join(folder, "folder"))
    files = {"latin1.txt": "caf\xe9 cr\xe8me".encode("latin-1"),
             "latin1.toml": b'description = "caf\xe9"\n',
             "surrogate.json": b'[{"tripleset": [["a", "b", "c"]], "annotations": [{"text": '
                               b'"x\\ud800y"}]}]',
             "old.ipynb": json.dumps({"nbformat": 3, "nbformat_minor": 0, "metadata": {},
                                      "worksheets": [{"cells": []}]}).encode(),
             "preds.jsonl": b'{"input": "a", "prediction": "b", "references": ["b"]}\n',
             "negative.toml": _grid_toml(-5).encode(), "huge.toml": _grid_toml(10**15).encode()}
    for name, data in files.items():
        with open(os.path.join(folder, name), "wb") as f:
            f.write(data)


def _grid_toml(steps: int) -> str:
    return (f'inherit = "smoke"\n[sizes.nano]\npreset = "nano"\npretrain_steps = '
            f'{steps}\nfinetune_steps = 2\n')


def snapshot(folder: str) -> dict:
    """``{path: sha256}`` of every regular file under ``folder`` (and the names of the others)."""
    out = {}
    for root, dirs, files in os.walk(folder):
        for name in dirs + files:
            path = os.path.join(root, name)
            if os.path.isfile(path) and not os.path.islink(path):
                with open(path, "rb") as f:
                    out[path] = hashlib.sha256(f.read()).hexdigest()
            else:
                out[path] = "folder" if os.path.isdir(path) else "special"
    return out


# ------------------------------------------------------------------ the fixes that messages suggest

PROSE = {"or", "to", "and", "with", "for", "the", "a", "an", "is", "in", "of", "it", "too",
         "instead", "first", "out",
         "applies", "takes", "does", "was", "were", "then", "as", "on", "at", "only", "flag"}


def all_parsers() -> list:
    """The parser of every command, ``assign``'s included: a message may name another command's
    option."""
    from .assignments.cli import _parser

    subs = next(a for a in _parser("minispdf assign")._actions
                if a.choices and isinstance(a.choices, dict))
    return [*cli.build_parser()[1].values(), *subs.choices.values()]


def bad_hints(message: str, parsers: list) -> list[str]:
    """The ``--option [value]`` fragments of ``message`` that no parser accepts: an option that
    does not exist, a switch given a value (``--keep_masks False``), a value of the wrong type or
    not among the choices, ``None``. A value in capitals (``DIR``) is a placeholder; a word that
    is not a value of the option's kind is prose."""
    tokens = message.replace("`", " ").split()
    bad = []
    for i, token in enumerate(tokens):
        flag = token.rstrip(",;:.)'\"")
        if not re.fullmatch(r"--[a-z][a-z0-9_-]*", flag) or flag == "--help":
            continue
        value = tokens[i + 1].rstrip(",;:.)'\"") if flag == token and i + 1 < len(tokens) else None
        if not any(_accepts(p, flag, value) for p in parsers):
            bad.append(flag + (f" {value}" if value else ""))
    return bad


def _accepts(parser, flag: str, value: str | None) -> bool:
    from .config import _options
    from .settings import FALSE, TRUE

    spelling = _options(parser).get(flag)
    action = next((a for a in parser._actions if spelling in a.option_strings), None)
    if action is None:
        return False
    if action.nargs == 0:  # a switch takes no value
        return value is None or value.lower() not in TRUE | FALSE | {"none"}
    # a placeholder, or prose
    if value is None or value.isupper() or value.lower() in PROSE or "{" in value:
        return True
    if value == "None" or action.choices and value not in action.choices:
        return False
    numeric = re.fullmatch(r"-?[0-9.]+(e-?[0-9]+)?", value)
    if not numeric and action.type not in (None, str) and action.type.__name__ in ("int", "float"):
        return True  # prose after a number's option
    try:
        parser.parse_known_args([spelling, value])
    except (MiniSPDFError, SystemExit):
        return False
    return True


# ------------------------------------------------------------------------------ running


class _Hang(BaseException):  # a BaseException, so that no handler in the kit catches it
    pass


def _alarm(signum, frame):
    raise _Hang()


def run_case(case: Case, folder: str, timeout: float = TIMEOUT_S) -> Outcome:
    """Run ``case`` through ``cli.main`` in ``folder`` (the current directory) and judge it."""
    before = snapshot(folder)
    err, out = io.StringIO(), io.StringIO()
    old = {sig: signal.signal(sig, _alarm) for sig in (signal.SIGALRM, signal.SIGPROF)}
    signal.setitimer(signal.ITIMER_PROF, timeout)
    signal.setitimer(signal.ITIMER_REAL, timeout * WAIT_FACTOR)
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
            code = cli.main([case.command, *case.argv])
    except _Hang:
        return Outcome(case, "hang",
                       f"no answer within {timeout:g} s of CPU or {timeout * WAIT_FACTOR:g} s")
    except BaseException as e:  # noqa: BLE001 -- a traceback is exactly what this suite looks for
        return Outcome(case, "traceback", f"{type(e).__name__}: {e}"[:200])
    finally:
        signal.setitimer(signal.ITIMER_PROF, 0)
        signal.setitimer(signal.ITIMER_REAL, 0)
        for sig, handler in old.items():
            signal.signal(sig, handler)
    lines = [line for line in err.getvalue().splitlines() if line.strip()]
    if code == 0:
        return Outcome(case, "accepted", (out.getvalue().strip().splitlines() or [""])[-1][:120])
    if code != 2 or len(lines) != 1 or not lines[0].startswith("error: "):
        return Outcome(case, f"exit {code}, {len(lines)} lines", " | ".join(lines)[:300])
    after = snapshot(folder)
    changed = sorted(p for p in set(before) | set(after) if before.get(p) != after.get(p))
    if changed:
        return Outcome(case, "changed files",
                       ", ".join(os.path.relpath(p, folder) for p in changed))
    wrong = bad_hints(lines[0], _parsers())
    if wrong:
        return Outcome(case, "bad hint", f"{', '.join(wrong)} is refused by the parser: {lines[0]}")
    return Outcome(case, "clean", lines[0])


@functools.cache
def _parsers() -> list:
    return all_parsers()


def run_suite(cases: list[Case], log=None) -> list[Outcome]:
    """Run ``cases`` in a new scratch folder (the working directory meanwhile); an accepted case's
    files are removed so the next case finds the folder as it was."""
    cwd = os.getcwd()
    with tempfile.TemporaryDirectory(prefix="minispdf-badinput-") as folder:
        scratch(folder)
        os.chdir(folder)
        try:
            return [_run_one(case, folder, log) for case in cases]
        finally:
            os.chdir(cwd)


def _run_one(case: Case, folder: str, log) -> Outcome:
    import shutil

    before = snapshot(folder)
    outcome = run_case(case, folder)
    for path in sorted(set(snapshot(folder)) - set(before), reverse=True):
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path, ignore_errors=True)
        elif os.path.lexists(path):
            os.unlink(path)
    if log:
        log(f"{outcome.verdict:<10} {case.command} {' '.join(map(repr, case.argv))}: "
            f"{outcome.detail}")
    return outcome


def all_cases(fast: bool = False) -> list[Case]:
    """Every case; ``fast``: of :data:`FAST`'s commands, each kind of value once."""
    if not fast:
        return generated() + HANDMADE
    seen, out = set(), []
    for case in generated(FAST):
        key = (case.kind, case.argv[-1].partition("=")[2] or case.argv[-1])
        if key not in seen:
            seen.add(key)
            out.append(case)
    return out + [c for c in HANDMADE if c.command in FAST]


def counts(outcomes: list[Outcome]) -> dict:
    failed = [o for o in outcomes if o.verdict not in ("clean", "accepted")]
    return {"tried": len(outcomes), "clean": sum(o.verdict == "clean" for o in outcomes),
            "accepted": sum(o.verdict == "accepted" for o in outcomes), "failed": len(failed)}


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    fast, verbose = "--fast" in argv, "-v" in argv
    t0 = time.time()
    outcomes = run_suite(all_cases(fast), log=(lambda s: print(s, flush=True)) if verbose else None)
    for o in outcomes:
        if o.verdict not in ("clean", "accepted"):
            print(f"FAILED ({o.verdict}): minispdf {o.case.command} "
                  f"{' '.join(map(repr, o.case.argv))}: {o.detail}")
    c = counts(outcomes)
    print(f"{c['tried']} bad inputs tried: {c['clean']} clean one-line errors, "
          f"{c['accepted']} accepted, "
          f"{c['failed']} failed ({time.time() - t0:.0f} s)")
    return 1 if c["failed"] else 0


if __name__ == "__main__":
    sys.exit(main())
