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
# # 04 · Dense fine-tuning: SPDF vs the alternatives
#
# **Question:** after 75% sparse pre-training, does fine-tuning *densely* (SPDF) get close to a
# dense model, and is it better than fine-tuning with the mask kept (SPSF) or than skipping
# pre-training altogether?
#
# *Runs in about 3.7 min of wall-clock time (3.7 min of CPU time) at the default scale, executed as
# a student runs it: figures drawn, one thread (measured 2026-12-06 on AMD EPYC, 2 CPUs;
# [how](../results/lesson_times.md)). [Reference run with
# outputs](reference/04_dense_finetuning.html). `MINISPDF_SCALE=smoke` runs it in seconds, `gpu`
# at a larger scale.*
#
# **Learning goals.** After this lesson you can
# - write the loss mask of fine-tuning on a data-to-text task (exercise 5);
# - set up a fair comparison of four arms (dense, SPDF, SPSF, no pre-training) and read it;
# - tell a converged comparison from an unconverged one, and judge a gap against one-seed noise;
# - read generated samples for what BLEU does not show.
#
# **Prerequisites.** Lessons 00-03; what BLEU measures (n-gram overlap with references).
#
# **Paper.** [arXiv:2303.10464](https://arxiv.org/abs/2303.10464): dense fine-tuning of sparse
# pre-trained GPTs on data-to-text tasks (E2E, WebNLG, DART, scored with BLEU) and the
# comparison with sparse fine-tuning (SPSF), which the paper reports generalises worse.
#
# Four arms, one task, identical fine-tuning settings:
#
# | arm | pre-training | fine-tuning |
# |---|---|---|
# | dense | dense | dense |
# | SPDF | 75% sparse | dense (masks dropped) |
# | SPSF | 75% sparse | sparse (masks kept) |
# | scratch | none | dense |
#
# The two sparse recipes on one time axis (the figure is not to scale: fine-tuning is a small
# fraction of pre-training's tokens):

# %% tags=["parameters"]
from minispdf.lessons import check, hint, setup  # hint("name") prints an exercise's hint

# default: laptop CPU, minutes | gpu: one GPU, bigger | smoke: CI, seconds
SCALES = {
    "default": dict(preset="nano", block_size=256, batch_size=8, lr=3e-3, warmup=50, eval_iters=10,
                    pretrain_steps=1000, finetune_steps=600, n_train=1000, n_eval=100,
                    max_new_tokens=200),
    "gpu": dict(preset="small", block_size=256, batch_size=32, lr=1e-3, warmup=100, eval_iters=20,
                pretrain_steps=3000, finetune_steps=1000, n_train=4000, n_eval=300,
                max_new_tokens=200),
    "smoke": dict(preset="nano", block_size=256, batch_size=4, lr=3e-3, warmup=2, eval_iters=2,
                  pretrain_steps=10, finetune_steps=6, n_train=40, n_eval=6, max_new_tokens=30),
}
# MINISPDF_SCALE picks the scale; torch gets one thread unless MINISPDF_THREADS says otherwise (the
# run time above is measured with one: two threads on two cores shared with other work run many
# times slower)
SCALE, P, THREADS = setup(SCALES)
DEVICE = "auto"  # cuda if present, else mps, else cpu
PROGRESS = True  # progress bars while training (widgets in JupyterLab, text in a terminal)
RUNS = "runs/04_dense_finetuning"

# %%
import matplotlib.pyplot as plt

from minispdf import plots, sparsity_report
from minispdf.data import get_tokenizer
from minispdf.evaluate import decode, evaluate_task
from minispdf.spdf import finetune, pretrain
from minispdf.tasks import encode_example, encode_prompt, make_builtin_task

plots.draw_schedules(sparsity=0.75)
plt.show()

# %%
tok = get_tokenizer("char")
settings = dict(batch_size=P["batch_size"], lr=P["lr"], warmup_steps=P["warmup"],
                eval_iters=P["eval_iters"],
                device=DEVICE, progress=PROGRESS)
pre = {}
for s in (0.0, 0.75):
    pre[s] = pretrain(preset=P["preset"], block_size=P["block_size"], sparsity=s, data="builtin",
                      max_steps=P["pretrain_steps"], eval_interval=0, out=f"{RUNS}/pretrain-{s}",
                      overwrite=True, **settings)
    print(f"pre-trained {s:.0%} sparse: val loss {pre[s]['val_loss']:.3f}, FLOPs "
          f"{pre[s]['flops']:.3g}")

