"""Write each lesson's notebook from its jupytext source, then the student copies.

    python notebooks/sync.py          # after editing a lesson's .py: rewrite the .ipynb and notebooks/student/
    python notebooks/sync.py --check  # exit 1 if a notebook or a student copy is out of sync

The lessons are jupytext percent-format scripts (``NN_name.py``, the source under version control)
paired with their notebooks (``NN_name.ipynb``, formats ``ipynb,py:percent``). With jupytext
installed, JupyterLab saves both files of a pair; ``jupytext --sync notebooks/0*.py`` also works.
This script does the same from the .py side, without outputs and with fixed cell ids (``nbNN-MM``)
so that an unchanged lesson gives a byte-identical notebook, and then writes the student copies
(``minispdf.assignments.make_student_copies``).
"""

from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # the minispdf next to this folder, not another installed copy


def lessons(folder: Path = HERE) -> list[Path]:
    return sorted(folder.glob("[0-9][0-9]_*.py"))


def notebook_text(source: Path) -> str:
    """The .ipynb text of a lesson source: its cells, no outputs, fixed cell ids."""
    import jupytext

    from minispdf.assignments import dumps

    nb = jupytext.read(source)
    nb.metadata.get("jupytext", {}).pop("text_representation", None)
    for i, cell in enumerate(nb.cells):
        cell.id = f"nb{source.name[:2]}-{i:02d}"
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
    return dumps(nb)


def out_of_sync(folder: Path = HERE) -> list[str]:
    """What differs: notebooks that do not match their source, and stale student copies."""
    from minispdf.assignments import check_student_copies

    problems = []
    for source in lessons(folder):
        target = source.with_suffix(".ipynb")
        if not target.exists() or target.read_text(encoding="utf-8") != notebook_text(source):
            problems.append(f"{target} differs from {source.name}")
    for path in sorted(folder.glob("[0-9][0-9]_*.ipynb")):
        if not path.with_suffix(".py").exists():
            problems.append(f"{path} has no source {path.with_suffix('.py').name}")
    return problems + check_student_copies(str(folder), str(folder / "student"))


def main(argv: list[str]) -> int:
    from minispdf.assignments import make_student_copies

    if "--check" in argv:
        problems = out_of_sync()
        for line in problems:
            print(line)
        if problems:
            print("out of sync: run python notebooks/sync.py")
        return 1 if problems else 0
    for source in lessons():
        source.with_suffix(".ipynb").write_text(notebook_text(source), encoding="utf-8")
        print(f"wrote {source.with_suffix('.ipynb').relative_to(HERE.parent)}")
    for path in make_student_copies(str(HERE), str(HERE / "student")):
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
