"""What ``--task SPEC`` means: :func:`load_task` and :func:`resolve_task`.

``builtin``, ``builtin:easy``, ``builtin:hard``
    The seeded generator of E2E-style restaurant MRs (:func:`make_builtin_task`); no files, no
    network.
``e2e:PATH`` / ``e2e``
    Official E2E CSV (columns ``mr,ref``), or the hub's Parquet export of ``tuetschek/e2e_nlg``.
``dart:PATH`` / ``dart``
    Official DART JSON or XML, or the hub's Parquet export of ``Yale-LILY/dart``.
``webnlg:PATH``
    Official WebNLG 2017 XML (there is no loadable hub copy, so a PATH is required).
``curation:PATH`` / ``curation``
    CSV or Parquet with ``article_content`` and ``summary`` columns, or hub
    ``d0rj/curation-corpus``.

PATH may be one file or a directory (see :mod:`minispdf.tasks.files`).
"""

from __future__ import annotations

from pathlib import Path

from minispdf.errors import MiniSPDFError, one_line

from .builtin import BUILTIN_LEVELS, make_builtin_task
from .core import TASK_NAMES, Task
from .files import load_path, load_task_files
from .hub_copies import load_hub

#: What ``--task SPEC`` accepts, for the help of every setting that takes one.
TASK_SPEC = "builtin[:easy|:hard] | e2e[:PATH] | dart[:PATH] | webnlg:PATH | curation[:PATH]"


def load_task(spec: str, *, seed: int = 0, **builtin_kwargs) -> Task:
    """Load a task from a spec string such as ``builtin:hard``, ``e2e:data/devset.csv`` or ``dart``.

    ``NAME`` alone means the built-in generator (``builtin``) or the Hugging Face hub copy (e2e,
    dart, curation); ``NAME:PATH`` reads local files in the official format (a file, or a
    directory with the official file names). ``seed`` seeds the built-in generator and any split
    that has to be cut; ``builtin_kwargs`` go to :func:`make_builtin_task` and override the
    ``easy``/``hard`` presets.
    """
    spec = str(spec).strip()
    name, _, arg = spec.partition(":")
    name = name.strip().lower()
    if name not in TASK_NAMES:
        raise MiniSPDFError(
            f"unknown task {spec!r}; valid tasks: builtin, builtin:easy, builtin:hard, e2e[:PATH], "
            "dart[:PATH], webnlg:PATH, curation[:PATH]"
        )
    if name == "builtin":
        level = arg.strip().lower()
        if level not in BUILTIN_LEVELS:
            raise MiniSPDFError(
                f"unknown builtin level {arg!r}; use builtin, builtin:easy or builtin:hard")
        kwargs = {**BUILTIN_LEVELS[level], **builtin_kwargs}
        try:
            task = make_builtin_task(seed=seed, **kwargs)
        except TypeError as e:
            raise MiniSPDFError(f"bad builtin task option ({one_line(e)}); see make_builtin_task "
                                f"for the options") from None
        task.name = f"builtin:{level}" if level else "builtin"
        return task
    if builtin_kwargs:
        raise MiniSPDFError(
            f"options {', '.join(sorted(builtin_kwargs))} only apply to the builtin task, not "
            f"{name}; drop them"
        )
    if arg.strip():
        return load_path(name, Path(arg.strip()).expanduser())
    if name == "webnlg":
        raise MiniSPDFError(
            "webnlg has no loadable hub copy; download the official WebNLG 2017 XML and pass "
            "--task webnlg:PATH"
        )
    return load_hub(name, seed)


def resolve_task(spec, train_file=None, val_file=None, test_file=None, seed: int = 0) -> Task:
    """What ``--task SPEC [--train_file F] [--val_file F] [--test_file F]`` means.

    With any file given, SPEC must be a bare task name (e2e, dart, webnlg, curation) and each
    file fills one split (:func:`load_task_files`); otherwise it is :func:`load_task`. A
    :class:`Task` passes through unchanged.
    """
    if isinstance(spec, Task):
        return spec
    if any(f is not None for f in (train_file, val_file, test_file)):
        if ":" in str(spec):
            raise MiniSPDFError(f"--task {spec} already names a path: with "
                                f"--train_file/--val_file/--test_file "
                                "give the bare task name, e.g. --task e2e")
        return load_task_files(str(spec), train=train_file, val=val_file, test=test_file)
    return load_task(spec, seed=seed)
