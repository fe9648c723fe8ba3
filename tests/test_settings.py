"""Every setting is declared once: a field name that several settings classes share means one
thing, with one help text and one default. The few names that still mean different things in
different commands are listed below with why, so that a new one fails here."""

from dataclasses import MISSING, fields, is_dataclass

import minispdf.cli as cli
from minispdf.settings import Settings

# name -> why it differs between classes (shrink this list; never grow it without a reason)
KNOWN = {
    # the same word for what differs by command (a flag's name is part of the CLI, kept as it is)
    "batch_size": "a training micro-batch per rank; the bench's and flops --max_steps' "
                  "sequences per step",
    "block_size": "the architecture's context (GPTConfig) vs the bench's change to the preset's",
    "data": "the pre-training corpus (default builtin) vs prepare's and finetune's optional one",
    "jobs": "the study's workers are one torch thread each; the demo's help says less",
    "max_steps": "a run's length everywhere; flops' is None unless it should sum a run",
    "max_new_tokens": "sample's fixed count, evaluate's 'fill the context', the demo "
                      "grid's override",
    "out": "a run folder, the demo's and the study's, each with its own default",
    "overwrite": "a training run vs a demo folder",
    "predictions": "score reads the file, evaluate writes it",
    "preset": "the bench defaults to tiny and takes `all`; ModelConfig's None means the "
              "checkpoint's or tiny",
    "quick": "the demo's and the study's smallest scale",
    "seed": "training, sampling and the demo's one run",
    "sparsity": "the bench's masked arm (0.75) vs the sparsity of a run (dense by default)",
    "tokenizer": "prepare's (char) vs ModelConfig's default from the preset",
    "task": "a task spec (tasks.TASK_SPEC) everywhere; the help says what the command does "
            "with it, and "
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
            out.setdefault(f.name, {}).setdefault((f.metadata["help"], repr(default)),
                                                  []).append(cls.__name__)
    return out


def test_a_setting_shared_by_several_classes_is_declared_alike():
    differ = {name: decl for name, decl in _declarations().items() if len(decl) > 1}
    assert not {n: d for n, d in differ.items()
                if n not in KNOWN}, "declare the setting once and reuse it"
    assert not [n for n in KNOWN if n not in differ], "no longer differs: drop it from KNOWN"


def test_the_walk_sees_the_commands_settings():
    names = {cls.__name__ for cls in _settings_classes()}
    assert {"TrainConfig", "BenchConfig", "KernelConfig", "EvaluateConfig", "DemoScale",
            "RealTasks"} <= names


def test_bounds_are_declared_with_the_field_and_checked_for_every_class():
    from dataclasses import dataclass

    import pytest

    from minispdf.settings import setting
    from minispdf.errors import MiniSPDFError

    @dataclass
    class Knobs(Settings):
        count: int = setting(1, "a count", min=1)
        share: float = setting(0.5, "a share", min=0, below=1, hint="e.g. 0.5")
        rate: float = setting(1.0, "a rate", above=0)
        cap: int | None = setting(None, "a cap", min=0, max=10)

    # edges that are allowed; None passes where the type allows it
    Knobs(count=10**400, share=0.0, rate=1e-9, cap=10)
    for bad, message in [
        (dict(count=0), "count=0 must be a positive integer"),
        (dict(count=True), "count=True must be a positive integer"),  # a bool is not a count
        (dict(count=2.0), "count=2.0 must be a positive integer"),
        (dict(share=1.0), "share=1.0 must be in [0, 1) (e.g. 0.5)"),
        (dict(share=float("nan")), "share=nan must be in [0, 1) (e.g. 0.5)"),
        (dict(rate=0.0), "rate=0.0 must be a positive number"),
        (dict(rate="fast"), "rate='fast' must be a positive number"),
        (dict(cap=11), "cap=11 must be between 0 and 10"),
        (dict(rate=float("inf")), "rate=inf must be a positive number"),
    ]:
        with pytest.raises(MiniSPDFError) as e:
            Knobs(**bad)
        assert str(e.value) == message
