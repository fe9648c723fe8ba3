"""Grading: one notebook or a folder of submissions, with time limits, points and a CSV.

Only the exercise cells run, each exercise in a fresh namespace inside a worker process (see
:mod:`.worker`), so an endless loop costs its time limit and nothing else. Students are named by
where their notebooks are: ``DIR/alice.ipynb`` is alice's, and so is every notebook under
``DIR/alice/`` (one folder per student, as learning systems export them). A class is graded
against the release's manifest (:mod:`.manifest`), and its gradebook written by :mod:`.gradebook`.
"""

from __future__ import annotations

import builtins
import dataclasses
import json
import os
import secrets
import select
import symtable
import time
from pathlib import Path

from ..errors import MiniSPDFError, one_line
from . import borrowing, manifest, reaping, sandbox
from .exercises import BORROW_CHECK, EXERCISES, result, run_checks, use_hidden
from .notebooks import exercise_name, read_notebook
from .replay import MAX_TEXT, Malformed, Replayer
from .worker import PREAMBLE_NAMES, _strip_magics

DEFAULT_TIMEOUT = 60.0  # seconds per exercise: the checks take about a second
START_TIMEOUT = 300.0  # a worker's first start imports torch (only with the spawn fallback)
MAX_RECORD = 64 << 20  # bytes of one exercise's record from the worker


# ---- the static check: names an exercise cell takes from elsewhere


def _tables(table):
    yield table
    for child in table.get_children():
        yield from _tables(child)


def outside_names(source: str) -> list[str]:
    """Global names the cell reads but neither defines nor imports, that are not builtins and not
    what the grader imports first: they come from other cells, which the grader does not run."""
    try:
        top = symtable.symtable(_strip_magics(source), "<cell>", "exec")
    except SyntaxError:
        return []  # the worker reports it
    tables = list(_tables(top))
    defined = {s.get_name() for s in top.get_symbols()
               if s.is_assigned() or s.is_imported() or s.is_namespace()}
    defined |= {s.get_name() for t in tables for s in t.get_symbols()
                if s.is_declared_global() and s.is_assigned()}
    used = {s.get_name() for t in tables for s in t.get_symbols()
            if s.is_referenced() and s.is_global()}
    return sorted(used - defined - set(dir(builtins)) - set(PREAMBLE_NAMES))


def _outside_warning(ex_name: str, cells) -> list[str]:
    names = outside_names("\n".join(source for _, source in cells))
    if not names:
        return []
    return [f"{EXERCISES[ex_name].function if ex_name in EXERCISES else ex_name} uses "
            f"{', '.join(names)}, "
            "defined outside its cell: the grader runs only the exercise cells (after `import "
            "math, torch, "
            "numpy as np`), so define or import them in this cell"]


# ---- running the exercises of one notebook in a confined worker, judging them here


def _context():
    import multiprocessing as mp

    if "forkserver" in mp.get_all_start_methods():
        ctx = mp.get_context("forkserver")
        # torch and the checks, imported once
        ctx.set_forkserver_preload(["minispdf.assignments.preload"])
        from multiprocessing import forkserver

        # now, so that the reaper counts it among the grader's own children
        forkserver.ensure_running()
        return ctx
    return mp.get_context("spawn")


def _failed(name: str, check: str, message: str) -> dict:
    points = EXERCISES[name].points if name in EXERCISES else 0
    return dict(name=name, passed=False, points=0, max_points=points,
                checks=[dict(check=check, passed=False, message=message)])


class _Channel:
    """Lines from the worker's end of a pipe, read with a deadline (a worker that writes half a
    line and stops cannot hang the grader) and a size limit."""

    def __init__(self, fd: int, sentinel: int):
        self.fd, self.sentinel, self.buf, self.eof = fd, sentinel, b"", False

    def line(self, timeout: float):
        """The next line; "timeout" when none came in time; "died" when the worker ended first;
        "too long" past :data:`MAX_RECORD` bytes."""
        deadline = time.monotonic() + timeout
        while b"\n" not in self.buf:
            if len(self.buf) > MAX_RECORD:
                return "too long"
            if self.eof:
                return "died"
            left = deadline - time.monotonic()
            if left <= 0:
                return "timeout"
            ready, _, _ = select.select([self.fd, self.sentinel], [], [], left)
            if self.fd in ready:
                chunk = os.read(self.fd, 1 << 20)
                self.buf += chunk
                self.eof = not chunk
            elif ready:  # the worker ended: take what it wrote, then stop
                while (select.select([self.fd], [], [], 0)[0]
                       and (chunk := os.read(self.fd, 1 << 20))):
                    self.buf += chunk
                self.eof = True
        line, _, self.buf = self.buf.partition(b"\n")
        return line


