"""The house rules of minispdf/: floors that import only downwards, no import circles, modules a
reader can hold (<= 450 lines) and functions that fit on a screen (<= 60 lines); the lessons use
the public API only.

Every import counts, those inside functions too: a late import still ties two modules together.
Importing ``minispdf.tasks.core`` runs ``tasks/__init__.py`` first, so it counts as an import of
the package too (except from inside that package, whose ``__init__`` is already running). A new
module goes on the floor of what it is for, inside its package as well; if this test says it
imports upwards, either it is on the wrong floor or the import is.
"""

import ast
import importlib
import functools
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "minispdf"

# lowest first; a module may import its own floor and those below
FLOORS = [
    ("ground", {"errors", "fileio", "settings", "config", "hub", "tokenizers", "canvas"}),
    ("model, masks, tasks", {"model", "sparsity", "metrics", "tasks"}),
    ("what the loop reads and counts",
     {"masks", "flops", "schedules", "checkpoint", "callbacks", "batches", "data",
                                        "decoding", "run_folder", "moves"}),
    ("the loop and the scores", {"devices", "train", "evaluate", "plots", "diagrams"}),
    ("the recipe and the bench", {"spdf", "bench"}),
    ("the study", {"study"}),
    ("the demo and course mode", {"demo", "assignments", "lessons"}),
    ("the commands", {"commands", "cli", "__main__", "__init__"}),
    ("what tries the commands", {"badinput"}),
]
# the same inside each package, lowest first; the package's own __init__ is above them all unless
# named (commands/__init__.py holds what every command prints with, and imports none of them)
INNER_FLOORS = {
    "tasks": [("the task", {"core"}), ("formats", {"tables", "triples", "finetune"}),
              ("sources", {"builtin", "files", "hub_copies"}), ("the spec", {"spec"})],
    "bench": [("settings and shapes", {"bench_config", "shapes", "vs_nanogpt"}),
              ("the step", {"step", "summary"}),
              ("profiles", {"profile"}), ("kernels", {"kernels"})],
    "study": [("grids, statistics, task files",
               {"grids", "stats", "grid_tasks", "budgets", "real_tasks"}),
              ("jobs", {"plan", "reproduce_config"}),
              ("claims", {"claims", "declaration", "power"}), ("report and runner",
                                                               {"report", "runner", "frontier"}),
              ("outputs", {"readme", "verify", "outputs"}), ("entry", {"__main__"})],
    "assignments": [("checks", {"answers", "checks", "borrowing", "landlock"}),
                    ("confinement", {"accounting_checks", "replay", "reaping", "sandbox"}),
                    ("exercises", {"exercises", "worker"}),
                    ("files", {"gradebook", "manifest", "notebooks", "preload"}),
                    ("grading and bundles", {"bundle", "grading"}), ("entry", {"cli", "__main__"})],
    "commands": [("printing", {"__init__"}), ("commands", {"measure", "runs", "study", "text"})],
}
FLOOR = {name: i for i, (_, names) in enumerate(FLOORS) for name in names}


def _modules() -> dict[str, Path]:
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE).with_suffix("").parts
        out[".".join(parts[:-1] if parts[-1] == "__init__" and len(parts) > 1 else parts)] = path
    return out


@functools.lru_cache(maxsize=None)
def _nodes(source: str) -> list:
    return list(ast.walk(ast.parse(source)))


def _targets(node, package: list[str]) -> set[str] | None:
    """The dotted names (under minispdf) one import statement loads, packages on the way
    included."""
    if isinstance(node, ast.Import):
        names = [a.name.split(".")[1:] for a in node.names if a.name.startswith("minispdf.")]
        return {".".join(parts[:i]) for parts in names for i in range(1, len(parts) + 1)}
    if not isinstance(node, ast.ImportFrom):
        return None
    if node.level:
        base = (package[: len(package) - node.level + 1]
                + (node.module.split(".") if node.module else []))
    elif (node.module or "").split(".")[0] == "minispdf":
        base = node.module.split(".")[1:]
    else:
        return None
    target = ".".join(base)
    return ({".".join(base[:i]) for i in range(1, len(base) + 1)}
            | {f"{target}.{a.name}".strip(".") for a in node.names})


def _imports(name: str, path: Path, modules: dict, source: str | None = None) -> set[str]:
    """The minispdf modules that ``name`` imports: ``from minispdf.a import b`` loads ``a`` (its
    ``__init__``) and ``a.b`` if b is a module. A package that holds ``name`` is not counted (its
    ``__init__`` is already running), unless ``name`` imports a name from it: that is a circle."""
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    own = {".".join(package[:i]) for i in range(1, len(package) + 1)}
    found = set()
    for node in _nodes(source if source is not None else path.read_text()):
        targets = _targets(node, package)
        if targets is None:
            continue
        found |= {t for t in targets if t in modules and t not in own}
        # `from minispdf.study import run_study` inside study/runner.py
        if isinstance(node, ast.ImportFrom):
            base = ".".join(package[: len(package) - node.level + 1]
                            + (node.module.split(".") if node.module else [])
                            if node.level else node.module.split(".")[1:])
            if (base in own and base != name
                and any(f"{base}.{a.name}".strip(".") not in modules for a in node.names)):
                found.add(base)
    return found - {name}


def _graph(extra: dict | None = None) -> dict[str, set[str]]:
    """``{module: the modules it imports}``; ``extra`` adds source lines to modules (for the tests'
    own checks)."""
    modules = _modules()
    graph = {m: _imports(m, p, modules) for m, p in modules.items()}
    for m, line in (extra or {}).items():
        graph[m] |= _imports(m, modules[m], modules, line)
    return graph


