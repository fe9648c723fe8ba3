"""The study grids, declared as data: what is trained, for how long, and how it is judged.

A grid names its model sizes, tasks, fine-tuning set sizes and *blocks*. A block crosses some
sizes, tasks, set sizes and arms over a number of seeds; the study runs the union of its blocks
(a job shared by two blocks runs once). The margins and gates are part of the grid, so they are
fixed before the run and stored with its results.

Arms (one set of names everywhere: the demo, the study, the tables):

========== ====================================================================================
``dense``     dense pre-training, dense fine-tuning (the baseline)
``spdf50``    50% sparse pre-training, then the mask is dropped: dense fine-tuning (SPDF)
``spdf75``    the same at 75% sparsity
``spsf75``    75% sparse pre-training and sparse fine-tuning, masks kept (SPSF)
``eqflop75``  dense pre-training for the pre-training FLOPs of ``spdf75`` (fewer steps), dense
              fine-tuning: "is sparse pre-training better than training dense for less?"
``scratch``   no pre-training at all, dense fine-tuning (how much pre-training is worth)
========== ====================================================================================

Budgets are chosen so that the models learn (measured, see the README): 1,000 or more steps
of 8 x 256 byte tokens for the 0.13M-parameter ``nano`` (15-20 tokens per parameter), with
fine-tuning long enough for the dense arm to pass BLEU 10 on the built-in tasks.
"""

from __future__ import annotations

import copy
import os
import re

from ..errors import MiniSPDFError

ARM_RE = re.compile(r"^(dense|scratch|(spdf|spsf|eqflop)(\d{1,2}))$")

# How every CPU grid pre-trains and fine-tunes (the demo's settings, which learn on a CPU).
CPU_TRAINING = {
    "block_size": 256, "tokenizer": "char", "corpus": "builtin",
    "pretrain": {"batch_size": 8, "lr": 3e-3, "weight_decay": 0.1, "warmup_frac": 0.05, "eval_iters": 20},
    "finetune": {"batch_size": 8, "lr": 3e-3, "weight_decay": 0.01, "warmup_frac": 0.05, "eval_iters": 5},
}
# Declared before any run: what "no significant loss" means, and when a claim can be judged.
JUDGING = {
    "margins": {"test_loss": 0.01, "bleu": 1.0},  # test loss: relative (1% of dense); BLEU: points
    "gates": {"min_bleu": 10.0, "plateau_ratio": 0.9},  # dense pre-training loss <= 0.9 x unigram entropy
}
NANO = {"preset": "nano", "overrides": {}}  # 2 layers, d=64: 0.13M parameters at block 256
PICO = {"preset": "nano", "overrides": {"n_embd": 32}}  # 2 layers, d=32: 0.04M parameters (too small to learn)
MICRO = {"preset": "nano", "overrides": {"n_embd": 96}}  # 2 layers, d=96: 0.27M parameters
EASY = {"spec": "builtin:easy", "options": {"n_train": 2000},
        "about": "3-4 slots, one fixed-template reference per input", "eval_inputs": 100, "max_new_tokens": 160}
HARD = {"spec": "builtin", "options": {"n_train": 2000, "min_slots": 3, "max_slots": 5, "wording": "varied"},
        "about": "3-5 slots, 3-5 references in varied wording (the demo's task)", "eval_inputs": 100,
        "max_new_tokens": 200}
ALL_ARMS = ["dense", "spdf50", "spdf75", "spsf75", "eqflop75", "scratch"]


def _grid(description, sizes, tasks, blocks, primary, sets=None, **extra):
    return {"description": description, **copy.deepcopy(CPU_TRAINING), **copy.deepcopy(JUDGING),
            "sizes": sizes, "tasks": tasks, "sets": sets or {"full": 1.0}, "blocks": blocks,
            "primary": primary, **extra}


