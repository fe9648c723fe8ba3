"""Every setting is declared once: a field name that several settings classes share means one
thing, with one help text and one default. The few names that still mean different things in
different commands are listed below with why, so that a new one fails here."""

from dataclasses import MISSING, fields, is_dataclass

import minispdf.cli as cli
from minispdf.config import Settings

# name -> why it differs between classes (shrink this list; never grow it without a reason)
KNOWN = {
    # the same word for what differs by command (a flag's name is part of the CLI, kept as it is)
    "batch_size": "a training micro-batch per rank; the bench's and flops --max_steps' sequences per step",
    "block_size": "the architecture's context (GPTConfig) vs the bench's change to the preset's",
    "data": "the pre-training corpus (default builtin) vs prepare's and finetune's optional one",
    "jobs": "the study's workers are one torch thread each; the demo's help says less",
    "max_steps": "a run's length everywhere; flops' is None unless it should sum a run",
    "max_new_tokens": "sample's fixed count, evaluate's 'fill the context', the demo grid's override",
    "out": "a run folder, the demo's and the study's, each with its own default",
    "overwrite": "a training run vs a demo folder",
    "predictions": "score reads the file, evaluate writes it",
    "preset": "the bench defaults to tiny and takes `all`; ModelConfig's None means the checkpoint's or tiny",
    "quick": "the demo's and the study's smallest scale",
    "seed": "training, sampling and the demo's one run",
    "sparsity": "the bench's masked arm (0.75) vs the sparsity of a run (dense by default)",
    "tokenizer": "prepare's (char) vs ModelConfig's default from the preset",
    "task": "a task spec (tasks.TASK_SPEC) everywhere; the help says what the command does with it, and "
            "evaluate's defaults to builtin",
}


def _settings_classes():
    seen, todo = [], list(Settings.__subclasses__())
    for _, _, settings, _ in cli.COMMANDS.values():  # also those made with make_dataclass
        todo += [entry[0] if isinstance(entry, tuple) else entry for entry in settings]
    while todo:
        cls = todo.pop()
        if cls in seen or not is_dataclass(cls):
            continue
        seen.append(cls)
        todo += cls.__subclasses__()
    return seen


def _declarations():
    out = {}
    for cls in _settings_classes():
        for f in fields(cls):
            if "help" not in f.metadata or f.metadata.get("fields_of"):
                continue
            default = f.default if f.default is not MISSING else f.default_factory()
            out.setdefault(f.name, {}).setdefault((f.metadata["help"], repr(default)), []).append(cls.__name__)
    return out


def test_a_setting_shared_by_several_classes_is_declared_alike():
    differ = {name: decl for name, decl in _declarations().items() if len(decl) > 1}
    assert not {n: d for n, d in differ.items() if n not in KNOWN}, "declare the setting once and reuse it"
    assert not [n for n in KNOWN if n not in differ], "no longer differs: drop it from KNOWN"


def test_the_walk_sees_the_commands_settings():
    names = {cls.__name__ for cls in _settings_classes()}
    assert {"TrainConfig", "BenchSettings", "KernelSettings", "EvaluateSettings", "DemoScale", "RealTasks"} <= names
