"""``minispdf.study``: statistics, verdict rules, the smoke grid end to end, resuming, dry runs."""

import csv
import json
import math
import os
import re
import shutil
import statistics

import pytest

from minispdf import spdf
from minispdf.cli import main as cli_main
from minispdf.errors import MiniSPDFError
from minispdf.study import claims as claims_lib
from minispdf.study import plan as plan_lib
from minispdf.study import report, resolve_grid, run_study, stats

REQUIRED_CSV = ("task", "size", "set", "arm", "seed", "pretrain_flops", "pretrain_val_loss",
                "test_loss", "bleu")
REQUIRED_CLAIM = ("claim", "metric", "measure", "effect", "ci_low", "ci_high", "margin", "n_seeds",
                  "verdict", "reason",
                  "abs_effect", "abs_ci_low", "abs_ci_high", "mde", "declaration")


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


# --------------------------------------------------------------------------- claims on made-up rows


def _rows(spdf_loss=1.0, spsf_loss=1.3, dense_bleu=20.0, scratch_loss=2.0, seeds=4, size="nano",
          task="easy",
          spdf_noise=1.5):
    rows = []
    noise = [0.0, 0.004, -0.004, 0.002, -0.002][:seeds]
    for seed, e in enumerate(noise):
        common = dict(task=task, size=size, set="full", seed=seed, pretrain_flops=1.0)
        for arm, loss, bleu in (("dense", 1.0 + e, dense_bleu + 10 * e),
                                ("spdf75", spdf_loss + spdf_noise * e, dense_bleu - 0.2),
                                ("spsf75", spsf_loss + e, dense_bleu - 5),
                                ("scratch", scratch_loss + e, 1.0)):
            rows.append(dict(common, arm=arm, test_loss=loss, bleu=bleu))
    return rows


def _grid():
    return resolve_grid("smoke")


def _declaration(rows, grid=None):
    from minispdf.study import declaration

    grid = grid or _grid()
    cells = [{"spec": {k: r[k] for k in ("task", "size", "set", "arm", "seed")}} for r in rows]
    return declaration.build(grid, cells, "test")


def _judge(rows, entropy=3.26, val_loss=2.0, grid=None):
    for r in rows:
        r["pretrain_val_loss"] = None if r["arm"] == "scratch" else val_loss
    decl = _declaration(rows, grid)
    return {(c["claim"], c["measure"]): c
            for c in claims_lib.Judge(decl, rows, entropy, "declared.json").claims()}


def test_benefit_lost_is_the_hand_computed_share_per_seed():
    """L = (arm - dense) / (scratch - dense) on loss, (dense - arm) / (dense - scratch) on BLEU."""
    rows = []
    hand = {"test_loss": [], "bleu": []}
    for seed, (d, s, a, db, sb, ab) in enumerate([(1.0, 2.0, 1.1, 20.0, 0.0, 18.0),
                                                  (0.8, 2.0, 1.1, 30.0, 2.0, 23.0),
                                                  (1.2, 1.6, 1.24, 10.0, 1.0, 10.9)]):
        for arm, loss, bleu in (("dense", d, db), ("scratch", s, sb), ("spdf75", a, ab)):
            rows.append(dict(task="easy", size="nano", set="full", seed=seed, arm=arm,
                             test_loss=loss, bleu=bleu))
        hand["test_loss"].append((a - d) / (s - d))
        hand["bleu"].append((db - ab) / (db - sb))
    assert (hand["test_loss"] == pytest.approx([0.1, 0.25, 0.1])
            and hand["bleu"] == pytest.approx([0.1, 0.25, -0.1]))
    c = _judge(rows)
    for m in ("test_loss", "bleu"):
        got = c["spdf75: no significant loss vs dense", m]
        mean, sd = statistics.fmean(hand[m]), statistics.stdev(hand[m])
        half95 = 4.302653 * sd / math.sqrt(3)  # t(0.975, 2)
        assert got["metric"] == "L" and got["effect"] == pytest.approx(mean)
        assert (got["ci_low"], got["ci_high"]) == pytest.approx((mean - half95, mean + half95))
        assert got["ci90_high"] == pytest.approx(mean + 2.919986 * sd / math.sqrt(3))
        assert got["margin"] == 0.10 and got["n_seeds"] == 3
    loss = c["spdf75: no significant loss vs dense", "test_loss"]
    assert (loss["abs_effect"] == pytest.approx(statistics.fmean([0.1, 0.3, 0.04]))
            and loss["abs_unit"] == "nats")
    bleu = c["spdf75: no significant loss vs dense", "bleu"]
    assert (bleu["abs_effect"] == pytest.approx(statistics.fmean([2.0, 7.0, -0.9]))
            and bleu["abs_unit"] == "BLEU points")


