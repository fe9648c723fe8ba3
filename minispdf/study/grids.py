"""The study grids: TOML files that say what is trained, for how long, and how it is judged.

A grid names its model sizes, tasks, fine-tuning set sizes and *blocks*. A block crosses some
sizes, tasks, set sizes and arms over a number of seeds; the study runs the union of its blocks
(a job shared by two blocks runs once). The margins and gates are part of the grid, so they are
fixed before the run; ``reproduce`` writes them to ``declared.json`` before its first job.

The built-in grids are the files in ``builtin_grids/`` (``smoke``, ``demo``, ``quick``,
``default``, ``gpu``, ``gpu-quick``); ``minispdf reproduce --grid my.toml`` runs a file of your
own. A file may ``inherit`` another (a built-in name such as ``"_cpu"``, or a path relative to
it): tables merge key by key, other values replace. Sizes, tasks and sets that no block uses are
dropped.

Arms (one set of names everywhere: the demo, the study, the tables):

========== ====================================================================================
``dense``     dense pre-training, dense fine-tuning (the baseline)
``spdf50``    50% sparse pre-training, then the mask is dropped: dense fine-tuning (SPDF)
``spdf75``    the same at 75% sparsity
``spsf75``    75% sparse pre-training and sparse fine-tuning, masks kept (SPSF)
``eqflop75``  dense pre-training for the pre-training FLOPs of ``spdf75`` (fewer steps), dense
              fine-tuning: "is sparse pre-training better than training dense for less?"
``scratch``   no pre-training at all, dense fine-tuning (how much pre-training is worth)
``set75``     75% sparse pre-training whose mask moves (SET: drop small, regrow random), then dense
``rigl75``    the same, regrowing where the dense gradient is largest (RigL)
``gmp75``     pre-training that starts dense and is pruned to 75% on a cubic ramp (GMP)
``nm24``      2:4 sparse pre-training (2 of every 4 weights kept: 50%), then dense
``vspdf75``   75% sparse pre-training, dense for its last part (Variable SPDF), then dense
========== ====================================================================================

The moving and gradual schedules take their settings from the grid's ``[schedules]`` table: the
schedule settings of ``minispdf pretrain`` (``schedules.SparsityConfig``: update_interval,
drop_fraction, ...), with the same bounds; left out, its defaults. Likewise ``[pretrain]`` and
``[finetune]`` hold ``train.TrainConfig``'s settings by its names and bounds (``warmup_frac``, a
share of each job's steps, stands for its ``warmup_steps``): :func:`train_config` makes a job's.
"""

from __future__ import annotations

import copy
import math
import os
import re
from dataclasses import fields
from pathlib import Path

from ..settings import MAX_STEPS, STEPS_HINT, value_type
from ..errors import MiniSPDFError, one_line
from ..fileio import require_readable
from ..schedules import SparsityConfig
from ..train import TrainConfig
from .budgets import check_budgets, expand_budgets
from .real_tasks import add_real_task

ARM_RE = re.compile(r"^(dense|scratch|(spdf|spsf|eqflop|set|rigl|gmp|vspdf)(\d{1,2})|nm(\d)(\d))$")
# vspdfNN: dense for the last 20% of pre-training unless [schedules] dense_from says otherwise
VSPDF_DENSE_FROM = 0.8
# arm kinds whose masks follow a schedule
SCHEDULE_OF = {"set": "set", "rigl": "rigl", "gmp": "gmp", "nm": "nm"}
BUILTIN_DIR = Path(__file__).parent / "builtin_grids"

# The keys a grid may have, with what each must be; nested tables are checked below.
TOP_KEYS = {"description": str, "inherit": str, "block_size": int, "tokenizer": str, "corpus": str,
            "pretrain": dict, "finetune": dict, "margins": dict, "gates": dict, "sizes": dict,
            "tasks": dict,
            "sets": dict, "blocks": list, "primary": dict, "difficulty": list,
            "assumed_tflops": (int, float),
            "first_seed": int, "schedules": dict, "frontier": dict}
REQUIRED = ("description", "block_size", "tokenizer", "corpus", "pretrain", "finetune", "margins",
            "gates", "sizes",
            "tasks", "sets", "blocks", "primary")
MARGIN_KEYS = ("test_loss", "bleu")
GATE_KEYS = ("min_bleu", "max_bleu", "min_test_loss", "min_benefit", "plateau_ratio", "precision")
SIZE_KEYS = {"preset": str, "overrides": dict, "pretrain_steps": int,
             "tokens_per_param": (int, float),
             # budget, base: set by a block's budgets
             "finetune_steps": int, "budget": float, "base": str}
