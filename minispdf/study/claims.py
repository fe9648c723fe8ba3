"""The paper's claims, judged on the study's rows by rules declared before the run.

Each claim is judged per *cell* (task, model size, fine-tuning set) on paired per-seed
differences (see :mod:`.stats`), on two metrics: test loss (the perplexity of the references,
as a gap relative to the dense arm) and BLEU (points). A claim is judged only where the setting
can show it (the gates); otherwise it is ``untestable`` with the reason:

* the dense pre-trained arm beats the no-pre-training arm downstream (95% interval above zero);
* for BLEU claims the dense arm reaches the grid's ``min_bleu``;
* pre-training left its initial plateau: the dense pre-training loss is at most
  ``plateau_ratio`` x the corpus' unigram entropy (a unigram model's loss).

Gaps are oriented so that positive means "the sparse arm is worse": for test loss
``(arm - dense) / mean(dense)`` per seed, for BLEU ``dense - arm``. The retained benefit
``R = (scratch - spdf) / (scratch - dense)`` (test loss) sits beside every SPDF gap.
"""

from __future__ import annotations

import statistics

from . import stats as st

METRICS = ("test_loss", "bleu")
LABEL = {"test_loss": "test loss (relative)", "bleu": "BLEU (points)"}


def _values(rows, metric, **where) -> dict:
    return {r["seed"]: r[metric] for r in rows if all(r[k] == v for k, v in where.items()) and r[metric] is not None}


def _gap(rows, metric, arm, base="dense", **cell) -> dict:
    """Per-seed gap of ``arm`` to ``base``, positive = ``arm`` worse. Test-loss gaps are divided
    by the cell's mean dense loss (one number for all seeds: a seed whose dense loss is near zero
    must not blow its ratio up), so a 0.01 gap means 1% of the dense test loss."""
    a, b = _values(rows, metric, arm=arm, **cell), _values(rows, metric, arm=base, **cell)
    if metric == "bleu":
        return {s: b[s] - a[s] for s in set(a) & set(b)}
    dense = _values(rows, metric, arm="dense", **cell)
    scale = statistics.fmean(dense.values()) if dense else None
    return {s: (a[s] - b[s]) / scale for s in set(a) & set(b)} if scale else {}