def test_claims_follow_the_numbers():
    c = _judge(_rows(spdf_loss=1.01))  # loses 1% of the benefit: well inside the 0.10 margin
    assert c["spdf75: no significant loss vs dense", "test_loss"]["verdict"] == stats.HOLDS
    # 0.2 of 19 points
    assert c["spdf75: no significant loss vs dense", "bleu"]["verdict"] == stats.HOLDS
    assert c["spsf75 (masks kept) loses more than spdf75", "test_loss"]["verdict"] == stats.HOLDS
    c = _judge(_rows(spdf_loss=1.30, spsf_loss=1.1))  # loses 30% of the benefit
    assert c["spdf75: no significant loss vs dense", "test_loss"]["verdict"] == stats.FAILS
    assert c["spsf75 (masks kept) loses more than spdf75", "test_loss"]["verdict"] == stats.FAILS
    # centred on the margin: the interval straddles it
    c = _judge(_rows(spdf_loss=1.10, spdf_noise=3.0))
    assert c["spdf75: no significant loss vs dense", "test_loss"]["verdict"] == stats.INCONCLUSIVE


def test_a_wide_inconclusive_interval_is_underpowered():
    c = _judge(_rows(spdf_loss=1.10, spdf_noise=60.0))  # L +-0.24 per seed around the margin
    got = c["spdf75: no significant loss vs dense", "test_loss"]
    assert got["verdict"] == stats.UNDERPOWERED and "more seeds" in got["reason"]
    assert got["ci90_high"] - got["ci90_low"] > 2 * 0.10 and got["mde"] > 0.1


def test_gates_make_claims_untestable_with_a_reason():
    c = _judge(_rows(dense_bleu=4.0))  # BLEU at its floor: BLEU claims untestable, loss claims not
    bleu = c["spdf75: no significant loss vs dense", "bleu"]
    assert (bleu["verdict"] == stats.UNTESTABLE and "below 10" in bleu["reason"]
            and "floor" in bleu["reason"])
    assert c["spdf75: no significant loss vs dense", "test_loss"]["verdict"] != stats.UNTESTABLE
    c = _judge(_rows(dense_bleu=95.0))  # BLEU at its ceiling
    assert "ceiling" in c["spdf75: no significant loss vs dense", "bleu"]["reason"]
    c = _judge(_rows(scratch_loss=1.0))  # pre-training does not help
    assert all(v["verdict"] == stats.UNTESTABLE and "does not beat scratch" in v["reason"]
               for k, v in c.items() if k[1] == "test_loss")
    # helps, but by 5% of scratch's loss: too close to the floor
    c = _judge(_rows(scratch_loss=1.05))
    assert "floor" in c["spdf75: no significant loss vs dense", "test_loss"]["reason"]
    c = _judge(_rows(), val_loss=3.2)  # pre-training still on its plateau (unigram entropy 3.26)
    assert all(v["verdict"] == stats.UNTESTABLE and "plateau" in v["reason"] for v in c.values())
    rows = _rows()
    for r in rows:
        r["test_loss"] /= 200  # dense test loss 0.005 nats: at the ceiling
    assert "ceiling" in _judge(rows)["spdf75: no significant loss vs dense", "test_loss"]["reason"]


