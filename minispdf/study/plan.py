"""From a grid to jobs: pre-training runs, fine-tuning cells, and what they will cost.

Pre-training is shared: one run per (size, pre-training recipe, seed), reused by every cell that
starts from it. A cell is one fine-tuning run plus its evaluation. Every job's name ends in a
hash of every setting that affects its result, so a changed grid never reuses a stale result.
"""

from __future__ import annotations

import hashlib
import json
import math

from ..settings import MAX_STEPS, STEPS_HINT
from ..errors import MiniSPDFError, counted
from ..schedules import SparsityConfig, applies_to
from ..spdf import ModelConfig, PretrainConfig
from ..train import TrainConfig
from .grids import ARM_SETS, VSPDF_DENSE_FROM, parse_arm, train_config


def _hash(obj) -> str:
    return hashlib.sha1(json.dumps(obj, sort_keys=True).encode()).hexdigest()[:8]


def model_config(grid: dict, size: str):
    """The GPTConfig of a grid size (meta device: no memory)."""
    from ..data import get_tokenizer
    from ..model import preset_config

    sz = grid["sizes"][size]
    vocab = get_tokenizer(grid["tokenizer"]).vocab_size
    return preset_config(sz["preset"], block_size=grid["block_size"], vocab_size=vocab,
                         **sz["overrides"])


def n_params(grid: dict, size: str) -> int:
    import torch

    from ..model import GPT

    with torch.device("meta"):
        return GPT(model_config(grid, size)).num_params()


def pretrain_steps(grid: dict, size: str) -> int:
    """Declared steps, or the steps that give ``tokens_per_param`` tokens per parameter."""
    sz = grid["sizes"][size]
    # a budget size (budgets.expand_budgets): a multiple of its base's steps
    budget = sz.get("budget", 1.0)
    if "pretrain_steps" in sz:
        steps = max(1, round(sz["pretrain_steps"] * budget))
    else:
        tokens_per_step = grid["pretrain"]["batch_size"] * grid["block_size"]
        steps = max(1,
                    round(budget * sz["tokens_per_param"] * n_params(grid, size) / tokens_per_step))
    if steps > MAX_STEPS:  # checked before the plan sums FLOPs step by step
        raise MiniSPDFError(f"grid {grid.get('name', '')}: size {size} pre-trains for {steps:,} "
                            f"steps, more than "
                            f"{MAX_STEPS:,} ({STEPS_HINT}): declare fewer steps, a smaller budget "
                            f"or tokens_per_param")
    return steps


def flop_ratio(grid: dict, size: str, sparsity: float) -> float:
    """Sparse / dense training FLOPs per step at the grid's context length."""
    from ..flops import flop_report

    r = flop_report(model_config(grid, size), sparsity=sparsity, seq_len=grid["block_size"])
    return r.train_sparse / r.train_dense


# ------------------------------------------------------------------ a job: its settings, its spec
# A job's settings objects are made here, once, from the grid (grids.train_config translates its
# warmup_frac), and reach spdf.pretrain / spdf.finetune unchanged but for the device. Its spec is
# what names it (a hash of every setting that affects the result): the keys keep their old names
# (``steps`` is the run's ``max_steps``), so the committed studies keep their names.
TRAIN_SPEC = ("batch_size", "lr", "weight_decay", "eval_iters", "warmup_frac")  # in every spec


def _train_spec(table: dict, t: TrainConfig) -> dict:
    """The spec of a job's training: the seed, steps and warmup it got, and the grid's other
    settings (those a committed grid gives by the names above, any other one by its own)."""
    return {"seed": t.seed, "steps": t.max_steps, "batch_size": t.batch_size, "lr": t.lr,
            "weight_decay": t.weight_decay, "warmup_steps": t.warmup_steps,
            "eval_iters": t.eval_iters, **{k: v for k, v in table.items() if k not in TRAIN_SPEC}}


def size_model(grid: dict, size: str) -> ModelConfig:
    sz = grid["sizes"][size]
    return ModelConfig(preset=sz["preset"], tokenizer=grid["tokenizer"],
                       arch={"block_size": grid["block_size"], **sz["overrides"]})


