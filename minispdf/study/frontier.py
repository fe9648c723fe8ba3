"""The dense FLOP frontier: how many pre-training FLOPs a method saves at equal downstream quality.

The paper's headline is a FLOP ratio ("2.5x fewer pre-training FLOPs, no significant loss"). A grid
with ``budgets`` pre-trains dense at several budgets F_1 < ... < F_k (same seeds) and fine-tunes
each like every other arm. Per seed, dense's downstream test loss is interpolated linearly in
log F between neighbouring budgets; for a method run with FLOPs F_m and test loss y_m,

    F_eq = the fewest dense pre-training FLOPs whose curve reaches y_m
    ratio = F_eq / F_m        (> 1: the method is more FLOP-efficient than dense)

A loss outside the dense range is *censored*, never extrapolated: better than dense at F_k gives
"ratio > F_k / F_m", worse than dense at F_1 gives "ratio < F_1 / F_m". Seeds are combined by
the geometric mean (a censored seed enters at its bound, and makes the mean a bound); the interval
resamples seeds (percentile bootstrap, the draws declared in the grid's ``[frontier]`` table, a
fixed generator so the report is reproducible). The rules are the grid's, declared before the run.
"""

from __future__ import annotations

import math
import random
import statistics

from . import stats as st

ABOVE, BELOW = "above", "below"  # a censored ratio: more than, or less than, its bound


def _budget_cells(grid: dict) -> dict:
    """{(task, base size, set): {budget: size name}} for the grid's budget sizes."""
    out: dict = {}
    sizes = grid["sizes"]
    for b in grid["blocks"]:
        for size in b["sizes"]:
            if "base" not in sizes[size]:
                continue
            for task in b["tasks"]:
                for set_ in b["sets"]:
                    out.setdefault((task, sizes[size]["base"], set_),
                                   {})[sizes[size]["budget"]] = size
    return out


def iso_flops(points: list[tuple[float, float]], y: float) -> tuple[float, str | None]:
    """Where a dense curve ``[(flops, loss), ...]`` first reaches loss ``y``, linear in log FLOPs
    between neighbouring points: (F_eq, None), or (the bound, ABOVE / BELOW) outside its range."""
    pts = sorted(points)
    if pts[0][1] <= y:
        return pts[0][0], BELOW
    for (f0, y0), (f1, y1) in zip(pts, pts[1:]):
        if y1 == y:
            return f1, None
        if y1 < y < y0:
            t = (y0 - y) / (y0 - y1)
            return math.exp(math.log(f0) + t * (math.log(f1) - math.log(f0))), None
    return pts[-1][0], ABOVE


def _combine(per_seed: list[tuple[float, str | None]]) -> tuple[float, str | None]:
    """Geometric mean of per-seed ratios; censored seeds make it a bound (None flag: exact)."""
    flags = {f for _, f in per_seed if f}
    value = math.exp(statistics.fmean(math.log(r) for r, _ in per_seed))
    if len(flags) > 1:
        return value, "both"
    return value, (flags.pop() if flags else None)


def ratio(dense: dict, method: dict, resamples: int, level: float) -> dict | None:
    """The iso-quality FLOP ratio of one method run over the seeds it shares with the dense curves.
    ``dense``: {seed: [(flops, loss), ...]}; ``method``: {seed: (flops, loss)}."""
    seeds = sorted(s for s in method if s in dense and len(dense[s]) >= 2)
    if not seeds:
        return None
    per = {}
    for s in seeds:
        f_eq, flag = iso_flops(dense[s], method[s][1])
        per[s] = (f_eq / method[s][0], flag)
    value, flag = _combine(list(per.values()))
    rng, draws = random.Random(0), []
    for _ in range(resamples if len(seeds) > 1 else 0):
        draws.append(_combine([per[rng.choice(seeds)] for _ in seeds]))
    tail = (1 - level) / 2
    vals = sorted(v for v, _ in draws)
    low = vals[int(tail * len(vals))] if vals else None
    high = vals[min(len(vals) - 1, int((1 - tail) * len(vals)))] if vals else None
    share = {f: sum(d[1] in (f, "both") for d in draws) / len(draws) if draws else 0.0
             for f in (ABOVE, BELOW)}
    return {"ratio": value, "censored": flag, "low": low, "high": high, "n_seeds": len(seeds),
            "low_is_bound": share[BELOW] >= tail, "high_is_bound": share[ABOVE] >= tail,
            "censored_share": share,
            "per_seed": {str(s): {"ratio": r, "censored": f} for s, (r, f) in per.items()}}


