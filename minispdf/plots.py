"""Figures and small read-outs for the lessons and the study (the bench's two are in
:mod:`minispdf.bench.summary`). This module only *shows* what the library returns -- training
histories, masks, ``sparsity_report``, ``masks.regrowth`` and ``flop_report`` outputs -- so each
lesson stays a few readable lines. Every function takes an optional matplotlib ``ax`` and returns
the axes it drew on, with a title, axis labels and (where there is more than one series) a legend.
The diagrams of the model and the recipes are in :mod:`minispdf.diagrams` (re-exported here).
matplotlib is imported on first use (:mod:`minispdf.canvas`), so importing this module costs
nothing.
"""

from __future__ import annotations

import math
from typing import Mapping, Sequence

import torch

from .canvas import axes as _axes, pyplot as _plt  # the study's report calls plots._plt() too
from .diagrams import draw_block, draw_schedules  # noqa: F401  (the lessons' plots.draw_block())
from .errors import MiniSPDFError

X_LABELS = {
    "step": "optimizer step",
    "tokens": "training tokens (target tokens when fine-tuning)",
    "flops": "training FLOPs (theoretical: sparse matmuls counted at their density)",
    "flops_dense": "training FLOPs if every weight were dense",
}
Y_LABELS = {"loss": "training loss", "val_loss": "validation loss", "lr": "learning rate"}

# component -> colour, fixed so that every FLOP figure uses the same colours
COMPONENT_COLORS = {
    "embedding": "#bbbbbb", "qkv": "#1f77b4", "attn_scores": "#ff7f0e", "softmax": "#ffbb78",
    "attn_values": "#d62728", "attn_out": "#aec7e8", "mlp": "#2ca02c", "logits": "#9467bd",
}


# ------------------------------------------------------------------------------ training curves


def smooth(values: Sequence[float], alpha: float = 0.9) -> list[float]:
    """Exponential moving average with bias correction (the first points are not dragged to 0)."""
    if not 0.0 <= alpha < 1.0:
        raise MiniSPDFError(f"alpha={alpha} must be in [0, 1)")
    out, avg = [], 0.0
    for i, v in enumerate(values, 1):
        avg = alpha * avg + (1 - alpha) * v
        out.append(avg / (1 - alpha ** i))
    return out


def history(result, y: str = "loss", x: str = "step") -> tuple[list[float], list[float]]:
    """``(xs, ys)`` of one quantity from a training result (``pretrain``/``finetune``/``train``).

    ``result`` is the returned dict (with its ``history``) or the history list itself. Training
    records carry ``loss``; evaluation records carry ``val_loss``. Both carry step and FLOPs.
    """
    records = result["history"] if isinstance(result, Mapping) else result
    pts = [(r[x], r[y]) for r in records if y in r and x in r]
    return [p[0] for p in pts], [p[1] for p in pts]


def plot_curves(runs: Mapping[str, dict], x: str = "step", y: str = "loss", ax=None,
                smooth_alpha: float = 0.9,
                val: bool = True, title: str | None = None, logx: bool = False,
                offsets: Mapping[str, float] | None = None):
    """One line per run against ``x``: the (smoothed) training loss with validation losses as dots
    (``y="loss"``), or any other logged quantity as a line with markers (e.g. ``y="val_loss"``).

    ``runs`` maps a label to a training result. ``x`` is "step", "tokens", "flops" or
    "flops_dense". ``offsets`` shifts a run along x (e.g. the FLOPs already spent before a phase).
    """
    ax = _axes(ax)
    for i, (label, result) in enumerate(runs.items()):
        color = f"C{i}"
        shift = (offsets or {}).get(label, 0.0)
        xs, ys = history(result, y, x)
        if xs and y == "loss":
            ax.plot([v + shift for v in xs], smooth(ys, smooth_alpha) if smooth_alpha else ys,
                    color=color,
                    label=label + (" (smoothed)" if smooth_alpha and len(runs) == 1 else ""))
        elif xs:
            ax.plot([v + shift for v in xs], ys, "o-", color=color, markersize=4, label=label)
        if val and y == "loss":
            vx, vy = history(result, "val_loss", x)
            if vx:
                ax.plot([v + shift for v in vx], vy, "o", color=color, markersize=4,
                        label=None if xs else label)
    if logx:
        ax.set_xscale("log")
    elif x.startswith("flops"):
        from matplotlib.ticker import EngFormatter

        ax.xaxis.set_major_formatter(EngFormatter())  # 200G, 1.5T: no offset text over the label
    ax.set_xlabel(X_LABELS.get(x, x))
    ax.set_ylabel(Y_LABELS.get(y, y)
                  + (" (line: train, dots: validation)" if val and y == "loss" else ""))
    ax.set_title(title or f"{Y_LABELS.get(y, y)} vs {X_LABELS.get(x, x).split(' (')[0]}")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=9)
    return ax


