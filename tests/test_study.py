"""``minispdf.study``: statistics, verdict rules, the smoke grid end to end, resuming, dry runs."""

import csv
import json
import math
import os
import shutil

import pytest

from minispdf import spdf
from minispdf.cli import main as cli_main
from minispdf.errors import MiniSPDFError
from minispdf.study import claims as claims_lib
from minispdf.study import plan as plan_lib
from minispdf.study import report, resolve_grid, run_study, stats

REQUIRED_CSV = ("task", "size", "set", "arm", "seed", "pretrain_flops", "pretrain_val_loss", "test_loss", "bleu")
REQUIRED_CLAIM = ("claim", "metric", "effect", "ci_low", "ci_high", "margin", "n_seeds", "verdict", "reason")


# ------------------------------------------------------------------------------ statistics


def test_interval_is_the_t_interval_of_the_mean():
    ci = stats.interval([1.0, 2.0, 3.0])  # mean 2, sd 1, n 3: half-width t(0.975, 2) / sqrt(3)
    assert ci.mean == 2.0 and ci.n == 3
    assert ci.high - 2.0 == pytest.approx(4.302653 / math.sqrt(3), rel=1e-6)
    assert stats.interval([1.0]) is None
    ci90 = stats.interval([1.0, 2.0, 3.0], level=0.90)
    assert ci90.high - 2.0 == pytest.approx(2.919986 / math.sqrt(3), rel=1e-6)


@pytest.mark.parametrize("diffs, verdict", [
    ([0.001, 0.002, 0.0, 0.001], stats.HOLDS),       # tiny loss, tight: below a 1% margin
    ([0.05, 0.06, 0.055, 0.052], stats.FAILS),      # a 5% loss, tight: above the margin
    ([-0.02, 0.04, 0.0, 0.03], stats.INCONCLUSIVE),  # straddles the margin
    ([0.001], stats.UNTESTABLE),
])
def test_non_inferiority_reads_the_90_percent_interval_against_the_margin(diffs, verdict):
    assert stats.non_inferiority(diffs, 0.01)[0] == verdict


def test_directional():
    assert stats.directional([1.0, 1.2, 0.9])[0] == stats.HOLDS
    assert stats.directional([-1.0, -1.2, -0.9])[0] == stats.FAILS
    assert stats.directional([1.0, -1.0, 0.1])[0] == stats.INCONCLUSIVE


# ------------------------------------------------------------------------------ claims on made-up rows


def _rows(spdf_loss=1.0, spsf_loss=1.3, dense_bleu=20.0, scratch_loss=2.0, seeds=4, size="nano"):
    rows = []
    noise = [0.0, 0.004, -0.004, 0.002, -0.002][:seeds]
    for seed, e in enumerate(noise):
        common = dict(task="easy", size=size, set="full", seed=seed, pretrain_flops=1.0)
        for arm, loss, bleu in (("dense", 1.0 + e, dense_bleu + 10 * e), ("spdf75", spdf_loss + 1.5 * e, dense_bleu - 0.2),
                                ("spsf75", spsf_loss + e, dense_bleu - 5), ("scratch", scratch_loss + e, 1.0)):
            rows.append(dict(common, arm=arm, test_loss=loss, bleu=bleu))
    return rows


def _grid():
    return resolve_grid("smoke")


def _judge(rows, entropy=3.26, val_loss=2.0):
    for r in rows:
        r["pretrain_val_loss"] = None if r["arm"] == "scratch" else val_loss
    return {(c["claim"], c["metric"]): c for c in claims_lib.Judge(_grid(), rows, [], entropy).claims()}