TASK_KEYS = {"spec": str, "options": dict, "about": str, "eval_inputs": int, "max_new_tokens": int,
             "max_train_inputs": int, "train_refs": int}
BLOCK_KEYS = {"sizes": list, "tasks": list, "sets": list, "arms": list, "seeds": int,
              "budgets": list}
FRONTIER_KEYS = {"reference": str, "measure": str, "level": float, "resamples": int,
                 "holm_alpha": float,
                 "true_effect": float, "power": float}
# what an arm's name sets (vspdfNN: dense_from, unless [schedules] gives it)
ARM_SETS = ("schedule", "nm", "dense_from")
# [schedules] takes the settings of ``minispdf pretrain``'s masks, with their types and bounds
SCHEDULE_KEYS = {f.name: value_type(SparsityConfig, f) for f in fields(SparsityConfig)
                 if f.name in SparsityConfig.SCHEDULE_FIELDS and f.name not in ("schedule", "nm")}
# [pretrain] and [finetune] take TrainConfig's settings by its own names, types and bounds, but for
# those the study sets per job; warmup_frac (a share of the job's steps) becomes warmup_steps in
# train_config, the one place
JOB_SETS = ("max_steps", "warmup_steps", "seed", "device", "progress", "eval_interval")
PHASE_KEYS = {**{f.name: value_type(TrainConfig, f) for f in fields(TrainConfig)
                 if f.name not in JOB_SETS}, "warmup_frac": float}


def parse_arm(arm: str) -> dict:
    """``spdf75`` -> pre-training sparsity 0.75, dense fine-tuning; see the module docstring."""
    m = ARM_RE.match(arm) if isinstance(arm, str) else None
    if not m:
        raise MiniSPDFError(f"unknown arm {arm!r}: use dense, scratch, spdfNN, spsfNN, eqflopNN, "
                            f"setNN, riglNN, "
                            "gmpNN, vspdfNN (NN = sparsity %) or nmNM (e.g. nm24)")
    nm = None
    if m.group(4):
        kind, nm = "nm", f"{m.group(4)}:{m.group(5)}"
        if not 0 < int(m.group(4)) < int(m.group(5)):
            raise MiniSPDFError(f"arm {arm!r}: N:M needs 0 < N < M, e.g. nm24")
        s = 1 - int(m.group(4)) / int(m.group(5))
    else:
        kind = m.group(2) or m.group(1)
        s = int(m.group(3)) / 100 if m.group(3) else 0.0
    if kind != "dense" and kind != "scratch" and s == 0:
        raise MiniSPDFError(f"arm {arm!r}: give a sparsity between 1 and 99 percent")
    return {"arm": arm, "kind": kind, "sparsity": s, "pretrained": kind != "scratch",
            "keep_masks": kind == "spsf", "equal_flops": kind == "eqflop",
            "schedule": SCHEDULE_OF.get(kind, "static"), "dense_tail": kind == "vspdf", "nm": nm}


# ------------------------------------------------------------------------------ files


def _read_toml(path: Path) -> dict:
    import tomllib

    require_readable(path, "grid file", "give a TOML grid file")
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except OSError as e:
        raise MiniSPDFError(
            f"grid file {path} cannot be read ({e.strerror}): check the path") from None
    except tomllib.TOMLDecodeError as e:
        raise MiniSPDFError(
            f"grid file {path} is not valid TOML ({one_line(e)}): fix the syntax") from None
    except UnicodeDecodeError as e:  # TOML is UTF-8 by definition
        raise MiniSPDFError(
            f"grid file {path} is not UTF-8 text ({one_line(e)}): save it as UTF-8") from None


def _merge(base: dict, over: dict) -> dict:
    out = copy.deepcopy(base)
    for k, v in over.items():
        out[k] = (_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict)
                  else copy.deepcopy(v))
    return out


