"""Notebook handling: finding exercise cells, student copies, and the release bundle.

Only the ``.ipynb`` files and their cell metadata matter here: an exercise cell carries
``{"minispdf": {"exercise": NAME}}`` (and the tag ``exercise``), and a cell tagged ``answer``
holds an instructor's answer that students never see.
"""

from __future__ import annotations

import copy
import re
from pathlib import Path

from ..errors import MiniSPDFError
from ..fileio import require_readable
from .exercises import EXERCISES

BEGIN = "### BEGIN SOLUTION"
END = "### END SOLUTION"
META_KEY = "minispdf"  # cell.metadata["minispdf"]["exercise"] = exercise name
EXERCISE_TAG = "exercise"
ANSWER_TAG = "answer"  # instructor-only cells (answers to the closing questions)
DEFAULT_SRC = "notebooks"
DEFAULT_DST = "notebooks/student"
STUDENT_NOTE_ID = "student-copy-note"
STUDENT_NOTE = (
    "**Student copy.** The exercise cells below raise `NotImplementedError` until you write them. "
    "The cell under each exercise checks your function against the library's own implementation; "
    "until it passes, that cell says \"not solved yet\" and the cells after it use the kit's own "
    "answer, so Run All reaches the end of the lesson either way. `hint(\"name\")` prints an "
    "exercise's hint. Grade the whole notebook from a terminal with\n"
    "`minispdf assign grade path/to/{path}`."
)
# the executed reference pages show the solutions: a student copy names them without linking them
REFERENCE_LINK = re.compile(r"\[([^\]]+)\]\(reference/[^)\s]+\)")


def read_notebook(path) -> "nbformat.NotebookNode":  # noqa: F821
    import nbformat

    require_readable(path, "notebook", "pass an .ipynb file saved by Jupyter")
    try:
        nb = nbformat.read(str(path), as_version=nbformat.NO_CONVERT)
        version = nb.get("nbformat")
        if version == 4:
            nb.cells  # noqa: B018  (a JSON file that is not a notebook fails here)
    except Exception as e:
        raise MiniSPDFError(f"{path} is not a readable notebook ({type(e).__name__}): pass an "
                            f".ipynb file "
                            "saved by Jupyter") from None
    if version != 4:  # converted, its exercise tags would be lost: it would grade as "no exercises"
        raise MiniSPDFError(
            f"{path} is in nbformat {version}, not 4: open it in Jupyter and save it again")
    return nb


def dumps(nb) -> str:
    """The exact text a notebook is stored as (shared by the generator and the student copies)."""
    import nbformat

    text = nbformat.writes(nb)
    return text if text.endswith("\n") else text + "\n"


def _metadata(cell) -> dict:
    meta = cell.get("metadata", {})
    return meta if isinstance(meta, dict) else {}


def tags(cell) -> list:
    found = _metadata(cell).get("tags", [])
    return found if isinstance(found, list) else []


def exercise_name(cell) -> str | None:
    """The exercise a code cell holds: from its metadata, else (tagged ``exercise`` or with solution
    markers) from a ``def`` of a known exercise function. None for an ordinary cell. Metadata of
    another shape (``{"minispdf": "x"}``) is ignored, so odd metadata cannot stop grading."""
    if cell.get("cell_type") != "code":
        return None
    ours = _metadata(cell).get(META_KEY)
    name = ours.get("exercise") if isinstance(ours, dict) else None
    if isinstance(name, str) and name:
        return name
    source = cell.get("source")
    if isinstance(source, str) and (BEGIN in source or EXERCISE_TAG in tags(cell)):
        for ex in EXERCISES.values():
            if re.search(rf"^\s*def\s+{ex.function}\s*\(", source, re.M):
                return ex.name
    return None


def stub_source(source: str, name: str | None) -> str:
    """``source`` with every ``BEGIN``..``END`` block replaced by a NotImplementedError stub."""
    summary = EXERCISES[name].summary if name in EXERCISES else "write this part"
    out, inside = [], False
    for line in source.split("\n"):
        stripped = line.strip()
        if stripped == BEGIN:
            if inside:
                raise MiniSPDFError(f"nested {BEGIN!r} in exercise {name}")
            inside = True
            indent = line[: len(line) - len(line.lstrip())]
            out.append(f'{indent}raise NotImplementedError("exercise: {summary}")')
        elif stripped == END:
            if not inside:
                raise MiniSPDFError(f"{END!r} without {BEGIN!r} in exercise {name}")
            inside = False
        elif not inside:
            out.append(line)
    if inside:
        raise MiniSPDFError(f"{BEGIN!r} without {END!r} in exercise {name}")
    return "\n".join(out)


def student_notebook(nb, rel_path: str):
    """A student copy of notebook ``nb`` (not modified): solutions stubbed, instructor answers
    dropped, outputs cleared, not paired with a jupytext source."""
    import nbformat

    nb = copy.deepcopy(nb)
    nb.metadata.pop("jupytext", None)
    nb.cells = [c for c in nb.cells if ANSWER_TAG not in tags(c)]
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            cell.source = REFERENCE_LINK.sub(r"\1 (in your instructor's copy)", cell.source)
        if cell.cell_type == "code":
            cell.outputs = []
            cell.execution_count = None
            if BEGIN in cell.source:
                cell.source = stub_source(cell.source, exercise_name(cell))
    if any(exercise_name(c) for c in nb.cells):
        note = nbformat.v4.new_markdown_cell(STUDENT_NOTE.format(path=rel_path))
        note.id = STUDENT_NOTE_ID
        nb.cells.insert(1 if nb.cells and nb.cells[0].cell_type == "markdown" else 0, note)
    return nb


def _student_copies(src, dst) -> dict[Path, str]:
    src, dst = Path(src), Path(dst)
    sources = sorted(src.glob("*.ipynb"))
    if not sources:
        raise MiniSPDFError(
            f"no notebooks in {src}: pass --src, the folder that holds the source notebooks")
    return {dst / p.name: dumps(student_notebook(read_notebook(p), p.name)) for p in sources}


def make_student_copies(src: str = DEFAULT_SRC, dst: str = DEFAULT_DST) -> list[str]:
    """Write a student copy of every notebook in ``src`` to ``dst``; returns the paths written.

    Student notebooks in ``dst`` without a source notebook are removed, so the folder mirrors
    ``src``.
    """
    copies = _student_copies(src, dst)
    Path(dst).mkdir(parents=True, exist_ok=True)
    for stale in Path(dst).glob("*.ipynb"):
        if stale not in copies:
            stale.unlink()
    for path, text in copies.items():
        path.write_text(text, encoding="utf-8")
    return [str(p) for p in copies]


def check_student_copies(src: str = DEFAULT_SRC, dst: str = DEFAULT_DST) -> list[str]:
    """Problems that make ``dst`` differ from fresh student copies of ``src`` (empty: in sync)."""
    copies = _student_copies(src, dst)
    problems = []
    for path, text in copies.items():
        if not path.exists():
            problems.append(f"{path} is missing")
        elif path.read_text(encoding="utf-8") != text:
            problems.append(f"{path} is out of date")
    for extra in sorted(Path(dst).glob("*.ipynb")):
        if extra not in copies:
            problems.append(f"{extra} has no source notebook in {src}")
    return problems