def _flops_loss(rows, arm: str, size: str, task: str, set_: str, measure: str) -> dict:
    return {r["seed"]: (r["pretrain_flops"], r[measure]) for r in rows
            if (r["arm"], r["size"], r["task"], r["set"]) == (arm, size, task, set_)
            and r[measure] is not None
            and r["pretrain_flops"]}


def analyse(results: dict) -> dict | None:
    """The frontier of a grid with a ``[frontier]`` table and budgets: the dense curve per cell
    (mean
    and 95% interval of the measure at each budget) and every method run's ratio; None otherwise."""
    grid = results["grid"]
    rules = grid.get("frontier")
    cells = _budget_cells(grid)
    if not rules or not cells:
        return None
    m, ref = rules.get("measure", "test_loss"), rules.get("reference", "dense")
    out = {"rules": rules, "measure": m, "cells": []}
    for (task, base, set_), budgets in sorted(cells.items()):
        dense: dict = {}
        curve = []
        for b in sorted(budgets):
            runs = _flops_loss(results["rows"], ref, budgets[b], task, set_, m)
            for s, fl in runs.items():
                dense.setdefault(s, []).append(fl)
            ci = st.interval([y for _, y in runs.values()])
            if runs:
                curve.append({"budget": b, "flops": statistics.fmean(f for f, _ in runs.values()),
                              "mean": statistics.fmean(y for _, y in runs.values()), "n": len(runs),
                              "low": ci.low if ci else None, "high": ci.high if ci else None})
        unit = next((c["flops"] for c in curve if c["budget"] == 1.0),
                    curve[0]["flops"] if curve else None)
        methods = []
        ran = {r["arm"] for r in results["rows"] if r["size"] in budgets.values()} - {ref,
                                                                                      "scratch"}
        # grid order
        arms = [a for a in dict.fromkeys(a for b in grid["blocks"] for a in b["arms"]) if a in ran]
        for arm in arms:
            for b in sorted(budgets):
                runs = _flops_loss(results["rows"], arm, budgets[b], task, set_, m)
                r = (ratio(dense, runs, rules.get("resamples", 2000), rules.get("level", 0.95))
                     if runs else None)
                if r is None:
                    continue
                same_steps = _flops_loss(results["rows"], ref, budgets[b], task, set_, m)
                reduction = (statistics.fmean(f for f, _ in same_steps.values())
                             / statistics.fmean(f
                                                for f, _ in runs.values())) if same_steps else None
                methods.append({"arm": arm, "budget": b, "size": budgets[b],
                                "flops": statistics.fmean(f for f, _ in runs.values()),
                                "mean": statistics.fmean(y for _, y in runs.values()),
                                "flop_reduction": reduction, **r})
        out["cells"].append({"task": task, "size": base, "set": set_, "unit_flops": unit,
                             "dense": curve,
                             "methods": methods})
    return out


# ---------------------------------------------------------------------------- tables, words, figure


def fmt_ratio(r: dict) -> str:
    """``1.23x [0.98x, 1.51x]``; a censored estimate or interval end is written as a bound."""
    sign = {ABOVE: "> ", BELOW: "< ", "both": "? ", None: ""}[r["censored"]]
    if r["low"] is None:
        return f"{sign}{r['ratio']:.2f}x"
    low = ("< " if r["low_is_bound"] else "") + f"{r['low']:.2f}x"
    high = ("> " if r["high_is_bound"] else "") + f"{r['high']:.2f}x"
    return f"{sign}{r['ratio']:.2f}x [{low}, {high}]"


def reading(r: dict) -> str:
    """Where the ratio's interval lies against 1 (dense's own efficiency)."""
    if r["censored"] == ABOVE or (r["low"] is not None and r["low"] > 1 and not r["low_is_bound"]):
        return "more FLOP-efficient than dense"
    if (r["censored"] == BELOW
        or (r["high"] is not None and r["high"] < 1 and not r["high_is_bound"])):
        return "less FLOP-efficient than dense"
    return "not distinguishable from dense"


def _no_loss(claims: list[dict], arm: str, size: str, measure: str) -> dict | None:
    return next((c for c in claims if c["kind"] == "no_loss" and c["claim"].startswith(arm + ":")
                 and c["where"].get("size") == size and c["measure"] == measure), None)


def _verdicts(c: dict | None) -> str:
    if c is None:
        return "-"
    holm = c.get("holm_verdict")
    return c["verdict"] + (f" / {holm}" if holm else "")


