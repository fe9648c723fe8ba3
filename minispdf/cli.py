"""``python -m minispdf <command>`` / ``minispdf <command>``: the kit from a terminal.

Each command parses ``--key value`` settings against its schema (see ``config``), calls the
library, and prints a human summary or, with ``--json``, one JSON object. A mistake the user
can fix prints ``error: <what and how to fix>`` and exits with status 2, never a traceback.
"""

from __future__ import annotations

import json
import os
import sys

from . import config as cfg_lib
from .errors import MiniSPDFError
from .study.grids import REAL_TASKS
from .train import TrainConfig

TRAIN_HELP = {
    "max_steps": "optimizer steps", "batch_size": "sequences per micro-batch", "lr": "peak learning rate",
    "grad_accum": "micro-batches per step", "warmup_steps": "linear warmup steps",
    "eval_interval": "steps between evaluations (0: only at the end)", "device": "auto|cpu|cuda|mps",
    "compile": "torch.compile the model", "stop_after": "stop early at this step (resume later)",
}
TRAIN_SCHEMA = cfg_lib.schema_from_dataclass(TrainConfig, helps=TRAIN_HELP)
MODEL_SCHEMA = {
    "preset": (str, "tiny", "model size: nano|tiny|mini|small|gpt2|gpt2-medium|gpt3-xl|gpt3-6.7b"),
    "n_layer": (int, None, "override the preset's layers"),
    "n_head": (int, None, "override the preset's heads"),
    "n_embd": (int, None, "override the preset's width"),
    "block_size": (int, None, "override the preset's context length"),
    "dropout": (float, None, "dropout probability"),
    "tokenizer": (str, None, "char (byte-level, 257 tokens) or gpt2 (BPE); default from the preset"),
}
SPARSITY_SCHEMA = {
    "sparsity": (float, 0.0, "fraction of q/k/v, attention-out and MLP weights held at zero"),
    "method": (str, "random", "random|magnitude"),
    "distribution": (str, "uniform", "uniform (the paper's) | erk"),
    "scope": (str, "tensor", "tensor | global (magnitude only)"),
    "include": (str, None, "regex of parameter names to sparsify (default: block matrices)"),
    "mask_seed": (int, 0, "seed of random masks"),
}
RUN_SCHEMA = {"out": (str, None, "run folder for ckpt.pt, log.jsonl, result.json")}
RUN_FLAGS = {"json": False, "resume": False, "overwrite": False}

COMMANDS: dict = {}


def command(name: str, help_: str):
    def deco(fn):
        COMMANDS[name] = (fn, help_)
        return fn
    return deco


def _emit(as_json: bool, obj: dict, text: str) -> None:
    if int(os.environ.get("RANK", "0")) != 0:  # under torchrun, one result (rank 0's), not one per rank
        return
    if as_json:
        print(json.dumps(obj, indent=2, default=str))
    else:
        print(text)


def _settings(argv, schema, flags=None, usage=""):
    if "--help" in argv or "-h" in argv:
        print(usage + "\n\nsettings:\n" + cfg_lib.describe(schema)
              + ("\n\nswitches: " + " ".join("--" + f for f in flags) if flags else ""))
        raise SystemExit(0)
    return cfg_lib.parse_settings(argv, schema, flags)


def _summary(result: dict) -> dict:
    return {k: v for k, v in result.items() if k not in ("model", "history")}


