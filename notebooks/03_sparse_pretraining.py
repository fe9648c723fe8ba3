# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.6
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 03 · Sparse pre-training: what the zeros cost
#
# **Question:** with the same data, steps and hyperparameters, how much worse is a language
# model whose block matrices are 50% or 75% zeros, measured per step and per FLOP?
#
# *Runs in about 1.2 min on a 2-core CPU (measured, default scale; `MINISPDF_SCALE=smoke` runs it in seconds, `gpu` at a larger scale).*
#
# All runs share the seed, so they see the same batches in the same order, and the same
# learning-rate schedule: the paper did not retune per sparsity either, so any gap is the
# mask's doing.

# %% tags=["parameters"]
import os

# default: laptop CPU, minutes | gpu: one GPU, bigger | smoke: CI, seconds
SCALE = os.environ.get("MINISPDF_SCALE", "default")
SCALES = {
    "default": dict(preset="nano", block_size=256, batch_size=8, lr=3e-3, warmup=50, eval_iters=10,
                    steps=1200, sparsities=(0.0, 0.5, 0.75)),
    "gpu": dict(preset="small", block_size=256, batch_size=32, lr=1e-3, warmup=100, eval_iters=20,
                steps=3000, sparsities=(0.0, 0.5, 0.75, 0.9)),
    "smoke": dict(preset="nano", block_size=64, batch_size=4, lr=3e-3, warmup=2, eval_iters=2,
                  steps=12, sparsities=(0.0, 0.5, 0.75)),
}
assert SCALE in SCALES, f"MINISPDF_SCALE={SCALE!r}: choose one of {sorted(SCALES)}"
P = SCALES[SCALE]
DEVICE = "auto"  # cuda if present, else mps, else cpu
PROGRESS = SCALE != "smoke"  # progress bars while training
RUNS = "runs/03_sparse_pretraining"

# %%
import matplotlib.pyplot as plt

from minispdf import plots, sparsity_report
from minispdf.spdf import pretrain

runs = {}
for s in P["sparsities"]:
    label = "dense" if s == 0 else f"{s:.0%} sparse"
    runs[label] = pretrain(preset=P["preset"], block_size=P["block_size"], sparsity=s, data="builtin",
                           max_steps=P["steps"], eval_interval=max(1, P["steps"] // 6), batch_size=P["batch_size"],
                           lr=P["lr"], warmup_steps=P["warmup"], eval_iters=P["eval_iters"], device=DEVICE,
                           progress=PROGRESS, out=f"{RUNS}/sparsity-{s}", overwrite=True)
    print(f"{label:>11}: val loss {runs[label]['val_loss']:.3f}")

# %%
fig, (a, b) = plt.subplots(1, 2, figsize=(12, 4.2))
plots.plot_curves(runs, x="step", ax=a, title="Per step: the sparse models learn slower")
plots.plot_curves(runs, x="flops", ax=b, title="Per FLOP: each sparse step is cheaper")
b.set_ylim(top=min(b.get_ylim()[1], 3.0))  # zoom in on the part after the first plateau
fig.tight_layout()
plt.show()

# %% [markdown]
# Left: at equal steps, fewer trainable weights mean a higher loss, and the gap grows with
# sparsity. Right: the same curves against the FLOPs each run was charged (sparse matmuls at
# their density). Each sparse step is cheaper, so its curve shifts left; whether it ends
# *below* dense at equal FLOPs is notebook 06's question. (The validation dots sit below the
# training lines because the held-out text, the last 10% of the corpus, happens to be
# easier; compare runs with each other, not train with validation.)

# %%
dense = runs["dense"]
rows = [dict(run=label, val_loss=r["val_loss"], gap=r["val_loss"] - dense["val_loss"],
             flops=r["flops"], flops_x_dense=r["flops"] / dense["flops"],
             sparsity=sparsity_report(r["model"])["total"]["sparsity"])
        for label, r in runs.items()]
print(plots.format_table(rows, {"run": "run", "sparsity": "measured sparsity", "val_loss": "val loss",
                                "gap": "gap to dense", "flops": "train FLOPs", "flops_x_dense": "FLOPs (x dense)"}))

# %% [markdown]
# The measured sparsity of the trained models is exactly the nominal one: the mask held for
# every step. The gap to dense at equal steps is what dense fine-tuning has to close
# (notebook 04). The saving column is the theoretical one; on this CPU every run took about
# the same time per step (notebook 02, section 4).
