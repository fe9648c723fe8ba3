"""The paper's claims: declared from the grid before the run, judged on the study's rows after it.

Every claim is judged on **L, the share of the pre-training benefit an arm loses**, per seed:

    test loss:  L = (arm - dense) / (scratch - dense)
    BLEU:       L = (dense - arm) / (dense - scratch)

L = 0: the arm kept everything dense pre-training buys over no pre-training (``scratch``);
L = 1: it kept nothing. Unlike a gap relative to the dense loss, L does not blow up when the
dense loss is near zero, and every task shares its scale. The absolute gap (nats, BLEU points)
is reported beside it.

* "spdfNN: no significant loss vs dense" is a non-inferiority claim on L with the grid's margin
  (0.10: "keeps at least 90% of the benefit"): it holds when the 90% interval of L lies below
  the margin, fails when it lies above, otherwise it is inconclusive.
* Directional claims ("SPSF loses more than SPDF", "harder tasks lose more", ...) are per-seed
  differences of L oriented so that positive means "as claimed"; the 95% interval decides.
* An inconclusive interval wider than ``precision`` x the margin is ``underpowered``: more seeds
  are needed, the data do not lean either way.

A claim is judged only where its cells can show it (the gates); otherwise it is ``untestable``
with the reason: dense must beat scratch (95% interval), dense BLEU must lie between
``min_bleu`` and ``max_bleu``, the dense test loss above ``min_test_loss``, dense pre-training
must cut scratch's test loss by at least ``min_benefit``, and pre-training must have left its
plateau (dense pre-training loss at most ``plateau_ratio`` x the corpus' unigram entropy).
"""

from __future__ import annotations

import statistics

from . import stats as st

MEASURES = ("test_loss", "bleu")
LABEL = {"test_loss": "L on test loss", "bleu": "L on BLEU"}
UNIT = {"test_loss": "nats", "bleu": "BLEU points"}
DIMS = ("task", "size", "set")


def _values(rows, measure, **where) -> dict:
    return {r["seed"]: r[measure] for r in rows
            if all(r[k] == v for k, v in where.items()) and r[measure] is not None}


def _cell(key) -> dict:
    return dict(zip(DIMS, key))


def abs_gap(rows, measure, arm, cell) -> dict:
    """Per seed: how much worse ``arm`` is than dense (nats of test loss, or BLEU points)."""
    a, d = _values(rows, measure, arm=arm, **cell), _values(rows, measure, arm="dense", **cell)
    sign = -1 if measure == "bleu" else 1
    return {s: sign * (a[s] - d[s]) for s in set(a) & set(d)}


def benefit(rows, measure, cell) -> dict:
    """Per seed: what dense pre-training buys over scratch (positive = it helps)."""
    return abs_gap(rows, measure, "scratch", cell)


def benefit_lost(rows, measure, arm, cell) -> dict:
    """Per seed: L = the arm's gap to dense over scratch's gap to dense (seeds where dense beats
    scratch; elsewhere L is undefined)."""
    gap, ben = abs_gap(rows, measure, arm, cell), benefit(rows, measure, cell)
    return {s: gap[s] / ben[s] for s in set(gap) & set(ben) if ben[s] > 0}


# ------------------------------------------------------------------------------ declaring


def _levels(arms, kind: str) -> list[int]:
    return sorted({int(a[len(kind):]) for a in arms
                   if a.startswith(kind) and a[len(kind):].isdigit()})


