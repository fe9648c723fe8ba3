"""The setup every lesson's first cell does, as one import::

    from minispdf.lessons import check, hint, setup

    SCALES = {"default": dict(...), "gpu": dict(...), "smoke": dict(...)}
    SCALE, P, THREADS = setup(SCALES)

``setup`` picks the lesson's settings for the scale ``MINISPDF_SCALE`` names (``default``
unless it says otherwise) and sets torch's thread count to ``MINISPDF_THREADS`` (one unless it
says otherwise: on a 2-core machine shared with other work, two threads run many times slower,
and the lessons' run times are measured with one). ``check`` and ``hint`` are the assignment
mode's (:mod:`minispdf.assignments`): the cell under each exercise checks it, ``hint("name")``
prints an exercise's hint.
"""

from __future__ import annotations

import os
from typing import NamedTuple

from .assignments import check, hint
from .errors import MiniSPDFError

__all__ = ["Setup", "check", "hint", "setup"]


class Setup(NamedTuple):
    scale: str  # the scale's name: "default", "gpu" or "smoke"
    params: dict  # the lesson's settings at that scale
    threads: int  # torch's thread count, as set


def setup(scales: dict[str, dict], scale: str | None = None, threads: int | None = None) -> Setup:
    """The settings of ``scales[scale]`` (``scale`` from ``MINISPDF_SCALE``, default ``"default"``),
    with torch set to ``threads`` threads (from ``MINISPDF_THREADS``, default 1)."""
    import torch

    scale = scale or os.environ.get("MINISPDF_SCALE", "default")
    if scale not in scales:
        raise MiniSPDFError(f"MINISPDF_SCALE={scale!r}: choose one of {sorted(scales)}")
    raw = threads if threads is not None else os.environ.get("MINISPDF_THREADS", "1")
    try:
        threads = int(raw)
    except ValueError:
        raise MiniSPDFError(
            f"MINISPDF_THREADS={raw!r}: give a whole number of threads, such as 1"
        ) from None
    if threads < 1:
        raise MiniSPDFError(f"MINISPDF_THREADS={threads}: give at least 1 thread")
    torch.set_num_threads(threads)
    return Setup(scale, scales[scale], threads)
