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
# *Runs in about 2.9 min of wall-clock time (2.9 min of CPU time) at the default scale, executed as
# a student runs it: figures drawn, one thread (measured 2026-12-06 on AMD EPYC, 2 CPUs;
# [how](../results/lesson_times.md)). [Reference run with
# outputs](reference/03_sparse_pretraining.html). `MINISPDF_SCALE=smoke` runs it in seconds, `gpu`
# at a larger scale.*
#
# **Learning goals.** After this lesson you can
# - write the optimizer step that keeps a mask: gradients, weights and AdamW moments (exercise 4);
# - compare sparse and dense pre-training per step and per FLOP, and say which comparison answers
#   which question;
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
from minispdf.lessons import check, hint, setup  # hint("name") prints an exercise's hint

# default: laptop CPU, minutes | gpu: one GPU, bigger | smoke: CI, seconds
SCALES = {
    # break_*: section 1b, a few dense steps, then masked steps done wrong and right (seconds)
    "default": dict(preset="nano", block_size=256, batch_size=8, lr=3e-3, warmup=50, eval_iters=10,
                    steps=1200, sparsities=(0.0, 0.5, 0.75), break_block=64, break_dense=10,
                    break_steps=60),
    "gpu": dict(preset="small", block_size=256, batch_size=32, lr=1e-3, warmup=100, eval_iters=20,
                steps=3000, sparsities=(0.0, 0.5, 0.75, 0.9), break_block=64, break_dense=10,
                break_steps=60),
    "smoke": dict(preset="nano", block_size=64, batch_size=4, lr=3e-3, warmup=2, eval_iters=2,
                  steps=12, sparsities=(0.0, 0.5, 0.75), break_block=32, break_dense=2,
                  break_steps=4),
}
# MINISPDF_SCALE picks the scale; torch gets one thread unless MINISPDF_THREADS says otherwise (the
# run time above is measured with one: two threads on two cores shared with other work run many
# times slower)
SCALE, P, THREADS = setup(SCALES)
DEVICE = "auto"  # cuda if present, else mps, else cpu
PROGRESS = True  # progress bars while training (widgets in JupyterLab, text in a terminal)
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
# Written out, AdamW's update of one weight $w$ with gradient $g_t$ at step $t$ (learning rate
# $\eta$, decay $\lambda$, $\beta_1 = 0.9$, $\beta_2 = 0.95$ or $0.999$) is
#
# $$m_t = \beta_1 m_{t-1} + (1-\beta_1)\,g_t, \qquad v_t = \beta_2 v_{t-1} + (1-\beta_2)\,g_t^2,$$
#
# $$w_t = w_{t-1} - \eta\,\lambda\,w_{t-1} -
# \eta\,\frac{m_t/(1-\beta_1^t)}{\sqrt{v_t/(1-\beta_2^t)}+\epsilon}.$$
#
# With a mask $M$ (1 = kept, 0 = pruned) the step keeps the pruned slots at zero when it uses
# $g_t \odot M$ in place of $g_t$ and starts from $w_{t-1} \odot M$, $m_{t-1} \odot M$ and
# $v_{t-1} \odot M$: then every term on the right is zero wherever $M = 0$. Drop any one factor
# and a pruned weight moves: $m_{t-1} \neq 0$ (moments from before the mask, or from steps whose
# gradient was not masked) pushes it for as long as $\beta_1^t$ takes to fade, whatever $g_t$ is.
# Section 1b shows exactly that.
#
# **Exercise 4: a masked AdamW step.** `params` is a list of parameters, `masks` a matching
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
masked_adamw_step = check("masked_step", masked_adamw_step)  # the kit's own until yours passes

# %% [markdown]
# ## 1b · Break it, then fix it: moments that were never masked
#
# A tempting shortcut: mask the *gradients* and nothing else ("a pruned weight gets no gradient,
# so it cannot move"). The cell below trains a `nano` model densely for a few steps (so AdamW's
# moments are non-zero everywhere, as when a mask is drawn for a model already training), draws a
# 75% mask with `sparsify`, and then continues two ways from the same start:
#
# - **broken:** `densify` removes the library's hooks (the zeros stay), and the loop multiplies
#   only the gradients by the mask before `optimizer.step()`;
# - **fixed:** the mask keeps its hooks (the library's way: gradients masked as backward
#   finishes, weights and moments re-zeroed after the step).
#
# After every step `regrowth` (from `minispdf.masks`) measures the formerly zero weights. The
# training loop is
# written out here only because breaking it is the point; the library's own loop is `train`.

# %%
from minispdf import GPT, densify, preset_config, sparsify
from minispdf.batches import TokenBatches
from minispdf.data import prepare_data
from minispdf.masks import regrowth

break_batches = TokenBatches(prepare_data("builtin", "char", data_dir="data", verbose=False),
                             P["batch_size"],
                             P["break_block"])


