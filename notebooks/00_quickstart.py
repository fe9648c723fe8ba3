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
# # 00 · Quickstart: the SPDF recipe in a few cells
#
# **Question:** can a GPT whose attention and MLP weights were 75% zeros during pre-training
# still learn a downstream task once those zeros may train, and how many pre-training FLOPs
# did the zeros save?
#
# *Runs in about 1.9 min of wall-clock time (1.9 min of CPU time) at the default scale, executed as
# a student runs it: figures drawn, one thread (measured 2026-12-06 on AMD EPYC, 2 CPUs;
# [how](../results/lesson_times.md)). [Reference run with outputs](reference/00_quickstart.html).
# `MINISPDF_SCALE=smoke` runs it in seconds, `gpu` at a larger scale.*
#
# **Learning goals.** After this lesson you can
# - name the two phases of SPDF and say which weights each phase trains;
# - run sparse pre-training, dense fine-tuning and evaluation with three calls into `minispdf`;
# - read a FLOP reduction and a BLEU score off a run, and say what each measures.
#
# **Prerequisites.** Python and a first idea of what a GPT language model is (next-token
# prediction, training with a loss). No PyTorch needed to follow; lesson 01 opens the model.
#
# **Paper.** Thangarasa et al., *SPDF: Sparse Pre-training and Dense Fine-tuning for Large
# Language Models*, UAI 2023, [arXiv:2303.10464](https://arxiv.org/abs/2303.10464). This lesson
# covers the method as the abstract and the method section state it: static unstructured sparse
# pre-training, then dense fine-tuning on a data-to-text task (the paper uses E2E, WebNLG, DART).
#
# SPDF splits training in two. **Sparse pre-training** keeps a fixed random mask on the block
# matrices, because pre-training is where almost all the FLOPs are spent. **Dense fine-tuning**
# drops the mask: the pruned weights start at 0.0 and learn, so the model gets its full
# capacity back for the cheap phase. Everything below runs offline on data that ships with Python.

# %% tags=["parameters"]
from minispdf.lessons import check, hint, setup  # hint("name") prints an exercise's hint

# default: laptop CPU, minutes | gpu: one GPU, bigger | smoke: CI, seconds
SCALES = {
    "default": dict(preset="nano", block_size=256, batch_size=8, lr=3e-3, warmup=50, eval_iters=10,
                    pretrain_steps=1200, finetune_steps=800, n_train=1000, n_eval=100,
                    max_new_tokens=200),
    "gpu": dict(preset="small", block_size=256, batch_size=32, lr=1e-3, warmup=100, eval_iters=20,
                pretrain_steps=3000, finetune_steps=1000, n_train=4000, n_eval=300,
                max_new_tokens=200),
    "smoke": dict(preset="nano", block_size=256, batch_size=4, lr=3e-3, warmup=2, eval_iters=2,
                  pretrain_steps=12, finetune_steps=8, n_train=40, n_eval=6, max_new_tokens=30),
}
# MINISPDF_SCALE picks the scale; torch gets one thread unless MINISPDF_THREADS says otherwise (the
# run time above is measured with one: two threads on two cores shared with other work run many
# times slower)
SCALE, P, THREADS = setup(SCALES)
DEVICE = "auto"  # cuda if present, else mps, else cpu
PROGRESS = True  # progress bars while training (widgets in JupyterLab, text in a terminal)
RUNS = "runs/00_quickstart"  # checkpoints and logs go here

# %%
import matplotlib.pyplot as plt

from minispdf import plots
from minispdf.data import get_tokenizer
from minispdf.evaluate import decode, evaluate_task
from minispdf.spdf import finetune, pretrain
from minispdf.tasks import make_builtin_task

# the same training settings for every run of this notebook
settings = dict(batch_size=P["batch_size"], lr=P["lr"], warmup_steps=P["warmup"],
                eval_iters=P["eval_iters"],
                device=DEVICE, progress=PROGRESS)
