"""``python -m minispdf.reproduce``: run a declared SPDF study grid, resumably, and report it.

The grid crosses

* pre-training sparsity (0, 50, 75, 90%: the paper's range),
* model size (two presets per grid),
* the fine-tuning arm: dense fine-tuning of every pre-trained model (SPDF; at 0% that is the
  dense baseline), fine-tuning with the pre-training masks kept (SPSF), and a model fine-tuned
  from scratch with no pre-training at all,
* the downstream task (built-in generators; real E2E with ``--e2e DIR``, DART with ``--dart PATH``),
* the fine-tuning set size (a fraction of the task's training inputs),
* seeds (``--seeds``, at least 3 for the real grids): reported as mean and std over seeds.

Pre-training is shared: one run per (size, sparsity, seed) under ``OUT/pretrain/``, reused by
every fine-tuning cell. From scratch does not depend on sparsity, so it runs once per
(size, task, set size, seed). Every comparison is paired by seed: the same seed gives the same
initial weights and data order to the dense and the sparse arm.

Resuming: every finished fine-tuning cell writes ``OUT/cells/<cell>.json`` atomically (a temp
file renamed into place) and a rerun skips it. A pre-training run trains in a temporary folder
that is renamed into place only when complete; a killed run leaves only a temp folder, which the
next run deletes and restarts. Cell and pre-training names end in a hash of every setting that
affects their result, so changing the grid never reuses a stale result (the old files are just
ignored). One run at a time may use an OUT folder (a lock file guards it).

Outputs (``OUT/``): ``results.json``, ``results.csv`` (one row per cell and seed), ``summary.csv``
and ``summary.md`` (mean +- std over seeds), ``README_section.md`` (the kit's measurements next
to the paper's claims, generated from the numbers by :func:`readme_section`), and figures:
``pretrain_loss_vs_flops.png``, ``bleu_vs_pretrain_flops.png``, ``gap_to_dense_bleu.png``,
``gap_to_dense_loss.png``.

Grids (``--grid``; ``--quick`` is ``--grid quick``): ``smoke`` runs in seconds (tests),
``quick`` in under 15 minutes on a 2-core CPU (measured 7-11 minutes, depending on other load),
``default`` is sized for one GPU in a few hours. Each prints its size and an *estimated* time
before starting: a cost model timed on this machine just before the run (a few training steps per
model size and task, a perplexity pass and a short decode), with decoding counted at
``max_new_tokens`` (an upper bound).

Real E2E on the quick grid does not fit the 15 minutes with the built-in task (about 10 more
minutes on 2 cores), so it is a second command on the same folder, which reuses the pre-training
runs and the finished built-in cells::

    python -m minispdf.reproduce --quick --out runs/reproduce
    python -m minispdf.reproduce --quick --out runs/reproduce --e2e path/to/e2e   # adds E2E

On a CPU the grid runs with ONE torch thread unless ``--threads`` says otherwise: on a 2-core
machine shared with other jobs, two threads ran several times slower than one (thread contention).

``main(argv)`` raises :class:`MiniSPDFError` for mistakes a user can fix (the ``minispdf`` CLI
prints them as one line); ``python -m minispdf.reproduce`` does the same printing itself.
"""

from __future__ import annotations

import copy
import csv
import hashlib
import io
import json
import math
import os
import platform
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

from . import spdf as spdf_lib
from .checkpoint import atomic_write_bytes, check_out_folder, usual_permissions
from .errors import MiniSPDFError

FORMAT = "minispdf-reproduce-1"
BLEU_FLOOR = 5.0  # below this dense BLEU, BLEU differences between arms are not informative
SPARSITIES = (0.0, 0.5, 0.75, 0.9)
MODES = ("spdf", "spsf", "scratch")

# --------------------------------------------------------------------------------------------
# Grids
# --------------------------------------------------------------------------------------------


def _size(preset, pre_steps, pre_batch, pre_lr, ft_steps, ft_batch, ft_lr, **overrides):
    return {"preset": preset, "overrides": overrides,
            "pretrain": {"steps": pre_steps, "batch_size": pre_batch, "lr": pre_lr},
            "finetune": {"steps": ft_steps, "batch_size": ft_batch, "lr": ft_lr}}


GRIDS: dict[str, dict] = {
    "smoke": {
        "description": "toy budgets, seconds on a CPU: checks the whole pipeline (tests use it)",
        "block_size": 256,
        "sizes": {
            "pico": _size("nano", 3, 2, 2e-3, 2, 4, 2e-3, n_layer=1, n_head=2, n_embd=32),
            "nano": _size("nano", 3, 2, 2e-3, 2, 4, 2e-3),
        },
        "sparsities": [0.0, 0.75],
        "modes": list(MODES),
        "seeds": 2,
        "set_fracs": [0.5, 1.0],
        "tasks": {"builtin:easy": {"spec": "builtin:easy", "options": {"n_train": 16, "n_val": 4, "n_test": 8},
                                   "eval_inputs": 3, "max_new_tokens": 8}},
        "e2e": {"eval_inputs": 3, "max_new_tokens": 8, "max_train_inputs": 16},
        "dart": {"eval_inputs": 3, "max_new_tokens": 8, "max_train_inputs": 16},
        "eval_iters": 1,
        "pretrain_eval_iters": 1,
    },
    "quick": {
        "description": "under 15 minutes on a 2-core CPU (one thread): tiny budgets, noisy results",
        "block_size": 384,
        "sizes": {
            "nano": _size("nano", 100, 4, 2e-3, 40, 4, 2e-3),
            "tiny": _size("tiny", 100, 4, 2e-3, 40, 4, 2e-3),
        },
        "sparsities": list(SPARSITIES),
        "modes": list(MODES),
        "seeds": 3,
        "set_fracs": [0.1, 1.0],
        "tasks": {"builtin:easy": {"spec": "builtin:easy", "options": {"n_train": 400},
                                   "eval_inputs": 40, "max_new_tokens": 130}},
        "e2e": {"eval_inputs": 40, "max_new_tokens": 220, "max_train_inputs": None},
        "dart": {"eval_inputs": 40, "max_new_tokens": 200, "max_train_inputs": 500},
        "eval_iters": 2,
        "pretrain_eval_iters": 8,
    },
    "default": {
        "description": "sized for one GPU in a few hours (about 1M and 10M parameters)",
        "block_size": 512,
        "sizes": {
            "tiny": _size("tiny", 3000, 16, 1e-3, 600, 16, 1e-3),
            "small": _size("small", 3000, 16, 6e-4, 600, 16, 5e-4),
        },
        "sparsities": list(SPARSITIES),
        "modes": list(MODES),
        "seeds": 3,
        "set_fracs": [0.1, 1.0],
        "tasks": {
            "builtin:easy": {"spec": "builtin:easy", "options": {"n_train": 2000},
                             "eval_inputs": 200, "max_new_tokens": 160},
            "builtin:hard": {"spec": "builtin:hard", "options": {"n_train": 2000},
                             "eval_inputs": 200, "max_new_tokens": 300},
        },
        "e2e": {"eval_inputs": 630, "max_new_tokens": 260, "max_train_inputs": None},
        "dart": {"eval_inputs": 500, "max_new_tokens": 260, "max_train_inputs": 5000},
        "eval_iters": 10,
        "pretrain_eval_iters": 20,
    },
}
COMMON = {"pretrain_data": "builtin", "tokenizer": "char", "weight_decay_pretrain": 0.1,
          "weight_decay_finetune": 0.01, "warmup_frac": 0.1, "mask_method": "random"}


def resolve_grid(name: str = "default", seeds: int | None = None, e2e: str | None = None,
                 dart: str | None = None, pretrain_data: str | None = None) -> dict:
    """The grid ``name`` as a plain (JSON-able) dict, with the optional real tasks added."""
    if name not in GRIDS:
        raise MiniSPDFError(f"unknown grid {name!r}: choose one of {', '.join(GRIDS)} (or --quick)")
    grid = copy.deepcopy(GRIDS[name])
    grid.update(copy.deepcopy(COMMON))
    grid["name"] = name
    if pretrain_data:
        grid["pretrain_data"] = pretrain_data
    if seeds is not None:
        if isinstance(seeds, bool) or not isinstance(seeds, int) or not 1 <= seeds <= 100:
            raise MiniSPDFError(f"--seeds {seeds!r} must be a positive integer up to 100 (3 or more for mean and std)")
        grid["seeds"] = seeds
    extra = {}
    if e2e:
        folder = os.path.abspath(os.path.expanduser(e2e))
        missing = [f for f in ("devset.csv", "testset_w_refs.csv") if not os.path.isfile(os.path.join(folder, f))]
        if missing:
            raise MiniSPDFError(f"--e2e {e2e}: {', '.join(missing)} not found there: pass the folder holding the "
                                "official E2E devset.csv and testset_w_refs.csv")
        extra["e2e"] = {"kind": "e2e", "path": folder, **grid["e2e"]}
    if dart:
        path = os.path.abspath(os.path.expanduser(dart))
        if not os.path.exists(path):
            raise MiniSPDFError(f"--dart {dart} does not exist: pass the folder with the official DART "
                                "*-train.json and *-test.json files")
        extra["dart"] = {"kind": "dart", "path": path, **grid["dart"]}
    for key in ("e2e", "dart"):
        grid.pop(key, None)
    for key, t in grid["tasks"].items():
        t.setdefault("kind", "builtin")
    grid["tasks"].update(extra)
    return grid


# --------------------------------------------------------------------------------------------
# Jobs: pre-training runs and fine-tuning cells
# --------------------------------------------------------------------------------------------


def _hash(obj) -> str:
    return hashlib.sha1(json.dumps(obj, sort_keys=True).encode()).hexdigest()[:8]


def _pct(s: float) -> int:
    return int(round(100 * s))


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "-" for c in name)


