"""Bad input: the generated suite (minispdf.badinput) over the commands, its judge, and the fixes it
found."""

import ast
import builtins
import json
import os
from pathlib import Path

import pytest

import minispdf
from minispdf import badinput
from minispdf.cli import build_parser, main
from minispdf.errors import MiniSPDFError

os.environ["HF_HUB_OFFLINE"] = "1"


def test_each_kind_of_bad_value_gives_one_error_line_and_changes_nothing():
    outcomes = badinput.run_suite(badinput.all_cases(fast=True))
    # none accepted: each of these must be refused
    assert [o for o in outcomes if o.verdict != "clean"] == []
    assert {o.case.kind for o in outcomes} >= {"number", "choice", "path", "task", "config", "mode",
                                               "size"}
    assert len(outcomes) > 60


def test_every_option_of_every_command_is_tried():
    tried = {(c.command, c.argv[-1].partition("=")[0]) for c in badinput.generated()}
    for name, parser in build_parser()[1].items():
        for action in parser._actions:
            if action.option_strings and action.nargs != 0 and action.dest != "help":
                assert (name, f"--{action.dest}") in tried, (name, action.dest)


@pytest.mark.parametrize("behaviour, verdict", [
    (lambda argv: __import__("time").sleep(5), "hang"),
    (lambda argv: {}["no such key"], "traceback"),
    (lambda argv: print("error: one\nerror: two", file=__import__("sys").stderr) or 2,
     "exit 2, 2 lines"),
    (lambda argv: open("made", "w").close()
     or print("error: refused", file=__import__("sys").stderr) or 2,
     "changed files"),
    (lambda argv: print("error: pass --keep_masks False", file=__import__("sys").stderr) or 2,
     "bad hint"),
    (lambda argv: 0, "accepted"),
])
def test_the_judge_fails_what_it_should(tmp_path, monkeypatch, behaviour, verdict):
    monkeypatch.setattr(badinput.cli, "main", behaviour)
    monkeypatch.chdir(tmp_path)
    assert badinput.run_case(badinput.Case("sample", [], "test"), str(tmp_path),
                             timeout=0.2).verdict == verdict