@command("prepare", "tokenize a corpus into data/ once and print its size and unigram entropy (or a task's size)")
def cmd_prepare(argv):
    from .data import corpus_stats, describe_sources

    schema = {"data": (str, None, "corpus: builtin (default) | shakespeare | tinystories | wikitext2 | wikitext103 "
                                  "| fineweb-edu | PATH.txt"),
              "tokenizer": (str, "char", "char | gpt2"),
              "max_chars": (int, None, "cap on the characters read (hub corpora: 50M unless given)"),
              "task": (str, None, "or load a task and count its splits: builtin | e2e[:PATH] | dart[:PATH] | "
                                  "webnlg:PATH | curation[:PATH]")}
    s = _settings(argv, schema, {"json": False}, "minispdf prepare [--data NAME|PATH] [--tokenizer char|gpt2] "
                  "[--json]\n       minispdf prepare --task SPEC [--json]\n\ncorpora:\n" + describe_sources()
                  + "\n\nsee data/README.md for sizes, licences and where the files come from")
    if s["task"] is not None:
        if s["data"] is not None:
            raise MiniSPDFError("prepare takes --data or --task, not both: run it once for each")
        return _prepare_task(s["task"], s["json"])
    st = corpus_stats(s["data"] or "builtin", s["tokenizer"], s["max_chars"])
    tok = st["tokens"]
    _emit(s["json"], st,
          f"{st['source']} with the {st['tokenizer']} tokenizer, in {st['folder']}\n"
          f"  characters       {st['characters']:,}\n"
          f"  tokens           {tok['train']:,} train + {tok['val']:,} val = {tok['train'] + tok['val']:,}\n"
          f"  vocabulary used  {st['vocab_used']:,} of {st['vocab_size']:,} ids\n"
          f"  unigram entropy  {st['unigram_entropy']:.4f} nats/token (train split: the loss of "
          "predicting by token frequency alone)")


def _prepare_task(spec: str, as_json: bool) -> None:
    from .tasks import resolve_task, task_stats

    st = task_stats(resolve_task(spec))
    rows = [f"  {split:<5} {n['inputs']:>7,} inputs {n['references']:>8,} references {n['characters']:>12,} characters"
            for split, n in st["splits"].items()]
    _emit(as_json, st, f"{st['task']} (metric {st['metric']}): {st['description']}\n" + "\n".join(rows))


@command("pretrain", "pre-train a GPT, sparse with --sparsity S (SPDF phase 1)")
def cmd_pretrain(argv):
    from .spdf import pretrain

    schema = {**MODEL_SCHEMA, **SPARSITY_SCHEMA, **TRAIN_SCHEMA, **RUN_SCHEMA,
              "data": (str, "builtin", "builtin | PATH.txt | shakespeare | tinystories | wikitext2 | wikitext103 | fineweb-edu"),
              "max_chars": (int, None, "cap on the characters read from a downloaded corpus"),
              "init": (str, "scratch", "scratch | gpt2 (OpenAI weights; needs transformers + network)")}
    s = _settings(argv, schema, RUN_FLAGS, "minispdf pretrain [--preset tiny] [--sparsity 0.75] [--out DIR] ...")
    as_json = s.pop("json")
    if s.get("progress") and as_json:
        s["progress"] = False
    result = pretrain(**s)
    fr = result["flop_report"]
    summary = _summary(result)
    _emit(as_json, summary,
          f"pre-trained {result['step']} steps at {fr['sparsity']:.0%} sparsity: train loss "
          f"{result['train_loss']:.4f}, val loss {result['val_loss']:.4f}\n"
          f"training FLOPs: {result['flops']:.4g} (dense-equivalent {result['flops_dense']:.4g}, "
          f"{fr['reduction']:.2f}x fewer)\n{fr['note']}"
          + (f"\nrun folder: {result['out_dir']}" if result["out_dir"] else ""))


@command("finetune", "fine-tune a checkpoint: dense by default (SPDF), --keep_masks for SPSF")
def cmd_finetune(argv):
    from .spdf import finetune

    schema = {**MODEL_SCHEMA, **TRAIN_SCHEMA, **RUN_SCHEMA,
              "preset": (str, None, "model size for a run from scratch (default tiny); with --init_from "
                                    "the checkpoint's, and a preset given must match it"),
              "init_from": (str, None, "checkpoint or run folder to start from (none: from scratch)"),
              "task": (str, None, "downstream task: builtin | e2e[:PATH] | dart[:PATH] | webnlg:PATH | curation[:PATH]"),
              "data": (str, None, "or continue language modelling on this corpus"),
              "keep_masks": (bool, False, "keep the pre-training masks (sparse fine-tuning, SPSF)"),
              "train_file": (str, None, "with a bare --task name: the file to fine-tune on (e.g. devset.csv)"),
              "val_file": (str, None, "with a bare --task name: the validation file")}
    s = _settings(argv, schema, RUN_FLAGS, "minispdf finetune --init_from RUN --task builtin [--keep_masks] ...")
    as_json = s.pop("json")
    if as_json:
        s["progress"] = False
    result = finetune(**s)
    _emit(as_json, _summary(result),
          f"fine-tuned ({result['mode']}) {result['step']} steps: train loss {result['train_loss']:.4f}, "
          f"val loss {result['val_loss']:.4f}" + (f"\nrun folder: {result['out_dir']}" if result["out_dir"] else ""))