def arm_name(mode: str, sparsity: float | None) -> str:
    if mode == "scratch":
        return "scratch"
    if not sparsity:
        return "dense"
    return f"{mode}{_pct(sparsity)}"


def pretrain_spec(grid: dict, size: str, sparsity: float, seed: int) -> dict:
    sz = grid["sizes"][size]
    steps = sz["pretrain"]["steps"]
    return {"kind": "pretrain", "size": size, "preset": sz["preset"], "overrides": sz["overrides"],
            "block_size": grid["block_size"], "data": grid["pretrain_data"], "tokenizer": grid["tokenizer"],
            "sparsity": sparsity, "method": grid["mask_method"], "seed": seed, "steps": steps,
            "batch_size": sz["pretrain"]["batch_size"], "lr": sz["pretrain"]["lr"],
            "weight_decay": grid["weight_decay_pretrain"],
            "warmup_steps": max(1, int(round(grid["warmup_frac"] * steps))),
            "eval_iters": grid["pretrain_eval_iters"]}


def pretrain_name(spec: dict) -> str:
    return f"{_safe(spec['size'])}-s{_pct(spec['sparsity']):02d}-seed{spec['seed']}-{_hash(spec)}"


def _task_identity(t: dict) -> dict:
    keep = ("kind", "spec", "options", "path", "eval_inputs", "max_new_tokens", "max_train_inputs")
    return {k: t[k] for k in keep if k in t}


def plan(grid: dict) -> tuple[list[dict], list[dict]]:
    """(pre-training specs, fine-tuning cells) of the grid, in run order (seed, size outermost)."""
    pretrains, cells = [], []
    for seed in range(grid["seeds"]):
        for size, sz in grid["sizes"].items():
            pre = {s: pretrain_spec(grid, size, s, seed) for s in grid["sparsities"]}
            pretrains.extend(pre.values())
            arms = [("spdf", s) for s in grid["sparsities"]]
            if "spsf" in grid["modes"]:
                arms += [("spsf", s) for s in grid["sparsities"] if s > 0]
            if "scratch" in grid["modes"]:
                arms.append(("scratch", None))
            for task_key, t in grid["tasks"].items():
                for frac in grid["set_fracs"]:
                    for mode, s in arms:
                        steps = sz["finetune"]["steps"]
                        spec = {"kind": "finetune", "task": task_key, "task_def": _task_identity(t),
                                "block_size": grid["block_size"], "tokenizer": grid["tokenizer"],
                                "set_frac": frac, "size": size, "preset": sz["preset"],
                                "overrides": sz["overrides"], "mode": mode, "sparsity": s, "seed": seed,
                                "pretrain": None if mode == "scratch" else _hash(pre[s]),
                                "steps": steps, "batch_size": sz["finetune"]["batch_size"],
                                "lr": sz["finetune"]["lr"], "weight_decay": grid["weight_decay_finetune"],
                                "warmup_steps": max(1, int(round(grid["warmup_frac"] * steps))),
                                "eval_iters": grid["eval_iters"]}
                        name = (f"{_safe(task_key)}__{_safe(size)}__n{_pct(frac):03d}__{arm_name(mode, s)}"
                                f"__seed{seed}-{_hash(spec)}")
                        cells.append({"name": name, "spec": spec,
                                      "pretrain_name": None if mode == "scratch" else pretrain_name(pre[s])})
    return pretrains, cells


# --------------------------------------------------------------------------------------------
# Tasks
# --------------------------------------------------------------------------------------------


def _shuffled(examples, salt: str, n: int | None = None):
    order = list(range(len(examples)))
    random.Random(f"minispdf-reproduce:{salt}").shuffle(order)
    if n is not None:
        order = sorted(order[:n])
    return [examples[i] for i in order]


def _fit(examples, tok, block_size: int):
    """Keep the (input, reference) pairs that fit the context whole; drop the rest (counted)."""
    from .tasks import SEPARATOR, Example

    sep = len(tok.encode(SEPARATOR))
    kept, dropped = [], 0
    for ex in examples:
        n_in = len(tok.encode(ex.input))
        refs = [r for r in ex.references if n_in + sep + len(tok.encode(r)) + 1 <= block_size + 1]
        dropped += len(ex.references) - len(refs)
        if refs:
            kept.append(Example(ex.input, refs))
    return kept, dropped


def load_grid_tasks(grid: dict) -> dict:
    """task key -> {task (fitted, capped train), test (the fixed evaluation subset), info}."""
    from .data import get_tokenizer
    from .tasks import Task, load_task, load_task_files

    tok = get_tokenizer(grid["tokenizer"])
    out = {}
    for key, t in grid["tasks"].items():
        if t["kind"] == "builtin":
            task = load_task(t["spec"], seed=0, **t.get("options", {}))
        elif t["kind"] == "e2e":
            task = load_task_files("e2e", train=os.path.join(t["path"], "devset.csv"),
                                   test=os.path.join(t["path"], "testset_w_refs.csv"))
            task.description = "E2E NLG: fine-tune on the official dev set, evaluate on a fixed subset of the test set"
        else:
            task = load_task(f"dart:{t['path']}")
            if not task.train or not task.test:
                raise MiniSPDFError(f"--dart {t['path']}: need both a *-train and a *-test file (found "
                                    f"{len(task.train)} train, {len(task.test)} test inputs): pass the folder of the "
                                    "official DART release")
        if not task.test:
            raise MiniSPDFError(f"task {key} has no test inputs: pass files that include a test split")
        train = task.train
        if t.get("max_train_inputs"):
            train = _shuffled(train, f"cap:{key}", t["max_train_inputs"])
        train, dropped_train = _fit(train, tok, grid["block_size"])
        val, dropped_val = _fit(task.val, tok, grid["block_size"])
        if len(train) < 4:
            raise MiniSPDFError(f"task {key}: only {len(train)} training inputs fit block_size {grid['block_size']}: "
                                "use a grid with a larger block_size or a task with shorter examples")
        test = _shuffled(task.test, f"test:{key}", t["eval_inputs"])
        out[key] = {
            "task": Task(task.name, task.metric, train, val, task.test, task.description),
            "test": test,
            "info": {"description": task.description, "metric": task.metric, "n_train_inputs": len(train),
                     "n_train_pairs": sum(len(e.references) for e in train), "n_val_inputs": len(val),
                     "n_test_inputs_available": len(task.test), "n_test_inputs": len(test),
                     "dropped_train_pairs_too_long": dropped_train + dropped_val,
                     "max_new_tokens": t["max_new_tokens"]},
        }
    return out


def subset_task(entry: dict, frac: float):
    from .tasks import Task

    task = entry["task"]
    n = max(4, int(round(frac * len(task.train))))
    train = task.train if n >= len(task.train) else _shuffled(task.train, f"set:{task.name}:{frac}", n)
    return Task(task.name, task.metric, train, task.val, entry["test"], task.description)


# --------------------------------------------------------------------------------------------
# Cost model: time a few steps of each size on this machine, then add up the grid
# --------------------------------------------------------------------------------------------


def _mean_batch_tokens(tok, examples, batch_size: int, block_size: int, draws: int = 30) -> float:
    from .tasks import SEPARATOR

    sep = len(tok.encode(SEPARATOR))
    lens = [min(block_size, len(tok.encode(e.input)) + sep + len(tok.encode(r)))
            for e in examples for r in e.references]
    if not lens:
        return float(block_size * batch_size)
    rng = random.Random(0)
    return statistics.mean(batch_size * max(rng.choice(lens) for _ in range(batch_size)) for _ in range(draws))


def calibrate(grid: dict, tasks: dict, device: str) -> dict:
    """Time a few training steps and two short decodes of every size: ms per token, per input."""
    import torch

    from .data import get_tokenizer
    from .evaluate import evaluate_task
    from .model import GPT, preset_config
    from .sparsity import masked_parameters, sparsify
    from .train import TrainConfig, autocast_for, finish_step, forward_backward, make_optimizer

    tok = get_tokenizer(grid["tokenizer"])
    autocast = autocast_for(device)
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    probe_task = next(iter(tasks.values()))
    sizes = {}
    for size, sz in grid["sizes"].items():
        torch.manual_seed(0)
        model = GPT(preset_config(sz["preset"], block_size=grid["block_size"], vocab_size=tok.vocab_size,
                                  **sz["overrides"])).to(device)
        n_params = model.num_params()
        sparsify(model, 0.5)  # masked steps: the masking work is included
        masked = masked_parameters(model)
        opt = make_optimizer(model, TrainConfig())
        T = grid["block_size"]
        B = sz["pretrain"]["batch_size"] if device != "cpu" else min(sz["pretrain"]["batch_size"], 4)
        g = torch.Generator().manual_seed(0)
        x = torch.randint(tok.vocab_size, (B, T), generator=g).to(device)
        times = []
        for i in range(5):  # two warm-up steps, then the median of three
            sync()
            t0 = time.perf_counter()
            forward_backward(model, x, x, None, 1, autocast)
            finish_step(model, opt, 1.0, masked)
            sync()
            if i >= 2:
                times.append(time.perf_counter() - t0)
        ms_per_token = 1000 * statistics.median(times) / (B * T)
        # fine-tuning steps at each task's mean padded length (attention cost grows with it)
        Bf = sz["finetune"]["batch_size"] if device != "cpu" else min(sz["finetune"]["batch_size"], 4)
        ft_ms = {}
        for key, entry in tasks.items():
            Tf = max(2, int(round(_mean_batch_tokens(tok, entry["task"].train, Bf, T) / Bf)))
            xf = torch.randint(tok.vocab_size, (Bf, Tf), generator=g).to(device)
            ft_times = []
            for i in range(4):
                sync()
                t0 = time.perf_counter()
                forward_backward(model, xf, xf, None, 1, autocast)
                finish_step(model, opt, 1.0, masked)
                sync()
                if i >= 1:
                    ft_times.append(time.perf_counter() - t0)
            ft_ms[key] = 1000 * statistics.median(ft_times) / (Bf * Tf)
        # evaluation: the perplexity pass over every reference, then batched greedy decoding
        model = GPT(preset_config(sz["preset"], block_size=grid["block_size"], vocab_size=tok.vocab_size,
                                  **sz["overrides"])).to(device)
        probe = probe_task["test"][:64]
        evaluate_task(model, tok, probe[:1], max_new_tokens=2)  # warm-up (imports, allocator)
        sync()
        t0 = time.perf_counter()
        evaluate_task(model, tok, probe, metric="perplexity")
        sync()
        t_ppl = time.perf_counter() - t0
        ev = []
        for m in (4, 24):  # a random model never emits the eot: decodes exactly m tokens
            sync()
            t0 = time.perf_counter()
            evaluate_task(model, tok, probe, max_new_tokens=m)
            sync()
            ev.append(time.perf_counter() - t0)
        step_s = max(0.0, (ev[1] - ev[0]) / 20)
        sizes[size] = {"n_params": n_params, "train_ms_per_token": ms_per_token, "finetune_ms_per_token": ft_ms,
                       "ppl_s_per_token": t_ppl / max(1, _pair_tokens(tok, probe)),
                       "decode_batch": len(probe), "decode_s_per_step": step_s,
                       "decode_prefill_s": max(0.0, ev[0] - t_ppl - 4 * step_s)}
        del model, opt
    threads = torch.get_num_threads() if device == "cpu" else None
    return {"device": device, "threads": threads, "sizes": sizes}


