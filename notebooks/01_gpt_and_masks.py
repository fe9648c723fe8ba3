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
# # 01 · The GPT and its masks
#
# **Question:** where exactly does SPDF's mask act, what does a mask look like, and what
# changes when it is dropped for fine-tuning?
#
# *Runs in about 0.8 min of wall-clock time (0.8 min of CPU time) at the default scale, executed as
# a student runs it: figures drawn, one thread (measured 2026-12-06 on AMD EPYC, 2 CPUs;
# [how](../results/lesson_times.md)). [Reference run with
# outputs](reference/01_gpt_and_masks.html). `MINISPDF_SCALE=smoke` runs it in seconds, `gpu` at a
# larger scale.*
#
# **Learning goals.** After this lesson you can
# - point to the four weight matrices of a GPT-2 block that SPDF masks, and say why the rest stays
#   dense;
# - write a random mask with an exact count and a magnitude mask (exercises 1 and 2), and tell them
#   apart in a picture;
# - compare ways of spreading 75% sparsity over the layers (uniform, ERK, global magnitude);
# - say what `densify` changes and what it leaves alone.
#
# **Prerequisites.** Lesson 00; PyTorch tensors and `nn.Linear` (a weight of shape out x in).
#
# **Paper.** [arXiv:2303.10464](https://arxiv.org/abs/2303.10464), the method: which weights are
# sparsified (attention and MLP projections, static unstructured masks with the same sparsity in
# every matrix), and the switch to dense for fine-tuning.

# %% tags=["parameters"]
from minispdf.lessons import check, hint, setup  # hint("name") prints an exercise's hint

# default: laptop CPU, minutes | gpu: one GPU, bigger | smoke: CI, seconds
SCALES = {
    "default": dict(preset="nano", block_size=128, batch_size=8, lr=3e-3, warmup=50, eval_iters=10,
                    train_steps=600, dense_steps=200),
    "gpu": dict(preset="small", block_size=256, batch_size=32, lr=1e-3, warmup=100, eval_iters=20,
                train_steps=2000, dense_steps=400),
    "smoke": dict(preset="nano", block_size=64, batch_size=4, lr=3e-3, warmup=2, eval_iters=2,
                  train_steps=8, dense_steps=4),
}
# MINISPDF_SCALE picks the scale; torch gets one thread unless MINISPDF_THREADS says otherwise (the
# run time above is measured with one: two threads on two cores shared with other work run many
# times slower)
SCALE, P, THREADS = setup(SCALES)
DEVICE = "auto"  # cuda if present, else mps, else cpu
PROGRESS = True  # progress bars while training (widgets in JupyterLab, text in a terminal)
RUNS = "runs/01_gpt_and_masks"

# %%
import copy

import matplotlib.pyplot as plt
import torch

from minispdf import GPT, densify, load_checkpoint, plots, preset_config, sparsify, sparsity_report
from minispdf.masks import regrowth
from minispdf.sparsity import format_sparsity_report, masked_parameters, target_parameters
from minispdf.spdf import finetune, pretrain

settings = dict(batch_size=P["batch_size"], lr=P["lr"], warmup_steps=P["warmup"],
                eval_iters=P["eval_iters"],
                eval_interval=0, device=DEVICE, progress=PROGRESS)

# %% [markdown]
# ## 1 · Where the masks act
#
# Each GPT-2 block has four weight matrices: the fused q/k/v projection `attn.c_attn`, the
# attention output `attn.c_proj`, and the MLP's `mlp.c_fc` and `mlp.c_proj`. The paper masks
# exactly these, because they carry most of the parameters and most of the FLOPs. The token
# embedding is a lookup (nothing to save), the LM head shares its weight with it, and
# LayerNorms and biases are tiny, so all of those stay dense. The diagram is drawn from the
# library: the hatched matrices are the ones `sparsify` targets.

# %%
plots.draw_block()
plt.show()

# %% [markdown]
# The table lists the model's tensors and marks the maskable ones:

# %%
model = GPT(preset_config(P["preset"], block_size=P["block_size"]))
targets = {name for name, _ in target_parameters(model)}
rows = [dict(parameter=name, shape="x".join(map(str, p.shape)), numel=p.numel(),
             masked="yes" if name in targets else "")
        for name, p in model.named_parameters()]
