"""The dense FLOP frontier, budgets, Holm's correction, critical margins and power for a true
effect."""

import json
import math
import os
import random
import shutil

import pytest

from minispdf.cli import main as cli_main
from minispdf.study import claims as claims_lib
from minispdf.study import declaration, frontier, plan as plan_lib, run_study, stats
from minispdf.study.grids import load_grid

# ----------------------------------------------------------------------- the iso-quality FLOP ratio

CURVE = [(1e12, 2.0), (2e12, 1.8), (4e12, 1.6), (8e12, 1.5)]


def test_iso_flops_interpolates_in_log_flops_and_censors_outside_the_range():
    f, flag = frontier.iso_flops(CURVE, 1.7)  # halfway from 2e12 to 4e12 in log FLOPs
    assert flag is None and f == pytest.approx(2 ** 1.5 * 1e12, rel=1e-12)
    assert frontier.iso_flops(CURVE, 1.8) == (2e12, None)
    # dense's smallest budget already does better
    assert frontier.iso_flops(CURVE, 2.1) == (1e12, frontier.BELOW)
    # better than dense's largest: a bound
    assert frontier.iso_flops(CURVE, 1.4) == (8e12, frontier.ABOVE)


def test_iso_flops_takes_the_first_crossing_of_a_bumpy_curve():
    bumpy = [(1e12, 2.0), (2e12, 1.6), (4e12, 1.7), (8e12, 1.5)]
    assert (frontier.iso_flops(bumpy, 1.65)[0]
            == pytest.approx(math.exp(math.log(1e12) + 0.875 * math.log(2))))


def _dense(n=5):
    return {s: [(f, y + 0.01 * s) for f, y in CURVE] for s in range(n)}


def test_ratio_is_the_geometric_mean_over_seeds_with_a_bootstrap_interval():
    dense = _dense()
    # reaches dense's quality at 2e12: exactly 2x
    method = {s: (1e12, 1.8 + 0.01 * s) for s in range(5)}
    r = frontier.ratio(dense, method, 500, 0.95)
    assert r["ratio"] == pytest.approx(2.0) and r["censored"] is None and r["n_seeds"] == 5
    assert r["low"] == pytest.approx(2.0) and r["high"] == pytest.approx(2.0)
    uneven = {s: (1e12 * (1 + 0.1 * s), 1.8 + 0.01 * s) for s in range(5)}
    r2 = frontier.ratio(dense, uneven, 500, 0.95)
    hand = math.exp(sum(math.log(2 / (1 + 0.1 * s)) for s in range(5)) / 5)
    assert r2["ratio"] == pytest.approx(hand) and r2["low"] < hand < r2["high"]
    # a fixed generator: the report is reproducible
    assert frontier.ratio(dense, uneven, 500, 0.95) == r2


def test_a_censored_seed_makes_the_ratio_a_bound_and_says_so():
    dense = _dense(3)
    # seed 2 beats dense's largest budget
    method = {0: (1e12, 1.8), 1: (1e12, 1.81), 2: (1e12, 1.0)}
    r = frontier.ratio(dense, method, 300, 0.95)
    assert (r["censored"] == frontier.ABOVE
            and r["per_seed"]["2"] == {"ratio": 8.0, "censored": frontier.ABOVE})
    assert (frontier.fmt_ratio(r).startswith("> ")
            and frontier.reading(r) == "more FLOP-efficient than dense")
    worse = {s: (1e12, 3.0) for s in range(3)}
    r = frontier.ratio(dense, worse, 300, 0.95)
    assert r["censored"] == frontier.BELOW and frontier.fmt_ratio(r).startswith("< 1.00x")
    assert frontier.reading(r) == "less FLOP-efficient than dense"


# ----------------------------------------------------------------------- statistics for many claims


def test_holm_adjusts_step_down_and_never_decreases():
    adj = stats.holm({"a": 0.01, "b": 0.04, "c": 0.03, "d": None})
    assert adj == {"a": pytest.approx(0.03), "b": pytest.approx(0.06), "c": pytest.approx(0.06),
                   "d": None}
    assert stats.holm({"a": 0.5, "b": 0.6}) == {"a": 1.0, "b": 1.0}


def test_the_one_sided_p_value_agrees_with_the_90_percent_interval():
    rng = random.Random(3)
    for _ in range(200):
        d = [rng.gauss(0.08, 0.05) for _ in range(rng.randint(3, 9))]
        ci90 = stats.interval(d, 0.90)
        assert (stats.p_below(d, 0.1) < 0.05) == (ci90.high < 0.1)


def test_seeds_for_power_is_the_fewest_whose_mde_fits_between_effect_and_margin():
    n = stats.seeds_for_power(0.093, 0.10, 0.05)
    assert stats.mde(0.093, n, 0.95) <= 0.05 < stats.mde(0.093, n - 1, 0.95)
    # a true effect past the margin cannot hold
    assert stats.seeds_for_power(0.05, 0.10, 0.12) is None