class Judge:
    """Gates and claims over one study's rows; ``claims()`` lists every judged comparison."""

    def __init__(self, grid: dict, rows: list[dict], pretrains: list[dict], unigram_entropy: float | None):
        self.grid, self.rows, self.pretrains, self.entropy = grid, rows, pretrains, unigram_entropy
        self.margins, self.gates = grid["margins"], grid["gates"]

    def cells(self, arms=("dense",)) -> list[tuple[str, str, str]]:
        keys = sorted({(r["task"], r["size"], r["set"]) for r in self.rows})
        return [k for k in keys if all(_values(self.rows, "test_loss", arm=a, task=k[0], size=k[1], set=k[2])
                                       for a in arms)]

    # ------------------------------------------------------------------ gates
    def gate(self, metric: str, task: str, size: str, set_: str) -> str | None:
        """None when the cell can show a claim on ``metric``; else the reason it cannot."""
        cell = dict(task=task, size=size, set=set_)
        if not _values(self.rows, metric, arm="scratch", **cell):
            return "no scratch arm in this cell, so the pre-training benefit cannot be checked"
        benefit = st.interval(list(_gap(self.rows, metric, "scratch", **cell).values()))
        if benefit is None:
            return "fewer than 2 seeds"
        if benefit.low <= 0:
            return f"pre-training does not beat scratch (95% interval {benefit.low:+.3g}..{benefit.high:+.3g})"
        if metric == "bleu":
            bleu = statistics.fmean(_values(self.rows, "bleu", arm="dense", **cell).values())
            if bleu < self.gates["min_bleu"]:
                return f"dense BLEU {bleu:.1f} below {self.gates['min_bleu']:g}"
        return self.plateau_gate(size)

    def plateau_gate(self, size: str) -> str | None:
        """The dense arm's pre-training must end clearly below a unigram model's loss."""
        losses = _values(self.rows, "pretrain_val_loss", arm="dense", size=size)
        if self.entropy is None or not losses:
            return None if self.entropy is None else "no dense pre-training run of this size"
        loss = statistics.fmean(losses.values())
        if loss > self.gates["plateau_ratio"] * self.entropy:
            return f"pre-training still on its plateau ({loss:.2f} vs unigram entropy {self.entropy:.2f} nats/token)"
        return None

    # ------------------------------------------------------------------ claims
    def claims(self) -> list[dict]:
        out = []
        for metric in METRICS:
            for s in self._sparse_levels("spdf"):
                out += self._no_loss(metric, f"spdf{s}")
            out += self._versus_spdf(metric, "spsf", "spsf{s} (masks kept) worse than spdf{s}")
            out += self._versus_spdf(metric, "eqflop", "spdf{s} better than equal-FLOP dense (eqflop{s})")
            out += self._harder(metric)
            out += self._larger(metric)
            out += self._set_size(metric)
        primary = self.grid["primary"]
        for c in out:
            c["primary"] = all(c["where"].get(k, primary[k]) == primary[k] for k in ("task", "size", "set"))
        return out

    def _sparse_levels(self, kind: str) -> list[int]:
        return sorted({int(r["arm"][len(kind):]) for r in self.rows if r["arm"].startswith(kind)})

    def _entry(self, claim, metric, where, verdict, ci, reason, margin=None, ci90=None, **extra) -> dict:
        n = ci.n if ci else len({r["seed"] for r in self.rows})
        return {"claim": claim, "metric": metric, "where": where, "effect": ci.mean if ci else None,
                "ci_low": ci.low if ci else None, "ci_high": ci.high if ci else None,
                "ci90_low": ci90.low if ci90 else None, "ci90_high": ci90.high if ci90 else None,
                "margin": margin, "n_seeds": n, "verdict": verdict, "reason": reason, **extra}

    def _no_loss(self, metric, arm) -> list[dict]:
        claim = f"{arm}: no significant loss vs dense"
        m = self.margins[metric]
        out = []
        for task, size, set_ in self.cells(("dense", arm)):
            where = dict(task=task, size=size, set=set_)
            gaps = list(_gap(self.rows, metric, arm, **where).values())
            verdict, ci90, ci95 = st.non_inferiority(gaps, m)
            reason = self.gate(metric, task, size, set_)
            if reason:
                verdict = st.UNTESTABLE
            else:
                reason = (f"90% interval of the gap {'below' if verdict == st.HOLDS else 'above' if verdict == st.FAILS else 'straddles'}"
                          f" the margin {m:g}" + (" (and inside +-margin: equivalent)" if st.equivalent(ci90, m) else ""))
            out.append(self._entry(claim, metric, where, verdict, ci95, reason, margin=m, ci90=ci90,
                                   retained=self.retained(arm, **where)))
        return out

    def retained(self, arm, **cell) -> float | None:
        """R = (scratch - arm) / (scratch - dense) on mean test loss: 1 = all of dense's benefit kept."""
        mean = {a: _values(self.rows, "test_loss", arm=a, **cell) for a in ("scratch", "dense", arm)}
        if not all(mean.values()):
            return None
        mean = {a: statistics.fmean(v.values()) for a, v in mean.items()}
        denom = mean["scratch"] - mean["dense"]
        return (mean["scratch"] - mean[arm]) / denom if denom > 0 else None

    def _directional(self, claim, metric, where, diffs, gate_cells, **extra) -> dict:
        verdict, ci = st.directional(diffs)
        reasons = [r for r in (self.gate(metric, *c) for c in gate_cells) if r]
        if reasons:
            return self._entry(claim, metric, where, st.UNTESTABLE, ci, reasons[0], **extra)
        reason = {st.HOLDS: "95% interval above zero", st.FAILS: "95% interval below zero (the other direction)",
                  st.INCONCLUSIVE: "95% interval contains zero", st.UNTESTABLE: "fewer than 2 paired seeds"}[verdict]
        return self._entry(claim, metric, where, verdict, ci, reason, **extra)

    def _versus_spdf(self, metric, kind: str, claim: str) -> list[dict]:
        """Arm ``{kind}NN`` against ``spdfNN``, per seed: positive = ``{kind}NN`` worse (as claimed)."""
        out = []
        for s in self._sparse_levels(kind):
            for task, size, set_ in self.cells(("dense", f"spdf{s}", f"{kind}{s}")):
                where = dict(task=task, size=size, set=set_)
                diffs = st.paired(_gap(self.rows, metric, f"{kind}{s}", **where),
                                  _gap(self.rows, metric, f"spdf{s}", **where))
                out.append(self._directional(claim.format(s=s), metric, where, diffs, [(task, size, set_)]))
        return out

    def _pairs(self, dim: str, order: list[str], arm: str):
        """(fixed dims, lesser, greater) where both values of ``dim`` have the arm and dense."""
        cells = self.cells(("dense", arm))
        idx = {"task": 0, "size": 1, "set": 2}[dim]
        for lo, hi in zip(order, order[1:]):
            for c in cells:
                if c[idx] == lo:
                    other = tuple(hi if i == idx else v for i, v in enumerate(c))
                    if other in cells:
                        yield c, other

    def _dd(self, claim, metric, dim, order, arm, sign=+1) -> list[dict]:
        """Difference of gaps between neighbours in ``order``; ``sign`` orients it as claimed."""
        out = []
        for a, b in self._pairs(dim, order, arm):
            ga = _gap(self.rows, metric, arm, **dict(zip(("task", "size", "set"), a)))
            gb = _gap(self.rows, metric, arm, **dict(zip(("task", "size", "set"), b)))
            diffs = [sign * d for d in st.paired(gb, ga)]
            where = {k: v for k, v, w in zip(("task", "size", "set"), a, b) if v == w}
            where[dim] = f"{a[('task', 'size', 'set').index(dim)]} vs {b[('task', 'size', 'set').index(dim)]}"
            out.append(self._directional(claim, metric, where, diffs, [a, b]))
        return out

    def _harder(self, metric) -> list[dict]:
        order = [t for t in self.grid.get("difficulty", list(self.grid["tasks"])) if t in self.grid["tasks"]]
        return self._dd("harder tasks lose more (spdf75)", metric, "task", order, "spdf75")

    def _larger(self, metric) -> list[dict]:
        from .plan import n_params

        order = sorted(self.grid["sizes"], key=lambda s: n_params(self.grid, s))
        return self._dd("larger models lose less (spdf75)", metric, "size", order, "spdf75",
                        sign=-1)

    def _set_size(self, metric) -> list[dict]:
        order = sorted(self.grid["sets"], key=lambda s: -self.grid["sets"][s])  # full set first
        return self._dd("a smaller fine-tuning set loses more (spdf75)", metric, "set",
                        order, "spdf75")


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
        sizes[size] = {"formula_reduction_75": flop_report(cfg, sparsity=0.75, seq_len=grid["block_size"]).reduction,
                       "logged_reduction_75": statistics.fmean(runs) if runs else None,
                       "weight_matmul_flops_formula": formula, "weight_matmul_flops_counted": counted,
                       "counter_agrees": counted == formula}
    agree = all(s["counter_agrees"] for s in sizes.values())
    return {"claim": "2.5x fewer pre-training FLOPs at 75% sparsity (GPT-3 XL)", "metric": "FLOPs (arithmetic)",
            "where": {}, "effect": xl, "ci_low": None, "ci_high": None, "margin": None, "n_seeds": None, "verdict": "arithmetic" if abs(xl - 2.5) < 0.05 and agree else "formula disagrees",
            "reason": f"the kit's formula gives {xl:.2f}x for GPT-3 XL at T=2048 (embedding not counted); its "
                      "weight-matmul count " + ("equals" if agree else "DIFFERS FROM") +
                      " torch's FlopCounterMode for this grid's models", "sizes": sizes}
