"""Run folders under stress, with real processes: two writers, interrupts, failed writes, torn logs,
changed settings on resume (issue 20)."""

import contextlib
import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from minispdf.errors import MiniSPDFError
from minispdf.fileio import lock_path, writer_lock

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = ["--preset", "nano", "--block_size", "16", "--n_embd", "32", "--batch_size", "2",
        "--eval_iters", "1",
        "--eval_interval", "0", "--no-progress", "--device", "cpu"]


DATA = {}


@pytest.fixture(scope="module", autouse=True)
def shared_data(tmp_path_factory):
    """One prepared corpus for every process of this module (each would tokenize it again)."""
    DATA["dir"] = str(tmp_path_factory.mktemp("data"))
    yield
    DATA.clear()


def env():
    return {**os.environ, "PYTHONPATH": ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""),
            "HF_HUB_OFFLINE": "1",
            "OMP_NUM_THREADS": "1", "MINISPDF_DATA_DIR": DATA["dir"]}


def minispdf(cwd, *args, **kw):
    """Start ``python -m minispdf ARGS`` in ``cwd``; returns the Popen."""
    return subprocess.Popen([sys.executable, "-m", "minispdf", *args], cwd=cwd, env=env(),
                            text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, **kw)


def finish(proc, timeout=120):
    out, err = proc.communicate(timeout=timeout)
    return proc.returncode, out, err


def errors(err):
    return [line for line in err.splitlines() if line.startswith("error:")]


def log_steps(path):
    with open(path) as f:
        return [json.loads(line) for line in f]


# ---------------------------------------------------------------------------- one writer per folder


HOLD = textwrap.dedent("""
    import contextlib, sys, time
    from minispdf.fileio import writer_lock
    with contextlib.ExitStack() as stack:
        for target in sys.argv[1:]:
            stack.enter_context(writer_lock(target))
        print("locked", flush=True)
        time.sleep(60)
""")


@pytest.fixture
def holder(tmp_path):
    """Start a process that holds the locks of the given targets; it is killed at the end."""
    procs = []

    def start(*targets):
        proc = subprocess.Popen([sys.executable, "-c", HOLD, *map(str, targets)], env=env(),
                                stdout=subprocess.PIPE,
                                text=True)
        procs.append(proc)
        assert proc.stdout.readline().strip() == "locked"
        return proc

    yield start
    for proc in procs:
        proc.kill()
        proc.wait()


def test_a_held_lock_names_its_holder_and_a_killed_holders_lock_is_taken_over(tmp_path, holder):
    target = str(tmp_path / "run")
    proc = holder(target)
    with pytest.raises(MiniSPDFError, match=rf"in use by another minispdf run \(pid {proc.pid}\)"):
        with writer_lock(target):
            pass
    proc.kill()  # SIGKILL: no clean-up, the lock file stays with a dead pid in it
    proc.wait()
    assert os.path.exists(lock_path(target))
    with writer_lock(target) as path:  # the OS dropped the lock with its holder
        assert open(path).read() == str(os.getpid())
    assert not os.path.exists(lock_path(target))  # released: nothing left beside the folder
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("extra", [[], ["--resume"]])
def test_a_run_folder_being_written_is_in_use_not_a_finished_run(tmp_path, holder, capsys, extra):
    """While a run writes its folder (files half there, no checkpoint yet), a second writer hears
    who holds it, not "already holds a run" or "has no ckpt.pt"."""
    from minispdf.cli import main

    run = tmp_path / "run"
    run.mkdir()
    (run / "log.jsonl").write_text('{"step": 1}\n')
    proc = holder(str(run))
    assert main(["pretrain", *TINY, "--max_steps", "2", "--out", str(run), *extra]) == 2
    err = capsys.readouterr().err
    assert (f"is in use by another minispdf run (pid {proc.pid})" in err
            and len(err.strip().splitlines()) == 1), err


def test_every_command_that_writes_a_folder_refuses_a_held_one(tmp_path, holder, monkeypatch,
                                                               capsys):
    from minispdf.cli import main
    from minispdf.study import runner

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MINISPDF_DATA_DIR", DATA["dir"])
    assert main(["pretrain", *TINY, "--max_steps", "1", "--out", "done"]) == 0
    proc = holder("run", "demo", "study", "done/predictions-test.jsonl")
    capsys.readouterr()
    for argv in (["pretrain", *TINY, "--max_steps", "1", "--out", "run"],
                 ["finetune", "--data", "builtin", *TINY, "--max_steps", "1", "--out", "run"],
                 ["demo", "--quick", "--out", "demo"],
                 ["evaluate", "--ckpt", "done", "--limit", "1", "--max_new_tokens", "1"]):
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert errors(err) == [err.strip()] and f"(pid {proc.pid})" in err, (argv, err)
    with pytest.raises(MiniSPDFError, match=f"study run \\(pid {proc.pid}\\)"):
        with runner.Lock("study"):
            pass
    assert not os.path.exists("run") and not os.path.exists("demo") and not os.path.exists("study")


