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
# # 05 · The paper's findings, at small scale: reading a study
#
# **Question:** the paper reports that 50-75% sparse pre-training loses nothing significant
# downstream, that sparse fine-tuning (SPSF) is worse than dense fine-tuning, that harder
# tasks and smaller models suffer more, and that the fine-tuning set size matters. Which of
# these can a small study on a CPU confirm, refute, or not test at all?
#
# *Runs in about 0.1 min with one thread on a 2-core laptop-class CPU (measured, default scale:
# CPU time of a headless run with `THREADS = 1`, reading the committed study; `MINISPDF_SCALE=smoke`
# runs it in seconds, `gpu` at a larger scale).*
#
# **Learning goals.** After this lesson you can
# - read a paired, multi-seed comparison: means, per-seed gaps and their 95% intervals;
# - judge a claim with a rule declared before the data (a margin, gates) and name its verdict;
# - say what a small-scale study can and cannot tell about a claim made for 125M-1.3B models.
#
# **Prerequisites.** Lesson 04 (the arms); a confidence interval of a mean.
#
# **Paper.** [arXiv:2303.10464](https://arxiv.org/abs/2303.10464): the findings stated in the
# abstract and the experiments (no significant loss at 50-75% sparsity, SPSF generalises worse,
# harder tasks and smaller models suffer more, downstream set size matters). The paper's
# per-task result tables are not reproduced here: every number below is this kit's own.
#
# This lesson does not train anything by default: it reads the results of `minispdf
# reproduce` (the kit's study, committed under `results/`) and shows how to judge a claim
# with a handful of seeds. Set `RERUN = True` to run the `quick` grid yourself (about 10
# minutes on a 2-core CPU); its results replace the committed ones in the figures.

# %% tags=["parameters"]
import os

import torch

# default: laptop CPU, minutes | gpu: one GPU, bigger | smoke: CI, seconds
SCALE = os.environ.get("MINISPDF_SCALE", "default")
SCALES = {
    # which committed study to read, and which grid a rerun runs
    # jobs: parallel runs of a rerun (None: one per CPU core)
    "default": dict(results="../results/default/results.json", grid="quick", jobs=None),
    "gpu": dict(results="../results/gpu-quick/results.json", grid="gpu-quick", jobs=1),
    "smoke": dict(results="../results/quick/results.json", grid="smoke", jobs=1),
}
RERUN = False  # True: run P["grid"] here (the smoke grid takes seconds, quick about 10 minutes)
assert SCALE in SCALES, f"MINISPDF_SCALE={SCALE!r}: choose one of {sorted(SCALES)}"
P = SCALES[SCALE]
DEVICE = "auto"  # cuda if present, else mps, else cpu
PROGRESS = True  # progress bars while training (widgets in JupyterLab, text in a terminal)
THREADS = int(os.environ.get("MINISPDF_THREADS", "1"))  # the run time above is measured with one thread
torch.set_num_threads(THREADS)  # two threads on two cores shared with other work run many times slower
RUNS = "runs/05_paper_findings"

# %%
import json

import matplotlib.pyplot as plt

from minispdf.study import report, resolve_grid, run_study

if RERUN or not os.path.exists(P["results"]):
    results = run_study(resolve_grid(P["grid"]), out=f"{RUNS}/study-{P['grid']}", device=DEVICE, jobs=P["jobs"])
else:
    with open(P["results"]) as f:
        results = json.load(f)
grid = results["grid"]
print(f"grid {grid['name']!r}: {grid['description']}")
print(f"{results['n_cells_done']} cells, {len(results['pretrains'])} pre-training runs, "
      f"run on {results['machine']['cpu']} at commit {results['commit']}")

# %% [markdown]
# ## Arms, paired by seed
#
# Every arm of a cell (task, model size, fine-tuning set) starts from the same initial weights
# and sees the same data order for a given seed: `dense`, `spdf50`, `spdf75` (sparse
# pre-training, dense fine-tuning), `spsf75` (masks kept while fine-tuning), `eqflop75` (dense
# pre-training stopped at the FLOPs of `spdf75`) and `scratch` (no pre-training). So the
# noise two arms share cancels in their per-seed difference. The table shows each arm's mean
# over seeds and its gap to dense with a 95% t-interval.