def _parse(line: bytes, rid: str, name: str):
    """The worker's record for request ``rid``, or None if it is not one (any other line:
    forged)."""
    try:
        msg = json.loads(line)
    except (ValueError, RecursionError):
        return None
    if not isinstance(msg, dict) or msg.get("id") != rid or msg.get("name") != name:
        return None
    return msg


def judge(name: str, msg: dict) -> dict:
    """Pass or fail and the points of exercise ``name``, decided here by the grader's checks on the
    worker's record of the student's function (see :mod:`.replay`)."""
    if "cell_error" in msg:
        error = msg["cell_error"]
        return _failed(name, "cell runs",
                       f"the exercise cell does not run: {error if isinstance(error, str) else '?'}"
                                          [:MAX_TEXT])
    if msg.get("defined") is not True:
        return result(name, run_checks(name, None))
    try:
        replayer = Replayer(msg.get("checks"))
    except Malformed as e:
        return _failed(name, "grader's record", str(e))
    return result(name, run_checks(name, replayer, before=replayer.start))


def _run_isolated(jobs: list[tuple[str, list]], timeout: float, unconfined: bool = False,
                  hidden=None) -> tuple[dict[str, dict], str]:
    """Results of ``jobs`` (``(name, cells)``), a worker per notebook, a new one after a time-out or
    a malformed record; and what confined the workers (for the CSV's notes). Nothing the worker
    started outlives it (:mod:`.reaping`)."""
    box = sandbox.prepare(timeout * len(jobs) + 10, unconfined=unconfined)
    ctx, results, pending = _context(), {}, list(jobs)
    reaper = reaping.Reaper()
    try:
        while pending:
            requests = [(secrets.token_hex(8), name, cells) for name, cells in pending]
            box_now = dataclasses.replace(box, cpu=int(timeout * len(pending)) + 10)
            proc, conn, channel = _start_worker(ctx, requests, box_now, hidden)
            try:
                hello = _parse_hello(channel.line(START_TIMEOUT))
                if hello is not True:
                    for name, _ in pending:
                        results[name] = _failed(name, "grader runs", hello)
                    break
                _collect(channel, proc, requests, pending, results, timeout)
            finally:
                sandbox.stop(box, proc.pid)
                reaper.end(proc.pid, own_child=ctx.get_start_method() != "forkserver")
                if proc.is_alive():
                    proc.kill()
                proc.join()
                conn.close()
    finally:
        reaper.close()
        sandbox.clean_up(box)
    return results, box.describe()


def _start_worker(ctx, requests: list, box, hidden):
    """A worker process serving ``requests`` in ``box``: ``(process, our end of its pipe, the
    channel that reads it)``."""
    from .worker import serve

    conn, child_conn = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=serve, args=(child_conn, requests, box, hidden), daemon=True)
    proc.start()
    child_conn.close()
    return proc, conn, _Channel(conn.fileno(), proc.sentinel)


def _collect(channel, proc, requests: list, pending: list, results: dict, timeout: float) -> None:
    """Read the worker's record of each request into ``results``, taking it off ``pending``; stop
    at the first one that is not a record (a time-out, a death, a malformed line): this worker is
    then gone, stuck or not to be trusted, and a fresh one takes the rest."""
    for rid, name, _ in requests:
        line = channel.line(timeout)
        msg = _parse(line, rid, name) if isinstance(line, bytes) else None
        if msg is None:
            results[name] = _no_record(name, line, proc, timeout)
        else:
            results[name] = judge(name, msg)
        pending.pop(0)
        if msg is None:
            break


