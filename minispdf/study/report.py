"""What a study writes: results.csv, claims.json, per-cell tables, figures and the README section.

Everything here is computed from the rows the runner wrote and the run's declaration; nothing is
typed in by hand, so the report can be regenerated from a run folder at any time
(``minispdf reproduce --report DIR``).
"""

from __future__ import annotations

import csv
import io
import os
import platform
import statistics
import subprocess

from ..errors import MiniSPDFError
from ..fileio import atomic_write_bytes, write_text
from . import stats as st
from .claims import LABEL, MEASURES, UNIT, _values, abs_gap, benefit_lost

CSV_FIELDS = ("task", "size", "set", "arm", "seed", "n_params", "pretrain_sparsity",
              "pretrain_steps",
              "pretrain_tokens", "pretrain_flops", "pretrain_val_loss", "n_train_inputs",
              "n_train_pairs",
              "distinct_pairs_seen", "finetune_val_loss", "test_loss", "test_perplexity", "bleu",
              "n_test_inputs",
              "finetune_seconds", "eval_seconds", "cell")
CLAIM_FIELDS = ("id", "claim", "kind", "metric", "measure", "where", "effect", "ci_low", "ci_high",
                "ci90_low",
                "ci90_high", "margin", "n_seeds", "sd", "mde", "abs_effect", "abs_ci_low",
                "abs_ci_high", "abs_unit",
                "verdict", "reason", "primary", "declaration", "p_holds", "holm_p_holds",
                "holm_verdict",
                "holm_family", "critical_margin", "critical_abs", "critical_share_of_dense",
                "unusable_seeds",
                "confounded")
ARM_ORDER = ("dense", "spdf50", "spdf75", "spdf90", "spsf50", "spsf75", "spsf90", "eqflop50",
             "eqflop75", "set75",
             "rigl75", "gmp75", "nm24", "vspdf75", "scratch")
FIGURES = ("pretrain_loss_vs_flops.png", "gaps_to_dense.png", "claims.png", "lost_vs_flops.png")


def arm_key(arm: str):
    return (ARM_ORDER.index(arm) if arm in ARM_ORDER else len(ARM_ORDER), arm)


def machine_info() -> dict:
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((ln.split(":", 1)[1].strip() for ln in f
                        if ln.lower().startswith("model name")), cpu)
    except OSError:
        pass
    info = {"cpu": cpu, "cores": os.cpu_count(), "python": platform.python_version(),
            "torch": torch.__version__}
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def git_commit() -> str:
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root,
                              capture_output=True, text=True,
                              timeout=10)
        if head.returncode != 0:
            return "unknown (not a git checkout)"
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "minispdf"], cwd=root,
                               capture_output=True,
                               text=True, timeout=10)
        return (head.stdout.strip()
                + (" + uncommitted changes to minispdf/" if dirty.stdout.strip() else ""))
    except (OSError, subprocess.SubprocessError):
        return "unknown (git not available)"


def _csv(rows, fields) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(fields), extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: ("" if r.get(k) is None else r.get(k)) for k in fields})
    return buf.getvalue()


def _f(x, fmt="{:.3f}") -> str:
    return "-" if x is None else fmt.format(x)


def _ci(mean, low, high, fmt="{:+.3f}") -> str:
    if mean is None:
        return "-"
    return (fmt.format(mean)
            + (f" [{fmt.format(low)}, {fmt.format(high)}]" if low is not None else ""))