def _critical(c: dict | None) -> str:
    if c is None or c.get("critical_margin") is None:
        return "-"
    share = c.get("critical_share_of_dense")
    return (f"{c['critical_margin']:.3f} / {c['critical_abs']:.3f} / {share:.0%}"
            if share is not None
            else f"{c['critical_margin']:.3f}")


def table(fr: dict, claims: list[dict]) -> str:
    """Every run of the frontier cells: dense's curve, then each method at each budget with its
    iso-quality FLOP ratio, its FLOP reduction at equal steps, L and the no-loss verdicts."""
    m = fr["measure"]
    lines = []
    for cell in fr["cells"]:
        u = cell["unit_flops"]
        lines += [f"Cell: task {cell['task']}, size {cell['size']}, set {cell['set']}; FLOPs as "
                  f"multiples of dense "
                  f"pre-training at budget x1 ({u:.3g} FLOPs).", "",
                  f"| arm | budget | pre-training FLOPs | {m.replace('_', ' ')} [95% CI] | "
                  f"iso-quality FLOP ratio "
                  "[95% CI] | FLOP reduction at equal steps | L [95% CI] | no loss? raw / Holm | "
                  "critical margin "
                  "(L / nats / share of dense) |", "|---" * 9 + "|"]
        for d in cell["dense"]:
            ci = (f"{d['mean']:.3f}"
                  + (f" [{d['low']:.3f}, {d['high']:.3f}]" if d["low"] is not None else ""))
            lines.append(f"| dense | x{d['budget']:g} | {d['flops'] / u:.2f} | {ci} | 1 (the "
                         f"frontier) | 1.00x | - "
                         "| - | - |")
        for r in cell["methods"]:
            c = _no_loss(claims, r["arm"], r["size"], m)
            lost = (f"{c['effect']:+.3f} [{c['ci_low']:+.3f}, {c['ci_high']:+.3f}]"
                    if c and c["effect"] is not None and c["ci_low"] is not None else "-")
            red = f"{r['flop_reduction']:.2f}x" if r["flop_reduction"] else "-"
            lines.append(f"| {r['arm']} | x{r['budget']:g} | {r['flops'] / u:.2f} | "
                         f"{r['mean']:.3f} | "
                         f"{fmt_ratio(r)} | {red} | {lost} | {_verdicts(c)} | {_critical(c)} |")
        lines.append("")
    return "\n".join(lines)


def summary_table(fr: dict, claims: list[dict]) -> str:
    """One row per method: its iso-quality FLOP ratio and no-loss verdict at each budget (the
    README's)."""
    cell = fr["cells"][0]
    budgets = sorted({r["budget"] for r in cell["methods"]})
    head = " | ".join(f"x{b:g}: FLOP ratio [95% CI]; no loss? raw / Holm" for b in budgets)
    lines = [f"| method (FLOP reduction at equal steps) | {head} |",
             "|---" * (1 + len(budgets)) + "|"]
    for arm in dict.fromkeys(r["arm"] for r in cell["methods"]):
        runs = {r["budget"]: r for r in cell["methods"] if r["arm"] == arm}
        red = next((f"{r['flop_reduction']:.2f}x" for r in runs.values() if r["flop_reduction"]),
                   "-")
        cols = [f"{fmt_ratio(runs[b])}; "
                f"{_verdicts(_no_loss(claims, arm, runs[b]['size'], fr['measure']))}"
                if b in runs else "-" for b in budgets]
        lines.append(f"| {arm} ({red}) | " + " | ".join(cols) + " |")
    return "\n".join(lines)


def sentences(fr: dict, claims: list[dict]) -> list[str]:
    """The frontier's findings in words, each generated from the numbers above: per method, where
    its ratio lies against 1 at each budget, and the budgets at which its no-loss verdict
    changes."""
    out = []
    for cell in fr["cells"]:
        for arm in dict.fromkeys(r["arm"] for r in cell["methods"]):
            runs = [r for r in cell["methods"] if r["arm"] == arm]
            parts = [f"x{r['budget']:g}: {fmt_ratio(r)}, {reading(r)}" for r in runs]
            verdicts = [(r["budget"], _no_loss(claims, arm, r["size"], fr["measure"]))
                        for r in runs]
            said = [f"x{b:g} {c['verdict']}"
                    + (f" ({c['holm_verdict']} after Holm)" if c.get("holm_verdict")
                                                 and c["holm_verdict"] != c["verdict"] else "")
                    for b, c in verdicts if c]
            raw = [c["verdict"] for _, c in verdicts if c]
            change = [f"between x{a:g} and x{b:g}"
                      for (a, ca), (b, cb) in zip(verdicts, verdicts[1:])
                      if ca and cb and ca["verdict"] != cb["verdict"]]
            out.append(f"**{arm}** (task {cell['task']}, {cell['size']}): iso-quality FLOP ratio "
                       + "; ".join(parts)
                       + f". No significant loss on {fr['measure'].replace('_', ' ')}: "
                       + ", ".join(said) + (f"; the raw verdict changes {' and '.join(change)}"
                                            if change else
                                            f"; the same raw verdict ({raw[0]}) at every budget"
                                            if raw else "")
                       + ".")
    return out