def masked_run(recipe):
    """Mean |w| of the pruned weights after each masked step; recipe "broken" or "fixed"."""
    torch.manual_seed(0)  # the same model, data and mask for both recipes
    model = GPT(preset_config(P["preset"], block_size=P["break_block"]))
    opt = torch.optim.AdamW(model.parameters(), lr=P["lr"], weight_decay=0.1)
    gen, masks, pruned = torch.Generator().manual_seed(0), {}, []
    for step in range(P["break_dense"] + P["break_steps"]):
        if step == P["break_dense"]:  # the mask arrives after some dense steps
            masks = sparsify(model, 0.75, seed=0)
            if recipe == "broken":
                densify(model)  # drops the hooks; the zeros stay
        x, y, _ = break_batches.get_batch("train", gen, "cpu")
        model(x, y)[1].backward()
        if recipe == "broken":
            with torch.no_grad():
                for name, p in model.named_parameters():
                    if name in masks:
                        # gradients only: the moments keep their old values
                        p.grad.mul_(masks[name])
        opt.step()
        opt.zero_grad(set_to_none=True)
        if masks:
            pruned.append(float(regrowth(masks, model)["pruned_abs"].mean()))
    stats = regrowth(masks, model)
    return pruned, stats


broken, broken_stats = masked_run("broken")
fixed, fixed_stats = masked_run("fixed")
grown = sum(r["nonzero_fraction"] * r["pruned"] for r in broken_stats["layers"]) / sum(
    r["pruned"] for r in broken_stats["layers"])
print(f"broken: after {P['break_steps']} masked steps {grown:.1%} of the pruned weights are "
      f"nonzero, mean |w| "
      f"{broken[-1]:.4f} (kept weights {float(broken_stats['kept_abs'].mean()):.4f})")
print(f"fixed:  largest |w| at a pruned slot {float(fixed_stats['pruned_abs'].max()):.1f}")
fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.8))
plots.plot_lines(range(1, len(broken) + 1), {"broken: gradients masked, moments not": broken,
                                             "fixed: the library's hooks": fixed}, ax=a, marker="",
                 xlabel="masked step", ylabel="mean |w| of the pruned weights",
                 title="Pruned weights growing back")
plots.plot_regrowth(broken_stats, ax=b, title="Broken recipe: |w| after the masked steps")
fig.tight_layout()
plt.show()

# %% [markdown]
# The broken recipe's pruned weights leave zero at the first masked step and keep growing while
# $\beta_1^t$ fades, to a sizeable fraction of the kept weights' size: the model is no longer 75%
# sparse, and the FLOPs it was charged for are a fiction. Masking the gradient was necessary but
# not sufficient; the fix clears the moments (and re-zeroes the weights) at the pruned slots, which
# is what your `masked_adamw_step` does and what the library's step hook does after every
# `optimizer.step()`. A second classic break is the order of operations: masking the gradient
# *after* `clip_grad_norm_` lets the pruned slots count in the norm, so the kept weights get
# smaller updates than they should. The library's gradient hook runs as backward finishes,
# before any clipping.
#
# ## 2 · Dense, 50% and 75% sparse pre-training, same steps