def summarise(rows: list[dict]) -> list[dict]:
    """Per (task, size, set, arm): means over seeds and the paired gap to dense with its 95%
    interval."""
    out = []
    for task, size, set_, arm in sorted({(r["task"], r["size"], r["set"], r["arm"]) for r in rows},
                                        key=lambda k: (*k[:3], arm_key(k[3]))):
        cell = dict(task=task, size=size, set=set_)
        rs = [r for r in rows if r["arm"] == arm and all(r[k] == v for k, v in cell.items())]
        rec = {**cell, "arm": arm, "n_seeds": len(rs), "n_params": rs[0]["n_params"],
               "distinct_pairs_seen": rs[0]["distinct_pairs_seen"]}
        dense_flops = statistics.fmean(_values(rows, "pretrain_flops", arm="dense", **cell).values()
                                       or [0.0])
        rec["pretrain_flops_x_dense"] = (statistics.fmean(r["pretrain_flops"] for r in rs)
                                         / dense_flops
                                         if dense_flops else None)
        for m in ("pretrain_val_loss", "test_loss", "bleu"):
            vals = [r[m] for r in rs if r[m] is not None]
            rec[m] = statistics.fmean(vals) if vals else None
            rec[m + "_sd"] = statistics.stdev(vals) if len(vals) > 1 else None
        for m in ("test_loss", "bleu"):
            lost = st.interval(list(benefit_lost(rows, m, arm, cell).values())) if (
                arm not in ("dense", "scratch")) \
                else None
            gap = (st.interval(list(abs_gap(rows, m, arm, cell).values())) if arm != "dense"
                   else None)
            rec[f"lost_{m}"], rec[f"gap_{m}"] = ((lost.to_dict() if lost else None),
                                                 (gap.to_dict() if gap else None))
        out.append(rec)
    return out


def summary_markdown(summary: list[dict]) -> str:
    lines = []
    for cell in sorted({(r["task"], r["size"], r["set"]) for r in summary}):
        rs = [r for r in summary if (r["task"], r["size"], r["set"]) == cell]
        lines += [f"### task {cell[0]}, model {cell[1]} ({rs[0]['n_params'] / 1e3:.0f}k "
                  f"parameters), "
                  f"fine-tuning set {cell[2]} (~{rs[0]['distinct_pairs_seen']:.0f} "
                  f"distinct pairs seen)", "",
                  "| arm | seeds | pre-training FLOPs (x dense) | pre-training val loss | test "
                  "loss | gap to dense "
                  "(nats, 95% CI) | L on test loss | BLEU | BLEU gap (points) | L on BLEU |",
                  "|---" * 10 + "|"]
        for r in rs:
            cis = {k: r[k] or {}
                   for k in ("gap_test_loss", "lost_test_loss", "gap_bleu", "lost_bleu")}
            show = {k: _ci(v.get("mean"), v.get("low"), v.get("high"),
                           "{:+.1f}" if k == "gap_bleu" else "{:+.3f}")
                    for k, v in cis.items()}
            lines.append(f"| {r['arm']} | {r['n_seeds']} | "
                         f"{_f(r['pretrain_flops_x_dense'], '{:.2f}')} | "
                         f"{_f(r['pretrain_val_loss'])} | {_f(r['test_loss'])} | "
                         f"{show['gap_test_loss']} | "
                         f"{show['lost_test_loss']} | {_f(r['bleu'], '{:.1f}')} | "
                         f"{show['gap_bleu']} | "
                         f"{show['lost_bleu']} |")
        lines.append("")
    return "\n".join(lines)


def _where(c: dict) -> str:
    return ", ".join(f"{k} {v}" for k, v in c["where"].items())


def _primary_rows(results: dict) -> list[dict]:
    p = results["grid"]["primary"]
    return [r for r in results["summary"]
            if (r["task"], r["size"], r["set"]) == (p["task"], p["size"], p["set"])]


def arms_table(results: dict) -> str:
    """The primary cell, one row per pre-trained arm: its pre-training FLOPs against dense's, L on
    test loss and BLEU with 95% intervals, and the verdict of its "no significant loss" claims."""
    verdicts = {(c["claim"].split(":")[0], c["measure"]): c["verdict"] for c in results["claims"]
                if c["kind"] == "no_loss" and c["primary"]}
    lines = ["| arm | pre-training FLOPs (x dense) | L on test loss [95% CI] | no loss? | L on "
             "BLEU [95% CI] | "
             "no loss? |", "|---" * 6 + "|"]
    for r in _primary_rows(results):
        if r["arm"] in ("dense", "scratch"):
            continue
        cis = {m: r[f"lost_{m}"] or {} for m in MEASURES}
        cols = [f"{_ci(cis[m].get('mean'), cis[m].get('low'), cis[m].get('high'))} | "
                f"{verdicts.get((r['arm'], m), '-')}" for m in MEASURES]
        lines.append(
            f"| {r['arm']} | {_f(r['pretrain_flops_x_dense'], '{:.2f}')} | {cols[0]} | {cols[1]} |")
    return "\n".join(lines)


