"""The command line generated from the settings dataclasses of :mod:`minispdf.settings`.

The Python API takes the settings dataclasses; the command line is built from the same fields with
argparse (:func:`add_settings`), and :func:`parse` reads a ``--config`` file (JSON or TOML) under
the flags given. Every mistake -- an unknown key, a value of the wrong type, a number out of
bounds, an unknown choice -- is a one-line :class:`~minispdf.errors.MiniSPDFError` that names the
fix. The declaration side (:func:`setting`, :class:`Settings`, :func:`from_keywords`, ...)
is :mod:`minispdf.settings`.
"""

from __future__ import annotations

import argparse
import difflib
import json
import shlex
from dataclasses import MISSING, Field, fields

from .errors import MiniSPDFError
from .settings import CONVERTERS, FALSE, TRUE, to_bool, value_type


# ------------------------------------------------------------------------------ the parser


class Parser(argparse.ArgumentParser):
    """argparse with the kit's errors: one line ``error: ...`` (exit status 2), no usage dump.
    ``help_prog``: the command whose ``--help`` the error points to (default: this parser's)."""

    def __init__(self, *args, help_prog: str | None = None, **kwargs):
        kwargs.setdefault("allow_abbrev", False)  # --max would silently mean --max_steps
        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(*args, **kwargs)
        self.help_prog = help_prog

    def error(self, message):
        raise MiniSPDFError(f"{message}: see `{self.help_prog or self.prog} --help`")


class Switch(argparse.BooleanOptionalAction):
    """A boolean setting: ``--x`` turns it on, ``--no-x`` off; ``--help`` and the usage line show
    the pair as ``--[no-]x``."""

    def format_usage(self):
        return "--[no-]" + self.option_strings[0][2:]


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    def __init__(self, prog):
        super().__init__(prog, max_help_position=32)

    def _format_action_invocation(self, action):
        return (action.format_usage() if isinstance(action, Switch)
                else super()._format_action_invocation(action))

    def _split_lines(self, text, width):  # keep "--no-compile" whole
        import textwrap

        return textwrap.wrap(" ".join(text.split()), width, break_on_hyphens=False)


def _describe_default(f: Field, typ) -> str:
    default = f.default if f.default is not MISSING else None
    if default is None:
        return ""
    if typ is bool:
        return f" (default: --{f.name})" if default else f" (default: --no-{f.name})"
    return (f" (default: {default!r})" if isinstance(default, str) and not default.strip()
            else f" (default: {default})")


def add_settings(parser, cls, title: str | None = None, only=None, skip=(),
                 overrides: bool = False):
    """Add a ``--name`` option to ``parser`` for each field of the dataclass ``cls``.

    ``overrides``: every option defaults to None ("the preset's"); used for the GPTConfig fields
    that change a preset. A dict field with ``fields_of`` metadata adds that dataclass's fields as
    overrides (see ``spdf.ModelConfig.arch``).
    """
    title = title or cls.__doc__.strip().splitlines()[0].rstrip(".")
    # "Training: the optimizer, ..." -> "Training (the optimizer, ...):"
    name, colon, about = title.partition(": ")
    group = parser.add_argument_group(f"{name} ({about})" if colon else title)
    for f in fields(cls):
        if f.name in skip or (only is not None and f.name not in only):
            continue
        sub = f.metadata.get("fields_of")
        if sub is not None:
            add_settings(parser, sub, title=f.metadata["help"], skip=f.metadata.get("skip", ()),
                         overrides=True)
            continue
        typ = value_type(cls, f)
        if typ is None or "help" not in f.metadata:
            continue
        help_ = (f.metadata["help"]
                 + (" (default: the preset's)" if overrides else _describe_default(f, typ)))
        default = (None if overrides
                   else (f.default if f.default is not MISSING else f.default_factory()))
        choices, metavar = f.metadata.get("choices"), f.metadata.get("metavar")
        # a long list reads better in the help than the usage
        if choices and len(",".join(map(str, choices))) > 24:
            metavar, help_ = (metavar or f.name.upper(),
                              help_ + ": one of " + ", ".join(map(str, choices)))
        elif choices:
            metavar = metavar or "{" + ",".join(map(str, choices)) + "}"
        if f.metadata.get("positional"):
            action = group.add_argument(f.name, type=CONVERTERS[typ],
                                        metavar=metavar or f.name.upper(),
                                        nargs="?" if default is None else None, default=default)
        elif typ is bool:
            action = group.add_argument("--" + f.name, action=Switch, default=default)
        elif f.metadata.get("append"):  # repeatable: a list of the values given
            action = group.add_argument("--" + f.name, action="append", type=CONVERTERS[typ],
                                        default=default,
                                        metavar=metavar or "TEXT")
        else:
            action = group.add_argument("--" + f.name, type=CONVERTERS[typ], default=default,
                                        metavar=metavar or {int: "N", float: "X", str: "TEXT"}[typ])
        # set after: BooleanOptionalAction adds its own default
        action.help = help_.replace("%", "%%")
        # (switch, value) or None
        action.applies = f.metadata.get("applies") or getattr(cls, "APPLIES", None)
    return group


