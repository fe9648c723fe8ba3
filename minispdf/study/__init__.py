"""The reproduction study: a declared grid of SPDF runs, run resumably, judged against the paper.

    from minispdf.study import resolve_grid, run_study
    results = run_study(resolve_grid("quick"), out="runs/study-quick")
    results["claims"]          # every judged comparison, with its interval and verdict

Modules: :mod:`.grids` (the grids, TOML files), :mod:`.plan` (jobs and their cost), :mod:`.runner`
(resumable, parallel execution), :mod:`.stats` (paired intervals, verdict rules, power),
:mod:`.claims` (declared claims, gates, verdicts on L), :mod:`.declaration` (``declared.json``,
written before the first job), :mod:`.power` (expected interval widths before the run),
:mod:`.verify` (re-run cells of a finished study and compare bit for bit), :mod:`.report` (CSV,
JSON, tables, figures, README section).
``minispdf reproduce`` and ``minispdf demo`` are both this runner on different grids.
"""

from __future__ import annotations

import os
import time

from ..errors import MiniSPDFError
from ..fileio import write_json
from . import claims as claims_lib
from . import declaration, frontier, outputs, power, report, runner
from . import grid_tasks as study_tasks
from . import plan as plan_lib
from .grids import GRIDS, parse_arm, resolve_grid

__all__ = ["GRIDS", "resolve_grid", "parse_arm", "run_study", "rejudge", "collect", "default_jobs"]


def default_jobs(device: str) -> int:
    """One job per core on a CPU (each with one thread), one on a GPU."""
    if device != "cpu":
        return 1
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


def unigram_entropy(grid: dict) -> float | None:
    """The corpus' unigram entropy in nats per token (the plateau gate), or None if not prepared."""
    from ..data import corpus_stats

    try:
        return corpus_stats(grid["corpus"], grid["tokenizer"])["unigram_entropy"]
    except MiniSPDFError:
        return None


def _runs_on_cpu(grid: dict) -> bool:
    return grid["tokenizer"] == "char"


def collect(grid: dict, out: str, timing: dict, invocations: list, entropy: float | None) -> dict:
    """Everything the report shows, from the finished jobs in ``out``."""
    pretrains, cells = plan_lib.plan(grid)
    rows = [r for r in (runner.cell_done(out, c) for c in cells) if r is not None]
    pre = [p for p in (runner.pretrain_done(out, p["name"]) for p in pretrains) if p is not None]
    results = {"format": runner.FORMAT, "grid": grid, "machine": report.machine_info(),
               "commit": invocations[-1]["commit"] if invocations else report.git_commit(),
               "timing": timing, "invocations": invocations, "n_cells": len(cells),
               "n_cells_done": len(rows),
               "unigram_entropy": entropy, "pretrains": pre, "rows": rows}
    return judged(results, out)


def judged(results: dict, out: str) -> dict:
    """``results`` with its summary and claims, judged with the latest declaration in ``out``."""
    found = declaration.latest(out)
    if found is None:
        raise MiniSPDFError(f"{out} has no {declaration.FILE}: a study is judged only by rules "
                            f"declared before it "
                            "ran; run `minispdf reproduce` on it to declare them")
    name, decl = found
    rows = results["rows"]
    judged = {**results,
              "declaration": {"file": name, "written": decl["written"], "commit": decl["commit"]},
              "summary": report.summarise(rows),
              "claims": claims_lib.Judge(decl, rows, results["unigram_entropy"], name).claims()
              if rows else [],
              "flop_claim": claims_lib.flop_claim(results["grid"], results["pretrains"])}
    fr = frontier.analyse(judged) if rows else None
    return {**judged, "frontier": fr} if fr else judged


def default_power_from(grid: dict) -> str | None:
    """Committed results of this grid (or of the default grid) in the working folder, if any."""
    for name in (grid["name"], "default"):
        path = os.path.join("results", name)
        if os.path.isfile(os.path.join(path, "results.json")):
            return path
    return None


