"""Settings as dataclasses: a setting is declared once, as a dataclass field made with
:func:`setting` (its default, one line of help, the choices if there is a fixed list, the bounds if
a number has them), in a settings class beside what it sets; :class:`Settings` checks choices,
bounds and types once, for every class. :func:`from_keywords` and :func:`flat` turn the Python
API's flat keywords into these dataclasses and back.

The command line built from the same fields is :mod:`minispdf.config`.
"""

from __future__ import annotations

import argparse
import functools
import math
import typing
from dataclasses import Field, field, fields, is_dataclass, replace

from .errors import MiniSPDFError

# past this a typo is likelier than a plan; the FLOP sums and the schedules go step by step
MAX_STEPS = 1_000_000
STEPS_HINT = "nanoGPT's GPT-2 (124M) run is 600,000 steps"
PATHS = {"DIR": "folder", "FILE": "file", "RUN": "checkpoint or run folder",
         "NAME|FILE": "grid or grid file"}
TRUE = {"1", "true", "yes", "on"}
FALSE = {"0", "false", "no", "off"}


def setting(default, help: str, choices=None, metavar: str | None = None, *, min=None, max=None,
            above=None,
            below=None, hint: str | None = None, **extra) -> Field:
    """A dataclass field with its help text, its choices (listed in ``--help`` and checked) and
    its bounds: ``min``/``max`` inclusive, ``above``/``below`` exclusive. :class:`Settings` checks
    both, and the value's type, once, for every class; ``hint`` ends the error (``"0 turns it
    off"``).

    ``applies=(switch, value)``: the setting only means something when the switch field has that
    value (``("kernels", False)``) or one of a tuple (``("schedule", ("set", "rigl"))``)."""
    meta = dict(help=help, choices=tuple(choices) if choices is not None else None, metavar=metavar,
                **extra)
    if (min, max, above, below) != (None,) * 4:
        lo = (above, True) if above is not None else (min, False)
        hi = (below, True) if below is not None else (max, False)
        meta.update(bounds=(*lo, *hi), hint=hint)
    if isinstance(default, (dict, list)):
        return field(default_factory=lambda: type(default)(default), metadata=meta)
    return field(default=default, metadata=meta)


def device_setting() -> Field:
    """The ``device`` setting, alike in every command that runs a model."""
    return setting("auto", "auto | cpu | cuda | cuda:N | mps", metavar="DEVICE")


class Settings:
    """Base of the settings dataclasses: a field that lists its choices only takes one of them, and
    one with bounds only a number of its type within them (None only where it is the default)."""

    def __post_init__(self):
        for f in fields(self):
            choices, value = f.metadata.get("choices"), getattr(self, f.name)
            if choices and value is not None and value not in choices:
                raise MiniSPDFError(
                    f"unknown {f.name} {value!r}: choose one of {', '.join(map(str, choices))}")
            # '' would be the current folder, or nothing
            if value == "" and f.metadata.get("metavar") in PATHS:
                raise MiniSPDFError(f"{f.name}='' is an empty path: name a "
                                    f"{PATHS[f.metadata['metavar']]} or leave it out")
            bounds, typ = f.metadata.get("bounds"), value_type(type(self), f)
            if bounds and not (value is None is f.default) and not _within(value, typ, *bounds):
                hint = f" ({f.metadata['hint']})" if f.metadata.get("hint") else ""
                raise MiniSPDFError(
                    f"{f.name}={value!r} must be {_bound_words(typ, *bounds)}{hint}")


def _within(value, typ, lo, lo_open, hi, hi_open) -> bool:
    kinds = (int,) if typ is int else (int, float)
    if (isinstance(value, bool) or not isinstance(value, kinds)
        or (isinstance(value, float) and not math.isfinite(value))):
        return False
    return (lo is None or value > lo or (value == lo and not lo_open)) and \
        (hi is None or value < hi or (value == hi and not hi_open))


def _bound_words(typ, lo, lo_open, hi, hi_open) -> str:
    """``min=1`` on an int: "a positive integer"; ``min=0, below=1``: "in [0, 1)"; ..."""
    if hi is None and typ is int and not lo_open:
        return {1: "a positive integer", 0: "a non-negative integer"}.get(lo, f"an integer >= {lo}")
    if hi is None:
        return ("a positive number" if lo_open and lo == 0
                else f"a number {'>' if lo_open else '>='} {lo}")
    if lo is None:
        return f"a number {'<' if hi_open else '<='} {hi}"
    if not lo_open and not hi_open:
        return f"between {lo} and {hi}"
    return f"in {'(' if lo_open else '['}{lo}, {hi}{')' if hi_open else ']'}"