@command("flops", "per-component training FLOPs, dense and sparse, and the reduction")
def cmd_flops(argv):
    from .flops import flop_report, flop_table
    from .model import preset_config

    schema = {k: MODEL_SCHEMA[k] for k in ("preset", "n_layer", "n_head", "n_embd", "block_size")}
    schema.update({"sparsity": SPARSITY_SCHEMA["sparsity"],
                   "vocab_size": (int, None, "override the preset's vocabulary"),
                   "seq_len": (int, None, "sequence length (default: the context length)"),
                   "count_embedding": (bool, False, "count the embedding lookup as 2*T*V*d (Chinchilla)")})
    s = _settings(argv, schema, {"json": False, "table": False},
                  "minispdf flops --preset gpt3-xl --sparsity 0.75 [--table] [--json]")
    if s["table"]:
        rows = flop_table(seq_len=s["seq_len"], count_embedding=s["count_embedding"])
        text = "\n".join(f"{r['preset']:<8} T={r['seq_len']:<5} sparsity {r['sparsity']:>4.0%}: "
                         f"{r['train_dense']:.3e} dense, {r['train_sparse']:.3e} sparse FLOPs/seq, "
                         f"{r['reduction']:.2f}x" for r in rows)
        _emit(s["json"], {"rows": rows}, text)
        return
    overrides = {k: s[k] for k in ("n_layer", "n_head", "n_embd", "block_size", "vocab_size") if s[k] is not None}
    report = flop_report(preset_config(s["preset"], **overrides), sparsity=s["sparsity"],
                         seq_len=s["seq_len"], count_embedding=s["count_embedding"])
    d = report.to_dict()
    d["preset"] = s["preset"]
    _emit(s["json"], d, report.format())


@command("bench", "time the training step dense vs masked; tokens/s, MFU, peak memory (--kernels: sparse kernels)")
def cmd_bench(argv):
    from .bench import bench, format_bench

    kernels = [a for a in argv if a.split("=")[0] == "--kernels"]
    if kernels and cfg_lib.convert("kernels", bool, kernels[-1].partition("=")[2] or "true"):
        return cmd_bench_kernels(argv)
    argv = [a for a in argv if a not in kernels]  # --kernels=false: the step bench
    schema = {"preset": (str, "tiny", "model size"), "sparsity": (float, 0.75, "masked arm's sparsity"),
              "batch_size": (int, 12, "sequences per step"), "block_size": (int, None, "context length"),
              "steps": (int, 30, "timed steps per arm (after warmup)"), "warmup": (int, 5, "untimed steps"),
              "device": (str, "auto", "auto|cpu|cuda|mps"), "compile": (bool, False, "torch.compile"),
              "dtype": (str, "auto", "auto (bf16 on CUDA, fp32 on CPU) | fp32 | bf16"),
              "peak_tflops": (float, None, "the device's peak, if not in the built-in table")}
    s = _settings(argv, schema, {"json": False}, "minispdf bench [--preset tiny] [--json]")
    as_json = s.pop("json")
    result = bench(**s)
    _emit(as_json, result, format_bench(result))


