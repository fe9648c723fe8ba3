"""Real tasks join any grid by path, in their official formats, as a block of their own:
``minispdf reproduce --e2e DIR`` (or ``--webnlg``, ``--dart``, ``--curation``) adds the task at
the grid's primary size, on its full training set, with dense, SPDF and scratch, reusing the
primary block's pre-training runs.
"""

from __future__ import annotations

import os

from ..errors import MiniSPDFError

# kind -> (what to pass, max_new_tokens; 0: the default 200)
REAL_TASKS = {
    "e2e": (
        "the folder with the official E2E devset.csv / testset_w_refs.csv (or train/dev/test csv)",
        160),
    "webnlg": ("the folder of the WebNLG release (XML)", 200),
    "dart": ("the folder of the official DART release (JSON)", 200),
    "curation": ("the Curation Corpus CSV/Parquet with article and summary columns", 0),
}
REAL_TASK_ARMS = ("dense", "spdf75", "scratch")


def add_real_task(grid: dict, kind: str, path: str) -> None:
    """A block of the real task: the primary size, the full set, dense / SPDF / scratch, and the
    primary block's seeds, reusing its pre-training runs."""
    what, max_new = REAL_TASKS[kind]
    full = os.path.abspath(os.path.expanduser(path))
    if not os.path.exists(full):
        raise MiniSPDFError(f"--{kind} {path} does not exist: pass {what}")
    p = grid["primary"]
    first = next(b for b in grid["blocks"] if p["size"] in b["sizes"] and p["task"] in b["tasks"])
    grid["tasks"][kind] = {"spec": f"{kind}:{full}", "options": {}, "about": f"{kind} from {full}",
                           "eval_inputs": 200, "max_new_tokens": max_new or 200,
                           "max_train_inputs": 5000}
    grid["sets"].setdefault("full", 1.0)
    arms = [a for a in REAL_TASK_ARMS if a in first["arms"]]
    grid["blocks"].append({"sizes": [p["size"]], "tasks": [kind], "sets": ["full"], "arms": arms,
                           "seeds": first["seeds"]})
