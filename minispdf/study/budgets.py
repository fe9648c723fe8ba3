"""Pre-training budgets: a grid block's ``budgets = [0.5, 1, 2]`` pre-trains each of its sizes at
those multiples of the size's pre-training steps. Each (size, budget) becomes a size of its own,
named here (``nano-x2``), so that every claim is judged per budget and the frontier can put the
budgets of one method on a curve. :mod:`.grids` checks a block's budgets and expands them when it
loads a grid.
"""

from __future__ import annotations

from ..errors import MiniSPDFError


def budget_size(size: str, budget: float) -> str:
    """The name of ``size`` pre-trained for ``budget`` x its steps: ``nano-x0.25``."""
    return f"{size}-x{budget:g}"


def base_size(name: str) -> str:
    """The size a budget size was made from (``nano-x0.25`` -> ``nano``); other names unchanged."""
    head, sep, tail = name.rpartition("-x")
    return head if sep and tail.replace(".", "", 1).isdigit() else name


def check_budgets(grid: dict, where: str) -> None:
    """Every block's ``budgets`` (1 when left out) are distinct numbers in (0, 100]; an error
    opens with ``where`` (the grid)."""
    for i, b in enumerate(grid["blocks"]):
        budgets = b.get("budgets", [1.0])
        if not budgets or len(set(budgets)) != len(budgets) or not all(
                isinstance(x, (int, float)) and not isinstance(x, bool) and 0 < x <= 100
                for x in budgets):
            raise MiniSPDFError(f"{where}: key blocks[{i}].budgets = {budgets!r} must be "
                                f"distinct numbers in "
                                "(0, 100]: multiples of each size's pre-training steps, "
                                "e.g. [0.5, 1, 2]")


def expand_budgets(grid: dict) -> None:
    """A block with ``budgets`` pre-trains each of its sizes at each multiple of the size's steps.
    Each (size, budget) becomes a size of its own (``nano-x2``, with ``base`` and ``budget``), so
    every claim is judged per budget; the primary size names the budget-1 one."""
    for b in grid["blocks"]:
        budgets = b.pop("budgets", None)
        if budgets is None:
            continue
        names = []
        for size in b["sizes"]:
            for x in budgets:
                name = budget_size(size, float(x))
                grid["sizes"].setdefault(name,
                                         {**grid["sizes"][size], "budget": float(x), "base": size})
                names.append(name)
        b["sizes"] = names
        p = grid["primary"]
        if p["size"] not in names and budget_size(p["size"], 1.0) in names:
            p["size"] = budget_size(p["size"], 1.0)
