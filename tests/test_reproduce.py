"""``minispdf.reproduce``: the smoke grid end to end, resuming, crash safety, dry run, bad arguments."""

import json
import os
import shutil
import subprocess
import sys

import pytest

from minispdf import reproduce, spdf
from minispdf.errors import MiniSPDFError

os.environ["HF_HUB_OFFLINE"] = "1"

OUTPUTS = ("results.json", "results.csv", "summary.csv", "summary.md", "README_section.md", *reproduce.FIGURES)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    """Tokenized corpora go to a temp folder, never into the checkout."""
    path = str(tmp_path_factory.mktemp("data"))
    old = os.environ.get("MINISPDF_DATA_DIR")
    os.environ["MINISPDF_DATA_DIR"] = path
    yield path
    if old is None:
        os.environ.pop("MINISPDF_DATA_DIR", None)
    else:
        os.environ["MINISPDF_DATA_DIR"] = old


class Counter:
    """Wraps spdf.pretrain / spdf.finetune, counting calls; ``fail_at`` makes the Nth call raise."""

    def __init__(self, monkeypatch, fail_at=None):
        self.calls = {"pretrain": 0, "finetune": 0}
        self.fail_at = fail_at
        for name in ("pretrain", "finetune"):
            real = getattr(spdf, name)
            monkeypatch.setattr(spdf, name, self._wrap(name, real))

    def _wrap(self, name, real):
        def wrapper(*args, **kwargs):
            self.calls[name] += 1
            if self.fail_at and name == "finetune" and self.calls[name] == self.fail_at:
                raise RuntimeError("simulated crash inside a cell")
            return real(*args, **kwargs)
        return wrapper


def _mtimes(folder):
    return {f: os.stat(os.path.join(folder, f)).st_mtime_ns for f in sorted(os.listdir(folder))}


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory, data_dir):
    """One smoke-grid run shared by the tests that only read it (or copy it)."""
    out = str(tmp_path_factory.mktemp("smoke") / "out")
    mp = pytest.MonkeyPatch()
    counter = Counter(mp)
    try:
        code = reproduce.main(["--grid", "smoke", "--out", out])
    finally:
        mp.undo()
    return out, code, counter.calls


def test_smoke_grid_end_to_end(smoke_run):
    out, code, calls = smoke_run
    assert code == 0
    for name in OUTPUTS:
        assert os.path.getsize(os.path.join(out, name)) > 0, name
    for png in reproduce.FIGURES:
        with open(os.path.join(out, png), "rb") as f:
            assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    grid = reproduce.resolve_grid("smoke")
    pretrains, cells = reproduce.plan(grid)
    n_sizes, n_sp, n_seeds = len(grid["sizes"]), len(grid["sparsities"]), grid["seeds"]
    # pre-training shared: once per (size, sparsity, seed), then many fine-tunes each
    assert len(pretrains) == n_sizes * n_sp * n_seeds == calls["pretrain"]
    arms = n_sp + (n_sp - 1) + 1  # SPDF per sparsity (0% = dense), SPSF per nonzero sparsity, scratch once
    assert len(cells) == n_sizes * n_seeds * len(grid["set_fracs"]) * len(grid["tasks"]) * arms == calls["finetune"]
    res = json.load(open(os.path.join(out, "results.json")))
    assert res["n_cells_done"] == res["n_cells"] == len(cells) and res["timing"]["complete"]
    assert len(res["rows"]) == len(cells)
    assert {r["arm"] for r in res["rows"]} == {"dense", "spdf75", "spsf75", "scratch"}
    assert all(r["bleu"] is not None and r["test_loss"] > 0 for r in res["rows"])
    scratch = [r for r in res["rows"] if r["arm"] == "scratch"]
    assert all(r["pretrain_flops"] == 0 and r["sparsity"] is None for r in scratch)
    sparse = [r for r in res["rows"] if r["arm"] == "spdf75"]
    assert all(r["pretrain_flops"] < r["pretrain_flops_dense"] for r in sparse)
    # the summary: one record per (task, size, set size, arm) with n seeds, and paired gaps to dense
    assert len(res["summary"]) == len(cells) // n_seeds
    rec = next(r for r in res["summary"] if r["arm"] == "spdf75")
    assert rec["n_seeds"] == n_seeds and rec["gap_test_loss_n"] == n_seeds and rec["bleu_std"] is not None
    with open(os.path.join(out, "results.csv")) as f:
        assert len(f.read().strip().splitlines()) == 1 + len(cells)
    ids = {c["id"] for c in res["claims"]}
    assert {"flops", "spsf_worse_bleu", "larger_models_test_loss", "harder_tasks_bleu"} <= ids
    text = open(os.path.join(out, "README_section.md")).read()
    assert "results/gap_to_dense_bleu.png" in text and "Commit:" in text and "| claim" in text
    assert res["commit"].split()[0] in text
    # the 2.5x headline is the kit's own arithmetic
    assert next(c for c in res["claims"] if c["id"] == "flops")["verdict"].startswith("reproduces")
    assert not os.path.exists(os.path.join(out, ".reproduce.lock"))