print(plots.format_table(rows[:8] + rows[-2:]))
print(f"... {len(rows)} tensors in all")

share = {}
for name in (P["preset"], "gpt2", "gpt3-xl"):
    with torch.device("meta"):  # shapes only: no memory for GPT-3 XL's 1.3B weights
        m = GPT(preset_config(name))
    share[name] = sum(p.numel() for _, p in target_parameters(m)) / m.num_params()
print({k: f"{v:.0%} of the parameters are maskable" for k, v in share.items()})

# %% [markdown]
# GPT-2 small has a 50k-token vocabulary, so its embedding is a third of the model and only
# ~68% of the weights can be masked; in GPT-3 XL it is ~92%. The kit's small models read bytes
# (257 tokens), so their embedding is small and, like the large model, most weights are maskable.
#
# ## 2 · A random mask
#
# `sparsify` gives each target matrix a bool buffer `weight_mask` (True = kept) and sets the
# pruned weights to exactly 0.0. The random mask keeps an *exact* count per matrix, so every
# matrix is exactly 75% sparse, as in the paper's "uniform" distribution.

# %%
masks = sparsify(model, 0.75, method="random", seed=0)
layer = model.transformer.h[0].attn.c_attn
print(layer)
print("mask:", layer.weight_mask.dtype, tuple(layer.weight_mask.shape),
      f"kept {int(layer.weight_mask.sum())} of {layer.weight_mask.numel()}")
print("pruned weights are exactly zero:", bool((layer.weight[~layer.weight_mask] == 0).all()))

# %% [markdown]
# **Exercise 1: random mask.** Return a bool tensor of `shape` (True = kept) that keeps
# **exactly** `round((1 - sparsity) * numel)` weights chosen uniformly at random, drawing all
# randomness from `generator`. (Why exact? A Bernoulli draw `rand() > sparsity` is right only
# on average, and the FLOP count assumes the exact density.) The cell under it checks your
# function against the library's `sparsify`, with the same checks the grader runs.
#
# <details><summary>Hint</summary>
#
# A random permutation of `numel` positions (`torch.randperm(numel, generator=generator)`)
# picks every position with the same chance; keep its first `n_keep` entries, then reshape a
# flat bool tensor to `shape`.
#
# </details>

# %% minispdf={"exercise": "random_mask"} tags=["exercise"]
import torch


def random_mask(shape, sparsity, generator=None):
    ### BEGIN SOLUTION
    numel = 1
    for n in shape:
        numel *= n
    n_keep = round((1.0 - sparsity) * numel)
    order = torch.randperm(numel, generator=generator)
    mask = torch.zeros(numel, dtype=torch.bool)
    mask[order[:n_keep]] = True
    return mask.view(*shape)
    ### END SOLUTION


# %%
random_mask = check("random_mask", random_mask)  # the kit's own until yours passes



# %% [markdown]
# ## 3 · Random vs magnitude masks, drawn
#
# A magnitude mask keeps the largest |w| and so needs trained weights to mean anything. We
# train a dense model briefly, then mask copies of it both ways. The random mask is uniform
# noise by construction; the magnitude mask follows the structure the weights learned
# (stripes where whole input or output features are large or small). SPDF uses random masks:
# they need no trained model, and they prune every feature evenly.
# (Exercise 2 below has you write the magnitude mask; this section draws the library's.)

# %%
dense_run = pretrain(preset=P["preset"], block_size=P["block_size"], max_steps=P["train_steps"],
                     out=f"{RUNS}/dense", overwrite=True, **settings)
trained = dense_run["model"].cpu()
by_method = {}
for method in ("random", "magnitude"):
    m = copy.deepcopy(trained)
    by_method[method] = sparsify(m, 0.75, method=method, seed=0)
name_qkv, name_fc = "transformer.h.0.attn.c_attn.weight", "transformer.h.0.mlp.c_fc.weight"
plots.show_masks({
    "random, layer 0 q/k/v": by_method["random"][name_qkv],
    "magnitude, layer 0 q/k/v": by_method["magnitude"][name_qkv],
    "random, layer 0 MLP in": by_method["random"][name_fc],
    "magnitude, layer 0 MLP in": by_method["magnitude"][name_fc],
}, crop=64, title="75% masks (black = kept), top-left 64x64 corner")
plt.show()

