"""The tasks a study fine-tunes and evaluates on, as its grid names them: loaded once, the training
references that do not fit the context dropped, capped and subset with seeds derived from the grid
(so every worker and every rerun sees the same examples)."""

from __future__ import annotations

import os

from ..data import get_tokenizer
from ..errors import MiniSPDFError
from ..tasks import SEPARATOR, Example, Task, load_task, load_task_files, pair_fits, seeded_order


def _shuffled(examples, salt: str, n: int | None = None) -> list:
    """The examples in a seeded order, or a seeded ``n`` of them in their own order."""
    order = seeded_order(len(examples), f"minispdf-study:{salt}")
    return [examples[i] for i in (sorted(order[:n]) if n is not None else order)]


def _fit(examples, tok, block_size: int) -> tuple[list, int]:
    """Keep the references that fit the context whole with their input; count the dropped ones."""
    sep = len(tok.encode(SEPARATOR))
    kept, dropped = [], 0
    for ex in examples:
        n_in = len(tok.encode(ex.input))
        refs = [r for r in ex.references if pair_fits(n_in, len(tok.encode(r)), sep, block_size)]
        dropped += len(ex.references) - len(refs)
        if refs:
            kept.append(Example(ex.input, refs))
    return kept, dropped


def _load(t: dict):
    spec = t["spec"]
    kind, _, path = spec.partition(":")
    if kind == "e2e" and path and os.path.isfile(os.path.join(path,
                                                              "devset.csv")) and not os.path.isfile(
            os.path.join(path, "trainset.csv")):  # the dev/test files only: fine-tune on dev
        return load_task_files("e2e", train=os.path.join(path, "devset.csv"),
                               test=os.path.join(path, "testset_w_refs.csv"))
    return load_task(spec, seed=0, **t.get("options", {}))


def load_tasks(grid: dict) -> dict:
    """task key -> {"train" (fitted, capped), "val", "test" (the fixed evaluation inputs),
    "info"}."""
    tok = get_tokenizer(grid["tokenizer"])
    out = {}
    for key, t in grid["tasks"].items():
        task = _load(t)
        train, dropped = _fit(task.train, tok, grid["block_size"])
        # after fitting: exact counts
        if t.get("max_train_inputs") and len(train) > t["max_train_inputs"]:
            train = _shuffled(train, f"cap:{key}", t["max_train_inputs"])
        if t.get("train_refs"):  # fewer references per training input: a seeded choice of each's
            train = [Example(e.input, _shuffled(e.references, f"refs:{key}:{i}", t["train_refs"]))
                     for i, e in enumerate(train)]
        val, _ = _fit(task.val, tok, grid["block_size"])
        if len(train) < 4 or not task.test:
            raise MiniSPDFError(f"task {key}: {len(train)} training inputs fit block_size "
                                f"{grid['block_size']} and "
                                f"{len(task.test)} test inputs: give a task with both splits and "
                                f"shorter examples")
        test = _shuffled(task.test, f"test:{key}", t["eval_inputs"])
        out[key] = {"name": task.name, "metric": task.metric, "train": train, "val": val,
                    "test": test,
                    "info": {"about": t.get("about", task.description),
                             "n_train_inputs": len(train),
                             "n_train_pairs": sum(len(e.references) for e in train),
                             "n_test_inputs": len(test), "pairs_dropped_too_long": dropped}}
    return out


def task_for(entry: dict, set_frac: float, task_key: str, seed: int = 0):
    """The task a cell fine-tunes on: a subset of the training inputs drawn with the cell's seed, so
    that a set-size claim holds over subsets, not for one lucky (or unlucky) draw."""
    train = entry["train"]
    n = max(4, round(set_frac * len(train)))
    if n < len(train):
        train = _shuffled(train, f"set:{task_key}:{set_frac}:seed{seed}", n)
    return Task(entry["name"], entry["metric"], train, entry["val"], entry["test"],
                entry["info"]["about"])