# %%
runs = {}
for s in P["sparsities"]:
    label = "dense" if s == 0 else f"{s:.0%} sparse"
    runs[label] = pretrain(preset=P["preset"], block_size=P["block_size"], sparsity=s,
                           data="builtin",
                           max_steps=P["steps"], eval_interval=max(1, P["steps"] // 6),
                           batch_size=P["batch_size"],
                           lr=P["lr"], warmup_steps=P["warmup"], eval_iters=P["eval_iters"],
                           device=DEVICE,
                           progress=PROGRESS, out=f"{RUNS}/sparsity-{s}", overwrite=True)
    print(f"{label:>11}: val loss {runs[label]['val_loss']:.3f}")
for label, r in runs.items():  # the validation curves the figure draws, as numbers
    steps, losses = plots.history(r, "val_loss")
    curve = ", ".join(f"{s}: {v:.3f}" for s, v in zip(steps, losses))
    print(f"{label:>11} val loss by step: {curve}")

# %%
fig, (a, b) = plt.subplots(1, 2, figsize=(9.6, 4))
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
print(plots.format_table(rows,
                         {"run": "run", "sparsity": "measured sparsity", "val_loss": "val loss",
                                "gap": "gap to dense", "flops": "train FLOPs",
                                "flops_x_dense": "FLOPs (x dense)"}))

# %% [markdown]
# The measured sparsity of the trained models is exactly the nominal one: the mask held for
# every step. The gap to dense at equal steps is what dense fine-tuning has to close
# (notebook 04). The saving column is the theoretical one; on this CPU every run took about
# the same time per step (notebook 02, section 5).
#
# **What you should see.** The [reference run](reference/03_sparse_pretraining.html) at the
# default scale (one thread, torch 2.13.0) printed, in section 1b, **100.0%** of the pruned
# weights nonzero after **60** steps of the broken recipe, mean |w| **0.0053** against **0.0254**
# for the kept weights, and exactly **0.0** at every pruned slot with the library's hooks; then
# validation losses after 1200 steps of **1.743** (dense), **1.925** (50% sparse) and **1.995**
# (75% sparse): gaps to dense of **0.183** and **0.252** nats, at **0.730x** and **0.595x** of
# the dense training FLOPs; measured sparsity exactly **0.500** and **0.750**.
# None of the runs has converged: between steps 1000 and 1200 the dense validation loss still
# fell from 1.817 to 1.743 and the 75% loss from 2.021 to 1.995. The curves also say *when* the gap
# opens: at step
# 200 the dense and 75% runs were level (2.222 vs 2.208); the gap grew with every evaluation
# after that. So the gap printed here belongs to this budget; a longer run would show a
# different one (it kept growing here, and whether it would later shrink is not something these
# runs can tell). Per FLOP, the 75% run's final loss (1.995 at 1.59e12 FLOPs) is about where the
# dense curve passes the same FLOPs (between 2.047 at step 600 and 1.924 at step 800), but that
# point of the dense curve is mid-schedule, not a finished run: lesson 06 compares finished runs.
#
# ## Check your understanding
#
# 1. In exercise 4, which of the three zeroings (gradient, weight, moments) would a pruned
#    weight survive without, if it started at exactly zero, and which is needed in any case?
# 2. Left figure or right figure: which one answers "does sparsity hurt the model?" and which
#    "is sparsity a good use of compute?"
# 3. Why do all runs share the seed and the learning-rate schedule?
# 4. In section 1b, which factor of the masked AdamW update was left out, and for roughly how
#    many steps does it keep pushing the pruned weights?
# 5. Why must the gradient be masked before `clip_grad_norm_`, not after?
# 6. Does weight decay keep a pruned weight at zero? Does it bring a nonzero one back to zero?
# 7. The measured sparsity of every trained model equals the nominal one exactly. Why is that
#    check worth making, beyond tidiness?
# 8. If a new mask were drawn every few hundred steps (dynamic sparsity), what would the masked
#    step have to do for the weights that change from kept to pruned, and the other way round?
# 9. The grader's masked_step check runs 50 steps with fresh random gradients. Why would one
#    step not be enough to tell a correct step from a wrong one?
#
# **Try this: predict, then measure, then explain** (seconds per run). *Predict* each curve
# before you run it. Edit `masked_run` to build its AdamW with `weight_decay=0.0`,
# then with `betas=(0.5, 0.999)`, and rerun section 1b's cell each time. How does the broken
# curve change in each case, and which term of the update equation explains each change?
# Then make the broken recipe also zero the moments once, right after `sparsify`: does the
# regrowth go away, and why is that still not enough for a mask drawn while training?


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
# 4. The moments: m and v at the pruned slots were never zeroed (they came from the dense steps).
#    The update is driven by m̂/√v̂, and m fades as β₁ᵗ = 0.9ᵗ, so the push lasts tens of steps;
#    the weights it moved stay moved.
# 5. Clipping scales every gradient by max_norm / (total norm). Unmasked pruned slots count in
#    that norm, so the kept weights get a smaller step than they should (and the pruned slots
#    are zeroed only afterwards).
# 6. It keeps a zero at zero (the decay is proportional to the weight), but it only shrinks a
#    nonzero one by a factor (1 − ηλ) per step: it never reaches exactly zero.
# 7. The FLOPs each run is charged assume the nominal density. Any leak (regrowth) would make
#    the sparse run bigger than it was charged for, and every comparison per FLOP wrong.
# 8. Newly pruned weights: zero the weight and its moments at once (otherwise the moments push
#    it back, as in 1b). Newly grown weights: start at zero with zero moments, so that stale
#    moments do not give them a kick (RigL does this).
# 9. Some errors show only through state that accumulates: moments carry a leaked gradient into
#    later updates, and a step that changes the kept weights slightly (two steps, an extra decay)
#    drifts measurably only over many steps. Fresh random gradients every step keep a lucky
#    coincidence from passing.
#
# **Try this.** Without weight decay the broken curve grows a little faster: the decoupled decay
# $\eta\lambda w$ no longer pulls the regrown weights back towards zero. With $\beta_1 = 0.5$ it
# stops growing within a few steps: the first moment, which carried the gradients from before the
# mask, forgets them geometrically ($\beta_1^t$), and the masked gradients add nothing. Zeroing
# the moments once right after `sparsify` removes the regrowth in this loop (masked gradients keep
# $m$ and $v$ at zero, and Adam's update of a zero weight with zero moments is zero), but it is a
# one-off repair: a mask that moves (lesson 06), an optimizer state reloaded from a checkpoint or
# a gradient that leaks once brings non-zero moments back, so the library re-zeroes them after
# every step.
