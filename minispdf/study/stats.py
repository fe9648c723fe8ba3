"""Statistics for a handful of seeds: paired differences, t-intervals and the verdict rules.

Every comparison in the study is *paired by seed*: a seed fixes the initial weights and the data
order of every arm, so the noise that two arms share cancels in their per-seed difference. For
``n`` per-seed differences ``d`` the two-sided interval at level ``1 - alpha`` is

    mean(d) +- t(1 - alpha/2, n - 1) * sd(d) / sqrt(n)

and every verdict is read off such an interval, with rules that are fixed before the run (the
margins live in the grid file). Each rule can come out ``holds``, ``fails`` or ``inconclusive``.

Power, before and after a run: with per-seed differences of spread ``sd``, ``n`` seeds give an
interval of half-width ``t(q, n - 1) * sd / sqrt(n)`` (``halfwidth``); the smallest distance from
the decision boundary that ``n`` seeds detect with 80% power is
``(t(q, n - 1) + t(0.8, n - 1)) * sd / sqrt(n)`` (``mde``); ``q`` is 0.95 for the 90% interval of
a non-inferiority claim and 0.975 for the 95% interval of a directional one.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import asdict, dataclass

from scipy.stats import t as student_t

HOLDS, FAILS, INCONCLUSIVE, UNTESTABLE = "holds", "fails", "inconclusive", "untestable"
UNDERPOWERED = "underpowered"  # inconclusive, and the interval is too wide to lean either way
VERDICTS = (HOLDS, FAILS, INCONCLUSIVE, UNDERPOWERED, UNTESTABLE)


@dataclass
class Interval:
    """Mean of ``n`` paired differences with its two-sided interval at ``level``."""

    mean: float
    low: float
    high: float
    n: int
    level: float

    def to_dict(self) -> dict:
        return asdict(self)


def interval(diffs, level: float = 0.95) -> Interval | None:
    """The t-interval of the mean of ``diffs``; None with fewer than two values (no spread)."""
    d = [float(x) for x in diffs if x is not None and math.isfinite(x)]
    if len(d) < 2:
        return None
    mean = statistics.fmean(d)
    half = (float(student_t.ppf(0.5 + level / 2, len(d) - 1)) * statistics.stdev(d)
            / math.sqrt(len(d)))
    return Interval(mean, mean - half, mean + half, len(d), level)


def paired(a: dict, b: dict) -> list[float]:
    """Per-seed ``a[seed] - b[seed]`` over the seeds both have."""
    return [a[s] - b[s] for s in sorted(set(a) & set(b)) if a[s] is not None and b[s] is not None]


def non_inferiority(diffs, margin: float) -> tuple[str, Interval | None, Interval | None]:
    """"No significant loss": ``diffs`` are losses of the new arm (positive = worse) per seed.

    The two one-sided tests (TOST) at 5% each read the 90% interval: the claim *holds* when its
    upper end is below ``+margin`` (the loss is smaller than the margin, one-sided p < 0.05); it
    *fails* when its lower end is above ``+margin`` (a loss larger than the margin); otherwise it
    is inconclusive. Returns (verdict, 90% interval, 95% interval for display).
    """
    ci90, ci95 = interval(diffs, 0.90), interval(diffs, 0.95)
    if ci90 is None:
        return UNTESTABLE, None, None
    if ci90.high < margin:
        return HOLDS, ci90, ci95
    if ci90.low > margin:
        return FAILS, ci90, ci95
    return INCONCLUSIVE, ci90, ci95


def equivalent(ci90: Interval | None, margin: float) -> bool | None:
    """Both one-sided tests of TOST pass: the 90% interval lies inside (-margin, +margin)."""
    return None if ci90 is None else (-margin < ci90.low and ci90.high < margin)


def directional(diffs, level: float = 0.95) -> tuple[str, Interval | None]:
    """A claimed direction, with ``diffs`` oriented so that positive means "as claimed".

    Holds when the interval excludes zero on the positive side, fails when it excludes zero on
    the negative side, inconclusive when it contains zero.
    """
    ci = interval(diffs, level)
    if ci is None:
        return UNTESTABLE, None
    if ci.low > 0:
        return HOLDS, ci
    if ci.high < 0:
        return FAILS, ci
    return INCONCLUSIVE, ci


def halfwidth(sd: float, n: int, q: float) -> float:
    """Expected half-width of the interval of ``n`` differences with spread ``sd`` (``q``: 0.95 or
    0.975)."""
    return float(student_t.ppf(q, n - 1)) * sd / math.sqrt(n) if n > 1 else math.inf


def mde(sd: float, n: int, q: float, power: float = 0.8) -> float:
    """Minimum detectable effect: the distance from the decision boundary that ``n`` seeds detect
    with probability ``power``."""
    return (float(student_t.ppf(q, n - 1) + student_t.ppf(power, n - 1)) * sd / math.sqrt(n)
            if n > 1 else math.inf)


def seeds_needed(sd: float, margin: float, q: float, most: int = 10_000) -> int | None:
    """The fewest seeds whose expected half-width is within ``margin`` (None beyond ``most``)."""
    n = 2
    while halfwidth(sd, n, q) > margin:
        n = n + 1 if n < 64 else n * 2
        if n > most:
            return None
    return n


# ------------------------------------------------------------------------------ many claims at once


def p_below(diffs, bound: float) -> float | None:
    """One-sided p-value of "the mean of ``diffs`` lies below ``bound``" (H0: mean >= bound): the
    test behind a non-inferiority claim's "holds" (p < 0.05 iff the 90% interval ends below)."""
    d = [float(x) for x in diffs if x is not None and math.isfinite(x)]
    if len(d) < 2:
        return None
    sd = statistics.stdev(d)
    if sd == 0:
        return 0.0 if statistics.fmean(d) < bound else 1.0
    return float(student_t.cdf((statistics.fmean(d) - bound) / (sd / math.sqrt(len(d))),
                               len(d) - 1))


def holm(pvalues: dict, alpha: float = 0.05) -> dict:
    """Holm's step-down adjustment of ``{key: p}`` (None: not tested): ``{key: adjusted p}``.

    Sort the m p-values; the i-th smallest is multiplied by (m - i + 1), and adjusted values never
    fall below an earlier one. A claim is rejected at ``alpha`` when its adjusted p is below it,
    which controls the chance of any false "holds" among the m at ``alpha``."""
    tested = sorted((p, k) for k, p in pvalues.items() if p is not None)
    m, out, running = len(tested), {}, 0.0
    for i, (p, k) in enumerate(tested):
        running = max(running, min(1.0, (m - i) * p))
        out[k] = running
    return {k: out.get(k) for k in pvalues}


def seeds_for_power(sd: float, margin: float, true_effect: float, q: float = 0.95,
                    power: float = 0.8,
                    most: int = 10_000) -> int | None:
    """Seeds that give a non-inferiority claim ``power`` to hold when the true L is ``true_effect``
    (below ``margin``): the fewest n with (t(q, n-1) + t(power, n-1)) * sd / sqrt(n) <= margin -
    true_effect.
    None when the true effect is not below the margin, or beyond ``most`` seeds."""
    gap = margin - true_effect
    if gap <= 0 or sd is None:
        return None
    n = 2
    while mde(sd, n, q, power) > gap:
        n = n + 1 if n < 64 else n * 2
        if n > most:
            return None
    return n