def _no_record(name: str, line, proc, timeout: float) -> dict:
    """The failed check of an exercise whose worker sent no record: it timed out, died or sent a
    malformed line."""
    if line == "timeout":
        return _failed(name, f"finishes within {timeout:g} s",
                       f"timed out after {timeout:g} s: an endless loop, or far too slow? "
                       "Grading stopped this exercise and went on")
    if line == "died":
        proc.join(1)
        return _failed(name, "grader runs",
                       f"the exercise ended the grader's process (exit code {proc.exitcode}): "
                       "sys.exit, a crash, or a limit (memory, CPU time)?")
    return _failed(name, "grader's record",
                   "the grader's worker sent a malformed record: did the exercise cell write to "
                   "the grader's channel?")


def _parse_hello(line):
    if line == "timeout":
        return "the grader's worker process did not start"
    if isinstance(line, bytes):
        try:
            msg = json.loads(line)
        except ValueError:
            msg = None
        if msg == {"ready": True}:
            return True
        if isinstance(msg, dict) and isinstance(msg.get("unconfined"), str):
            return (f"the grader could not confine its worker, so it ran nothing: "
                    f"{msg['unconfined']}"[:MAX_TEXT])
    return "the grader's worker process did not start"


def _exercise_cells(nb, label: str) -> dict[str, list[tuple[str, str]]]:
    cells: dict[str, list] = {}
    for i, cell in enumerate(nb.cells):
        name = exercise_name(cell)
        if name:
            source = cell.get("source")
            if not isinstance(source, str):
                raise MiniSPDFError(f"cell {i} of {label} ({name}) has no text source: save "
                                    f"the notebook "
                                    "with Jupyter again")
            cells.setdefault(name, []).append((f"<{label} cell {i} ({name})>", source))
    return cells


def _load(path: Path) -> dict[str, list[tuple[str, str]]]:
    if not path.is_file():
        raise MiniSPDFError(f"no notebook at {path}: pass the .ipynb to grade")
    return _exercise_cells(read_notebook(path), path.name)


def grade(notebook_path, timeout: float = DEFAULT_TIMEOUT, cells=None, unconfined: bool = False,
          hidden=None) -> dict:
    """Run the exercise cells of a notebook and check each exercise; nothing else is executed.

    Returns ``{"notebook", "exercises": {name: {"passed", "points", "max_points", "checks",
    "warnings"}}, "passed", "total", "points", "max_points", "all_passed", "isolation"}``, plus
    ``"note"`` when the notebook has no exercises. An exercise whose cell does not run, crashes or
    runs past ``timeout`` seconds fails with a message saying so. ``cells``: the notebook's
    exercise cells, read before (:func:`grade_submissions` reads every notebook first).
    ``unconfined``: run student code even where this machine cannot confine it (see
    :func:`.sandbox.require`); ``hidden``: a file of hidden checks (:func:`.exercises.use_hidden`).
    """
    path = Path(notebook_path)
    if not timeout > 0:
        raise MiniSPDFError(f"--timeout {timeout} must be a positive number of seconds")
    use_hidden(hidden)
    cells = _load(path) if cells is None else cells
    refused = {name: _failed(name, BORROW_CHECK, borrowing.refusal(EXERCISES[name].function, uses))
               for name, c in cells.items() if name in EXERCISES
               and (uses := borrowing.static_uses("\n".join(_strip_magics(source)
                                                            for _, source in c)))}
    known = [(name, c) for name, c in cells.items() if name in EXERCISES and name not in refused]
    results, isolation = _run_isolated(known, timeout, unconfined, hidden) if known else ({}, "")
    results.update(refused)  # decided here, from the source: the student's code never ran
    exercises = {}
    for name, c in cells.items():
        r = results.get(name) or _failed(name, "known exercise", f"unknown exercise {name!r}")
        exercises[name] = {**r, "warnings": _outside_warning(name, c)}
    passed = sum(e["passed"] for e in exercises.values())
    out = dict(notebook=str(path), exercises=exercises, passed=passed, total=len(exercises),
               points=sum(e["points"] for e in exercises.values()),
               max_points=sum(e["max_points"] for e in exercises.values()),
               all_passed=passed == len(exercises),
               isolation=isolation)
    if not exercises:
        out["note"] = f"no exercises in {path.name}"
    return out


# ---- submissions: students, their notebooks, their points from the release


