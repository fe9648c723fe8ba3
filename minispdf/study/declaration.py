"""Pre-registration: what a study will judge and how, written before its first job.

``reproduce`` writes ``OUT/declared.json`` (the grid, its claims, the metric, margins, gates and
seeds, the commit and the time, and the power expected from earlier results) before anything
trains; the report judges with that file only. Rules that differ from it need a new declaration
(``--redeclare`` writes ``declared-2.json``, ...), and every verdict names the file it used.
"""

from __future__ import annotations

import json
import os
import re
import time

from ..errors import MiniSPDFError
from ..fileio import write_json
from . import claims as claims_lib

FILE = "declared.json"
FORMAT = "minispdf-declaration-1"
RULES = ("margins", "gates", "claims", "grid")  # the most specific difference is named first
_NAME = re.compile(r"^declared(?:-(\d+))?\.json$")


def build(grid: dict, cells: list[dict], commit: str, power: dict | None = None) -> dict:
    """The declaration of ``grid`` (JSON-normal: what is compared is what is written)."""
    decl = {"format": FORMAT, "written": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "commit": commit,
            "metric": "L, the share of the pre-training benefit lost: (arm - dense) / (scratch - "
                      "dense) on test "
                      "loss, (dense - arm) / (dense - scratch) on BLEU, per seed",
            "measures": list(claims_lib.MEASURES), "margins": grid["margins"],
            "gates": grid["gates"],
            "seeds": [b["seeds"] for b in grid["blocks"]], "grid": grid,
            "claims": claims_lib.declare(grid, cells), "power": power}
    return json.loads(json.dumps(decl))


def files(out: str) -> list[str]:
    """The declarations in ``out``, oldest first."""
    names = [n for n in os.listdir(out) if _NAME.match(n)] if os.path.isdir(out) else []
    return sorted(names, key=lambda n: int(_NAME.match(n).group(1) or 1))


def latest(out: str) -> tuple[str, dict] | None:
    names = files(out)
    if not names:
        return None
    path = os.path.join(out, names[-1])
    try:
        with open(path) as f:
            return names[-1], json.load(f)
    except (OSError, ValueError) as e:
        raise MiniSPDFError(f"{path} cannot be read ({e}): restore it from version control, or "
                            f"pass --redeclare "
                            "after removing it") from None


def _differs(old: dict, new: dict) -> str | None:
    for key in RULES:
        if old.get(key) != new.get(key):
            return key
    return None


def register(out: str, decl: dict, redeclare: bool = False) -> str:
    """Write ``decl`` if ``out`` has none, reuse an identical one, or refuse a changed rule unless
    ``redeclare``; returns the file name the report will judge with."""
    current = latest(out)
    if current is None:
        write_json(os.path.join(out, FILE), decl)
        return FILE
    name, old = current
    changed = _differs(old, decl)
    if changed is None:
        return name
    if not redeclare:
        raise MiniSPDFError(f"{os.path.join(out, name)} declared other {changed} than this run's "
                            f"grid: judging by "
                            "rules changed after a run is not allowed; pass --redeclare to record "
                            "a new declaration "
                            "(the report names the one each verdict used) or choose another --out")
    name = f"declared-{len(files(out)) + 1}.json"
    write_json(os.path.join(out, name), decl)
    return name
