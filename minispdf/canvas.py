"""The blank figure every plot draws on, shared by :mod:`minispdf.plots` and the bench's plots.

matplotlib is imported on first use, so importing a module that can draw costs nothing until it does.
"""

from __future__ import annotations


def pyplot():
    """``matplotlib.pyplot``, imported now."""
    import matplotlib.pyplot as plt

    return plt


def axes(ax=None, figsize=(6.4, 4.0)):
    """``ax`` itself, or the axes of a new figure of ``figsize``."""
    if ax is not None:
        return ax
    _, ax = pyplot().subplots(figsize=figsize)
    return ax