def pretrain_job(grid: dict, size: str, arm: dict, seed: int) -> dict:
    """``{"name", "spec", "settings"}``: settings, the keywords of :func:`minispdf.spdf.pretrain`
    but ``run``."""
    sz = grid["sizes"][size]
    steps = pretrain_steps(grid, size)
    sparsity = arm["sparsity"]
    if arm["equal_flops"]:  # dense, for the FLOPs of the sparse run: fewer steps
        steps, sparsity = max(1, round(steps * flop_ratio(grid, size, arm["sparsity"]))), 0.0
    sched = {}
    if arm.get("schedule", "static") != "static" or arm.get("dense_tail"):  # static: old hashes
        sched = {"schedule": schedule_settings(grid, arm)}
    mask = SparsityConfig(sparsity, mask_seed=seed, **sched.get("schedule", {}))
    settings = {"pretraining": PretrainConfig(data=grid["corpus"]),
                "model_config": size_model(grid, size), "sparsity_config": mask,
                "training": train_config(grid["pretrain"], steps, seed)}
    spec = {"size": size, "preset": sz["preset"], "overrides": sz["overrides"],
            "block_size": grid["block_size"], "corpus": grid["corpus"],
            "tokenizer": grid["tokenizer"], "sparsity": sparsity,
            **_train_spec(grid["pretrain"], settings["training"]), **sched}
    return {"name": pretrain_name(spec), "spec": spec, "settings": settings}


def pretrain_spec(grid: dict, size: str, arm: dict, seed: int) -> dict:
    return pretrain_job(grid, size, arm, seed)["spec"]


def schedule_settings(grid: dict, arm: dict) -> dict:
    """The mask-schedule settings of a pre-training arm: its kind, and the grid's ``[schedules]``
    values that apply to it (the rest are ``minispdf pretrain``'s defaults)."""
    table = grid.get("schedules", {})
    kind = arm["schedule"]
    keys = [k for k in applies_to(kind) if k not in ARM_SETS]
    out = {"schedule": kind, **{k: table[k] for k in keys if k in table}}
    if arm["nm"]:
        out["nm"] = arm["nm"]
    if arm["dense_tail"]:
        out["dense_from"] = table.get("dense_from", VSPDF_DENSE_FROM)
    return out


def pretrain_name(spec: dict) -> str:
    kind = spec.get("schedule", {}).get("schedule", "")
    tail = "-vspdf" if spec.get("schedule", {}).get("dense_from") else ""
    return (f"{spec['size']}-s{round(100 * spec['sparsity']):02d}"
            f"{('-' + kind) if kind not in ('', 'static') else ''}"
            f"{tail}-{spec['steps']}steps-seed{spec['seed']}-{_hash(spec)}")


def cell_job(grid: dict, size: str, task: str, set_name: str, arm: dict, seed: int,
             pre: str | None) -> dict:
    """``{"name", "spec", "settings"}``: settings, the model and training keywords of
    :func:`minispdf.spdf.finetune` (a pre-trained cell's architecture is its checkpoint's); the
    task and the checkpoint come at run time."""
    t, sz = grid["tasks"][task], grid["sizes"][size]
    training = train_config(grid["finetune"], sz["finetune_steps"], seed)
    model = size_model(grid, size) if pre is None else ModelConfig(tokenizer=grid["tokenizer"])
    spec = {"size": size, "preset": sz["preset"], "overrides": sz["overrides"],
            "block_size": grid["block_size"], "tokenizer": grid["tokenizer"], "task": task,
            "task_def": {k: t[k] for k in ("spec", "options", "eval_inputs", "max_new_tokens",
                                           "max_train_inputs",
                                           "train_refs")
                         if k in t},
            "set": set_name, "set_frac": grid["sets"][set_name], "arm": arm["arm"],
            "keep_masks": arm["keep_masks"],
            "pretrain": pre, **_train_spec(grid["finetune"], training)}
    name = f"{task}-{size}-{set_name}-{arm['arm']}-seed{seed}-{_hash(spec)}"
    return {"name": name, "spec": spec, "settings": {"model_config": model, "training": training}}


