"""What grading writes: the summary, and the gradebook as a plain CSV or a Canvas/Moodle import.

Every cell that a spreadsheet would read as a formula (text starting with ``=``, ``+``, ``-``,
``@``, a tab or a carriage return) gets a leading apostrophe, whatever it came from: a student's
name (a folder name), an exercise name from a notebook's metadata, feedback quoting their code.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

from ..errors import MiniSPDFError
from ..fileio import atomic_write_bytes

CSV_COLUMNS = ("student", "exercise", "points", "max_points", "feedback", "notebook", "notes")
FORMATS = ("csv", "canvas", "moodle")
ASSIGNMENT = "SPDF exercises"  # the gradebook column of Canvas and Moodle imports
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def cell(value):
    """``value`` as a spreadsheet shows it, never as a formula."""
    if isinstance(value, str) and value.startswith(FORMULA_STARTS):
        return "'" + value
    return value


def feedback(ex: dict) -> str:
    """One line for a spreadsheet: "pass", or what failed; then any warnings."""
    parts = (["pass"] if ex["passed"]
             else [f"{c['check']}: {c['message']}" for c in ex["checks"] if not c["passed"]])
    parts += [f"warning: {w}" for w in ex.get("warnings", [])]
    return " | ".join(" ".join(p.split()) for p in parts)


def _notes(r: dict, *more: str) -> str:
    return " | ".join(n for n in [r.get("isolation", ""), *r.get("notes", []), *more] if n)


def csv_rows(results: list[dict]) -> list[dict]:
    """One row per student and released exercise (one row saying why for a student with none)."""
    rows = []
    for r in results:
        base = dict(student=r["student"], notebook="")
        if not r["exercises"]:
            rows.append({**base, "exercise": "", "points": 0, "max_points": r["max_points"],
                         "feedback": "; ".join(r.get("notes", [])) or "no exercises",
                         "notes": _notes(r)})
        for name, ex in r["exercises"].items():
            rows.append({**base, "exercise": name, "points": ex["points"],
                         "max_points": ex["max_points"],
                         "feedback": feedback(ex), "notebook": ex.get("notebook", ""),
                         "notes": _notes(r, *([f"warning: {name}: {d}"]
                                              if (d := r.get("drift", {}).get(name)) else []))})
    return rows


def _table(results: list[dict], form: str) -> tuple[list[str], list[list]]:
    if form == "csv":
        rows = csv_rows(results)
        return list(CSV_COLUMNS), [[row[c] for c in CSV_COLUMNS] for row in rows]
    total = max((r["max_points"] for r in results), default=0)
    if form == "canvas":  # Canvas's gradebook import: students matched by SIS Login ID
        header = ["Student", "ID", "SIS User ID", "SIS Login ID", "Section",
                  f"{ASSIGNMENT} ({total} points)"]
        return header, [["Points Possible", "", "", "", "", total]] + [
            [r["student"], "", "", r["student"], "", r["points"]] for r in results]
    # Moodle's grade import: map Username
    header = ["Username", ASSIGNMENT, f"{ASSIGNMENT} (feedback)"]
    return header, [[r["student"], r["points"],
                     f"{r['points']}/{r['max_points']} points; " + "; ".join(
        f"{name}: {feedback(ex)}" for name, ex in r["exercises"].items())] for r in results]


def write(path: str, results: list[dict], form: str = "csv") -> int:
    """Write the gradebook in ``form`` (csv, canvas, moodle) to ``path`` atomically; returns its
    rows."""
    if form not in FORMATS:
        raise MiniSPDFError(f"--format {form}: choose one of {', '.join(FORMATS)}")
    if Path(path).is_dir():
        raise MiniSPDFError(f"--csv {path} is a folder: pass a file name such as grades.csv")
    header, rows = _table(results, form)
    text = io.StringIO()
    writer = csv.writer(text)
    writer.writerow([cell(h) for h in header])
    writer.writerows([[cell(v) for v in row] for row in rows])
    atomic_write_bytes(path, lambda f: f.write(text.getvalue().encode("utf-8")))
    return len(rows)


def summary(results: list[dict]) -> str:
    """Per student the released exercises and the notes; with more than one student, a points
    table."""
    from .exercises import format_result

    # what confined the class, e.g. "confinement user: Landlock ABI 7" (the limits, in the notes,
    # vary)
    lines = sorted({r["isolation"].split(" (")[0] for r in results if r.get("isolation")})
    for r in results:
        lines.append(f"{r['student']}: {r['passed']}/{r['total']} exercises pass, "
                     f"{r['points']}/{r['max_points']} "
                     f"points "
                     f"({', '.join(Path(n).name for n in r['notebooks']) or 'no notebooks'})")
        lines += [f"  note: {n}" for n in r.get("notes", [])]
        lines += ["  " + format_result(e).replace("\n", "\n  ") for e in r["exercises"].values()]
    if len(results) > 1:
        width = max(len(s) for s in [*(r["student"] for r in results), "student"])
        lines += ["", f"{'student':<{width}}  points"]
        lines += [f"{r['student']:<{width}}  {r['points']}/{r['max_points']}" for r in results]
    return "\n".join(lines)