def _pair_tokens(tok, examples) -> int:
    """Tokens of every (input, reference) pair: what the perplexity pass feeds through the model."""
    from .tasks import SEPARATOR

    sep = len(tok.encode(SEPARATOR))
    return sum(len(tok.encode(e.input)) + sep + len(tok.encode(r)) + 1 for e in examples for r in e.references)


def estimate(grid: dict, tasks: dict, calib: dict, pretrains: list[dict], cells: list[dict]) -> dict:
    """Estimated seconds of every pre-training run and cell (a model, not a measurement).

    Decoding is counted at ``max_new_tokens`` per input (capped by the context): an upper bound,
    since a model that has learnt the task stops at the eot earlier.
    """
    from .data import get_tokenizer
    from .tasks import SEPARATOR

    tok = get_tokenizer(grid["tokenizer"])
    batch_tokens, decode_len, ppl_tokens = {}, {}, {}
    for key, entry in tasks.items():
        for size, sz in grid["sizes"].items():
            batch_tokens[key, size] = _mean_batch_tokens(tok, entry["task"].train, sz["finetune"]["batch_size"],
                                                         grid["block_size"])
        prompts = [len(tok.encode(e.input + SEPARATOR)) for e in entry["test"]] or [1]
        decode_len[key] = min(entry["info"]["max_new_tokens"], max(1, grid["block_size"] - statistics.mean(prompts)))
        ppl_tokens[key] = _pair_tokens(tok, entry["test"])
    est = {}
    for p in pretrains:
        c = calib["sizes"][p["size"]]
        tokens = p["steps"] * p["batch_size"] * p["block_size"]
        eval_tokens = p["eval_iters"] * p["batch_size"] * p["block_size"]
        est[pretrain_name(p)] = c["train_ms_per_token"] / 1000 * (tokens + eval_tokens / 3) + 0.3
    for cell in cells:
        s = cell["spec"]
        c = calib["sizes"][s["size"]]
        bt = batch_tokens[s["task"], s["size"]]
        train_s = c["finetune_ms_per_token"][s["task"]] / 1000 * bt * (s["steps"] + s["eval_iters"] / 3)
        n = len(tasks[s["task"]]["test"])
        eval_s = (ppl_tokens[s["task"]] * c["ppl_s_per_token"]
                  + n / c["decode_batch"] * (c["decode_prefill_s"] + decode_len[s["task"]] * c["decode_s_per_step"]))
        est[cell["name"]] = train_s + eval_s + 0.15
    return est


# --------------------------------------------------------------------------------------------
# Running
# --------------------------------------------------------------------------------------------


def _read_json(path: str):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def _publish(path: str) -> None:
    """Temp files are created private (0600); results are ordinary files (0644 under the usual umask)."""
    mask = os.umask(0)
    os.umask(mask)
    try:
        os.chmod(path, 0o666 & ~mask)
    except OSError:
        pass


def _write_json(path: str, obj) -> None:
    spdf_lib.write_json(path, obj)
    _publish(path)


def _write_text(path: str, text: str) -> None:
    atomic_write_bytes(path, lambda f: f.write(text.encode("utf-8")))
    _publish(path)


