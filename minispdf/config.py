"""Settings for the command line: a preset or a config file, then ``--key value`` overrides.

Every command declares its settings as a schema ``{name: (type, default, help)}``. Values come,
in order of precedence, from the command line, a ``--config`` file (JSON or TOML), and the
defaults. Unknown keys and values of the wrong type are errors that name the fix.
"""

from __future__ import annotations

import json
import os
from dataclasses import MISSING, fields

from .errors import MiniSPDFError

TRUE = {"1", "true", "yes", "on"}
FALSE = {"0", "false", "no", "off"}


def schema_from_dataclass(cls, skip=(), helps=None) -> dict:
    """A schema from a dataclass's fields (type taken from the default value)."""
    out = {}
    for f in fields(cls):
        if f.name in skip:
            continue
        default = f.default if f.default is not MISSING else f.default_factory()  # type: ignore[misc]
        out[f.name] = (type(default), default, (helps or {}).get(f.name, ""))
    return out


def convert(name: str, typ, raw):
    """Convert ``raw`` (a string from the command line, or a value from a file) to ``typ``."""
    if raw is None:
        return None
    if typ is bool:
        if isinstance(raw, bool):
            return raw
        if str(raw).lower() in TRUE:
            return True
        if str(raw).lower() in FALSE:
            return False
        raise MiniSPDFError(f"--{name} expects true or false, got {raw!r}")
    if typ is int:
        if isinstance(raw, bool):
            raise MiniSPDFError(f"--{name} expects an integer, got {raw!r}")
        try:
            value = float(raw) if not isinstance(raw, int) else raw
            if value != int(value):
                raise ValueError
            value = int(value)
        except (TypeError, ValueError, OverflowError):
            raise MiniSPDFError(f"--{name} expects an integer, got {raw!r}") from None
        if not -2**63 <= value < 2**63:  # what torch (seeds, sizes) can hold
            raise MiniSPDFError(f"--{name} {raw!r} is out of range: give an integer below 2**63")
        return value
    if typ is float:
        if isinstance(raw, bool):
            raise MiniSPDFError(f"--{name} expects a number, got {raw!r}")
        try:
            return float(raw)
        except (TypeError, ValueError):
            raise MiniSPDFError(f"--{name} expects a number, got {raw!r}") from None
    if typ is str:
        if not isinstance(raw, (str, int, float)) or isinstance(raw, bool):
            raise MiniSPDFError(f"--{name} expects text, got {raw!r}")
        return str(raw)
    raise AssertionError(typ)


def read_config_file(path: str) -> dict:
    if not os.path.exists(path):
        raise MiniSPDFError(f"config file {path} does not exist: check the path given to --config")
    try:
        if path.endswith(".toml"):
            import tomllib
            with open(path, "rb") as f:
                data = tomllib.load(f)
        else:
            with open(path) as f:
                data = json.load(f)
    except Exception as e:
        raise MiniSPDFError(f"config file {path} is not valid {'TOML' if path.endswith('.toml') else 'JSON'} "
                            f"({e}): fix the syntax") from None
    if not isinstance(data, dict):
        raise MiniSPDFError(f"config file {path} must hold a mapping of setting names to values")
    return data


def parse_settings(argv: list[str], schema: dict, flags: dict | None = None) -> dict:
    """Parse ``--key value`` / ``--key=value`` / bare boolean ``--key`` against ``schema``.

    ``flags`` maps extra switch names (no value, like ``--json``) to their defaults.
    ``--config FILE`` loads a JSON/TOML file first; command-line values win.
    Dashes and underscores in keys are interchangeable (``--max-steps`` = ``--max_steps``).
    """
    flags = dict(flags or {})
    given: dict = {}
    config_path = None
    i = 0
    while i < len(argv):
        arg = argv[i]
        if not arg.startswith("--") or arg == "--":
            raise MiniSPDFError(f"unexpected argument {arg!r}: settings are given as --key value")
        key, eq, value = arg[2:].partition("=")
        key = key.replace("-", "_")
        if key in flags:
            if eq:
                flags[key] = convert(key, bool, value)
            else:
                flags[key] = True
            i += 1
            continue
        if key == "config":
            if not eq:
                if i + 1 >= len(argv):
                    raise MiniSPDFError("--config needs a file path")
                value = argv[i + 1]
                i += 1
            config_path = value
            i += 1
            continue
        if key not in schema:
            raise MiniSPDFError(f"unknown setting --{key}: valid settings are "
                                + ", ".join("--" + k for k in sorted(schema)) + (", " if flags else "")
                                + ", ".join("--" + k for k in sorted(flags)))
        typ = schema[key][0]
        if not eq:
            nxt = argv[i + 1] if i + 1 < len(argv) else None
            if typ is bool and (nxt is None or nxt.startswith("--")):
                value = "true"
            elif nxt is None:
                raise MiniSPDFError(f"--{key} needs a value")
            else:
                value = nxt
                i += 1
        given[key] = value
        i += 1

    values = {k: spec[1] for k, spec in schema.items()}
    if config_path:
        for k, v in read_config_file(config_path).items():
            k = k.replace("-", "_")
            if k not in schema:
                raise MiniSPDFError(f"unknown setting {k!r} in {config_path}: valid settings are "
                                    + ", ".join(sorted(schema)))
            if v is None and schema[k][1] is not None:
                raise MiniSPDFError(f"{k!r} is null in {config_path}: give a value or leave the key out "
                                    f"(default {schema[k][1]!r})")
            values[k] = convert(k, schema[k][0], v)
    for k, v in given.items():
        values[k] = convert(k, schema[k][0], v)
    values.update(flags)
    return values


def describe(schema: dict) -> str:
    lines = []
    for k, (typ, default, help_) in sorted(schema.items()):
        lines.append(f"  --{k} {typ.__name__.upper():<6} {help_} (default: {default})")
    return "\n".join(lines)