# %% [markdown]
# ## The task and its loss mask
#
# Each training sequence is `input + "\n" + reference + <end-of-text>`. The model reads the
# whole sequence, but the loss counts only the positions whose *next* token belongs to the
# reference or is the end-of-text: we want it to learn to write descriptions, not to predict
# meaning representations. With the loss mask $m_i \in \{0, 1\}$ of exercise 5, the
# fine-tuning loss of a sequence $x_0 \dots x_n$ is
#
# $$\mathcal{L} = -\frac{1}{\sum_i m_i} \sum_{i=0}^{n-1} m_i \log p_\theta(x_{i+1} \mid x_0 \dots
# x_i).$$

# %%
task = make_builtin_task(n_train=P["n_train"], n_val=P["n_eval"], n_test=P["n_eval"], min_slots=3,
                         max_slots=5)
print(task.description)
ex = task.train[0]
print("input:    ", ex.input)
print("reference:", ex.references[0])
# the library's mask
tokens, mask = encode_example(tok, ex.input, ex.references[0], block_size=P["block_size"])

# %% [markdown]
# **Exercise 5: the fine-tuning loss mask.** A sequence is `prompt + target + [eot]`, where
# the prompt (input and separator) has `prompt_len` tokens and the whole sequence `n_tokens`.
# The model reads `x = tokens[:-1]` and predicts `y = tokens[1:]`. Return a list of
# `n_tokens - 1` ints, 1 where `y[i]` is a target token or the eot, 0 where it is part of the
# prompt.
#
# <details><summary>Hint</summary>
#
# Write a 6-token example on paper: prompt `a b |`, target `c d`, then eot. `y` is `b | c d eot`;
# which of those five predictions are of the description?
#
# </details>

# %% minispdf={"exercise": "loss_mask"} tags=["exercise"]
def loss_mask(prompt_len, n_tokens):
    ### BEGIN SOLUTION
    return [0] * (prompt_len - 1) + [1] * (n_tokens - prompt_len)
    ### END SOLUTION


# %%
loss_mask = check("loss_mask", loss_mask)  # the kit's own until yours passes
print("yours equals the library's on the example above:",
      loss_mask(len(encode_prompt(tok, ex.input)), len(tokens)) == mask)

# %% [markdown]
# The library's mask for the training example above, drawn under its text: `^` marks the
# characters that are predicted with loss.

# %%
text = tok.decode(tokens).replace("\n", "|")
print(text)
# mask[i] scores the prediction of tokens[i+1]
print("".join("^" if m else " " for m in [0] + mask)[: len(text)])

# %% [markdown]
# ## Fine-tune the four arms
#
# Same steps, learning rate and data order for every arm.
#
# **Break it, then fix it.** The SPSF arm is the break: it fine-tunes the 75% sparse checkpoint
# with its masks kept (`keep_masks=True`), so three quarters of every block matrix stay zero for
# the task too. SPDF is the fix, the paper's: the same checkpoint, masks dropped. The cell after
# the loop counts the zeros each of the two left in the block matrices, next to its test loss and
# BLEU; the gap between them is what dropping the masks buys.

# %%
arms = {"dense": dict(init_from=f"{RUNS}/pretrain-0.0"),
        "SPDF": dict(init_from=f"{RUNS}/pretrain-0.75"),
        "SPSF": dict(init_from=f"{RUNS}/pretrain-0.75", keep_masks=True),
        "scratch": dict(preset=P["preset"], block_size=P["block_size"])}