# %% [markdown]
# **Exercise 2: magnitude mask.** Return a bool tensor shaped like `weight` that keeps the
# `round((1 - sparsity) * numel)` weights with the largest absolute value. Do not modify
# `weight`.
#
# <details><summary>Hint</summary>
#
# `weight.detach().abs().flatten().topk(n_keep).indices` are the flat positions of the largest
# |w|. Mind `n_keep = 0` (sparsity 1.0 or a tiny matrix): keep nothing.
#
# </details>

# %% minispdf={"exercise": "magnitude_mask"} tags=["exercise"]
import torch


def magnitude_mask(weight, sparsity):
    ### BEGIN SOLUTION
    n_keep = round((1.0 - sparsity) * weight.numel())
    mask = torch.zeros(weight.numel(), dtype=torch.bool)
    if n_keep > 0:
        mask[weight.detach().abs().flatten().topk(n_keep).indices] = True
    return mask.view_as(weight)
    ### END SOLUTION


# %%
magnitude_mask = check("magnitude_mask", magnitude_mask)
w = trained.transformer.h[0].attn.c_attn.weight.detach()
plots.show_masks({"your random mask": random_mask(tuple(w.shape), 0.75,
                                                  torch.Generator().manual_seed(0)),
                  "your magnitude mask": magnitude_mask(w, 0.75)}, crop=64)
plt.show()


# %% [markdown]
# ## 4 · Sparsity per layer
#
# "75% sparse" can be spread over the layers in different ways. The paper's **uniform**
# distribution gives every matrix 75%. **ERK** (from RigL) keeps more of the small matrices
# (here the attention output) and less of the big ones. A **global magnitude** mask keeps the
# largest weights of the whole network, so layers end up wherever their weights put them.

# %%
reports = {}
for label, kwargs in {"uniform random (paper)": dict(method="random"),
                      "ERK random": dict(method="random", distribution="erk"),
                      "global magnitude": dict(method="magnitude", scope="global")}.items():
    m = copy.deepcopy(trained)
    sparsify(m, 0.75, seed=0, **kwargs)
    reports[label] = sparsity_report(m)
plots.plot_layer_sparsity(reports, title="Three ways to be 75% sparse")
plt.show()

# %% [markdown]
# ## 5 · Sparse training keeps the zeros at zero
#
# During sparse pre-training the library keeps each mask with hooks: a gradient hook zeroes the
# gradients of the pruned weights, and a hook after every optimizer step sets the pruned weights
# and their Adam moments back to exactly zero (lesson 03 has you write such a step). After
# training, every masked weight is still exactly zero. In equations, for a mask $M$ (1 = kept):
#
# $$\nabla_W \leftarrow \nabla_W \odot M \;\text{(as backward finishes)}, \qquad
#   W \leftarrow W \odot M,\; m \leftarrow m \odot M,\; v \leftarrow v \odot M
#   \;\text{(after each step)}.$$

# %%
sparse_run = pretrain(preset=P["preset"], block_size=P["block_size"], sparsity=0.75,
                      max_steps=P["train_steps"],
                      out=f"{RUNS}/sparse75", overwrite=True, **settings)
report = sparsity_report(sparse_run["model"])
print(format_sparsity_report(report))
print("zeros == masked in every matrix:", all(r["zeros"] == r["masked"] for r in report["layers"]))
print(f"dense val loss {dense_run['val_loss']:.3f} vs 75% sparse {sparse_run['val_loss']:.3f} "
      f"(same steps; gap {sparse_run['val_loss'] - dense_run['val_loss']:.3f})")