def plan(grid: dict) -> tuple[list[dict], list[dict]]:
    """(pre-training jobs, cells), each ``{"name", "spec"}``; cells carry their pre-training's name.

    Seeds are outermost, so an interrupted run has whole seeds done rather than a ragged grid.
    """
    pretrains: dict[str, dict] = {}
    cells: dict[str, dict] = {}
    first = grid.get("first_seed", 0)
    for i in range(max(b["seeds"] for b in grid["blocks"])):
        seed = first + i
        for block in grid["blocks"]:
            if i >= block["seeds"]:
                continue
            for size in block["sizes"]:
                for arm_name in block["arms"]:
                    arm = parse_arm(arm_name)
                    pre = None
                    if arm["pretrained"]:
                        job = pretrain_job(grid, size, arm, seed)
                        pre = job["name"]
                        pretrains.setdefault(pre, job)
                    for task in block["tasks"]:
                        for set_name in block["sets"]:
                            job = cell_job(grid, size, task, set_name, arm, seed, pre)
                            cells.setdefault(job["name"], job)
    return list(pretrains.values()), list(cells.values())


def distinct_seen(n_pairs: int, draws: int) -> float:
    """Expected number of distinct pairs among ``draws`` uniform draws with replacement."""
    return n_pairs * (1 - (1 - 1 / n_pairs) ** draws) if n_pairs else 0.0


def training_flops(grid: dict, pretrains: list[dict], cells: list[dict], ft_tokens: dict) -> float:
    """Theoretical training FLOPs of the whole grid (pre-training at its density, fine-tuning
    dense);
    ``ft_tokens[(task, set)]`` is the mean length of a fine-tuning pair."""
    from ..flops import flop_report

    from ..flops import pretraining_flops

    total = 0.0
    for p in pretrains:
        s = p["spec"]
        sp = p["settings"]["sparsity_config"]
        schedule = sp.make_schedule(s["steps"]) if s["sparsity"] else None
        total += pretraining_flops(schedule, model_config(grid, s["size"]), s["batch_size"],
                                   grid["block_size"], max_steps=s["steps"])["flops"]
    for c in cells:
        s = c["spec"]
        T = max(1, round(ft_tokens[s["task"], s["set"]]))
        r = flop_report(model_config(grid, s["size"]), sparsity=0.0, seq_len=T)
        total += s["steps"] * s["batch_size"] * r.train_dense
    return total


def describe(grid: dict, tasks: dict | None, pretrains: list, cells: list, est_s: float | None,
             flops: float | None, todo: tuple[int, int], jobs: int) -> str:
    """The plan in words: sizes, blocks, tasks, the distinct pairs each set shows, jobs and cost."""
    lines = [f"study grid {grid['name']!r}: {grid['description']}"]
    for k, v in grid["sizes"].items():
        n, steps = n_params(grid, k), pretrain_steps(grid, k)
        tpp = steps * grid["pretrain"]["batch_size"] * grid["block_size"] / n
        lines.append(f"  size {k}: {n / 1e6:.2f}M parameters, {steps} pre-training steps "
                     f"({tpp:.0f} tokens per "
                     f"parameter), {v['finetune_steps']} fine-tuning steps")
    for b in grid["blocks"]:
        lines.append(f"  block: {', '.join(b['sizes'])} x tasks {', '.join(b['tasks'])} x sets "
                     f"{', '.join(b['sets'])}"
                     f" x arms {', '.join(b['arms'])} x {counted(b['seeds'], 'seed')}")
    for key, t in grid["tasks"].items():
        info = tasks[key]["info"] if tasks else None
        lines.append(f"  task {key}: {t.get('about', t['spec'])}" + (
            f"; {info['n_train_inputs']} train inputs ({info['n_train_pairs']} pairs), "
            f"{info['n_test_inputs']} "
            "test inputs evaluated" if info else ""))
    if tasks:
        from .grid_tasks import task_for

        for task, set_name, size in sorted({(c["spec"]["task"], c["spec"]["set"], c["spec"]["size"])
                                            for c in cells}):
            sub = task_for(tasks[task], grid["sets"][set_name], task)
            pairs = sum(len(e.references) for e in sub.train)
            draws = grid["sizes"][size]["finetune_steps"] * grid["finetune"]["batch_size"]
            lines.append(f"  set {set_name} of {task} ({size}): {len(sub.train)} inputs, "
                         f"~{distinct_seen(pairs, draws):.0f}"
                         f" distinct pairs seen in {draws} draws")
    lines.append(f"  jobs: {len(pretrains)} pre-training runs ({todo[0]} to run), {len(cells)} "
                 f"fine-tuning cells "
                 f"({todo[1]} to run), {jobs} at a time")
    if flops is not None:
        lines.append(f"  training FLOPs of the whole grid: {flops:.3g} (theoretical)")
    if est_s is not None:
        lines.append(f"  estimated time: {fmt_duration(est_s)} (a cost model timed on this machine "
                     f"just now; other "
                     "load makes it slower)")
    else:
        tflops = grid.get("assumed_tflops", 300)
        lines.append(f"  estimated time: "
                     f"{fmt_duration(flops / (tflops * 1e12)) if flops else 'unknown'} at an "
                     f"ASSUMED {tflops} TFLOP/s sustained (bf16 on one current GPU at ~30% of its "
                     f"peak; small models reach "
                     "less, so read it as a lower bound); not run here")
    return "\n".join(lines)