def power_line(fr: dict, claims: list[dict]) -> str:
    """Seeds each no-loss claim of the frontier would need, at the spread observed, for 80% power
    to hold when the true L is the declared ``true_effect``: planned power, stated after the run."""
    effect, power = fr["rules"].get("true_effect", 0.05), fr["rules"].get("power", 0.8)
    parts, ran = [], set()
    for cell in fr["cells"]:
        for r in cell["methods"]:
            c = _no_loss(claims, r["arm"], r["size"], fr["measure"])
            if c and c.get("sd") is not None:
                n = st.seeds_for_power(c["sd"], c["margin"], effect, power=power)
                parts.append(f"{r['arm']} x{r['budget']:g} {n if n is not None else '> 10000'}")
                ran.add(c["n_seeds"])
    if not parts:
        return ""
    return (f"Power: at the spread of L seen here, {power:.0%} power for a no-loss claim to hold "
            f"when its true L is "
            f"{effect:g} (half the margin) takes " + ", ".join(parts) + f" seeds; this grid ran "
            f"{', '.join(map(str, sorted(ran)))}, as many as one working session's time allowed.")


def plot(results: dict, fr: dict, path: str) -> None:
    """Downstream test loss against pre-training FLOPs (log axis): dense's frontier with its 95%
    band, each method's runs with their 95% intervals, scratch as a line."""
    from .. import plots
    from .report import _save

    plt = plots._plt()
    cell = fr["cells"][0]
    u = cell["unit_flops"]
    fig, ax = plt.subplots(figsize=(7.5, 4.8))
    d = cell["dense"]
    xs = [p["flops"] / u for p in d]
    ax.plot(xs, [p["mean"] for p in d], "k-o", label="dense (the frontier)", linewidth=1.5)
    if all(p["low"] is not None for p in d):
        ax.fill_between(xs, [p["low"] for p in d], [p["high"] for p in d], color="k", alpha=0.12,
                        label="dense, 95% interval")
    for i, arm in enumerate(dict.fromkeys(r["arm"] for r in cell["methods"])):
        runs = [r for r in cell["methods"] if r["arm"] == arm]
        ys = {r["budget"]: [row[fr["measure"]] for row in results["rows"] if row["arm"] == arm
                            and row["size"] == r["size"] and row["task"] == cell["task"]]
              for r in runs}
        cis = [st.interval(ys[r["budget"]]) for r in runs]
        ax.errorbar([r["flops"] / u for r in runs], [r["mean"] for r in runs],
                    fmt="-s", color=f"C{i}", capsize=3,
                    yerr=[[r["mean"] - c.low if c else 0 for r, c in zip(runs, cis)],
                          [c.high - r["mean"] if c else 0 for r, c in zip(runs, cis)]], label=arm)
    scratch = [row[fr["measure"]] for row in results["rows"]
               if row["arm"] == "scratch" and row["task"] == cell["task"]]
    if scratch:
        ax.axhline(statistics.fmean(scratch), color="gray", linestyle="--", linewidth=1,
                   label="no pre-training")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ticks = [round(p["flops"] / u, 2) for p in d]
    ax.set_xticks(ticks, [f"{t:g}" for t in ticks], fontsize=9)
    ax.xaxis.set_minor_formatter(plt.NullFormatter())
    ax.yaxis.set_major_formatter(plt.FuncFormatter(lambda v, _: f"{v:g}"))
    ax.yaxis.set_minor_formatter(plt.FuncFormatter(
        lambda v, _: f"{v:g}" if round(v, 1) in (0.2, 0.3, 0.5, 0.7, 2, 3) else ""))
    ax.tick_params(axis="y", which="both", labelsize=9)
    ax.set_xlabel("pre-training FLOPs (x dense at budget x1)", fontsize=10)
    ax.set_ylabel(f"downstream {fr['measure'].replace('_', ' ')} (log; lower is better)",
                  fontsize=10)
    ax.set_title(f"The dense FLOP frontier: task {cell['task']}, {cell['size']}, mean of seeds",
                 fontsize=10)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=9)
    _save(ax, path)
