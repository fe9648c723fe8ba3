"""Assignment mode: student copies stay in sync, reference solutions pass, stubs and wrong answers fail."""

import json
import shutil
from pathlib import Path

import nbformat
import pytest
import torch

from minispdf import assignments as A

ROOT = Path(__file__).resolve().parents[1]
NB = ROOT / "notebooks"
WITH_EXERCISES = {"01_gpt_and_masks": {"random_mask", "magnitude_mask"}, "02_flop_accounting": {"block_flops"},
                  "03_sparse_pretraining": {"masked_step"}, "04_dense_finetuning": {"loss_mask"},
                  "06_beyond_the_paper": {"equal_flop_steps"}}


def test_committed_student_copies_are_in_sync():
    assert A.check_student_copies(str(NB), str(NB / "student")) == []


@pytest.mark.parametrize("stem", sorted(WITH_EXERCISES))
def test_reference_solutions_pass_the_grader(stem):
    result = A.grade(NB / f"{stem}.ipynb")
    assert set(result["exercises"]) == WITH_EXERCISES[stem]
    assert result["all_passed"], json.dumps(result, indent=1)
    assert result["passed"] == result["total"] == len(WITH_EXERCISES[stem])


@pytest.mark.parametrize("stem", sorted(WITH_EXERCISES))
def test_student_copies_fail_the_grader(stem):
    path = NB / "student" / f"{stem}.ipynb"
    nb = nbformat.read(str(path), as_version=4)
    exercise_sources = [c.source for c in nb.cells if A.exercise_name(c)]
    assert exercise_sources and all("NotImplementedError(\"exercise:" in s for s in exercise_sources)
    assert not any(A.BEGIN in c.source or A.END in c.source for c in nb.cells)
    result = A.grade(path)
    assert result["passed"] == 0 and result["total"] == len(WITH_EXERCISES[stem])
    for ex in result["exercises"].values():
        assert any("not written yet" in c["message"] for c in ex["checks"])


def test_all_exercises_are_in_the_notebooks():
    found = set().union(*WITH_EXERCISES.values())
    assert found == set(A.EXERCISES)
    for ex in A.EXERCISES.values():
        assert ex.name in WITH_EXERCISES[ex.notebook]


def _notebook_with(tmp_path, name, source):
    """A one-exercise notebook whose exercise cell holds ``source``."""
    nb = nbformat.v4.new_notebook()
    cell = nbformat.v4.new_code_cell(source)
    cell.metadata["minispdf"] = {"exercise": name}
    nb.cells = [nbformat.v4.new_markdown_cell("# test"), cell]
    path = tmp_path / f"{name}.ipynb"
    nbformat.write(nb, str(path))
    return path


WRONG = {
    "random_mask": ("def random_mask(shape, sparsity, generator=None):\n"
                    "    return torch.rand(shape, generator=generator) >= sparsity  # right only on average\n",
                    "keeps exactly"),
    "magnitude_mask": ("def magnitude_mask(weight, sparsity):\n"
                       "    k = round((1 - sparsity) * weight.numel())\n"
                       "    mask = torch.zeros(weight.numel(), dtype=torch.bool)\n"
                       "    if k: mask[weight.flatten().topk(k).indices] = True  # forgot abs()\n"
                       "    return mask.view_as(weight)\n",
                       "largest |w|"),
    "block_flops": ("def block_forward_flops(d_model, seq_len, n_head, sparsity):\n"
                    "    return (1 - sparsity) * (24 * seq_len * d_model**2 + 4 * seq_len**2 * d_model + 3 * n_head * seq_len**2)\n",
                    "attention matmuls"),
    "loss_mask": ("def loss_mask(prompt_len, n_tokens):\n"
                  "    return [0] * prompt_len + [1] * (n_tokens - prompt_len - 1)  # off by one\n",
                  "expected"),
}


@pytest.mark.parametrize("name", sorted(WRONG))
def test_wrong_solutions_fail(tmp_path, name):
    source, hint = WRONG[name]
    result = A.grade(_notebook_with(tmp_path, name, source))
    ex = result["exercises"][name]
    assert not ex["passed"] and not result["all_passed"]
    assert any(hint in c["message"] for c in ex["checks"] if not c["passed"]), ex


