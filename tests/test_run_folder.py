"""The run folder (``minispdf.run_folder``): a refused --resume writes nothing, and a run killed
while writing a checkpoint leaves a folder that the next command can continue or start again."""

import os
import signal

import pytest
import torch

from minispdf.cli import main

TINY = ["--preset", "nano", "--block_size", "16", "--n_embd", "32", "--batch_size", "2",
        "--eval_iters", "1",
        "--eval_interval", "0", "--no-progress", "--device", "cpu", "--max_chars", "20000"]


def _half_a_checkpoint_then_sigkill(obj, f, *args, **kwargs):
    f.write(b"half a checkpoint")
    f.flush()
    os.kill(os.getpid(), signal.SIGKILL)  # as a kill leaves it: no cleanup runs


@pytest.fixture
def here(tmp_path, monkeypatch, tmp_path_factory):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MINISPDF_DATA_DIR", str(tmp_path_factory.getbasetemp() / "data"))
    return tmp_path


def temps(folder):
    return sorted(n for n in os.listdir(folder) if n.startswith(".tmp-"))


def killed_while_saving(*argv):
    """Run ``minispdf ARGV`` in a forked child whose first checkpoint write is killed midway."""
    pid = os.fork()
    if pid == 0:  # the child: never returns to pytest
        try:
            torch.save = _half_a_checkpoint_then_sigkill
            main(list(argv))
        finally:
            os._exit(1)
    _, status = os.waitpid(pid, 0)
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL, status


def test_a_refused_resume_leaves_the_run_folder_as_it_was(here, capsys):
    base = ["pretrain", *TINY, "--out", "run"]
    assert main([*base, "--max_steps", "4", "--stop_after", "2"]) == 0
    before = {n: (here / "run" / n).read_bytes() for n in os.listdir(here / "run")}
    refusals = {  # each was refused after settings.json had been rewritten with the new settings
        ("--max_steps", "2", "--lr", "2e-3"): "already reached step 2 of max_steps 2",
        ("--max_steps", "4", "--n_layer", "3"): "from another architecture (n_layer 2 vs 3)",
        ("--max_steps", "4",
         "--block_size", "8"): "was trained with block_size 16, not 8: pass --block_size 16",
        ("--max_steps", "4", "--n_head", "1"): "from another architecture (n_head 2 vs 1)",
    }
    capsys.readouterr()
    for extra, needle in refusals.items():
        assert main([*base, *extra, "--resume"]) == 2, extra
        err = capsys.readouterr().err
        assert (err.startswith("error: ") and needle in err
                and len(err.strip().splitlines()) == 1), err
        assert ({n: (here / "run" / n).read_bytes() for n in os.listdir(here / "run")}
                == before), extra


def test_a_kill_at_the_first_checkpoint_points_to_one_way_on(here, capsys):
    killed_while_saving("pretrain", *TINY, "--max_steps", "2", "--out", "run")
    assert temps(here / "run") and not (here / "run" / "ckpt.pt").exists()  # what the kill left
    capsys.readouterr()
    # both say --overwrite: neither sends the user back to the other
    for resume in (["--resume"], []):
        assert main(["pretrain", *TINY, "--max_steps", "2", "--out", "run", *resume]) == 2
        err = capsys.readouterr().err
        assert "stopped before its first checkpoint" in err and "--overwrite" in err, err
    assert main(["pretrain", *TINY, "--max_steps", "2", "--out", "run", "--overwrite"]) == 0
    assert temps(here / "run") == [] and (here / "run" / "result.json").exists()


def test_a_checkpoint_write_killed_midway_keeps_the_last_one_and_the_next_run_clears_its_temp(here):
    base = ["pretrain", *TINY, "--max_steps", "3", "--out", "run"]
    assert main([*base, "--stop_after", "2"]) == 0
    ckpt = (here / "run" / "ckpt.pt").read_bytes()
    killed_while_saving(*base, "--resume")
    assert len(temps(here / "run")) == 1 and (here / "run" / "ckpt.pt").read_bytes() == ckpt
    assert main([*base, "--resume"]) == 0
    assert temps(here / "run") == [] and (here / "run" / "ckpt.pt").read_bytes() != ckpt