# ------------------------------------------------------------------------------ masks


def show_mask(mask: torch.Tensor, ax=None, title: str | None = None, crop: int | None = 64):
    """Draw a 2-D bool mask as an image: black = kept weight, white = held at zero.

    Only the top-left ``crop`` x ``crop`` corner is drawn (None: all of it), so single weights
    stay visible; the title reports the kept fraction of the *whole* mask.
    """
    if mask.dim() != 2:
        raise MiniSPDFError(f"show_mask needs a 2-D mask, got shape {tuple(mask.shape)}")
    ax = _axes(ax, figsize=(3.2, 3.2))
    m = mask.detach().bool().cpu()
    shown = m if crop is None else m[:crop, :crop]
    ax.imshow(shown.float().numpy(), cmap="Greys", vmin=0, vmax=1, interpolation="nearest")
    kept = m.float().mean().item()
    ax.set_title(f"{title + chr(10) if title else ''}{kept:.0%} kept of {m.shape[0]}x{m.shape[1]}",
                 fontsize=9)
    ax.set_xlabel(f"input feature (first {shown.shape[1]})")
    ax.set_ylabel(f"output feature (first {shown.shape[0]})")
    return ax


def show_masks(masks: Mapping[str, torch.Tensor], crop: int | None = 64, title: str | None = None):
    """:func:`show_mask` images, one per labelled mask, at most 3 a row. Returns the figure."""
    plt = _plt()
    n = len(masks)
    if n == 0:
        raise MiniSPDFError("show_masks needs at least one mask")
    cols = n if n <= 3 else math.ceil(n / 2)  # at most 3 a row: wider, the page shrinks it
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 3.6 * rows), squeeze=False)
    for ax, (label, m) in zip(axes.flat, masks.items()):
        show_mask(m, ax=ax, title=label, crop=crop)
    for ax in list(axes.flat)[n:]:
        ax.set_visible(False)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def short_name(param_name: str) -> str:
    """``transformer.h.3.attn.c_attn.weight`` -> ``h3.attn.c_attn``."""
    s = param_name.replace("transformer.", "").replace(".weight", "")
    parts = s.split(".")
    if len(parts) > 1 and parts[0] == "h":
        s = f"h{parts[1]}." + ".".join(parts[2:])
    return s


def plot_layer_sparsity(reports: Mapping[str, dict], ax=None, title: str | None = None):
    """Grouped bars: the sparsity of every sparsified tensor, one bar colour per report.

    ``reports`` maps a label to a :func:`minispdf.sparsity_report` result.
    """
    ax = _axes(ax, figsize=(9, 4))
    labels = list(reports)
    if not labels:
        raise MiniSPDFError("plot_layer_sparsity needs at least one report")
    names = [r["name"] for r in reports[labels[0]]["layers"]]
    width = 0.8 / len(labels)
    for i, label in enumerate(labels):
        by_name = {r["name"]: r["sparsity"] for r in reports[label]["layers"]}
        xs = [j + (i - (len(labels) - 1) / 2) * width for j in range(len(names))]
        total = reports[label]["total"]["sparsity"]
        ax.bar(xs, [by_name.get(n, 0.0) for n in names], width=width,
               label=f"{label} (overall {total:.0%})")
    ax.set_xticks(range(len(names)))
    ax.set_xticklabels([short_name(n) for n in names], rotation=60, ha="right", fontsize=9)
    ax.set_xlabel("sparsified weight matrix (block.module)")
    ax.set_ylabel("sparsity (fraction of weights at zero)")
    ax.set_ylim(0, 1)
    ax.set_title(title or "Sparsity of each sparsified weight matrix")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=9)
    return ax