def _effect(c: dict) -> str:
    return _ci(c["effect"], c["ci_low"], c["ci_high"], "{:+.3f}")


def _absolute(c: dict) -> str:
    fmt = "{:+.1f}" if c["measure"] == "bleu" else "{:+.3f}"
    return _ci(c["abs_effect"], c["abs_ci_low"], c["abs_ci_high"], fmt) + f" {UNIT[c['measure']]}"


def _holm(c: dict) -> str:
    return c.get("holm_verdict") or "-"


def _critical(c: dict) -> str:
    """The smallest margin at which a no-loss claim would hold: L (nats or BLEU points, share of
    dense)."""
    if c.get("critical_margin") is None:
        return "-"
    share = c.get("critical_share_of_dense")
    unit = "BLEU" if c["measure"] == "bleu" else "nats"
    return (f"{c['critical_margin']:.3f} ({_f(c.get('critical_abs'), '{:.3f}')} {unit}"
            + (f", {share:.0%} of dense" if share is not None else "") + ")")


def _unusable(c: dict) -> str:
    seeds = c.get("unusable_seeds") or []
    return (f"; seeds without L (dense did not beat scratch): {', '.join(map(str, seeds))}" if seeds
            else "")


def claims_markdown(claims: list[dict]) -> str:
    lines = ["| claim | measure | where | L [95% CI] | absolute gap [95% CI] | margin | seeds | "
             "MDE | verdict "
             "| after Holm | critical margin | reason |",
             "|---" * 12 + "|"]
    for c in claims:
        lines.append(f"| {c['claim']} | {LABEL[c['measure']]} | {_where(c)} | {_effect(c)} | "
                     f"{_absolute(c)} | "
                     f"{c['margin']:g} | {c['n_seeds']} | {_f(c['mde'], '{:.3f}')} | "
                     f"**{c['verdict']}** | "
                     f"{_holm(c)} | {_critical(c)} | {c['reason']}{_unusable(c)} |")
    families = sorted({c["holm_family"] for c in claims if c.get("holm_family")})
    return "\n".join(lines + ([""] + [f"Holm's correction runs over {f}." for f in families]
                              if families else []))


def headlines(claims: list[dict]) -> list[tuple[dict, list[dict]]]:
    """(the claim at the primary cell, or its first comparison; all its comparisons) per claim and
    measure."""
    groups: dict = {}
    for c in claims:
        groups.setdefault((c["claim"], c["measure"]), []).append(c)
    order = sorted(groups, key=lambda k: (MEASURES.index(k[1]),
                                          not groups[k][0]["kind"] == "no_loss", k[0]))
    return [(next((c for c in groups[k] if c["primary"]), groups[k][0]), groups[k]) for k in order]


def headline_table(claims: list[dict]) -> str:
    """One row per claim and measure at the grid's primary cell (or its one comparison); the other
    cells as a tally."""
    lines = ["| claim | measure | where | L [95% CI] | absolute gap | verdict | after Holm | "
             "critical margin "
             "| all cells |", "|---" * 9 + "|"]
    for head, cs in headlines(claims):
        tally = ", ".join(f"{n} {v}" for v in st.VERDICTS
                          if (n := sum(c["verdict"] == v for c in cs)))
        verdict = head["verdict"] + (f" ({head['reason']})"
                                     if head["verdict"] in (st.UNTESTABLE, st.UNDERPOWERED)
                                     else "")
        verdict += (f" (confounded: {', '.join(head['confounded'])})" if head.get("confounded")
                    else "")
        lines.append(f"| {head['claim']} | {LABEL[head['measure']]} | {_where(head)} | "
                     f"{_effect(head)} | "
                     f"{_absolute(head)} | **{verdict}** | {_holm(head)} | "
                     f"{_critical(head)} | {tally} |")
    return "\n".join(lines)


PLAIN = {st.HOLDS: "supports", st.FAILS: "contradicts", st.INCONCLUSIVE: "cannot decide",
         st.UNDERPOWERED: "cannot decide with these seeds", st.UNTESTABLE: "cannot test"}
CONFOUNDED = "cannot attribute (the two sides differ in more than the one factor the claim names)"