def _floor(module: str) -> tuple[int, int]:
    """(floor of its top-level name, floor inside its package); a package's __init__ is above its
    modules."""
    top, _, rest = module.partition(".")
    top = top or "__init__"
    assert top in FLOOR, f"minispdf/{top}: put it on a floor in FLOORS"
    if top not in INNER_FLOORS:
        return FLOOR[top], 0
    inner = {n: i for i, (_, names) in enumerate(INNER_FLOORS[top]) for n in names}
    rest = rest or "__init__"
    if rest == "__init__" and rest not in inner:
        return FLOOR[top], len(INNER_FLOORS[top])
    assert rest in inner, f"minispdf/{top}/{rest}.py: put it on a floor in INNER_FLOORS[{top!r}]"
    return FLOOR[top], inner[rest]


def _upward(graph: dict) -> list[str]:
    out = []
    for m, targets in graph.items():
        for t in sorted(targets):
            (fm, im), (ft, it) = _floor(m), _floor(t)
            if ft > fm or (ft == fm and m.split(".")[0] == t.split(".")[0] and it > im):
                out.append(f"{m or '__init__'} imports {t}, which is on a floor above it")
    return out


def _circle(graph: dict) -> list[str] | None:
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(m, path):
        state[m] = 1
        for t in sorted(graph[m]):
            if state.get(t) == 1:
                return path[path.index(t):] + [t]
            if t not in state:
                found = visit(t, path + [t])
                if found:
                    return found
        state[m] = 2
        return None

    for m in graph:
        if m not in state:
            found = visit(m, [m])
            if found:
                return found
    return None


def test_every_import_goes_to_the_same_floor_or_below():
    upward = _upward(_graph())
    assert not upward, "\n".join(upward)


def test_no_import_circles():
    circle = _circle(_graph())
    assert circle is None, "import circle: " + " -> ".join(circle or [])


def test_the_rules_see_through_a_package_init_and_inside_packages():
    # the package's own __init__, imported from one of its modules, is a circle
    circle = _circle(_graph({"study.runner": "from minispdf.study import run_study"}))
    assert circle and "study" in circle and "study.runner" in circle, circle
    assert _circle(_graph({"study.runner": "from . import plan"})) is None  # a sibling: no circle
    # a module of a package importing another package's module loads that package's __init__ too
    assert "tasks" in _imports("study.runner", _modules()["study.runner"], _modules(),
                               "from ..tasks.core import Task")
    # inside a package, the floors hold as between packages
    assert "study.plan imports study.runner, which is on a floor above it" in _upward(
        _graph({"study.plan": "from .runner import execute"}))


def test_modules_and_functions_are_short():
    long_modules, long_functions = [], []
    for name, path in _modules().items():
        text = path.read_text()
        if len(text.splitlines()) > 450:
            long_modules.append(f"{path.relative_to(PACKAGE)}: {len(text.splitlines())} lines")
        for node in ast.walk(ast.parse(text)):
            if (isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
                and node.end_lineno - node.lineno >= 60):
                long_functions.append(
                    f"{name}.{node.name}: {node.end_lineno - node.lineno + 1} lines")
    assert not long_modules, "split by concern: " + ", ".join(long_modules)
    assert not long_functions, ("split into functions that do one job each: "
                                + ", ".join(long_functions))


# --------------------------------------------------------------------- the lessons: public API only


def _public(module: str, name: str, modules: dict) -> bool:
    """Whether ``from minispdf.<module> import <name>`` uses the public API: no private module or
    name, and a name the module lists in its ``__all__`` (if it has one) or a submodule."""
    dotted = f"{module}.{name}".strip(".") if module != "__init__" else name
    if any(part.startswith("_") for part in [*module.split("."), name]
           if part not in ("", "__init__")):
        return False
    if dotted in modules:
        return True
    tree = ast.parse(modules[module].read_text())
    listed = [n.value for n in tree.body if isinstance(n, ast.Assign)
              and any(getattr(t, "id", None) == "__all__" for t in n.targets)]
    if not listed:
        return True
    try:
        return name in ast.literal_eval(listed[0])
    except ValueError:  # a computed __all__ (the package's lazy exports): ask the module itself
        full = "minispdf" + ("" if module == "__init__" else "." + module.removesuffix(".__init__"))
        return name in importlib.import_module(full).__all__


def _private_uses(source: str, modules: dict) -> list[str]:
    out = []
    for node in ast.walk(ast.parse(source)):
        if (isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "minispdf"
            and not node.level):
            module = ".".join(node.module.split(".")[1:]) or "__init__"
            if module not in modules:
                out.append(f"minispdf.{module} is not a module")
                continue
            out += [f"{node.module}.{a.name}" for a in node.names
                    if not _public(module, a.name, modules)]
        elif isinstance(node, ast.Import):
            out += [a.name for a in node.names if a.name.startswith("minispdf.")
                    and any(p.startswith("_") for p in a.name.split(".")[1:])]
    return out


LESSONS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.py"))


@pytest.mark.parametrize("lesson", LESSONS, ids=lambda p: p.name)
def test_the_lessons_import_the_public_api_only(lesson):
    private = _private_uses(lesson.read_text(), _modules())
    assert not private, f"{lesson.name} imports what is not public API: {', '.join(private)}"


def test_the_lesson_check_refuses_private_names():
    modules = _modules()
    assert _private_uses("from minispdf import GPT, plots\nfrom minispdf.study import report",
                         modules) == []
    assert _private_uses("from minispdf.spdf import _run", modules) == ["minispdf.spdf._run"]
    assert _private_uses("from minispdf.evaluate import EvaluateConfig", modules) == [
        "minispdf.evaluate.EvaluateConfig"]  # evaluate lists its API in __all__
    assert _private_uses("import minispdf.__main__", modules) == ["minispdf.__main__"]