def _load(path: Path, seen: tuple = ()) -> dict:
    if path in seen:
        raise MiniSPDFError(
            f"grid file {path}: inherit makes a loop ({' -> '.join(map(str, seen))}): break it")
    data = _read_toml(path)
    parent = data.pop("inherit", None)
    if parent is None:
        return data
    if not isinstance(parent, str):
        raise MiniSPDFError(
            f"grid file {path}: key inherit must be a grid name or a path, not {parent!r}")
    ppath = (BUILTIN_DIR / f"{parent}.toml" if (BUILTIN_DIR / f"{parent}.toml").is_file()
             else path.parent / parent)
    if not ppath.is_file():
        raise MiniSPDFError(f"grid file {path}: key inherit names {parent!r}, which is neither a "
                            f"built-in grid nor "
                            "a file next to it")
    return _merge(_load(ppath, seen + (path,)), data)


def builtin_names() -> tuple[str, ...]:
    return tuple(sorted(p.stem for p in BUILTIN_DIR.glob("*.toml") if not p.stem.startswith("_")))


def _where(source) -> str:
    return f"grid {source}"


def _typed(source, key: str, value, kind) -> None:
    ok = isinstance(value, kind) and (kind is bool or not isinstance(value, bool))
    if kind is float or kind == (int, float):
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    if not ok:
        want = {bool: "true or false", str: "a string", int: "an integer", float: "a number",
                dict: "a table", list: "a list"}.get(kind, "a number")
        raise MiniSPDFError(f"{_where(source)}: key {key} must be {want}, not {value!r}")


def _check_table(source, prefix: str, table: dict, keys: dict) -> None:
    for k, v in table.items():
        if k not in keys:
            raise MiniSPDFError(
                f"{_where(source)}: unknown key {prefix}{k}: use one of {', '.join(keys)}")
        _typed(source, prefix + k, v, keys[k])


def train_config(table: dict, steps: int = 1, seed: int = 0, phase: str = "",
                 source=None) -> TrainConfig:
    """A phase table of a grid ([pretrain] or [finetune]) as the TrainConfig of a job of ``steps``
    steps and ``seed``, checked by TrainConfig's own bounds (an error names ``phase`` of
    ``source``); the grid's warmup_frac, in [0, 1), is the share of the steps that warm up."""
    frac = table.get("warmup_frac", 0.0)
    try:
        if not 0 <= frac < 1:
            raise MiniSPDFError(f"warmup_frac = {frac} must be in [0, 1) (the share of the steps "
                                "spent warming up)")
        given = {k: v for k, v in table.items() if k != "warmup_frac"}
        return TrainConfig(**given, max_steps=steps, seed=seed, eval_interval=0, progress=False,
                           warmup_steps=max(1, round(frac * steps)))
    except MiniSPDFError as e:
        raise MiniSPDFError(f"{_where(source)}: key {phase}.{e}") from None


def _check_schedules(source, table: dict) -> None:
    """[schedules] by SparsityConfig's types and bounds, the same as on the command line."""
    _check_table(source, "schedules.", table, SCHEDULE_KEYS)
    try:
        SparsityConfig(0.5, **table)
    except MiniSPDFError as e:
        raise MiniSPDFError(f"{_where(source)}: key schedules.{e}") from None


def check_grid(grid: dict, source) -> None:
    """One ``error:`` line naming the first bad key of ``grid`` (from ``source``)."""
    for key in REQUIRED:
        if key not in grid:
            raise MiniSPDFError(
                f"{_where(source)}: missing key {key} (or inherit = \"_cpu\" for the CPU settings)")
    _check_table(source, "", grid, {**TOP_KEYS, "name": str, "source": str})
    _check_settings(grid, source)
    _check_sizes(grid, source)
    _check_tasks_and_sets(grid, source)
    _check_blocks(grid, source)
    _check_numbers(grid, source)
    check_budgets(grid, _where(source))
    _check_frontier(grid, source)
    _check_primary(grid, source)


def _check_settings(grid: dict, source) -> None:
    """[pretrain], [finetune], [margins], [gates] and [schedules]: what every job is run and
    judged by."""
    for phase in ("pretrain", "finetune"):
        _check_table(source, f"{phase}.", grid[phase], PHASE_KEYS)
        train_config(grid[phase], phase=phase, source=source)
    _check_table(source, "margins.", grid["margins"], dict.fromkeys(MARGIN_KEYS, float))
    for k, v in grid["margins"].items():
        if not 0 < v < 1:
            raise MiniSPDFError(f"{_where(source)}: key margins.{k} = {v} must lie between 0 and 1 "
                                f"(a share of "
                                "the pre-training benefit; 0.1 = keep at least 90%)")
    _check_table(source, "gates.", grid["gates"], dict.fromkeys(GATE_KEYS, float))
    _check_schedules(source, grid.get("schedules", {}))