GRIDS: dict[str, dict] = {
    "smoke": _grid(
        "toy budgets, seconds on a CPU: checks the whole pipeline (the tests use it)",
        sizes={"pico": {**PICO, "pretrain_steps": 4, "finetune_steps": 3},
               "nano": {**NANO, "pretrain_steps": 4, "finetune_steps": 3}},
        tasks={"easy": {**EASY, "options": {"n_train": 40, "n_val": 4, "n_test": 8}, "eval_inputs": 3,
                        "max_new_tokens": 8}},
        sets={"full": 1.0, "small": 0.25},
        blocks=[{"sizes": ["nano"], "tasks": ["easy"], "sets": ["full", "small"], "arms": ALL_ARMS, "seeds": 2},
                {"sizes": ["pico"], "tasks": ["easy"], "sets": ["full"], "arms": ["dense", "spdf75", "scratch"],
                 "seeds": 2}],
        primary={"task": "easy", "size": "nano", "set": "full"},
    ),
    "demo": _grid(
        "the demo: one seed of five arms on the built-in task, about 4 minutes on a 2-core CPU",
        sizes={"nano": {**NANO, "pretrain_steps": 1500, "finetune_steps": 600}},
        tasks={"hard": HARD},
        blocks=[{"sizes": ["nano"], "tasks": ["hard"], "sets": ["full"],
                 "arms": ["dense", "spdf50", "spdf75", "spsf75", "scratch"], "seeds": 1}],
        primary={"task": "hard", "size": "nano", "set": "full"},
    ),
    "quick": _grid(
        "3 seeds of six arms on the built-in easy task: under 15 minutes on a 2-core CPU",
        sizes={"nano": {**NANO, "pretrain_steps": 1000, "finetune_steps": 800}},
        tasks={"easy": {**EASY, "eval_inputs": 60}},
        blocks=[{"sizes": ["nano"], "tasks": ["easy"], "sets": ["full"], "arms": ALL_ARMS, "seeds": 3}],
        primary={"task": "easy", "size": "nano", "set": "full"},
    ),
    "default": _grid(
        "the CPU study: 5 seeds, easy and hard tasks, two set sizes, two model sizes at 20 tokens per "
        "parameter; about two hours on a 2-core CPU, resumable",
        sizes={"nano": {**NANO, "tokens_per_param": 20, "finetune_steps": 1000},
               "micro": {**MICRO, "tokens_per_param": 20, "finetune_steps": 1000}},
        tasks={"easy": EASY, "hard": HARD},
        sets={"full": 1.0, "small": 0.05},  # 100 of 2,000 inputs: ~40 epochs of the small set
        blocks=[{"sizes": ["nano"], "tasks": ["easy", "hard"], "sets": ["full"], "arms": ALL_ARMS, "seeds": 5},
                {"sizes": ["nano"], "tasks": ["easy"], "sets": ["small"], "arms": ["dense", "spdf75", "scratch"],
                 "seeds": 5},
                {"sizes": ["micro"], "tasks": ["easy"], "sets": ["full"], "arms": ["dense", "spdf75", "scratch"],
                 "seeds": 3}],
        primary={"task": "easy", "size": "nano", "set": "full"}, difficulty=["easy", "hard"],
    ),
}

# GPU grids: GPT-2 tokenizer, a real corpus, ~20 tokens per parameter. Declared and dry-runnable
# anywhere; not run by this project's sessions unless the README says so.
_GPU_TRAINING = {
    "block_size": 1024, "tokenizer": "gpt2", "corpus": "fineweb-edu",
    "pretrain": {"batch_size": 32, "lr": 6e-4, "weight_decay": 0.1, "warmup_frac": 0.02, "eval_iters": 50},
    "finetune": {"batch_size": 32, "lr": 1e-4, "weight_decay": 0.01, "warmup_frac": 0.1, "eval_iters": 20},
}
_GPU_SIZES = {
    "10M": {"preset": "gpt2", "overrides": {"n_layer": 4, "n_head": 4, "n_embd": 128}, "tokens_per_param": 20,
            "finetune_steps": 2000},
    "40M": {"preset": "gpt2", "overrides": {"n_layer": 8, "n_head": 8, "n_embd": 384}, "tokens_per_param": 20,
            "finetune_steps": 2000},
    "124M": {"preset": "gpt2", "overrides": {}, "tokens_per_param": 20, "finetune_steps": 2000},
}
_E2E = {"spec": "e2e", "options": {}, "about": "E2E NLG (official train/test from the hub or --e2e DIR)",
        "eval_inputs": 630, "max_new_tokens": 128}
GRIDS["smoke"]["pretrain"]["eval_iters"] = GRIDS["smoke"]["finetune"]["eval_iters"] = 2
GRIDS["gpu"] = {**_grid(
    "one GPU, days: 10M/40M/124M parameters, 20 tokens per parameter of FineWeb-Edu, full E2E fine-tuning",
    sizes=_GPU_SIZES, tasks={"e2e": _E2E},
    blocks=[{"sizes": list(_GPU_SIZES), "tasks": ["e2e"], "sets": ["full"],
             "arms": ["dense", "spdf50", "spdf75", "spsf75", "eqflop75", "scratch"], "seeds": 3}],
    primary={"task": "e2e", "size": "124M", "set": "full"}), **copy.deepcopy(_GPU_TRAINING)}