def declare(grid: dict, cells: list[dict]) -> list[dict]:
    """Every comparison the grid's plan can judge, fixed before any job runs."""
    arms, seeds = {}, {}
    for c in cells:
        s = c["spec"]
        key = (s["task"], s["size"], s["set"])
        arms.setdefault(key, set()).add(s["arm"])
        seeds.setdefault((key, s["arm"]), set()).add(s["seed"])
    judged = {k: a for k, a in arms.items() if {"dense", "scratch"} <= a}

    def n(*terms):
        return min(len(seeds[(k, a)] & seeds[(k, "dense")] & seeds[(k, "scratch")])
                   for k, a in terms)

    out = []
    for m in MEASURES:
        for k in sorted(judged):
            a = judged[k]
            for lv in _levels(a, "spdf"):
                out.append({"kind": "no_loss", "claim": f"spdf{lv}: no significant loss vs dense",
                            "measure": m,
                            "where": _cell(k), "arm": [k, f"spdf{lv}"],
                            "n_planned": n((k, f"spdf{lv}"))})
            for kind, text in (("spsf", "spsf{lv} (masks kept) loses more than spdf{lv}"),
                               ("eqflop",
                                "spdf{lv} loses less than equal-FLOP dense (eqflop{lv})")):
                for lv in _levels(a, kind):
                    if f"spdf{lv}" in a:
                        worse, better = [k, f"{kind}{lv}"], [k, f"spdf{lv}"]
                        out.append(_directional(text.format(lv=lv), m, _cell(k), worse, better,
                                                n((k, f"{kind}{lv}"), (k, f"spdf{lv}"))))
            out += _methods(k, a, m, n)
        out += _across(grid, judged, m, n)
    p = grid["primary"]
    for c in out:
        c["margin"] = grid["margins"][c["measure"]]
        c["primary"] = all(str(c["where"].get(d, p[d])) == p[d] for d in DIMS)
        c["id"] = (f"{c['claim']} | {c['measure']} | "
                   + ", ".join(f"{d} {c['where'][d]}" for d in DIMS))
    return out


# arms whose masks move, grow, come late or follow N:M
METHODS = ("set", "rigl", "gmp", "vspdf", "nm")
REFERENCES = (("spdf75", "{arm} loses less than spdf75 (one static mask)"),
              ("eqflop75", "{arm} loses less than equal-FLOP dense (eqflop75)"))


def _methods(k, arms, measure, n) -> list[dict]:
    """For every method arm of a cell: no significant loss vs dense, and (where those arms ran)
    beats one static mask (spdf75) and dense pre-training for spdf75's FLOPs (eqflop75)."""
    out = []
    for arm in sorted(a for a in arms if a.rstrip("0123456789") in METHODS):
        out.append({"kind": "no_loss", "claim": f"{arm}: no significant loss vs dense",
                    "measure": measure,
                    "where": _cell(k), "arm": [k, arm], "n_planned": n((k, arm))})
        for ref, text in REFERENCES:
            if ref in arms:
                out.append(_directional(text.format(arm=arm), measure, _cell(k), [k, ref], [k, arm],
                                        n((k, ref), (k, arm))))
    return out


ACROSS = (("task", "harder tasks lose more (spdf75)", True),
          ("size", "larger models lose less (spdf75)", False),
          ("set", "a smaller fine-tuning set loses more (spdf75)", True))


def _across(grid: dict, judged: dict, measure: str, n) -> list[dict]:
    """Claims across cells: a block with two or more tasks (in the grid's ``difficulty`` order),
    sizes (by parameter count) or sets (largest first) compares its neighbours on spdf75's L."""
    from .plan import n_params

    order = {"task": grid.get("difficulty", []),
             "size": sorted(grid["sizes"], key=lambda s: n_params(grid, s)),
             "set": sorted(grid["sets"], key=lambda s: -grid["sets"][s])}
    out, seen = [], set()
    for block in grid["blocks"]:
        for dim, text, hi_loses_more in ACROSS:
            values = [v for v in order[dim] if v in block[dim + "s"]]
            i = DIMS.index(dim)
            for lo, hi in zip(values, values[1:]):
                # budgets of one size, not two sizes
                if dim == "size" and _base(grid, lo) == _base(grid, hi):
                    continue
                for k in sorted(judged):
                    other = tuple(hi if j == i else v for j, v in enumerate(k))
                    if k[i] != lo or other not in judged or (
                            not {"spdf75"} <= judged[k] & judged[other]) or \
                            (k, other) in seen:
                        continue
                    seen.add((k, other))
                    where = {d: v for d, v in zip(DIMS, k) if d != dim} | {dim: f"{lo} vs {hi}"}
                    lo_t, hi_t = [k, "spdf75"], [other, "spdf75"]
                    worse, better = (hi_t, lo_t) if hi_loses_more else (lo_t, hi_t)
                    out.append(_directional(text, measure, where, worse, better,
                                            n((k, "spdf75"), (other, "spdf75"))))
    return out


def _base(grid: dict, size: str) -> str:
    return grid["sizes"][size].get("base", size)


def _directional(claim, measure, where, worse, better, n_planned) -> dict:
    return {"kind": "directional", "claim": claim, "measure": measure, "where": where,
            "worse": worse,
            "better": better, "n_planned": n_planned}


