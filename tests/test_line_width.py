"""Lines fit in 100 characters: every tracked .py file (tests and the lessons' notebooks/*.py
sources included) has no line longer than LIMIT, except the few in ALLOWED, each with its reason.

A long line names itself as file:line, so the fix is one click away. What cannot be wrapped
without changing what the code does (a line inside a string that is data, a markdown table row or
a display formula of a lesson) goes into ALLOWED with why; an entry that no longer matches a long
line fails too, so the list stays short and true.
"""

import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LIMIT = 100

# (file, how the long line starts once stripped): why it may stay long
ALLOWED = {
    ("minispdf/schedules.py", "=========== ====="):
        "the rule lines of a reST table in the docstring: their width is the table's",
    ("notebooks/02_flop_accounting.py", "# | attention scores"):
        "a markdown table row: a row cannot wrap",
    ("tests/test_ddp.py", "cfg = TrainConfig(max_steps=5"):
        "inside the source of the script the test runs (a string)",
}


def tracked_py_files() -> list[str]:
    try:
        out = subprocess.run(["git", "ls-files", "*.py"], cwd=ROOT, capture_output=True,
                             text=True, check=True, timeout=30).stdout.split()
    except (OSError, subprocess.SubprocessError):
        out = []
    if out:
        return out
    skip = {".git", ".venv", "venv", "build", "dist", "runs", "__pycache__"}
    return sorted(str(p.relative_to(ROOT)) for p in ROOT.rglob("*.py")
                  if not skip.intersection(p.relative_to(ROOT).parts))


def long_lines(rel: str, text: str, limit: int = LIMIT) -> list[tuple[str, int, int, str]]:
    """(file, line number, length, stripped line) of each line longer than ``limit`` characters."""
    return [(rel, i, len(line), line.strip()) for i, line in enumerate(text.splitlines(), 1)
            if len(line) > limit]


def allowed_by(rel: str, stripped: str):
    return next((key for key in ALLOWED if key[0] == rel and stripped.startswith(key[1])), None)


def test_no_line_is_longer_than_the_limit():
    bad, used = [], set()
    for rel in tracked_py_files():
        path = ROOT / rel
        if not path.is_file():
            continue
        for _, n, length, stripped in long_lines(rel, path.read_text(encoding="utf-8")):
            key = allowed_by(rel, stripped)
            if key is None:
                bad.append(f"{rel}:{n}: {length} characters: {stripped[:60]}")
            else:
                used.add(key)
    assert not bad, f"lines over {LIMIT} characters (wrap them):\n" + "\n".join(bad)
    stale = [f"{f}: {start}" for f, start in ALLOWED if (f, start) not in used]
    assert not stale, "ALLOWED entries that match no long line (remove them):\n" + "\n".join(stale)


def test_the_check_finds_a_long_line_and_names_it():
    text = "x = 1\n" + "y = '" + "a" * LIMIT + "'\n" + "z = 2\n"
    line = text.splitlines()[1]
    assert long_lines("m.py", text) == [("m.py", 2, len(line), line)]
    assert long_lines("m.py", "a" * LIMIT + "\n") == []
    assert allowed_by("m.py", "y = 'aaa") is None
