"""``python -m minispdf <command>`` / ``minispdf <command>``: the kit from a terminal.

One argparse parser with a subcommand per command, from the table below: each command's
options are generated from the settings dataclasses it uses (see ``config``), each declared
beside what it sets; what the command does and prints is in :mod:`minispdf.commands`. A mistake
the user can fix prints ``error: <what and how to fix>`` and exits with status 2, never a
traceback (:func:`main` maps the errors).
"""

from __future__ import annotations

import sys

from .bench.bench_config import BenchConfig, KernelConfig
from .commands import measure, runs, study, text
from .config import Parser, add_config_option, add_settings, parse
from .data import PrepareConfig
from .decoding import SampleConfig
from .demo import DemoConfig, DemoScale
from .errors import Interrupted, MiniSPDFError
from .evaluate import EvaluateConfig, ScoreConfig
from .flops import FlopsConfig
from .model import GPTConfig
from .schedules import SparsityConfig
from .spdf import FinetuneConfig, ModelConfig, PretrainConfig, RunConfig
from .study.reproduce_config import RealTasks, ReproduceConfig
from .train import TrainConfig

ASSIGN_HELP = ("course mode: student copies of the notebooks, grading, sync check (`minispdf "
               "assign --help`)")

# name -> (what runs it, its one-line help, its settings: dataclasses or (dataclass, options for
# config.add_settings), the epilog of its --help)
COMMANDS: dict = {
    "prepare": (runs.prepare,
                "tokenize a corpus into data/ once and print its size and unigram entropy (or a "
                "task's size)", (PrepareConfig,), runs.corpora),
    "pretrain": (runs.pretrain, "pre-train a GPT, sparse with --sparsity S (SPDF phase 1)",
                 (PretrainConfig, ModelConfig, SparsityConfig, TrainConfig, RunConfig), None),
    "finetune": (runs.finetune,
                 "fine-tune a checkpoint: dense by default (SPDF), --keep_masks for SPSF",
                 (FinetuneConfig, ModelConfig, TrainConfig, RunConfig), None),
    "flops": (measure.flops, "per-component training FLOPs, dense and sparse, and the reduction",
              ((ModelConfig, dict(title="Model", only=("preset",))),
               (GPTConfig, dict(title="Architecture: changes to the preset's", only=measure.ARCH,
                                overrides=True)),
               (SparsityConfig,
                dict(title="Sparsity", only=("sparsity", *SparsityConfig.SCHEDULE_FIELDS))),
               FlopsConfig), None),
    "bench": (measure.bench,
              "time the training step dense vs masked; tokens/s, MFU, peak memory (--kernels: "
              "sparse kernels)", (BenchConfig, KernelConfig), None),
    "sample": (text.sample, "generate text from a checkpoint", (SampleConfig,), None),
    "evaluate": (text.evaluate,
                 "decode a task's inputs with a checkpoint; BLEU, chrF++, TER, ROUGE, METEOR, "
                 "perplexity", (EvaluateConfig,), None),
    "score": (text.score, (
        "re-score a predictions JSONL (evaluate's, or one from elsewhere) with the same metrics"),
              (ScoreConfig,), None),
    "demo": (study.demo,
             "the whole SPDF recipe at small scale on built-in data (--quick: < 1 minute)",
             (DemoConfig, (DemoScale, dict(title="Scale: overrides of the demo grid's"))), None),
    "reproduce": (study.reproduce,
                  "the reproduction study: a declared grid of arms, tasks, sizes and seeds, judged "
                  "against the paper", (ReproduceConfig,
                                        (RealTasks, dict(title="Real tasks (added to the grid)"))),
                  None),
}


def build_parser() -> tuple[Parser, dict]:
    """The ``minispdf`` parser and ``{command: its subparser}``."""
    parser = Parser(prog="minispdf",
                    description="SPDF (sparse pre-training, dense fine-tuning) of GPT models.",
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
        out.add_argument("--json", action="store_true",
                         help="print one JSON object instead of the summary")
        add_config_option(out)
        parsers[name] = p
    sub.add_parser("assign", help=ASSIGN_HELP, add_help=False)  # its own parser: assignments.main
    return parser, parsers


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
        print("error: out of memory: use smaller settings (batch_size, block_size, "
              "num_samples, num_beams)",
              file=sys.stderr)
        return 2
    # the last net for I/O the commands do not check first (disk full, permissions)
    except OSError as e:
        where = f" ({e.filename})" if getattr(e, "filename", None) else ""
        print(f"error: {e.strerror or e}{where}: check the path, its permissions and "
              f"the free space", file=sys.stderr)
        return 2
    except Interrupted as e:
        print(f"interrupted: {e}", file=sys.stderr)
        if e.saved and argv and argv[0] in ("pretrain", "finetune"):
            print(f"continue with: {resume_command(argv)}", file=sys.stderr)
        # a study skips its finished jobs: the same command continues
        elif argv and argv[0] == "reproduce":
            import shlex

            print(f"continue with: minispdf {shlex.join(argv)}", file=sys.stderr)
        return 128 + e.signum
    except KeyboardInterrupt:
        print("interrupted: nothing new was saved; a run folder's last checkpoint (if "
              "any) is intact",
              file=sys.stderr)
        return 130


def out_of_memory(e: BaseException) -> bool:
    """Whether ``e`` is an allocation failure: by its type where torch gives one (a GPU's), by its
    text for a failed CPU allocation, which torch raises as a plain RuntimeError."""
    import torch

    return isinstance(e, (MemoryError, torch.OutOfMemoryError)) or (
        isinstance(e, RuntimeError) and "can't allocate memory" in str(e))


def resume_command(argv: list[str]) -> str:
    """The command line that continues an interrupted ``argv``: the same, with --resume, without
    --overwrite."""
    import shlex

    drop = ("--overwrite", "--no-overwrite", "--no_overwrite", "--resume", "--no-resume",
            "--no_resume")
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
        raise MiniSPDFError(
            f"unknown command {name!r}: choose one of {', '.join([*parsers, 'assign'])}")
    args = parse(parsers[name], argv[1:])
    args.argv = argv[1:]
    return int(COMMANDS[name][0](args) or 0)
