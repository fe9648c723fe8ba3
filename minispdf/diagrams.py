"""Diagrams for the lessons: pictures of the model and of the recipes, drawn from what the library
defines (the masked matrices of a GPT-2 block, the phases of SPDF, SPSF and Variable SPDF) rather
than from results. :mod:`minispdf.plots` re-exports them (``plots.draw_block()``). Each function
takes an optional matplotlib ``ax`` and returns the axes it drew on; matplotlib is imported on
first use (:mod:`minispdf.canvas`).
"""

from __future__ import annotations

from .canvas import axes as _axes
from .masks import masked_block_matrices

MASKED_COLOR, DENSE_COLOR, NO_WEIGHTS_COLOR = "#f4a259", "#8ecae6", "#eeeeee"


# (row label, module name in the model, what it does); a None module holds no weights
BLOCK_ROWS = [
    ("LM head (tied to the token embedding)", "lm_head", "logits"),
    ("final LayerNorm", "ln_f", ""),
    ("+ residual", None, ""),
    ("MLP output  mlp.c_proj", "mlp.c_proj", "4d -> d"),
    ("GELU", None, ""),
    ("MLP input  mlp.c_fc", "mlp.c_fc", "d -> 4d"),
    ("LayerNorm  ln_2", "ln_2", ""),
    ("+ residual", None, ""),
    ("attention output  attn.c_proj", "attn.c_proj", "d -> d"),
    ("softmax(QK^T) V  (activations only)", None, ""),
    ("q, k, v  attn.c_attn", "attn.c_attn", "d -> 3d"),
    ("LayerNorm  ln_1", "ln_1", ""),
    ("token embedding wte + position embedding wpe", "wte", "lookup"),
]


def draw_block(ax=None, title: str | None = None):
    """A GPT-2 block (bottom to top) with the matrices sparse pre-training masks highlighted and
    the dense parts (embeddings, LayerNorms, biases, LM head) marked; the block repeats n_layer
    times."""
    from matplotlib.patches import Patch, Rectangle

    ax = _axes(ax, figsize=(7.5, 7.0))
    masked = set(masked_block_matrices())
    n = len(BLOCK_ROWS)
    for i, (label, module, note) in enumerate(BLOCK_ROWS):
        y = n - 1 - i
        color = (NO_WEIGHTS_COLOR if module is None
                 else MASKED_COLOR if module in masked else DENSE_COLOR)
        ax.add_patch(Rectangle((0.05, y + 0.12), 0.7, 0.76, facecolor=color, edgecolor="k",
                               hatch="//" if module in masked else None))
        kind = "" if module is None else "  [masked]" if module in masked else "  [dense]"
        ax.text(0.4, y + 0.5, label + kind, ha="center", va="center", fontsize=9,
                bbox=dict(facecolor="white", edgecolor="none", pad=1.0) if module in masked
                else None)
        if note:
            ax.text(0.78, y + 0.5, note, ha="left", va="center", fontsize=9, color="0.35")
    block = [n - 1 - i for i, row in enumerate(BLOCK_ROWS)
             if row[1] in ("ln_1",) or row[0] == "+ residual"]
    lo, hi = min(block), max(block) + 1
    ax.add_patch(Rectangle((0.0, lo + 0.02), 0.95, hi - lo - 0.04, fill=False, linestyle="--",
                           edgecolor="0.3"))
    ax.text(0.97, (lo + hi) / 2, "transformer block,\nrepeated n_layer times", rotation=90,
            ha="left",
            va="center", fontsize=9)
    ax.set_xlim(0, 1.08)
    ax.set_ylim(0, n)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_xlabel(
        "biases of every layer stay dense; only the four hatched weight matrices carry a mask")
    ax.set_ylabel("data flows upwards")
    ax.legend(handles=[Patch(facecolor=MASKED_COLOR, hatch="//", edgecolor="k",
                             label="masked weight (sparse)"),
                       Patch(facecolor=DENSE_COLOR, edgecolor="k", label="dense weight"),
                       Patch(facecolor=NO_WEIGHTS_COLOR, edgecolor="k", label="no weights")],
              loc="upper left", bbox_to_anchor=(1.1, 1.0), fontsize=9)
    ax.set_title(title or "A GPT-2 block and where sparse pre-training puts its masks")
    return ax


def draw_schedules(ax=None, sparsity: float = 0.75, vspdf_sparsity: float = 0.9,
                   dense_phase: float = 0.15,
                   finetune: float = 0.25, title: str | None = None):
    """SPDF, SPSF and Variable SPDF on one time axis: pre-training (length 1: the dense token
    budget) and fine-tuning (length ``finetune``, drawn longer than it is so that it stays
    visible), with Variable SPDF's extra dense pre-training phase (``dense_phase`` of the
    budget)."""
    from matplotlib.patches import Patch

    ax = _axes(ax, figsize=(8.6, 3.2))  # with its legend on the right: under 10 in as drawn
    recipes = {  # (label, length, sparse?) phases in order
        "SPDF": [(f"sparse pre-training ({sparsity:.0%})", 1.0, True),
                 ("dense fine-tuning", finetune, False)],
        "SPSF": [(f"sparse pre-training ({sparsity:.0%})", 1.0, True),
                 ("sparse fine-tuning", finetune, True)],
        "Variable SPDF": [(f"sparse pre-training ({vspdf_sparsity:.0%})", 1.0, True),
                          ("dense pre-training", dense_phase, False),
                          ("dense fine-tuning", finetune, False)],
    }
    for row, (recipe, phases) in enumerate(reversed(recipes.items())):
        start = 0.0
        for label, length, sparse in phases:
            ax.broken_barh([(start, length)], (row - 0.35, 0.7),
                           facecolor=MASKED_COLOR if sparse else DENSE_COLOR,
                           edgecolor="k", hatch="//" if sparse else None)
            ax.text(start + length / 2, row, label.replace(" ", "\n", 1) if length < 0.5 else label,
                    ha="center", va="center", fontsize=9,
                    bbox=dict(facecolor="white", edgecolor="none", pad=1.0))
            start += length
    ax.set_yticks(range(len(recipes)))
    ax.set_yticklabels(list(reversed(recipes)))
    ax.set_xlabel("training time in tokens (1 = the dense model's pre-training budget; fine-tuning "
                  "not to scale)")
    ax.set_ylabel("recipe")
    ax.legend(handles=[Patch(facecolor=MASKED_COLOR, hatch="//", edgecolor="k",
                             label="masked (sparse)"),
                       Patch(facecolor=DENSE_COLOR, edgecolor="k", label="dense")], fontsize=9,
              loc="upper left",
              bbox_to_anchor=(1.01, 1.0))
    ax.set_title(title or "Three recipes on one time axis")
    return ax