def test_a_symlink_and_its_target_are_one_name(tmp_path):
    (tmp_path / "real").mkdir()
    os.symlink(tmp_path / "real", tmp_path / "link")
    with writer_lock(str(tmp_path / "link")):
        with pytest.raises(MiniSPDFError, match="in use"):
            with writer_lock(str(tmp_path / "real")):
                pass


@pytest.mark.slow
def test_two_pretrains_into_one_folder_one_is_refused_with_the_holders_pid(tmp_path):
    args = ["pretrain", *TINY, "--max_steps", "60", "--out", "race"]
    minispdf(tmp_path, "prepare").wait()  # the corpus once, so that both start training at once
    a, b = minispdf(tmp_path, *args), minispdf(tmp_path, *args)
    # Whoever locks first is paused while it holds the folder, so the two surely overlap however
    # the OS schedules them; the other must then be refused (not wait, not join in).
    lock, pid = lock_path(str(tmp_path / "race")), ""
    while not pid and a.poll() is None and b.poll() is None:
        with contextlib.suppress(FileNotFoundError):
            pid = open(lock).read().strip()
        time.sleep(0.005)
    winner, loser = (a, b) if pid == str(a.pid) else (b, a)
    assert pid == str(winner.pid)
    winner.send_signal(signal.SIGSTOP)
    try:
        code, _, err = finish(loser)
    finally:
        winner.send_signal(signal.SIGCONT)
    # one line
    assert code == 2 and errors(err) == [line for line in err.splitlines() if line.strip()], err
    assert f"race is in use by another minispdf run (pid {winner.pid})" in err, err
    code, _, err = finish(winner)
    assert code == 0, err
    run = tmp_path / "race"
    assert sorted(os.listdir(run)) == ["ckpt.pt", "log.jsonl", "result.json", "settings.json"]
    assert [r["step"] for r in log_steps(run / "log.jsonl") if "loss" in r] == list(range(1, 61))
    assert json.loads((run / "result.json").read_text())["step"] == 60
    assert not [n for n in os.listdir(tmp_path) if n.endswith(".lock")]


# ------------------------------------------------------------------------- interrupts keep the work

STEPS = 24
RUN = ["pretrain", *TINY, "--max_steps", str(STEPS), "--warmup_steps", "4", "--out", "run"]


