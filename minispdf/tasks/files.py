"""Tasks from local files in the official formats: one file, one file per split, or a directory.

A directory is searched for the official file names (E2E: ``trainset.csv``, ``devset.csv``,
``testset_w_refs.csv`` or ``testset.csv``; DART: ``*-train.json``, ``*-dev.json``, ``*-test.json``
(or ``.xml``); WebNLG: ``train``/``dev``/``test`` sub-folders or XML files whose names contain those
words; Curation: CSV/Parquet files whose names contain train/dev/val/test). A single file goes
entirely into ``test``: use :func:`load_task_files` to pick a file per split, or
:func:`minispdf.tasks.split_task` to cut one file into three disjoint splits.

A split read from several files is merged by input: the WebNLG 2017 test folder holds
``testdata_with_lex.xml`` (every test input), ``testdata_unseen_with_lex.xml`` (the unseen ones
again) and ``testdata_no_lex.xml`` (no references). Each input is kept once with exactly its own
references, and a file without references is skipped; ``Task.notes`` says what was merged or
skipped, ``Task.description`` gives the inputs and references per split.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

from minispdf.errors import MiniSPDFError
from minispdf.fileio import file_problem

from .core import Example, NoReferencesError, Task, counts_text
from .tables import load_curation_file, load_e2e_file
from .triples import load_dart_file, load_webnlg_file

_SPLIT_WORDS = {"train": ("train",), "val": ("dev", "val"), "test": ("test",)}


def _files_with_word(folder: Path, exts: tuple[str, ...], words: tuple[str, ...]) -> list[Path]:
    """Files under ``folder`` (recursively) with one of ``exts`` whose name contains one of
    ``words``."""
    out = []
    for p in sorted(folder.rglob("*")):
        name = p.name.lower()
        if p.is_file() and name.endswith(exts) and any(w in name for w in words):
            out.append(p)
    return out


def _split_files_generic(folder: Path, exts: tuple[str, ...]) -> dict[str, list[Path]]:
    """train/dev/test sub-folders if present (all their files), else files named after the split."""
    found: dict[str, list[Path]] = {}
    subdirs = {p.name.lower(): p for p in folder.iterdir() if p.is_dir()}
    for split, words in _SPLIT_WORDS.items():
        sub = next((subdirs[w] for w in (*words, "validation") if w in subdirs), None)
        if sub is not None:
            files = [p for p in sorted(sub.rglob("*"))
                     if p.is_file() and p.name.lower().endswith(exts)]
        else:
            files = [p for p in _files_with_word(folder, exts, words)
                     if not any(p.is_relative_to(s) for s in subdirs.values()
                                if s.name.lower() in ("train", "dev", "val", "validation", "test"))]
        if files:
            found[split] = files
    return found


def _e2e_split_files(folder: Path) -> dict[str, list[Path]]:
    found = {}
    for split, names in (("train", ("trainset.csv",)), ("val", ("devset.csv",)),
                         ("test", ("testset_w_refs.csv", "testset.csv"))):
        hit = next((folder / n for n in names if (folder / n).is_file()), None)
        if hit is not None:
            found[split] = [hit]
    return found


def _dart_split_files(folder: Path) -> dict[str, list[Path]]:
    found = {}
    for ext in (".json", ".xml"):  # prefer the JSON release when both are there
        for split, word in (("train", "train"), ("val", "dev"), ("test", "test")):
            if split not in found:
                hits = sorted(folder.rglob(f"*-{word}{ext}"))
                if hits:
                    found[split] = hits
    return found


_FILE_LOADERS: dict[str, Callable[[Path], list[Example]]] = {
    "e2e": load_e2e_file,
    "dart": load_dart_file,
    "webnlg": load_webnlg_file,
    "curation": load_curation_file,
}
# a TASK_METRICS each
_METRIC_OF = {"e2e": "bleu", "dart": "bleu", "webnlg": "bleu", "curation": "perplexity"}
_DIR_FINDERS: dict[str, Callable[[Path], dict[str, list[Path]]]] = {
    "e2e": _e2e_split_files,
    "dart": _dart_split_files,
    "webnlg": lambda d: _split_files_generic(d, (".xml",)),
    "curation": lambda d: _split_files_generic(d, (".csv", ".parquet", ".pq")),
}
_DIR_EXPECTED = {
    "e2e": "trainset.csv, devset.csv, testset_w_refs.csv",
    "dart": "*-train.json, *-dev.json, *-test.json",
    "webnlg": "train/, dev/, test/ folders or *train*.xml, *dev*.xml, *test*.xml",
    "curation": "*train*.csv, *dev*.csv or *val*.csv, *test*.csv (or .parquet)",
}


def _load_many(name: str, files: list[Path], notes: list[str]) -> list[Example]:
    """The examples of all ``files`` of one split, each input once with exactly its own references.

    A release may give an input in several files (WebNLG 2017's testdata_unseen_with_lex.xml
    repeats entries of testdata_with_lex.xml): the inputs are merged by their text and a
    reference that another file already gave for that input is not added again. A file without
    references is skipped. Both are told in ``notes``. Larger files come first (stable), so the
    full test file gives the order and the subset file only confirms its inputs.
    """
    loaded = []
    for f in files:
        try:
            loaded.append((f, _FILE_LOADERS[name](f)))
        except NoReferencesError:
            notes.append(f"{f.name} has no references: skipped (it cannot be scored)")
    merged: dict[str, Example] = {}
    for f, examples in sorted(loaded, key=lambda fe: -len(fe[1])):
        repeated = 0
        for ex in examples:
            seen = merged.get(ex.input)
            if seen is None:
                merged[ex.input] = Example(ex.input, list(ex.references), dict(ex.meta))
                continue
            repeated += 1
            from_others = set(seen.references)
            seen.references.extend(r for r in ex.references if r not in from_others)
        if repeated:
            notes.append(f"{f.name}: {repeated} of its {len(examples)} inputs are also in a larger "
                         f"file of the split; "
                         "merged, their references not counted twice")
    return list(merged.values())


def load_task_files(
    name: str,
    train: str | os.PathLike | None = None,
    val: str | os.PathLike | None = None,
    test: str | os.PathLike | None = None,
) -> Task:
    """Build a task from one file per split, e.g. ``load_task_files("e2e", train="devset.csv",
    test="testset_w_refs.csv")`` to fine-tune on E2E dev and evaluate on E2E test.

    ``name`` is one of e2e, dart, webnlg, curation; splits left as None stay empty.
    """
    if name not in _FILE_LOADERS:
        raise MiniSPDFError(f"unknown file task {name!r}; use one of {', '.join(_FILE_LOADERS)}")
    paths = {"train": train, "val": val, "test": test}
    if all(p is None for p in paths.values()):
        raise MiniSPDFError(
            f"no files given for task {name}; pass at least one of train=, val=, test=")
    splits = {}
    for split, p in paths.items():
        if p is None:
            splits[split] = []
            continue
        path = Path(p)
        if path.is_dir():
            raise MiniSPDFError(f"{path} is a directory; pass one {name} file per split, or use "
                                f"--task {name}:{path}")
        splits[split] = _FILE_LOADERS[name](path)
    desc = ", ".join(f"{s}={paths[s]}" for s in paths if paths[s] is not None)
    task = Task(name, _METRIC_OF[name], splits["train"], splits["val"], splits["test"],
                f"{name} files {desc}")
    task.description += f": {counts_text(task)}"
    return task


def load_path(name: str, path: Path) -> Task:
    if not path.exists():
        raise MiniSPDFError(f"{name} file not found: {path}; check the path in --task {name}:PATH")
    # a FIFO or a device: reading would block or find nothing
    if not path.is_dir() and file_problem(path):
        raise MiniSPDFError(
            f"{name} file {path} {file_problem(path)}; check the path in --task {name}:PATH")
    if path.is_file():
        task = Task(name, _METRIC_OF[name], [], [], _FILE_LOADERS[name](path))
        task.description = (f"{name} file {path} (all in test; see load_task_files/split_task): "
                            f"{counts_text(task)}")
        return task
    found = _DIR_FINDERS[name](path)
    if not found:
        raise MiniSPDFError(
            f"no {name} files found in directory {path}; expected {_DIR_EXPECTED[name]}, "
            f"or pass one file as --task {name}:FILE"
        )
    notes: list[str] = []
    splits = {s: _load_many(name, found[s], notes) if s in found else []
              for s in ("train", "val", "test")}
    task = Task(name, _METRIC_OF[name], splits["train"], splits["val"], splits["test"], notes=notes)
    listing = "; ".join(f"{s}: {', '.join(p.name for p in found[s])}" for s in found)
    task.description = f"{name} directory {path} ({listing}): {counts_text(task)}"
    return task
