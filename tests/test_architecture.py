"""The house rules of minispdf/: floors that import only downwards, no import circles, modules a
reader can hold (<= 450 lines) and functions that fit on a screen (<= 60 lines).

Every import counts, those inside functions too: a late import still ties two modules together.
A new module goes on the floor of what it is for; if this test says it imports upwards, either
it is on the wrong floor or the import is.
"""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "minispdf"

# lowest first; a module may import its own floor and those below
FLOORS = [
    ("ground", {"errors", "fileio", "config", "hub", "tokenizers", "canvas"}),
    ("model, masks, tasks", {"model", "sparsity", "metrics", "tasks"}),
    ("what the loop reads and counts", {"masks", "flops", "schedules", "checkpoint", "callbacks", "batches", "data",
                                        "decoding"}),
    ("the loop and the scores", {"train", "evaluate", "plots"}),
    ("the recipe and the bench", {"spdf", "bench"}),
    ("the study", {"study"}),
    ("the demo and course mode", {"demo", "assignments"}),
    ("the commands", {"commands", "cli", "__main__", "__init__"}),
    ("what tries the commands", {"badinput"}),
]
FLOOR = {name: i for i, (_, names) in enumerate(FLOORS) for name in names}


def _modules() -> dict[str, Path]:
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE).with_suffix("").parts
        out[".".join(parts[:-1] if parts[-1] == "__init__" and len(parts) > 1 else parts)] = path
    return out


def _imports(name: str, path: Path, modules: dict) -> set[str]:
    """The minispdf modules that ``name`` imports (``a.b`` for ``from minispdf.a import b`` if b is one)."""
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1] + ([node.module] if node.module else [])
            elif (node.module or "").startswith("minispdf"):
                base = node.module.split(".")[1:]
            else:
                continue
            target = ".".join(base)
            found |= {t for t in [target] + [f"{target}.{a.name}".strip(".") for a in node.names] if t in modules}
        elif isinstance(node, ast.Import):
            found |= {a.name.split(".", 1)[1] for a in node.names if a.name.startswith("minispdf.")
                      and a.name.split(".", 1)[1] in modules}
    return {t for t in found if t != name and not name.startswith(t + ".")}  # not itself, not its own package


def _floor(module: str) -> int:
    top = module.split(".")[0] or "__init__"
    assert top in FLOOR, f"minispdf/{top}: put it on a floor in FLOORS"
    return FLOOR[top]


def test_every_import_goes_to_the_same_floor_or_below():
    modules = _modules()
    upward = [f"{m or '__init__'} ({FLOORS[_floor(m)][0]}) imports {t} ({FLOORS[_floor(t)][0]})"
              for m, path in modules.items() for t in sorted(_imports(m, path, modules)) if _floor(t) > _floor(m)]
    assert not upward, "\n".join(upward)


def test_no_import_circles():
    modules = _modules()
    graph = {m: _imports(m, p, modules) for m, p in modules.items()}
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(m, path):
        state[m] = 1
        for t in sorted(graph[m]):
            if state.get(t) == 1:
                pytest.fail("import circle: " + " -> ".join(path[path.index(t):] + [t]))
            if t not in state:
                visit(t, path + [t])
        state[m] = 2

    for m in modules:
        if m not in state:
            visit(m, [m])


def test_modules_and_functions_are_short():
    long_modules, long_functions = [], []
    for name, path in _modules().items():
        text = path.read_text()
        if len(text.splitlines()) > 450:
            long_modules.append(f"{path.relative_to(PACKAGE)}: {len(text.splitlines())} lines")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.end_lineno - node.lineno >= 60:
                long_functions.append(f"{name}.{node.name}: {node.end_lineno - node.lineno + 1} lines")
    assert not long_modules, "split by concern: " + ", ".join(long_modules)
    assert not long_functions, "split into functions that do one job each: " + ", ".join(long_functions)