def plot_regrowth(stats: dict, ax=None, title: str | None = None, bins: int = 60):
    """Histograms of |w| after dense training: weights that had been pruned vs weights kept all
    along."""
    ax = _axes(ax)
    pruned, kept = stats["pruned_abs"], stats["kept_abs"]
    top = (float(max(pruned.max() if pruned.numel() else 0, kept.max() if kept.numel() else 0))
           or 1.0)
    edges = torch.linspace(0, top, bins + 1).tolist()
    ax.hist(kept.numpy(), bins=edges, alpha=0.6,
            label=f"kept by the mask (mean |w| {kept.mean():.4f})")
    ax.hist(pruned.numpy(), bins=edges, alpha=0.6,
            label=f"pruned, then densified (mean |w| {pruned.mean():.4f})")
    ax.set_yscale("log")
    ax.set_xlabel("|weight| after dense training")
    ax.set_ylabel("number of weights (log)")
    ax.set_title(title or "Formerly pruned weights after dense training")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=9)
    return ax


# ------------------------------------------------------------------------------ FLOPs


def plot_flop_breakdown(reports: Mapping[str, object], ax=None, title: str | None = None):
    """Stacked bars of forward FLOPs per component: for each model a dense and a sparse bar,
    both as a fraction of that model's dense total, annotated with the training reduction.

    ``reports`` maps a label to a :class:`minispdf.flops.FlopReport` (``flop_report(...)``).
    """
    ax = _axes(ax, figsize=(8, 4.2))
    xs, ticks = [], []
    seen = set()
    for i, (label, rep) in enumerate(reports.items()):
        total = rep.forward_dense
        for j, kind in enumerate(("dense", "sparse")):
            x = 2.6 * i + j
            xs.append(x)
            ticks.append(f"{label}\n{'dense' if kind == 'dense' else f'{rep.sparsity:.0%} sparse'}")
            bottom = 0.0
            for comp, v in rep.components.items():
                h = v[kind] / total
                if h <= 0:
                    continue
                ax.bar(x, h, bottom=bottom, color=COMPONENT_COLORS.get(comp), width=0.8,
                       label=comp if comp not in seen else None)
                seen.add(comp)
                bottom += h
            if kind == "sparse":
                ax.text(x, bottom + 0.02, f"{rep.reduction:.2f}x\nfewer", ha="center", fontsize=9)
    ax.set_xticks(xs)
    ax.set_xticklabels(ticks, fontsize=9)
    ax.set_xlabel("model, dense and sparse")
    ax.set_ylabel("forward FLOPs / dense total")
    ax.set_ylim(0, 1.4)
    ax.set_title(title or "Where the FLOPs go (sparsity only shrinks qkv, attn_out, mlp)")
    ax.legend(fontsize=9, loc="upper center", ncol=4)
    ax.grid(axis="y", alpha=0.3)
    return ax


def plot_lines(xs: Sequence[float], series: Mapping[str, Sequence[float]], ax=None,
               xlabel: str = "",
               ylabel: str = "", title: str = "", logx: bool = False, logy: bool = False,
               marker: str = "o",
               styles: Mapping[str, str] | None = None):
    """Several labelled series over the same x values (e.g. FLOP reduction vs sparsity)."""
    ax = _axes(ax)
    for label, ys in series.items():
        ax.plot(xs, ys, (styles or {}).get(label, "-"), marker=marker, label=label)
    if logx:
        ax.set_xscale("log")
    if logy:
        ax.set_yscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    if len(series) > 1:
        ax.legend(fontsize=9)
    return ax


# ------------------------------------------------------------------------------ comparisons


