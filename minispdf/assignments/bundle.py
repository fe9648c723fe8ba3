"""``minispdf assign release DIR``: the bundle handed to students, written all at once.

The bundle holds the student copies of the lessons (solutions stubbed, instructor answers
dropped, links to the executed references, which show the solutions, left as plain text), the
committed study results lesson 05 reads, the page of measured lesson times their headers link,
and a README.txt: every link in it resolves inside the bundle. It is built in a
temporary folder next to DIR, checked for any solution text, and renamed into place, so DIR
is either the old bundle or the whole new one, never half of one.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from ..checkpoint import check_out_folder
from ..errors import MiniSPDFError
from ..fileio import publish_folder
from . import manifest
from .exercises import EXERCISES
from .notebooks import (
    ANSWER_TAG,
    BEGIN,
    DEFAULT_SRC,
    END,
    dumps,
    exercise_name,
    read_notebook,
    student_notebook,
    tags,
)

README = """SPDF lessons: student bundle
============================

Sparse Pre-training and Dense Fine-tuning of GPT models (Thangarasa et al., UAI 2023,
https://arxiv.org/abs/2303.10464), taught with the minispdf kit in seven notebooks.

1. Install the kit your instructor points you to, e.g. from its source folder:
       python -m pip install -e path/to/minispdf
2. Open the lessons:
       jupyter lab notebooks/
   Run the cells in order. Lesson 05 reads the study results in results/.
3. Exercises: each exercise cell raises NotImplementedError until you write it. Replace that
   line with your code; keep the function's name and arguments. The cell below it checks your
   function. Stuck? In a cell run
       from minispdf.assignments import hint
       hint("random_mask")
4. Put everything an exercise needs (imports, helpers) in the exercise cell itself: the grader
   runs only the exercise cells (after `import math, torch, numpy as np`), with {timeout} s per
   exercise. Grade yourself from a terminal:
       minispdf assign grade notebooks/01_gpt_and_masks.ipynb
5. Hand in the notebooks listed below, keeping their file names.

Exercises (points):
{exercises}
"""


# the lessons' headers link it: how their run times were measured
LINKED_RESULTS = "lesson_times.md"


def _readme(timeout: float, exercises: list[tuple[str, str]]) -> str:
    """README.txt; ``exercises``: (notebook file, exercise name) as found in the bundle."""
    lines = [f"  {nb}  {name} ({EXERCISES[name].function}): {EXERCISES[name].points} "
             f"point{'s' * (EXERCISES[name].points != 1)}" for nb, name in exercises
             if name in EXERCISES]
    return README.format(timeout=f"{timeout:g}", exercises="\n".join(lines) or "  (none)")


def _leaks(path: Path) -> list[str]:
    """Solution text or instructor answers left in a student notebook (should be none)."""
    nb = read_notebook(path)
    found = [f"{path.name}: an {ANSWER_TAG!r} cell" for c in nb.cells if ANSWER_TAG in tags(c)]
    text = path.read_text(encoding="utf-8")
    found += [f"{path.name}: the text {marker!r}" for marker in (BEGIN, END) if marker in text]
    return found


def _write_bundle(folder: Path, src: Path, results: Path | None, timeout: float) -> list[str]:
    (folder / "notebooks").mkdir()
    written, exercises = [], []
    for nb_path in sorted(src.glob("*.ipynb")):
        out = folder / "notebooks" / nb_path.name
        nb = student_notebook(read_notebook(nb_path), f"notebooks/{nb_path.name}")
        out.write_text(dumps(nb), encoding="utf-8")
        exercises += [(nb_path.name, name) for name in dict.fromkeys(map(exercise_name, nb.cells))
                      if name]
        leaks = _leaks(out)
        if leaks:
            raise MiniSPDFError(f"refusing to release {'; '.join(leaks)}: remove solution "
                                f"text outside "
                                f"{BEGIN!r} blocks in {nb_path}")
        written.append(f"notebooks/{nb_path.name}")
    shipped = [*sorted(results.glob("*/results.json")), *results.glob(LINKED_RESULTS)] \
        if results and results.is_dir() else []
    for found in shipped:
        rel = Path("results") / found.relative_to(results)
        (folder / rel.parent).mkdir(parents=True, exist_ok=True)
        shutil.copyfile(found, folder / rel)
        written.append(str(rel))
    (folder / "README.txt").write_text(_readme(timeout, exercises), encoding="utf-8")
    # what the class is graded on: `assign grade --manifest`
    manifest.write(folder, manifest.build(exercises))
    return written + ["README.txt", manifest.FILE]


def release(dst, src=DEFAULT_SRC, overwrite: bool = False, results=None,
            timeout: float = 60.0) -> list[str]:
    """Write the student bundle into ``dst``; returns the files written, relative to ``dst``.

    ``results`` (default: ``results/`` next to ``src``) is the folder whose ``*/results.json``
    study results go into the bundle. An existing non-empty ``dst`` is replaced only with
    ``overwrite``.
    """
    src, dst = Path(src), Path(dst)
    if not sorted(src.glob("*.ipynb")):
        raise MiniSPDFError(
            f"no notebooks in {src}: pass --src, the folder that holds the source notebooks")
    check_out_folder(str(dst), flag="release folder")
    if dst.is_dir() and any(dst.iterdir()) and not overwrite:
        raise MiniSPDFError(
            f"{dst} is not empty: choose a new folder, or pass --overwrite to replace it")
    if results is not None and not Path(results).is_dir():
        raise MiniSPDFError(f"--results {results} is not a folder: pass the folder that "
                            f"holds the study "
                            "results (results/), or leave it out")
    results = Path(results) if results is not None else src.resolve().parent / "results"
    try:
        with publish_folder(str(dst)) as tmp:
            written = _write_bundle(Path(tmp), src, results, timeout)
    except OSError as e:
        raise MiniSPDFError(f"cannot write the bundle {dst} ({e.strerror or e}); the previous "
                            f"one, if any, "
                            "is intact: free some space or choose another folder") from None
    return written
