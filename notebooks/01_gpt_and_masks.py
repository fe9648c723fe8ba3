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
# *Runs in about 0.3 min on a 2-core CPU (measured, default scale; `MINISPDF_SCALE=smoke` runs it in seconds, `gpu` at a larger scale).*

# %% tags=["parameters"]
import os

# default: laptop CPU, minutes | gpu: one GPU, bigger | smoke: CI, seconds
SCALE = os.environ.get("MINISPDF_SCALE", "default")
SCALES = {
    "default": dict(preset="nano", block_size=128, batch_size=8, lr=3e-3, warmup=50, eval_iters=10,
                    train_steps=600, dense_steps=200),
    "gpu": dict(preset="small", block_size=256, batch_size=32, lr=1e-3, warmup=100, eval_iters=20,
                train_steps=2000, dense_steps=400),
    "smoke": dict(preset="nano", block_size=64, batch_size=4, lr=3e-3, warmup=2, eval_iters=2,
                  train_steps=8, dense_steps=4),
}
assert SCALE in SCALES, f"MINISPDF_SCALE={SCALE!r}: choose one of {sorted(SCALES)}"
P = SCALES[SCALE]
DEVICE = "auto"  # cuda if present, else mps, else cpu
PROGRESS = SCALE != "smoke"  # progress bars while training
RUNS = "runs/01_gpt_and_masks"

# %%
import copy

import matplotlib.pyplot as plt
import torch

from minispdf import GPT, densify, load_checkpoint, plots, preset_config, sparsify, sparsity_report
from minispdf.sparsity import format_sparsity_report, masked_parameters, target_parameters
from minispdf.spdf import finetune, pretrain

settings = dict(batch_size=P["batch_size"], lr=P["lr"], warmup_steps=P["warmup"], eval_iters=P["eval_iters"],
                eval_interval=0, device=DEVICE, progress=PROGRESS)

# %% [markdown]
# ## 1 · Where the masks act
#
# Each GPT-2 block has four weight matrices: the fused q/k/v projection `attn.c_attn`, the
# attention output `attn.c_proj`, and the MLP's `mlp.c_fc` and `mlp.c_proj`. The paper masks
# exactly these, because they carry most of the parameters and most of the FLOPs. The token
# embedding is a lookup (nothing to save), the LM head shares its weight with it, and
# LayerNorms and biases are tiny, so all of those stay dense.

# %%
model = GPT(preset_config(P["preset"], block_size=P["block_size"]))
targets = {name for name, _ in target_parameters(model)}
rows = [dict(parameter=name, shape="x".join(map(str, p.shape)), numel=p.numel(), masked="yes" if name in targets else "")
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
# ## 3 · Random vs magnitude masks, drawn
#
# A magnitude mask keeps the largest |w| and so needs trained weights to mean anything. We
# train a dense model briefly, then mask copies of it both ways. The random mask is uniform
# noise by construction; the magnitude mask follows the structure the weights learned
# (stripes where whole input or output features are large or small). SPDF uses random masks:
# they need no trained model, and they prune every feature evenly.

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
# During sparse pre-training the loop masks the gradients (a multiply by the mask, redone with
# a `where` if a NaN or inf shows up, so that nothing in a pruned slot can leak), clips, steps
# AdamW, then re-applies the mask to the weights. After training, every masked weight is still
# exactly zero.

# %%
sparse_run = pretrain(preset=P["preset"], block_size=P["block_size"], sparsity=0.75, max_steps=P["train_steps"],
                      out=f"{RUNS}/sparse75", overwrite=True, **settings)
report = sparsity_report(sparse_run["model"])
print(format_sparsity_report(report))
print("zeros == masked in every matrix:", all(r["zeros"] == r["masked"] for r in report["layers"]))
print(f"dense val loss {dense_run['val_loss']:.3f} vs 75% sparse {sparse_run['val_loss']:.3f} (same steps)")

# %% [markdown]
# ## 6 · What densify changes
#
# `densify` deletes the mask buffers and nothing else: the weights are unchanged, still 75%
# zeros. What changes is that the optimizer may now move them. We densify the sparse
# checkpoint and continue pre-training it densely for a few steps
# (`finetune(init_from=..., data="builtin")`), then look at the formerly pruned weights.

# %%
sparse_model, _ = load_checkpoint(f"{RUNS}/sparse75")
old_masks = {name: mask.clone() for name, _, mask in masked_parameters(sparse_model)}
densify(sparse_model)
print("after densify: masks left =", len(masked_parameters(sparse_model)),
      f"| block sparsity still {sparsity_report(sparse_model)['total']['sparsity']:.0%}")

cont = finetune(init_from=f"{RUNS}/sparse75", data="builtin", max_steps=P["dense_steps"], seed=2,
                out=f"{RUNS}/densified", overwrite=True, **settings)
stats = plots.regrowth(old_masks, cont["model"])
nonzero = sum(r["nonzero_fraction"] * r["pruned"] for r in stats["layers"]) / sum(r["pruned"] for r in stats["layers"])
print(f"after {P['dense_steps']} dense steps: {nonzero:.1%} of the formerly pruned weights are nonzero; "
      f"val loss {sparse_run['val_loss']:.3f} -> {cont['val_loss']:.3f}")
plots.plot_regrowth(stats)
plt.show()

# %% [markdown]
# Every pruned weight moves after the first dense step (AdamW's first update has the size of
# the learning rate, whatever the gradient), but they start far below the trained weights:
# dense fine-tuning adds capacity gently, on top of what sparse pre-training learned.
#
# ## Exercises
#
# Write the two masks yourself. The cell under each exercise checks your function against
# the library's `sparsify` (the same checks `python -m minispdf.assignments grade` runs).
#
# **Exercise 1: random mask.** Return a bool tensor of `shape` (True = kept) that keeps
# **exactly** `round((1 - sparsity) * numel)` weights chosen uniformly at random, drawing all
# randomness from `generator`. (Why exact? A Bernoulli draw `rand() > sparsity` is right only
# on average, and the FLOP count assumes the exact density.)

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
from minispdf.assignments import check

check("random_mask", random_mask);


# %% [markdown]
# **Exercise 2: magnitude mask.** Return a bool tensor shaped like `weight` that keeps the
# `round((1 - sparsity) * numel)` weights with the largest absolute value. Do not modify
# `weight`.

# %% minispdf={"exercise": "magnitude_mask"} tags=["exercise"]
def magnitude_mask(weight, sparsity):
    ### BEGIN SOLUTION
    n_keep = round((1.0 - sparsity) * weight.numel())
    mask = torch.zeros(weight.numel(), dtype=torch.bool)
    if n_keep > 0:
        mask[weight.detach().abs().flatten().topk(n_keep).indices] = True
    return mask.view_as(weight)
    ### END SOLUTION


# %%
check("magnitude_mask", magnitude_mask)
w = trained.transformer.h[0].attn.c_attn.weight.detach()
plots.show_masks({"your random mask": random_mask(tuple(w.shape), 0.75, torch.Generator().manual_seed(0)),
                  "your magnitude mask": magnitude_mask(w, 0.75)}, crop=64)
plt.show()