# %%
print(report.summary_markdown(results["summary"]))

# %% [markdown]
# ## The gaps, with their intervals
#
# A gap whose interval crosses zero is not distinguishable from dense with these seeds. The
# dashed line is the margin declared in the grid *before* the run (1% of the dense test loss,
# 1 BLEU point): "no significant loss" holds only when the interval sits left of it.

# %%
report.plot_gaps(results)
plt.show()

# %% [markdown]
# ## The verdicts
#
# Each claim is judged by a rule that could have gone the other way: *holds*, *fails*,
# *inconclusive* (the interval is too wide to tell) or *untestable* (a gate failed: the dense
# model did not beat no pre-training, its BLEU is below 10, or pre-training never left the
# loss of a unigram model). One row per claim at the grid's primary cell; the last column
# tallies the verdicts over every cell where the claim could be judged.

# %%
print(report.headline_table(results["claims"]))
print()
print(results["flop_claim"]["reason"])

# %% [markdown]
# **Reading it, against the paper.**
#
# 1. *No significant loss.* At 0.1-0.3M parameters the models have no capacity to spare:
#    expect the 75% arm to lose more than a 1% margin, and the 50% arm to lose less. The
#    paper's claim is about 125M-1.3B parameters; a failure here does not contradict it, it
#    shows where the claim stops holding.
# 2. *SPSF worse than SPDF.* Dropping the mask gives the fine-tuning the full capacity back;
#    this direction should be visible at any scale.
# 3. *Equal FLOPs.* `eqflop75` asks the question the paper does not: is sparse pre-training
#    better than simply pre-training the dense model for fewer steps? The retained benefit
#    `R = (scratch - spdf) / (scratch - dense)` reads at a glance how much of pre-training's
#    value a sparse run kept.
# 4. *Harder tasks, larger models, set size.* Directional claims are judged on a difference
#    of differences per seed; with 3-5 seeds only large effects clear the interval.
#
# Try: set `RERUN = True` and rerun with other seeds (`resolve_grid("quick", seeds=5)`), and
# see which verdicts move.
#
# **What you should see.** At the default scale the lesson reads the committed study
# (`results/default/results.json`: grid `default`, 5 seeds, run on a 2-core AMD EPYC CPU at
# commit f313f12; if the study is rerun, the numbers below change with it). At its primary cell
# (easy task, `nano` model, full fine-tuning set) the test losses were 0.060 (dense), 0.100
# (spdf50), **0.109** (spdf75), 0.181 (spsf75), 0.113 (eqflop75) and 0.368 (scratch); BLEU 69.1
# for dense against 42.2 for spdf75. The verdicts: *no significant loss* **fails** for spdf50
# (+66% [+34%, +98%]) and spdf75 (+81% [+33%, +129%]); *SPSF worse than SPDF* **holds**
# (+118% [+57%, +179%]); *better than equal-FLOP dense* is **inconclusive**; *harder tasks
# lose more* and *a smaller set loses more* **fail** (the hard task lost less here: +4.2%
# [-3.7%, +12.1%]); *larger models lose less* is **inconclusive** (3 seeds of `micro`). In the
# gap figure, read each interval against zero and against the dashed margin: wide intervals
# (the `micro` cell's [-199%, +203%]) say that those seeds cannot tell, not that there is no gap.
#
# ## Check your understanding
#
# 1. Why compare arms by their per-seed differences rather than by their separate means?
# 2. A gap's 95% interval is [-0.01, 0.04] nats and the margin is 0.02. Holds, fails or
#    inconclusive?
# 3. The 75% arm fails "no significant loss" here. Does that refute the paper?

# %% [markdown] tags=["answer"]
# **Answers (instructor's copy).**
# 1. Arms of one seed share the initial weights and the data order, so most of the seed-to-seed
#    noise is common to both and cancels in the difference: the paired interval is much narrower.
# 2. Inconclusive: the interval crosses the margin (it contains both gaps below 0.02 and above),
#    so these seeds cannot tell.
# 3. No. The claim is for 125M-1.3B models trained on billions of tokens; models of 0.1-0.3M
#    parameters have no capacity to spare. The result locates where the claim stops holding at
#    small scale; it does not test the paper's scale.
