"""The settings of ``minispdf reproduce``: which grid, where, how many workers, and the modes
that judge or re-check a finished study instead of training."""

from __future__ import annotations

from dataclasses import dataclass, make_dataclass

from ..settings import Settings, device_setting, setting
from ..fileio import require_readable
from .grids import builtin_names
from .real_tasks import REAL_TASKS


@dataclass
class ReproduceConfig(Settings):
    """Study."""
    grid: str | None = setting(
        None, f"a built-in grid ({', '.join(builtin_names())}; default: default, --quick "
                                     "means quick) or a TOML grid file of your own",
                               metavar="NAME|FILE")
    quick: bool = setting(False, "the quick grid")
    out: str | None = setting(None, "run folder (default: runs/study-GRID)", metavar="DIR")
    seeds: int | None = setting(None, "seeds per block (default: the grid's)")
    jobs: int | None = setting(
        None, "parallel jobs, one torch thread each (default: one per CPU core; 1 on a GPU)")
    device: str = device_setting()
    dry_run: bool = setting(
        False, "print the plan, its cost and each claim's expected power; train nothing")
    power_from: str | None = setting(
        None, "a finished study whose seed-to-seed spread predicts the power (default: "
                                           "results/GRID or results/default when present)",
                                     metavar="DIR")
    redeclare: bool = setting(
        False, "record new judging rules for a run folder that declared others (declared-N.json)")
    report: str | None = setting(
        None, "judge a finished study again with its declaration and rewrite its report; "
                                       "trains nothing", metavar="DIR")
    verify: str | None = setting(None, "re-run cells of a finished study and compare every logged "
                                       "number bit for bit",
                                 metavar="DIR")
    cells: str = setting("2", "with --verify: how many cells to re-run at random, or their names "
                              "(comma-separated)",
                         metavar="N|NAMES")


def _check_real_tasks(self):
    """A real task's path is refused by its type before any reader opens it (a FIFO would block)."""
    Settings.__post_init__(self)
    for k, (what, _) in REAL_TASKS.items():
        if getattr(self, k):
            require_readable(getattr(self, k), f"--{k}", f"give --{k} {what}", folder_ok=True)


# --e2e DIR, --webnlg DIR, ...: one setting per real task a grid can add
RealTasks = make_dataclass(
    "RealTasks", [(k, str | None, setting(None, f"add the real {k} task: {what}", metavar="DIR"))
                                         for k, (what, _) in REAL_TASKS.items()], bases=(Settings,),
                           namespace={"__post_init__": _check_real_tasks})