# %% [markdown]
# ## 6 · What densify changes
#
# `densify` deletes the mask buffers and nothing else: the weights are unchanged, still 75%
# zeros. What changes is that the optimizer may now move them. We densify the sparse
# checkpoint and continue pre-training it densely for a few steps
# (`finetune(init_from=..., data="builtin")`), then look at the formerly pruned weights.
#
# **Break it, then fix it.** This is also what breaking the masking looks like: apply the mask
# *once* (the checkpoint's zeros) and then train without re-applying it after each optimizer step
# (here `densify` takes the hooks away; in lesson 03 a loop masks only the gradients). The cell
# below runs the break and prints how many pruned weights came back. SPDF wants exactly that, but
# only once pre-training is over. The fix, where they must stay zero, is to keep the hooks: the
# cell after it continues the same checkpoint for the same steps with `keep_masks=True` (the SPSF
# arm of lesson 04) and counts again.

# %%
sparse_model, _ = load_checkpoint(f"{RUNS}/sparse75")
old_masks = {name: mask.clone() for name, _, mask in masked_parameters(sparse_model)}
densify(sparse_model)
print("after densify: masks left =", len(masked_parameters(sparse_model)),
      f"| block sparsity still {sparsity_report(sparse_model)['total']['sparsity']:.0%}")

cont = finetune(init_from=f"{RUNS}/sparse75", data="builtin", max_steps=P["dense_steps"], seed=2,
                out=f"{RUNS}/densified", overwrite=True, **settings)
stats = regrowth(old_masks, cont["model"])
nonzero = sum(r["nonzero_fraction"] * r["pruned"]
              for r in stats["layers"]) / sum(r["pruned"] for r in stats["layers"])
print(f"after {P['dense_steps']} dense steps: {nonzero:.1%} of the formerly pruned weights "
      f"are nonzero; "
      f"val loss {sparse_run['val_loss']:.3f} -> {cont['val_loss']:.3f}")
print(f"mean |w|: formerly pruned {float(stats['pruned_abs'].mean()):.3f}, kept by the mask "
      f"{float(stats['kept_abs'].mean()):.3f}")
plots.plot_regrowth(stats)
plt.show()

# %%
# the fix: the same checkpoint, steps and data, with the masks (and their hooks) kept
kept = finetune(init_from=f"{RUNS}/sparse75", data="builtin", max_steps=P["dense_steps"], seed=2,
                keep_masks=True, out=f"{RUNS}/masks-kept", overwrite=True, **settings)
kept_stats = regrowth(old_masks, kept["model"])
still = sum(r["nonzero_fraction"] * r["pruned"] for r in kept_stats["layers"]) / sum(
    r["pruned"] for r in kept_stats["layers"])
print(f"masks kept for {P['dense_steps']} steps: {still:.1%} of the pruned weights are nonzero "
      f"(largest |w| {float(kept_stats['pruned_abs'].max()):.1f}); "
      f"val loss {sparse_run['val_loss']:.3f} -> {kept['val_loss']:.3f}")