def test_power_before_the_run_is_the_t_half_width_of_the_prior_spread():
    from minispdf.study import power

    prior = _rows(spdf_loss=1.10, spdf_noise=20.0, seeds=5)
    decl = _declaration(_rows(seeds=4))  # the planned study: 4 seeds
    claim = next(c for c in decl["claims"] if c["claim"] == "spdf75: no significant loss vs dense"
                 and c["measure"] == "test_loss")
    lost = [(a["test_loss"] - d["test_loss"]) / (s["test_loss"] - d["test_loss"])
            for d, a, s in zip(*[[r for r in prior if r["arm"] == arm]
                                 for arm in ("dense", "spdf75", "scratch")])]
    sd = statistics.stdev(lost)
    got = power.expected(decl["claims"], (prior, "prior"))["claims"][claim["id"]]
    assert got["sd"] == pytest.approx(sd) and got["n_planned"] == 4 and got["from"] == "same cells"
    assert got["halfwidth"] == pytest.approx(2.353363 * sd / 2)  # t(0.95, 3) * sd / sqrt(4)
    assert got["underpowered"] == (got["halfwidth"] > 0.10)
    n = got["seeds_needed"]
    assert stats.halfwidth(sd, n, 0.95) <= 0.10 < stats.halfwidth(sd, n - 1, 0.95)
    # no prior: no estimate
    assert power.expected(decl["claims"], None)["claims"][claim["id"]]["sd"] is None


def test_mde_is_the_distance_80_percent_power_detects():
    assert stats.mde(1.0, 9, 0.975) == pytest.approx((2.306004 + 0.888890) / 3, rel=1e-5)
    assert stats.halfwidth(1.0, 9, 0.975) == pytest.approx(2.306004 / 3, rel=1e-5)


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
    # pre-training shared, run once
    assert calls == {"pretrain": len(pretrains), "finetune": len(cells)}
    # nano: dense, 50, 75, equal-FLOP dense; pico: dense, 75; 2 seeds
    assert len(pretrains) == 2 * 4 + 2 * 2
    with open(os.path.join(out, "results.csv")) as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == len(cells) and set(REQUIRED_CSV) <= set(rows[0])
    claims = json.load(open(os.path.join(out, "claims.json")))
    assert claims and all(set(REQUIRED_CLAIM) <= set(c) for c in claims)
    assert ({c["verdict"] for c in claims} <= set(stats.VERDICTS)
            and {c["metric"] for c in claims} == {"L"})
    judged = claims
    assert judged and all(c["declaration"] == "declared.json" for c in judged)
    assert {c["claim"] for c in judged} >= {"harder tasks lose more (spdf75)",
                                            "larger models lose less (spdf75)",
                                             "a smaller fine-tuning set loses more (spdf75)"}
    for png in report.FIGURES:
        with open(os.path.join(out, png), "rb") as f:
            assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    section = open(os.path.join(out, "README_section.md")).read()
    assert "| claim | measure | where | L [95% CI] | absolute gap | verdict |" in section
    assert res["commit"].split()[0] in section and "declared.json" in section
    assert not os.path.exists(os.path.join(out, ".study.lock"))


def test_arms_are_what_their_names_say(smoke):
    _, res, _ = smoke
    rows = res["rows"]
    assert {r["arm"] for r in rows} == {"dense", "spdf50", "spdf75", "spsf75", "eqflop75",
                                        "scratch"}
    assert all(r["pretrain_flops"] == 0 and r["pretrain_val_loss"] is None for r in rows
               if r["arm"] == "scratch")
    one = {r["arm"]: r for r in rows
           if r["seed"] == 0 and r["size"] == "nano" and r["set"] == "full"}
    assert (one["spdf75"]["pretrain_sparsity"] == 0.75
            and one["eqflop75"]["pretrain_sparsity"] == 0.0)
    # the equal-FLOP dense run spends (about) the sparse run's pre-training FLOPs, in fewer steps
    assert one["eqflop75"]["pretrain_steps"] < one["dense"]["pretrain_steps"]
    step_flops = one["dense"]["pretrain_flops"] / one["dense"]["pretrain_steps"]  # one dense step
    assert (abs(one["eqflop75"]["pretrain_flops"] - one["spdf75"]["pretrain_flops"])
            <= step_flops / 2)
    assert (one["spdf75"]["pretrain_flops"] < one["spdf50"]["pretrain_flops"]
            < one["dense"]["pretrain_flops"])
    small = {r["arm"]: r for r in rows
             if r["seed"] == 0 and r["size"] == "nano" and r["set"] == "small"}
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
    assert (sum(c["name"] not in old for c in changed)
            == sum(c["spec"]["size"] == "nano" for c in changed))