def test_rerun_skips_finished_cells(smoke_run, tmp_path, monkeypatch):
    src, _, _ = smoke_run
    out = str(tmp_path / "copy")
    shutil.copytree(src, out)
    before = _mtimes(os.path.join(out, "cells"))
    pre_before = _mtimes(os.path.join(out, "pretrain"))
    counter = Counter(monkeypatch)
    assert reproduce.main(["--grid", "smoke", "--out", out]) == 0
    assert counter.calls == {"pretrain": 0, "finetune": 0}
    assert _mtimes(os.path.join(out, "cells")) == before
    assert _mtimes(os.path.join(out, "pretrain")) == pre_before
    res = json.load(open(os.path.join(out, "results.json")))
    assert res["n_cells_done"] == res["n_cells"] and res["timing"]["jobs_run"] == 0


def test_crash_inside_cell_keeps_finished_cells_and_next_run_completes(tmp_path, monkeypatch, data_dir):
    out = str(tmp_path / "out")
    argv = ["--grid", "smoke", "--seeds", "1", "--out", out]
    counter = Counter(monkeypatch, fail_at=5)
    with pytest.raises(RuntimeError, match="simulated crash"):
        reproduce.main(argv)
    cells_dir = os.path.join(out, "cells")
    finished = _mtimes(cells_dir)
    assert len(finished) == 4  # the four cells before the crash, each complete
    contents = {f: open(os.path.join(cells_dir, f)).read() for f in finished}
    assert all(json.loads(c)["row"]["test_loss"] > 0 for c in contents.values())
    assert not os.path.exists(os.path.join(out, ".reproduce.lock"))
    assert not os.path.exists(os.path.join(out, "results.json"))

    # a killed run's leftovers: a temp folder, and a pre-training folder without its summary
    os.makedirs(os.path.join(out, "pretrain", ".tmp-killed-run"))
    grid = reproduce.resolve_grid("smoke", seeds=1)
    pretrains, cells = reproduce.plan(grid)
    todo = [p for p in pretrains if not os.path.isdir(os.path.join(out, "pretrain", reproduce.pretrain_name(p)))]
    partial = os.path.join(out, "pretrain", reproduce.pretrain_name(todo[0]))
    os.makedirs(partial)
    with open(os.path.join(partial, "log.jsonl"), "w") as f:
        f.write('{"step": 1, "loss": 5.0}\n')

    monkeypatch.undo()
    counter = Counter(monkeypatch)
    assert reproduce.main(argv) == 0
    assert counter.calls["finetune"] == len(cells) - len(finished)
    after = _mtimes(cells_dir)
    assert len(after) == len(cells)
    assert {f: after[f] for f in finished} == finished  # untouched
    assert all(open(os.path.join(cells_dir, f)).read() == c for f, c in contents.items())
    assert not os.path.exists(os.path.join(out, "pretrain", ".tmp-killed-run"))
    assert os.path.exists(os.path.join(partial, "summary.json")) and os.path.exists(os.path.join(partial, "ckpt.pt"))
    res = json.load(open(os.path.join(out, "results.json")))
    assert res["n_cells_done"] == res["n_cells"] == len(cells)


def test_changed_grid_does_not_reuse_stale_cells(smoke_run):
    grid = reproduce.resolve_grid("smoke")
    _, cells = reproduce.plan(grid)
    grid["sizes"]["nano"]["finetune"]["steps"] += 1
    _, changed = reproduce.plan(grid)
    old = {c["name"] for c in cells}
    assert sum(c["name"] not in old for c in changed) == sum(c["spec"]["size"] == "nano" for c in changed)