# %% [markdown]
# Why nearly all of them move: `finetune` starts a fresh AdamW, and its first update of a weight
# is $-\eta_t\,\hat m/(\sqrt{\hat v}+\epsilon) = -\eta_t\, g/(|g|+\epsilon)$: about the step's
# learning rate $\eta_t$ for *any* gradient $g$ much larger than $\epsilon = 10^{-8}$, however
# small (the size of $g$ stops mattering once the moments have averaged a few steps). Two limits:
# $\eta_t$ is tiny during the warmup steps, so the first moves are tiny too; and a weight whose
# gradient is exactly zero does not move at all (weight decay of a zero weight is zero). The
# printed fraction is measured after all the dense steps, not after the first: it says that
# almost every formerly pruned weight received some gradient along the way. They still start far
# below the trained weights: dense fine-tuning adds capacity gently, on top of what sparse
# pre-training learned.
#
# **What you should see.** The [reference run](reference/01_gpt_and_masks.html) at the default
# scale (one thread, torch 2.13.0) printed: **81%** of the `nano` model's parameters are maskable
# (GPT-2 small **68%**, GPT-3 XL **92%**); every masked matrix exactly **75.0%** sparse and
# `zeros == masked` True after 600 steps of sparse training; validation loss **2.116** dense vs
# **2.197** at 75% after the same 600 steps; after densify and 200 dense steps **100.0%** of the
# formerly pruned weights were nonzero and the loss went from 2.197 to **2.138**; with the masks
# kept for the same 200 steps (the fix) **0.0%** were nonzero and the loss went to **2.149**. In
# the mask pictures the random masks look like even noise and the magnitude masks show stripes;
# in the regrowth histogram the formerly pruned weights had mean |w| **0.010** after the 200 dense
# steps, against **0.045** for the weights the mask kept. The 600-step runs are short: both
# losses were still falling, so the **0.081**-nat dense-sparse gap is a snapshot, not a
# converged difference.
#
# ## Check your understanding
#
# 1. A GPT-2 small has ~124M parameters but only ~68% of them can be masked; GPT-3 XL ~92%. What
#    makes the difference?
# 2. Why does a magnitude mask need a trained model while a random mask does not, and what do
#    the stripes in the magnitude mask say about the weights?
# 3. Right after `densify`, is the model's output different from the sparse model's? What is
#    different about its next training step?
# 4. What goes wrong with `torch.rand(shape) > sparsity` as a random mask, even though it is
#    right on average?
# 5. Why must `random_mask` draw all its randomness from `generator`?
# 6. Which parameters of the GPT are never masked, and why does SPDF leave them dense?
# 7. After `densify` the formerly pruned weights start at exactly 0. Why is 0 a good starting
#    value, and what would re-initialising them at random do?
# 8. Almost every formerly pruned weight was nonzero after the dense steps, although their
#    gradients are small. Which property of AdamW explains it?
# 9. The 75% sparse model trails dense after 600 steps. Give two reasons why this gap may
#    overstate the gap a longer, tuned run would show.
#
# **Try this: predict, then measure, then explain** (a few minutes). Load the dense checkpoint
# (`load_checkpoint(f"{RUNS}/dense")`),
# draw a 75% random mask and a 75% magnitude mask with `sparsify` on two copies, and compute for
# each the share of the total |w| of the masked matrices that the mask keeps. How much more of
# the weight mass does the magnitude mask keep, and what does that predict for the validation
# loss right after masking? Check the prediction with `minispdf.train.estimate_loss` or by
# continuing each copy for a few steps.


# %% [markdown] tags=["answer"]
# **Answers (instructor's copy).**
# 1. The embedding: GPT-2's 50257-token vocabulary times 768 is a third of the model and stays
#    dense (tied with the LM head). GPT-3 XL is wider and deeper, so its block matrices dominate.
# 2. Magnitude ranks weights by |w|, which means something only after training (at
#    initialisation every |w| comes from the same distribution). Stripes: whole rows or columns
#    (output or input features) are larger or smaller than others, and the mask follows them.
# 3. No: `densify` removes the masks and nothing else, so the weights (75% zeros) and the
#    output are the same. The next optimizer step may move the formerly pruned weights.
# 4. The number of kept weights varies from mask to mask (binomially): the FLOPs the run is
#    charged (at the nominal density) no longer match the weights it trains, two runs differ in
#    capacity, and small matrices can be far off.
# 5. Reproducibility: the same seed gives the same mask, so arms of one seed are paired, a run
#    can be repeated, and a grader can replay it. Torch's global generator is shared with
#    everything else and changes with any other draw.
# 6. The token and position embeddings, the layer norms and the biases (the LM head is tied to
#    the embedding). The embedding lookup costs no FLOPs, the norms and biases are tiny, and
#    masking an embedding row would delete information about a token.
# 7. At 0 the densified model computes exactly what the sparse model computed, so fine-tuning
#    starts from what pre-training learned. Random values would add noise to every layer's
#    output and undo part of the pre-training.
# 8. Adam divides the first moment by the root of the second: for any gradient much larger than
#    ε the step is about the learning rate, whatever the gradient's size. Only an exactly zero
#    gradient leaves a weight at zero.
# 9. The runs are short and still falling (the gap is a snapshot), one seed, and the
#    hyperparameters were chosen for the dense model and not retuned for the sparse one.
#
# **Try this.** The random mask keeps about a quarter of the weight mass (it keeps a quarter of
# the weights, whatever their size); the magnitude mask keeps the largest |w| and so clearly more
# of it. Prediction: right after masking, the magnitude-masked copy's validation loss rises much
# less than the random copy's, because the output of each layer changes less. A few steps of
# training narrow the difference as the kept weights adapt. SPDF still uses random masks: it masks
# before training, when there is no trained magnitude to rank by.
