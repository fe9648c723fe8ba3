"""What each ``minispdf`` command does and prints, one module per group of commands.

A command is a function of the parsed arguments: it builds its settings objects
(``config.build``), calls the library, and prints a human summary or, with ``--json``, one
JSON object. The table of commands and their settings, and the mapping of errors to one-line
messages, are in :mod:`minispdf.cli`.
"""

from __future__ import annotations

import json
import os
import sys


def emit(as_json: bool, obj: dict, text: str) -> None:
    """Print ``text``, or ``obj`` as JSON with ``--json``."""
    # under torchrun, one result (rank 0's), not one per rank
    if int(os.environ.get("RANK", "0")) != 0:
        return
    if as_json:
        print(json.dumps(obj, indent=2, default=str))
    else:
        print(text)


def check_dense_options(masks, args) -> None:
    """At ``--sparsity 0`` (dense) the options of how masks are drawn and moved do nothing: given,
    they are an error."""
    from dataclasses import fields

    from ..config import given
    from ..errors import MiniSPDFError

    unused = [f.name for f in fields(masks) if f.name != "sparsity" and f.name in given(args)]
    if masks.sparsity == 0 and unused:
        raise MiniSPDFError(f"--{unused[0]} does nothing at --sparsity 0 (a dense run): add "
                            f"--sparsity 0.75 (or "
                            "another), or drop it")


def progress_log(as_json: bool):
    """Where a long command's progress lines go: stdout, or stderr when stdout carries JSON."""
    def log(msg):
        print(msg, file=sys.stderr if as_json else sys.stdout, flush=True)
    return log