def _rows(spdf_l, seeds=5, bad_seed=None, spdf50_l=None):
    """hard/nano/full rows whose spdf75 loses exactly ``spdf_l[s]`` of the benefit on test loss."""
    rows = []
    spdf50_l = spdf50_l or [0.01 * s for s in range(seeds)]
    for s in range(seeds):
        ben = -0.2 if s == bad_seed else 1.0
        for arm, loss in (("dense", 1.0), ("spdf75", 1.0 + spdf_l[s] * ben),
                          ("spdf50", 1.0 + spdf50_l[s] * ben),
                          ("scratch", 1.0 + ben)):
            rows.append({"task": "hard", "size": "nano", "set": "full", "seed": s, "arm": arm,
                         "test_loss": loss,
                         "bleu": None, "pretrain_flops": 1.0,
                         "pretrain_val_loss": None if arm == "scratch" else 2.0})
    return rows


def _judge(rows):
    grid = load_grid("quick")
    cells = [{"spec": {k: r[k] for k in ("task", "size", "set", "arm", "seed")}} for r in rows]
    decl = declaration.build(grid, cells, "test")
    return {c["claim"]: c for c in claims_lib.Judge(decl, rows, 3.26).claims()
            if c["measure"] == "test_loss"}


def test_critical_margin_is_the_upper_end_of_the_90_percent_interval_in_l_nats_and_share():
    ls = [0.02, 0.05, 0.03, 0.06, 0.04]
    c = _judge(_rows(ls))["spdf75: no significant loss vs dense"]
    assert c["critical_margin"] == pytest.approx(stats.interval(ls, 0.90).high)
    # benefit 1 nat: L = nats
    assert c["critical_abs"] == pytest.approx(stats.interval(ls, 0.90).high)
    assert c["critical_share_of_dense"] == pytest.approx(c["critical_abs"] / 1.0)
    assert (c["unusable_seeds"] == []
            and c["holm_family"].startswith("2 no-loss claims on test loss (post hoc"))


def test_holm_can_undo_a_raw_holds_and_both_are_reported():
    # upper 90% end just under 0.1: one-sided p between 0.025 and 0.05
    ls = [0.02, 0.09, 0.01, 0.10, 0.03]
    both = _judge(_rows(ls, spdf50_l=ls))
    for claim in ("spdf75: no significant loss vs dense", "spdf50: no significant loss vs dense"):
        c = both[claim]
        assert c["verdict"] == stats.HOLDS and 0.025 < c["p_holds"] < 0.05
        # two equal p-values: both doubled
        assert c["holm_p_holds"] == pytest.approx(2 * c["p_holds"])
        assert c["holm_verdict"] == stats.INCONCLUSIVE
    # the other claim's p is ~0: no cost
    alone = _judge(_rows(ls))["spdf75: no significant loss vs dense"]
    assert (alone["holm_verdict"] == stats.HOLDS
            and alone["holm_p_holds"] == pytest.approx(alone["p_holds"]))


def test_a_seed_without_l_is_named_not_dropped_silently():
    c = _judge(_rows([0.02, 0.05, 0.03, 0.06, 0.04],
                     bad_seed=3))["spdf75: no significant loss vs dense"]
    assert c["unusable_seeds"] == [3] and c["n_seeds"] == 4


# ------------------------------------------------------------------------------ budgets in a grid

FRONTIER_GRID = '''description = "a frontier at smoke scale"
inherit = "smoke"
primary = { task = "easy", size = "nano", set = "full" }

[frontier]
resamples = 50

[[blocks]]
sizes = ["nano"]
tasks = ["easy"]
sets = ["full"]
arms = ["dense", "scratch"]
budgets = [0.5, 1, 2]
seeds = 2

[[blocks]]
sizes = ["nano"]
tasks = ["easy"]
sets = ["full"]
arms = ["dense", "spdf75", "scratch"]
budgets = [1, 2]
seeds = 2
'''


def test_budgets_become_sizes_with_multiplied_steps_and_are_not_compared_as_sizes(tmp_path):
    path = tmp_path / "f.toml"
    # its blocks replace the smoke grid's (lists replace, tables merge)
    path.write_text(FRONTIER_GRID)
    grid = load_grid(str(path))
    assert (grid["primary"]["size"] == "nano-x1"
            and set(grid["sizes"]) == {"nano-x0.5", "nano-x1", "nano-x2"})
    steps = {s: plan_lib.pretrain_steps(grid, s) for s in grid["sizes"]}
    assert steps == {"nano-x0.5": 2, "nano-x1": 4, "nano-x2": 8}
    assert grid["sizes"]["nano-x2"]["base"] == "nano" and grid["sizes"]["nano-x2"]["budget"] == 2.0
    _, cells = plan_lib.plan(grid)
    claims = claims_lib.declare(grid, cells)
    assert not any(c["claim"].startswith("larger models") for c in claims)
    assert ({c["where"]["size"] for c in claims if c["claim"].startswith("spdf75: no")}
            == {"nano-x1", "nano-x2"})


