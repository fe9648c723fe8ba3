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
# *Runs in about 0.1 min on a 2-core CPU (measured, default scale; `MINISPDF_SCALE=smoke` runs it in seconds, `gpu` at a larger scale).*
#
# This lesson does not train anything by default: it reads the results of `minispdf
# reproduce` (the kit's study, committed under `results/`) and shows how to judge a claim
# with a handful of seeds. Set `RERUN = True` to run the `quick` grid yourself (about 10
# minutes on a 2-core CPU); its results replace the committed ones in the figures.

# %% tags=["parameters"]
import os

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
PROGRESS = SCALE != "smoke"  # progress bars while training
RUNS = "runs/05_paper_findings"

# %%
import json
import os

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
