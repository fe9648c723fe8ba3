"""``minispdf demo``: the whole SPDF recipe at small scale, on built-in data, in minutes on a CPU.

1. Pre-train the same GPT dense, 50% sparse and 75% sparse on the built-in corpus (English
   prose that ships with Python), with identical data order and hyperparameters.
2. Fine-tune each one densely on the built-in restaurant data-to-text task (SPDF), the 75% one
   also with its masks kept (SPSF), and a model with no pre-training at all (from scratch).
3. Evaluate every arm on the task's test inputs: greedy decoding, multi-reference BLEU, and the
   perplexity of the references.

It writes ``results.json``, ``results.md`` (the table) and ``loss_vs_flops.png`` into the run
folder, built in a temporary folder that is renamed into place only when everything is done:
an interrupted demo leaves no half-written results and never touches an earlier run.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time

from .checkpoint import check_out_folder, usual_permissions
from .errors import MiniSPDFError

# Two scales: the default fits in ~10 minutes on a 2-core laptop CPU; quick is a smoke test.
SCALES = {
    # nano with lr 3e-3 learns the task on a CPU in minutes; tiny at 1e-3 does not (notebooks' finding)
    "default": dict(preset="nano", block_size=256, batch_size=8, pretrain_steps=1500, finetune_steps=600,
                    eval_inputs=100, max_new_tokens=200, n_train=2000, warmup_steps=50, lr=3e-3),
    "quick": dict(preset="nano", block_size=256, batch_size=8, pretrain_steps=60, finetune_steps=40,
                  eval_inputs=16, max_new_tokens=120, n_train=400, warmup_steps=5, lr=1e-3),
}
SPARSITIES = (0.0, 0.5, 0.75)
# The demo task: E2E-like restaurant descriptions, 3-5 slots, varied wording, 3-5 references each.
TASK_OPTIONS = dict(min_slots=3, max_slots=5, wording="varied")


def _arm_name(sparsity: float) -> str:
    return "dense" if sparsity == 0 else f"sparse{round(sparsity * 100)}"


def _check_scale(scale: dict) -> None:
    """Refuse, before ten minutes of pre-training, settings the evaluation would refuse later."""
    from .model import preset_config
    from .spdf import default_tokenizer

    for key in ("pretrain_steps", "finetune_steps", "eval_inputs", "max_new_tokens", "n_train", "batch_size"):
        if scale[key] < 1:
            raise MiniSPDFError(f"--{key} {scale[key]}: give a positive integer")
    preset_config(scale["preset"], block_size=scale["block_size"])  # a known preset, block_size >= 1 etc.
    if default_tokenizer(scale["preset"]) != "char":
        raise MiniSPDFError(f"--preset {scale['preset']}: the demo uses the byte-level tokenizer; choose a "
                            "small preset (nano, tiny, mini, small) or use `minispdf pretrain` / `finetune`")


def run_demo(out: str = "runs/demo", quick: bool = False, overwrite: bool = False, seed: int = 0,
             device: str = "auto", progress: bool = True, log=print, **scale_overrides) -> dict:
    """Run the demo; returns the results dict (also written to ``out/results.json``)."""
    from .evaluate import evaluate_task
    from .spdf import finetune, pretrain, write_json
    from .tasks import TaskBatches, load_task

    scale = dict(SCALES["quick" if quick else "default"])
    unknown = set(scale_overrides) - set(scale)
    if unknown:
        raise MiniSPDFError(f"unknown demo setting(s) {', '.join(sorted(unknown))}: choose from {', '.join(scale)}")
    scale.update({k: v for k, v in scale_overrides.items() if v is not None})
    _check_scale(scale)
    task = load_task("builtin", seed=seed, n_train=scale["n_train"], **TASK_OPTIONS)
    TaskBatches(_tokenizer(), task, scale["block_size"], scale["batch_size"]).check()  # fits the context?
    check_out_folder(out)
    if os.path.exists(out) and not overwrite:
        raise MiniSPDFError(f"{out} already exists: pass --overwrite to replace it (only once the new demo has "
                            "finished) or choose another --out")
    parent = os.path.dirname(os.path.abspath(out))
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=".demo-tmp-", dir=parent)
    usual_permissions(tmp)
    t0 = time.time()
    try:
        common = dict(preset=scale["preset"], block_size=scale["block_size"], batch_size=scale["batch_size"],
                      warmup_steps=scale["warmup_steps"], seed=seed, device=device, progress=progress)
        train_common = {k: v for k, v in common.items() if k not in ("preset", "block_size")}
        arms, curves = [], {}
        pre = {}
        for s in SPARSITIES:
            name = _arm_name(s)
            log(f"[demo] pre-training {name} ({scale['pretrain_steps']} steps)")
            r = pretrain(sparsity=s, data="builtin", max_steps=scale["pretrain_steps"], lr=scale["lr"],
                         eval_interval=max(1, scale["pretrain_steps"] // 6), eval_iters=10,
                         out=os.path.join(tmp, f"pretrain-{name}"), **common)
            pre[s] = r
            curves[name] = [(h["flops"], h["loss"]) for h in r["history"] if "loss" in h]
        dense_flops = pre[0.0]["flops"]

        finetunes = [(s, False) for s in SPARSITIES] + [(0.75, True), (None, False)]
        for s, keep in finetunes:
            if s is None:
                label, init = "scratch (no pre-training)", None
            else:
                label = f"{_arm_name(s)} -> {'sparse (SPSF)' if keep else 'dense (SPDF)' if s else 'dense'}"
                init = os.path.join(tmp, f"pretrain-{_arm_name(s)}")
            log(f"[demo] fine-tuning {label} ({scale['finetune_steps']} steps)")
            folder = os.path.join(tmp, f"finetune-{'scratch' if s is None else _arm_name(s)}{'-spsf' if keep else ''}")
            ft_kwargs = dict(train_common, max_steps=scale["finetune_steps"], lr=scale["lr"], weight_decay=0.01,
                             eval_interval=0, eval_iters=10, out=folder)
            if s is None:
                ft_kwargs.update(preset=scale["preset"], block_size=scale["block_size"])
            f = finetune(init_from=init, task=task, keep_masks=keep, **ft_kwargs)
            ev = evaluate_task(f["model"], _tokenizer(), task.test, limit=scale["eval_inputs"],
                               max_new_tokens=scale["max_new_tokens"],
                               predictions_path=os.path.join(folder, "predictions.jsonl"))
            write_json(os.path.join(folder, "metrics.json"), ev)
            arms.append(dict(
                arm=label, pretrain_sparsity=s, finetune="sparse" if keep else "dense",
                pretrain_flops=pre[s]["flops"] if s is not None else 0.0,
                pretrain_flops_x_dense=pre[s]["flops"] / dense_flops if s is not None else 0.0,
                pretrain_val_loss=pre[s]["val_loss"] if s is not None else None,
                finetune_val_loss=f["val_loss"], test_loss=ev["loss"], test_perplexity=ev["perplexity"],
                bleu=ev["bleu"], n_test_inputs=ev["n_inputs"],
                sample=_first_prediction(os.path.join(folder, "predictions.jsonl")),
            ))
        results = dict(scale="quick" if quick else "default", settings=scale, task=task.description,
                       sparsities=list(SPARSITIES), arms=arms, seconds=round(time.time() - t0, 1),
                       device=pre[0.0]["device"])
        write_json(os.path.join(tmp, "results.json"), results)
        with open(os.path.join(tmp, "results.md"), "w") as fh:
            fh.write(format_table(results) + "\n")
        plot_loss_vs_flops(curves, os.path.join(tmp, "loss_vs_flops.png"),
                           title=f"Sparse pre-training, {scale['preset']} preset, built-in corpus")
        if os.path.exists(out):  # --overwrite: replace the old demo only now that the new one is complete
            shutil.rmtree(out)
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    results["out"] = out
    return results


def _tokenizer():
    from .data import get_tokenizer

    return get_tokenizer("char")


def _first_prediction(path: str) -> dict | None:
    with open(path) as f:
        line = f.readline()
    return json.loads(line) if line else None


def format_table(results: dict) -> str:
    head = ("| arm | pre-training FLOPs (x dense) | pre-training val loss | fine-tune val loss "
            "| test loss | test perplexity | BLEU |")
    rows = [head, "|" + "---|" * 7]
    for a in results["arms"]:
        pv = f"{a['pretrain_val_loss']:.3f}" if a["pretrain_val_loss"] is not None else "-"
        bleu = f"{a['bleu']:.1f}" if a["bleu"] is not None else "-"
        rows.append(f"| {a['arm']} | {a['pretrain_flops_x_dense']:.2f} | {pv} | {a['finetune_val_loss']:.3f} "
                    f"| {a['test_loss']:.3f} | {a['test_perplexity']:.2f} | {bleu} |")
    return "\n".join(rows)


def plot_loss_vs_flops(curves: dict, path: str, title: str = "") -> None:
    """Training loss against cumulative training FLOPs (sparse count), one line per arm."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for name, pts in curves.items():
        if pts:
            xs, ys = zip(*pts)
            ax.plot(xs, _smooth(ys), label=name)
    ax.set_xlabel("training FLOPs (theoretical; sparse matmuls counted at their density)")
    ax.set_ylabel("training loss (smoothed)")
    ax.set_xscale("log")
    ax.set_title(title, fontsize=10)
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _smooth(ys, alpha: float = 0.9) -> list[float]:
    out, avg = [], None
    for y in ys:
        avg = y if avg is None else alpha * avg + (1 - alpha) * y
        out.append(avg)
    return out