def test_claims_follow_the_numbers():
    c = _judge(_rows(spdf_loss=1.001))
    assert c["spdf75: no significant loss vs dense", "test_loss"]["verdict"] == stats.HOLDS
    assert c["spdf75: no significant loss vs dense", "bleu"]["verdict"] == stats.HOLDS  # 0.2 < 1 point
    assert c["spsf75 (masks kept) worse than spdf75", "test_loss"]["verdict"] == stats.HOLDS
    assert c["spdf75: no significant loss vs dense", "test_loss"]["retained"] == pytest.approx(0.999, abs=0.01)
    c = _judge(_rows(spdf_loss=1.10, spsf_loss=0.9))
    assert c["spdf75: no significant loss vs dense", "test_loss"]["verdict"] == stats.FAILS
    assert c["spsf75 (masks kept) worse than spdf75", "test_loss"]["verdict"] == stats.FAILS


def test_gates_make_claims_untestable_with_a_reason():
    c = _judge(_rows(dense_bleu=4.0))  # BLEU at its floor: BLEU claims untestable, loss claims not
    bleu = c["spdf75: no significant loss vs dense", "bleu"]
    assert bleu["verdict"] == stats.UNTESTABLE and "below 10" in bleu["reason"]
    assert c["spdf75: no significant loss vs dense", "test_loss"]["verdict"] != stats.UNTESTABLE
    c = _judge(_rows(scratch_loss=1.0))  # pre-training does not help
    assert all(v["verdict"] == stats.UNTESTABLE and "does not beat scratch" in v["reason"]
               for k, v in c.items() if k[1] == "test_loss")
    c = _judge(_rows(), val_loss=3.2)  # pre-training still on its plateau (unigram entropy 3.26)
    assert all(v["verdict"] == stats.UNTESTABLE and "plateau" in v["reason"] for v in c.values())


# ------------------------------------------------------------------------------ the smoke grid


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("data"))
    mp = pytest.MonkeyPatch()
    mp.setenv("MINISPDF_DATA_DIR", path)
    yield path
    mp.undo()


class Counter:
    """Counts spdf.pretrain / spdf.finetune calls; ``fail_at`` makes the Nth fine-tune raise."""

    def __init__(self, monkeypatch, fail_at=None):
        self.calls = {"pretrain": 0, "finetune": 0}
        for name in self.calls:
            real = getattr(spdf, name)

            def wrapper(*a, _name=name, _real=real, **k):
                self.calls[_name] += 1
                if fail_at and _name == "finetune" and self.calls[_name] == fail_at:
                    raise RuntimeError("simulated crash inside a cell")
                return _real(*a, **k)
            monkeypatch.setattr(spdf, name, wrapper)


def _mtimes(folder):
    return {f: os.stat(os.path.join(folder, f)).st_mtime_ns for f in sorted(os.listdir(folder))}


@pytest.fixture(scope="module")
def smoke(tmp_path_factory, data_dir):
    out = str(tmp_path_factory.mktemp("smoke") / "out")
    mp = pytest.MonkeyPatch()
    counter = Counter(mp)
    try:
        results = run_study(_grid(), out, device="cpu", jobs=1, log=lambda *a: None)
    finally:
        mp.undo()
    return out, results, counter.calls


def test_smoke_grid_writes_every_output(smoke):
    out, res, calls = smoke
    pretrains, cells = plan_lib.plan(_grid())
    assert calls == {"pretrain": len(pretrains), "finetune": len(cells)}  # pre-training shared, run once
    assert len(pretrains) == 2 * 4 + 2 * 2  # nano: dense, 50, 75, equal-FLOP dense; pico: dense, 75; 2 seeds
    with open(os.path.join(out, "results.csv")) as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == len(cells) and set(REQUIRED_CSV) <= set(rows[0])
    claims = json.load(open(os.path.join(out, "claims.json")))
    assert claims and all(set(REQUIRED_CLAIM) <= set(c) for c in claims)
    assert {c["verdict"] for c in claims} <= {"holds", "fails", "inconclusive", "untestable", "arithmetic"}
    for png in report.FIGURES:
        with open(os.path.join(out, png), "rb") as f:
            assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    section = open(os.path.join(out, "README_section.md")).read()
    assert "| claim | metric | effect [95% CI] | margin | verdict |" in section and res["commit"].split()[0] in section
    assert not os.path.exists(os.path.join(out, ".study.lock"))