evals = lambda steps: max(1, steps // 6)  # evaluate ~6 times per run, for the curves

# %% [markdown]
# ## 1 · Sparse pre-training
#
# Where the masks sit in each transformer block (lesson 01 opens the model and lesson 02
# counts what the masked matrices cost):

# %%
plots.draw_block()
plt.show()

# %% [markdown]
#
# `pretrain(sparsity=0.75)` builds a GPT, gives every q/k/v, attention-output and MLP matrix a
# random mask that keeps exactly 25% of its weights, and trains a character-level language
# model on Python's own documentation. The mask never changes; the training loop keeps the
# pruned weights, their gradients and their Adam moments at exactly zero.
#
# **The recipe in equations.** Each masked matrix $W$ (with $n$ weights) gets a fixed mask
# $M \in \{0, 1\}^{n}$ with exactly $\mathrm{round}((1-s)\,n)$ ones. Sparse pre-training trains
# $W \odot M$: after every optimizer step $W \leftarrow W \odot M$ (lesson 03 writes that step).
# Dense fine-tuning drops $M$ and trains all of $W$. The share of the *whole* model that is zero
# is $s \cdot \sum_{\text{masked}} n_i \,/ \sum_{\text{all}} n_i$ (exercise 0), and the saving is
# the FLOP ratio $r = F_{\text{train}}(0) / F_{\text{train}}(s)$, which lesson 02 writes out
# component by component.

# %%
sparse = pretrain(preset=P["preset"], block_size=P["block_size"], sparsity=0.75, data="builtin",
                  max_steps=P["pretrain_steps"], eval_interval=evals(P["pretrain_steps"]),
                  out=f"{RUNS}/pretrain-sparse75", overwrite=True, **settings)
print(f"validation loss {sparse['val_loss']:.3f} nats per character after {sparse['step']} steps")
print(f"pre-training FLOPs {sparse['flops']:.3g}; the same run dense: {sparse['flops_dense']:.3g} "
      f"-> {sparse['flops_dense'] / sparse['flops']:.2f}x fewer")

# %% [markdown]
# The 75% applies to the masked matrices only. How much of the *whole* model is zero?
#
# **Exercise 0: how sparse is the whole model?** `shapes` maps every parameter's name to its
# shape, `masked` lists the names of the masked parameters and `sparsity` is their sparsity.
# Return the fraction of all the model's parameters that the masks set to zero (a number
# between 0 and 1). Each masked matrix keeps exactly `round((1 - sparsity) * numel)` weights.
#
# <details><summary>Hint</summary>
#
# Count the zeros matrix by matrix, then divide by the number of *all* parameters, masked or
# not: the embeddings, layer norms and biases are part of the model too.
#
# </details>

# %% minispdf={"exercise": "model_sparsity"} tags=["exercise"]
import math


def model_sparsity(shapes, masked, sparsity):
    ### BEGIN SOLUTION
    zeros = 0
    for name in masked:
        n = math.prod(shapes[name])
        zeros += n - round((1 - sparsity) * n)
    return zeros / sum(math.prod(shape) for shape in shapes.values())
    ### END SOLUTION


# %%
from minispdf.sparsity import masked_parameters

model_sparsity = check("model_sparsity", model_sparsity)  # the kit's own until yours passes
model = sparse["model"]
shapes = {name: tuple(p.shape) for name, p in model.named_parameters()}
masked = [name for name, _, _ in masked_parameters(model)]
zeros = sum(int((p == 0).sum()) for p in model.parameters()) / sum(p.numel()
                                                                   for p in model.parameters())
print(f"yours: {model_sparsity(shapes, masked, 0.75):.1%} of all parameters are zero; counted in "
      f"the trained model: "
      f"{zeros:.1%}")
maskable = sum(math.prod(shapes[name]) for name in masked) / sum(math.prod(s)
                                                                 for s in shapes.values())
print(f"{maskable:.1%} of the parameters are maskable (block size {P['block_size']}); "
      f"75% of them is "
      f"{0.75 * maskable:.1%}")

# %% [markdown]
# ## 2 · Dense fine-tuning
#
# `finetune(init_from=...)` loads the checkpoint and **drops the masks** (`densify`), then trains
# every weight on a data-to-text task: restaurant meaning representations to descriptions, in
# the style of the E2E challenge the paper uses, generated offline. The loss counts only the
# description, not the input it is conditioned on.

# %%
task = make_builtin_task(n_train=P["n_train"], n_val=P["n_eval"], n_test=P["n_eval"], min_slots=3,
                         max_slots=5)
print(task.description)
print("input:    ", task.train[0].input)
print("reference:", task.train[0].references[0])
tuned = finetune(init_from=f"{RUNS}/pretrain-sparse75", task=task, max_steps=P["finetune_steps"],
                 weight_decay=0.01, eval_interval=evals(P["finetune_steps"]),
                 out=f"{RUNS}/finetune-spdf", overwrite=True, **settings)
print(f"fine-tuning validation loss {tuned['val_loss']:.3f} nats per target character")

# %% [markdown]
# ## 3 · Evaluate
#
# Greedy decoding of held-out inputs, scored with BLEU against all their references (sacrebleu,
# lowercased like the official E2E script), plus the perplexity of the references.

# %%
tok = get_tokenizer("char")
metrics = evaluate_task(tuned["model"], tok, task.test, limit=P["n_eval"],
                        max_new_tokens=P["max_new_tokens"])
print(f"BLEU {metrics['bleu']:.1f} on {metrics['n_inputs']} test inputs; "
      f"reference perplexity {metrics['perplexity']:.2f} per character")
shown = task.test[:3]
outputs = decode(tuned["model"], tok, [ex.input for ex in shown],
                 max_new_tokens=P["max_new_tokens"])
print(plots.format_samples([ex.input for ex in shown], {"SPDF model": outputs},
                           [ex.references for ex in shown], n=3))

# %%
fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.8))  # 10 in: read at 100% zoom
plots.plot_curves({"75% sparse": sparse}, ax=a,
                  title="Phase 1: sparse pre-training (language model)")