def build(cls, args: argparse.Namespace, **changes):
    """An instance of the settings dataclass ``cls`` from parsed arguments (plus ``changes``)."""
    values = {}
    for f in fields(cls):
        sub = f.metadata.get("fields_of")
        if sub is not None:  # the overrides of another dataclass's fields, those that were given
            values[f.name] = {g.name: getattr(args, g.name) for g in fields(sub)
                              if getattr(args, g.name, None) is not None}
        elif hasattr(args, f.name):
            values[f.name] = getattr(args, f.name)
    return cls(**{**values, **changes})


# ------------------------------------------------------------------------------ parsing


def _options(parser: argparse.ArgumentParser) -> dict:
    """``{spelling: option}``: every option string, also with '-' and '_' swapped in its name."""
    out = {}
    for action in parser._actions:
        for opt in action.option_strings:
            if opt.startswith("--"):
                name = opt[2:]
                prefix = ("no-" if isinstance(action, argparse.BooleanOptionalAction)
                          and name.startswith("no-") else "")
                rest = name[len(prefix):]
                for variant in (rest, rest.replace("_", "-"), rest.replace("-", "_")):
                    for p in {prefix, prefix.replace("-", "_")}:
                        out["--" + p + variant] = opt
    return out


def normalize(parser: argparse.ArgumentParser, argv: list[str]) -> list[str]:
    """``--max-steps`` = ``--max_steps``, ``--no_keep_masks`` = ``--no-keep_masks``, and
    ``--keep_masks=false`` = ``--no-keep_masks`` (the ``=`` form leaves no doubt what the value
    is)."""
    spellings = _options(parser)
    switches = {opt: a for a in parser._actions if isinstance(a, argparse.BooleanOptionalAction)
                for opt in a.option_strings}
    out = []
    for arg in argv:
        key, eq, value = arg.partition("=")
        key = spellings.get(key, key) if arg.startswith("--") else key
        if eq and key in switches:
            on, off = switches[key].option_strings
            if value.lower() not in TRUE | FALSE:
                raise MiniSPDFError(
                    f"{on} expects true or false, got {value!r}: write {on} or {off}")
            out.append(on if (value.lower() in TRUE) == (key == on) else off)
        else:
            out.append(key + eq + value)
    return out


def _unknown(parser: argparse.ArgumentParser, extra: list[str], argv: list[str]) -> MiniSPDFError:
    arg, where = extra[0], f"`{parser.prog} --help` lists the settings"
    if arg.startswith("-"):
        key = arg.partition("=")[0]
        close = difflib.get_close_matches(key,
                                          [o for a in parser._actions for o in a.option_strings],
                                          n=1)
        return MiniSPDFError(f"unknown setting {key}"
                             + (f" (did you mean {close[0]}?)" if close else "") + f": {where}")
    before = argv[argv.index(arg) - 1] if argv.index(arg) > 0 else ""
    switch = [a for a in parser._actions if before in a.option_strings and a.nargs == 0]
    # the old `--progress false`
    if switch and isinstance(switch[0], argparse.BooleanOptionalAction):
        on, off = switch[0].option_strings
        return MiniSPDFError(
            f"{before} is a switch and takes no value: write {on} or {off}, not {before} {arg}")
    return MiniSPDFError(
        f"unexpected argument {arg!r}: settings are given as --NAME VALUE; {where}")