def plot_bars(values: Mapping[str, float], ax=None, ylabel: str = "", title: str = "",
              fmt: str = "{:.2f}",
              reference: float | None = None, reference_label: str = "",
              colors: Sequence[str] | None = None,
              xlabel: str = ""):
    """One annotated bar per label; an optional horizontal reference line (e.g. the dense model)."""
    ax = _axes(ax)
    labels = list(values)
    vals = [values[k] for k in labels]
    bars = ax.bar(range(len(labels)),
                  [0 if v is None or (isinstance(v, float) and math.isnan(v)) else v
                                       for v in vals],
                  color=colors or [f"C{i}" for i in range(len(labels))])
    for b, v in zip(bars, vals):
        if v is not None:
            ax.text(b.get_x() + b.get_width() / 2, b.get_height(), fmt.format(v), ha="center",
                    va="bottom", fontsize=9)
    ax.margins(y=0.12)  # room above the tallest bar for its label
    if reference is not None:
        ax.axhline(reference, color="k", linestyle="--", linewidth=1, label=reference_label or None)
        if reference_label:
            ax.legend(fontsize=9)
    ax.set_xticks(range(len(labels)))
    ax.set_xticklabels(labels, rotation=20, ha="right", fontsize=9)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(axis="y", alpha=0.3)
    return ax


def plot_intervals(rows: Sequence[Mapping], ax=None, xlabel: str = "", title: str = "",
                   margin: float | None = None, colors: Mapping[str, str] | None = None):
    """A forest plot: one row per ``{"label", "mean", "low", "high"}`` (a mean with its interval),
    a line at zero and, with ``margin``, a dashed line at +margin (the declared margin).
    ``colors`` maps a row's optional ``"group"`` to a colour."""
    ax = _axes(ax, figsize=(6.4, 0.6 + 0.32 * max(1, len(rows))))
    for i, r in enumerate(rows):
        y = len(rows) - 1 - i
        color = (colors or {}).get(r.get("group"), "C0")
        if r.get("mean") is None:
            ax.text(0, y, "n/a", va="center", fontsize=9, color="gray")
            continue
        lo, hi = r.get("low"), r.get("high")
        if lo is not None and hi is not None:
            ax.plot([lo, hi], [y, y], color=color, linewidth=2)
        ax.plot([r["mean"]], [y], "o", color=color, markersize=5)
    ax.axvline(0, color="k", linewidth=0.8)
    if margin is not None:
        ax.axvline(margin, color="k", linestyle="--", linewidth=0.8, label=f"margin {margin:g}")
        ax.legend(fontsize=9, loc="lower right")
    ax.set_yticks(range(len(rows)))
    ax.set_yticklabels([r["label"] for r in reversed(rows)], fontsize=9)
    ax.set_xlabel(xlabel)
    ax.set_title(title, fontsize=9)
    ax.grid(axis="x", alpha=0.3)
    return ax


# ------------------------------------------------------------------------------ text read-outs


def format_table(rows: Sequence[Mapping], columns: Sequence[str] | Mapping[str, str] | None = None,
                 floatfmt: str = "{:.3f}") -> str:
    """A plain-text table of dict rows. ``columns``: keys to show, or ``{key: header}``."""
    if not rows:
        return "(no rows)"
    if columns is None:
        columns = list(rows[0])
    headers = dict(columns) if isinstance(columns, Mapping) else {c: c for c in columns}

    def cell(v):
        if v is None:
            return "-"
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            return str(v)
        if abs(v) >= 1e6:
            return f"{v:.3g}"
        return floatfmt.format(v) if isinstance(v, float) else str(v)

    table = [[headers[k] for k in headers]] + [[cell(r.get(k)) for k in headers] for r in rows]
    widths = [max(len(row[i]) for row in table) for i in range(len(headers))]
    lines = ["  ".join(c.ljust(w) if i == 0 else c.rjust(w)
                       for i, (c, w) in enumerate(zip(row, widths)))
             for row in table]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def format_samples(inputs: Sequence[str], outputs: Mapping[str, Sequence[str]],
                   references: Sequence[Sequence[str]] | None = None, n: int = 2,
                   width: int = 100) -> str:
    """Side-by-side text of what each model wrote for the first ``n`` inputs."""
    import textwrap

    blocks = []
    for i in range(min(n, len(inputs))):
        lines = [f"input: {inputs[i]}"]
        if references is not None and references[i]:
            lines.append(textwrap.fill(f"reference: {references[i][0]}", width,
                                       subsequent_indent="    "))
        for label, outs in outputs.items():
            lines.append(textwrap.fill(f"{label}: {outs[i]}", width, subsequent_indent="    "))
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks)