def plain_words(claims: list[dict]) -> str:
    """What the study supports, contradicts and cannot test, per claim and measure (its primary
    comparison, or its first), in words generated from the verdicts."""
    groups: dict[str, list[str]] = {v: [] for v in (*PLAIN.values(), CONFOUNDED)}
    for head, _ in headlines(claims):
        why = f"; {head['reason']}" if head["verdict"] == st.UNTESTABLE else ""
        if head.get("confounded"):
            groups[CONFOUNDED].append(f"{head['claim']} on {head['measure'].replace('_', ' ')} "
                                      f"({_where(head)}: L "
                                      f"{_effect(head)}, {head['verdict']}; differs in "
                                      f"{', '.join(head['confounded'])})")
            continue
        if head.get("holm_verdict") and head["holm_verdict"] != head["verdict"]:
            why += f"; {head['holm_verdict']} after Holm over {head['holm_family']}"
        groups[PLAIN[head["verdict"]]].append(
            f"{head['claim']} on {head['measure'].replace('_', ' ')} ({_where(head)}: L "
            f"{_effect(head)}{why})")
    return "\n".join(f"- **This study {k}:** " + "; ".join(v) + "." for k, v in groups.items() if v)


def sync_includes(path: str, root: str | None = None) -> bool:
    """Refresh the blocks of ``path`` between ``<!-- include: FILE -->`` and ``<!-- /include -->``
    with the current text of FILE (relative to ``root``, default the folder of ``path``); returns
    whether anything changed. The README's study numbers come from results/ this way."""
    import re

    root = root or os.path.dirname(os.path.abspath(path))
    with open(path) as f:
        text = f.read()

    def fill(m):
        try:
            with open(os.path.join(root, m.group(1))) as g:
                return f"<!-- include: {m.group(1)} -->\n{g.read().rstrip()}\n<!-- /include -->"
        except OSError as e:
            raise MiniSPDFError(f"{path} includes {m.group(1)}, which cannot be read "
                                f"({e.strerror}): run `minispdf "
                                "reproduce --report` on its folder, or fix the "
                                "include line") from None

    new = re.sub(r"<!-- include: (\S+) -->\n.*?<!-- /include -->", fill, text, flags=re.S)
    if new != text:
        write_text(path, new)
    return new != text


# ------------------------------------------------------------------------------ figures


def plot_pretraining(results: dict, path: str, size: str | None = None) -> None:
    """Pre-training loss against FLOPs, one line per pre-training recipe (seed 0) of one size."""
    from .. import plots

    size = size or results["grid"]["primary"]["size"]
    runs = {}
    for p in sorted(results["pretrains"],
                    key=lambda p: (p["spec"]["sparsity"], -p["spec"]["steps"])):
        s = p["spec"]
        if s["size"] != size or s["seed"] != 0:
            continue
        label = f"{s['sparsity']:.0%} sparse" if s["sparsity"] else f"dense, {s['steps']} steps"
        runs[label] = {"history": [{"step": c[0], "tokens": c[1], "flops": c[2], "loss": c[3]}
                                   for c in p["curve"]]}
    ax = plots.plot_curves(runs, x="flops", y="loss", val=False, logx=True,
                           title=f"Pre-training loss against FLOPs ({size}, seed 0)")
    if results.get("unigram_entropy"):
        ax.axhline(results["unigram_entropy"], color="gray", linestyle=":", linewidth=1,
                   label="unigram entropy of the corpus")
        ax.legend(fontsize=9)
    _save(ax, path)


def plot_gaps(results: dict):
    """L, the share of the pre-training benefit each arm loses, per cell, with 95% intervals and
    the declared margin: test loss and BLEU side by side. Returns the figure."""
    from .. import plots

    plt = plots._plt()
    rows = [r for r in results["summary"] if r["arm"] not in ("dense", "scratch")]
    # one panel above the other: side by side, the figure is too wide for a page at 100% zoom
    fig, axes = plt.subplots(2, 1, figsize=(9, 2 * (1.1 + 0.3 * max(1, len(rows)))))
    for ax, m in zip(axes, ("test_loss", "bleu")):
        pts = [{"label": f"{r['task']} {r['size']} {r['set']}: {r['arm']}", "group": r["arm"],
                **({k: r[f'lost_{m}'][k] for k in ("mean", "low", "high")} if r[f"lost_{m}"]
                   else {"mean": None})}
               for r in rows]
        plots.plot_intervals(pts, ax=ax, xlabel="share of the pre-training benefit lost (> 0: "
                                                "worse than dense)",
                             margin=results["grid"]["margins"][m],
                             colors={a: f"C{i}" for i, a in enumerate(ARM_ORDER)},
                             title=f"{LABEL[m]}, mean of seeds")
    fig.tight_layout()
    return fig