def fmt_duration(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "unknown"
    if seconds < 90:
        return f"{seconds:.0f} s"
    return f"{seconds / 60:.1f} min" if seconds < 7200 else f"{seconds / 3600:.1f} h"


# ------------------------------------------------------------------------------ cost estimate


def mean_pair_tokens(tok, examples, block_size: int) -> float:
    from ..tasks import SEPARATOR, pair_length

    sep = len(tok.encode(SEPARATOR))
    lens = [min(block_size, pair_length(len(tok.encode(e.input)), len(tok.encode(r)), sep))
            for e in examples for r in e.references]
    return sum(lens) / len(lens) if lens else float(block_size)


def _time_steps(model, opt, x, n: int = 4) -> float:
    """Median seconds of a training step (fwd, bwd, masking, AdamW) after one warm-up step."""
    import contextlib
    import statistics
    import time

    from ..train import finish_step, forward_backward

    times = []
    for i in range(n + 1):
        t0 = time.perf_counter()
        forward_backward(model, x, x, None, 1, contextlib.nullcontext)
        finish_step(model, opt, 1.0)
        if i:
            times.append(time.perf_counter() - t0)
    return statistics.median(times)


def calibrate(grid: dict, tasks: dict) -> dict:
    """Seconds per pre-training step, fine-tuning step and decoded token of every size, timed on
    this CPU with one thread (what each parallel job uses). A model, not a measurement."""
    import time

    import torch

    from ..data import get_tokenizer
    from ..evaluate import evaluate_task
    from ..model import GPT
    from ..sparsity import sparsify
    from ..train import TrainConfig, make_optimizer

    tok = get_tokenizer(grid["tokenizer"])
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    out = {}
    try:
        for size in grid["sizes"]:
            torch.manual_seed(0)
            model = GPT(model_config(grid, size))
            sparsify(model, 0.5)  # the masking work is included
            opt = make_optimizer(model, TrainConfig())
            x = torch.randint(tok.vocab_size, (grid["pretrain"]["batch_size"], grid["block_size"]))
            rec = {"pretrain_step_s": _time_steps(model, opt, x), "finetune_step_s": {},
                   "decode": {}}
            for key, entry in tasks.items():
                T = max(2, round(mean_pair_tokens(tok, entry["train"], grid["block_size"])))
                xf = torch.randint(tok.vocab_size, (grid["finetune"]["batch_size"], T))
                rec["finetune_step_s"][key] = _time_steps(model, opt, xf, n=3)
                probe = entry["test"][:32]
                t0 = time.perf_counter()
                # an untrained model decodes all 8
                evaluate_task(model, tok, probe, max_new_tokens=8)
                rec["decode"][key] = {"per_token_s": (time.perf_counter() - t0) / (8 * len(probe)),
                                      "n_probe": len(probe)}
            out[size] = rec
    finally:
        torch.set_num_threads(threads)
    return out


def estimate(grid: dict, tasks: dict, calib: dict, pretrains: list[dict],
             cells: list[dict]) -> dict:
    """Estimated single-thread seconds of every job; decoding counted at ``max_new_tokens`` (an
    upper
    bound: a model that learnt the task stops at its end-of-text)."""
    est = {}
    for p in pretrains:
        s = p["spec"]
        est[p["name"]] = (calib[s["size"]]["pretrain_step_s"] * (s["steps"] + s["eval_iters"] / 3)
                          + 1.0)
    for c in cells:
        s = c["spec"]
        cal, n_eval = calib[s["size"]], len(tasks[s["task"]]["test"])
        train_s = cal["finetune_step_s"][s["task"]] * (s["steps"] + s["eval_iters"])
        eval_s = cal["decode"][s["task"]]["per_token_s"] * n_eval * s["task_def"]["max_new_tokens"]
        est[c["name"]] = train_s + eval_s + 1.0
    return est