def _dur(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    return f"{seconds / 60:.1f} min" if seconds < 7200 else f"{seconds / 3600:.1f} h"


def pretrain_done(out: str, name: str) -> dict | None:
    summary = _read_json(os.path.join(out, "pretrain", name, "summary.json"))
    if summary and os.path.exists(os.path.join(out, "pretrain", name, "ckpt.pt")):
        return summary
    return None


def ensure_pretrain(out: str, spec: dict, device: str, log) -> dict:
    """Reuse the finished pre-training run of ``spec`` or train it (in a temp folder, then renamed)."""
    name = pretrain_name(spec)
    final = os.path.join(out, "pretrain", name)
    done = pretrain_done(out, name)
    if done:
        return done
    if os.path.exists(final):  # incomplete leftovers under the final name: start over
        shutil.rmtree(final)
    os.makedirs(os.path.dirname(final), exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=f".tmp-{name}-", dir=os.path.dirname(final))
    usual_permissions(tmp)
    log(f"pre-training {spec['size']} at {spec['sparsity']:.0%} sparsity, seed {spec['seed']} "
        f"({spec['steps']} steps)")
    t0 = time.perf_counter()
    try:
        r = spdf_lib.pretrain(preset=spec["preset"], data=spec["data"], tokenizer=spec["tokenizer"],
                              sparsity=spec["sparsity"], method=spec["method"], mask_seed=spec["seed"], out=tmp,
                              max_steps=spec["steps"], batch_size=spec["batch_size"], lr=spec["lr"],
                              weight_decay=spec["weight_decay"], warmup_steps=spec["warmup_steps"],
                              eval_interval=0, eval_iters=spec["eval_iters"], seed=spec["seed"], device=device,
                              progress=False, block_size=spec["block_size"], **spec["overrides"])
        summary = {"format": FORMAT, "name": name, "spec": spec, "seconds": time.perf_counter() - t0,
                   "flops": r["flops"], "flops_dense": r["flops_dense"], "tokens": r["tokens"],
                   "train_loss": r["train_loss"], "val_loss": r["val_loss"],
                   "n_params": r["model"].num_params(), "reduction": r["flop_report"]["reduction"],
                   "device": r["device"]}
        _write_json(os.path.join(tmp, "summary.json"), summary)
        os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return summary


def run_cell(out: str, cell: dict, tasks: dict, pre_summary: dict | None, device: str, log) -> dict:
    """Fine-tune and evaluate one cell; writes ``OUT/cells/<name>.json`` last (atomically)."""
    from .data import get_tokenizer
    from .evaluate import evaluate_task

    s = cell["spec"]
    entry = tasks[s["task"]]
    task = subset_task(entry, s["set_frac"])
    tok = get_tokenizer(s["tokenizer"])
    common = dict(max_steps=s["steps"], batch_size=s["batch_size"], lr=s["lr"], weight_decay=s["weight_decay"],
                  warmup_steps=s["warmup_steps"], eval_interval=0, eval_iters=s["eval_iters"], seed=s["seed"],
                  device=device, progress=False, tokenizer=s["tokenizer"], out=None)
    t0 = time.perf_counter()
    if s["mode"] == "scratch":
        f = spdf_lib.finetune(task=task, preset=s["preset"], block_size=s["block_size"], **s["overrides"], **common)
    else:
        f = spdf_lib.finetune(init_from=os.path.join(out, "pretrain", cell["pretrain_name"]), task=task,
                              keep_masks=s["mode"] == "spsf", **common)
    t1 = time.perf_counter()
    pred_path = os.path.join(out, "predictions", cell["name"] + ".jsonl")
    os.makedirs(os.path.dirname(pred_path), exist_ok=True)
    ev = evaluate_task(f["model"], tok, task.test, method="greedy", max_new_tokens=entry["info"]["max_new_tokens"],
                       predictions_path=pred_path, metric=task.metric)
    t2 = time.perf_counter()
    pre = pre_summary or {}
    row = {
        "cell": cell["name"], "task": s["task"], "size": s["size"], "preset": s["preset"],
        "n_params": f["model"].num_params(), "set_frac": s["set_frac"], "n_train_inputs": len(task.train),
        "n_train_pairs": sum(len(e.references) for e in task.train), "mode": s["mode"],
        "arm": arm_name(s["mode"], s["sparsity"]), "sparsity": s["sparsity"], "seed": s["seed"],
        "pretrain_flops": pre.get("flops", 0.0), "pretrain_flops_dense": pre.get("flops_dense", 0.0),
        "pretrain_val_loss": pre.get("val_loss"), "pretrain_seconds": pre.get("seconds"),
        "finetune_flops": f["flops"], "finetune_val_loss": f["val_loss"],
        "bleu": ev["bleu"], "test_loss": ev["loss"], "test_perplexity": ev["perplexity"],
        "n_test_inputs": ev["n_inputs"], "finetune_seconds": t1 - t0, "eval_seconds": t2 - t1,
    }
    _write_json(os.path.join(out, "cells", cell["name"] + ".json"),
                {"format": FORMAT, "name": cell["name"], "spec": s, "row": row})
    return row


def cell_done(out: str, cell: dict) -> dict | None:
    d = _read_json(os.path.join(out, "cells", cell["name"] + ".json"))
    if d and d.get("format") == FORMAT and d.get("spec") == cell["spec"]:
        return d["row"]
    return None


class _Lock:
    """``OUT/.reproduce.lock`` holds the pid of the run using OUT; a dead pid's lock is taken over."""

    def __init__(self, out: str):
        self.path = os.path.join(out, ".reproduce.lock")

    def __enter__(self):
        os.makedirs(os.path.dirname(self.path), exist_ok=True)
        try:
            with open(self.path) as f:
                pid = int(f.read().strip() or 0)
        except (OSError, ValueError):
            pid = 0
        if pid and pid != os.getpid() and _alive(pid):
            raise MiniSPDFError(f"another reproduce run (pid {pid}) is using {os.path.dirname(self.path)}: wait "
                                "for it to finish or choose another --out")
        _write_text(self.path, str(os.getpid()))
        return self

    def __exit__(self, *exc):
        try:
            os.unlink(self.path)
        except OSError:
            pass


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _clean_temps(out: str) -> None:
    """Leftovers of a killed run (we hold the lock, so nothing else is writing them)."""
    for sub in ("pretrain", "cells", "predictions", ""):
        folder = os.path.join(out, sub)
        if not os.path.isdir(folder):
            continue
        for name in os.listdir(folder):
            if name.startswith(".tmp-"):
                p = os.path.join(folder, name)
                shutil.rmtree(p, ignore_errors=True) if os.path.isdir(p) else os.unlink(p)


def run_grid(grid: dict, out: str, device: str = "auto", log=print, tasks: dict | None = None,
             calib: dict | None = None, command: str | None = None) -> dict:
    """Run (or finish) every job of ``grid`` in ``out``, then write the tables, figures and text."""
    from .train import pick_device

    device = pick_device(device)
    t_start = time.time()
    with _Lock(out):
        _clean_temps(out)
        tasks = tasks or load_grid_tasks(grid)
        pretrains, cells = plan(grid)
        calib = calib or calibrate(grid, tasks, device)
        est = estimate(grid, tasks, calib, pretrains, cells)
        todo_cells = [c for c in cells if cell_done(out, c) is None]
        needed = {c["pretrain_name"] for c in todo_cells if c["pretrain_name"]}
        todo_pre = [p for p in pretrains if pretrain_name(p) in needed and not pretrain_done(out, pretrain_name(p))]
        est_total = sum(est[pretrain_name(p)] for p in todo_pre) + sum(est[c["name"]] for c in todo_cells)
        log(describe_plan(grid, tasks, calib, pretrains, cells, len(todo_pre), len(todo_cells), est_total))
        _write_json(os.path.join(out, "plan.json"), {"format": FORMAT, "grid": grid, "calibration": calib,
                                                     "estimate_s": est_total, "started": t_start})
        spent_est, t_run = 0.0, time.perf_counter()
        done_jobs, total_jobs = 0, len(todo_pre) + len(todo_cells)
        pre_by_name = {pretrain_name(p): p for p in pretrains}
        for cell in cells:
            if cell_done(out, cell) is not None:
                continue
            pre_summary = None
            if cell["pretrain_name"]:
                was_done = pretrain_done(out, cell["pretrain_name"])
                pre_summary = ensure_pretrain(out, pre_by_name[cell["pretrain_name"]], device, log)
                if not was_done:
                    done_jobs += 1
                    spent_est += est[cell["pretrain_name"]]
            row = run_cell(out, cell, tasks, pre_summary, device, log)
            done_jobs += 1
            spent_est += est[cell["name"]]
            elapsed = time.perf_counter() - t_run
            left = max(0.0, est_total - spent_est) * (elapsed / spent_est if spent_est else 1.0)
            bleu = f"BLEU {row['bleu']:.1f}, " if row["bleu"] is not None else ""
            log(f"[{done_jobs}/{total_jobs}] {row['task']} {row['size']} {row['arm']} set {row['set_frac']:.0%} "
                f"seed {row['seed']}: {bleu}test loss {row['test_loss']:.3f} "
                f"({_dur(elapsed)} elapsed, ~{_dur(left)} left)")
        wall = time.time() - t_start
        history = _read_json(os.path.join(out, "invocations.json")) or []
        history.append({"command": command or f"run_grid({grid['name']!r})", "grid": grid["name"],
                        "tasks": list(grid["tasks"]), "started": time.strftime("%Y-%m-%d %H:%M", time.localtime(t_start)),
                        "wall_s": wall, "estimate_s": est_total, "jobs_run": total_jobs})
        _write_json(os.path.join(out, "invocations.json"), history)
        results = collect(grid, out, tasks, calib, est_total, wall, ran_jobs=total_jobs)
        write_outputs(results, out)
    return results


def describe_plan(grid, tasks, calib, pretrains, cells, n_pre_todo, n_cells_todo, est_total) -> str:
    sizes = grid["sizes"]
    lines = [f"reproduce: grid {grid['name']!r} ({grid['description']})",
             f"  sizes: " + "; ".join(f"{k} ({sz['preset']}{'+' + json.dumps(sz['overrides']) if sz['overrides'] else ''}"
                                     f", {calib['sizes'][k]['n_params'] / 1e6:.2f}M params, pre-train "
                                     f"{sz['pretrain']['steps']} x {sz['pretrain']['batch_size']} x {grid['block_size']} tokens, "
                                     f"fine-tune {sz['finetune']['steps']} x {sz['finetune']['batch_size']} pairs)"
                                     for k, sz in sizes.items()),
             f"  sparsities: {', '.join(f'{s:.0%}' for s in grid['sparsities'])}; fine-tuning: dense (SPDF)"
             f"{', masks kept (SPSF)' if 'spsf' in grid['modes'] else ''}"
             f"{', from scratch' if 'scratch' in grid['modes'] else ''}; set sizes: "
             f"{', '.join(f'{f:.0%}' for f in grid['set_fracs'])}; seeds: {grid['seeds']}",
             "  tasks: " + "; ".join(f"{k} ({e['info']['n_train_inputs']} train inputs, {e['info']['n_test_inputs']} "
                                    f"test inputs evaluated)" for k, e in tasks.items()),
             f"  jobs: {len(pretrains)} pre-training runs ({n_pre_todo} to run), {len(cells)} fine-tuning cells "
             f"({n_cells_todo} to run)",
             f"  estimated time: {_dur(est_total)} -- an ESTIMATE from a cost model timed on this machine just "
             f"now ({calib['device']}"
             + (f", {calib['threads']} thread{'s' if calib['threads'] != 1 else ''}" if calib["threads"] else "")
             + "; " + ", ".join(f"{k} {v['train_ms_per_token'] * 1000:.1f} ms per 1k training tokens"
                                for k, v in calib["sizes"].items())
             + "); other load on a shared machine can make it run slower"]
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------
# Collecting and summarising
# --------------------------------------------------------------------------------------------


def _stats(values):
    vals = [v for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]
    if not vals:
        return None, None, 0
    mean = statistics.mean(vals)
    sd = statistics.stdev(vals) if len(vals) > 1 else None
    return mean, sd, len(vals)


ARM_ORDER = {"dense": 0, "spdf50": 1, "spdf75": 2, "spdf90": 3, "spsf50": 4, "spsf75": 5, "spsf90": 6, "scratch": 9}


def _arm_key(arm: str):
    return (ARM_ORDER.get(arm, 7), arm)


def collect(grid: dict, out: str, tasks: dict, calib: dict, est_total: float, wall: float, ran_jobs: int) -> dict:
    pretrains, cells = plan(grid)
    rows = [r for r in (cell_done(out, c) for c in cells) if r is not None]
    pre = [s for s in (pretrain_done(out, pretrain_name(p)) for p in pretrains) if s is not None]
    summary = summarise(rows)
    compute = sum(r["finetune_seconds"] + r["eval_seconds"] for r in rows) + sum(p["seconds"] for p in pre)
    results = {
        "format": FORMAT, "grid": grid, "tasks": {k: e["info"] for k, e in tasks.items()},
        "machine": machine_info(calib), "commit": git_commit(), "calibration": calib,
        "invocations": _read_json(os.path.join(out, "invocations.json")) or [],
        "timing": {"wall_s": wall, "estimate_s": est_total, "jobs_run": ran_jobs,
                   "compute_s_all_jobs": compute, "complete": len(rows) == len(cells)},
        "n_cells": len(cells), "n_cells_done": len(rows), "n_pretrains": len(pretrains),
        "pretrains": [{k: v for k, v in p.items() if k != "spec"} | {"size": p["spec"]["size"],
                      "sparsity": p["spec"]["sparsity"], "seed": p["spec"]["seed"]} for p in pre],
        "rows": rows, "summary": summary,
    }
    results["claims"] = compare_claims(results)
    return results


def _paired(rows, key_fields, metric):
    """{(group..., seed): value} for looking up a seed's partner."""
    return {tuple(r[k] for k in key_fields) + (r["seed"],): r[metric] for r in rows}


def summarise(rows: list[dict]) -> list[dict]:
    """Mean and std over seeds per (task, size, set size, arm), with the paired gaps to dense."""
    groups: dict = {}
    for r in rows:
        groups.setdefault((r["task"], r["size"], r["set_frac"], r["arm"]), []).append(r)
    dense = {m: _paired([r for r in rows if r["arm"] == "dense"], ("task", "size", "set_frac"), m)
             for m in ("bleu", "test_loss")}
    out = []
    for (task, size, frac, arm), rs in groups.items():
        rec = {"task": task, "size": size, "n_params": rs[0]["n_params"], "set_frac": frac, "arm": arm,
               "mode": rs[0]["mode"], "sparsity": rs[0]["sparsity"], "n_seeds": len(rs),
               "n_test_inputs": rs[0]["n_test_inputs"],
               "pretrain_flops": statistics.mean(r["pretrain_flops"] for r in rs),
               "pretrain_flops_x_dense": (statistics.mean(r["pretrain_flops"] / r["pretrain_flops_dense"] for r in rs)
                                          if rs[0]["pretrain_flops_dense"] else 0.0)}
        for m in ("bleu", "test_loss", "test_perplexity", "pretrain_val_loss", "finetune_val_loss"):
            rec[m + "_mean"], rec[m + "_std"], _ = _stats([r[m] for r in rs])
        for m in ("bleu", "test_loss"):
            diffs = [r[m] - dense[m][(task, size, frac, r["seed"])] for r in rs
                     if (task, size, frac, r["seed"]) in dense[m] and r[m] is not None
                     and dense[m][(task, size, frac, r["seed"])] is not None]
            mean, sd, n = _stats(diffs) if arm != "dense" else (None, None, 0)
            rec[f"gap_{m}_mean"], rec[f"gap_{m}_std"], rec[f"gap_{m}_n"] = mean, sd, n
        out.append(rec)
    out.sort(key=lambda r: (r["task"], r["n_params"], r["set_frac"], _arm_key(r["arm"])))
    return out


# --------------------------------------------------------------------------------------------
# The paper's claims against the measurements
# --------------------------------------------------------------------------------------------


def _fmt(x, nd=2, sign=False):
    if x is None:
        return "n/a"
    return f"{x:+.{nd}f}" if sign else f"{x:.{nd}f}"


def _pm(mean, sd, nd=2, sign=False):
    return f"{_fmt(mean, nd, sign)} ± {_fmt(sd, nd)}" if sd is not None else _fmt(mean, nd, sign)


def _add_gap_difference(entries, rows, metric, sign, label, positive, sel_a, sel_b, arm) -> None:
    """Append (label, difference, sd, verdict) for (gap to dense in group a) - (gap in group b)."""
    ga = _diff_stats(rows, metric, sel_a(arm=arm), sel_a(arm="dense"))
    gb = _diff_stats(rows, metric, sel_b(arm=arm), sel_b(arm="dense"))
    if ga[2] and gb[2]:
        m = sign * (ga[0] - gb[0])
        sd = math.sqrt(ga[1] ** 2 + gb[1] ** 2) if ga[1] is not None and gb[1] is not None else None
        entries.append((label, m, sd, _verdict(m, sd, positive)))


def _diff_stats(rows, metric, group_a, group_b, paired=True):
    """Mean and std of (a - b) per seed (paired) or of the two groups' means (unpaired)."""
    if paired:
        b = {r["seed"]: r[metric] for r in group_b}
        diffs = [r[metric] - b[r["seed"]] for r in group_a if r["seed"] in b]
        return _stats(diffs)
    ma, sa, na = _stats([r[metric] for r in group_a])
    mb, sb, nb = _stats([r[metric] for r in group_b])
    if ma is None or mb is None:
        return None, None, 0
    sd = math.sqrt((sa or 0) ** 2 + (sb or 0) ** 2) if sa is not None and sb is not None else None
    return ma - mb, sd, min(na, nb)


def _verdict(mean, sd, want_positive: bool) -> str:
    """'consistent' only when the difference exceeds its seed std in the claimed direction."""
    if mean is None or sd is None:
        return "untestable"
    if abs(mean) <= sd:
        return "within noise"
    return "consistent" if (mean > 0) == want_positive else "opposite"


def compare_claims(results: dict) -> list[dict]:
    """Each claim of the paper (spdf.md) with what this grid measured and a verdict, from the numbers.

    Differences are per seed wherever a seed pairs two arms (same initial weights and data order):
    a gap to dense, SPDF - SPSF. Across sizes or tasks (unpaired) the noise is the std of the
    difference of two single-seed values, sqrt(sd_a^2 + sd_b^2). A directional claim is
    "consistent" only when the mean difference exceeds that std in the claimed direction.
    """
    from .flops import flop_report

    rows = results["rows"]
    grid = results["grid"]
    if not rows:
        return []
    sizes = sorted({r["size"] for r in rows}, key=lambda s: min(r["n_params"] for r in rows if r["size"] == s))
    task_keys = sorted({r["task"] for r in rows})
    fracs = sorted({r["set_frac"] for r in rows})
    sparse = sorted({r["sparsity"] for r in rows if r["sparsity"]})
    seeds = len({r["seed"] for r in rows})

    def sel(**kw):
        return [r for r in rows if all(r[k] == v for k, v in kw.items())]

    claims = []
    metrics = (("bleu", +1, "BLEU"), ("test_loss", -1, "test loss"))

    # A. FLOPs.
    xl = flop_report("gpt3-xl", sparsity=0.75).reduction
    kit = {}
    for size in sizes:
        p = [x for x in results["pretrains"] if x["size"] == size and abs(x["sparsity"] - 0.75) < 1e-9]
        if p:
            kit[size] = statistics.mean(x["flops_dense"] / x["flops"] for x in p)
    dense_t = {size: _stats([x["seconds"] for x in results["pretrains"] if x["size"] == size and x["sparsity"] == 0])[0]
               for size in sizes}
    s75_t = {size: _stats([x["seconds"] for x in results["pretrains"] if x["size"] == size
                           and abs(x["sparsity"] - 0.75) < 1e-9])[0] for size in sizes}
    timing = ", ".join(f"{s} {s75_t[s] / dense_t[s]:.2f}x the dense time" for s in sizes
                       if dense_t.get(s) and s75_t.get(s))
    claims.append({
        "id": "flops", "claim": "2.5x fewer pre-training FLOPs at 75% sparsity (GPT-3 XL, 1.3B)", "tag": "paper",
        "measured": (f"the kit's FLOP formula gives {xl:.2f}x for GPT-3 XL at 75% (T=2048, embedding not counted); "
                     f"for the models of this grid at 75%: "
                     + (", ".join(f"{s} {v:.2f}x" for s, v in kit.items()) or "no 75% run")
                     + (f". Measured wall time of a 75% pre-training run: {timing} (masks on dense hardware "
                        f"save no time)" if timing else "")),
        "verdict": "reproduces (arithmetic)" if abs(xl - 2.5) < 0.06 else "does not reproduce",
    })

    # Sanity: does pre-training help at all?
    benefit = []
    for task in task_keys:
        for size in sizes:
            for frac in fracs:
                m, sd, n = _diff_stats(rows, "bleu", sel(task=task, size=size, set_frac=frac, arm="dense"),
                                       sel(task=task, size=size, set_frac=frac, arm="scratch"))
                ml, sdl, _ = _diff_stats(rows, "test_loss", sel(task=task, size=size, set_frac=frac, arm="scratch"),
                                         sel(task=task, size=size, set_frac=frac, arm="dense"))
                if n:
                    benefit.append((task, size, frac, m, sd, ml, sdl))
    helps_bleu = sum(1 for b in benefit if b[4] is not None and b[3] > b[4])
    helps_loss = sum(1 for b in benefit if b[6] is not None and b[5] > b[6])
    floor = [r["bleu_mean"] for r in results["summary"] if r["arm"] == "dense" and r["bleu_mean"] is not None]
    bleu_floor = bool(floor) and max(floor) < BLEU_FLOOR
    claims.append({
        "id": "pretraining_helps", "claim": "(precondition) dense pre-training beats no pre-training", "tag": "kit check",
        "measured": (f"dense minus scratch, per seed: BLEU {'; '.join(f'{t} {s} {f:.0%}: {_pm(m, sd, 1, True)}' for t, s, f, m, sd, _, _ in benefit)}"
                     f" | test-loss improvement {'; '.join(f'{t} {s} {f:.0%}: {_pm(ml, sdl, 3, True)}' for t, s, f, _, _, ml, sdl in benefit)}"),
        "verdict": (f"pre-training helps beyond noise in {helps_bleu}/{len(benefit)} cells on BLEU, "
                    f"{helps_loss}/{len(benefit)} on test loss"
                    + ("; BLEU is near its floor (dense < 5 everywhere): BLEU comparisons say little" if bleu_floor else "")),
    })
    vacuous = {"bleu": helps_bleu == 0, "test_loss": helps_loss == 0}

    # B. 50-75% sparsity without significant loss (SPDF gap to dense).
    for metric, sign, label in metrics:
        entries = []
        for task in task_keys:
            for size in sizes:
                for frac in fracs:
                    for s in [x for x in sparse if x <= 0.75 + 1e-9]:
                        m, sd, n = _diff_stats(rows, metric, sel(task=task, size=size, set_frac=frac, arm=f"spdf{_pct(s)}"),
                                               sel(task=task, size=size, set_frac=frac, arm="dense"))
                        if n:
                            entries.append((f"{task} {size} {frac:.0%} {s:.0%}", sign * m if m is not None else None, sd))
        losses = sum(1 for _, m, sd in entries if sd is not None and m < -sd)
        testable = sum(1 for _, m, sd in entries if sd is not None)
        if not testable:
            verdict = "untestable (needs 2+ seeds and the 50/75% arms)"
        elif vacuous[metric]:
            verdict = f"inconclusive: pre-training itself has no {label} benefit beyond noise here"
        elif losses == 0:
            verdict = "consistent: no loss beyond the seed std"
        elif losses <= testable // 4:
            verdict = f"mostly consistent: a loss beyond the seed std in {losses}/{testable}"
        else:
            verdict = f"not consistent: a loss beyond the seed std in {losses}/{testable}"
        claims.append({
            "id": f"no_loss_50_75_{metric}", "claim": "50-75% sparsity without significant downstream loss (SPDF)",
            "tag": "paper", "metric": label,
            "measured": f"SPDF minus dense ({label}{', sign flipped' if sign < 0 else ''}; positive = SPDF better), "
                        "mean ± std over seeds: "
                        + "; ".join(f"{k}: {_pm(m, sd, 1 if metric == 'bleu' else 3, True)}" for k, m, sd in entries),
            "verdict": verdict,
        })

    # C. Harder tasks suffer more.
    for metric, sign, label in metrics:
        if len(task_keys) < 2:
            claims.append({"id": f"harder_tasks_{metric}", "claim": "harder tasks suffer more from sparse pre-training",
                           "tag": "paper", "metric": label,
                           "measured": f"one task in this grid ({task_keys[0]})",
                           "verdict": "not tested (add tasks: the default grid has builtin:easy and builtin:hard; "
                                      "--e2e adds real E2E)"})
            continue
        # difficulty: the dense arm's BLEU (lower = harder) or test loss (higher = harder)
        difficulty = {t: sign * (_stats([r[metric] for r in sel(task=t, arm="dense")])[0] or 0) for t in task_keys}
        order = sorted(task_keys, key=lambda t: -difficulty[t])  # easiest first
        easy, hard = order[0], order[-1]
        entries = []
        for size in sizes:
            for frac in fracs:
                for s in [x for x in sparse if x >= 0.75 - 1e-9]:
                    arm = f"spdf{_pct(s)}"
                    _add_gap_difference(entries, rows, metric, sign, f"{size} {frac:.0%} {s:.0%}", False,
                                        lambda **k: sel(task=hard, size=size, set_frac=frac, **k),
                                        lambda **k: sel(task=easy, size=size, set_frac=frac, **k), arm)
        claims.append(_summed("harder_tasks_" + metric, "harder tasks suffer more from sparse pre-training", label,
                              f"hardest task by the dense arm's {label}: {hard}, easiest: {easy}; (gap on {hard}) - "
                              f"(gap on {easy}), "
                              f"{label}, negative = the harder task loses more", entries,
                              1 if metric == "bleu" else 3))

    # D. Larger models tolerate more sparsity.
    for metric, sign, label in metrics:
        if len(sizes) < 2:
            claims.append({"id": f"larger_models_{metric}", "claim": "larger models tolerate more sparsity",
                           "tag": "paper", "metric": label, "measured": "one model size in this grid",
                           "verdict": "not tested"})
            continue
        small, large = sizes[0], sizes[-1]
        entries = []
        for task in task_keys:
            for frac in fracs:
                for s in [x for x in sparse if x >= 0.75 - 1e-9]:
                    arm = f"spdf{_pct(s)}"
                    _add_gap_difference(entries, rows, metric, sign, f"{task} {frac:.0%} {s:.0%}", True,
                                        lambda **k: sel(task=task, size=large, set_frac=frac, **k),
                                        lambda **k: sel(task=task, size=small, set_frac=frac, **k), arm)
        claims.append(_summed("larger_models_" + metric, "larger models tolerate more sparsity", label,
                              f"(gap to dense of {large}) - (gap of {small}), {label}, positive = the larger model "
                              "loses less", entries, 1 if metric == "bleu" else 3))

    # E. SPSF generalises worse than SPDF.
    for metric, sign, label in metrics:
        entries = []
        for task in task_keys:
            for size in sizes:
                for frac in fracs:
                    for s in sparse:
                        m, sd, n = _diff_stats(rows, metric, sel(task=task, size=size, set_frac=frac, arm=f"spdf{_pct(s)}"),
                                               sel(task=task, size=size, set_frac=frac, arm=f"spsf{_pct(s)}"))
                        if n:
                            m = sign * m
                            entries.append((f"{task} {size} {frac:.0%} {s:.0%}", m, sd, _verdict(m, sd, True)))
        claims.append(_summed("spsf_worse_" + metric, "sparse fine-tuning (SPSF) generalises worse than dense (SPDF)",
                              label, f"SPDF minus SPSF per seed, {label}, positive = SPDF better", entries,
                              1 if metric == "bleu" else 3))

    # F. Dataset size matters.
    for metric, sign, label in metrics:
        if len(fracs) < 2:
            claims.append({"id": f"dataset_size_{metric}", "claim": "the downstream dataset size matters",
                           "tag": "paper (direction unverified)", "metric": label,
                           "measured": "one fine-tuning set size in this grid", "verdict": "not tested"})
            continue
        lo, hi = fracs[0], fracs[-1]
        entries = []
        for task in task_keys:
            for size in sizes:
                for s in [x for x in sparse if x >= 0.75 - 1e-9]:
                    arm = f"spdf{_pct(s)}"
                    ga = _diff_stats(rows, metric, sel(task=task, size=size, set_frac=lo, arm=arm),
                                     sel(task=task, size=size, set_frac=lo, arm="dense"))
                    gb = _diff_stats(rows, metric, sel(task=task, size=size, set_frac=hi, arm=arm),
                                     sel(task=task, size=size, set_frac=hi, arm="dense"))
                    if ga[2] and gb[2]:
                        m = sign * (ga[0] - gb[0])
                        sd = math.sqrt(ga[1] ** 2 + gb[1] ** 2) if ga[1] is not None and gb[1] is not None else None
                        v = _verdict(m, sd, True)
                        entries.append((f"{task} {size} {s:.0%}", m, sd, "differs" if v in ("consistent", "opposite") else v))
        c = _summed("dataset_size_" + metric, "the downstream dataset size matters", label,
                    f"(gap to dense with {lo:.0%} of the data) - (gap with {hi:.0%}), {label}, positive = the sparse "
                    "arm loses less on the small set", entries, 1 if metric == "bleu" else 3, directional=False)
        c["tag"] = "paper (direction unverified)"
        claims.append(c)
    for c in claims:
        c["n_seeds"] = seeds
        if bleu_floor and c.get("metric") == "BLEU" and not c["verdict"].startswith("not tested"):
            c["verdict"] = (f"untestable: BLEU is at its floor here (dense BLEU < {BLEU_FLOOR:g} in every cell); "
                            f"by the numbers: {c['verdict']}")
    return claims


def _summed(cid, claim, label, what, entries, nd, directional=True) -> dict:
    counts: dict = {}
    for e in entries:
        counts[e[3]] = counts.get(e[3], 0) + 1
    testable = sum(v for k, v in counts.items() if k != "untestable")
    if not entries:
        verdict = "untestable (missing arms)"
    elif not testable:
        verdict = "untestable (needs 2+ seeds)"
    elif directional:
        c, o = counts.get("consistent", 0), counts.get("opposite", 0)
        if c and not o:
            verdict = (f"consistent in {c}/{testable} comparisons (none opposite)" if c * 2 >= testable else
                       f"weakly consistent: {c}/{testable} beyond noise in the claimed direction, the rest within "
                       "noise, none opposite")
        elif o and not c:
            verdict = (f"not consistent: opposite beyond noise in {o}/{testable}" if o * 2 >= testable else
                       f"weakly opposite: {o}/{testable} beyond noise against the claim, the rest within noise")
        elif not c and not o:
            verdict = f"inconclusive: all {testable} within noise"
        else:
            verdict = f"mixed: consistent {c}, opposite {o}, within noise {testable - c - o} of {testable}"
    else:
        d = counts.get("differs", 0)
        verdict = (f"a difference beyond noise in {d}/{testable}" if d else f"inconclusive: all {testable} within noise")
    return {"id": cid, "claim": claim, "tag": "paper", "metric": label,
            "measured": what + ": " + "; ".join(f"{k}: {_pm(m, sd, nd, True)}" for k, m, sd, _ in entries),
            "verdict": verdict}


# --------------------------------------------------------------------------------------------
# Machine and commit
# --------------------------------------------------------------------------------------------


def machine_info(calib: dict | None = None) -> dict:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    info = {"cpu": cpu, "cores": os.cpu_count(), "platform": platform.platform(),
            "python": platform.python_version()}
    try:
        info["cores_usable"] = len(os.sched_getaffinity(0))
    except AttributeError:
        pass
    try:
        import torch

        info["torch"] = torch.__version__
        if torch.cuda.is_available():
            info["gpu"] = torch.cuda.get_device_name(0)
    except Exception:  # pragma: no cover - torch is a dependency
        pass
    if calib:
        info["device"] = calib["device"]
        info["torch_threads"] = calib["threads"]
    return info


def git_commit() -> str:
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True,
                              timeout=10)
        if head.returncode != 0:
            return "unknown (not a git checkout)"
        # the package's own code (committed or not, untracked files included) decides the results
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "minispdf", "pyproject.toml"], cwd=root,
                               capture_output=True, text=True, timeout=10)
        return head.stdout.strip() + (" + uncommitted changes to minispdf/" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown (git not available)"


# --------------------------------------------------------------------------------------------
# Writing: tables, figures, README section
# --------------------------------------------------------------------------------------------

CSV_FIELDS = ("task", "size", "preset", "n_params", "set_frac", "n_train_inputs", "n_train_pairs", "mode", "arm",
              "sparsity", "seed", "pretrain_flops", "pretrain_flops_dense", "pretrain_val_loss", "pretrain_seconds",
              "finetune_flops", "finetune_val_loss", "bleu", "test_loss", "test_perplexity", "n_test_inputs",
              "finetune_seconds", "eval_seconds", "cell")
SUMMARY_FIELDS = ("task", "size", "n_params", "set_frac", "arm", "mode", "sparsity", "n_seeds", "n_test_inputs",
                  "pretrain_flops", "pretrain_flops_x_dense", "pretrain_val_loss_mean", "pretrain_val_loss_std",
                  "bleu_mean", "bleu_std", "gap_bleu_mean", "gap_bleu_std", "test_loss_mean", "test_loss_std",
                  "gap_test_loss_mean", "gap_test_loss_std", "test_perplexity_mean", "test_perplexity_std",
                  "finetune_val_loss_mean", "finetune_val_loss_std")


def _csv(rows, fields) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(fields), extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: ("" if r.get(k) is None else r.get(k)) for k in fields})
    return buf.getvalue()