def plot_claims(results: dict, path: str) -> None:
    """One point per claim (its primary or first comparison): L with its 95% interval, oriented
    so that > 0 is the loss ("no significant loss") or the claimed direction."""
    from .. import plots

    plt = plots._plt()
    fig, axes = plt.subplots(2, 1, figsize=(9, 7.2))  # stacked: 9 in at 110 dpi fits a page
    for ax, m in zip(axes, ("test_loss", "bleu")):
        cs = [c for c, _ in headlines(results["claims"]) if c["measure"] == m]
        plots.plot_intervals([{"label": f"{c['claim']} [{c['verdict']}]", "mean": c["effect"],
                               "low": c["ci_low"],
                               "high": c["ci_high"]} for c in cs], ax=ax,
                             title=f"claims on {LABEL[m]}",
                             margin=results["grid"]["margins"][m],
                             xlabel="> 0: as the claim says (for \"no significant loss\": "
                                    "the share lost)")
    _save(axes[0], path)


def plot_lost_vs_flops(results: dict):
    """Quality kept per pre-training FLOP at the primary cell: one point per pre-trained arm, L
    (the share of the pre-training benefit lost) with its 95% interval against the arm's
    pre-training FLOPs relative to dense; dense sits at (1, 0). Returns the figure."""
    from .. import plots

    plt = plots._plt()
    rows = sorted([r for r in _primary_rows(results)
                   if r["arm"] != "scratch" and not r["arm"].startswith("spsf")
                   # spsf: spdf's pre-training
                   and r["pretrain_flops_x_dense"]], key=lambda r: arm_key(r["arm"]))
    fig, axes = plt.subplots(1, 2, figsize=(9, 4.2))  # 9 in at 110 dpi fits a page's column
    for ax, m in zip(axes, MEASURES):
        seen: dict[float, int] = {}
        for r in rows:
            ci = (r[f"lost_{m}"]
                  or ({"mean": 0.0, "low": 0.0, "high": 0.0} if r["arm"] == "dense" else None))
            if ci is None:
                continue
            same = seen[round(r["pretrain_flops_x_dense"],
                              3)] = seen.get(round(r["pretrain_flops_x_dense"], 3), -1) + 1
            # equal FLOPs by design (eqflop): side by side
            x = r["pretrain_flops_x_dense"] + 0.006 * same
            ax.errorbar([x], [ci["mean"]],
                        yerr=[[ci["mean"] - ci["low"]], [ci["high"] - ci["mean"]]], fmt="o",
                        color=f"C{arm_key(r['arm'])[0] % 10}", capsize=3)
            ax.annotate(r["arm"], (x, ci["mean"]), textcoords="offset points", xytext=(5, 4),
                        fontsize=9)
        ax.axhline(0, color="k", linewidth=0.8)
        ax.axhline(results["grid"]["margins"][m], color="k", linestyle="--", linewidth=0.8,
                   label="margin")
        ax.set_xlabel("pre-training FLOPs (x dense)")
        ax.set_ylabel(f"{LABEL[m]} (> 0: worse than dense)")
        ax.set_title(f"{LABEL[m]} against pre-training FLOPs", fontsize=10)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=9)
    p = results["grid"]["primary"]
    fig.suptitle(f"task {p['task']}, model {p['size']}, set {p['set']}: mean of seeds, "
                 "95% intervals",
                 fontsize=10)
    fig.tight_layout()
    return fig


def _save(ax, path: str) -> None:
    from .. import plots

    fig = ax.figure
    fig.tight_layout()
    atomic_write_bytes(path, lambda f: fig.savefig(f, dpi=110, format="png"))
    plots._plt().close(fig)
