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
# *Runs in about 3.0 min with one thread on a 2-core laptop-class CPU (measured, default scale:
# CPU time of a headless run with `THREADS = 1`; `MINISPDF_SCALE=smoke` runs it in seconds, `gpu` at a larger scale).*
#
# **Learning goals.** After this lesson you can
# - write the optimizer step that keeps a mask: gradients, weights and AdamW moments (exercise 5);
# - compare sparse and dense pre-training per step and per FLOP, and say which comparison answers which question;
# - check that a trained sparse model is still exactly as sparse as its mask.
#
# **Prerequisites.** Lessons 01 (masks) and 02 (FLOP counts); what AdamW keeps per weight (two
# moving averages, `exp_avg` and `exp_avg_sq`) and what weight decay does.
#
# **Paper.** [arXiv:2303.10464](https://arxiv.org/abs/2303.10464): sparse pre-training with a
# static mask and the same hyperparameters as dense (the paper did not retune per sparsity).
#
# All runs share the seed, so they see the same batches in the same order, and the same
# learning-rate schedule: the paper did not retune per sparsity either, so any gap is the
# mask's doing.

# %% tags=["parameters"]
import os

import torch

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
PROGRESS = True  # progress bars while training (widgets in JupyterLab, text in a terminal)
THREADS = int(os.environ.get("MINISPDF_THREADS", "1"))  # the run time above is measured with one thread
torch.set_num_threads(THREADS)  # two threads on two cores shared with other work run many times slower
RUNS = "runs/03_sparse_pretraining"

# %%
import matplotlib.pyplot as plt

from minispdf import plots, sparsity_report
from minispdf.spdf import pretrain

# %% [markdown]
# ## 1 · One optimizer step that keeps the mask
#
# A static mask must hold for every step of pre-training. Setting the pruned weights to zero
# once is not enough: their gradients are not zero (a pruned weight still influences nothing,
# but the gradient of the loss with respect to it is computed like any other), AdamW's moving
# averages `exp_avg` and `exp_avg_sq` would carry those gradients into later updates, and
# weight decay only shrinks a weight, it never sets it to zero. The library keeps each mask
# with a gradient hook and a hook after every optimizer step; here you write the step yourself.
#
# **Exercise 5: a masked AdamW step.** `params` is a list of parameters, `masks` a matching
# list of bool tensors (True = kept), `optimizer` a `torch.optim.AdamW` over `params` whose
# `.grad` are already set. Do one step that keeps the masks: zero the gradients at pruned
# slots, call `optimizer.step()`, then set the pruned weights and both AdamW moments
# (`exp_avg`, `exp_avg_sq`) at pruned slots to exactly zero. The grader runs 50 steps with
# weight decay on and checks that every pruned weight and moment stays exactly zero while the
# kept weights train as AdamW trains them.
#
# <details><summary>Hint</summary>
#
# Work under `torch.no_grad()`. `tensor.masked_fill_(~mask, 0.0)` zeroes the pruned slots in
# place. The moments live in `optimizer.state[p]`, a dict that is empty until the first step;
# after `optimizer.step()` it holds `"exp_avg"` and `"exp_avg_sq"`.
#
# </details>

# %% minispdf={"exercise": "masked_step"} tags=["exercise"]
import torch


def masked_adamw_step(params, masks, optimizer):
    ### BEGIN SOLUTION
    with torch.no_grad():
        for p, m in zip(params, masks):
            if p.grad is not None:
                p.grad.masked_fill_(~m, 0.0)
        optimizer.step()
        for p, m in zip(params, masks):
            p.masked_fill_(~m, 0.0)
            state = optimizer.state.get(p, {})
            for key in ("exp_avg", "exp_avg_sq"):
                if key in state:
                    state[key].masked_fill_(~m, 0.0)
    ### END SOLUTION


# %%
from minispdf import assignments

assignments.check("masked_step", masked_adamw_step)

# %% [markdown]
# ## 2 · Dense, 50% and 75% sparse pre-training, same steps

# %%
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
plots.plot_curves(runs, x="step", ax=a, title="Loss per optimizer step")
plots.plot_curves(runs, x="flops", ax=b, title="Loss against training FLOPs")
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
# the same time per step (notebook 02, section 5).
#
# **What you should see.** A reference run at the default scale (2026-12-01, 2-core AMD EPYC CPU,
# torch 2.13.0, one thread) printed validation losses after 1200 steps of **1.743** (dense),
# **1.925** (50% sparse) and **1.995** (75% sparse): gaps to dense of 0.183 and 0.252 nats, at
# 0.730x and 0.595x of the dense training FLOPs; measured sparsity exactly 0.500 and 0.750.
# None of the runs has converged: between steps 1000 and 1200 the dense validation loss still
# fell by 0.074 and the 75% loss by 0.026. The curves also say *when* the gap opens: at step
# 200 the dense and 75% runs were level (2.222 vs 2.208); the gap grew with every evaluation
# after that. So the gap printed here belongs to this budget; a longer run would show a
# different one (it kept growing here, and whether it would later shrink is not something these
# runs can tell). Per FLOP, the 75% run's final loss (1.995 at 1.59e12 FLOPs) is about where the
# dense curve passes the same FLOPs (between 2.047 at step 600 and 1.924 at step 800), but that
# point of the dense curve is mid-schedule, not a finished run: lesson 06 compares finished runs.
#
# ## Check your understanding
#
# 1. In exercise 5, which of the three zeroings (gradient, weight, moments) would a pruned
#    weight survive without, if it started at exactly zero, and which is needed in any case?
# 2. Left figure or right figure: which one answers "does sparsity hurt the model?" and which
#    "is sparsity a good use of compute?"
# 3. Why do all runs share the seed and the learning-rate schedule?

# %% [markdown] tags=["answer"]
# **Answers (instructor's copy).**
# 1. Starting from zero with zeroed gradients, AdamW's update at a pruned slot is 0 and weight
#    decay keeps 0 at 0, so the weight and the moments would stay zero. Zeroing the gradient is
#    needed in any case; zeroing weights and moments guards against anything that wrote there
#    (a nonzero start, moments from before the mask, a NaN): the grader starts from nonzero
#    weights, so weight decay alone would only shrink them.
# 2. Left (per step): at equal steps and data, the gap is what the zeros cost the model. Right
#    (per FLOP): it charges each run what it would cost on hardware that skips zeros.
# 3. So that they see the same batches in the same order with the same schedule: any difference
#    is then the mask's doing, not noise from the data order or from tuning.