@pytest.mark.parametrize("budgets", ["[]", "[1, 1]", "[0]", "[-1]", '["x"]', "[1000]"])
def test_bad_budgets_are_one_line_errors(tmp_path, capsys, budgets):
    path = tmp_path / "bad.toml"
    path.write_text(FRONTIER_GRID.replace("budgets = [0.5, 1, 2]", f"budgets = {budgets}"))
    assert (cli_main(["reproduce", "--grid", str(path), "--dry-run", "--out", str(tmp_path / "o")])
            == 2)
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "budgets" in err[0] and err[0].startswith("error:")


@pytest.mark.parametrize("line",
                         ["level = 1.5", "resamples = 0", "holm_alpha = 0.0", 'measure = "bleuu"'])
def test_bad_frontier_rules_are_one_line_errors(tmp_path, capsys, line):
    path = tmp_path / "bad.toml"
    path.write_text(FRONTIER_GRID.replace("resamples = 50", line))
    assert (cli_main(["reproduce", "--grid", str(path), "--dry-run", "--out", str(tmp_path / "o")])
            == 2)
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "key frontier." in err[0]


def test_a_primary_size_without_budget_1_is_refused(tmp_path, capsys):
    path = tmp_path / "bad.toml"
    path.write_text(FRONTIER_GRID.replace("budgets = [0.5, 1, 2]", "budgets = [0.5, 2]").replace(
        "budgets = [1, 2]", "budgets = [2]"))
    assert (cli_main(["reproduce", "--grid", str(path), "--dry-run", "--out", str(tmp_path / "o")])
            == 2)
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "add budget 1" in err[0]


@pytest.fixture(scope="module")
def frontier_study(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("frontier")
    mp = pytest.MonkeyPatch()
    mp.setenv("MINISPDF_DATA_DIR", str(tmp / "data"))
    (tmp / "f.toml").write_text(FRONTIER_GRID)
    grid = load_grid(str(tmp / "f.toml"))
    try:
        res = run_study(grid, str(tmp / "out"), device="cpu", jobs=1, log=lambda *a: None)
    finally:
        mp.undo()
    return str(tmp / "out"), res


def test_a_frontier_grid_reports_the_ratio_of_every_method_run(frontier_study):
    out, res = frontier_study
    fr = res["frontier"]
    cell = fr["cells"][0]
    assert [d["budget"] for d in cell["dense"]] == [0.5, 1.0, 2.0]
    assert [(m["arm"], m["budget"]) for m in cell["methods"]] == [("spdf75", 1.0), ("spdf75", 2.0)]
    for m in cell["methods"]:
        dense = {}
        for r in res["rows"]:
            if r["arm"] == "dense" and r["task"] == "easy":
                dense.setdefault(r["seed"], []).append((r["pretrain_flops"], r["test_loss"]))
        runs = {r["seed"]: (r["pretrain_flops"], r["test_loss"]) for r in res["rows"]
                if r["arm"] == "spdf75" and r["size"] == m["size"]}
        # from results.csv's rows alone
        assert m["ratio"] == frontier.ratio(dense, runs, 50, 0.95)["ratio"]
        assert m["flop_reduction"] > 1
    table = open(os.path.join(out, "frontier.md")).read()
    assert "| spdf75 | x2 |" in table and "iso-quality FLOP ratio" in table
    with open(os.path.join(out, "frontier.png"), "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    saved = json.load(open(os.path.join(out, "results.json")))
    assert saved["frontier"]["cells"][0]["methods"][0]["ratio"] == cell["methods"][0]["ratio"]


def test_a_frontier_study_rejudges_to_the_same_bytes(frontier_study, tmp_path):
    src, _ = frontier_study
    out = str(tmp_path / "committed")
    shutil.copytree(src, out, ignore=shutil.ignore_patterns("cells", "pretrain", "predictions"))
    before = {n: open(os.path.join(out, n), "rb").read()
              for n in ("frontier.md", "claims.json", "results.json")}
    assert cli_main(["reproduce", "--report", out]) == 0
    after = {n: open(os.path.join(out, n), "rb").read() for n in before}
    assert after == before


def test_a_missing_include_is_one_line_naming_it(tmp_path):
    from minispdf.errors import MiniSPDFError
    from minispdf.study.report import sync_includes

    page = tmp_path / "page.md"
    page.write_text("<!-- include: results/nope/README_section.md -->\n<!-- /include -->\n")
    with pytest.raises(MiniSPDFError,
                       match="includes results/nope/README_section.md, which cannot be read"):
        sync_includes(str(page))
    assert (page.read_text()
            == "<!-- include: results/nope/README_section.md -->\n<!-- /include -->\n")