def _check_sizes(grid: dict, source) -> None:
    """Each [sizes.NAME] table: a preset, finetune_steps and one pre-training length."""
    for name, sz in grid["sizes"].items():
        _typed(source, f"sizes.{name}", sz, dict)
        _check_table(source, f"sizes.{name}.", sz, SIZE_KEYS)
        if (("pretrain_steps" in sz) == ("tokens_per_param" in sz) or "finetune_steps" not in sz
            or "preset" not in sz):
            raise MiniSPDFError(f"{_where(source)}: key sizes.{name} needs preset, "
                                f"finetune_steps and one of "
                                "pretrain_steps or tokens_per_param")
        sz.setdefault("overrides", {})


def _check_tasks_and_sets(grid: dict, source) -> None:
    """Each [tasks.NAME] table has its required keys; each set is a fraction of the task's
    training set."""
    for name, t in grid["tasks"].items():
        _typed(source, f"tasks.{name}", t, dict)
        _check_table(source, f"tasks.{name}.", t, TASK_KEYS)
        for k in ("spec", "eval_inputs", "max_new_tokens"):
            if k not in t:
                raise MiniSPDFError(f"{_where(source)}: missing key tasks.{name}.{k}")
        t.setdefault("options", {})
    for name, frac in grid["sets"].items():
        _typed(source, f"sets.{name}", frac, float)
        if not 0 < frac <= 1:
            raise MiniSPDFError(
                f"{_where(source)}: key sets.{name} = {frac} must be a fraction in (0, 1]")


def _check_blocks(grid: dict, source) -> None:
    """Each block names declared sizes, tasks and sets, 1 to 100 seeds and arms that parse."""
    for i, b in enumerate(grid["blocks"]):
        _typed(source, f"blocks[{i}]", b, dict)
        _check_table(source, f"blocks[{i}].", b, BLOCK_KEYS)
        for key, table in (("sizes", grid["sizes"]), ("tasks", grid["tasks"]),
                           ("sets", grid["sets"])):
            missing = [k for k in b.get(key, []) if k not in table]
            if key not in b or missing:
                raise MiniSPDFError(f"{_where(source)}: key blocks[{i}].{key} names undeclared "
                                    f"{key} {missing}: "
                                    f"declare them under [{key}]")
        if not isinstance(b.get("seeds"), int) or not 1 <= b["seeds"] <= 100:
            raise MiniSPDFError(
                f"{_where(source)}: key blocks[{i}].seeds must be an integer from 1 to 100")
        for arm in b.get("arms", []):
            try:
                parse_arm(arm)
            except MiniSPDFError as e:
                raise MiniSPDFError(f"{_where(source)}: key blocks[{i}].arms: {e}") from None


def _check_primary(grid: dict, source) -> None:
    """[primary] names a task, size and set of a block; difficulty orders declared tasks."""
    for key in ("task", "size", "set"):
        if grid["primary"].get(key) not in grid[key + "s"]:
            raise MiniSPDFError(f"{_where(source)}: key primary.{key} = "
                                f"{grid['primary'].get(key)!r} is not a "
                                f"declared {key} of a block")
    for task in grid.get("difficulty", []):
        if task not in grid["tasks"]:
            raise MiniSPDFError(f"{_where(source)}: key difficulty names undeclared task {task!r}")


# Counts that must be positive (and finite: TOML has nan and inf): a 0 or a negative would reach
# the FLOP sums and the plan's estimates ([pretrain] and [finetune] have TrainConfig's bounds).
POSITIVE = ("pretrain_steps", "tokens_per_param", "finetune_steps", "eval_inputs", "max_new_tokens",
            "max_train_inputs", "train_refs")


def _check_numbers(grid: dict, source) -> None:
    tables = [(f"sizes.{n}.", t) for n, t in grid["sizes"].items()] + [
        (f"tasks.{n}.", t) for n, t in grid["tasks"].items()]
    for prefix, table in tables:
        for k, v in table.items():
            # the types are checked above
            if not isinstance(v, (int, float)) or isinstance(v, bool):
                continue
            if not ((v > 0 if k in POSITIVE else v >= 0) and v < math.inf):
                raise MiniSPDFError(f"{_where(source)}: key {prefix}{k} = {v!r} must be a "
                                    f"{'positive' if k in POSITIVE else 'non-negative'} "
                                    f"finite number")
            if k.endswith("_steps") and v > MAX_STEPS:
                raise MiniSPDFError(f"{_where(source)}: key {prefix}{k} = {v!r} is more than "
                                    f"{MAX_STEPS:,} steps "
                                    f"({STEPS_HINT}): declare fewer")


