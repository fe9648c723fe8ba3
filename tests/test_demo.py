"""`minispdf demo --quick`: the study's demo grid end to end, and its run folder is
all-or-nothing."""

import json
import os

import pytest

from minispdf import demo as demo_lib
from minispdf.errors import MiniSPDFError
from minispdf.evaluate import score_file


@pytest.fixture(scope="module")
def quick_demo(tmp_path_factory):
    root = tmp_path_factory.mktemp("demo")
    cwd = os.getcwd()
    os.chdir(root)  # data/ is prepared relative to the working directory
    try:
        results = demo_lib.run_demo(out=str(root / "demo"), quick=True, jobs=1, log=lambda *a: None)
    finally:
        os.chdir(cwd)
    return root / "demo", results


def test_quick_demo_writes_table_plot_and_results(quick_demo):
    out, results = quick_demo
    for name in ("results.json", "results.md", "results.csv", "claims.json",
                 "pretrain_loss_vs_flops.png"):
        assert (out / name).stat().st_size > 0, name
    saved = json.loads((out / "results.json").read_text())
    arms = {r["arm"]: r for r in saved["summary"]}
    assert list(arms) == ["dense", "spdf50", "spdf75", "spsf75", "scratch"]  # the study's arm names
    ratios = [arms[a]["pretrain_flops_x_dense"] for a in ("dense", "spdf50", "spdf75")]
    assert ratios[0] == 1.0 and 1.0 > ratios[1] > ratios[2] > 0  # sparser pre-training, fewer FLOPs
    assert arms["scratch"]["pretrain_flops_x_dense"] == 0.0  # the from-scratch baseline
    table = (out / "results.md").read_text()
    assert (sum(line.startswith("|") for line in table.splitlines()) == 2 + 5
            and "| spsf75 |" in table)
    assert ("One seed of each arm (`demo --quick` grid" in table
            and results["commit"].split()[0] in table)
    assert not [p for p in os.listdir(out.parent) if p.startswith(".tmp-")]  # fileio.TMP_PREFIX


def test_bleu_in_table_equals_the_predictions_file_scored_again(quick_demo):
    out, results = quick_demo
    row = next(r for r in results["rows"] if r["arm"] == "spdf75")
    assert (score_file(str(out / "predictions" / (row["cell"] + ".jsonl")), "bleu")["bleu"]
            == row["bleu"])


def test_existing_results_are_never_clobbered(quick_demo, tmp_path):
    out, _ = quick_demo
    before = (out / "results.json").read_bytes()
    with pytest.raises(MiniSPDFError, match="--overwrite"):
        demo_lib.run_demo(out=str(out), quick=True)
    assert (out / "results.json").read_bytes() == before


def test_interrupted_demo_leaves_nothing_half_written(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "demo").mkdir()
    (tmp_path / "demo" / "results.json").write_text("{}")

    def boom(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr("minispdf.spdf.pretrain", boom)
    with pytest.raises(KeyboardInterrupt):
        demo_lib.run_demo(out=str(tmp_path / "demo"), quick=True, overwrite=True, jobs=1,
                          log=lambda *a: None)
    assert (tmp_path / "demo" / "results.json").read_text() == "{}"
    # data/ is the corpus cache, not a result
    assert sorted(set(os.listdir(tmp_path)) - {"data"}) == ["demo"]


def test_demo_folder_gets_the_usual_permissions(quick_demo):
    out, _ = quick_demo
    mask = os.umask(0o022)
    os.umask(mask)
    assert out.stat().st_mode & 0o777 == 0o777 & ~mask  # not mkdtemp's owner-only 0700


def test_demo_grid_scale_overrides_are_checked():
    grid = demo_lib.demo_grid(pretrain_steps=7, eval_inputs=3)
    assert (grid["sizes"]["nano"]["pretrain_steps"] == 7
            and grid["tasks"]["hard"]["eval_inputs"] == 3)
    with pytest.raises(MiniSPDFError, match="--finetune_steps 0"):
        demo_lib.demo_grid(finetune_steps=0)
