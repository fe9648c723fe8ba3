"""Run folders under stress, with real processes: two writers, interrupts, failed writes, torn logs,
changed settings on resume (issue 20)."""

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
TINY = ["--preset", "nano", "--block_size", "16", "--n_embd", "32", "--batch_size", "2", "--eval_iters", "1",
        "--eval_interval", "0", "--no-progress", "--device", "cpu"]


def env():
    return {**os.environ, "PYTHONPATH": ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""), "HF_HUB_OFFLINE": "1",
            "OMP_NUM_THREADS": "1"}


def minispdf(cwd, *args, **kw):
    """Start ``python -m minispdf ARGS`` in ``cwd``; returns the Popen."""
    return subprocess.Popen([sys.executable, "-m", "minispdf", *args], cwd=cwd, env=env(), text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, **kw)


def finish(proc, timeout=120):
    out, err = proc.communicate(timeout=timeout)
    return proc.returncode, out, err


def errors(err):
    return [line for line in err.splitlines() if line.startswith("error:")]


def log_steps(path):
    with open(path) as f:
        return [json.loads(line) for line in f]


# ------------------------------------------------------------------------------ one writer per folder


HOLD = textwrap.dedent("""
    import sys, time
    from minispdf.fileio import writer_lock
    with writer_lock(sys.argv[1]):
        print("locked", flush=True)
        time.sleep(60)
""")


def test_a_held_lock_names_its_holder_and_a_killed_holders_lock_is_taken_over(tmp_path):
    target = str(tmp_path / "run")
    holder = subprocess.Popen([sys.executable, "-c", HOLD, target], env=env(), stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(MiniSPDFError, match=rf"in use by another minispdf run \(pid {holder.pid}\)"):
            with writer_lock(target):
                pass
    finally:
        holder.kill()  # SIGKILL: no clean-up, the lock file stays with a dead pid in it
        holder.wait()
    assert os.path.exists(lock_path(target))
    with writer_lock(target) as path:  # the OS dropped the lock with its holder
        assert open(path).read() == str(os.getpid())
    assert not os.path.exists(lock_path(target))  # released: nothing left beside the folder
    assert os.listdir(tmp_path) == []


def test_a_symlink_and_its_target_are_one_name(tmp_path):
    (tmp_path / "real").mkdir()
    os.symlink(tmp_path / "real", tmp_path / "link")
    with writer_lock(str(tmp_path / "link")):
        with pytest.raises(MiniSPDFError, match="in use"):
            with writer_lock(str(tmp_path / "real")):
                pass


def test_two_pretrains_into_one_folder_one_is_refused_with_the_holders_pid(tmp_path):
    args = ["pretrain", *TINY, "--max_steps", "200", "--out", "race"]
    minispdf(tmp_path, "prepare").wait()  # the corpus once, so that both start training at once
    a, b = minispdf(tmp_path, *args), minispdf(tmp_path, *args)
    (ca, _, ea), (cb, _, eb) = finish(a), finish(b)
    assert sorted([ca, cb]) == [0, 2], (ea, eb)
    winner, loser_err = (a, eb) if ca == 0 else (b, ea)
    assert errors(loser_err) == [line for line in loser_err.splitlines() if line.strip()], loser_err  # one line
    assert f"(pid {winner.pid})" in loser_err and "race is in use" in loser_err, loser_err
    run = tmp_path / "race"
    assert sorted(os.listdir(run)) == ["ckpt.pt", "log.jsonl", "result.json", "settings.json"]
    assert [r["step"] for r in log_steps(run / "log.jsonl") if "loss" in r] == list(range(1, 201))
    assert json.loads((run / "result.json").read_text())["step"] == 200
    assert not [n for n in os.listdir(tmp_path) if n.endswith(".lock")]