def test_default_grid_is_designed_so_each_claim_can_show():
    from minispdf.study.grid_tasks import load_tasks

    grid = resolve_grid("default")
    tpp = {s: plan_lib.pretrain_steps(grid, s) * 8 * 256 / plan_lib.n_params(grid, s)
           for s in grid["sizes"]}
    assert all(t == pytest.approx(20, rel=0.01) for t in tpp.values())
    assert plan_lib.n_params(grid, "large") >= 4 * plan_lib.n_params(grid, "small")
    assert grid["primary"]["task"] == "hard" and grid["blocks"][0]["seeds"] >= 8
    assert grid["sets"]["small"] <= 0.05 and grid["sets"]["full"] == 1.0
    tasks = load_tasks({**grid, "tasks": {k: grid["tasks"][k] for k in grid["difficulty"]}})
    counts = {k: (t["info"]["n_train_inputs"], t["info"]["n_train_pairs"])
              for k, t in tasks.items()}
    assert len(set(counts.values())) == 1, counts  # difficulty is not confounded with set size


def test_dry_run_trains_nothing_and_gpu_grid_dry_runs_on_a_cpu(tmp_path, monkeypatch, capsys,
                                                               data_dir):
    counter = Counter(monkeypatch)
    out = str(tmp_path / "out")
    assert cli_main(["reproduce", "--grid", "smoke", "--dry-run", "--out", out]) == 0
    text = capsys.readouterr().out
    assert ("estimated time" in text and "dry run" in text
            and counter.calls == {"pretrain": 0, "finetune": 0})
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
    assert parse_arm("eqflop75") == {"arm": "eqflop75", "kind": "eqflop", "sparsity": 0.75,
                                     "pretrained": True,
                                     "keep_masks": False, "equal_flops": True, "schedule": "static",
                                     "dense_tail": False, "nm": None}
    assert parse_arm("nm24") | {} == {"arm": "nm24", "kind": "nm", "sparsity": 0.5,
                                      "pretrained": True,
                                      "keep_masks": False, "equal_flops": False, "schedule": "nm",
                                      "dense_tail": False, "nm": "2:4"}
    assert parse_arm("vspdf75")["dense_tail"] and parse_arm("rigl75")["schedule"] == "rigl"
    with pytest.raises(MiniSPDFError, match="0 < N < M"):
        parse_arm("nm42")


def test_parallel_jobs_give_the_same_rows(smoke, tmp_path):
    """Two worker processes (one thread each) compute what one process computes."""
    _, res, _ = smoke
    serial = {r["cell"]: r for r in res["rows"] if r["seed"] == 0}
    par = run_study(resolve_grid("smoke", seeds=1), str(tmp_path / "par"), device="cpu", jobs=2,
                    log=lambda *a: None)
    assert par["timing"]["jobs"] == 2 and {r["cell"] for r in par["rows"]} == set(serial)
    for r in par["rows"]:
        assert r["test_loss"] == pytest.approx(serial[r["cell"]]["test_loss"], rel=1e-4)
        assert r["pretrain_flops"] == serial[r["cell"]]["pretrain_flops"]


# ------------------------------------------------------------------ declaration, verify, grid files


def test_declaration_is_written_before_the_first_job_and_rules_cannot_change_after(tmp_path,
        monkeypatch, data_dir):
    out = str(tmp_path / "out")
    grid = resolve_grid("smoke", seeds=1)
    seen = []
    real = spdf.pretrain

    def first_job(*a, **k):
        seen.append(os.path.exists(os.path.join(out, "declared.json")))
        return real(*a, **k)
    monkeypatch.setattr(spdf, "pretrain", first_job)
    run_study(grid, out, device="cpu", jobs=1, log=lambda *a: None)
    assert seen and all(seen)
    decl = json.load(open(os.path.join(out, "declared.json")))
    assert {"grid", "claims", "metric", "margins", "gates", "seeds", "commit", "written",
            "power"} <= set(decl)
    grid["margins"]["test_loss"] = 0.5  # a looser rule after the data are in
    with pytest.raises(MiniSPDFError, match="declared other margins"):
        run_study(grid, out, device="cpu", jobs=1, log=lambda *a: None)
    res = run_study(grid, out, device="cpu", jobs=1, log=lambda *a: None, redeclare=True)
    assert os.path.exists(os.path.join(out, "declared-2.json"))
    assert {c["declaration"] for c in res["claims"]} == {"declared-2.json"}
    assert {c["margin"] for c in res["claims"] if c["measure"] == "test_loss"} == {0.5}


