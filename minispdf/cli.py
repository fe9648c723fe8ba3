"""``python -m minispdf <command>`` / ``minispdf <command>``: the kit from a terminal.

One argparse parser with a subcommand per command. A command's options are generated from the
settings dataclasses it uses (``spdf.ModelConfig``, ``train.TrainConfig``, ... or the small ones
below); see ``config``. Each command calls the library and prints a human summary or, with
``--json``, one JSON object. A mistake the user can fix prints ``error: <what and how to fix>``
and exits with status 2, never a traceback.
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import asdict, dataclass, make_dataclass

from .bench.settings import BenchSettings, KernelSettings
from .config import Parser, Settings, add_config_option, add_settings, build, device_setting, parse, setting
from .tokenizers import TOKENIZERS
from .errors import Interrupted, MiniSPDFError
from .evaluate import EvaluateSettings, ScoreSettings
from .fileio import writer_lock
from .flops import FlopsSettings
from .model import GPTConfig
from .spdf import FinetuneConfig, ModelConfig, PretrainConfig, RunConfig, SparsityConfig
from .tasks import TASK_SPEC
from .train import TrainConfig

COMMANDS: dict = {}  # name -> (function, help, settings, epilog)


def command(name: str, help_: str, *settings, epilog=None):
    """Register ``fn(args)`` as ``minispdf name``; its options come from ``settings``: dataclasses,
    or ``(dataclass, options for config.add_settings)``."""
    def deco(fn):
        COMMANDS[name] = (fn, help_, settings, epilog)
        return fn
    return deco


def build_parser() -> tuple[Parser, dict]:
    """The ``minispdf`` parser and ``{command: its subparser}``."""
    parser = Parser(prog="minispdf", description="SPDF (sparse pre-training, dense fine-tuning) of GPT models.",
                    epilog="`minispdf <command> --help` lists a command's settings.")
    sub = parser.add_subparsers(title="commands", metavar="<command>")
    parsers = {}
    for name, (_, help_, settings, epilog) in COMMANDS.items():
        p = sub.add_parser(name, help=help_, description=help_[0].upper() + help_[1:] + ".",
                           epilog=epilog() if callable(epilog) else epilog)
        for entry in settings:
            cls, options = entry if isinstance(entry, tuple) else (entry, {})
            add_settings(p, cls, **options)
        out = p.add_argument_group("output")
        out.add_argument("--json", action="store_true", help="print one JSON object instead of the summary")
        add_config_option(out)
        parsers[name] = p
    sub.add_parser("assign", help=ASSIGN_HELP, add_help=False)  # its own parser: assignments.main
    return parser, parsers


def _emit(as_json: bool, obj: dict, text: str) -> None:
    if int(os.environ.get("RANK", "0")) != 0:  # under torchrun, one result (rank 0's), not one per rank
        return
    if as_json:
        print(json.dumps(obj, indent=2, default=str))
    else:
        print(text)


def _summary(result: dict) -> dict:
    return {k: v for k, v in result.items() if k not in ("model", "history")}


# ------------------------------------------------------------------------------ prepare


@dataclass
class PrepareSettings(Settings):
    """Corpus or task."""
    data: str | None = setting(None, "corpus to tokenize (default builtin; the list is below)", metavar="SOURCE")
    tokenizer: str = setting("char", "tokenizer", choices=TOKENIZERS)
    max_chars: int | None = setting(None, "cap on the characters read (hub corpora: the first 50M unless given)")
    task: str | None = setting(None, f"or load a task and count its splits: {TASK_SPEC}", metavar="SPEC")


def _corpora() -> str:
    from .data import describe_sources

    return "corpora:\n" + describe_sources() + "\n\nsee data/README.md for sizes, licences and where the files come from"


@command("prepare", "tokenize a corpus into data/ once and print its size and unigram entropy (or a task's size)",
         PrepareSettings, epilog=_corpora)
def cmd_prepare(args):
    from .data import corpus_stats

    s = build(PrepareSettings, args)
    if s.task is not None:
        if s.data is not None:
            raise MiniSPDFError("prepare takes --data or --task, not both: run it once for each")
        return _prepare_task(s.task, args.json)
    st = corpus_stats("builtin" if s.data is None else s.data, s.tokenizer, s.max_chars)
    tok = st["tokens"]
    _emit(args.json, st,
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


# ------------------------------------------------------------------------------ pretrain, finetune


def _training(args) -> TrainConfig:
    return build(TrainConfig, args, progress=args.progress and not args.json)  # a bar would garble the JSON


@command("pretrain", "pre-train a GPT, sparse with --sparsity S (SPDF phase 1)",
         PretrainConfig, ModelConfig, SparsityConfig, TrainConfig, RunConfig)
def cmd_pretrain(args):
    from .spdf import pretrain

    result = pretrain(pretraining=build(PretrainConfig, args), model=build(ModelConfig, args),
                      masks=build(SparsityConfig, args), training=_training(args), run=build(RunConfig, args))
    fr = result["flop_report"]
    _emit(args.json, _summary(result),
          f"pre-trained {result['step']} steps at {fr['sparsity']:.0%} sparsity{_schedule_words(args)}: train loss "
          f"{result['train_loss']:.4f}, val loss {result['val_loss']:.4f}\n"
          f"training FLOPs: {result['flops']:.4g} (dense-equivalent {result['flops_dense']:.4g}, "
          f"{fr['reduction']:.2f}x fewer)\n{fr['note']}"
          + (f"\nrun folder: {result['out_dir']}" if result["out_dir"] else ""))


def _schedule_words(args) -> str:
    if args.schedule == "static" and not args.dense_from:
        return ""
    return f" ({args.schedule}" + (f", dense from {args.dense_from:.0%} of the steps" if args.dense_from else "") + ")"


@command("finetune", "fine-tune a checkpoint: dense by default (SPDF), --keep_masks for SPSF",
         FinetuneConfig, ModelConfig, TrainConfig, RunConfig)
def cmd_finetune(args):
    from .spdf import finetune

    result = finetune(finetuning=build(FinetuneConfig, args), model=build(ModelConfig, args),
                      training=_training(args), run=build(RunConfig, args))
    _emit(args.json, _summary(result),
          f"fine-tuned ({result['mode']}) {result['step']} steps: train loss {result['train_loss']:.4f}, "
          f"val loss {result['val_loss']:.4f}" + (f"\nrun folder: {result['out_dir']}" if result["out_dir"] else ""))


# ------------------------------------------------------------------------------ flops, bench


ARCH = ("n_layer", "n_head", "n_embd", "block_size", "vocab_size")
SCHEDULE_SETTINGS = ("schedule", "update_interval", "drop_fraction", "stop_fraction", "gmp_start", "gmp_end", "nm",
                     "dense_from")


@command("flops", "per-component training FLOPs, dense and sparse, and the reduction",
         (ModelConfig, dict(title="Model", only=("preset",))),
         (GPTConfig, dict(title="Architecture: changes to the preset's", only=ARCH, overrides=True)),
         (SparsityConfig, dict(title="Sparsity", only=("sparsity", *SCHEDULE_SETTINGS))), FlopsSettings)
def cmd_flops(args):
    from .flops import flop_report, flop_table
    from .model import preset_config

    s = build(FlopsSettings, args)
    if s.table:
        rows = flop_table(seq_len=s.seq_len, count_embedding=s.count_embedding)
        text = "\n".join(f"{r['preset']:<8} T={r['seq_len']:<5} sparsity {r['sparsity']:>4.0%}: "
                         f"{r['train_dense']:.3e} dense, {r['train_sparse']:.3e} sparse FLOPs/seq, "
                         f"{r['reduction']:.2f}x" for r in rows)
        _emit(args.json, {"rows": rows}, text)
        return
    preset = build(ModelConfig, args, arch={}).preset or "tiny"  # the overrides (vocab_size too) are read below
    overrides = {k: getattr(args, k) for k in ARCH if getattr(args, k) is not None}
    masks = build(SparsityConfig, args)
    config = preset_config(preset, **overrides)
    report = flop_report(config, sparsity=masks.sparsity, seq_len=s.seq_len, count_embedding=s.count_embedding)
    d, text = report.to_dict(), report.format()
    d["preset"] = preset
    if s.steps:
        d["run"], line = _run_flops(masks, config, s)
        text += "\n" + line
    _emit(args.json, d, text)


def _run_flops(masks, config, s) -> tuple[dict, str]:
    """A whole pre-training run's FLOPs under the mask schedule (GMP's dense start, RigL's dense
    gradients, a dense tail), summed step by step."""
    from .schedules import pretraining_flops

    schedule = masks.make_schedule(s.steps) if masks.sparsity > 0 else None
    run = pretraining_flops(schedule, config, s.batch_size, s.seq_len, max_steps=s.steps)
    how = masks.schedule + (f", dense from {masks.dense_from:.0%}" if masks.dense_from else "")
    return run, (f"pre-training {s.steps} steps x {s.batch_size} sequences ({how}): {run['flops']:.4g} FLOPs, dense "
                 f"{run['flops_dense']:.4g}, {run['ratio']:.2f}x fewer")


@command("bench", "time the training step dense vs masked; tokens/s, MFU, peak memory (--kernels: sparse kernels)",
         BenchSettings, KernelSettings)
def cmd_bench(args):
    from .bench import bench, format_bench, format_kernel_bench, kernel_bench_presets

    s = build(BenchSettings, args)  # a setting of the other mode was refused when parsing (``applies``)
    if s.kernels:
        result = kernel_bench_presets(settings=s, kernels=build(KernelSettings, args))
        _emit(args.json, result, format_kernel_bench(result))
        return
    result = bench(settings=s)
    _emit(args.json, result, format_bench(result))


# ------------------------------------------------------------------------------ sample, evaluate, score


@dataclass
class SampleSettings(Settings):
    """Sampling."""
    ckpt: str | None = setting(None, "checkpoint or run folder", metavar="RUN")
    prompt: str = setting("\n", "text to continue")
    max_new_tokens: int = setting(200, "tokens to generate")
    temperature: float = setting(0.8, "softmax temperature (0: greedy)")
    top_k: int = setting(50, "sample from the k most likely tokens")
    seed: int = setting(0, "sampling seed")
    num_samples: int = setting(1, "how many samples")


@command("sample", "generate text from a checkpoint", SampleSettings)
def cmd_sample(args):
    import torch

    from .checkpoint import load_checkpoint
    from .data import get_tokenizer
    from .evaluate import check_tokenizer

    s = build(SampleSettings, args)
    if not s.ckpt:
        raise MiniSPDFError("sample needs --ckpt: the ckpt.pt or run folder that pretrain/finetune --out wrote")
    if not (s.temperature >= 0 and s.temperature != float("inf")):  # also refuses nan
        raise MiniSPDFError(f"--temperature {s.temperature}: give a number >= 0 (0 = greedy)")
    for key in ("max_new_tokens", "top_k", "num_samples"):
        if getattr(s, key) < 1:
            raise MiniSPDFError(f"--{key} {getattr(s, key)}: give a positive integer")
    model, info = load_checkpoint(s.ckpt)
    tok = get_tokenizer(info.get("tokenizer") or "char")
    check_tokenizer(model, tok)  # a damaged checkpoint can name a tokenizer its model cannot hold
    model.eval()
    gen = torch.Generator().manual_seed(s.seed)
    # a terminal in another encoding hands Python undecodable bytes as surrogates: show them as U+FFFD
    prompt = s.prompt.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    ids = tok.encode(prompt)
    if not ids:
        raise MiniSPDFError("--prompt is empty: give some text to continue")
    x = torch.tensor([ids] * s.num_samples, dtype=torch.long)
    y = model.generate(x, s.max_new_tokens, temperature=s.temperature, top_k=s.top_k, eot_id=tok.eot_id, generator=gen)
    samples = [tok.decode(row[len(ids):].tolist()) for row in y]
    _emit(args.json, {"prompt": prompt, "samples": samples}, "\n---\n".join(prompt + t for t in samples))


@command("evaluate", "decode a task's inputs with a checkpoint; BLEU, chrF++, TER, ROUGE, METEOR, perplexity",
         EvaluateSettings)
def cmd_evaluate(args):
    from .checkpoint import check_out_folder, load_checkpoint
    from .data import get_tokenizer
    from .evaluate import evaluate_task
    from .metrics import format_report, parse_metrics
    from .tasks import resolve_task, split_counts

    s = build(EvaluateSettings, args)
    if not s.ckpt:
        raise MiniSPDFError("evaluate needs --ckpt: the ckpt.pt or run folder that finetune --out wrote")
    model, info = load_checkpoint(s.ckpt)
    tok = get_tokenizer(info.get("tokenizer") or "char")
    task = resolve_task(s.task, test_file=s.test_file)
    metrics = parse_metrics(s.metrics, task.name)  # a typo fails before the model decodes
    examples = getattr(task, s.split)
    if not examples:
        raise MiniSPDFError(f"task {task.name} has no {s.split} examples: choose another --split or task file")
    pred = s.predictions
    if pred is None:
        folder = s.ckpt if os.path.isdir(s.ckpt) else os.path.dirname(s.ckpt) or "."
        pred = os.path.join(folder, f"predictions-{s.split}.jsonl")
    if os.path.isdir(pred):
        raise MiniSPDFError(f"--predictions {pred} is a folder: give a file path such as {pred}/predictions.jsonl")
    check_out_folder(os.path.dirname(os.path.abspath(pred)), "--predictions")
    with writer_lock(pred, "evaluate"):  # one writer per predictions file
        result = evaluate_task(model, tok, examples, method=s.decode, num_beams=s.num_beams,
                               max_new_tokens=s.max_new_tokens, limit=s.limit, predictions_path=pred,
                               metric=task.metric, metrics="default" if s.metrics is None else metrics,
                               task=task.name)
    result.update(task=task.name, split=s.split, ckpt=s.ckpt, read=task.description, counts=split_counts(task),
                  notes=task.notes + result.get("notes", []))
    _emit(args.json, result, format_report(result, f"{task.name} {s.split} ({s.decode} decoding)")
          + f"\nread: {task.description}\npredictions: {pred}")


@command("score", "re-score a predictions JSONL (evaluate's, or one from elsewhere) with the same metrics",
         ScoreSettings)
def cmd_score(args):
    from .evaluate import score_file
    from .metrics import format_report

    s = build(ScoreSettings, args)
    if s.predictions is None:
        raise MiniSPDFError("score needs a predictions file: minispdf score PREDICTIONS.jsonl [--metrics bleu,chrf]")
    result = score_file(s.predictions, s.metrics, task=s.task or "")
    result["predictions_path"] = s.predictions
    _emit(args.json, result, format_report(result, f"scored {s.predictions}"))


# ------------------------------------------------------------------------------ demo, reproduce, assign


def _scale_settings():
    from .demo import SCALE_KEYS

    return make_dataclass("DemoScale", [(k, int | None, setting(None, k.replace("_", " ")))
                                        for k in SCALE_KEYS], bases=(Settings,))


@dataclass
class DemoSettings(Settings):
    """Demo."""
    quick: bool = setting(False, "the smallest scale: under a minute on a CPU")
    out: str = setting("runs/demo", "run folder", metavar="DIR")
    overwrite: bool = setting(False, "replace an earlier demo in --out (once the new one has finished)")
    seed: int = setting(0, "seed of the one run of every arm")
    device: str = device_setting()
    jobs: int | None = setting(None, "parallel jobs (default: one per CPU core)")


DemoScale = _scale_settings()


@command("demo", "the whole SPDF recipe at small scale on built-in data (--quick: < 1 minute)",
         DemoSettings, (DemoScale, dict(title="Scale: overrides of the demo grid's")))
def cmd_demo(args):
    from .demo import results_table, run_demo

    results = run_demo(log=(lambda *a: None) if args.json else print, **asdict(build(DemoSettings, args)),
                       **asdict(build(DemoScale, args)))
    _emit(args.json, {k: v for k, v in results.items() if k not in ("pretrains", "rows")} | {"rows": results["rows"]},
          f"\nSPDF demo ({results['grid']['name']} grid, {results['timing']['wall_s']:.0f} s)\n"
          f"task: {next(iter(results['grid']['tasks'].values()))['about']}\n\n{results_table(results)}\n\n"
          f"written: {results['out']}/results.md, results.json, results.csv, claims.json, pretrain_loss_vs_flops.png")


def _real_task_settings():
    from .study.grids import REAL_TASKS

    return make_dataclass("RealTasks", [(k, str | None, setting(None, f"add the real {k} task: {what}", metavar="DIR"))
                                        for k, (what, _) in REAL_TASKS.items()], bases=(Settings,))


def _grid_names() -> str:
    from .study.grids import builtin_names

    return ", ".join(builtin_names())


@dataclass
class ReproduceSettings(Settings):
    """Study."""
    grid: str | None = setting(None, f"a built-in grid ({_grid_names()}; default: default, --quick means quick) or "
                                     "a TOML grid file of your own", metavar="NAME|FILE")
    quick: bool = setting(False, "the quick grid")
    out: str | None = setting(None, "run folder (default: runs/study-GRID)", metavar="DIR")
    seeds: int | None = setting(None, "seeds per block (default: the grid's)")
    jobs: int | None = setting(None, "parallel jobs, one torch thread each (default: one per CPU core; 1 on a GPU)")
    device: str = device_setting()
    dry_run: bool = setting(False, "print the plan, its cost and each claim's expected power; train nothing")
    power_from: str | None = setting(None, "a finished study whose seed-to-seed spread predicts the power (default: "
                                           "results/GRID or results/default when present)", metavar="DIR")
    redeclare: bool = setting(False, "record new judging rules for a run folder that declared others (declared-N.json)")
    report: str | None = setting(None, "judge a finished study again with its declaration and rewrite its report; "
                                       "trains nothing", metavar="DIR")
    verify: str | None = setting(None, "re-run cells of a finished study and compare every logged number bit for bit",
                                 metavar="DIR")
    cells: str = setting("2", "with --verify: how many cells to re-run at random, or their names (comma-separated)",
                         metavar="N|NAMES")


RealTasks = _real_task_settings()


def _verify_cells(text: str) -> int | list[str]:
    text = text.strip()
    if text.isdigit():
        return int(text)
    names = [n.strip() for n in text.split(",") if n.strip()]
    if not names:
        raise MiniSPDFError("--cells is empty: give a number of cells or their names from results.csv")
    return names


def _reproduce_verify(s, args) -> None:
    from .study.verify import verify

    def log(msg):
        print(msg, file=sys.stderr if args.json else sys.stdout, flush=True)

    result = verify(s.verify, _verify_cells(s.cells), device="cpu" if s.device == "auto" else s.device, log=log)
    bad = [c["cell"] for c in result["cells"] if c["differences"]]
    _emit(args.json, result, f"{len(result['cells']) - len(bad)} of {len(result['cells'])} cells identical to "
                             f"{s.verify}/results.csv")
    if bad:
        raise MiniSPDFError(f"{len(bad)} cell(s) differ from {s.verify}: {', '.join(bad)} (listed above): the code "
                            "or the machine computes other numbers than the committed study")


@command("reproduce", "the reproduction study: a declared grid of arms, tasks, sizes and seeds, judged against the paper",
         ReproduceSettings, (RealTasks, dict(title="Real tasks (added to the grid)")))
def cmd_reproduce(args):
    from .study import rejudge, resolve_grid, run_study
    from .study.report import FIGURES, headline_table

    s = build(ReproduceSettings, args)
    if s.verify:
        return _reproduce_verify(s, args)
    if s.report:
        results = rejudge(s.report)
        _emit(args.json, {"out": s.report, "claims": results["claims"]},
              f"{headline_table(results['claims'])}\n\nrewritten in {s.report}: claims.json, claims.md, summary.md, "
              f"README_section.md, figures")
        return None
    name = s.grid or ("quick" if s.quick else "default")
    if s.quick and name != "quick":
        raise MiniSPDFError(f"--quick and --grid {name} disagree: pass one of them")
    grid = resolve_grid(name, seeds=s.seeds, real_tasks=asdict(build(RealTasks, args)))
    out = s.out or f"runs/study-{grid['name']}"

    def log(msg):
        print(msg, file=sys.stderr if args.json else sys.stdout, flush=True)

    results = run_study(grid, out, device=s.device, jobs=s.jobs, log=log, dry_run=s.dry_run,
                        command="minispdf reproduce " + " ".join(args._argv), power_from=s.power_from,
                        redeclare=s.redeclare)
    if s.dry_run:
        _emit(args.json, results, "(dry run: nothing was trained)")
        return None
    _emit(args.json, {"out": out, "timing": results["timing"], "claims": results["claims"],
                      "flop_claim": results["flop_claim"]},
          f"\n{headline_table(results['claims'])}\n\nwritten to {out}: declared.json, results.csv, claims.json, "
          f"results.json, summary.md, claims.md, README_section.md, {', '.join(FIGURES)}")
    return None


ASSIGN_HELP = "course mode: student copies of the notebooks, grading, sync check (`minispdf assign --help`)"


# ------------------------------------------------------------------------------ main


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        return _dispatch(argv)
    except SystemExit as e:  # --help
        return e.code if isinstance(e.code, int) else 0
    except MiniSPDFError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except (MemoryError, RuntimeError) as e:
        if not out_of_memory(e):
            raise
        print("error: out of memory: use smaller settings (batch_size, block_size, num_samples, num_beams)",
              file=sys.stderr)
        return 2
    except OSError as e:  # the last net for I/O the commands do not check first (disk full, permissions)
        where = f" ({e.filename})" if getattr(e, "filename", None) else ""
        print(f"error: {e.strerror or e}{where}: check the path, its permissions and the free space", file=sys.stderr)
        return 2
    except Interrupted as e:
        print(f"interrupted: {e}", file=sys.stderr)
        if e.saved and argv and argv[0] in ("pretrain", "finetune"):
            print(f"continue with: {resume_command(argv)}", file=sys.stderr)
        return 128 + e.signum
    except KeyboardInterrupt:
        print("interrupted: nothing new was saved; a run folder's last checkpoint (if any) is intact",
              file=sys.stderr)
        return 130


def out_of_memory(e: BaseException) -> bool:
    """Whether ``e`` is an allocation failure: by its type where torch gives one (a GPU's), by its
    text for a failed CPU allocation, which torch raises as a plain RuntimeError."""
    import torch

    return isinstance(e, (MemoryError, torch.OutOfMemoryError)) or (
        isinstance(e, RuntimeError) and "can't allocate memory" in str(e))


def resume_command(argv: list[str]) -> str:
    """The command line that continues an interrupted ``argv``: the same, with --resume, without --overwrite."""
    import shlex

    drop = ("--overwrite", "--no-overwrite", "--no_overwrite", "--resume", "--no-resume", "--no_resume")
    kept = [a for a in argv if a.partition("=")[0] not in drop]
    return "minispdf " + shlex.join([*kept, "--resume"])


def _dispatch(argv: list[str]) -> int:
    if argv and argv[0] == "assign":  # the assignments module parses its own subcommands
        from .assignments import main as assign_main

        return assign_main(argv[1:])
    parser, parsers = build_parser()
    if not argv or argv[0] in ("-h", "--help", "help"):
        parser.print_help()
        return 0
    name = argv[0]
    if name not in parsers:
        raise MiniSPDFError(f"unknown command {name!r}: choose one of {', '.join([*parsers, 'assign'])}")
    args = parse(parsers[name], argv[1:])
    args._argv = argv[1:]
    return int(COMMANDS[name][0](args) or 0)
