"""The release manifest: what a class is graded on, decided when the bundle is handed out.

``minispdf assign release`` writes ``manifest.json`` into the bundle: each released exercise's
id, the notebook it is in, its points and the sha256 of its check's source. The grader counts
points from it, not from what a submission holds: each released exercise scores once per
student (from the notebook the manifest names, else the first that holds it); a missing or
deleted exercise scores 0 and says so; duplicates, extra notebooks and exercises that were not
released never add points and are named in the notes; the maximum is always the manifest's total.
Without a manifest the grader builds one from the kit's own exercise table, for the lessons that
any submission in the class holds an exercise of.
"""

from __future__ import annotations

import hashlib
import inspect
from pathlib import Path

from ..errors import MiniSPDFError
from ..fileio import read_json, write_json
from .exercises import EXERCISES

FILE = "manifest.json"
FORMAT = 1


def checks_sha256(name: str) -> str:
    """The sha256 of the source of exercise ``name``'s (public) checks."""
    return hashlib.sha256(inspect.getsource(EXERCISES[name].checks).encode()).hexdigest()


def build(exercises: list[tuple[str, str]]) -> dict:
    """The manifest of ``exercises``: ``(notebook file, exercise id)`` pairs, each id once."""
    entries, seen = [], set()
    for notebook, name in exercises:
        if name in EXERCISES and name not in seen:
            seen.add(name)
            entries.append(dict(id=name, notebook=notebook, points=EXERCISES[name].points,
                                checks_sha256=checks_sha256(name)))
    return dict(format=FORMAT, exercises=entries, total=sum(e["points"] for e in entries))


def from_kit(names) -> dict:
    """A manifest from the kit's table: every exercise of each lesson that holds one of
    ``names``."""
    lessons = {EXERCISES[n].notebook for n in names if n in EXERCISES}
    return build([(f"{ex.notebook}.ipynb", ex.name) for ex in EXERCISES.values()
                  if ex.notebook in lessons])


def write(folder, manifest: dict) -> str:
    path = str(Path(folder) / FILE)
    write_json(path, manifest)
    return path


def read(path) -> dict:
    """A manifest from ``path``; one line of error if it is not one this kit wrote."""
    data = read_json(str(path))
    if data is None:
        raise MiniSPDFError(f"cannot read the manifest {path}: pass the manifest.json that "
                            f"`minispdf assign "
                            "release` wrote into the bundle")
    entries = data.get("exercises") if isinstance(data, dict) else None
    ok = isinstance(entries, list) and all(
        isinstance(e, dict) and e.get("id") in EXERCISES and isinstance(e.get("notebook"), str)
        and type(e.get("points")) is int and e["points"] >= 0 for e in entries)
    if not ok or len({e["id"] for e in entries}) != len(entries):
        raise MiniSPDFError(f"{path} is not a manifest of this kit's exercises (each once, with "
                            f"its notebook and "
                            "points): write it again with `minispdf assign release`")
    return dict(format=data.get("format", FORMAT), exercises=entries,
                total=sum(e["points"] for e in entries))


def drift(manifest: dict) -> dict[str, str]:
    """Exercises whose checks differ from the released ones (a kit updated, or tampered with,
    since)."""
    return {e["id"]: "its checks differ from the released ones (the kit changed since the release)"
            for e in manifest["exercises"]
            if e.get("checks_sha256") not in (None, checks_sha256(e["id"]))}


def assign(manifest: dict, notebooks: list[tuple[Path, object]]) -> tuple[dict, list[str]]:
    """Which cells of one student's ``notebooks`` (``(path, cells or why unreadable)``) are graded
    for each released exercise: ``({path: {id: cells}}, notes)``. The notes name what does not
    count."""
    released = {e["id"]: e for e in manifest["exercises"]}
    readable = [(p, c) for p, c in notebooks if isinstance(c, dict)]
    notes = [f"not graded: {c}" for _, c in notebooks if isinstance(c, str)]
    chosen: dict[Path, dict] = {}
    for name, entry in released.items():
        holders = sorted((p for p, c in readable if name in c),
                         key=lambda p: (p.name != entry["notebook"], str(p)))
        if holders:
            chosen.setdefault(holders[0], {})[name] = dict(readable)[holders[0]][name]
        notes += [f"{name} again in {p.name}: not counted (each exercise scores once)"
                  for p in holders[1:]]
    for path, cells in readable:
        notes += [f"{name} in {path.name} was not released: not counted" for name in cells
                  if name not in released]
        if not cells:
            notes.append(f"no exercises in {path.name}")
        elif path not in chosen:
            notes.append(f"extra notebook {path.name}: nothing in it counted")
    return chosen, notes


def missing(entry: dict) -> dict:
    """The result of a released exercise the submission does not hold."""
    return dict(name=entry["id"], passed=False, points=0, max_points=entry["points"], notebook="",
                checks=[dict(check="submitted", passed=False,
                             message=f"missing: no cell of this exercise in the submission "
                                     f"(expected in "
                                     f"{entry['notebook']}; deleted?)")])


def score(manifest: dict, graded: dict[str, dict]) -> dict:
    """Each released exercise's result (``graded`` where the submission held it), with the
    manifest's points, and the totals: points, max_points (the manifest's), passed, total."""
    exercises = {}
    for entry in manifest["exercises"]:
        ex = graded.get(entry["id"]) or missing(entry)
        exercises[entry["id"]] = {**ex, "max_points": entry["points"],
                                  "points": entry["points"] if ex["passed"] else 0}
    passed = sum(e["passed"] for e in exercises.values())
    return dict(exercises=exercises, passed=passed, total=len(exercises),
                points=sum(e["points"] for e in exercises.values()), max_points=manifest["total"],
                all_passed=bool(exercises) and passed == len(exercises))