def summary_markdown(summary: list[dict]) -> str:
    head = ("| task | size | set | arm | pre-train FLOPs (x dense) | pre-train val loss | BLEU | BLEU gap to dense "
            "| test loss | test-loss gap to dense | seeds |")
    lines = [head, "|" + "---|" * 11]
    for r in summary:
        lines.append(
            f"| {r['task']} | {r['size']} | {r['set_frac']:.0%} | {r['arm']} | "
            f"{_fmt(r['pretrain_flops_x_dense']) if r['mode'] != 'scratch' else '0 (none)'} | "
            f"{_pm(r['pretrain_val_loss_mean'], r['pretrain_val_loss_std'], 3)} | "
            f"{_pm(r['bleu_mean'], r['bleu_std'], 1)} | "
            f"{_pm(r['gap_bleu_mean'], r['gap_bleu_std'], 1, True) if r['arm'] != 'dense' else '-'} | "
            f"{_pm(r['test_loss_mean'], r['test_loss_std'], 3)} | "
            f"{_pm(r['gap_test_loss_mean'], r['gap_test_loss_std'], 3, True) if r['arm'] != 'dense' else '-'} | "
            f"{r['n_seeds']} |")
    return "\n".join(lines)


def write_outputs(results: dict, out: str) -> None:
    _write_json(os.path.join(out, "results.json"), results)
    _write_text(os.path.join(out, "results.csv"), _csv(results["rows"], CSV_FIELDS))
    _write_text(os.path.join(out, "summary.csv"), _csv(results["summary"], SUMMARY_FIELDS))
    _write_text(os.path.join(out, "summary.md"), summary_markdown(results["summary"]) + "\n")
    if results["rows"]:
        plot_all(results, out)
    _write_text(os.path.join(out, "README_section.md"), readme_section(results))