def run_study(grid: dict, out: str, device: str = "auto", jobs: int | None = None, log=print,
              command: str | None = None, dry_run: bool = False, power_from: str | None = None,
              redeclare: bool = False) -> dict:
    """Declare, then run (or finish) every job of ``grid`` in ``out``, then judge and report.

    ``OUT/declared.json`` (claims, margins, gates, seeds, and the power expected from the results
    in ``power_from``) is written before the first job. With ``dry_run`` nothing is trained or
    written: the plan, its estimated cost and the power of each claim are logged and returned.
    """
    from ..checkpoint import check_out_folder
    from ..devices import pick_device

    device = pick_device(device)
    jobs = default_jobs(device) if jobs is None else jobs
    if not isinstance(jobs, int) or isinstance(jobs, bool) or not 1 <= jobs <= 64:
        raise MiniSPDFError(f"--jobs {jobs!r}: give a number of parallel jobs from 1 to 64")
    pretrains, cells = plan_lib.plan(grid)
    decl = declaration.build(grid, cells, report.git_commit(), None)
    prior = power.read_prior(power_from or default_power_from(grid))
    if power_from is not None and prior is None:
        raise MiniSPDFError(f"--power_from {power_from} holds no readable results.json: give the "
                            f"folder of a "
                            "finished study (e.g. results/default), or leave --power_from out")
    decl["power"] = power.expected(decl["claims"], prior,
                                   grid.get("frontier", {}).get("true_effect"))
    if dry_run and not (_runs_on_cpu(grid) or device != "cpu"):
        return _dry_run_elsewhere(grid, pretrains, cells, decl, log)
    check_out_folder(out)
    # the code that trains, not what HEAD is later
    t_start, commit = time.time(), report.git_commit()
    tasks = study_tasks.load_tasks(grid)
    p = _plan_here(grid, out, tasks, pretrains, cells, jobs)
    log(p["text"] + "\n" + power.table(decl["claims"], decl["power"]))
    if dry_run:
        return {"plan": p["text"] + "\n" + power.table(decl["claims"], decl["power"]),
                "pretrains": len(pretrains),
                "cells": len(cells), "flops": p["flops"], "estimate_s": p["estimate_s"],
                "power": decl["power"]}
    entropy = unigram_entropy(grid)  # also prepares the corpus once, before parallel jobs read it
    with runner.Lock(out):
        # before any job: the rules cannot follow the data
        name = declaration.register(out, decl, redeclare)
        log(f"  judging rules: {os.path.join(out, name)}")
        runner.clean_temps(out)
        write_json(os.path.join(out, "plan.json"), {"format": runner.FORMAT, "grid": grid,
                                                    "calibration": p["calibration"],
                                                    "estimate_s": p["estimate_s"]})
        ran = runner.execute(grid, out, pretrains, cells, tasks, device, jobs, log, p["estimates"])
        invocations = _record_invocation(out, command or f"run_study({grid['name']!r})", commit,
                                         t_start,
                                         p["estimate_s"], ran, jobs)
        results = collect(grid, out, _timing(invocations, p["estimate_s"], jobs), invocations,
                          entropy)
        outputs.write_outputs(results, out)
    return results


def _dry_run_elsewhere(grid: dict, pretrains: list, cells: list, decl: dict, log) -> dict:
    """The dry run of a GPU grid on a CPU: FLOPs and an assumed throughput only, one job on one
    GPU."""
    ft = {(c["spec"]["task"], c["spec"]["set"]): grid["block_size"] / 8 for c in cells}
    flops = plan_lib.training_flops(grid, pretrains, cells, ft)
    text = plan_lib.describe(grid, None, pretrains, cells, None, flops,
                             (len(pretrains), len(cells)), 1)
    text += "\n" + power.table(decl["claims"], decl["power"])
    log(text)
    return {"plan": text, "pretrains": len(pretrains), "cells": len(cells), "flops": flops,
            "power": decl["power"]}


def _plan_here(grid: dict, out: str, tasks: dict, pretrains: list, cells: list, jobs: int) -> dict:
    """What is left to run in ``out``, its FLOPs and its time on this machine (calibrated here)."""
    from ..data import get_tokenizer

    calib = plan_lib.calibrate(grid, tasks)
    est = plan_lib.estimate(grid, tasks, calib, pretrains, cells)
    tok = get_tokenizer(grid["tokenizer"])
    ft = {(c["spec"]["task"],
           c["spec"]["set"]): plan_lib.mean_pair_tokens(tok, tasks[c["spec"]["task"]]["train"],
                                                                            grid["block_size"])
          for c in cells}
    flops = plan_lib.training_flops(grid, pretrains, cells, ft)
    todo_pre = ([p for p in pretrains if not runner.pretrain_done(out, p["name"])]
                if os.path.isdir(out) else pretrains)
    todo_cells = [c for c in cells if not runner.cell_done(out, c)] if os.path.isdir(out) else cells
    est_s = sum(est[j["name"]] for j in todo_pre + todo_cells) / jobs
    text = plan_lib.describe(grid, tasks, pretrains, cells, est_s, flops,
                             (len(todo_pre), len(todo_cells)), jobs)
    return {"calibration": calib, "estimates": est, "estimate_s": est_s, "flops": flops,
            "text": text}


def _record_invocation(out: str, command: str, commit: str, t_start: float, est_s: float, ran: int,
                       jobs: int) -> list[dict]:
    """Append this run to ``OUT/invocations.json`` (a study may take several); returns them all."""
    invocations = runner.read_json(os.path.join(out, "invocations.json")) or []
    invocations.append({"command": command, "commit": commit, "started":
                        time.strftime("%Y-%m-%d %H:%M", time.localtime(t_start)),
                        "wall_s": round(time.time() - t_start, 1), "estimate_s": round(est_s, 1),
                        "jobs_run": ran,
                        "parallel_jobs": jobs})
    write_json(os.path.join(out, "invocations.json"), invocations)
    return invocations


def _timing(invocations: list[dict], est_s: float, jobs: int) -> dict:
    import torch

    return {"wall_s": sum(i["wall_s"] for i in invocations), "estimate_s": est_s, "jobs": jobs,
            "threads": 1 if jobs > 1 else torch.get_num_threads()}


def rejudge(out: str) -> dict:
    """Judge a finished study again with its declaration and rewrite its report, from its
    results.json alone (a committed study has no cells/ or checkpoints); trains nothing."""
    results = runner.read_json(os.path.join(out, "results.json"))
    if not results or results.get("format") != runner.FORMAT:
        raise MiniSPDFError(f"{out} holds no finished study of this version (results.json, format "
                            f"{runner.FORMAT}): "
                            "run `minispdf reproduce --out DIR` first")
    with runner.Lock(out):
        fresh = judged({k: results[k] for k in results
                        if k not in ("summary", "claims", "flop_claim", "frontier")},
                       out)
        outputs.write_outputs(fresh, out)
    return fresh
