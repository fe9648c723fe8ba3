"""Run a grid's jobs, resumably, one or several at a time.

Every finished job leaves one file written atomically (``pretrain/<name>/summary.json`` beside
its checkpoint, ``cells/<name>.json``) and a rerun skips it; a pre-training run trains in a temp
folder renamed into place only when complete, so a killed run leaves nothing that looks done.
One process at a time may use a run folder (``fileio.writer_lock``).

On a CPU the jobs run in ``jobs`` worker processes of one torch thread each: for models this
small, two one-thread processes on two cores do nearly twice the work of one two-thread process.
"""

from __future__ import annotations

import concurrent.futures as cf
import multiprocessing
import os
import signal
import threading
import time
from dataclasses import replace

from ..fileio import publish_folder, read_json, write_json, writer_lock
from ..run_folder import remove_temps
from . import plan as plan_lib
from .grid_tasks import load_tasks, task_for

FORMAT = "minispdf-study-2"


# ------------------------------------------------------------------------------ jobs


def pretrain_done(out: str, name: str) -> dict | None:
    summary = read_json(os.path.join(out, "pretrain", name, "summary.json"))
    ok = (summary and summary.get("format") == FORMAT
          and os.path.exists(os.path.join(out, "pretrain", name, "ckpt.pt")))
    return summary if ok else None


def cell_done(out: str, cell: dict) -> dict | None:
    d = read_json(os.path.join(out, "cells", cell["name"] + ".json"))
    return d["row"] if d and d.get("format") == FORMAT and d.get("spec") == cell["spec"] else None


