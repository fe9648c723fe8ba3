"""Power before the run: how wide each declared claim's interval is expected to be.

The spread of each claim's per-seed values comes from an earlier study (committed results or a
pilot): the same cell where it exists; otherwise the spread of L of each arm in the most similar
cell (the largest spread over the cells that have the arm), combined as independent terms. With
the grid's seeds that spread gives the expected half-width; a claim whose expected half-width
exceeds its margin is underpowered before anything trains.
"""

from __future__ import annotations

import math
import os
import statistics

from ..errors import counted
from ..fileio import read_json
from . import claims as claims_lib
from .budgets import base_size
from . import stats as st


def read_prior(path: str | None) -> tuple[list[dict], str] | None:
    """(rows, label) of an earlier study's results.json in folder ``path``; None if absent."""
    if not path:
        return None
    data = read_json(os.path.join(path, "results.json"))
    rows = data.get("rows") if isinstance(data, dict) else None
    return (rows, path) if isinstance(rows, list) else None


def _sd(values) -> float | None:
    v = list(values)
    return statistics.stdev(v) if len(v) > 1 else None


def _sd_of_arm(rows, measure, key, arm) -> tuple[float | None, str]:
    exact = _sd(claims_lib.benefit_lost(rows, measure, arm, claims_lib._cell(key)).values())
    if exact is not None:
        return exact, "same cell"
    cells = {(r["task"], r["size"], r["set"]) for r in rows}
    sds = {c: s for c in cells
           if (s := _sd(claims_lib.benefit_lost(rows, measure, arm, claims_lib._cell(c)).values()))}
    if not sds and arm != "spdf75" and arm.rstrip("0123456789") in claims_lib.METHODS:
        # a method never run yet: as spread as one static mask
        sd, src = _sd_of_arm(rows, measure, key, "spdf75")
        return sd, f"spdf75 standing in for {arm}, {src}"
    if not sds:
        return None, "no earlier run of this arm"
    # the most similar cell: the same task first, then the same set, then the same size
    size = base_size(key[1])  # a budget of a size (nano-x2) is most like the size itself
    best = max(sds,
               key=lambda c: (4 * (c[0] == key[0]) + 2 * (c[2] == key[2]) + (c[1] == size), sds[c]))
    return sds[best], f"the most similar cell, {'/'.join(best)}"


def spread(claim: dict, rows: list[dict]) -> tuple[float | None, str]:
    """The expected sd of the claim's per-seed values, and where it comes from."""
    exact = _sd(claims_lib.per_seed(rows, claim).values())
    if exact is not None:
        return exact, "same cells"
    terms = [claim["arm"]] if claim["kind"] == "no_loss" else [claim["worse"], claim["better"]]
    parts = [_sd_of_arm(rows, claim["measure"], tuple(k), a) for k, a in terms]
    if any(sd is None for sd, _ in parts):
        return None, next(src for sd, src in parts if sd is None)
    return (math.sqrt(sum(sd * sd for sd, _ in parts)),
            parts[-1][1] + " (terms taken as independent)")


def expected(claims: list[dict], prior: tuple[list[dict], str] | None,
             true_effect: float | None = None) -> dict:
    """Per declared claim: the spread, the expected half-width with its planned seeds, the seeds
    that would reach its margin, whether it is underpowered before the run, and for a no-loss
    claim the seeds that give it 80% power to hold when the true L is ``true_effect`` (default:
    half its margin)."""
    out = {"source": prior[1] if prior else None, "claims": {}}
    for c in claims:
        q = 0.95 if c["kind"] == "no_loss" else 0.975
        sd, src = (spread(c, prior[0]) if prior
                   else (None, "no earlier results: pass --power_from DIR"))
        rec = {"sd": sd, "from": src, "n_planned": c["n_planned"], "margin": c["margin"]}
        if sd is not None:
            half = st.halfwidth(sd, c["n_planned"], q)
            rec.update(halfwidth=half, underpowered=half > c["margin"],
                       seeds_needed=st.seeds_needed(sd, c["margin"], q))
            if c["kind"] == "no_loss":
                effect = c["margin"] / 2 if true_effect is None else true_effect
                rec.update(true_effect=effect,
                           seeds_for_power=st.seeds_for_power(sd, c["margin"], effect))
        out["claims"][c["id"]] = rec
    return out


def table(claims: list[dict], power: dict) -> str:
    """The power of every declared claim, as text for the dry run."""
    lines = [f"  power from {power['source'] or 'no earlier results'} (expected half-width of each "
             f"claim's interval "
             "of L with the planned seeds; over the margin = underpowered):"]
    for c in claims:
        p = power["claims"][c["id"]]
        where = ", ".join(f"{k} {v}" for k, v in c["where"].items())
        seeds = counted(p["n_planned"], "seed")
        if p["sd"] is None:
            lines.append(f"    {c['claim']} [{c['measure']}; {where}]: {seeds}, no estimate "
                         f"({p['from']})")
            continue
        flag = "UNDERPOWERED" if p["underpowered"] else "ok"
        need = p["seeds_needed"] if p["seeds_needed"] is not None else ">10000"
        lines.append(f"    {c['claim']} [{c['measure']}; {where}]: {seeds}, half-width "
                     f"+-{p['halfwidth']:.3f} vs margin {c['margin']:g}: {flag} (sd {p['sd']:.3f} "
                     f"from {p['from']}; "
                     f"{need} seeds reach the margin" + _power_words(p) + ")")
    return "\n".join(lines)


def _power_words(p: dict) -> str:
    if "seeds_for_power" not in p:
        return ""
    n = p["seeds_for_power"]
    return (f"; {n if n is not None else '>10000'} seeds give 80% power to hold at a true L of "
            f"{p['true_effect']:g}")