def _template(node) -> str:
    """An error message's text as written in the code, ``{}`` for each value filled in at run
    time."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.JoinedStr):
        return "".join(_template(v) if isinstance(v, ast.Constant) else "{}" for v in node.values)
    if isinstance(node, ast.BinOp):
        return _template(node.left) + _template(node.right)
    return "{}"


def test_every_fix_that_an_error_message_suggests_is_accepted_by_the_parser():
    parsers, wrong = badinput.all_parsers(), {}
    for path in Path(minispdf.__file__).parent.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if (isinstance(node, ast.Call) and getattr(node.func, "id", None) == "MiniSPDFError"
                and node.args):
                bad = badinput.bad_hints(_template(node.args[0]), parsers)
                if bad:
                    wrong[f"{path.name}:{node.lineno}"] = bad
    assert wrong == {}
    assert badinput.bad_hints("pass --keep_masks False to continue",
                              parsers) == ["--keep_masks False"]
    assert badinput.bad_hints("pass --no-keep_masks to continue, or --task None",
                              parsers) == ["--task None"]
    assert badinput.bad_hints("use --schedule nm, --lr 0.5 or --max_steps N", parsers) == []


def run(capsys, *argv):
    code = main(list(argv))
    return code, capsys.readouterr().err


@pytest.mark.parametrize("argv, needle", [
    (["flops", "--preset", "nano", "--nm", "1:4"],
     "--nm applies only with --schedule nm, not --schedule static"),
    (["flops", "--preset", "nano", "--schedule", "gmp", "--drop_fraction", "0.2"],
     "--drop_fraction applies only"),
    (["pretrain", "--out", ""], "out='' is an empty path"),
    (["pretrain", "--preset", "nano", "--method", "magnitude"],
     "--method does nothing at --sparsity 0 (a dense run)"),
    (["pretrain", "--preset", "nano", "--mask_seed", "3"],
     "--mask_seed does nothing at --sparsity 0"),
    (["score", "preds.jsonl", "--task", "dart:release.json"],
     "takes the task's name (dart), not its file"),
    (["reproduce", "--report", "results/default", "--dry_run"],
     "--dry_run does nothing with --report"),
    (["reproduce", "--cells", "3", "--dry_run"], "--cells applies only with --verify DIR"),
    (["pretrain", "--preset", "nano", "--n_layer", "2", "--n_embd", "65536", "--n_head", "1"],
     "needs at least"),
    (["pretrain", "--max_steps", "1e9"], "max_steps=1000000000 must be between 1 and 1000000"),
])
def test_options_that_would_do_nothing_or_too_much_are_refused_before_any_work(capsys, tmp_path,
                                                                               monkeypatch,
                                                                                  argv, needle):
    monkeypatch.chdir(tmp_path)
    code, err = run(capsys, *argv)
    assert code == 2 and needle in err and len(err.strip().splitlines()) == 1, err
    assert os.listdir(tmp_path) == []


def test_grid_files_are_refused_by_type_encoding_and_size(tmp_path):
    from minispdf.study.grids import load_grid

    os.mkfifo(tmp_path / "fifo.toml")
    (tmp_path / "latin1.toml").write_bytes(b'description = "caf\xe9"\n')
    for name, steps in (("negative", -5), ("huge", 10**15), ("nan", "nan")):
        (tmp_path / f"{name}.toml").write_text(f'inherit = "smoke"\n[sizes.nano]\npreset = "nano"\n'
                                               f'pretrain_steps = {steps}\nfinetune_steps = 2\n')
    for name, needle in (("fifo", "is not a regular file (a pipe, device or socket)"),
                         ("latin1", "is not UTF-8"),
                         ("negative", "pretrain_steps = -5 must be a positive finite number"),
                         ("huge", "is more than 1,000,000 steps"),
                         ("nan", "must be an integer, not nan")):
        with pytest.raises(MiniSPDFError,
                           match=".*".join(map(__import__("re").escape, needle.split(".*")))):
            load_grid(str(tmp_path / f"{name}.toml"))


def test_a_checkpoint_in_a_fifo_is_refused_without_opening_it(tmp_path):
    from minispdf.checkpoint import read_checkpoint

    os.makedirs(tmp_path / "run")
    os.mkfifo(tmp_path / "run" / "ckpt.pt")
    with pytest.raises(MiniSPDFError, match="is not a regular file"):
        read_checkpoint(str(tmp_path / "run"))


def test_a_notebook_in_an_old_nbformat_is_an_error_not_no_exercises(tmp_path):
    from minispdf.assignments.notebooks import read_notebook

    path = tmp_path / "old.ipynb"
    path.write_text(json.dumps({"nbformat": 3, "nbformat_minor": 0, "metadata": {},
                                "worksheets": [{"cells": []}]}))
    with pytest.raises(MiniSPDFError,
                       match="is in nbformat 3, not 4: open it in Jupyter and save it again"):
        read_notebook(path)


def test_a_switch_is_suggested_as_the_parser_takes_it():
    from minispdf.config import as_flag

    assert [as_flag("keep_masks", False), as_flag("keep_masks", True), as_flag("task", "e2e"),
            as_flag("task", None)] == ["--no-keep_masks", "--keep_masks", "--task e2e", ""]


def test_ctrl_c_while_the_kit_loads_is_one_line(monkeypatch, capsys):
    from minispdf.__main__ import run as start

    real = builtins.__import__

    def interrupted(name, globals=None, locals=None, fromlist=(), level=0):
        if name == "cli" and level == 1:
            raise KeyboardInterrupt
        return real(name, globals, locals, fromlist, level)

    monkeypatch.setattr(builtins, "__import__", interrupted)
    assert start() == 130
    assert capsys.readouterr().err == "interrupted: nothing was started\n"


def test_a_real_task_folder_is_refused_by_type_naming_the_option_given(tmp_path, capsys):
    os.mkfifo(tmp_path / "fifo")
    assert main(["reproduce", "--dry_run", "--grid", "smoke", "--e2e", str(tmp_path / "fifo")]) == 2
    err = capsys.readouterr().err
    assert "--e2e" in err and "--task" not in err and len(err.strip().splitlines()) == 1, err


@pytest.mark.parametrize("value", ["", " , ", "-"])
def test_allow_change_that_names_nothing_is_an_error(value, tmp_path, capsys):
    argv = ["pretrain", "--preset", "nano", "--max_steps", "1", "--out", str(tmp_path / "run")]
    assert main([*argv, f"--allow_change={value}"]) == 2
    assert "--allow_change needs the name of a setting" in capsys.readouterr().err
    assert os.listdir(tmp_path) == []