def read_config_file(path: str) -> dict:
    from .fileio import file_problem

    why = file_problem(path)
    if why:
        raise MiniSPDFError(f"config file {path} {why}: check the path given to --config")
    try:
        if path.endswith(".toml"):
            import tomllib
            with open(path, "rb") as f:
                data = tomllib.load(f)
        else:
            with open(path) as f:
                data = json.load(f)
    except Exception as e:
        raise MiniSPDFError(f"config file {path} is not valid "
                            f"{'TOML' if path.endswith('.toml') else 'JSON'} "
                            f"({e}): fix the syntax") from None
    if not isinstance(data, dict):
        raise MiniSPDFError(f"config file {path} must hold a mapping of setting names to values")
    return data


def config_defaults(parser: argparse.ArgumentParser, path: str) -> dict:
    """The settings in a config file, checked and converted like the command line's."""
    actions = {a.dest: a for a in parser._actions
               if a.option_strings and a.dest not in ("help", "config")}
    values = {}
    for key, value in read_config_file(path).items():
        key = key.replace("-", "_")
        # a run's settings.json: the changes made on --resume, a record, not a setting
        if key == "history":
            continue
        if key not in actions:
            close = difflib.get_close_matches(key, actions, n=1)
            raise MiniSPDFError(f"unknown setting {key!r} in {path}"
                                + (f" (did you mean {close[0]!r}?)" if close else "")
                                + f": `{parser.prog} --help` lists the settings")
        action = actions[key]
        if value is None:
            if action.default is not None:
                raise MiniSPDFError(f"{key!r} is null in {path}: give a value or leave the key out "
                                    f"(default {action.default!r})")
            values[key] = None
            continue
        convert = to_bool if action.nargs == 0 else action.type
        try:
            values[key] = convert(value)
        except argparse.ArgumentTypeError as e:
            raise MiniSPDFError(f"{key!r} in {path}: {e}") from None
    return values


def parse(parser: argparse.ArgumentParser, argv: list[str]) -> argparse.Namespace:
    """Parse ``argv``; a ``--config FILE`` fills in the settings that no flag gives."""
    argv = normalize(parser, argv)
    args, extra = parser.parse_known_args(argv)
    if extra:
        raise _unknown(parser, extra, argv)
    if getattr(args, "config", None) is not None:  # --config '' too: refused, not ignored
        parser.set_defaults(**config_defaults(parser, args.config))
        args = parser.parse_args(argv)
    keys = {arg.partition("=")[0] for arg in argv}
    # set by a flag, not a default
    args._given = {a.dest for a in parser._actions if keys & set(a.option_strings)}
    _check_applies(parser, args)
    return args


def given(args: argparse.Namespace) -> set[str]:
    """The settings that a flag on the command line set (not a default, not a --config file)."""
    return set(getattr(args, "_given", ()))


def _check_applies(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """A flag given for the other mode of a switch (``applies``) is an error, not silently
    ignored."""
    for action in parser._actions:
        switch, on = getattr(action, "applies", None) or (None, None)
        if switch is None or action.dest not in args._given or getattr(args, switch) in (
                on if isinstance(on, tuple) else (on,)):
            continue
        if isinstance(on, tuple):  # the modes of a choice: (schedule, ("set", "rigl"))
            raise MiniSPDFError(f"--{action.dest} applies only with --{switch} "
                                f"{' or '.join(on)}, not "
                                f"--{switch} {getattr(args, switch)}: add --{switch} "
                                f"{on[0]}, or drop it")
        if on:
            raise MiniSPDFError(
                f"unknown setting --{action.dest} without --{switch}: add --{switch} or drop it")
        raise MiniSPDFError(f"unknown setting --{action.dest} with --{switch}: it applies "
                            f"only without "
                            f"--{switch}; drop it")


def as_flag(name: str, value) -> str:
    """A setting's value as the command line writes it: ``--no-keep_masks``, ``--lr 0.001``; None:
    nothing."""
    if isinstance(value, bool):
        return f"--{name}" if value else f"--no-{name}"
    return "" if value is None else f"--{name} {shlex.quote(str(value))}"


def add_config_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", metavar="FILE",
                        help="read settings from a JSON or TOML file; flags given here win")