GRIDS["gpu-quick"] = {**_grid(
    "about an hour on one current GPU: the 40M model at 20 tokens per parameter, E2E, 3 seeds",
    sizes={"40M": _GPU_SIZES["40M"]}, tasks={"e2e": {**_E2E, "eval_inputs": 200}},
    blocks=[{"sizes": ["40M"], "tasks": ["e2e"], "sets": ["full"],
             "arms": ["dense", "spdf75", "spsf75", "eqflop75", "scratch"], "seeds": 3}],
    primary={"task": "e2e", "size": "40M", "set": "full"}), **copy.deepcopy(_GPU_TRAINING)}

# Real tasks join any grid by path, in their official formats.
REAL_TASKS = {
    "e2e": ("the folder with the official E2E devset.csv / testset_w_refs.csv (or train/dev/test csv)", 160),
    "webnlg": ("the folder of the WebNLG release (XML)", 200),
    "dart": ("the folder of the official DART release (JSON)", 200),
    "curation": ("the Curation Corpus CSV/Parquet with article and summary columns", 0),
}


def parse_arm(arm: str) -> dict:
    """``spdf75`` -> pre-training sparsity 0.75, dense fine-tuning; see the module docstring."""
    m = ARM_RE.match(arm)
    if not m:
        raise MiniSPDFError(f"unknown arm {arm!r}: use dense, scratch, spdfNN, spsfNN or eqflopNN (NN = sparsity %)")
    kind = m.group(2) or m.group(1)
    s = int(m.group(3)) / 100 if m.group(3) else 0.0
    if kind != "dense" and kind != "scratch" and s == 0:
        raise MiniSPDFError(f"arm {arm!r}: give a sparsity between 1 and 99 percent")
    return {"arm": arm, "kind": kind, "sparsity": s, "pretrained": kind != "scratch",
            "keep_masks": kind == "spsf", "equal_flops": kind == "eqflop"}


def _check(grid: dict, name: str) -> None:
    for b in grid["blocks"]:
        for key, table in (("sizes", grid["sizes"]), ("tasks", grid["tasks"]), ("sets", grid["sets"])):
            missing = [k for k in b[key] if k not in table]
            if missing:
                raise MiniSPDFError(f"grid {name}: block names unknown {key} {missing}: declare them in the grid")
        for arm in b["arms"]:
            parse_arm(arm)
    for key in ("task", "size", "set"):
        if grid["primary"][key] not in grid[key + ("s" if key != "set" else "s")]:
            raise MiniSPDFError(f"grid {name}: primary {key} {grid['primary'][key]!r} is not in the grid")


def resolve_grid(name: str = "default", seeds: int | None = None, real_tasks: dict | None = None) -> dict:
    """The grid ``name`` as a plain JSON-able dict; ``seeds`` overrides every block's seed count,
    ``real_tasks`` ({"e2e": DIR, ...}) adds real tasks to the primary size's first block."""
    if name not in GRIDS:
        raise MiniSPDFError(f"unknown grid {name!r}: choose one of {', '.join(GRIDS)}")
    grid = copy.deepcopy(GRIDS[name])
    grid["name"] = name
    if seeds is not None:
        if isinstance(seeds, bool) or not isinstance(seeds, int) or not 1 <= seeds <= 100:
            raise MiniSPDFError(f"--seeds {seeds!r} must be a positive integer up to 100 (3 or more for intervals)")
        for b in grid["blocks"]:
            b["seeds"] = seeds
    for kind, path in (real_tasks or {}).items():
        if path:
            _add_real_task(grid, kind, path)
    _check(grid, name)
    return grid


def _add_real_task(grid: dict, kind: str, path: str) -> None:
    what, max_new = REAL_TASKS[kind]
    full = os.path.abspath(os.path.expanduser(path))
    if not os.path.exists(full):
        raise MiniSPDFError(f"--{kind} {path} does not exist: pass {what}")
    grid["tasks"][kind] = {"spec": f"{kind}:{full}", "options": {}, "about": f"{kind} from {full}",
                           "eval_inputs": 200, "max_new_tokens": max_new or 200, "max_train_inputs": 5000}
    grid["blocks"][0]["tasks"].append(kind)