def _notebooks_under(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*.ipynb")
                  if not any(part.startswith(".") for part in p.relative_to(folder).parts))


def submissions(paths) -> list[tuple[str, Path, bool]]:
    """``(student, notebook, named)`` for each path: a notebook is its stem's; in a folder, each
    ``*.ipynb`` is its stem's and each subfolder's notebooks are the subfolder's. ``named``: the
    user named this file (a problem with it is an error, not a row of the CSV)."""
    found = []
    for arg in map(Path, paths):
        if arg.is_dir():
            inside = [(p.stem, p, False) for p in sorted(arg.glob("*.ipynb"))]
            inside += [(sub.name, p, False) for sub in sorted(arg.iterdir())
                       if sub.is_dir() and not sub.name.startswith(".")
                       for p in _notebooks_under(sub)]
            if not inside:
                raise MiniSPDFError(f"no notebooks in {arg}: put each student's .ipynb (or "
                                    f"a folder per "
                                    "student) there")
            found += inside
        elif arg.is_file():
            found.append((arg.stem, arg, True))
        else:
            raise MiniSPDFError(
                f"no notebook or folder at {arg}: pass .ipynb files or a folder of submissions")
    return found


def _read_all(found) -> list[tuple[str, Path, object]]:
    """``(student, path, cells or why it cannot be graded)``: every notebook, read before any
    student code runs; a notebook the user named that cannot be read is an error."""
    loaded = []
    for student, path, named in found:
        try:
            loaded.append((student, path, _load(path)))
        except MiniSPDFError as e:
            if named:
                raise
            loaded.append((student, path, str(e)))
        except Exception as e:  # a notebook shaped in a way nothing here expects
            if named:
                raise MiniSPDFError(
                    f"{path} cannot be graded ({type(e).__name__}: {one_line(e)})") from None
            loaded.append((student, path,
                           f"{path.name} cannot be graded ({type(e).__name__}: {one_line(e)})"))
    return loaded


def _grade_student(student: str, notebooks, release: dict, timeout: float, unconfined: bool,
                   hidden) -> dict:
    """One student's result against the manifest ``release`` (see :mod:`.manifest`)."""
    chosen, notes = manifest.assign(release, notebooks)
    graded, isolation = {}, ""
    for path, cells in chosen.items():
        try:
            r = grade(path, timeout, cells=cells, unconfined=unconfined, hidden=hidden)
        except Exception as e:
            notes.append(
                f"not graded: the grader failed on {path.name} ({type(e).__name__}: {one_line(e)})")
            continue
        isolation = r["isolation"] or isolation
        graded.update({name: {**ex, "notebook": str(path)} for name, ex in r["exercises"].items()})
    return dict(student=student, notebooks=[str(p) for p, _ in notebooks],
                **manifest.score(release, graded),
                isolation=isolation, notes=notes, drift=manifest.drift(release))


def grade_submissions(paths, timeout: float = DEFAULT_TIMEOUT, unconfined: bool = False,
                      release=None,
                      hidden=None) -> list[dict]:
    """Every student's result under ``paths`` against the manifest ``release`` (default: built from
    the kit's table for the lessons the class holds exercises of, see :mod:`.manifest`):
    ``{"student",
    "notebooks", "exercises", "passed", "total", "points", "max_points", "all_passed", "isolation",
    "notes", "drift"}``. ``hidden``: a file of hidden checks (:func:`.exercises.use_hidden`).

    Every notebook is read before any student code runs (a cell that rewrites a classmate's file
    on disk does not change what is graded), and a notebook that cannot be read or graded is a
    note saying why: one submission never stops the rest of the class being graded. Where this
    machine cannot confine student code, nothing runs unless ``unconfined`` (one line of error).
    """
    found = submissions(paths)
    sandbox.require(unconfined)
    use_hidden(hidden)  # here too: a file that does not load is an error before anything runs
    loaded = _read_all(found)
    if release is None:
        release = manifest.from_kit({name for _, _, cells in loaded if isinstance(cells, dict)
                                     for name in cells})
    students: dict[str, list] = {}
    for student, path, cells in loaded:
        students.setdefault(student, []).append((path, cells))
    return [_grade_student(student, notebooks, release, timeout, unconfined, hidden)
            for student, notebooks in students.items()]
