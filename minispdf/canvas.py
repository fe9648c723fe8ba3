"""The blank figure every plot draws on, shared by :mod:`minispdf.plots` and the bench's plots.

matplotlib is imported on first use, so importing a module that can draw costs nothing until it
does.
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


# a figure is read at 100% zoom in a column about this wide (a JupyterLab output area on a laptop,
# a README on GitHub): a wider figure is shrunk to fit, and its fonts with it
COLUMN_PX = 1000
MIN_POINTS = 9.0  # the smallest font a reader should have to read, as shown


def legibility(fig, dpi: float = 100, column_px: int = COLUMN_PX, min_points: float = MIN_POINTS,
               saved: bool = False) -> list[str]:
    """What a reader would find hard to read in ``fig`` at 100% zoom, shown at ``dpi`` (a
    notebook's inline figures: 100, cropped to their drawing; the study's saved figures: 110)
    in a column ``column_px`` wide: every text smaller than ``min_points`` as shown (its font size
    scaled by the shrink a too-wide figure gets), and, for a figure ``saved`` uncropped, whether
    its drawing reaches outside the figure (a clipped label). An empty list: nothing to fix."""
    from matplotlib.text import Text

    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    drawn = fig.get_tightbbox(renderer)  # inches: everything drawn, labels included
    width_px = (fig.get_figwidth() if saved else drawn.width) * dpi
    scale = min(1.0, column_px / width_px)
    problems = []
    if scale < 1:
        problems.append(f"{width_px:.0f} px wide, shrunk to {scale:.0%} in a {column_px} px column")
    for text in fig.findobj(Text):
        shown = text.get_fontsize() * scale
        if text.get_visible() and text.get_text().strip() and shown < min_points - 1e-6:
            problems.append(f"{text.get_text().strip()[:40]!r}: {shown:.1f} pt as shown")
    if saved:
        box, size = drawn, (fig.get_figwidth(), fig.get_figheight())
        if box.x0 < -0.01 or box.y0 < -0.01 or box.x1 > size[0] + 0.01 or box.y1 > size[1] + 0.01:
            problems.append(f"drawn over {box.x0:.2f}..{box.x1:.2f} x {box.y0:.2f}..{box.y1:.2f} "
                            f"in, outside the {size[0]:.2f} x {size[1]:.2f} in figure: a label is "
                            "clipped")
    return problems