# ------------------------------------------------------------------------------ values


def to_int(raw):
    """An integer from text or a file value; "1e3" is 1000, "1.5" and true are refused."""
    if isinstance(raw, bool):
        raise argparse.ArgumentTypeError(f"expects an integer, got {raw!r}")
    try:
        value = raw if isinstance(raw, int) else float(raw)
        if value != int(value):
            raise ValueError
        value = int(value)
    except (TypeError, ValueError, OverflowError):
        raise argparse.ArgumentTypeError(f"expects an integer, got {raw!r}") from None
    if not -2**63 <= value < 2**63:  # what torch (seeds, sizes) can hold
        raise argparse.ArgumentTypeError(f"{raw!r} is out of range: give an integer below 2**63")
    return value


def to_float(raw):
    if isinstance(raw, bool):
        raise argparse.ArgumentTypeError(f"expects a number, got {raw!r}")
    try:
        return float(raw)
    except (TypeError, ValueError):
        raise argparse.ArgumentTypeError(f"expects a number, got {raw!r}") from None


def to_str(raw):
    if isinstance(raw, bool) or not isinstance(raw, (str, int, float)):
        raise argparse.ArgumentTypeError(f"expects text, got {raw!r}")
    return str(raw)


def to_bool(raw):  # only for config files: on the command line a switch is --x / --no-x
    if isinstance(raw, bool):
        return raw
    if str(raw).lower() in TRUE | FALSE:
        return str(raw).lower() in TRUE
    raise argparse.ArgumentTypeError(f"expects true or false, got {raw!r}")


CONVERTERS = {int: to_int, float: to_float, str: to_str, bool: to_bool}
for _name, _conv in (("int", to_int), ("float", to_float), ("str", to_str)):
    _conv.__name__ = _name  # argparse names the type in some of its messages


def value_type(cls, f: Field):
    """The plain type (bool, int, float, str) a field takes from the command line, or None."""
    hint = _hints(cls)[f.name]
    for t in typing.get_args(hint) or (hint,):
        if t in CONVERTERS:
            return t
    return None


@functools.lru_cache(maxsize=None)
def _hints(cls) -> dict:
    return typing.get_type_hints(cls)


# ------------------------------------------------------------------------------ keywords


def from_keywords(settings: dict, command: str, **slots) -> list:
    """One settings object per concern from ``slots`` (``name=(cls, obj or None)``), each updated
    with the flat keyword ``settings`` that name its fields; None values are left out.

    ``pretrain(preset="nano", sparsity=0.5, max_steps=10)`` fills ModelConfig, SparsityConfig and
    TrainConfig this way; an unknown keyword is an error.
    """
    owner = {}  # keyword -> (slot, the dict field it goes into, or None)
    for slot, (cls, _) in slots.items():
        for f in fields(cls):
            sub = f.metadata.get("fields_of")
            names = ([g.name for g in fields(sub) if g.name not in f.metadata.get("skip", ())]
                     if sub else [f.name])
            owner.update({name: (slot, f.name if sub else None) for name in names})
    unknown = [k for k in settings if k not in owner]
    if unknown:
        raise MiniSPDFError(
            f"unknown setting(s) {', '.join(unknown)}: see `minispdf {command} --help`")
    changes: dict = {slot: {} for slot in slots}
    for key, value in settings.items():
        slot, into = owner[key]
        if value is not None and into:
            changes[slot].setdefault(into, {})[key] = value
        elif value is not None:
            changes[slot][key] = value
    out = []
    for slot, (cls, obj) in slots.items():
        if obj is None:
            out.append(cls(**changes[slot]))
        else:
            merged = {k: {**getattr(obj, k), **v} if isinstance(v, dict) else v
                      for k, v in changes[slot].items()}
            out.append(replace(obj, **merged) if merged else obj)
    return out


def flat(*objs) -> dict:
    """The settings of several dataclasses as one flat dict (the shape ``--config`` reads)."""
    out = {}
    for obj in objs:
        for f in fields(obj):
            value = getattr(obj, f.name)
            if f.metadata.get("fields_of") is not None:
                out.update(value)
            elif not is_dataclass(value):
                out[f.name] = value
    return out