def _check_frontier(grid: dict, source) -> None:
    """The [frontier] table: its keys, its measure and the bounds of its numbers."""
    fr = grid.get("frontier")
    if fr is not None:
        _check_table(source, "frontier.", fr, FRONTIER_KEYS)
        if fr.get("measure", "test_loss") not in MARGIN_KEYS:
            raise MiniSPDFError(
                f"{_where(source)}: key frontier.measure must be one of {', '.join(MARGIN_KEYS)}")
        for key, low, high in (("level", 0, 1), ("holm_alpha", 0, 1), ("power", 0, 1),
                               ("true_effect", 0, 1),
                               ("resamples", 0, 1_000_000)):
            if key in fr and not low < fr[key] < high:
                raise MiniSPDFError(f"{_where(source)}: key frontier.{key} = {fr[key]!r} must lie "
                                    f"between {low:g} and "
                                    f"{high:g} (exclusive)")


def _drop_unused(grid: dict) -> None:
    for key in ("sizes", "tasks", "sets"):
        used = {k for b in grid["blocks"] for k in b.get(key, [])}
        grid[key] = {k: v for k, v in grid[key].items() if k in used}
    # an order of tasks: keep the ones still in the grid
    if isinstance(grid.get("difficulty"), list):
        grid["difficulty"] = [t for t in grid["difficulty"] if t in grid["tasks"]]


def load_grid(name_or_path: str) -> dict:
    """A built-in grid by name, or a TOML grid file by path, merged, pruned and checked."""
    builtin = BUILTIN_DIR / f"{name_or_path}.toml"
    if isinstance(name_or_path, str) and not name_or_path.startswith("_") and builtin.is_file():
        path, name = builtin, name_or_path
    elif (isinstance(name_or_path, str)
          and (name_or_path.endswith(".toml") or os.sep in name_or_path)):
        path = Path(os.path.expanduser(name_or_path))
        if not path.exists():
            raise MiniSPDFError(f"grid file {name_or_path} does not exist: give a TOML grid "
                                f"file or one of "
                                f"{', '.join(builtin_names())}")
        name = path.stem
    else:
        raise MiniSPDFError(f"unknown grid {name_or_path!r}: choose one of "
                            f"{', '.join(builtin_names())} or give a "
                            "TOML grid file (--grid my-grid.toml)")
    grid = _load(path)
    grid.setdefault("description", f"grid file {path}")
    if isinstance(grid.get("blocks"), list) and isinstance(grid.get("sizes"), dict) and all(
            isinstance(b, dict) for b in grid["blocks"]):
        _drop_unused(grid)
    check_grid(grid, path if path.parent != BUILTIN_DIR else name)
    if any("budgets" in b for b in grid["blocks"]):
        expand_budgets(grid)
        _drop_unused(grid)
        if grid["primary"]["size"] not in grid["sizes"]:
            raise MiniSPDFError(f"grid {name}: primary.size {grid['primary']['size']!r} runs only "
                                f"at its budgets: add "
                                "budget 1 to its block, or name a budget size (e.g. nano-x2) as "
                                "the primary size")
    grid["name"] = name
    grid["source"] = "built-in" if path.parent == BUILTIN_DIR else str(path.resolve())
    return grid


GRIDS: dict[str, dict] = {name: load_grid(name) for name in builtin_names()}


def resolve_grid(name: str = "default", seeds: int | None = None,
                 real_tasks: dict | None = None) -> dict:
    """The grid ``name`` (built-in, or a TOML file path) as a plain JSON-able dict; ``seeds``
    overrides every block's seed count, ``real_tasks`` ({"e2e": DIR, ...}) adds a block per real
    task."""
    grid = copy.deepcopy(GRIDS[name]) if name in GRIDS else load_grid(name)
    if seeds is not None:
        if isinstance(seeds, bool) or not isinstance(seeds, int) or not 1 <= seeds <= 100:
            raise MiniSPDFError(
                f"--seeds {seeds!r} must be a positive integer up to 100 (3 or more for intervals)")
        for b in grid["blocks"]:
            b["seeds"] = seeds
    for kind, path in (real_tasks or {}).items():
        if path:
            add_real_task(grid, kind, path)
    return grid
