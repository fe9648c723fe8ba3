"""The grader's worker process: runs one submission's exercise cells and records its function's
calls.

It is started per notebook (one student's work), forked from a server that has imported torch
and the library once, so a start costs milliseconds. Before any student code runs it confines
itself (:func:`.sandbox.confine`: own session, limits, a fresh uid and chroot when the grader is
root,
Landlock where the kernel has it).
Each exercise runs in a fresh namespace holding only what the lessons import first; then the
exercise's checks run with a :class:`.replay.Recorder` in place of the student's function, and
the worker sends the grader, as one line of JSON per exercise, what each call returned and left
in its arguments. It sends no verdict and no points: the grader replays the record into its own
copy of the checks (:mod:`.replay`). The parent kills the worker's process group when an
exercise runs past its time limit and starts a new worker for the rest.
"""

from __future__ import annotations

import builtins
import json
import os

import torch

from .exercises import EXERCISES, all_checks, use_hidden
from .replay import MAX_TEXT, Recorder


# Imported in the fork server, for cells that import them: a worker running as a fresh uid may
# not be able to read the Python installation (e.g. under /root), so it can import only what is
# loaded.
STDLIB = ("bisect", "collections", "copy", "dataclasses", "decimal", "fractions", "functools",
          "heapq",
          "itertools", "math", "operator", "random", "re", "statistics", "string", "typing")


def warm() -> None:
    """Load what the checks read, once, in the fork server (see :mod:`.preload`): every worker
    forked from it starts with it, and a plain ``import minispdf.assignments`` stays light. The
    checks' own paths run once here, so that their lazy imports (torch's optimizers import
    ``torch._dynamo`` on first use) are done before a worker drops its privileges."""
    import importlib

    from .. import data
    from . import checks

    for name in ("numpy",) + STDLIB:  # numpy: the lessons' preamble
        importlib.import_module(name)
    try:
        data.get_tokenizer("gpt2")  # the equal-FLOP check's GPT-2 sized models
    except Exception:
        pass  # that check will say what is missing
    for name, solution in _SOLUTIONS.items():
        for _, run in EXERCISES[name].checks(solution):
            try:
                run()
            except Exception:
                pass  # the worker will report it
    checks.library_mask((4, 4), 0.5, "magnitude", torch.randn(4, 4))


def _masked_step(params, masks, optimizer):
    with torch.no_grad():
        for p, m in zip(params, masks):
            p.grad.mul_(m)
        optimizer.step()
        for p, m in zip(params, masks):
            for t in (p, optimizer.state[p]["exp_avg"], optimizer.state[p]["exp_avg_sq"]):
                t.mul_(m)


# cheap stand-ins that take the checks down all their paths once (see warm): not every one passes
_SOLUTIONS = {
    "masked_step": _masked_step,
    "equal_flop_steps": lambda steps, sparse, dense: round(steps * sparse / dense),
    "loss_mask": lambda prompt_len, n_tokens: [0] * (prompt_len - 1)
    + [1] * (n_tokens - prompt_len),
    "block_flops": lambda d_model, seq_len, n_head, sparsity: 0,
    "random_mask": lambda shape, sparsity, generator=None: torch.zeros(shape, dtype=torch.bool),
    "two_four_mask": lambda weight: torch.zeros(weight.shape, dtype=torch.bool),
    "model_sparsity": lambda shapes, masked, sparsity: 0.0,
    "benefit_lost": lambda arm, dense, scratch, measure: {},
}


PREAMBLE = "import math\nimport torch\nimport numpy as np"  # what the lessons import first
PREAMBLE_NAMES = ("math", "torch", "np")


def _strip_magics(source: str) -> str:
    return "\n".join(line for line in source.split("\n")
                     if not line.lstrip().startswith(("%", "!")))


def _guarded_import(name, globals=None, locals=None, fromlist=(), level=0):
    """The exercise namespace's ``__import__``: no minispdf (the grader refuses such cells from
    their source already; this catches an import spelt at run time)."""
    if level or name == "minispdf" or name.startswith("minispdf."):
        raise ImportError(
            "exercises may not import minispdf: it is the answer key; use torch and math")
    return builtins.__import__(name, globals, locals, fromlist, level)


def run_exercise(name: str, cells: list[tuple[str, str]]) -> dict:
    """Execute an exercise's cells (``(label, source)``) in a fresh namespace, then run its checks
    with a recorder: ``{"cell_error"}``, ``{"defined": False}`` or ``{"defined": True,
    "checks"}``."""
    namespace: dict = {"__name__": "__exercise__",
                       "__builtins__": {**builtins.__dict__, "__import__": _guarded_import}}
    exec(PREAMBLE, namespace)
    for label, source in cells:
        try:
            exec(compile(_strip_magics(source), label, "exec"), namespace)
        except Exception as e:
            return {"cell_error": f"{type(e).__name__}: {e}"[:MAX_TEXT]}
    fn = namespace.get(EXERCISES[name].function)
    if not callable(fn):
        return {"defined": False}
    recorder = Recorder(fn)
    try:
        checks = all_checks(name, recorder)
    except Exception:
        checks = []
    for i, (_, run) in enumerate(checks):
        recorder.start(i)
        try:
            run()
        except Exception:
            pass  # the grader's own checks decide; a failure here only ends this check's calls
    return {"defined": True, "checks": recorder.records}


def _send(fd: int, msg: dict) -> None:
    data = (json.dumps(msg, separators=(",", ":")) + "\n").encode()
    while data:
        data = data[os.write(fd, data):]


def serve(conn, jobs: list[tuple[str, str, list]], box, hidden=None) -> None:
    """Worker entry point: load the instructor's ``hidden`` checks (a file it cannot read once
    confined), confine, say ready, then send one record per ``(request id, name, cells)``."""
    from .sandbox import confine

    fd = conn.fileno()
    try:
        use_hidden(hidden)
        confine(box, fd)
    except Exception as e:
        _send(fd, {"unconfined": f"{type(e).__name__}: {e}"[:MAX_TEXT]})
        os._exit(1)
    torch.set_num_threads(1)  # tiny tensors; and graders run side by side on shared machines
    _send(fd, {"ready": True})
    for rid, name, cells in jobs:
        _send(fd, {"id": rid, "name": name, **run_exercise(name, cells)})
    os._exit(0)  # no exit handlers: nothing of the student's runs after the last record