def cmd_bench_kernels(argv):
    from .kernels import format_kernel_bench, kernel_bench_presets

    schema = {"preset": (str, "tiny", "model size whose 4 masked matrix shapes are timed, or all"),
              "sparsities": (str, "0.5,0.75,0.9,0.95,0.99", "comma-separated sparsities"),
              "batch_size": (int, 12, "sequences per step (tokens = batch x block)"),
              "block_size": (int, None, "context length (default: the preset's)"),
              "repeats": (int, 9, "interleaved repeats (the median is reported)"),
              "device": (str, "auto", "auto|cpu|cuda|mps"), "dtype": (str, "auto", "auto (bf16 on CUDA) | fp32 | bf16"),
              "threads": (int, None, "CPU threads (default: torch's)"),
              "step": (bool, True, "also profile a dense training step and derive its speedups (Amdahl)"),
              "step_steps": (int, 3, "profiled training steps")}
    s = _settings(argv, schema, {"json": False, "kernels": True},
                  "minispdf bench --kernels [--preset tiny|all] [--sparsities 0.5,0.9] [--threads 1] [--json]")
    as_json = s.pop("json")
    s.pop("kernels")
    result = kernel_bench_presets(**s)
    _emit(as_json, result, format_kernel_bench(result))


@command("sample", "generate text from a checkpoint")
def cmd_sample(argv):
    import torch

    from .checkpoint import load_checkpoint
    from .data import get_tokenizer
    from .evaluate import check_tokenizer

    schema = {"ckpt": (str, None, "checkpoint or run folder"), "prompt": (str, "\n", "text to continue"),
              "max_new_tokens": (int, 200, "tokens to generate"), "temperature": (float, 0.8, "0 = greedy"),
              "top_k": (int, 50, "sample from the k most likely tokens"), "seed": (int, 0, "sampling seed"),
              "num_samples": (int, 1, "how many samples")}
    s = _settings(argv, schema, {"json": False}, "minispdf sample --ckpt RUN [--prompt TEXT]")
    if not s["ckpt"]:
        raise MiniSPDFError("sample needs --ckpt: the ckpt.pt or run folder that pretrain/finetune --out wrote")
    if not (s["temperature"] >= 0 and s["temperature"] != float("inf")):  # also refuses nan
        raise MiniSPDFError(f"--temperature {s['temperature']}: give a number >= 0 (0 = greedy)")
    for key in ("max_new_tokens", "top_k", "num_samples"):
        if s[key] < 1:
            raise MiniSPDFError(f"--{key} {s[key]}: give a positive integer")
    model, info = load_checkpoint(s["ckpt"])
    tok = get_tokenizer(info.get("tokenizer") or "char")
    check_tokenizer(model, tok)  # a damaged checkpoint can name a tokenizer its model cannot hold
    model.eval()
    gen = torch.Generator().manual_seed(s["seed"])
    # a terminal in another encoding hands Python undecodable bytes as surrogates: show them as U+FFFD
    s["prompt"] = s["prompt"].encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    ids = tok.encode(s["prompt"])
    if not ids:
        raise MiniSPDFError("--prompt is empty: give some text to continue")
    x = torch.tensor([ids] * s["num_samples"], dtype=torch.long)
    y = model.generate(x, s["max_new_tokens"], temperature=s["temperature"], top_k=s["top_k"],
                       eot_id=tok.eot_id, generator=gen)
    samples = [tok.decode(row[len(ids):].tolist()) for row in y]
    _emit(s["json"], {"prompt": s["prompt"], "samples": samples},
          "\n---\n".join(s["prompt"] + t for t in samples))