def test_arms_are_what_their_names_say(smoke):
    _, res, _ = smoke
    rows = res["rows"]
    assert {r["arm"] for r in rows} == {"dense", "spdf50", "spdf75", "spsf75", "eqflop75", "scratch"}
    assert all(r["pretrain_flops"] == 0 and r["pretrain_val_loss"] is None for r in rows if r["arm"] == "scratch")
    one = {r["arm"]: r for r in rows if r["seed"] == 0 and r["size"] == "nano" and r["set"] == "full"}
    assert one["spdf75"]["pretrain_sparsity"] == 0.75 and one["eqflop75"]["pretrain_sparsity"] == 0.0
    # the equal-FLOP dense run spends (about) the sparse run's pre-training FLOPs, in fewer steps
    assert one["eqflop75"]["pretrain_steps"] < one["dense"]["pretrain_steps"]
    step_flops = one["dense"]["pretrain_flops"] / one["dense"]["pretrain_steps"]  # one dense step
    assert abs(one["eqflop75"]["pretrain_flops"] - one["spdf75"]["pretrain_flops"]) <= step_flops / 2
    assert one["spdf75"]["pretrain_flops"] < one["spdf50"]["pretrain_flops"] < one["dense"]["pretrain_flops"]
    small = {r["arm"]: r for r in rows if r["seed"] == 0 and r["size"] == "nano" and r["set"] == "small"}
    assert small["dense"]["n_train_inputs"] < one["dense"]["n_train_inputs"]


def test_flop_claim_is_arithmetic_checked_against_flop_counter(smoke):
    _, res, _ = smoke
    f = res["flop_claim"]
    assert f["verdict"] == "arithmetic" and f["effect"] == pytest.approx(2.49, abs=0.01)
    assert all(s["counter_agrees"] for s in f["sizes"].values())
    logged = f["sizes"]["nano"]["logged_reduction_75"]
    assert logged == pytest.approx(f["sizes"]["nano"]["formula_reduction_75"], rel=1e-6)


def test_rerun_skips_finished_jobs(smoke, tmp_path, monkeypatch):
    src, _, _ = smoke
    out = str(tmp_path / "copy")
    shutil.copytree(src, out)
    before = _mtimes(os.path.join(out, "cells")), _mtimes(os.path.join(out, "pretrain"))
    counter = Counter(monkeypatch)
    res = run_study(_grid(), out, device="cpu", jobs=1, log=lambda *a: None)
    assert counter.calls == {"pretrain": 0, "finetune": 0}
    assert (_mtimes(os.path.join(out, "cells")), _mtimes(os.path.join(out, "pretrain"))) == before
    assert res["n_cells_done"] == res["n_cells"] and res["invocations"][-1]["jobs_run"] == 0


def test_crash_keeps_finished_cells_and_the_next_run_completes(tmp_path, monkeypatch, data_dir):
    out = str(tmp_path / "out")
    grid = resolve_grid("smoke", seeds=1)
    Counter(monkeypatch, fail_at=4)
    with pytest.raises(RuntimeError, match="simulated crash"):
        run_study(grid, out, device="cpu", jobs=1, log=lambda *a: None)
    finished = _mtimes(os.path.join(out, "cells"))
    assert len(finished) == 3 and not os.path.exists(os.path.join(out, "results.json"))
    assert not os.path.exists(os.path.join(out, ".study.lock"))
    os.makedirs(os.path.join(out, "pretrain", ".tmp-killed-run"))  # a killed run's leftovers
    monkeypatch.undo()
    counter = Counter(monkeypatch)
    res = run_study(grid, out, device="cpu", jobs=1, log=lambda *a: None)
    _, cells = plan_lib.plan(grid)
    assert counter.calls["finetune"] == len(cells) - 3 and res["n_cells_done"] == len(cells)
    after = _mtimes(os.path.join(out, "cells"))
    assert {f: after[f] for f in finished} == finished
    assert not os.path.exists(os.path.join(out, "pretrain", ".tmp-killed-run"))