def per_seed(rows, claim: dict, scale=benefit_lost) -> dict:
    """The claim's per-seed values (oriented: positive = the loss, or the claimed direction) on
    ``scale`` (``benefit_lost`` for L, ``abs_gap`` for nats / BLEU points)."""
    m = claim["measure"]
    if claim["kind"] == "no_loss":
        key, arm = claim["arm"]
        return scale(rows, m, arm, _cell(key))
    (kw, aw), (kb, ab) = claim["worse"], claim["better"]
    w, b = scale(rows, m, aw, _cell(kw)), scale(rows, m, ab, _cell(kb))
    return {s: w[s] - b[s] for s in set(w) & set(b)}


def cells_of(claim: dict) -> list[tuple]:
    return [tuple(claim["arm"][0])] if claim["kind"] == "no_loss" else \
        list(dict.fromkeys([tuple(claim["worse"][0]), tuple(claim["better"][0])]))


# ------------------------------------------------------------------------------ judging


class Judge:
    """Gates and verdicts of a declaration's claims over one study's rows."""

    def __init__(self, declaration: dict, rows: list[dict], unigram_entropy: float | None,
                 name: str = ""):
        self.decl, self.rows, self.entropy, self.name = declaration, rows, unigram_entropy, name
        self.gates = declaration["gates"]

    def gate(self, measure: str, key) -> str | None:
        """None when the cell can show a claim on ``measure``; else the reason it cannot."""
        cell, g = _cell(key), self.gates
        where = "/".join(key)
        ben = st.interval(list(benefit(self.rows, measure, cell).values()))
        if ben is None:
            return f"{where}: fewer than 2 seeds with dense and scratch"
        if ben.low <= 0:
            return (f"{where}: pre-training does not beat scratch (95% interval "
                    f"{ben.low:+.3g}..{ben.high:+.3g})")
        dense = statistics.fmean(_values(self.rows, measure, arm="dense", **cell).values())
        if measure == "bleu":
            if dense < g["min_bleu"]:
                return f"{where}: dense BLEU {dense:.1f} below {g['min_bleu']:g} (floor)"
            if dense > g["max_bleu"]:
                return f"{where}: dense BLEU {dense:.1f} above {g['max_bleu']:g} (ceiling)"
        else:
            scratch = statistics.fmean(_values(self.rows, measure, arm="scratch", **cell).values())
            if dense < g["min_test_loss"]:
                return (f"{where}: dense test loss {dense:.3f} below "
                        f"{g['min_test_loss']:g} (ceiling)")
            if (scratch - dense) / scratch < g["min_benefit"]:
                return (f"{where}: dense pre-training cuts scratch's test loss by only "
                        f"{(scratch - dense) / scratch:.0%} (floor: {g['min_benefit']:.0%})")
        return self.plateau_gate(key[1])

    def plateau_gate(self, size: str) -> str | None:
        """The dense arm's pre-training must end clearly below a unigram model's loss."""
        losses = _values(self.rows, "pretrain_val_loss", arm="dense", size=size)
        if self.entropy is None:
            return None
        if not losses:
            return f"no dense pre-training run of size {size}"
        loss = statistics.fmean(losses.values())
        if loss > self.gates["plateau_ratio"] * self.entropy:
            return (f"{size}: pre-training still on its plateau ({loss:.2f} vs unigram entropy "
                    f"{self.entropy:.2f})")
        return None

    def claims(self) -> list[dict]:
        judged = [self.judge(c) for c in self.decl["claims"]]
        return with_holm(judged, self.decl["grid"])

    def judge(self, claim: dict) -> dict:
        m, margin = claim["measure"], claim["margin"]
        diffs = list(per_seed(self.rows, claim).values())
        absolute = st.interval(list(per_seed(self.rows, claim, abs_gap).values()))
        if claim["kind"] == "no_loss":
            verdict, ci90, ci = st.non_inferiority(diffs, margin)
            decisive, q = ci90, 0.95
        else:
            verdict, ci = st.directional(diffs)
            ci90, decisive, q = st.interval(diffs, 0.90), ci, 0.975
        reason = next((r for r in (self.gate(m, k) for k in cells_of(claim)) if r), None)
        if reason:
            verdict = st.UNTESTABLE
        elif decisive is None:
            verdict, reason = st.UNTESTABLE, "fewer than 2 paired seeds"
        elif (verdict == st.INCONCLUSIVE
              and decisive.high - decisive.low > self.gates["precision"] * margin):
            verdict = st.UNDERPOWERED
            reason = (f"interval {decisive.high - decisive.low:.3f} wide, over "
                      f"{self.gates['precision']:g} x the "
                      f"margin: more seeds needed")
        else:
            reason = _reason(claim["kind"], verdict, margin)
        sd = statistics.stdev(diffs) if len(diffs) > 1 else None
        extra = _no_loss_extra(self.rows, claim, diffs, ci90) if claim["kind"] == "no_loss" else {}
        return {**extra, "id": claim["id"], "claim": claim["claim"], "kind": claim["kind"],
                "metric": "L", "measure": m,
                "where": claim["where"], "effect": ci.mean if ci else None,
                "ci_low": ci.low if ci else None,
                "ci_high": ci.high if ci else None, "ci90_low": ci90.low if ci90 else None,
                "ci90_high": ci90.high if ci90 else None, "margin": margin, "n_seeds": len(diffs),
                "sd": sd, "mde": st.mde(sd, len(diffs), q) if sd is not None else None,
                "abs_effect": absolute.mean if absolute else None,
                "abs_ci_low": absolute.low if absolute else None,
                "abs_ci_high": absolute.high if absolute else None, "abs_unit": UNIT[m],
                "verdict": verdict, "reason": reason, "primary": claim["primary"],
                "declaration": self.name}