@command("evaluate", "decode a task's inputs with a checkpoint; BLEU, chrF++, TER, ROUGE, METEOR, perplexity")
def cmd_evaluate(argv):
    from .checkpoint import check_out_folder, load_checkpoint
    from .data import get_tokenizer
    from .evaluate import evaluate_task
    from .metrics import format_report, parse_metrics
    from .tasks import resolve_task, split_counts

    schema = {"ckpt": (str, None, "checkpoint or run folder"), "task": (str, "builtin", "task spec, as finetune"),
              "split": (str, "test", "train|val|test"), "decode": (str, "greedy", "greedy|beam"),
              "num_beams": (int, 4, "beams for --decode beam"), "max_new_tokens": (int, None, "default: fill the context"),
              "limit": (int, None, "evaluate only the first N inputs"),
              "test_file": (str, None, "with a bare --task name: the file to evaluate (e.g. testset_w_refs.csv)"),
              "predictions": (str, None, "where to write the predictions JSONL (default: RUN/predictions-SPLIT.jsonl)"),
              "metrics": (str, None, "comma-separated bleu,chrf,ter,rouge,meteor (default: the task's usual set)")}
    s = _settings(argv, schema, {"json": False}, "minispdf evaluate --ckpt RUN --task builtin [--decode beam]")
    if not s["ckpt"]:
        raise MiniSPDFError("evaluate needs --ckpt: the ckpt.pt or run folder that finetune --out wrote")
    if s["split"] not in ("train", "val", "test"):
        raise MiniSPDFError(f"--split {s['split']!r}: choose train, val or test")
    model, info = load_checkpoint(s["ckpt"])
    tok = get_tokenizer(info.get("tokenizer") or "char")
    task = resolve_task(s["task"], test_file=s["test_file"])
    metrics = parse_metrics(s["metrics"], task.name)  # a typo fails before the model decodes
    examples = getattr(task, s["split"])
    if not examples:
        raise MiniSPDFError(f"task {task.name} has no {s['split']} examples: choose another --split or task file")
    pred = s["predictions"]
    if pred is None:
        folder = s["ckpt"] if os.path.isdir(s["ckpt"]) else os.path.dirname(s["ckpt"]) or "."
        pred = os.path.join(folder, f"predictions-{s['split']}.jsonl")
    if os.path.isdir(pred):
        raise MiniSPDFError(f"--predictions {pred} is a folder: give a file path such as {pred}/predictions.jsonl")
    check_out_folder(os.path.dirname(os.path.abspath(pred)), "--predictions")
    result = evaluate_task(model, tok, examples, method=s["decode"], num_beams=s["num_beams"],
                           max_new_tokens=s["max_new_tokens"], limit=s["limit"], predictions_path=pred,
                           metric=task.metric, metrics="default" if s["metrics"] is None else metrics, task=task.name)
    result.update(task=task.name, split=s["split"], ckpt=s["ckpt"], read=task.description, counts=split_counts(task),
                  notes=task.notes + result.get("notes", []))
    _emit(s["json"], result, format_report(result, f"{task.name} {s['split']} ({s['decode']} decoding)")
          + f"\nread: {task.description}\npredictions: {pred}")


@command("score", "re-score a predictions JSONL (evaluate's, or one from elsewhere) with the same metrics")
def cmd_score(argv):
    from .evaluate import score_file
    from .metrics import format_report

    schema = {"metrics": (str, None, "comma-separated bleu,chrf,ter,rouge,meteor (default: the task's usual set)"),
              "task": (str, "", "task name for the default metrics (curation: ROUGE; others: all)")}
    usage_ = "minispdf score PREDICTIONS.jsonl [--metrics bleu,chrf,ter,rouge] [--json]"
    if not argv or argv[0].startswith("-"):
        if "--help" in argv or "-h" in argv:
            _settings(argv, schema, {"json": False}, usage_)
        raise MiniSPDFError(f"score needs a predictions file: {usage_}")
    s = _settings(argv[1:], schema, {"json": False}, usage_)
    result = score_file(argv[0], s["metrics"], task=s["task"])
    result["predictions_path"] = argv[0]
    _emit(s["json"], result, format_report(result, f"scored {argv[0]}"))


@command("demo", "the whole SPDF recipe at small scale on built-in data (--quick: < 1 minute)")
def cmd_demo(argv):
    from .demo import SCALE_KEYS, format_table, run_demo

    schema = {"out": (str, "runs/demo", "run folder"), "seed": (int, 0, "seed of the one run of every arm"),
              "device": (str, "auto", "auto|cpu|cuda|mps"), "jobs": (int, None, "parallel jobs (default: one per CPU core)"),
              **{k: (int, None, "scale override") for k in SCALE_KEYS}}
    s = _settings(argv, schema, {"json": False, "quick": False, "overwrite": False},
                  "minispdf demo [--quick] [--out runs/demo] [--overwrite]")
    as_json = s.pop("json")
    results = run_demo(log=(lambda *a: None) if as_json else print, **s)
    _emit(as_json, {k: v for k, v in results.items() if k not in ("pretrains", "rows")} | {"rows": results["rows"]},
          f"\nSPDF demo ({results['grid']['name']} grid, {results['timing']['wall_s']:.0f} s)\n"
          f"task: {next(iter(results['grid']['tasks'].values()))['about']}\n\n{format_table(results)}\n\n"
          f"written: {results['out']}/results.md, results.json, results.csv, claims.json, pretrain_loss_vs_flops.png")


