"""``minispdf demo``: the whole SPDF recipe at small scale, on built-in data, in minutes on a CPU.

The demo is the study's smallest grid (:data:`minispdf.study.GRIDS` ``["demo"]``), run by the
same runner: one seed of five arms on the built-in restaurant task.

1. Pre-train the same GPT dense, 50% sparse and 75% sparse on the built-in corpus (English
   prose that ships with Python), with identical initial weights, data order and settings.
2. Fine-tune each densely (``dense``, ``spdf50``, ``spdf75``), the 75% one also with its masks
   kept (``spsf75``), and a model with no pre-training at all (``scratch``).
3. Evaluate every arm on the task's test inputs: greedy decoding, multi-reference BLEU, and the
   perplexity of the references.

The run folder is built in a temporary folder renamed into place only when everything is done:
an interrupted demo leaves no half-written results and never touches an earlier run.
"""

from __future__ import annotations

import os

from dataclasses import asdict, dataclass, make_dataclass

from .checkpoint import check_out_folder
from .settings import MAX_STEPS, STEPS_HINT, Settings, device_setting, from_keywords, setting
from .errors import MiniSPDFError, counted
from .fileio import publish_folder, write_text, writer_lock

SCALE_KEYS = ("pretrain_steps", "finetune_steps", "eval_inputs", "max_new_tokens")
QUICK = {"pretrain_steps": 60, "finetune_steps": 40, "eval_inputs": 16, "max_new_tokens": 120}


@dataclass
class DemoConfig(Settings):
    """Demo."""
    quick: bool = setting(False, "the smallest scale: under a minute on a CPU")
    out: str = setting("runs/demo", "run folder", metavar="DIR")
    overwrite: bool = setting(False,
                              "replace an earlier demo in --out (once the new one has finished)")
    seed: int = setting(0, "seed of the one run of every arm")
    device: str = device_setting()
    jobs: int | None = setting(None, "parallel jobs (default: one per CPU core)")


# --pretrain_steps N, ...: the demo grid's scale, each left at the grid's unless given
DemoScale = make_dataclass("DemoScale",
                           [(k, int | None, setting(None, k.replace("_", " "), min=1, **(
    dict(max=MAX_STEPS, hint=STEPS_HINT) if k.endswith("_steps") else {}))) for k in SCALE_KEYS],
                           bases=(Settings,))


def demo_grid(quick: bool = False, seed: int = 0, **scale) -> dict:
    """The demo grid with its scale (``--quick`` or overrides of :data:`SCALE_KEYS`) applied."""
    from .study import resolve_grid

    grid = resolve_grid("demo")
    unknown = set(scale) - set(SCALE_KEYS)
    if unknown:
        raise MiniSPDFError(f"unknown demo setting(s) {', '.join(sorted(unknown))}: choose from "
                            f"{', '.join(SCALE_KEYS)}")
    scale = {**(QUICK if quick else {}), **{k: v for k, v in scale.items() if v is not None}}
    for key, value in scale.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise MiniSPDFError(f"--{key} {value}: give a positive integer")
    size, task = grid["sizes"]["nano"], grid["tasks"]["hard"]
    size.update({k: scale[k] for k in ("pretrain_steps", "finetune_steps") if k in scale})
    task.update({k: scale[k] for k in ("eval_inputs", "max_new_tokens") if k in scale})
    if quick:
        grid["name"], task["options"]["n_train"] = "demo --quick", 400
    grid["first_seed"] = seed
    return grid


def run_demo(settings: DemoConfig | None = None, scale=None, log=print, **keywords) -> dict:
    """Run the demo; returns the study results (also written to ``OUT/results.json``).

    The settings come as objects (:class:`DemoConfig`, :data:`DemoScale`: what the CLI passes)
    or as keywords named like their fields: ``run_demo(quick=True, out="runs/demo")``.
    """
    from .study import run_study

    s, sc = from_keywords(keywords, "demo", demo=(DemoConfig, settings), scale=(DemoScale, scale))
    grid = demo_grid(s.quick, s.seed, **asdict(sc))
    check_out_folder(s.out)
    # The lock guards the final name (publish_folder renames the finished demo into place); the
    # check that ``out`` is new runs once it is held (a `with A, B:` enters A before making B).
    with writer_lock(s.out, "demo"), publish_folder(_new_or_overwritten(s.out, s.overwrite)) as tmp:
        results = run_study(grid, tmp, device=s.device, jobs=s.jobs, log=log,
                            command="minispdf demo" + (" --quick" if s.quick else ""))
        write_text(os.path.join(tmp, "results.md"),
                   results_table(results) + "\n\n" + caption(results) + "\n")
    results["out"] = s.out
    return results


def _new_or_overwritten(out: str, overwrite: bool) -> str:
    """``out``, if it does not exist or may be replaced (the new demo replaces it only once
    finished)."""
    if os.path.exists(out) and not overwrite:
        raise MiniSPDFError(f"{out} already exists: pass --overwrite to replace it (only once the "
                            f"new demo has "
                            "finished) or choose another --out")
    return out


def results_table(results: dict) -> str:
    """One row per arm: pre-training cost and loss, then the downstream test loss and BLEU."""
    head = ("| arm | pre-training FLOPs (x dense) | pre-training val loss | test loss | "
            "test perplexity "
            "| BLEU |")
    rows = [head, "|" + "---|" * 6]
    for r in results["summary"]:
        flops = "0 (none)" if r["arm"] == "scratch" else f"{r['pretrain_flops_x_dense']:.2f}"
        pv = "-" if r["pretrain_val_loss"] is None else f"{r['pretrain_val_loss']:.3f}"
        ppl = [x["test_perplexity"] for x in results["rows"] if x["arm"] == r["arm"]]
        bleu = "-" if r["bleu"] is None else f"{r['bleu']:.1f}"
        rows.append(f"| {r['arm']} | {flops} | {pv} | {r['test_loss']:.3f} | "
                    f"{sum(ppl) / len(ppl):.2f} | {bleu} |")
    return "\n".join(rows)


def caption(results: dict) -> str:
    """How the table was made, from the results themselves: scale, time, machine, commit."""
    g, t, m = results["grid"], results["timing"], results["machine"]
    size, task = next(iter(g["sizes"].values())), next(iter(g["tasks"].values()))
    return (f"One seed of each arm (`{g['name']}` grid: {size['pretrain_steps']:,} "
            f"pre-training and "
            f"{size['finetune_steps']:,} fine-tuning steps of {g['pretrain']['batch_size']} x "
            f"{g['block_size']} "
            f"tokens, {task['eval_inputs']} test inputs, greedy decoding); {t['wall_s']:.0f} s in "
            f"the runner with "
            f"{counted(t['jobs'], 'job')} of {counted(t['threads'], 'thread')} on {m['cpu']} "
            f"({m['cores']} cores), "
            f"torch {m['torch']}, "
            f"commit `{results['commit']}`.")