def unusable_seeds(rows, claim: dict) -> list[int]:
    """Seeds with the claim's arms run but no L, because dense pre-training did not beat scratch
    there (L's denominator is not positive): counted and named, never dropped silently."""
    out = set()
    for key, arm in ([claim["arm"]] if claim["kind"] == "no_loss"
                     else [claim["worse"], claim["better"]]):
        cell = _cell(key)
        have = set(abs_gap(rows, claim["measure"], arm, cell)) & set(benefit(rows, claim["measure"],
                                                                             cell))
        out |= have - set(benefit_lost(rows, claim["measure"], arm, cell))
    return sorted(out)


def _no_loss_extra(rows, claim: dict, diffs: list, ci90) -> dict:
    """A no-loss claim's one-sided p-values (holds: L below the margin; fails: above it) and its
    critical margin: the upper end of the 90% interval, the smallest margin at which it would hold,
    in L, in nats or BLEU points (the absolute gap's) and as a share of dense's mean."""
    key, arm = claim["arm"]
    gaps = list(abs_gap(rows, claim["measure"], arm, _cell(key)).values())
    abs90 = st.interval(gaps, 0.90)
    dense = _values(rows, claim["measure"], arm="dense", **_cell(key))
    dense_mean = statistics.fmean(dense.values()) if dense else None
    return {"p_holds": st.p_below(diffs, claim["margin"]),
            "p_fails": st.p_below([-d for d in diffs], -claim["margin"]),
            "critical_margin": ci90.high if ci90 else None,
            "critical_abs": abs90.high if abs90 else None,
            "critical_share_of_dense": abs90.high / dense_mean if abs90 and dense_mean else None,
            "unusable_seeds": unusable_seeds(rows, claim)}


# how a cell is described or scored, not what it trains
IGNORED = {"about", "eval_inputs", "max_new_tokens"}