def _curve(history: list[dict], points: int = 150) -> list[list[float]]:
    rec = [h for h in history if "loss" in h]
    keep = rec[:: max(1, len(rec) // points)]
    return [[h["step"], h["tokens"], h["flops"], h["loss"]] for h in keep]


def run_pretrain(out: str, job: dict, device: str) -> dict:
    """Train one pre-training job in a temp folder and rename it into place when complete."""
    from ..spdf import RunConfig, pretrain

    s, name, settings = job["spec"], job["name"], job["settings"]
    final = os.path.join(out, "pretrain", name)
    t0 = time.perf_counter()
    # leftovers under the final name are never complete: replaced
    with publish_folder(final) as tmp:
        training = replace(settings["training"], device=device)
        r = pretrain(**{**settings, "training": training}, run=RunConfig(out=tmp))
        summary = {"format": FORMAT, "name": name, "spec": s, "seconds": time.perf_counter() - t0,
                   "flops": r["flops"], "flops_dense": r["flops_dense"], "tokens": r["tokens"],
                   "val_loss": r["val_loss"], "n_params": r["model"].num_params(),
                   "curve": _curve(r["history"])}
        write_json(os.path.join(tmp, "summary.json"), summary)
    return summary


def run_cell(out: str, cell: dict, tasks: dict, pre: dict | None, device: str) -> dict:
    """Fine-tune and evaluate one cell; ``cells/<name>.json`` is written last, atomically."""
    from ..data import get_tokenizer
    from ..evaluate import evaluate_task
    from ..spdf import FinetuneConfig, finetune

    s, settings = cell["spec"], cell["settings"]
    task = task_for(tasks[s["task"]], s["set_frac"], s["task"], s["seed"])
    t0 = time.perf_counter()
    init = os.path.join(out, "pretrain", s["pretrain"]) if s["pretrain"] else None  # None: scratch
    f = finetune(finetuning=FinetuneConfig(init_from=init, task=task, keep_masks=s["keep_masks"]),
                 model_config=settings["model_config"],
                 training=replace(settings["training"], device=device))
    t1 = time.perf_counter()
    pred = os.path.join(out, "predictions", cell["name"] + ".jsonl")
    ev = evaluate_task(f["model"], get_tokenizer(s["tokenizer"]), task.test,
                       max_new_tokens=s["task_def"]["max_new_tokens"],
                       predictions_path=pred, metric=task.metric)
    pre = pre or {}
    n_pairs = sum(len(e.references) for e in task.train)
    row = {"task": s["task"], "size": s["size"], "set": s["set"], "arm": s["arm"],
           "seed": s["seed"],
           "n_params": f["model"].num_params(),
           "pretrain_sparsity": pre.get("spec", {}).get("sparsity"),
           "pretrain_steps": pre.get("spec", {}).get("steps", 0),
           "pretrain_tokens": pre.get("tokens", 0),
           "pretrain_flops": pre.get("flops", 0.0), "pretrain_val_loss": pre.get("val_loss"),
           "n_train_inputs": len(task.train), "n_train_pairs": n_pairs,
           "distinct_pairs_seen": round(plan_lib.distinct_seen(n_pairs,
                                                               s["steps"] * s["batch_size"]), 1),
           "finetune_val_loss": f["val_loss"], "test_loss": ev["loss"],
           "test_perplexity": ev["perplexity"],
           "bleu": ev["bleu"], "n_test_inputs": ev["n_inputs"], "finetune_seconds": round(t1 - t0,
                                                                                          2),
           "eval_seconds": round(time.perf_counter() - t1, 2), "cell": cell["name"]}
    write_json(os.path.join(out, "cells", cell["name"] + ".json"),
               {"format": FORMAT, "name": cell["name"],
                                                                   "spec": s, "row": row})
    return row


# ------------------------------------------------------------------------------ scheduling


def Lock(out: str):
    """``with Lock(out):`` one study run per folder: :func:`minispdf.fileio.writer_lock` on OUT."""
    return writer_lock(out, "study run")


def clean_temps(out: str) -> None:
    """Leftovers of a killed run (we hold the lock, so nothing else is writing them)."""
    for sub in ("pretrain", "cells", "predictions", ""):
        remove_temps(os.path.join(out, sub))


_WORKER: dict = {}


def _init_worker(grid: dict, threads: int) -> None:
    import torch

    # Ctrl-C reaches the whole group: the parent ends the workers
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    torch.set_num_threads(threads)
    _WORKER["tasks"] = load_tasks(grid)


def _job(kind: str, out: str, job: dict, device: str):
    """What a worker runs: one pre-training job or one cell (its pre-training summary from disk)."""
    if kind == "pretrain":
        return run_pretrain(out, job, device)
    pre = pretrain_done(out, job["spec"]["pretrain"]) if job["spec"]["pretrain"] else None
    return run_cell(out, job, _WORKER["tasks"], pre, device)


def execute(grid: dict, out: str, pretrains: list[dict], cells: list[dict], tasks: dict,
            device: str,
            jobs: int, log, est: dict) -> int:
    """Run every unfinished job, ``jobs`` at a time; returns how many ran.

    A cell whose pre-training is done goes before any further pre-training run, so the grid
    fills in seed by seed: an interrupted or time-limited run leaves whole seeds, not a ragged
    grid. A failed job stops the run (the jobs already running finish); finished jobs stay on disk.
    """
    todo_cells = [c for c in cells if cell_done(out, c) is None]
    needed = {c["spec"]["pretrain"] for c in todo_cells if c["spec"]["pretrain"]}
    todo_pre = [p for p in pretrains if p["name"] in needed and not pretrain_done(out, p["name"])]
    pending = {p["name"] for p in todo_pre}
    waiting: dict[str, list] = {}
    ready: list = []
    for c in todo_cells:
        (waiting.setdefault(c["spec"]["pretrain"], []) if c["spec"]["pretrain"] in pending
         else ready).append(c)
    total, t0, done = len(todo_pre) + len(todo_cells), time.perf_counter(), 0
    est_total = sum(est.get(j["name"], 0.0) for j in todo_pre + todo_cells) / jobs

    def next_job():
        if ready:
            return "cell", ready.pop(0)
        return ("pretrain", todo_pre.pop(0)) if todo_pre else None

    def finished(kind: str, job: dict, result: dict) -> None:
        nonlocal done
        done += 1
        log(f"[{done}/{total}] {_describe(kind, job, result)} "
            f"({plan_lib.fmt_duration(time.perf_counter() - t0)} "
            f"elapsed, estimate {plan_lib.fmt_duration(est_total)})")
        if kind == "pretrain":  # its cells go first, in plan order
            ready[:0] = waiting.pop(job["name"], [])

    with _StopOnSignal(out, lambda: done):
        if jobs == 1:  # in this process: no pool, same order
            _WORKER["tasks"] = tasks
            while (job := next_job()) is not None:
                finished(*job, _job(job[0], out, job[1], device))
            return total
        pool = cf.ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn"),
                                      initializer=_init_worker, initargs=(grid, 1))
        running: dict = {}
        try:
            while True:
                while len(running) < jobs and (job := next_job()) is not None:
                    running[pool.submit(_job, job[0], out, job[1], device)] = job
                if not running:
                    return total
                done_now, _ = cf.wait(list(running), return_when=cf.FIRST_COMPLETED)
                for fut in done_now:
                    finished(*running.pop(fut), fut.result())
        except BaseException:  # a signal or a failed job: no worker may outlive the run
            for proc in list((pool._processes or {}).values()):
                proc.kill()
            raise
        finally:
            pool.shutdown(wait=True, cancel_futures=True)


class _StopOnSignal:
    """SIGTERM or SIGINT stop the run at once: the parallel workers are killed (a job cut short
    leaves only a temp folder, removed by the next run), finished jobs stay, and the error says how
    many. Rerunning the same command continues. Only in the main thread, where handlers can be
    set."""

    def __init__(self, out: str, done):
        self.out, self.done, self.previous = out, done, {}

    def _handle(self, signum, frame):
        from ..errors import Interrupted, counted

        raise Interrupted(f"{signal.Signals(signum).name}: "
                          f"{counted(self.done(), 'finished job')} kept in {self.out}",
                          signum, self.done(), self.out)

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self.previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc):
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)


def _describe(kind: str, job: dict, r: dict) -> str:
    s = job["spec"]
    if kind == "pretrain":
        sched = s.get("schedule", {})
        how = (f" ({sched['schedule']}{', dense tail' if sched.get('dense_from') else ''})" if sched
               else "")
        return f"pre-trained {s['size']} at {s['sparsity']:.0%} sparsity{how}, {s['steps']} " \
               f"steps, seed {s['seed']}: " \
               f"val loss {r['val_loss']:.3f}"
    bleu = f"BLEU {r['bleu']:.1f}, " if r["bleu"] is not None else ""
    return (f"{r['task']} {r['size']} {r['set']} {r['arm']} seed {r['seed']}: {bleu}test loss "
            f"{r['test_loss']:.3f}")