def test_verify_reruns_cells_bit_for_bit_and_names_the_ones_that_differ(smoke, tmp_path, capsys):
    from minispdf.study.verify import verify

    src, res, _ = smoke
    out = str(tmp_path / "committed")
    os.makedirs(out)
    for name in ("results.json", "results.csv"):  # what a committed study keeps
        shutil.copy(os.path.join(src, name), out)
    result = verify(out, 2, log=lambda *a: None, seed=1)
    assert result["ok"] and len(result["cells"]) == 2
    cell = next(r for r in res["rows"] if r["arm"] == "spdf75")["cell"]
    with open(os.path.join(out, "results.csv")) as f:
        text = f.read()
    row = next(line for line in text.splitlines() if line.endswith(cell))
    tampered = row.replace(f",{next(r for r in res['rows'] if r['cell'] == cell)['test_loss']!r},",
                           ",0.5,")
    assert tampered != row
    with open(os.path.join(out, "results.csv"), "w") as f:
        f.write(text.replace(row, tampered))
    assert cli_main(["reproduce", "--verify", out, "--cells", cell]) == 2
    captured = capsys.readouterr()
    assert "test_loss: logged '0.5'" in captured.out and cell in captured.err


def test_report_rejudges_a_committed_study_from_its_results_alone(smoke, tmp_path):
    src, res, _ = smoke
    out = str(tmp_path / "committed")
    shutil.copytree(src, out, ignore=shutil.ignore_patterns("cells", "pretrain", "predictions"))
    os.remove(os.path.join(out, "claims.json"))
    assert cli_main(["reproduce", "--report", out]) == 0
    again = json.load(open(os.path.join(out, "claims.json")))
    assert [c["verdict"] for c in again] == [c["verdict"] for c in res["claims"]]


def test_a_grid_file_from_outside_the_package_runs(tmp_path, data_dir):
    path = tmp_path / "mine.toml"
    path.write_text('''description = "my grid"
inherit = "smoke"   # a built-in grid; tables merge key by key

[[blocks]]
sizes = ["nano"]
tasks = ["easy"]
sets = ["full"]
arms = ["dense", "spdf75", "scratch"]
seeds = 1
''')
    grid = resolve_grid(str(path))
    assert (grid["name"] == "mine" and grid["source"] == str(path.resolve())
            and len(grid["blocks"]) == 1)
    assert set(grid["sizes"]) == {"nano"} and set(grid["sets"]) == {"full"}  # unused ones dropped
    res = run_study(grid, str(tmp_path / "out"), device="cpu", jobs=1, log=lambda *a: None)
    assert {r["arm"] for r in res["rows"]} == {"dense", "spdf75", "scratch"}


@pytest.mark.parametrize("text, needle", [
    ('inherit = "smoke"\nwarmup = 3\n', "unknown key warmup"),
    ('inherit = "smoke"\n[sizes.nano]\nfinetune_steps = "many"\n',
     "key sizes.nano.finetune_steps must be an integer"),
    ('inherit = "smoke"\n[margins]\ntest_loss = 1.5\n', "key margins.test_loss = 1.5"),
    ('inherit = "smoke"\nprimary = { task = "nope", size = "nano", set = "full" }\n',
     "key primary.task"),
    ('inherit = "smoke"\n[[blocks]]\nsizes = ["huge"]\ntasks = ["easy"]\nsets = ["full"]\narms '
     '= ["dense"]\n'
     'seeds = 1\n', "blocks[0].sizes names undeclared sizes ['huge']"),
    ('description = "x"\n', "missing key block_size"),
    ('inherit = "smoke"\n[schedules]\ndrop_fraction = 1.5\n',
     "key schedules.drop_fraction=1.5 must be in (0, 1)"),
    ('inherit = "smoke"\n[schedules]\ngmp_start = 0.8\ngmp_end = 0.5\n',
     "need gmp_start < gmp_end"),
    ('inherit = "smoke"\n[pretrain]\nlr = 0.0\n', "key pretrain.lr=0.0 must be a positive number"),
    ('inherit = "smoke"\n[finetune]\nwarmup_frac = 1.5\n',
     "key finetune.warmup_frac = 1.5 must be in [0, 1)"),
    ('inherit = "smoke"\n[pretrain]\nmax_steps = 3\n', "unknown key pretrain.max_steps"),
    ('inherit = "smoke"\n[pretrain]\ngrad_clip = -1\n', "key pretrain.grad_clip=-1 must be"),
    ('inherit = "smoke"\nblocks = [\n', "is not valid TOML"),
])
def test_a_bad_grid_file_is_one_line_naming_the_key(tmp_path, capsys, text, needle):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    assert (cli_main(["reproduce", "--grid", str(path), "--dry-run", "--out", str(tmp_path / "o")])
            == 2)
    err = capsys.readouterr().err
    assert needle in err and len(err.strip().splitlines()) == 1 and err.startswith("error:"), err