def _flat(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        if k in IGNORED:
            continue
        out.update(_flat(v, f"{prefix}{k}.") if isinstance(v, dict) else {prefix + k: v})
    return out


def confounds(grid: dict, claim: dict) -> list[str]:
    """The settings in which the two sides of a comparison across tasks, sizes or sets differ; more
    than one means the comparison cannot attribute its difference to the one factor it names
    (easy vs hard1: the task variant, its slots, wording and references at once)."""
    if claim["kind"] != "directional":
        return []
    for dim, table in (("task", "tasks"), ("size", "sizes"), ("set", "sets")):
        lo_hi = str(claim["where"].get(dim, ""))
        if " vs " in lo_hi:
            lo, hi = lo_hi.split(" vs ")
            a, b = grid[table][lo], grid[table][hi]
            if not isinstance(a, dict):
                return [dim] if a != b else []
            fa, fb = _flat(a), _flat(b)
            return sorted(k for k in set(fa) | set(fb) if fa.get(k) != fb.get(k))
    return []


def holm_family(grid: dict) -> tuple[float, str]:
    """The correction's level and whether it was declared before the run (a grid's [frontier]
    table) or is applied afterwards to a study that declared none."""
    fr = grid.get("frontier")
    return (fr.get("holm_alpha", 0.05), "declared") if fr else (0.05, "post hoc")


def with_holm(claims: list[dict], grid: dict) -> list[dict]:
    """Holm's correction over each measure's testable no-loss claims (the family): beside each raw
    verdict, the verdict its Holm-adjusted p-values give. Directional claims are outside the
    family."""
    alpha, how = holm_family(grid)
    for c in claims:
        factors = confounds(grid, c)
        c["confounded"] = factors if len(factors) > 1 else None
    for m in MEASURES:
        fam = [c for c in claims
               if c["kind"] == "no_loss" and c["measure"] == m and c["verdict"] != st.UNTESTABLE]
        adj_h = st.holm({c["id"]: c["p_holds"] for c in fam}, alpha)
        adj_f = st.holm({c["id"]: c["p_fails"] for c in fam}, alpha)
        for c in fam:
            c["holm_p_holds"], c["holm_p_fails"] = adj_h[c["id"]], adj_f[c["id"]]
            c["holm_verdict"] = (st.HOLDS if (adj_h[c["id"]] or 1) < alpha else st.FAILS
                                 if (adj_f[c["id"]] or 1) < alpha else
                                 c["verdict"] if c["verdict"] == st.UNDERPOWERED
                                 else st.INCONCLUSIVE)
            c["holm_family"] = (f"{len(fam)} no-loss claims on {m.replace('_', ' ')} ({how}, "
                                f"alpha {alpha:g})")
    return claims


def _reason(kind: str, verdict: str, margin: float) -> str:
    if kind == "no_loss":
        return {st.HOLDS: f"90% interval of L below the margin {margin:g}",
                st.FAILS: f"90% interval of L above the margin {margin:g}",
                st.INCONCLUSIVE: f"90% interval of L straddles the margin {margin:g}"}[verdict]
    return {st.HOLDS: "95% interval above zero",
            st.FAILS: "95% interval below zero (the other direction)",
            st.INCONCLUSIVE: "95% interval contains zero"}[verdict]


def flop_claim(grid: dict, pretrains: list[dict]) -> dict:
    """The FLOP claim is arithmetic, not a measurement: the formula at GPT-3 XL, and for the grid's
    own models the formula's count of the weight matmuls checked against ``FlopCounterMode``."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from ..flops import flop_report, weight_matmul_flops
    from ..model import GPT
    from .plan import model_config

    xl = flop_report("gpt3-xl", sparsity=0.75).reduction
    sizes = {}
    for size in grid["sizes"]:
        cfg = model_config(grid, size)
        torch.manual_seed(0)
        model, T = GPT(cfg), min(cfg.block_size, 64)
        x = torch.randint(cfg.vocab_size, (2, T))
        with FlopCounterMode(display=False) as counter:
            model(x, x)[1].backward()
        counted, formula = counter.get_total_flops(), 3 * weight_matmul_flops(cfg, T, 2)
        runs = [p["flops_dense"] / p["flops"] for p in pretrains
                if p["spec"]["size"] == size and abs(p["spec"]["sparsity"] - 0.75) < 1e-9]
        sizes[size] = {"formula_reduction_75": flop_report(cfg, sparsity=0.75,
                                                           seq_len=grid["block_size"]).reduction,
                       "logged_reduction_75": statistics.fmean(runs) if runs else None,
                       "weight_matmul_flops_formula": formula,
                       "weight_matmul_flops_counted": counted,
                       "counter_agrees": counted == formula}
    agree = all(s["counter_agrees"] for s in sizes.values())
    return {"claim": "2.5x fewer pre-training FLOPs at 75% sparsity (GPT-3 XL)",
            "metric": "FLOPs (arithmetic)",
            "where": {}, "effect": xl, "ci_low": None, "ci_high": None, "margin": None,
            "n_seeds": None,
            "verdict": "arithmetic" if abs(xl - 2.5) < 0.05 and agree else "formula disagrees",
            "reason": f"the kit's formula gives {xl:.2f}x for GPT-3 XL at T=2048 (embedding not "
                      f"counted); its "
                      "weight-matmul count " + ("equals" if agree else "DIFFERS FROM") +
                      " torch's FlopCounterMode for this grid's models", "sizes": sizes}