plots.plot_curves({"densified": tuned}, ax=b, title="Phase 2: dense fine-tuning (data-to-text)")
fig.tight_layout()
plt.show()

# %%
import contextlib

from minispdf.batches import TokenBatches
from minispdf.data import prepare_data
from minispdf.train import estimate_loss

# the sparse checkpoint scored the same way (40 fixed batches) on each split of the corpus
tokens = prepare_data("builtin", "char", data_dir="data", verbose=False)
corpus = TokenBatches(tokens, P["batch_size"], P["block_size"])
device = next(sparse["model"].parameters()).device
split_loss = {split: estimate_loss(sparse["model"], corpus, split, 40, device, seed=0,
                                   autocast=contextlib.nullcontext) for split in ("train", "val")}
print(f"pre-trained model on 40 fixed batches: training text {split_loss['train']:.3f}, "
      f"validation text {split_loss['val']:.3f} "
      f"({split_loss['train'] - split_loss['val']:.2f} nats lower on validation)")

# %% [markdown]
# **What you should see.** The [reference run](reference/00_quickstart.html) at the default
# scale (one thread, torch 2.13.0) printed: validation loss **1.995** nats per character after
# 1200 sparse steps; **1.68x** fewer pre-training FLOPs than the same run dense (**1.59e12** vs
# **2.68e12**); **55.5%** of all the parameters zero (exercise 0); fine-tuning validation loss
# **0.382** nats per target character; **BLEU 22.2** on 100 test inputs, reference perplexity
# **1.46**. (Numbers in bold are checked against the reference by `tests/test_notebooks.py`.) Your
# numbers move a little with the machine and
# torch version; the order of magnitude should not.
#
# **Reading the figures.** Left, the pre-training loss falls fast for the first few hundred
# steps (the model learns the characters and common words), then slowly; it has not flattened
# at step 1200, so a longer run would still improve it.
#
# *Why the validation dots sit below the training line.* Not dropout or training mode: these
# models have no dropout (`dropout=0.0`), so `model.train()` and `model.eval()` compute the same
# loss. Three things differ between the two. (1) **Different text:** the validation split is the
# last 10% of the corpus (the `help()` topics late in the alphabet), which this model finds
# easier to predict: the same checkpoint, scored the same way on 40 fixed batches of each split,
# gives about 0.2 nats less on validation than on training text. (2) **Different batches:** each
# training point is one random batch, read *before* that step's update; each dot is the mean of
# the same `eval_iters` fixed validation batches after the step, a small sample that can sit a
# little higher or lower than the split as a whole. (3) **Smoothing:** the line is an exponential
# moving average (about 10 steps), which lags above a falling curve early on. None of this means
# the model generalises "better than it trains"; compare dots with dots and lines with lines. Right,
# the fine-tuning loss counts only
# the description characters: it starts far lower than the pre-training loss (descriptions are
# repetitive, and the pre-trained model already spells) and is still falling at the last step.
#
# **Reading the samples.** The descriptions are fluent, template-like English and often start
# right ("The Painted Crow is a pub."), but they invent or drop slots: a wrong area, a landmark
# from another training example, a misspelt name ("Corn Excharge"), even contradictions ("not
# suitable for families ... welcomes children"). BLEU rewards the shared wording and barely
# penalises a wrong fact; read samples, not only the score.
#
# **What to take away.** The 75% sparse model pre-trained with fewer FLOPs than a dense one
# (the factor printed in step 1; it is modest for this 2-layer, 64-wide model and grows with
# width: notebook 02), and after densifying it learns the task. Whether it learns it *as well
# as* a dense model is notebook 04.
#
# Next: `01_gpt_and_masks` (where the masks act), `02_flop_accounting` (what is saved and why
# your hardware does not notice), `03_sparse_pretraining`, `04_dense_finetuning`,
# `05_paper_findings_small_scale`, `06_beyond_the_paper`.
#
# ## Check your understanding
#
# 1. Which weights are zero during sparse pre-training, and what happens to them at the start
#    of dense fine-tuning?
# 2. Why does SPDF spend its sparsity on pre-training rather than on fine-tuning?
# 3. At 75% sparsity a quarter of the masked weights remain, yet the FLOP reduction printed
#    above is well below 4x. Why?
# 4. The validation dots sit below the training line. What is the main reason in this kit, and
#    name one common reason that does *not* apply here.
# 5. Exercise 0 printed the share of the whole model that is zero at 75% sparsity. Why is it
#    well below 75%, and what would it approach for a much wider model?
# 6. The fine-tuning loss counts only the description, not the input. Why not train on the input
#    too?
# 7. Two fine-tuned models differ by 1 BLEU and by 0.05 nats of test loss. Which difference would
#    you trust more on 100 test inputs and one seed, and why?
# 8. Does the fine-tuning phase cost sparse or dense FLOPs per step? What does that mean for the
#    saving over the whole recipe?
# 9. The pre-training curve has not flattened at step 1200. What does that imply for any
#    sparse-versus-dense comparison at this budget?
#
# **Try this: predict, then measure, then explain** (about 5 minutes). *Predict* first, on
# paper: is the FLOP reduction at 90% sparsity more or less than 0.9 / 0.75 times the one at
# 75%? *Measure:* change `sparsity=0.75` in the pre-training cell to 0.5,
# then 0.9, and rerun only that cell each time. Write down the validation loss and the FLOP
# reduction of each run, then plot loss against reduction with `plt.plot`. Which sparsity buys
# the most FLOPs per nat of validation loss lost at this budget, and would you expect the
# answer to hold for a model 10x wider (lesson 02)?