FIGURES = ("pretrain_loss_vs_flops.png", "bleu_vs_pretrain_flops.png", "gap_to_dense_bleu.png",
           "gap_to_dense_loss.png")


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: str) -> None:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    _plt().close(fig)
    atomic_write_bytes(path, lambda f: f.write(buf.getvalue()))
    _publish(path)


def _minor_label(v, _pos) -> str:
    """Label the 2x and 5x minor ticks of a log axis (the default labels every one, overlapping)."""
    if v <= 0:
        return ""
    mantissa = v / 10 ** math.floor(math.log10(v))
    return f"{v:.0e}" if round(mantissa) in (2, 5) and abs(mantissa - round(mantissa)) < 1e-6 else ""


def _ema(ys, alpha=0.9):
    out, avg = [], None
    for y in ys:
        avg = y if avg is None else alpha * avg + (1 - alpha) * y
        out.append(avg)
    return out


def plot_all(results: dict, out: str) -> None:
    plot_pretrain_curves(results, out, os.path.join(out, FIGURES[0]))
    plot_bleu_vs_flops(results, os.path.join(out, FIGURES[1]))
    plot_gaps(results, "bleu", os.path.join(out, FIGURES[2]))
    plot_gaps(results, "test_loss", os.path.join(out, FIGURES[3]))


