"""The README's section of a study: how it was run, its gates and rules, one claims table, the
frontier where the grid has one, the figures. Generated from the results, never typed in."""

from __future__ import annotations

from ..errors import counted
from . import frontier
from .claims import holm_family
from .report import FIGURES, _ci, _f, _primary_rows, headline_table, plain_words


def readme_section(results: dict, link: str = "") -> str:
    """The README's results section: how it was run, the gates, one claims table, the figures
    (linked as ``link + name``, e.g. ``results/default/``)."""
    lines = _frontier_lines(results, link) + [
        _run_line(results), "",
        _gates_line(results), "",
        _rules_line(results), "",
        headline_table(results["claims"]), "",
        plain_words(results["claims"]), "",
        _flop_line(results), "",
        f"![gaps to dense with 95% intervals]({link}{FIGURES[1]})",
        f"![the primary cell's claims]({link}{FIGURES[2]})",
    ]
    return "\n".join(lines) + "\n"


def _run_line(results: dict) -> str:
    """How the study was run: the grid, the last command, the machine, the time, the cells."""
    from .plan import fmt_duration

    g, t = results["grid"], results["timing"]
    inv = results["invocations"][-1] if results["invocations"] else {}
    return (
        f"Grid `{g['name']}`: {g['description']}. Command: `{inv.get('command', '?')}`; machine: "
        f"{results['machine']['cpu']} ({results['machine']['cores']} cores), torch "
        f"{results['machine']['torch']}, "
        f"{counted(t['jobs'], 'parallel job')} of {counted(t['threads'], 'thread')}; commit "
        f"`{results['commit']}`; wall time "
        f"{fmt_duration(t['wall_s'])} over {counted(len(results['invocations']), 'invocation')} "
        f"(estimate {fmt_duration(t['estimate_s'])}); "
        f"{results['n_cells_done']}/{results['n_cells']} cells."
        + (f" Note: {inv['note']}" if inv.get("note") else ""))


def _gates_line(results: dict) -> str:
    """The gates per cell: dense BLEU, what pre-training buys over none, dense's val loss."""
    dense = [r for r in results["summary"] if r["arm"] == "dense"]
    return (
        "Gates, per cell (task/size/set): dense BLEU "
        + ", ".join(f"{r['task']}/{r['size']}/{r['set']} {_f(r['bleu'], '{:.1f}')}" for r in dense)
        + "; what dense pre-training buys over none (scratch minus dense, test loss, nats) "
        + ", ".join(f"{r['task']}/{r['size']}/{r['set']} "
                    f"{_ci(gap['mean'], gap['low'], gap['high'], '{:.2f}')}"
                    for r in results["summary"]
                    if r["arm"] == "scratch" and (gap := r["gap_test_loss"]))
        + "; dense pre-training val loss "
        + ", ".join(sorted({f"{r['size']} {r['pretrain_val_loss']:.2f}" for r in dense}))
        + f" nats/token against the corpus' unigram entropy "
          f"{_f(results.get('unigram_entropy'), '{:.2f}')}.")


def _rules_line(results: dict) -> str:
    """How every claim is judged: L, the declared rules and margins, the rows shown."""
    g = results["grid"]
    return (
        f"Every claim is judged on L, the share of the pre-training benefit an arm loses, per seed "
        "((arm - dense) / (scratch - dense) on test loss; (dense - arm) / (dense - scratch) on "
        "BLEU), by the rules "
        f"in `{results['declaration']['file']}` (written {results['declaration']['written']}, "
        f"before the first job): "
        f"\"no significant loss\" holds when the 90% interval of L lies below the margin "
        f"{g['margins']['test_loss']:g}, directional claims when the 95% interval of their "
        f"difference of L excludes "
        f"zero; an inconclusive interval wider than {g['gates']['precision']:g} x the margin is "
        f"underpowered. Rows "
        f"show the primary cell (task {g['primary']['task']}, model {g['primary']['size']}, set "
        f"{g['primary']['set']}) or the claim's one comparison; all cells are in `claims.md`. "
        + _margin_words(results))


def _flop_line(results: dict) -> str:
    """The FLOP claim: the formula's reduction at 75% per model, and what the logs count."""
    flop = results["flop_claim"]
    return (
        f"FLOPs (arithmetic, not a measurement): {flop['reason']}; at 75% the formula gives "
        + ", ".join(f"{k} {v['formula_reduction_75']:.2f}x" for k, v in flop["sizes"].items())
        + " for this grid's models (the training logs count "
        + ", ".join(f"{k} {v['logged_reduction_75']:.2f}x" for k, v in flop["sizes"].items()
                    if v["logged_reduction_75"])
        + ").")


def _margin_words(results: dict) -> str:
    """The margin on L in the primary cell's own units, Holm's family, and the critical margins."""
    g = results["grid"]
    rows = {r["arm"]: r for r in _primary_rows(results)}
    words = []
    if "dense" in rows and "scratch" in rows and rows["dense"]["test_loss"]:
        ben = rows["scratch"]["test_loss"] - rows["dense"]["test_loss"]
        m = g["margins"]["test_loss"]
        words.append(f"At the primary cell the margin {m:g} of L on test loss is "
                     f"{m * ben:.3f} nats, "
                     f"{m * ben / rows['dense']['test_loss']:.0%} of dense's test loss (it grows "
                     f"with scratch's gap).")
    alpha, how = holm_family(g)
    when = ("declared before the run" if how == "declared"
            else "applied after the run: this study declared no family")
    words.append(f"Beside each raw verdict is the one Holm's correction gives over each measure's "
                 f"no-loss claims (alpha {alpha:g}, {when}), "
                 "and each no-loss claim's critical margin: the upper end of its 90% interval, the "
                 "smallest margin at "
                 "which it would hold (in L, and in nats or BLEU points and as a share of "
                 "dense's value).")
    return " ".join(words)


def _frontier_lines(results: dict, link: str) -> list[str]:
    """A frontier grid's section opens with its answer: the figure, one row per method, the
    words."""
    fr = results.get("frontier")
    if not fr:
        return []
    r = fr["rules"]
    return [f"![downstream test loss against pre-training FLOPs]({link}frontier.png)", "",
            frontier.summary_table(fr, results["claims"]), "",
            f"The iso-quality FLOP ratio is dense's pre-training FLOPs at the method's downstream "
            f"{fr['measure'].replace('_', ' ')} over the method's own (> 1: more FLOP-efficient "
            f"than dense; the FLOP "
            f"reduction at equal steps is what the mask alone saves), per seed on dense's curve, "
            f"linear in log FLOPs, "
            f"with a {r.get('level', 0.95):.0%} percentile bootstrap over seeds "
            f"({r.get('resamples', 2000)} draws); "
            "\"> x\" and \"< x\" are bounds where a loss lies outside dense's range (never "
            "extrapolated). Verdicts: "
            "raw / after Holm. Every run: [frontier.md](" + link + "frontier.md).", ""] + [
            f"- {line}" for line in frontier.sentences(fr, results["claims"])] + [
            "", frontier.power_line(fr, results["claims"]), ""]