# %% [markdown] tags=["answer"]
# **Answers (instructor's copy).**
# 1. The masked weights of the four block matrices (q/k/v, attention output, the two MLP
#    matrices) are exactly zero, 75% of each. `finetune` drops the masks: those weights start
#    at 0.0 and the optimizer may move them, so the model regains its full capacity.
# 2. Pre-training costs orders of magnitude more FLOPs than fine-tuning, so a saving there is
#    what matters; fine-tuning is cheap, and keeping it dense gives the task the whole model.
# 3. Only the masked matrices shrink. Attention between activations, the softmax and the LM
#    head stay dense, and in a 2-layer, 64-wide model they are a large share of the FLOPs.
# 4. Different text: the validation split is the last 10% of the corpus, which this model
#    predicts about 0.2 nats better than the training text at the same weights. Not dropout or
#    training mode: these models have `dropout=0.0`, so train and eval mode give the same loss.
#    (The batches and the smoothing of the line add a little noise on top.)
# 5. Only the block matrices are masked; the embeddings, layer norms and biases keep all their
#    weights and still count in the total: at this lesson's block size of 256, **74.0%** of the
#    parameters are maskable (the position embedding grows with the block size: lesson 01 prints
#    81% for `nano` at its preset's block size of 64), and 75% of that is the **55.5%** printed.
#    For a much wider model the block matrices dominate (they grow with d²), so the share
#    approaches 75%.
# 6. The input is given at test time: the task is to write the description *given* the input.
#    Training to predict the input spends capacity and gradient on text the model never has to
#    produce, and mixes two losses on different scales.
# 7. The test loss: it averages the likelihood of every reference character, while BLEU scores
#    one greedy decoding per input, where a single different early character changes the whole
#    string. One seed and 100 inputs move BLEU by more than 1 point.
# 8. Dense: the masks are gone. The saving is only in pre-training, which is where almost all
#    the FLOPs of a real recipe are; the whole-recipe saving is a little smaller than the
#    pre-training factor.
# 9. The runs are compared at a point where both still improve: the gap mixes how good each
#    would become with how fast it gets there. Compare at several budgets (lesson 06) or train
#    to convergence before concluding.
#
# **Try this.** Less than 0.9 / 0.75 times: the reduction is $F_{\text{train}}(0) /
# F_{\text{train}}(s)$, and only the masked matrices shrink with the density while attention and
# the LM head stay dense, so going from 75% to 90% sparsity removes a smaller and smaller share of
# the total. In this 2-layer model the dense part is large, so the higher sparsity buys few extra
# FLOPs while its loss keeps rising: expect the measured FLOPs per nat lost to be worst at 90%. A
# model 10x wider spends most of its FLOPs in the masked matrices (lesson 02, section 3), so its
# reduction approaches $1/(1-s)$ and high sparsity pays more there.
