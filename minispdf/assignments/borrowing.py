"""Answers borrowed from the library: an exercise solved by calling ``minispdf`` is refused.

The checks compare a student's function with the library's own implementation (``sparsify``,
``flop_report``, ...), so calling that implementation would pass them without writing anything.
Two looks, one message:

* :func:`static_uses` reads an exercise cell's source (the grader, before any student code runs):
  ``import minispdf...``, ``from minispdf... import``, relative imports, and the dynamic routes
  (``__import__``, ``importlib``, ``sys.modules``, a string naming a ``minispdf`` module);
* :func:`function_uses` inspects a function in the notebook (the visible check under each
  exercise): the globals and closure values its code reads, and imports inside it.

Neither is a proof against a student set on cheating (torch's own attributes reach every loaded
module); they stop the honest shortcut, and say why, which is what a course needs.
"""

from __future__ import annotations

import ast
import dis
import types

LIBRARY = "minispdf"
DYNAMIC = {"__import__", "importlib", "import_module"}  # names that import by string
# reads of outside names
LOADS = {"LOAD_GLOBAL", "LOAD_NAME", "LOAD_DEREF", "LOAD_CLASSDEREF", "LOAD_FROM_DICT_OR_GLOBALS"}


def _is_library(module_name) -> bool:
    return (isinstance(module_name, str)
            and (module_name == LIBRARY or module_name.startswith(LIBRARY + ".")))


def static_uses(source: str) -> list[str]:
    """What in ``source`` takes code from ``minispdf`` ("line 3: from minispdf.sparsity import
    sparsify"); [] when nothing does or the source does not parse (the worker reports that)."""
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return []
    lines = source.splitlines()
    found = []

    def note(node):
        text = lines[node.lineno - 1].strip() if 0 < node.lineno <= len(lines) else ""
        found.append(f"line {node.lineno}: {text}")

    for node in ast.walk(tree):
        if isinstance(node, ast.Import) and any(_is_library(a.name) for a in node.names):
            note(node)
        elif isinstance(node, ast.ImportFrom) and (node.level > 0 or _is_library(node.module)):
            note(node)
        elif isinstance(node, ast.Name) and (node.id in DYNAMIC or node.id == LIBRARY):
            note(node)
        elif isinstance(node, ast.Attribute) and (node.attr in DYNAMIC or node.attr == "modules"
                                                  and isinstance(node.value, ast.Name)
                                                  and node.value.id == "sys"):
            note(node)
        elif (isinstance(node, ast.Import)
              and any(a.name.split(".")[0] == "importlib" for a in node.names)):
            note(node)
        elif (isinstance(node, ast.Constant) and isinstance(node.value, str)
              and _is_library(node.value.strip())):
            note(node)
    return list(dict.fromkeys(found))


def _codes(code: types.CodeType):
    yield code
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            yield from _codes(const)


def _origin(obj) -> str | None:
    """The minispdf module ``obj`` comes from, if it does."""
    if isinstance(obj, types.ModuleType):
        name = obj.__name__
    else:
        name = getattr(obj, "__module__", None)
        if not isinstance(name, str):
            name = getattr(type(obj), "__module__", None)
    return name if _is_library(name) else None


def function_uses(fn) -> list[str]:
    """The ``minispdf`` objects ``fn`` reads as globals or closure values ("sparsify (from
    minispdf.sparsity)"), and imports of minispdf inside its body ("import minispdf.flops inside
    f")."""
    code = getattr(fn, "__code__", None)
    if not isinstance(code, types.CodeType):
        return []
    env = dict(getattr(fn, "__globals__", {}))
    for var, cell in zip(code.co_freevars, getattr(fn, "__closure__", None) or ()):
        try:
            env[var] = cell.cell_contents
        except ValueError:  # an empty cell
            pass
    found = []
    for c in _codes(code):
        for ins in dis.get_instructions(c):
            if (ins.opname == "IMPORT_NAME"
                and (_is_library(ins.argval) or ins.argval == "importlib")):
                found.append(f"import {ins.argval} inside {fn.__name__}")
            elif ins.opname in LOADS and isinstance(ins.argval, str):
                if ins.argval in DYNAMIC:
                    found.append(f"{ins.argval} inside {fn.__name__}")
                elif ins.argval in env and (origin := _origin(env[ins.argval])):
                    found.append(f"{ins.argval} (from {origin})")
    return list(dict.fromkeys(found))


def refusal(function: str, uses: list[str]) -> str:
    """The one message both looks give."""
    return (f"{function} uses the library it is checked against ({'; '.join(uses[:3])}): "
            f"minispdf holds the "
            "answer key, so it earns no points; write the function with torch (and math) only")