@command("reproduce", "the reproduction study: a declared grid of arms, tasks, sizes and seeds, judged against the paper")
def cmd_reproduce(argv):
    from .study import GRIDS, resolve_grid, run_study
    from .study.report import FIGURES, headline_table

    schema = {"out": (str, None, "run folder (default runs/study-GRID)"),
              "grid": (str, None, f"{' | '.join(GRIDS)} (default: default; --quick means quick)"),
              "seeds": (int, None, "seeds per block (default: the grid's)"),
              "jobs": (int, None, "parallel jobs, one torch thread each (default: one per CPU core; 1 on a GPU)"),
              "device": (str, "auto", "auto | cpu | cuda | mps"),
              **{k: (str, None, f"add the real {k} task: {what}") for k, (what, _) in REAL_TASKS.items()}}
    s = _settings(argv, schema, {"quick": False, "json": False, "dry_run": False},
                  "minispdf reproduce [--quick | --grid NAME] [--out DIR] [--jobs N] [--dry-run] [--e2e DIR]")
    name = s["grid"] or ("quick" if s["quick"] else "default")
    if s["quick"] and name != "quick":
        raise MiniSPDFError(f"--quick and --grid {name} disagree: pass one of them")
    grid = resolve_grid(name, seeds=s["seeds"], real_tasks={k: s[k] for k in REAL_TASKS})
    out = s["out"] or f"runs/study-{name}"
    as_json = s["json"]

    def log(msg):
        print(msg, file=sys.stderr if as_json else sys.stdout, flush=True)

    results = run_study(grid, out, device=s["device"], jobs=s["jobs"], log=log, dry_run=s["dry_run"],
                        command="minispdf reproduce " + " ".join(argv))
    if s["dry_run"]:
        _emit(as_json, results, "(dry run: nothing was trained)")
        return
    _emit(as_json, {"out": out, "timing": results["timing"], "claims": results["claims"],
                    "flop_claim": results["flop_claim"]},
          f"\n{headline_table(results['claims'])}\n\nwritten to {out}: results.csv, claims.json, results.json, "
          f"summary.md, claims.md, README_section.md, {', '.join(FIGURES)}")


@command("assign", "course mode: student copies of the notebooks (student), grading (grade), sync check (check)")
def cmd_assign(argv):
    from .assignments import main as assign_main

    return assign_main(argv)


def usage() -> str:
    lines = ["usage: minispdf <command> [--key value ...] [--json]", "", "commands:"]
    lines += [f"  {name:<10} {help_}" for name, (_, help_) in COMMANDS.items()]
    lines += ["", "`minispdf <command> --help` lists a command's settings."]
    return "\n".join(lines)


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(usage())
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"error: unknown command {name!r}: choose one of {', '.join(COMMANDS)}", file=sys.stderr)
        return 2
    try:
        code = COMMANDS[name][0](rest)
    except MiniSPDFError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except (MemoryError, RuntimeError) as e:  # torch reports an allocation failure as a RuntimeError
        if isinstance(e, RuntimeError) and "can't allocate memory" not in str(e) and "out of memory" not in str(e):
            raise
        print("error: out of memory: use smaller settings (batch_size, block_size, num_samples, num_beams)",
              file=sys.stderr)
        return 2
    except OSError as e:  # the last net for I/O the commands do not check first (disk full, permissions)
        where = f" ({e.filename})" if getattr(e, "filename", None) else ""
        print(f"error: {e.strerror or e}{where}: check the path, its permissions and the free space", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: the last checkpoint (if any) is intact; continue with --resume", file=sys.stderr)
        return 130
    return int(code or 0)