def test_changed_grid_does_not_reuse_stale_cells():
    grid = _grid()
    _, cells = plan_lib.plan(grid)
    grid["sizes"]["nano"]["finetune_steps"] += 1
    _, changed = plan_lib.plan(grid)
    old = {c["name"] for c in cells}
    assert sum(c["name"] not in old for c in changed) == sum(c["spec"]["size"] == "nano" for c in changed)


def test_default_grid_compares_sizes_at_equal_tokens_per_parameter():
    grid = resolve_grid("default")
    tpp = {s: plan_lib.pretrain_steps(grid, s) * 8 * 256 / plan_lib.n_params(grid, s) for s in grid["sizes"]}
    assert tpp["nano"] == pytest.approx(20, rel=0.01) and tpp["micro"] == pytest.approx(20, rel=0.01)
    frac = grid["sets"]
    assert frac["small"] <= 0.05 and frac["full"] == 1.0


def test_dry_run_trains_nothing_and_gpu_grid_dry_runs_on_a_cpu(tmp_path, monkeypatch, capsys, data_dir):
    counter = Counter(monkeypatch)
    out = str(tmp_path / "out")
    assert cli_main(["reproduce", "--grid", "smoke", "--dry-run", "--out", out]) == 0
    text = capsys.readouterr().out
    assert "estimated time" in text and "dry run" in text and counter.calls == {"pretrain": 0, "finetune": 0}
    assert not os.path.exists(os.path.join(out, "cells"))
    assert cli_main(["reproduce", "--grid", "gpu", "--dry-run", "--out", out]) == 0
    text = capsys.readouterr().out
    assert "124M" in text and "ASSUMED" in text and "training FLOPs of the whole grid" in text


@pytest.mark.parametrize("argv, needle", [
    (["--grid", "huge"], "unknown grid"),
    (["--quick", "--grid", "default"], "disagree"),
    (["--seeds", "0"], "positive integer"),
    (["--jobs", "0"], "--jobs 0"),
    (["--e2e", "/nonexistent/e2e"], "does not exist"),
])
def test_bad_arguments_are_one_line_errors(argv, needle, capsys):
    assert cli_main(["reproduce", *argv, "--dry-run", "--out", "/nonexistent-never-created"]) == 2
    err = capsys.readouterr().err
    assert needle in err and len(err.strip().splitlines()) == 1 and err.startswith("error:")


def test_unknown_arm_is_refused():
    from minispdf.study import parse_arm

    with pytest.raises(MiniSPDFError, match="unknown arm"):
        parse_arm("sparse75")
    assert parse_arm("eqflop75") == {"arm": "eqflop75", "kind": "eqflop", "sparsity": 0.75, "pretrained": True,
                                     "keep_masks": False, "equal_flops": True}


def test_parallel_jobs_give_the_same_rows(smoke, tmp_path):
    """Two worker processes (one thread each) compute what one process computes."""
    _, res, _ = smoke
    serial = {r["cell"]: r for r in res["rows"] if r["seed"] == 0}
    par = run_study(resolve_grid("smoke", seeds=1), str(tmp_path / "par"), device="cpu", jobs=2, log=lambda *a: None)
    assert par["timing"]["jobs"] == 2 and {r["cell"] for r in par["rows"]} == set(serial)
    for r in par["rows"]:
        assert r["test_loss"] == pytest.approx(serial[r["cell"]]["test_loss"], rel=1e-4)
        assert r["pretrain_flops"] == serial[r["cell"]]["pretrain_flops"]
