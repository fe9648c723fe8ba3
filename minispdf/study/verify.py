"""Anyone can check the numbers: re-run some cells of a finished study and compare bit for bit.

``minispdf reproduce --verify DIR --cells 2`` picks two cells of the study in ``DIR`` at random
(or the named ones), re-runs each from scratch in a temporary folder (its pre-training run too,
since checkpoints are not committed) with the thread count the study used, and compares every
number the study logged for it (results.csv; the pre-training summary in results.json) with
what it computes now, as text, so a difference in the last bit shows. Timings are not compared.
"""

from __future__ import annotations

import csv
import os
import random
import tempfile

from ..errors import MiniSPDFError, counted
from . import plan as plan_lib
from . import runner
from . import grid_tasks as study_tasks

TIMING = ("finetune_seconds", "eval_seconds")
PRETRAIN_FIELDS = ("val_loss", "flops", "flops_dense", "tokens", "n_params", "curve")


def _read_committed(folder: str) -> tuple[dict, dict]:
    results = runner.read_json(os.path.join(folder, "results.json"))
    if not results or results.get("format") != runner.FORMAT:
        raise MiniSPDFError(f"{folder} holds no study of this version (results.json, format "
                            f"{runner.FORMAT}): give "
                            "the folder of a finished `minispdf reproduce` run, e.g. "
                            "results/default")
    try:
        with open(os.path.join(folder, "results.csv"), newline="") as f:
            rows = {r["cell"]: r for r in csv.DictReader(f)}
    except OSError as e:
        raise MiniSPDFError(
            f"{folder}/results.csv cannot be read ({e.strerror}): restore it") from None
    return results, rows


def _loadable(grid: dict, task: str) -> bool:
    spec = grid["tasks"][task]["spec"]
    _, _, path = spec.partition(":")
    return not path.startswith("/") or os.path.exists(path)


def choose(grid: dict, committed: dict, cells: int | list[str], rng: random.Random) -> list[dict]:
    """The cells to re-run: ``cells`` named ones, or that many drawn at random."""
    _, planned = plan_lib.plan(grid)
    by_name = {c["name"]: c for c in planned if c["name"] in committed}
    if isinstance(cells, list):
        missing = [n for n in cells if n not in by_name]
        if missing:
            raise MiniSPDFError(f"--cells: {', '.join(missing)} not in the study: name cells from "
                                f"the `cell` column "
                                "of results.csv, or give a number")
        return [by_name[n] for n in cells]
    pool = [c for c in by_name.values() if _loadable(grid, c["spec"]["task"])]
    if not 1 <= cells <= len(pool):
        raise MiniSPDFError(f"--cells {cells}: the study has {counted(len(pool), 'cell')} whose "
                            f"data is here: ask for 1 to {len(pool)}")
    return rng.sample(sorted(pool, key=lambda c: c["name"]), cells)


def _as_csv(value) -> str:
    return "" if value is None else str(value)


def compare_cell(row: dict, logged: dict) -> list[str]:
    """Fields of a fresh row that differ from the logged CSV row (as the CSV writes them)."""
    from .report import CSV_FIELDS

    return [f"{k}: logged {logged.get(k)!r}, now {_as_csv(row.get(k))!r}" for k in CSV_FIELDS
            if k not in TIMING and _as_csv(row.get(k)) != logged.get(k)]


def compare_pretrain(summary: dict, logged: dict | None) -> list[str]:
    if logged is None:
        return ["pre-training run missing from results.json"]
    return [f"pre-training {k}: logged {logged.get(k)!r}, now {summary.get(k)!r}"
            for k in PRETRAIN_FIELDS
            if summary.get(k) != logged.get(k)]


def verify(folder: str, cells: int | list[str] = 2, device: str = "cpu", log=print,
           seed: int | None = None) -> dict:
    """Re-run ``cells`` of the study in ``folder``; returns {"cells": [{name, differences}],
    "ok"}."""
    import torch

    results, committed = _read_committed(folder)
    grid = results["grid"]
    rng = random.Random(seed)
    chosen = choose(grid, committed, cells, rng)
    pretrains = {p["name"]: p for p in plan_lib.plan(grid)[0]}
    logged_pre = {p["name"]: p for p in results["pretrains"]}
    threads = results["timing"].get("threads", 1)
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    needed = {c["spec"]["task"] for c in chosen}
    tasks = study_tasks.load_tasks({**grid, "tasks": {k: v for k, v in grid["tasks"].items()
                                                      if k in needed}})
    report = []
    try:
        with tempfile.TemporaryDirectory(prefix="minispdf-verify-") as tmp:
            for cell in chosen:
                log(f"re-running {cell['name']} ({counted(threads, 'thread')})")
                diffs, pre = [], None
                if cell["spec"]["pretrain"]:
                    name = cell["spec"]["pretrain"]
                    pre = (runner.pretrain_done(tmp, name)
                           or runner.run_pretrain(tmp, pretrains[name], device))
                    diffs += compare_pretrain({**pre, "n_params": pre["n_params"]},
                                              logged_pre.get(name))
                row = runner.run_cell(tmp, cell, tasks, pre, device)
                diffs += compare_cell(row, committed[cell["name"]])
                report.append({"cell": cell["name"], "differences": diffs})
                log(f"  {'identical' if not diffs else 'DIFFERS: ' + '; '.join(diffs)}")
    finally:
        torch.set_num_threads(before)
    return {"folder": folder, "threads": threads, "cells": report,
            "ok": all(not r["differences"] for r in report)}