def test_random_mask_with_wrong_count_fails_and_structured_mask_fails():
    def off_by_one(shape, sparsity, generator=None):
        n = shape[0] * shape[1]
        keep = round((1 - sparsity) * n) + 1
        mask = torch.zeros(n, dtype=torch.bool)
        mask[torch.randperm(n, generator=generator)[:min(keep, n)]] = True
        return mask.view(*shape)

    def first_columns(shape, sparsity, generator=None):  # exact count, but not random
        n = shape[0] * shape[1]
        mask = torch.zeros(n, dtype=torch.bool)
        mask[: round((1 - sparsity) * n)] = True
        return mask.view(*shape)

    assert not A.check_exercise("random_mask", off_by_one)["passed"]
    r = A.check_exercise("random_mask", first_columns)
    assert not r["passed"]
    assert [c["passed"] for c in r["checks"]] == [True, False, False]


def test_check_raises_for_the_notebook_cell(capsys):
    with pytest.raises(AssertionError, match="not solved"):
        A.check("loss_mask", lambda p, n: [1] * (n - 1))
    assert "FAIL" in capsys.readouterr().out
    assert A.check("loss_mask", lambda p, n: [0] * (p - 1) + [1] * (n - p))["passed"]


def test_crashing_or_broken_cells_fail_with_a_message(tmp_path):
    r = A.grade(_notebook_with(tmp_path, "loss_mask", "def loss_mask(p, n):\n    return 1 / 0\n"))
    assert "ZeroDivisionError" in r["exercises"]["loss_mask"]["checks"][0]["message"]
    r = A.grade(_notebook_with(tmp_path, "loss_mask", "def loss_mask(p, n)\n    return []\n"))
    assert "does not run" in r["exercises"]["loss_mask"]["checks"][0]["message"]


def test_stub_source_keeps_indentation_and_rejects_unbalanced_markers():
    src = "def f(x):\n    ### BEGIN SOLUTION\n    return x\n    ### END SOLUTION\n"
    assert A.stub_source(src, "loss_mask") == (
        'def f(x):\n    raise NotImplementedError("exercise: ' + A.EXERCISES["loss_mask"].summary + '")\n')
    with pytest.raises(A.MiniSPDFError):
        A.stub_source("### BEGIN SOLUTION\nx = 1\n", None)
    with pytest.raises(A.MiniSPDFError):
        A.stub_source("x = 1\n### END SOLUTION\n", None)


def test_make_and_check_student_copies_roundtrip(tmp_path):
    src, dst = tmp_path / "nb", tmp_path / "nb" / "student"
    src.mkdir()
    for stem in WITH_EXERCISES:
        shutil.copy(NB / f"{stem}.ipynb", src)
    assert A.check_student_copies(str(src), str(dst))  # nothing there yet
    written = A.make_student_copies(str(src), str(dst))
    assert len(written) == len(WITH_EXERCISES) and A.check_student_copies(str(src), str(dst)) == []
    (dst / "stale.ipynb").write_text("{}")
    p = dst / "04_dense_finetuning.ipynb"
    p.write_text(p.read_text().replace("exercise:", "exercise :"))
    problems = A.check_student_copies(str(src), str(dst))
    assert any("out of date" in x for x in problems) and any("no source notebook" in x for x in problems)
    A.make_student_copies(str(src), str(dst))
    assert A.check_student_copies(str(src), str(dst)) == [] and not (dst / "stale.ipynb").exists()
    # the student copy is identical to its source outside the exercise cells (plus one note)
    s = nbformat.read(str(dst / "01_gpt_and_masks.ipynb"), as_version=4)
    o = nbformat.read(str(src / "01_gpt_and_masks.ipynb"), as_version=4)
    answers = [c for c in o.cells if "answer" in c.metadata.get("tags", [])]  # instructor's copy only
    assert answers and len(s.cells) == len(o.cells) + 1 - len(answers)
    assert [c.source for c in s.cells if c.id != A.STUDENT_NOTE_ID and not A.exercise_name(c)] == \
           [c.source for c in o.cells if not A.exercise_name(c) and c not in answers]


def test_command_line(tmp_path, capsys):
    assert A.main(["check", "--src", str(NB), "--dst", str(NB / "student")]) == 0
    assert A.main(["grade", str(NB / "02_flop_accounting.ipynb")]) == 0
    assert "1/1 exercises pass" in capsys.readouterr().out
    assert A.main(["grade", "--json", str(NB / "student" / "02_flop_accounting.ipynb")]) == 1
    out = json.loads(capsys.readouterr().out)
    assert out["passed"] == 0 and out["total"] == 1
    assert A.main(["student", "--src", str(NB), "--dst", str(tmp_path / "s")]) == 0
    assert len(list((tmp_path / "s").glob("*.ipynb"))) == len(list(NB.glob("[0-9][0-9]_*.ipynb")))
    assert A.main(["grade", str(tmp_path / "missing.ipynb")]) == 2
    assert "error:" in capsys.readouterr().err