def test_the_readme_study_numbers_are_the_committed_results():
    """Every study block of the README is the text its results folder generated, so it cannot
    drift."""
    import re

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    with open(os.path.join(root, "README.md")) as f:
        readme = f.read()
    blocks = dict(re.findall(r"<!-- include: (\S+) -->\n(.*?)<!-- /include -->", readme,
                             flags=re.S))
    assert {"results/frontier/README_section.md", "results/methods/arms.md",
            "results/demo/results.md"} <= set(blocks)
    for path, text in blocks.items():
        with open(os.path.join(root, path)) as f:
            assert text == f.read().rstrip() + "\n", (f"{path} changed: run python -m "
                                                      f"minispdf.study README.md")


VERDICT_WORDS = re.compile(r"\b(holds?|fails?|beats?|supports?|contradicts?|keeps dense "
                           r"quality|loses? (less|more) than)\b")
RULE_SENTENCES = ("it holds when", "fails when it lies above", '"SPSF loses more"',
                  '"harder tasks lose more"',
                  '"larger models lose less"', "at which it would hold",
                  "the smallest margin at which",
                  "dense must beat scratch", "where dense did not beat scratch")


def test_the_readme_states_no_verdict_of_its_own():
    """A verdict or comparison in the README's study section is generated from the results (the
    include blocks); the text around them explains the rules and never says more than the rows."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    with open(os.path.join(root, "README.md")) as f:
        readme = f.read()
    section = readme[
        readme.index("## Results: the reproduction study"):readme.index("## Honesty notes")]
    prose = " ".join(
        re.sub(r"<!-- include: \S+ -->\n.*?<!-- /include -->", "", section, flags=re.S).split())
    for rule in RULE_SENTENCES:
        prose = prose.replace(rule, "")
    found = [m.group(0) for m in VERDICT_WORDS.finditer(prose)]
    assert not found, f"the README's study prose states verdicts of its own: {found}"


def _children(pid: int) -> set[int]:
    """Process ids whose parent is ``pid`` (from /proc)."""
    kids = set()
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    if int(f.read().rsplit(")", 1)[1].split()[1]) == pid:
                        kids.add(int(entry))
            except (OSError, IndexError, ValueError):
                pass
    return kids


@pytest.mark.slow
@pytest.mark.skipif(not os.path.isdir("/proc"), reason="reads /proc to find the workers")
def test_sigterm_ends_a_two_job_study_keeps_finished_jobs_and_says_how_to_continue(tmp_path,
                                                                                   data_dir):
    import signal
    import subprocess
    import sys
    import time

    out = tmp_path / "out"
    env = {**os.environ, "MINISPDF_DATA_DIR": data_dir}  # the corpus the smoke grid prepared
    argv = [sys.executable, "-m", "minispdf", "reproduce", "--grid", "smoke", "--jobs", "2",
            "--out", str(out)]
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    deadline, workers = time.time() + 240, set()
    while time.time() < deadline and len(workers) < 2:  # both workers started: jobs are running
        assert proc.poll() is None, proc.communicate()
        workers = {k for k in _children(proc.pid)
                   if "spawn_main" in open(f"/proc/{k}/cmdline").read()}
        time.sleep(0.2)
    time.sleep(2)
    kept = sorted(p.name for p in (out / "cells").glob("*.json"))
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 128 + signal.SIGTERM, err
    assert ("interrupted: SIGTERM" in err
            and "continue with: minispdf reproduce --grid smoke --jobs 2" in err)
    time.sleep(0.5)
    alive = [w for w in workers if os.path.exists(f"/proc/{w}")
             and "Z" not in open(f"/proc/{w}/stat").read().split()[2]]
    assert workers and not alive
    assert set(kept) <= {p.name for p in (out / "cells").glob("*.json")}  # finished jobs are kept


def test_a_grid_job_is_the_settings_objects_the_command_line_builds():
    """A grid arm becomes the library's settings objects once, where the plan makes its job: the
    objects ``minispdf pretrain`` / ``finetune`` build from the same settings as flags, which reach
    spdf.pretrain / spdf.finetune unchanged (but the device); the committed names stay."""
    from minispdf.cli import build_parser
    from minispdf.config import build, parse
    from minispdf.schedules import SparsityConfig
    from minispdf.spdf import ModelConfig, PretrainConfig
    from minispdf.study.grids import parse_arm
    from minispdf.train import TrainConfig

    grid = resolve_grid("default")
    pre = plan_lib.pretrain_job(grid, "small", parse_arm("spdf75"), 0)
    cell = plan_lib.cell_job(grid, "small", "hard", "full", parse_arm("spdf75"), 0, pre["name"])
    assert pre["name"] == "small-s75-794steps-seed0-f9947119"  # as in results/default
    assert cell["name"] == "hard-small-full-spdf75-seed0-44d6d4ad"
    _, parsers = build_parser()
    loop = "--batch_size 8 --lr 3e-3 --eval_interval 0 --seed 0 --no-progress"
    args = parse(parsers["pretrain"], (
        "--preset nano --n_embd 48 --block_size 256 --tokenizer char --data builtin "
        "--sparsity 0.75 --mask_seed 0 --max_steps 794 --warmup_steps 40 --weight_decay 0.1 "
        f"--eval_iters 20 {loop}").split())
    assert pre["settings"] == {
        "pretraining": build(PretrainConfig, args), "model_config": build(ModelConfig, args),
        "sparsity_config": build(SparsityConfig, args), "training": build(TrainConfig, args)}
    args = parse(parsers["finetune"], (
        "--tokenizer char --max_steps 600 --warmup_steps 30 --weight_decay 0.01 --eval_iters 5 "
        f"{loop}").split())
    assert cell["settings"] == {"model_config": build(ModelConfig, args),
                                "training": build(TrainConfig, args)}


def test_the_runner_hands_a_jobs_settings_objects_to_pretrain(tmp_path, monkeypatch):
    from dataclasses import replace

    from minispdf.study import runner
    from minispdf.study.grids import parse_arm

    job = plan_lib.pretrain_job(resolve_grid("smoke"), "nano", parse_arm("set50"), 0)
    seen = {}

    def fake(**kwargs):
        seen.update(kwargs)
        raise KeyboardInterrupt  # stop before training

    monkeypatch.setattr(spdf, "pretrain", fake)
    with pytest.raises(KeyboardInterrupt):
        runner.run_pretrain(str(tmp_path), job, "cpu")
    run = seen.pop("run")
    settings = job["settings"]
    assert seen == {**settings, "training": replace(settings["training"], device="cpu")}
    assert seen["sparsity_config"] is settings["sparsity_config"]
    assert run.out.startswith(str(tmp_path))


def test_a_grid_phase_takes_train_configs_settings_by_their_names(tmp_path):
    """[pretrain] and [finetune] hold TrainConfig's settings (warmup_frac for its warmup_steps); one
    that a committed grid does not give joins the spec, so it names new runs."""
    from minispdf.study.grids import parse_arm

    path = tmp_path / "clip.toml"
    path.write_text('inherit = "smoke"\n[pretrain]\ngrad_clip = 0.5\n')
    job = plan_lib.pretrain_job(resolve_grid(str(path)), "nano", parse_arm("spdf50"), 0)
    assert job["settings"]["training"].grad_clip == 0.5 and job["spec"]["grad_clip"] == 0.5
    plain = plan_lib.pretrain_job(resolve_grid("smoke"), "nano", parse_arm("spdf50"), 0)
    assert "grad_clip" not in plain["spec"] and plain["name"] != job["name"]