def _sizes(results):
    return sorted({r["size"] for r in results["rows"]}, key=lambda s: min(r["n_params"] for r in results["rows"]
                                                                          if r["size"] == s))


def plot_pretrain_curves(results: dict, out: str, path: str) -> None:
    """Training loss (EMA, mean over seeds) against cumulative sparse-count FLOPs; one panel per size."""
    plt = _plt()
    from matplotlib.ticker import FuncFormatter

    params = {p["size"]: p["n_params"] for p in results["pretrains"]}
    sizes = sorted(params, key=params.get)
    fig, axes = plt.subplots(1, max(1, len(sizes)), figsize=(5.2 * max(1, len(sizes)), 3.8), squeeze=False)
    for ax, size in zip(axes[0], sizes):
        for s in sorted({p["sparsity"] for p in results["pretrains"] if p["size"] == size}):
            curves = []
            for p in results["pretrains"]:
                if p["size"] != size or p["sparsity"] != s:
                    continue
                log = os.path.join(out, "pretrain", p["name"], "log.jsonl")
                try:
                    with open(log) as f:
                        recs = [json.loads(line) for line in f if line.strip()]
                except OSError:
                    continue
                curves.append([(r["flops"], r["loss"]) for r in recs if "loss" in r])
            curves = [c for c in curves if c]
            if not curves:
                continue
            n = min(len(c) for c in curves)
            xs = [curves[0][i][0] for i in range(n)]
            ys = [statistics.mean(c[i][1] for c in curves) for i in range(n)]
            ax.plot(xs, _ema(ys), label=f"{s:.0%} sparse" if s else "dense")
        ax.set_xscale("log")
        ax.xaxis.set_minor_formatter(FuncFormatter(_minor_label))
        ax.set_xlabel("pre-training FLOPs (theoretical; sparse matmuls at their density)")
        ax.set_ylabel("training loss (EMA, mean over seeds)")
        ax.set_title(f"{size}: pre-training on {results['grid']['pretrain_data']}", fontsize=10)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    _save(fig, path)


def _panels(results):
    tasks = sorted({r["task"] for r in results["summary"]})
    fracs = sorted({r["set_frac"] for r in results["summary"]})
    return tasks, fracs


def plot_bleu_vs_flops(results: dict, path: str) -> None:
    """BLEU (mean ± std) against the pre-training FLOPs of the arm; SPDF solid, SPSF dashed."""
    plt = _plt()
    from matplotlib.ticker import FuncFormatter

    tasks, fracs = _panels(results)
    sizes = _sizes(results)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    fig, axes = plt.subplots(len(tasks), len(fracs), figsize=(5.0 * len(fracs), 3.8 * len(tasks)), squeeze=False)
    for i, task in enumerate(tasks):
        for j, frac in enumerate(fracs):
            ax = axes[i][j]
            for k, size in enumerate(sizes):
                c = colors[k % len(colors)]
                recs = [r for r in results["summary"] if r["task"] == task and r["set_frac"] == frac and r["size"] == size]
                for mode, style in (("spdf", "-o"), ("spsf", "--s")):
                    pts = sorted((r["pretrain_flops"], r["bleu_mean"], r["bleu_std"] or 0.0) for r in recs
                                 if r["bleu_mean"] is not None and (r["mode"] == mode or (mode == "spsf" and r["arm"] == "dense")))
                    if len(pts) > (1 if mode == "spsf" else 0):
                        xs, ys, es = zip(*pts)
                        ax.errorbar(xs, ys, yerr=es, fmt=style, color=c, capsize=3, ms=4,
                                    label=f"{size} {'SPDF' if mode == 'spdf' else 'SPSF'}")
                scratch = [r for r in recs if r["arm"] == "scratch" and r["bleu_mean"] is not None]
                if scratch:
                    ax.axhline(scratch[0]["bleu_mean"], color=c, ls=":", lw=1, label=f"{size} from scratch")
            ax.set_xscale("log")
            ax.xaxis.set_minor_formatter(FuncFormatter(_minor_label))
            ax.set_xlabel("pre-training FLOPs of the arm (sparse count)")
            ax.set_ylabel("BLEU (mean ± std over seeds)")
            dense = [r["bleu_mean"] for r in results["summary"] if r["task"] == task and r["arm"] == "dense"
                     and r["bleu_mean"] is not None]
            floor = f"\n(BLEU at its floor: dense < {BLEU_FLOOR:g}; see the test-loss gaps)" if dense and max(dense) < BLEU_FLOOR else ""
            ax.set_title(f"{task}, {frac:.0%} of the fine-tuning set{floor}", fontsize=10)
            ax.grid(alpha=0.3)
            ax.legend(fontsize=7)
    fig.tight_layout()
    _save(fig, path)


def plot_gaps(results: dict, metric: str, path: str) -> None:
    """Sparse arm minus dense arm (paired per seed) against sparsity; per size, task and set size."""
    plt = _plt()
    tasks, fracs = _panels(results)
    sizes = _sizes(results)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    fig, axes = plt.subplots(len(tasks), len(fracs), figsize=(5.0 * len(fracs), 3.8 * len(tasks)), squeeze=False)
    for i, task in enumerate(tasks):
        for j, frac in enumerate(fracs):
            ax = axes[i][j]
            ax.axhline(0, color="black", lw=0.8)
            for k, size in enumerate(sizes):
                for mode, style, dx in (("spdf", "-o", -0.5), ("spsf", "--s", 0.5)):
                    pts = sorted((r["sparsity"], r[f"gap_{metric}_mean"], r[f"gap_{metric}_std"] or 0.0)
                                 for r in results["summary"] if r["task"] == task and r["set_frac"] == frac
                                 and r["size"] == size and r["mode"] == mode and r["sparsity"]
                                 and r[f"gap_{metric}_mean"] is not None)
                    if pts:
                        xs, ys, es = zip(*pts)
                        ax.errorbar([100 * x + dx for x in xs], ys, yerr=es, fmt=style, color=colors[k % len(colors)],
                                    capsize=3, ms=4, label=f"{size} {'SPDF' if mode == 'spdf' else 'SPSF'}")
            ax.set_xticks([100 * s for s in results["grid"]["sparsities"] if s])
            ax.set_xlabel("pre-training sparsity (%)")
            ax.set_ylabel("BLEU: sparse - dense (higher = better)" if metric == "bleu"
                          else "test loss: sparse - dense (lower = better)")
            ax.set_title(f"{task}, {frac:.0%} of the fine-tuning set", fontsize=10)
            ax.grid(alpha=0.3)
            ax.legend(fontsize=7)
    fig.tight_layout()
    _save(fig, path)


