"""What every task loader returns: :class:`Task` (three splits and a metric) of :class:`Example`.

Every loader groups references by their exact input string: all rows/entries whose input is the
same string become ONE Example, with its references in file order, placed where the input first
appeared. This matters for multi-reference BLEU and keeps inputs unique within a split.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

from minispdf.errors import MiniSPDFError
from minispdf.fileio import file_problem

#: The task names :func:`minispdf.tasks.load_task` accepts (before an optional ``:PATH`` or
# ``:easy``/``:hard``).
TASK_NAMES = ("builtin", "e2e", "dart", "webnlg", "curation")
SPLITS = ("train", "val", "test")
#: A task's headline score (``Task.metric``); the scores of a predictions file are
# ``metrics.METRICS``.
TASK_METRICS = ("bleu", "perplexity")


@dataclass
class Example:
    """One input and all of its reference outputs.

    ``input`` is the source text: an E2E meaning representation, linearised triples or a news
    article. ``references`` holds one or more reference outputs, in file order. ``meta`` holds what
    the release says about the input beyond that (WebNLG ``category``, DART ``source``) and
    ``subset``, the subset it is scored in; it does not take part in ``==``.
    """

    input: str
    references: list[str]
    meta: dict = field(default_factory=dict, compare=False)


@dataclass
class Task:
    """A downstream task: three splits of :class:`Example` and the metric it is judged by.

    ``metric`` is ``"bleu"`` for data-to-text tasks and ``"perplexity"`` for summarisation
    (Curation Corpus), as in the SPDF paper. A split may be empty (e.g. a task loaded from one
    file has only ``test``). ``notes`` says what the loader left out and why.
    """

    name: str
    metric: str
    train: list[Example] = field(default_factory=list)
    val: list[Example] = field(default_factory=list)
    test: list[Example] = field(default_factory=list)
    description: str = ""
    notes: list[str] = field(default_factory=list, compare=False)


class NoReferencesError(MiniSPDFError):
    """A file in the official format that holds inputs but no references (e.g.
    testdata_no_lex.xml)."""


def clean(text: object) -> str:
    """A reference or input cell as a stripped string; '' for None/NaN."""
    if text is None or (isinstance(text, float) and math.isnan(text)):
        return ""
    return str(text).strip()


def group(pairs: Iterable[tuple], dedupe_from_other_entries: bool = False) -> list[Example]:
    """Group (input, reference) pairs by exact input string, keeping first-appearance order.

    Pairs may carry an entry id as a third item when ``dedupe_from_other_entries`` is set: then a
    reference already contributed by an EARLIER entry with the same input is dropped (a duplicated
    XML/JSON entry does not double its references). A fourth item is the entry's ``meta``; the
    first entry of an input gives the Example's.
    """
    by_input: dict[str, Example] = {}
    owners: dict[str, dict[str, object]] = {}
    for item in pairs:
        inp, ref = item[0], item[1]
        ex = by_input.get(inp)
        if ex is None:
            ex = by_input[inp] = Example(inp, [], dict(item[3]) if len(item) > 3 else {})
            owners[inp] = {}
        if dedupe_from_other_entries:
            entry = item[2]
            first_owner = owners[inp].get(ref)
            if first_owner is not None and first_owner != entry:
                continue
            owners[inp].setdefault(ref, entry)
        ex.references.append(ref)
    return list(by_input.values())


def require_file(path: Path, what: str) -> None:
    why = file_problem(path)
    if why == "does not exist":
        raise MiniSPDFError(f"{what} file not found: {path}; check the path (--task NAME:PATH)")
    if why and why != "is a directory":
        raise MiniSPDFError(
            f"{what} file {path} {why}; pass the {what} file itself (--task NAME:PATH)")
    if path.is_file() and path.stat().st_size == 0:
        raise MiniSPDFError(
            f"{path} is empty; pass a {what} file that has data in it (in the official format)")


def task_stats(task: Task) -> dict:
    """Size of each split of ``task``: inputs, references and characters (inputs + references)."""
    splits = {}
    for split in SPLITS:
        examples = getattr(task, split)
        splits[split] = {
            "inputs": len(examples),
            "references": sum(len(ex.references) for ex in examples),
            "characters": sum(len(ex.input) + sum(map(len, ex.references)) for ex in examples),
        }
    return {"task": task.name, "metric": task.metric, "description": task.description,
            "splits": splits}


def split_counts(task: Task) -> dict[str, dict[str, int]]:
    """``{split: {"inputs": n, "references": m}}`` for train, val and test."""
    stats = task_stats(task)["splits"]
    return {s: {k: stats[s][k] for k in ("inputs", "references")} for s in SPLITS}


def counts_text(task: Task) -> str:
    """:func:`split_counts` as one line, for descriptions and messages."""
    c = split_counts(task)
    return ", ".join(f"{s} {c[s]['inputs']} inputs / {c[s]['references']} references" for s in c)


def seeded_order(n: int, seed) -> list[int]:
    """``range(n)`` shuffled by ``random.Random(seed)``: the one way a seeded subset is drawn (a
    split,
    a held-out val set, a study's capped training set), the same on every machine and process."""
    order = list(range(n))
    random.Random(seed).shuffle(order)
    return order


def split_task(task: Task, val_fraction: float = 0.1, test_fraction: float = 0.1,
               seed: int = 0) -> Task:
    """Pool all examples of ``task`` and cut them into disjoint train/val/test splits by input.

    Examples with the same input in different splits are merged first (their references
    concatenated), so no input can end up in two splits. The shuffle is seeded and the counts
    are ``round(n * fraction)`` for val and test; the rest is train. Returns a new Task.
    """
    for what, frac in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
        if not 0 <= frac < 1:
            raise MiniSPDFError(f"{what}={frac} is out of range; use a fraction in [0, 1)")
    if val_fraction + test_fraction >= 1:
        raise MiniSPDFError(
            f"val_fraction + test_fraction = {val_fraction + test_fraction} leaves nothing to "
            f"train on; make them smaller"
        )
    pool = group((ex.input, r, None, ex.meta) for ex in task.train + task.val + task.test
                 for r in ex.references)
    if not pool:
        raise MiniSPDFError(
            f"task {task.name} has no examples to split; load a file with data first")
    order = seeded_order(len(pool), f"minispdf-split:{seed}")
    n_test = round(len(pool) * test_fraction)
    n_val = round(len(pool) * val_fraction)
    test = [pool[i] for i in order[:n_test]]
    val = [pool[i] for i in order[n_test:n_test + n_val]]
    train = [pool[i] for i in order[n_test + n_val:]]
    desc = (f"{task.description} | re-split {1 - val_fraction - test_fraction:.2f}"
            f"/{val_fraction:.2f}/{test_fraction:.2f} seed {seed}")
    return Task(task.name, task.metric, train, val, test, desc, notes=list(task.notes))
