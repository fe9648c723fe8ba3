"""The grader's worker process: runs exercise cells and their checks, one exercise at a time.

It is started per notebook (one student's work), forked from a server that has imported torch
and the library once, so a start costs milliseconds. Each exercise runs in a fresh namespace
holding only what the lessons import first; the parent kills the worker when an exercise runs
past its time limit and starts a new one for the rest.
"""

from __future__ import annotations

import contextlib
import io

import torch

from .exercises import EXERCISES, check_exercise


def warm() -> None:
    """Load what the checks read, once, in the fork server (see :mod:`.preload`): every worker
    forked from it starts with it, and a plain ``import minispdf.assignments`` stays light."""
    from .. import data, flops, sparsity, tasks  # noqa: F401
    from ..study import plan  # noqa: F401

    try:
        data.get_tokenizer("gpt2")  # the equal-FLOP check's GPT-2 sized models
    except Exception:
        pass  # that check will say what is missing


PREAMBLE = "import math\nimport torch\nimport numpy as np"  # what the lessons import first
PREAMBLE_NAMES = ("math", "torch", "np")


def _strip_magics(source: str) -> str:
    return "\n".join(line for line in source.split("\n") if not line.lstrip().startswith(("%", "!")))


def run_exercise(name: str, cells: list[tuple[str, str]]) -> dict:
    """Execute an exercise's cells (``(label, source)``) in a fresh namespace, then check it."""
    namespace: dict = {"__name__": "__exercise__"}
    exec(PREAMBLE, namespace)
    quiet = io.StringIO()  # a student's prints must not reach the grader's output
    with contextlib.redirect_stdout(quiet), contextlib.redirect_stderr(quiet):
        for label, source in cells:
            try:
                exec(compile(_strip_magics(source), label, "exec"), namespace)
            except Exception as e:
                return dict(name=name, passed=False, points=0, max_points=EXERCISES[name].points,
                            checks=[dict(check="cell runs", passed=False,
                                         message=f"the exercise cell does not run: {type(e).__name__}: {e}")])
        return check_exercise(name, namespace.get(EXERCISES[name].function))


def run_jobs(conn, jobs: list[tuple[str, list]]) -> None:
    """Worker entry point: say ready, then send ``(name, result)`` after each exercise."""
    torch.set_num_threads(1)  # tiny tensors; and graders run side by side on shared machines
    conn.send(("ready", None))
    for name, cells in jobs:
        conn.send((name, run_exercise(name, cells)))
    conn.close()