def test_dry_run_prints_estimate_and_trains_nothing(tmp_path, capsys, monkeypatch, data_dir):
    out = str(tmp_path / "out")
    counter = Counter(monkeypatch)
    assert reproduce.main(["--grid", "smoke", "--dry-run", "--out", out]) == 0
    text = capsys.readouterr().out
    assert "estimated time" in text and "ESTIMATE" in text and "dry run" in text
    assert "jobs: 8 pre-training runs (8 to run), 32 fine-tuning cells (32 to run)" in text
    assert counter.calls == {"pretrain": 0, "finetune": 0}
    assert not os.path.exists(os.path.join(out, "cells"))
    assert reproduce.main(["--grid", "smoke", "--dry-run", "--json", "--seeds", "3", "--out", out]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["estimate_s"] > 0 and d["n_cells"] == 48 and d["grid"]["seeds"] == 3


def _write_e2e(folder):
    os.makedirs(folder)
    rows = [("name[Alpha], food[Thai]", "Alpha serves Thai food."), ("name[Alpha], food[Thai]", "Thai food at Alpha."),
            ("name[Beta], area[riverside]", "Beta is by the river."), ("name[Gamma], eatType[pub]", "Gamma is a pub."),
            ("name[Delta], food[Greek]", "Delta serves Greek food."), ("name[Eps], area[city centre]", "Eps is central."),
            ("name[Zeta], eatType[pub]", "x" * 400)]  # too long for the smoke grid's context: dropped
    for name in ("devset.csv", "testset_w_refs.csv"):
        with open(os.path.join(folder, name), "w") as f:
            f.write("mr,ref\n" + "".join(f'"{m}","{r}"\n' for m, r in rows))


def test_e2e_folder_adds_a_task_and_drops_over_long_pairs(tmp_path, capsys, data_dir):
    e2e = str(tmp_path / "e2e")
    _write_e2e(e2e)
    assert reproduce.main(["--grid", "smoke", "--e2e", e2e, "--dry-run", "--json", "--out", str(tmp_path / "o")]) == 0
    d = json.loads(capsys.readouterr().out)
    info = d["tasks"]["e2e"]
    assert info["n_train_inputs"] == 5 and info["dropped_train_pairs_too_long"] == 1
    assert info["n_test_inputs"] == 3 and d["n_cells"] == 64  # builtin:easy + e2e


def _rows(spdf_bleu, spsf_bleu, dense_bleu=30.0, sizes=("a", "b"), noise=(0.0, 0.5, -0.5)):
    rows = []
    for i, size in enumerate(sizes):
        for seed, e in enumerate(noise):
            common = dict(task="t", size=size, n_params=10 ** (i + 3), set_frac=1.0, seed=seed, n_test_inputs=10,
                          pretrain_flops=1.0, pretrain_flops_dense=1.0, pretrain_val_loss=2.0, finetune_val_loss=1.0,
                          test_perplexity=3.0)
            rows.append(dict(common, arm="dense", mode="spdf", sparsity=0.0, bleu=dense_bleu + e, test_loss=1.0 + e / 100))
            rows.append(dict(common, arm="spdf75", mode="spdf", sparsity=0.75, bleu=spdf_bleu + 1.5 * e, test_loss=1.0))
            rows.append(dict(common, arm="spsf75", mode="spsf", sparsity=0.75, bleu=spsf_bleu + 2 * e, test_loss=1.2))
            rows.append(dict(common, arm="scratch", mode="scratch", sparsity=None, bleu=5.0 + e, test_loss=2.0,
                             pretrain_flops=0.0, pretrain_flops_dense=0.0))
    return rows


def _claims(rows):
    res = {"rows": rows, "summary": reproduce.summarise(rows), "grid": reproduce.resolve_grid("smoke"),
           "pretrains": []}
    return {c["id"]: c for c in reproduce.compare_claims(res)}


def test_claim_verdicts_follow_the_numbers():
    c = _claims(_rows(spdf_bleu=29.9, spsf_bleu=20.0))
    assert c["spsf_worse_bleu"]["verdict"].startswith("consistent in 2/2")
    assert c["spsf_worse_test_loss"]["verdict"].startswith("consistent")
    assert c["no_loss_50_75_bleu"]["verdict"].startswith("consistent")  # -0.1 BLEU: within the seed std
    assert c["harder_tasks_bleu"]["verdict"].startswith("not tested")
    assert "2/2 cells on BLEU" in c["pretraining_helps"]["verdict"]
    c = _claims(_rows(spdf_bleu=20.0, spsf_bleu=30.2))
    assert c["spsf_worse_bleu"]["verdict"].startswith("not consistent: opposite")
    assert c["no_loss_50_75_bleu"]["verdict"].startswith("not consistent")
    c = _claims(_rows(spdf_bleu=2.0, spsf_bleu=1.0, dense_bleu=2.0))
    assert c["spsf_worse_bleu"]["verdict"].startswith("untestable: BLEU is at its floor")
    assert not c["spsf_worse_test_loss"]["verdict"].startswith("untestable")


@pytest.mark.parametrize("argv, needle", [
    (["--grid", "huge"], "unknown grid"),
    (["--quick", "--grid", "default"], "disagree"),
    (["--seeds", "0"], "positive integer"),
    (["--seeds", "two"], "expects an integer"),
    (["--threads", "0"], "at least 1"),
    (["--bogus", "1"], "unknown setting --bogus"),
    (["--e2e", "/nonexistent/e2e"], "devset.csv"),
    (["--dart", "/nonexistent/dart"], "does not exist"),
])
def test_bad_arguments_are_one_line_errors(argv, needle):
    with pytest.raises(MiniSPDFError) as e:
        reproduce.main(argv + ["--dry-run", "--out", "/nonexistent-never-created"])
    assert needle in str(e.value) and "\n" not in str(e.value)


def test_python_dash_m_prints_error_and_exits_2():
    r = subprocess.run([sys.executable, "-m", "minispdf.reproduce", "--grid", "nope"], capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 2
    assert r.stderr.startswith("error: unknown grid") and len(r.stderr.strip().splitlines()) == 1


def test_minispdf_cli_reproduce_command(capsys):
    from minispdf.cli import main as cli_main

    assert cli_main(["reproduce", "--grid", "nope"]) == 2
    assert "error: unknown grid" in capsys.readouterr().err