def trajectory(path):
    """What a bit-exact resume must repeat: every step's loss and lr, and the counters."""
    return [(r["step"], r["loss"], r["lr"], r["flops"], r["tokens"]) for r in log_steps(path)
            if "loss" in r]


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The uninterrupted run, in another process like the interrupted ones."""
    folder = tmp_path_factory.mktemp("reference")
    code, _, err = finish(minispdf(folder, *RUN))
    assert code == 0, err
    return trajectory(folder / "run" / "log.jsonl")


def interrupt(folder, sig, limit=None):
    """Start RUN in ``folder``, send ``sig`` once a random number of steps is logged; returns (code,
    stderr)."""
    import random

    at = random.randint(2, STEPS // 2)
    proc = minispdf(folder, *RUN)
    log = folder / "run" / "log.jsonl"
    while proc.poll() is None and not (log.exists() and log.read_text().count("\n") >= at):
        time.sleep(0.01)
    proc.send_signal(sig)
    code, _, err = finish(proc)
    return code, err


def resume_command(err):
    import shlex

    line = [line for line in err.splitlines() if line.startswith("continue with: minispdf ")]
    assert len(line) == 1, err
    return shlex.split(line[0][len("continue with: minispdf "):])


def checkpoint_step(path):
    import torch

    return torch.load(path, weights_only=True)["step"]


@pytest.mark.slow
def test_sigterm_saves_the_current_step_and_the_printed_command_resumes_bit_exactly(tmp_path,
                                                                                    reference):
    code, err = interrupt(tmp_path, signal.SIGTERM)
    assert code == 128 + signal.SIGTERM, err
    step = checkpoint_step(tmp_path / "run" / "ckpt.pt")
    assert 2 <= step < STEPS and f"SIGTERM at step {step} of {STEPS}" in err, err
    assert trajectory(tmp_path / "run" / "log.jsonl")[-1][0] == step
    code, _, err = finish(minispdf(tmp_path, *resume_command(err)))
    assert code == 0, err
    assert trajectory(tmp_path / "run" / "log.jsonl") == reference


@pytest.mark.slow
def test_sigint_then_a_failed_write_then_a_torn_log_and_the_run_still_ends_as_if_never_stopped(
        tmp_path, reference):
    import resource

    code, err = interrupt(tmp_path, signal.SIGINT)
    assert code == 130 and "checkpoint run/ckpt.pt is saved" in err, err
    # kept, not deleted
    assert sorted(os.listdir(tmp_path / "run")) == ["ckpt.pt", "log.jsonl", "settings.json"]
    ckpt = tmp_path / "run" / "ckpt.pt"
    before, step = ckpt.read_bytes(), checkpoint_step(ckpt)
    assert step < STEPS
    again = resume_command(err)

    def small_files():  # the OS refuses to grow any file past half the checkpoint
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (len(before) // 2, len(before) // 2))

    code, _, err = finish(minispdf(tmp_path, *again, preexec_fn=small_files))
    assert code == 2 and len(errors(err)) == 1 and "Traceback" not in err, err
    assert "cannot write run/ckpt.pt" in err and "previous version" in err and "intact" in err, err
    assert ckpt.read_bytes() == before
    assert not [n for n in os.listdir(tmp_path / "run") if n.startswith(".tmp-")]

    with open(tmp_path / "run" / "log.jsonl", "a") as f:
        f.write('{"step": 9999, "loss": 1.2')  # a run killed while writing its log
    code, _, err = finish(minispdf(tmp_path, *again))
    assert code == 0, err
    assert "dropped the torn last line" in err, err
    assert trajectory(tmp_path / "run" / "log.jsonl") == reference


# ------------------------------------------------------------------------- resume says what changed


def test_a_changed_lr_on_resume_is_refused_then_allowed_by_name_and_recorded(tmp_path, monkeypatch,
                                                                             capsys):
    from minispdf.cli import main

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MINISPDF_DATA_DIR", DATA["dir"])
    base = ["pretrain", *TINY, "--max_steps", "4", "--out", "run"]
    assert main([*base, "--stop_after", "2"]) == 0
    ckpt = tmp_path / "run" / "ckpt.pt"
    before = ckpt.read_bytes()
    capsys.readouterr()
    assert main([*base, "--resume", "--lr", "2e-3", "--batch_size", "3"]) == 2
    err = capsys.readouterr().err
    assert errors(err) == [err.strip()], err
    assert ("(batch_size 2 -> 3, lr 0.001 -> 0.002)" in err
            and "--allow_change batch_size,lr" in err), err
    assert main([*base, "--resume", "--allow_change", "lrr"]) == 2
    assert "--allow_change lrr: no such setting" in capsys.readouterr().err
    assert ckpt.read_bytes() == before  # refusals touch nothing

    assert (main([*base, "--resume", "--lr", "2e-3", "--allow_change", "lr", "--stop_after", "3"])
            == 0)
    saved = json.loads((tmp_path / "run" / "settings.json").read_text())
    assert (saved["lr"] == 0.002
            and saved["history"] == [{"step": 2, "changed": {"lr": [0.001, 0.002]}}])
    # settings.json is still a config file: it continues the run as it is now; a larger max_steps is
    # free
    assert main(["pretrain", "--config", "run/settings.json", "--out", "run", "--resume",
                 "--max_steps", "5",
                 "--stop_after", "0"]) == 0
    saved = json.loads((tmp_path / "run" / "settings.json").read_text())
    assert saved["history"][-1] == {"step": 3, "changed": {"max_steps": [4, 5]}}
    assert json.loads((tmp_path / "run" / "result.json").read_text())["step"] == 5
    import torch

    assert torch.load(ckpt, weights_only=True)["train_config"]["lr"] == 0.002  # the new lr was used


# ----------------------------------------------------------------- the smaller cases: one line each


def one_error(capsys, *argv):
    from minispdf.cli import main

    code = main(list(argv))
    err = capsys.readouterr().err
    assert code == 2 and errors(err) == [err.strip()], err
    return err


def test_deep_nesting_and_wrong_types_in_task_and_predictions_files_are_one_line(tmp_path, capsys):
    from minispdf.evaluate import score_file
    from minispdf.tasks.triples import load_dart_file

    deep = "[" * 200_000 + "]" * 200_000
    (tmp_path / "deep.json").write_text(deep)
    with pytest.raises(MiniSPDFError, match="nested too deeply"):
        load_dart_file(tmp_path / "deep.json")
    (tmp_path / "five.json").write_text(
        json.dumps([{"tripleset": [["a", "b", "c"]], "annotations": 5}]))
    with pytest.raises(MiniSPDFError, match="entry 0 has 'annotations' 5, not a list"):
        load_dart_file(tmp_path / "five.json")
    (tmp_path / "deep.jsonl").write_text('{"prediction": "a", "references": ' + deep + "}\n")
    with pytest.raises(MiniSPDFError, match="nested too deeply"):
        score_file(tmp_path / "deep.jsonl")
    (tmp_path / "empty.jsonl").write_text(json.dumps({"prediction": "a", "references": ["b", ""]})
                                          + "\n")
    err = one_error(capsys, "score", str(tmp_path / "empty.jsonl"))
    assert "line 1 has an empty reference" in err


def test_a_checkpoint_whose_meta_is_not_a_dictionary_is_damaged(tmp_path):
    import torch

    from minispdf.checkpoint import FORMAT, read_checkpoint

    torch.save({"format": FORMAT, "model": {}, "model_config": {}, "meta": "oops"},
               tmp_path / "c.pt")
    with pytest.raises(MiniSPDFError,
                       match="damaged: its 'meta' entry is missing or not a dictionary"):
        read_checkpoint(str(tmp_path / "c.pt"))


def test_flops_takes_the_vocab_size_its_help_lists(capsys):
    from minispdf.cli import main

    assert main(["flops", "--vocab_size", "50304", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["config"]["vocab_size"] == 50304


def test_a_fifo_or_dev_null_is_not_a_regular_file_and_empty_data_is_not_builtin(tmp_path, capsys,
                                                                                monkeypatch):
    monkeypatch.chdir(tmp_path)
    os.mkfifo(tmp_path / "pipe.txt")  # reading it would block forever
    for path in ("pipe.txt", os.devnull):
        assert "is not a regular file" in one_error(capsys, "prepare", "--data", path)
        assert "is not a regular file" in one_error(capsys, "score", path)
        assert "is not a regular file" in one_error(capsys, "pretrain", "--config", path)
    assert "--data is empty" in one_error(capsys, "prepare", "--data=")
    assert "does not exist" in one_error(capsys, "prepare", "--data", "nowhere.txt")


def test_overwrite_through_a_symlink_replaces_the_run_in_its_target(tmp_path, monkeypatch, capsys):
    from minispdf.cli import main

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MINISPDF_DATA_DIR", DATA["dir"])
    (tmp_path / "disk").mkdir()
    os.symlink("disk/run", "run", target_is_directory=True)
    args = ["pretrain", *TINY, "--max_steps", "2", "--out", "run"]
    assert main(args) == 0
    before = (tmp_path / "disk" / "run" / "ckpt.pt").read_bytes()
    assert main([*args, "--overwrite", "--seed", "7"]) == 0
    assert os.path.islink("run") and (tmp_path / "disk" / "run" / "ckpt.pt").read_bytes() != before
    assert (sorted(os.listdir(tmp_path / "disk")) == ["run"]
            and sorted(os.listdir(tmp_path)) == ["disk", "run"])


def test_a_checkpoint_carrying_a_system_call_is_named_as_code_not_as_corrupt(tmp_path):
    import torch

    from minispdf.checkpoint import read_checkpoint

    # torch 2.13: "unsupported GLOBAL"
    torch.save({"format": "minispdf-1", "hook": os.system}, tmp_path / "c.pt")
    with pytest.raises(MiniSPDFError, match="Python objects that a safe load refuses") as e:
        read_checkpoint(str(tmp_path / "c.pt"))
    assert "corrupt" not in str(e.value)


def test_an_interrupted_overwrite_keeps_both_runs(tmp_path, monkeypatch):
    from minispdf.errors import Interrupted
    from minispdf.spdf import pretrain

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MINISPDF_DATA_DIR", DATA["dir"])
    kw = dict(preset="nano", block_size=16, n_embd=32, batch_size=2, eval_iters=1, eval_interval=0,
              progress=False,
              device="cpu", out="run")
    pretrain(max_steps=2, **kw)
    old = (tmp_path / "run" / "ckpt.pt").read_bytes()

    def ctrl_c_at_step_3(event, record):  # a real SIGINT to this process, mid-run
        if event == "step" and record["step"] == 3:
            os.kill(os.getpid(), signal.SIGINT)

    with pytest.raises(Interrupted,
                       match="SIGINT at step 3 of 6: .* the run it replaced is kept in .*run.old"):
        pretrain(max_steps=6, overwrite=True, seed=5, callbacks=[ctrl_c_at_step_3], **kw)
    assert checkpoint_step(tmp_path / "run" / "ckpt.pt") == 3  # the new run, to resume
    assert (tmp_path / "run.old" / "ckpt.pt").read_bytes() == old  # the old one, untouched
    assert sorted(os.listdir(tmp_path)) == ["run", "run.old"]