tuned, scores = {}, {}
for label, how in arms.items():
    tuned[label] = finetune(task=task, max_steps=P["finetune_steps"], weight_decay=0.01,
                            eval_interval=max(1, P["finetune_steps"] // 6),
                            out=f"{RUNS}/finetune-{label}",
                            overwrite=True, **settings, **how)
    scores[label] = evaluate_task(tuned[label]["model"], tok, task.test, limit=P["n_eval"],
                                  max_new_tokens=P["max_new_tokens"])
    print(f"{label:>8}: test loss {scores[label]['loss']:.3f}, BLEU {scores[label]['bleu']:.1f}")

# %%
# the break, measured: the masked matrices' zeros each arm kept through fine-tuning, and their cost
for label in ("SPSF", "SPDF"):
    zeros = sparsity_report(tuned[label]["model"])["total"]["sparsity"]
    print(f"{label}: {zeros:.1%} of the block weights are zero after fine-tuning; test loss "
          f"{scores[label]['loss']:.3f}, BLEU {scores[label]['bleu']:.1f}")

# %%
fig = plt.figure(figsize=(10, 7.6))  # the curves above, the two scores below: 10 in reads at 100%
grid = fig.add_gridspec(2, 2)
axes = [fig.add_subplot(grid[0, :]), fig.add_subplot(grid[1, 0]), fig.add_subplot(grid[1, 1])]
plots.plot_curves(tuned, ax=axes[0], title="Fine-tuning loss (target tokens only)")
plots.plot_bars({k: v["loss"] for k, v in scores.items()}, ax=axes[1], fmt="{:.3f}",
                ylabel="test loss (nats per target char, lower is better)",
                title="Reference likelihood",
                reference=scores["dense"]["loss"], reference_label="dense", xlabel="arm")
plots.plot_bars({k: v["bleu"] for k, v in scores.items()}, ax=axes[2], fmt="{:.1f}",
                ylabel="BLEU (greedy, higher is better)",
                title=f"BLEU on {scores['dense']['n_inputs']} test inputs",
                reference=scores["dense"]["bleu"], reference_label="dense", xlabel="arm")
fig.tight_layout()
plt.show()

rows = [dict(arm=k, pretrain_flops=pre[0.75 if k in ("SPDF", "SPSF") else 0.0]["flops"]
             if k != "scratch" else 0.0,
             test_loss=v["loss"], perplexity=v["perplexity"], bleu=v["bleu"])
        for k, v in scores.items()]
print(plots.format_table(rows, {"arm": "arm", "pretrain_flops": "pre-training FLOPs",
                                "test_loss": "test loss",
                                "perplexity": "perplexity", "bleu": "BLEU"}))
gap = scores["SPDF"]["loss"] - scores["dense"]["loss"]
print(f"SPDF is {gap:+.3f} nats from dense with {pre[0.0]['flops'] / pre[0.75]['flops']:.2f}x "
      f"fewer pre-training FLOPs; "
      f"SPSF {scores['SPSF']['loss'] - scores['dense']['loss']:+.3f}; scratch "
      f"{scores['scratch']['loss'] - scores['dense']['loss']:+.3f}")
# the SPDF-dense gap on the validation loss at each evaluation: does it stay put or shrink?
(steps, spdf_val), (_, dense_val) = (plots.history(tuned["SPDF"], "val_loss"),
                                     plots.history(tuned["dense"], "val_loss"))
print("SPDF - dense validation loss by step: "
      + ", ".join(f"{s}: {a - b:+.3f}" for s, a, b in zip(steps, spdf_val, dense_val)))
for label in ("SPSF", "scratch"):  # the slow arms: first and last validation loss
    _, val = plots.history(tuned[label], "val_loss")
    print(f"{label} validation loss: {val[0]:.3f} at the first evaluation, {val[-1]:.3f} at the "
          "last")

# %% [markdown]
# **Reading it.** Look at the ordering first. Pre-training of any kind beats scratch: the
# language model already knows spelling and word order. Keeping the mask (SPSF) is far behind
# fine-tuning the *same* checkpoint densely: that is the paper's case for switching to dense
# for the cheap phase. Whether SPDF *matches* dense cannot be read off this table: the gap
# printed under it shrinks quickly over the last evaluations while both arms are still
# learning, so at least part of it is how *fast* each arm learns the task, not a ceiling on
# how *well* it can (a lack of capacity would show as a gap that stays put). The paper's claim is
# for 125M-1.3B models
# pre-trained on billions of tokens; this one runs a minute (notebook 05 varies the model size
# and reads a multi-seed study; the `gpu` scale trains larger models longer). One seed:
# differences of a few hundredths of a nat can be noise, differences of tenths are not. The test
# loss is steadier
# than BLEU, which hinges on every greedy choice.
#
# What the models write for the same inputs:

# %%
shown = task.test[:2]
outputs = {label: decode(r["model"], tok, [ex.input for ex in shown],
                         max_new_tokens=P["max_new_tokens"])
           for label, r in tuned.items()}
print(plots.format_samples([ex.input for ex in shown], outputs, [ex.references for ex in shown],
                           n=2))

# %% [markdown]
# **What you should see.** The [reference run](reference/04_dense_finetuning.html) at the
# default scale (one thread, torch 2.13.0) printed pre-training validation losses of **1.893**
# (dense) and **2.043** (75% sparse, **1.68x** fewer pre-training FLOPs), then test losses and
# BLEU of **0.461 / 19.2** (dense), **0.771 / 12.2** (SPDF), **1.476 / 1.9** (SPSF) and
# **1.920 / 0.6** (scratch): SPDF **+0.309** nats from dense, SPSF **+1.015**, scratch
# **+1.459**; the SPDF-dense validation gap by step rose to **+0.583** at step 300, then fell to
# **+0.513**, **+0.396** and **+0.339**. The break, measured: SPSF kept **75.0%** of the
# block weights at zero through fine-tuning, SPDF **0.0%**. The ordering dense < SPDF < SPSF <
# scratch is the paper's; the size of the SPDF gap is this budget's.
#
# **Still unconverged.** At the last fine-tuning step every validation curve is still falling,
# and not at the same rate: the "SPDF - dense validation loss by step" line printed under the
# table first grows (dense learns the task format faster), then shrinks at every evaluation
# after its peak (in the reference run by about a third over the last 200 steps). The gap in the
# table therefore measures partly how *fast* each arm learns the task,
# not only how *well* it can: with more fine-tuning steps it would likely be smaller, and only a
# longer run (with several seeds) can say by how much, or whether it closes. SPSF and scratch
# end far above the others: their validation losses went from 2.092 and 2.285 at the first
# evaluation to only 1.508 and 1.913 at the last, and they are not catching up at this rate.
#
# **The samples.** None of the arms is good at this budget: even dense garbles words ("Henarbour
# Bidge Heron"), misnames Wild Thyme ("The Windering Gry") and gets slots wrong (it calls The Red
# Kite family friendly, which the input says it is not, and invents landmarks). SPDF produces
# sentence-shaped text with more misspellings ("caled",
# "universitrity") and gets the family-friendly slot right in both samples. SPSF
# and scratch fall into repetition ("The The The", "a a a"), which is what BLEU near 0 means.
# BLEU rewards shared n-grams, so a fluent wrong description can outscore a halting right one:
# read samples next to the score.
#
# ## Check your understanding
#
# 1. SPDF and SPSF start from the same checkpoint and fine-tune for the same steps. What is the
#    only difference, and why does it matter more for fine-tuning than the FLOPs it costs?
# 2. The table gives the SPDF-dense gap at one step of unconverged runs. Name two numbers you could
#    report instead that would tell "SPDF learns the task more slowly" from "SPDF ends worse",
#    and what each needs (runs, steps, seeds).
# 3. Two arms differ by 0.5 BLEU on 100 test inputs with one seed. What do you conclude?
# 4. Why does the scratch arm do so badly with the same fine-tuning steps as the others?
# 5. What does the loss mask count, and why does it include the end-of-text token?
# 6. SPSF loses to SPDF here. Name a situation in which SPSF might still be the right choice.
# 7. Why is the test loss steadier than BLEU between seeds?
# 8. The SPDF arm used 1.68x fewer pre-training FLOPs. Is the saving over the whole recipe
#    (pre-training and fine-tuning) larger or smaller, and by how much here?
# 9. The printed SPDF-dense gap by step shrinks. Why is extrapolating that trend to "it closes"
#    risky?
#
# **Try this: predict, then measure, then explain** (about 5 minutes). *Predict* first: will the
# SPDF-dense gap in test loss shrink, stay or grow with twice the steps? Fine-tune only the dense
# and the SPDF arms again with twice
# the steps (`max_steps=2 * P["finetune_steps"]`, new `out` folders) and print the SPDF-dense gap
# in test loss next to the table's. Did it shrink, and by how much? Which of "SPDF learns more
# slowly" and "SPDF ends worse" does your result support, and what would make you sure?


# %% [markdown] tags=["answer"]
# **Answers (instructor's copy).**
# 1. SPSF keeps the mask, so 75% of the block weights stay zero while fine-tuning; SPDF lets
#    them train. Fine-tuning is a tiny share of the total FLOPs, so giving it the full model
#    costs little and returns the capacity the task needs.
# 2. For example: the gap after fine-tuning to convergence (runs 2-4x longer, until the
#    validation loss stops falling, with several seeds and a paired interval: "worse" if it
#    stays above zero), and the steps each arm needs to reach a fixed validation loss (the
#    dense arm's final loss, say: "slower" if SPDF needs more steps but gets there). Both
#    need the same seeds for both arms, so the differences are paired.
# 3. Nothing yet: BLEU of greedy outputs of one seed moves by more than that between seeds;
#    compare test losses, add seeds and look at a paired interval (lesson 05).
# 4. It has to learn spelling, word order and the task from the small task set alone; the
#    pre-trained arms already model English characters and words.
# 5. Positions whose next token belongs to the target (the description) or is the end-of-text.
#    The end-of-text teaches the model to stop; without it decoding runs on to the token limit.
# 6. When the fine-tuned model must itself be sparse: served on hardware or kernels that exploit
#    the zeros (inference cost), or under a memory limit. SPDF returns a dense model.
# 7. The loss averages the likelihood of every reference character; BLEU scores one greedy
#    string per input, where one early different choice changes everything after it.
# 8. Smaller: fine-tuning is dense for every arm, so its FLOPs are the same for all and dilute
#    the saving; here fine-tuning is short, so the whole-recipe factor is a little below 1.68x
#    (compute it from the `flops` of the pre-training and fine-tuning results).
# 9. Learning curves decelerate: a gap can shrink fast early and then level off above zero.
#    Only running longer (with seeds) shows where it ends.
#
# **Try this.** Expect it to shrink: the "SPDF - dense validation loss by step" line printed under
# the table already narrowed over the last evaluations. If twice the steps shrink the gap a lot,
# "SPDF learns more slowly" fits; if it stays where it was, "SPDF ends worse" fits. One run cannot
# tell which: several seeds with paired intervals (lesson 05) and runs long enough that both
# curves flatten would.