def readme_section(results: dict) -> str:
    """The README's results section, generated from ``results`` (never written by hand)."""
    g = results["grid"]
    m = results["machine"]
    t = results["timing"]
    seeds = g["seeds"]
    sizes = ", ".join(f"{k} ({v['preset']} preset{', ' + json.dumps(v['overrides']) if v['overrides'] else ''}, "
                      f"{results['calibration']['sizes'][k]['n_params'] / 1e6:.2f}M parameters; pre-training "
                      f"{v['pretrain']['steps']} steps x {v['pretrain']['batch_size']} x {g['block_size']} tokens, "
                      f"fine-tuning {v['finetune']['steps']} steps x {v['finetune']['batch_size']} pairs)"
                      for k, v in g["sizes"].items())
    tasks = "; ".join(f"{k}: {v['n_train_inputs']} training inputs ({v['n_train_pairs']} pairs), "
                      f"{v['n_test_inputs']} test inputs scored" for k, v in results["tasks"].items())
    cmd = f"python -m minispdf.reproduce --grid {g['name']}" + (f" --seeds {seeds}" if seeds != GRIDS[g['name']]['seeds'] else "")
    if "e2e" in g["tasks"]:
        cmd += " --e2e PATH/TO/e2e"
    if "dart" in g["tasks"]:
        cmd += " --dart PATH/TO/dart"
    lines = [
        f"## Results: the `{g['name']}` grid",
        "",
        f"Generated by `minispdf.reproduce.readme_section` from `results.json`; reproduce with `{cmd}`.",
        "",
        f"- Commit: `{results['commit']}`",
        f"- Machine: {m['cpu']}, {m['cores']} cores"
        + (f" ({m['cores_usable']} usable)" if m.get("cores_usable") else "")
        + (f", GPU {m['gpu']}" if m.get("gpu") and m.get("device", "").startswith("cuda") else "")
        + f"; device {m.get('device')}" + (f", {m['torch_threads']} torch thread(s)" if m.get("torch_threads") else "")
        + f"; torch {m.get('torch')}",
        "- Wall time: " + ("; ".join(f"`{i['command']}` ({i['started']}): {_dur(i['wall_s'])} for {i['jobs_run']} jobs "
                                     f"(printed estimate {_dur(i['estimate_s'])})"
                                     for i in results.get("invocations", []) if i["jobs_run"])
                           or f"{_dur(t['wall_s'])} (estimate {_dur(t['estimate_s'])})")
        + f"; the jobs' own times sum to {_dur(t['compute_s_all_jobs'])}"
        + ("" if t["complete"] else f". INCOMPLETE: {results['n_cells_done']}/{results['n_cells']} cells"),
        f"- Grid: sizes {sizes}; pre-training sparsity {', '.join(f'{s:.0%}' for s in g['sparsities'])} on "
        f"`{g['pretrain_data']}` text; fine-tuning dense (SPDF; at 0% the dense baseline), masks kept (SPSF), from "
        f"scratch; fine-tuning set sizes {', '.join(f'{f:.0%}' for f in g['set_fracs'])}; {seeds} seeds per cell.",
        f"- Tasks: {tasks}. Greedy decoding; BLEU is sacrebleu corpus BLEU, lowercased, multi-reference; test loss "
        "is nats per target character of the references.",
        "- Statistics: mean ± sample std over seeds. Gaps are paired per seed (a seed fixes initial weights and "
        "data order for every arm). A claim counts as *consistent* only where the difference exceeds its seed std "
        f"(for differences between sizes or tasks: sqrt(sd_a² + sd_b²)); with {seeds} seeds this is a weak test "
        "and a few crossings are expected by chance.",
        "",
        "### Summary (mean ± std over seeds)",
        "",
        summary_markdown(results["summary"]),
        "",
        "### Figures",
        "",
        "![pre-training loss against FLOPs](results/pretrain_loss_vs_flops.png)",
        "![BLEU against pre-training FLOPs](results/bleu_vs_pretrain_flops.png)",
        "![BLEU gap to dense against sparsity](results/gap_to_dense_bleu.png)",
        "![test-loss gap to dense against sparsity](results/gap_to_dense_loss.png)",
        "",
        "### The paper's claims against this grid",
        "",
        "| claim (spdf.md) | metric | measured here | verdict |",
        "|---|---|---|---|",
    ]
    for c in results["claims"]:
        lines.append(f"| {c['claim']} [{c['tag']}] | {c.get('metric', '-')} | {c['measured']} | {c['verdict']} |")
    budget = "; ".join(
        f"{k}: {results['calibration']['sizes'][k]['n_params'] / 1e6:.2f}M parameters, "
        f"{v['pretrain']['steps'] * v['pretrain']['batch_size'] * g['block_size'] / 1e3:.0f}k pre-training tokens "
        f"({v['pretrain']['steps'] * v['pretrain']['batch_size'] * g['block_size'] / results['calibration']['sizes'][k]['n_params']:.1f} "
        "per parameter)" for k, v in g["sizes"].items())
    lines += [
        "",
        f"Scale caveat: {budget}; character vocabulary. The paper pre-trains 125M-1.3B-parameter models on about "
        "20 tokens per parameter (billions of tokens) before fine-tuning. A verdict here is about the kit at this "
        "scale, not about the paper's models.",
        "",
    ]
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------

SCHEMA = {
    "out": (str, "runs/reproduce", "output folder (results, figures, pre-training checkpoints, cells)"),
    "grid": (str, None, "default | quick | smoke (none given: default; --quick means quick)"),
    "seeds": (int, None, "seeds per cell (the grid's own: 3, smoke 2)"),
    "e2e": (str, None, "folder with the official E2E devset.csv and testset_w_refs.csv: adds the E2E task"),
    "dart": (str, None, "folder (or file) of the official DART release: adds the DART task"),
    "device": (str, "auto", "auto | cpu | cuda | mps"),
    "threads": (int, None, "torch CPU threads (default 1 on a CPU; see the module docstring)"),
    "pretrain_data": (str, None, "pre-training corpus (default builtin; e.g. tinystories, PATH.txt)"),
}
FLAGS = {"quick": False, "json": False, "dry_run": False}
USAGE = ("python -m minispdf.reproduce [--quick | --grid default|quick|smoke] [--out DIR] [--seeds N] "
         "[--e2e DIR] [--dart PATH] [--dry-run] [--json]")


def main(argv=None) -> int:
    """Parse ``argv`` and run (or, with ``--dry-run``, only describe) the grid. Returns 0."""
    from . import config as cfg_lib

    argv = list(sys.argv[1:] if argv is None else argv)
    if "--help" in argv or "-h" in argv:
        print(USAGE + "\n\nsettings:\n" + cfg_lib.describe(SCHEMA) + "\n\nswitches: --quick --dry-run --json")
        return 0
    s = cfg_lib.parse_settings(argv, SCHEMA, FLAGS)
    name = s["grid"] or ("quick" if s["quick"] else "default")
    if s["quick"] and name != "quick":
        raise MiniSPDFError(f"--quick and --grid {name} disagree: pass one of them")
    if s["threads"] is not None and s["threads"] < 1:
        raise MiniSPDFError(f"--threads {s['threads']} must be at least 1")
    if not s["out"]:
        raise MiniSPDFError("--out needs a folder path")
    grid = resolve_grid(name, seeds=s["seeds"], e2e=s["e2e"], dart=s["dart"], pretrain_data=s["pretrain_data"])
    check_out_folder(s["out"])

    import torch

    from .train import pick_device

    device = pick_device(s["device"])
    as_json = s["json"]

    def log(msg: str) -> None:
        print(msg, file=sys.stderr if as_json else sys.stdout, flush=True)

    old_threads = torch.get_num_threads()
    if device == "cpu":
        torch.set_num_threads(s["threads"] or 1)
    try:
        if s["dry_run"]:
            tasks = load_grid_tasks(grid)
            calib = calibrate(grid, tasks, device)
            pretrains, cells = plan(grid)
            est = estimate(grid, tasks, calib, pretrains, cells)
            out = s["out"]
            todo_cells = [c for c in cells if cell_done(out, c) is None]
            needed = {c["pretrain_name"] for c in todo_cells if c["pretrain_name"]}
            todo_pre = [p for p in pretrains if pretrain_name(p) in needed and not pretrain_done(out, pretrain_name(p))]
            total = sum(est[pretrain_name(p)] for p in todo_pre) + sum(est[c["name"]] for c in todo_cells)
            text = describe_plan(grid, tasks, calib, pretrains, cells, len(todo_pre), len(todo_cells), total)
            if as_json:
                print(json.dumps({"grid": grid, "tasks": {k: e["info"] for k, e in tasks.items()},
                                  "calibration": calib, "n_pretrains": len(pretrains), "n_cells": len(cells),
                                  "pretrains_to_run": len(todo_pre), "cells_to_run": len(todo_cells),
                                  "estimate_s": total, "estimate_note": "an estimate from a timed cost model"},
                                 indent=2))
            else:
                print(text + "\n(dry run: nothing was trained)")
            return 0
        results = run_grid(grid, s["out"], device=device, log=log,
                           command="python -m minispdf.reproduce " + " ".join(argv))
    finally:
        torch.set_num_threads(old_threads)
    t = results["timing"]
    if as_json:
        print(json.dumps({"out": s["out"], "timing": t, "n_cells": results["n_cells"],
                          "n_cells_done": results["n_cells_done"], "claims": results["claims"],
                          "files": ["results.json", "results.csv", "summary.csv", "summary.md",
                                    "README_section.md", *FIGURES]}, indent=2, default=str))
    else:
        print(f"\ndone in {_dur(t['wall_s'])} (estimated {_dur(t['estimate_s'])})\n\n"
              + summary_markdown(results["summary"])
              + "\n\nclaims:\n" + "\n".join(f"- {c['claim']} [{c.get('metric', '-')}]: {c['verdict']}"
                                            for c in results["claims"])
              + f"\n\nwritten to {s['out']}: results.json, results.csv, summary.csv, summary.md, README_section.md, "
              + ", ".join(FIGURES))
    return 0


def _entry() -> int:
    try:
        return main()
    except MiniSPDFError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: finished cells and pre-training runs are kept; rerun the same command to continue",
              file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(_entry())
