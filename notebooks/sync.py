"""Write each lesson's notebook from its jupytext source, then the student copies.

    python notebooks/sync.py          # after editing a lesson's .py: rewrite the .ipynb and
    notebooks/student/
    python notebooks/sync.py --check  # exit 1 if a notebook or a student copy is out of sync

The lessons are jupytext percent-format scripts (``NN_name.py``, the source under version control)
paired with their notebooks (``NN_name.ipynb``, formats ``ipynb,py:percent``). With jupytext
installed, JupyterLab saves both files of a pair; ``jupytext --sync notebooks/0*.py`` also works.
This script does the same from the .py side, without outputs and with fixed cell ids (``nbNN-MM``)
so that an unchanged lesson gives a byte-identical notebook, and then writes the student copies
(``minispdf.assignments.make_student_copies``). Each lesson's run-time line (the italic
"*Runs in about ...*" paragraph of its first cell) is written here from
``results/lesson_times.json``, which ``python notebooks/references.py --times`` measures: edit
the measurement, not the line.
"""

from __future__ import annotations

import json
import re
import sys
import textwrap
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # the minispdf next to this folder, not another installed copy


def lessons(folder: Path = HERE) -> list[Path]:
    return sorted(folder.glob("[0-9][0-9]_*.py"))


# ---- the run-time line of each lesson's header, from results/lesson_times.json (one place)

TIMES = HERE.parent / "results" / "lesson_times.json"
# the header's italic run-time paragraph
HEADER = re.compile(r"^# \*Runs in about .*?\*$", re.M | re.S)


def header_line(stem: str, times: dict | None) -> str:
    """The run-time paragraph of lesson ``stem``: the wall and CPU time that
    ``references.py --times`` measured, or a line saying that they are still to be measured."""
    t = (times or {}).get("lessons", {}).get(stem)
    if t:
        when = (f"measured {times['measured']} on {times['machine'].split(',')[0]}, "
                f"{times['machine'].split(',')[1].strip()}")
        text = (f"Runs in about {t['wall_s'] / 60:.1f} min of wall-clock time "
                f"({t['cpu_s'] / 60:.1f} min of CPU time) at "
                f"the default scale, executed as a student runs it: figures drawn, one "
                f"thread ({when}; "
                "[how](../results/lesson_times.md)).")
    else:
        text = ("Runs in about ? min of wall-clock time (? min of CPU time) at the default scale: "
                "not measured yet "
                "as a student runs it (`python notebooks/references.py --times`, then `python "
                "notebooks/sync.py`).")
    text += (f" [Reference run with outputs](reference/{stem}.html). `MINISPDF_SCALE=smoke` runs "
             f"it in seconds, "
             "`gpu` at a larger scale.")
    return "# *" + "\n# ".join(textwrap.wrap(text, 96, break_on_hyphens=False)) + "*"


def with_header(source: Path, times: dict | None) -> str:
    """The lesson source with its run-time paragraph written from ``times``."""
    text = source.read_text(encoding="utf-8")
    if not HEADER.search(text):
        raise SystemExit(f"{source.name} has no '# *Runs in about ...*' paragraph in its first "
                         f"cell: put one back")
    return HEADER.sub(lambda _: header_line(source.stem, times), text, count=1)


def read_times() -> dict | None:
    return json.loads(TIMES.read_text(encoding="utf-8")) if TIMES.exists() else None


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

    problems, times = [], read_times()
    for source in lessons(folder):
        if source.read_text(encoding="utf-8") != with_header(source, times):
            problems.append(f"{source} states other run times than {TIMES.name}")
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
    times = read_times()
    for source in lessons():
        text = with_header(source, times)
        if text != source.read_text(encoding="utf-8"):
            source.write_text(text, encoding="utf-8")
            print(f"wrote {source.relative_to(HERE.parent)} (run times from {TIMES.name})")
        source.with_suffix(".ipynb").write_text(notebook_text(source), encoding="utf-8")
        print(f"wrote {source.with_suffix('.ipynb').relative_to(HERE.parent)}")
    for path in make_student_copies(str(HERE), str(HERE / "student")):
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
