"""Assignment mode: student copies stay in sync, reference solutions pass, stubs and wrong answers
fail."""

import json
import os
import re
import shutil
import time
from pathlib import Path

import nbformat
import pytest
import torch

from minispdf import assignments as A

ROOT = Path(__file__).resolve().parents[1]
NB = ROOT / "notebooks"
# The exercises each lesson holds, read from the notebooks (masked_step and equal_flop_steps join
# lessons 03 and 06 with the new lesson sources); these four have been there from the start.
WITH_EXERCISES = {p.stem: names for p in sorted(NB.glob("*.ipynb"))
                  if (names := {A.exercise_name(c) for c in A.read_notebook(p).cells} - {None})}
ORIGINAL = {"random_mask", "magnitude_mask", "block_flops", "loss_mask"}


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
    assert (exercise_sources
            and all("NotImplementedError(\"exercise:" in s for s in exercise_sources))
    assert not any(A.BEGIN in c.source or A.END in c.source for c in nb.cells)
    result = A.grade(path)
    assert result["passed"] == 0 and result["total"] == len(WITH_EXERCISES[stem])
    for ex in result["exercises"].values():
        assert any("not written yet" in c["message"] for c in ex["checks"])


def test_all_exercises_are_in_the_notebooks():
    found = set().union(*WITH_EXERCISES.values())
    assert ORIGINAL <= found <= set(A.EXERCISES)
    for name in found:  # each in the lesson it declares
        assert name in WITH_EXERCISES[A.EXERCISES[name].notebook]


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
                    "    return torch.rand(shape, generator=generator) >= sparsity  # right only "
                    "on average\n",
                    "keeps exactly"),
    "magnitude_mask": ("def magnitude_mask(weight, sparsity):\n"
                       "    k = round((1 - sparsity) * weight.numel())\n"
                       "    mask = torch.zeros(weight.numel(), dtype=torch.bool)\n"
                       "    if k: mask[weight.flatten().topk(k).indices] = True  # forgot abs()\n"
                       "    return mask.view_as(weight)\n",
                       "largest |w|"),
    "block_flops": ("def block_forward_flops(d_model, seq_len, n_head, sparsity):\n"
                    "    return (1 - sparsity) * (24 * seq_len * d_model**2 + 4 * seq_len**2 * "
                    "d_model + 3 * n_head * seq_len**2)\n",
                    "attention matmuls"),
    "loss_mask": ("def loss_mask(prompt_len, n_tokens):\n"
                  "    return [0] * prompt_len + [1] * (n_tokens - prompt_len - 1)  # off by one\n",
                  "expected"),
    "masked_step": ("def masked_adamw_step(params, masks, optimizer):  # masks too late: "
                    "after the step\n"
                    "    with torch.no_grad():\n"
                    "        optimizer.step()\n"
                    "        for p, m in zip(params, masks):\n"
                    "            for t in (p, optimizer.state[p]['exp_avg'], "
                    "optimizer.state[p]['exp_avg_sq']):\n"
                    "                t.mul_(m)\n"
                    "        optimizer.zero_grad()\n",
                    "before optimizer.step(), not after"),
    "equal_flop_steps": ("def equal_flop_steps(steps, sparse, dense):\n"
                         "    return int(steps * sparse / dense)  # truncates\n",
                         "rounded to the nearest step"),
    "model_sparsity": ("def model_sparsity(shapes, masked, sparsity):  # sparsity x masked share: "
                       "no exact counts\n"
                       "    size = lambda s: math.prod(s)\n"
                       "    return sparsity * sum(size(shapes[n]) for n in masked) / sum(map(size, "
                       "shapes.values()))\n",
                       "round((1 - sparsity) * numel)"),
    "benefit_lost": ("def benefit_lost(arm, dense, scratch, measure):  # keeps seeds where scratch "
                     "is not worse\n"
                     "    sign = -1 if measure == 'bleu' else 1\n"
                     "    return {s: (arm[s] - dense[s]) / (scratch[s] - dense[s]) for s in arm if "
                     "s in scratch}\n",
                     "expected"),
    "two_four_mask": ("def two_four_mask(weight):  # 2 of every 4 down the columns: groups "
                      "of outputs\n"
                      "    g = weight.abs().t().reshape(weight.shape[1], -1, 4)\n"
                      "    top = g.topk(2, dim=-1).indices\n"
                      "    keep = torch.zeros_like(g, dtype=torch.bool).scatter_(-1, top, True)\n"
                      "    return keep.reshape(weight.shape[1], "
                      "weight.shape[0]).t().contiguous()\n",
                      "do not keep exactly 2"),
}

# Right answers that call the library the checks compare with: each is refused, in the grader
# (from the cell's source, before it runs) and under the notebook's check (from the function).
BORROWED = {
    "random_mask": ("from minispdf.sparsity import sparsify\n"
                    "def random_mask(shape, sparsity, generator=None):\n"
                    "    seed = int(torch.randint(1 << 30, (1,), generator=generator))\n"
                    "    layer = torch.nn.Linear(shape[1], shape[0], bias=False)\n"
                    "    return sparsify(layer, sparsity, include=r'^weight$', "
                    "seed=seed)['weight']\n",
                    "sparsify (from minispdf.sparsity)"),
    "magnitude_mask": ("def magnitude_mask(weight, sparsity):\n"
                       "    import minispdf.sparsity as S\n"
                       "    layer = torch.nn.Linear(weight.shape[1], weight.shape[0], bias=False)\n"
                       "    layer.weight.data.copy_(weight)\n"
                       "    return S.sparsify(layer, sparsity, method='magnitude', "
                       "include=r'^weight$')['weight']\n",
                       "import minispdf.sparsity inside magnitude_mask"),
    "block_flops": ("from minispdf.flops import flop_report\n"
                    "from minispdf.model import GPTConfig\n"
                    "def block_forward_flops(d_model, seq_len, n_head, sparsity):\n"
                    "    cfg = GPTConfig(n_layer=1, n_embd=d_model, n_head=n_head, "
                    "block_size=seq_len, vocab_size=257)\n"
                    "    rep = flop_report(cfg, sparsity=sparsity, seq_len=seq_len)\n"
                    "    return sum(v['sparse'] for k, v in rep.components.items() if k not in "
                    "('embedding', 'logits'))\n",
                    "flop_report (from minispdf.flops)"),
    "loss_mask": ("from minispdf.tasks.finetune import encode_example, SEPARATOR\n"
                  "from minispdf.data import get_tokenizer\n"
                  "def loss_mask(prompt_len, n_tokens):\n"
                  "    src, tgt = 'a' * (prompt_len - len(SEPARATOR)), 'b' * (n_tokens - "
                  "prompt_len - 1)\n"
                  "    return encode_example(get_tokenizer('char'), src, tgt, "
                  "block_size=4096)[1]\n",
                  "encode_example (from minispdf.tasks.finetune)"),
    "masked_step": ("from minispdf import sparsity\n"
                    "def masked_adamw_step(params, masks, optimizer):\n"
                    "    holder = torch.nn.Module()  # the library's hooks zero its pruned weights "
                    "and moments\n"
                    "    for i, p in enumerate(params):\n"
                    "        holder.register_parameter(f'w{i}', p)\n"
                    "    sparsity.register_masks(holder, {f'w{i}': m for i, m in "
                    "enumerate(masks)})\n"
                    "    with torch.no_grad():\n"
                    "        for p, m in zip(params, masks):\n"
                    "            p.grad.mul_(m)\n"
                    "    optimizer.step()\n",
                    "sparsity (from minispdf.sparsity)"),
    "model_sparsity": ("from minispdf import GPT, preset_config, sparsify\n"
                       "def model_sparsity(shapes, masked, sparsity):\n"
                       "    total = sum(math.prod(s) for s in shapes.values())\n"
                       "    return sum(math.prod(shapes[n]) - round((1 - sparsity) * "
                       "math.prod(shapes[n])) "
                       "for n in masked) / total if sparsify else 0\n",
                       "sparsify (from minispdf.sparsity)"),
    "benefit_lost": ("from minispdf.study.claims import benefit_lost as study_L\n"
                     "def benefit_lost(arm, dense, scratch, measure):\n"
                     "    rows = [dict(seed=s, arm=a, task='t', size='s', set='f', "
                     "**{measure: v})\n"
                     "            for a, vals in (('arm', arm), ('dense', dense), ('scratch', "
                     "scratch)) for s, v in vals.items()]\n"
                     "    return study_L(rows, measure, 'arm', dict(task='t', "
                     "size='s', set='f'))\n",
                     "study_L (from minispdf.study.claims)"),
    "equal_flop_steps": ("m = __import__('minispdf.study.plan')\n"
                         "def equal_flop_steps(steps, sparse, dense):\n"
                         "    return max(1, round(steps * sparse / dense)) if m else 0\n",
                         "m (from minispdf)"),
    "two_four_mask": ("from minispdf.schedules import nm_mask\n"
                      "def two_four_mask(weight):\n"
                      "    return nm_mask(weight, 2, 4)\n",
                      "nm_mask (from minispdf.moves)"),
}


@pytest.mark.parametrize("name", sorted(WRONG))
def test_wrong_solutions_fail(tmp_path, name):
    source, hint = WRONG[name]
    result = A.grade(_notebook_with(tmp_path, name, source))
    ex = result["exercises"][name]
    assert not ex["passed"] and not result["all_passed"]
    assert any(hint in c["message"] for c in ex["checks"] if not c["passed"]), ex


def test_every_exercise_has_a_wrong_and_a_borrowed_answer():
    assert set(WRONG) == set(BORROWED) == set(A.EXERCISES)


def _namespace(source):
    ns = {"torch": torch, "math": __import__("math")}
    exec(source, ns)
    return ns


def test_borrowed_answers_are_right_and_refused_by_the_notebook_check(monkeypatch):
    from minispdf.assignments import borrowing

    for name, (source, what) in BORROWED.items():
        fn = _namespace(source)[A.EXERCISES[name].function]
        r = A.check_exercise(name, fn)
        assert not r["passed"] and r["points"] == 0 and len(r["checks"]) == 1, r
        message = r["checks"][0]["message"]
        assert what in message and "answer key" in message and "torch" in message, (name, message)
    # the refusal is all that fails them:
    monkeypatch.setattr(borrowing, "function_uses", lambda fn: [])
    for name in ("random_mask", "magnitude_mask", "block_flops", "loss_mask", "masked_step",
                 "model_sparsity",
                 "benefit_lost", "two_four_mask"):
        fn = _namespace(BORROWED[name][0])[A.EXERCISES[name].function]
        # sparsify's seed is not the generator's stream: only the count holds
        if name == "random_mask":
            assert A.check_exercise(name, fn)["checks"][0]["passed"]
        else:
            assert A.check_exercise(name, fn)["passed"], name


def test_the_grader_refuses_borrowed_answers_from_their_source(tmp_path):
    path = _notebook(tmp_path / "borrower.ipynb", *BORROWED_CELLS)
    result = A.grade(path)
    assert result["points"] == 0 and result["total"] == len(A.EXERCISES)
    for name, ex in result["exercises"].items():
        message = ex["checks"][0]["message"]
        assert "uses the library it is checked against" in message and "line " in message, (name,
                                                                                            message)
    # and a run-time import, which the source does not spell out, fails in the worker
    spelt = ("def loss_mask(prompt_len, n_tokens):\n"
             "    f = getattr(__builtins__, '__imp' + 'ort__', None) or __builtins__['__imp' "
             "+ 'ort__']\n"
             "    f('mini' + 'spdf')\n    return [0] * (prompt_len - 1) + [1] * (n_tokens - "
             "prompt_len)\n")
    r = A.grade(_notebook(tmp_path / "spelt.ipynb", ("loss_mask", spelt)))["exercises"]["loss_mask"]
    assert r["points"] == 0 and "exercises may not import minispdf" in r["checks"][0]["message"], r


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


def test_the_notebook_check_hands_on_the_kits_answer_until_an_exercise_passes(capsys):
    """The cell under an exercise never raises (Run All goes on): it says "not solved yet" and
    returns the kit's answer for the cells below; a passing function is returned as it is."""
    from minispdf.assignments.answers import loss_mask as kit

    wrong = lambda p, n: [1] * (n - 1)  # noqa: E731
    assert A.check("loss_mask", wrong) is kit
    out = capsys.readouterr().out
    assert "exercise loss_mask: FAIL (0/2 points)" in out
    assert ("exercise loss_mask: not solved yet. The cells below use the kit's own loss_mask "
            "(minispdf.assignments.answers.loss_mask) until yours passes; stuck? hint('loss_mask') "
            "prints a hint.") in out

    def stub(prompt_len, n_tokens):
        raise NotImplementedError("exercise: write it")

    assert (A.check("loss_mask", stub) is kit
            and "not written yet (exercise: write it)" in capsys.readouterr().out)
    right = lambda p, n: [0] * (p - 1) + [1] * (n - p)  # noqa: E731
    assert A.check("loss_mask", right) is right
    out = capsys.readouterr().out
    assert "PASS (2/2 points)" in out and "not solved" not in out


SLOW_CHECKS = {"masked_step", "benefit_lost", "equal_flop_steps"}  # 1.5-2.5 s of CPU each


@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.slow) if n in SLOW_CHECKS else n
                                  for n in A.EXERCISES])
def test_the_kits_answers_pass_their_own_checks(name):
    """The function a lesson falls back on is right: each kit answer passes every check of its
    exercise (called directly: as library code, the borrowing rule would refuse it)."""
    from minispdf.assignments.answers import ANSWERS
    from minispdf.assignments.exercises import _run_check, all_checks

    assert set(ANSWERS) == set(A.EXERCISES)
    fn = ANSWERS[name]
    assert fn.__name__ == A.EXERCISES[name].function
    failed = [c for c in (_run_check(d, run) for d, run in all_checks(name, fn)) if not c["passed"]]
    assert not failed, failed


def test_crashing_or_broken_cells_fail_with_a_message(tmp_path):
    r = A.grade(_notebook_with(tmp_path, "loss_mask", "def loss_mask(p, n):\n    return 1 / 0\n"))
    assert "ZeroDivisionError" in r["exercises"]["loss_mask"]["checks"][0]["message"]
    r = A.grade(_notebook_with(tmp_path, "loss_mask", "def loss_mask(p, n)\n    return []\n"))
    assert "does not run" in r["exercises"]["loss_mask"]["checks"][0]["message"]


def test_stub_source_keeps_indentation_and_rejects_unbalanced_markers():
    src = "def f(x):\n    ### BEGIN SOLUTION\n    return x\n    ### END SOLUTION\n"
    assert A.stub_source(src, "loss_mask") == (
        'def f(x):\n    raise NotImplementedError("exercise: ' + A.EXERCISES["loss_mask"].summary
        + '")\n')
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
    assert (any("out of date" in x for x in problems)
            and any("no source notebook" in x for x in problems))
    A.make_student_copies(str(src), str(dst))
    assert A.check_student_copies(str(src), str(dst)) == [] and not (dst / "stale.ipynb").exists()
    # the student copy is identical to its source outside the exercise cells (plus one note), but
    # for the links to the executed references, which show the solutions: named, not linked
    s = nbformat.read(str(dst / "01_gpt_and_masks.ipynb"), as_version=4)
    o = nbformat.read(str(src / "01_gpt_and_masks.ipynb"), as_version=4)
    # instructor's copy only
    answers = [c for c in o.cells if A.ANSWER_TAG in c.metadata.get("tags", [])]
    assert answers and len(s.cells) == len(o.cells) + 1 - len(answers)
    unlinked = lambda text: re.sub(r"\[([^\]]+)\]\(reference/[^)]+\)",  # noqa: E731
                                   r"\1 (in your instructor's copy)", text)
    assert [c.source for c in s.cells if c.id != A.STUDENT_NOTE_ID and not A.exercise_name(c)] == \
           [unlinked(c.source) for c in o.cells
            if not A.exercise_name(c) and A.ANSWER_TAG not in c.metadata.get("tags", [])]
    assert ("](reference/" not in "".join(c.source for c in s.cells)
            and "](reference/" in "".join(c.source for c in o.cells))


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


# ---- the two new exercises: right answers pass, typical wrong ones fail with useful feedback


def masked_adamw_step(params, masks, optimizer):  # the reference solution
    with torch.no_grad():
        for p, m in zip(params, masks):
            p.grad.mul_(m)
        optimizer.step()
        for p, m in zip(params, masks):
            for t in (p, optimizer.state[p]["exp_avg"], optimizer.state[p]["exp_avg_sq"]):
                t.mul_(m)


def forgot_the_moments(params, masks, optimizer):
    with torch.no_grad():
        for p, m in zip(params, masks):
            p.grad.mul_(m)
        optimizer.step()
        for p, m in zip(params, masks):
            p.mul_(m)


def masks_weights_only(params, masks, optimizer):
    optimizer.step()
    with torch.no_grad():
        for p, m in zip(params, masks):
            p.mul_(m)


def masks_after_the_step_then_zero_grad(params, masks, optimizer):
    optimizer.step()
    with torch.no_grad():
        for p, m in zip(params, masks):
            for t in (p, optimizer.state[p]["exp_avg"], optimizer.state[p]["exp_avg_sq"]):
                t.mul_(m)
    optimizer.zero_grad()  # grads gone: nothing left after the call shows they were never masked


def steps_twice(params, masks, optimizer):
    masked_adamw_step(params, masks, optimizer)
    masked_adamw_step(params, masks, optimizer)


def _failures(name, fn):
    result = A.check_exercise(name, fn)
    assert (not result["passed"] and result["points"] == 0
            and result["max_points"] == A.EXERCISES[name].points)
    return " ".join(c["message"] for c in result["checks"] if not c["passed"])


def test_masked_step_grader():
    ok = A.check_exercise("masked_step", masked_adamw_step)
    assert ok["passed"] and ok["points"] == A.EXERCISES["masked_step"].points, A.format_result(ok)
    msg = _failures("masked_step", forgot_the_moments)
    assert ("step 1: the exp_avg of parameter 0" in msg and "exp_avg_sq" in msg
            and "pruned slots" in msg), msg
    msg = _failures("masked_step", masks_weights_only)
    assert "step 1: the gradient (as optimizer.step() read it) of parameter 0" in msg, msg
    assert "before optimizer.step(), not after" in msg, msg
    # the step saw the pruned gradients
    msg = _failures("masked_step", masks_after_the_step_then_zero_grad)
    assert "step 1: the gradient (as optimizer.step() read it) of parameter 0" in msg, msg
    assert "optimizer.step() was not called" in _failures("masked_step",
                                                          lambda params, masks, optimizer: None)
    msg = _failures("masked_step", steps_twice)
    assert "kept weights of parameter 0" in msg and "exactly once" in msg, msg


def test_equal_flop_steps_grader():
    ok = A.check_exercise("equal_flop_steps",
                          lambda steps, sparse, dense: round(steps * sparse / dense))
    assert ok["passed"], A.format_result(ok)
    msg = _failures("equal_flop_steps", lambda steps, sparse, dense: int(steps * sparse / dense))
    assert ("expected 2 steps, got 1" in msg
            and "grid default, size small, sparsity 0.75" in msg), msg
    msg = _failures("equal_flop_steps", lambda steps, sparse, dense: steps * sparse / dense)
    assert "(an int), got 750.0 (float)" in msg, msg
    # inverted
    msg = _failures("equal_flop_steps", lambda steps, sparse, dense: round(steps * dense / sparse))
    assert "equal_flop_steps(1000, 3.0, 4.0): expected 750 steps, got 1333" in msg, msg


def test_two_four_mask_grader():
    def right(w):
        top = w.abs().reshape(w.shape[0], -1, 4).topk(2, dim=-1).indices
        return torch.zeros(w.shape[0], w.shape[1] // 4, 4, dtype=torch.bool).scatter_(-1, top,
            True).reshape(w.shape)

    def half_of_each_row(w):  # 50% per row, not 2 of every 4
        keep = torch.zeros_like(w, dtype=torch.bool)
        return keep.scatter_(1, w.abs().topk(w.shape[1] // 2, dim=1).indices, True)

    def groups_down_the_columns(w):  # groups of 4 outputs instead of 4 inputs
        return right(w.t().contiguous()).t() if w.shape[0] % 4 == 0 else right(w)

    def signed(w):  # the largest values, not magnitudes
        top = w.reshape(w.shape[0], -1, 4).topk(2, dim=-1).indices
        return torch.zeros(w.shape[0], w.shape[1] // 4, 4, dtype=torch.bool).scatter_(-1, top,
            True).reshape(w.shape)

    def prunes_in_place(w):
        mask = right(w)
        w.mul_(mask)
        return mask

    ok = A.check_exercise("two_four_mask", right)
    assert ok["passed"] and ok["points"] == 2, A.format_result(ok)
    assert "do not keep exactly 2" in _failures("two_four_mask", half_of_each_row)
    assert "do not keep exactly 2" in _failures("two_four_mask", groups_down_the_columns)
    msg = _failures("two_four_mask", signed)
    assert "expected [0, 1, 1, 0, 1, 0, 1, 0]" in msg and "not the 2 largest |w|" in msg, msg
    assert "changed `weight`" in _failures("two_four_mask", prunes_in_place)
    assert "must return a bool tensor" in _failures("two_four_mask", lambda w: right(w).float())


def test_the_study_cases_cover_sparsity_zero_and_gpt2_sizes():
    from minispdf.assignments.accounting_checks import equal_flop_cases

    cases = list(equal_flop_cases())
    assert {c[1] for c in cases} == {"small", "nano", "large", "10M", "40M", "124M"}
    for grid, size, s, steps, sparse, dense, want in cases:
        # sparsity 0: the same steps, else fewer
        assert (want == steps) == (s == 0.0), (grid, size, s)
        assert 0 < want <= steps


def test_hints(capsys):
    assert set(A.EXERCISES) == {"random_mask", "magnitude_mask", "block_flops", "loss_mask",
                                "masked_step",
                                "equal_flop_steps", "model_sparsity", "benefit_lost",
                                "two_four_mask"}
    for name, ex in A.EXERCISES.items():
        A.hint(name)
        out = capsys.readouterr().out
        assert out.startswith(f"hint for {name} ({ex.function}") and len(ex.hint) > 80
    # hints guide, they do not give the answer
    assert "round(" not in A.EXERCISES["equal_flop_steps"].hint
    assert ("mul_" not in A.EXERCISES["masked_step"].hint
            and "topk(" not in A.EXERCISES["magnitude_mask"].hint)
    with pytest.raises(A.MiniSPDFError, match="unknown exercise 'nope'"):
        A.hint("nope")
    assert A.main(["hint", "masked_step"]) == 0 and "exp_avg" in capsys.readouterr().out


# ---- release: the student bundle


def _with_answers(tmp_path):
    """A copy of two lessons with instructor answers (tagged "answer") and a study result."""
    src = tmp_path / "course" / "notebooks"
    src.mkdir(parents=True)
    for stem in ("00_quickstart", "01_gpt_and_masks"):
        nb = A.read_notebook(NB / f"{stem}.ipynb")
        for cell in (nbformat.v4.new_markdown_cell("**Answer.** SECRET-ANSWER"),
                     nbformat.v4.new_code_cell("print('SECRET-ANSWER')")):
            cell.metadata["tags"] = ["answer"]
            nb.cells.append(cell)
        nbformat.write(nb, str(src / f"{stem}.ipynb"))
    (tmp_path / "course" / "results" / "default").mkdir(parents=True)
    (tmp_path / "course" / "results" / "default" / "results.json").write_text("{}")
    return src


def test_release_writes_a_bundle_without_solutions_or_answers(tmp_path, capsys):
    src, out = _with_answers(tmp_path), tmp_path / "bundle"
    assert A.main(["release", str(out), "--src", str(src)]) == 0
    files = sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file())
    assert files == ["README.txt", "manifest.json", "notebooks/00_quickstart.ipynb",
                     "notebooks/01_gpt_and_masks.ipynb",
                     "results/default/results.json"]
    readme = (out / "README.txt").read_text()
    assert "minispdf assign grade" in readme and "hint(" in readme and "2303.10464" in readme
    for path in out.rglob("*"):
        text = path.read_text() if path.is_file() else ""
        assert A.BEGIN not in text and A.END not in text and "SECRET-ANSWER" not in text, path
    nb = A.read_notebook(out / "notebooks" / "01_gpt_and_masks.ipynb")
    assert not any("answer" in c.metadata.get("tags", []) for c in nb.cells)
    calls = {"random_mask": ((4, 4), 0.5), "magnitude_mask": (torch.ones(4, 4), 0.5)}
    exercise_cells = [c for c in nb.cells if A.exercise_name(c)]
    assert len(exercise_cells) == 2
    for cell in exercise_cells:  # every stub raises NotImplementedError
        namespace = {"torch": torch}
        exec(cell.source, namespace)
        name = A.exercise_name(cell)
        with pytest.raises(NotImplementedError, match="exercise:"):
            namespace[A.EXERCISES[name].function](*calls[name])


def test_release_refuses_a_non_empty_folder_and_is_atomic(tmp_path, capsys, monkeypatch):
    src, out = _with_answers(tmp_path), tmp_path / "bundle"
    out.mkdir()
    (out / "old.txt").write_text("the previous bundle")
    assert A.main(["release", str(out), "--src", str(src)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "is not empty" in err and "--overwrite" in err, err
    assert A.main(["release", str(tmp_path / "new"), "--src", str(src),
                   "--results", str(tmp_path / "nope")]) == 2
    assert "is not a folder" in capsys.readouterr().err and not (tmp_path / "new").exists()
    from minispdf.assignments import bundle

    def broken(nb, rel):  # fails on the second notebook: the bundle must not be half-written
        if "01_" in rel:
            raise A.MiniSPDFError("disk trouble")
        return A.student_notebook(nb, rel)

    monkeypatch.setattr(bundle, "student_notebook", broken)
    assert A.main(["release", str(out), "--src", str(src), "--overwrite"]) == 2
    # no temporary folder left
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []
    assert sorted(p.name for p in out.iterdir()) == ["old.txt"]
    monkeypatch.undo()
    assert A.main(["release", str(out), "--src", str(src), "--overwrite"]) == 0
    assert (not (out / "old.txt").exists()
            and (out / "notebooks" / "01_gpt_and_masks.ipynb").exists())


# ---- grading: folders, points, time limits, warnings, the CSV


LOSS_MASK_OK = ("def loss_mask(prompt_len, n_tokens):\n    return [0] * (prompt_len - 1) + [1] * "
                "(n_tokens - prompt_len)\n")


BORROWED_CELLS = [(name, source) for name, (source, _) in BORROWED.items()]


def _notebook(path, *cells):
    """A notebook of ``(exercise name or None, source)`` cells."""
    nb = nbformat.v4.new_notebook()
    for name, source in cells:
        cell = nbformat.v4.new_code_cell(source)
        if name:
            cell.metadata["minispdf"] = {"exercise": name}
        nb.cells.append(cell)
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, str(path))
    return path


def test_grade_a_folder_of_submissions_writes_the_csv(tmp_path, capsys):
    subs = tmp_path / "subs"
    _notebook(subs / "alice.ipynb", ("loss_mask", LOSS_MASK_OK))
    shutil.copy(NB / "student" / "04_dense_finetuning.ipynb", subs / "bob.ipynb")  # not written yet
    _notebook(subs / "carol" / "04_dense_finetuning.ipynb", ("loss_mask", LOSS_MASK_OK))
    _notebook(subs / "carol" / "00_notes.ipynb", (None, "x = 1"))  # no exercises
    (subs / "dave.ipynb").write_text("not a notebook")
    (subs / "carol" / ".ipynb_checkpoints").mkdir()
    shutil.copy(subs / "bob.ipynb", subs / "carol" / ".ipynb_checkpoints" / "x.ipynb")  # ignored
    grades = tmp_path / "grades.csv"
    assert A.main(["grade", str(subs), "--csv", str(grades)]) == 1  # some fail
    out = capsys.readouterr().out
    assert "note: no exercises in 00_notes.ipynb" in out and "manifest: none" in out
    assert "wrote " + str(grades) + " (4 rows)" in out
    assert out.splitlines()[-6:-1] == ["student  points", "alice    2/2", "bob      0/2",
                                       "dave     0/2",
                                       # the maximum is the release's: lesson 04's loss_mask
                                       "carol    2/2"]
    import csv

    rows = list(csv.DictReader(grades.open()))
    assert list(rows[0]) == ["student", "exercise", "points", "max_points", "feedback", "notebook",
                             "notes"]
    assert rows[0]["notes"].startswith("confinement root: uid drop + chroot")
    got = [(r["student"], r["exercise"], r["points"], r["max_points"]) for r in rows]
    assert got == [("alice", "loss_mask", "2", "2"), ("bob", "loss_mask", "0", "2"),
                   ("dave", "loss_mask", "0", "2"),
                   ("carol", "loss_mask", "2", "2")]
    assert rows[0]["feedback"] == "pass"
    assert "not written yet" in rows[1]["feedback"] and "\n" not in rows[1]["feedback"]
    assert rows[2]["feedback"].startswith("submitted: missing") and rows[2]["notebook"] == ""
    # dave: not run
    assert (rows[2]["notes"].startswith("not graded: ")
            and "not a readable notebook" in rows[2]["notes"])
    assert (rows[3]["notes"].endswith("no exercises in 00_notes.ipynb")
            and rows[3]["notebook"].endswith("04_dense_finetuning.ipynb"))


def test_an_endless_exercise_times_out_and_grading_goes_on(tmp_path):
    path = _notebook(tmp_path / "eve.ipynb",
                     ("block_flops",
                      "def block_forward_flops(d_model, seq_len, n_head, sparsity):\n"
                                     "    while True:\n        pass\n"),
                     ("loss_mask", LOSS_MASK_OK))
    r = A.grade(path, timeout=3)
    bf, lm = r["exercises"]["block_flops"], r["exercises"]["loss_mask"]
    assert bf["points"] == 0 and bf["checks"][0]["message"].startswith("timed out after 3 s")
    assert lm["passed"] and lm["points"] == 2 and r["points"] == 2 and r["max_points"] == 5
    path = _notebook(tmp_path / "exits.ipynb", ("block_flops", "import os\nos._exit(3)\n"),
                     ("loss_mask", LOSS_MASK_OK))
    r = A.grade(path)  # an exercise that kills its worker fails alone, too
    assert "ended the grader's process (exit code 3)" in (
        r["exercises"]["block_flops"]["checks"][0]["message"])
    assert r["exercises"]["loss_mask"]["passed"]


def test_a_helper_from_another_cell_is_warned_about(tmp_path):
    assert A.outside_names("import torch\nK = 2\ndef f(x, y=K):\n    global G\n    G = 1\n"
                           "    z = [helper(q) + G + np.pi for q in range(x)]\n    return "
                           "torch.tensor(z) + W\n") \
        == ["W", "helper"]
    # a syntax error is the worker's to report
    assert A.outside_names("def f(x):\n    return x +\n") == []
    path = _notebook(tmp_path / "frank.ipynb",
                     (None, "def first(n):\n    return [0] * n\n"),
                     ("loss_mask", "def loss_mask(prompt_len, n_tokens):\n"
                                   "    return first(prompt_len - 1) + [1] * (n_tokens - "
                                   "prompt_len)\n"))
    ex = A.grade(path)["exercises"]["loss_mask"]
    assert not ex["passed"] and "NameError" in ex["checks"][0]["message"]
    assert ex["warnings"] == ["loss_mask uses first, defined outside its cell: the grader runs "
                              "only the exercise "
                              "cells (after `import math, torch, numpy as np`), so define or "
                              "import them in this cell"]
    assert A.grade(_notebook(tmp_path / "ok.ipynb", ("loss_mask", LOSS_MASK_OK)))["exercises"][
        "loss_mask"][
        "warnings"] == []


def test_a_notebook_without_exercises_says_so(tmp_path, capsys):
    path = _notebook(tmp_path / "notes.ipynb", (None, "x = 1"))  # every lesson has an exercise now
    r = A.grade(path)
    assert r["note"] == "no exercises in notes.ipynb" and r["total"] == 0
    assert A.main(["grade", str(path)]) == 1  # a clear row, not a silent success
    out = capsys.readouterr().out
    assert "note: no exercises in notes.ipynb" in out


def test_help_names_the_command_as_typed(capsys):
    assert A.main(["--help"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: minispdf assign ") and "python -m" not in out
    for command in ("release", "grade"):
        assert A.main([command, "--help"]) == 0
        assert capsys.readouterr().out.startswith(f"usage: minispdf assign {command} ")
    from minispdf.cli import main as cli_main

    assert cli_main(["assign", "grade", "--help"]) == 0
    assert "usage: minispdf assign grade" in capsys.readouterr().out
    assert A.main(["grade", "--timeout", "0", str(NB / "02_flop_accounting.ipynb")]) == 2
    assert A.main(["grade", "--nope"]) == 2
    assert "see `minispdf assign --help`" in capsys.readouterr().err


# ---- the grader is a boundary: student code cannot change its points, its files or its process


def _attacks(subs, outside):
    """Submissions that attack the grader, named so that they are graded before bob (a
    classmate)."""
    bob = subs / "bob.ipynb"
    wrong = "def loss_mask(prompt_len, n_tokens):\n    return [1] * (n_tokens - 1)\n"
    return {
        # spelt so that the source check misses it
        "a1_patches_checker": "import dataclasses, sys\n"
                              "M, lib = getattr(sys, 'mod' + 'ules'), 'mini' + 'spdf'\n"
                              "E = M[lib + '.assignments.exercises']\n"
                              "W = M[lib + '.assignments.worker']\n"
                              "def passed(name, fn=None):\n"
                              "    return dict(name=name, passed=True, points=2, max_points=2, "
                              "checks=[])\n"
                              "E.check_exercise = W.check_exercise = passed\n"
                              "E.EXERCISES['loss_mask'] = "
                              "dataclasses.replace(E.EXERCISES['loss_mask'], "
                              "checks=lambda fn: [])\n" + wrong,
        "a2_forges_record": "import gc, json, os, sys\n"
                            "from multiprocessing.connection import Connection\n"
                            "f, rid = sys._getframe(), None\n"
                            "while f:\n"
                            "    rid = f.f_locals.get('rid', rid)\n"
                            "    f = f.f_back\n"
                            "forged = dict(id=rid, name='loss_mask', defined=True, checks=[], "
                            "passed=True, points=1000)\n"
                            "for fd in range(3, 64):\n"
                            "    try:\n        os.write(fd, (json.dumps(forged) + "
                            "'\\n').encode())\n"
                            "    except OSError:\n        pass\n"
                            "for c in [o for o in gc.get_objects() if isinstance(o, Connection)]:\n"
                            "    try:\n        c.send(('loss_mask', dict(name='loss_mask', "
                            "passed=True, points=1000)))\n"
                            "    except Exception:\n        pass\n"
                            "print('FORGED 1000/2'); os.write(1, b'FORGED 1000/2\\n')\n" + wrong,
        "a3_files": "reached = []\n"
                    f"for path in [{str(bob)!r}, {str(subs / 'new.ipynb')!r}, {str(outside)!r}, "
                    f"'/etc/hostname']:\n"
                    "    try:\n"
                    "        with open(path, 'w' if path.endswith('bob.ipynb') else 'a') as f:\n"
                    "            f.write('{}')\n"
                    "        reached.append(path)\n"
                    "    except OSError:\n        pass\n"
                    "try:\n    reached.append(open('/etc/hostname').read())\n"
                    "except OSError:\n    pass\n"
                    "if not reached:\n"
                    "    raise RuntimeError('nothing outside the private folder was reachable')\n"
                    + LOSS_MASK_OK,
        "a5_kills_grader": "import os, signal\n"
                           "for pid in [os.getppid(), 1, -1] + [p for p in range(2, 1 << 16) if p "
                           "!= os.getpid()]:\n"
                           "    try:\n        os.kill(pid, signal.SIGKILL)\n"
                           "    except OSError:\n        pass\n" + LOSS_MASK_OK,
        "a6_forks": "import os, time\n"
                    "pid = os.fork()  # refused: no new processes\n"
                    "if pid == 0:\n"
                    f"    os.setsid(); time.sleep(1); open({str(outside)!r}, 'w').write('alive')\n"
                    "while True:\n    pass\n" + wrong,
        "a7_memory": "big = bytearray(2 << 30)\n" + LOSS_MASK_OK,
    }


@pytest.mark.slow  # ~13 s on 2 loaded cores: a grader process and eleven workers
@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() != 0,
                    reason="the user switch and chroot need a grader running as root")
def test_attacks_on_the_grader_score_zero_and_classmates_keep_their_points(tmp_path):
    import csv
    import subprocess
    import sys
    import uuid

    subs, outside = tmp_path / "subs", Path("/tmp") / f"minispdf-test-outside-{uuid.uuid4().hex}"
    for name, source in _attacks(subs, outside).items():
        _notebook(subs / f"{name}.ipynb", ("loss_mask", source))
    # garbage on the channel; the next exercise is still graded
    _notebook(subs / "a4_garbage.ipynb",
              ("block_flops", "import os\nfor fd in range(3, 64):\n    try:\n        os.write(fd, "
                              "b'\\x00{not json')\n"
                              "    except OSError:\n        pass\n"
                              "def block_forward_flops(d_model, seq_len, n_head, "
                              "sparsity):\n    return 0\n"),
              ("loss_mask", LOSS_MASK_OK))
    for name in ("bob", "zoe"):
        _notebook(subs / f"{name}.ipynb", ("loss_mask", LOSS_MASK_OK))
    odd = json.loads((subs / "zoe.ipynb").read_text())
    odd["cells"][0]["metadata"]["minispdf"] = "x"  # odd metadata: not an exercise cell
    odd["cells"].append({**odd["cells"][0], "metadata": {"minispdf": {"exercise": ["loss_mask"]}}})
    (subs / "odd_meta.ipynb").write_text(json.dumps(odd))
    (subs / "odd_json.ipynb").write_text("[1, 2]")
    bob_before = (subs / "bob.ipynb").read_bytes()
    files_before = sorted(p.name for p in tmp_path.rglob("*"))
    grades = tmp_path / "grades.csv"
    done = subprocess.run([sys.executable, "-m", "minispdf.assignments", "grade", str(subs),
                           "--csv", str(grades),
                           "--timeout", "30"], capture_output=True, text=True, timeout=600,
                          cwd=tmp_path,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert done.returncode == 1, done.stderr  # some fail; the grader itself was not killed
    assert "FORGED" not in done.stdout + done.stderr and "1000" not in done.stdout
    rows = list(csv.DictReader(grades.open()))
    got = {(r["student"], r["exercise"]): (int(r["points"]), int(r["max_points"])) for r in rows}
    loss_mask = {"a1_patches_checker": 0, "a2_forges_record": 0, "a3_files": 0, "a4_garbage": 2,
                 "a5_kills_grader": 2,
                 "a6_forks": 0, "a7_memory": 0, "bob": 2, "zoe": 2, "odd_json": 0, "odd_meta": 0}
    # the release (none given: lessons 02 and 04, which the class holds exercises of) decides the
    # rows
    assert got == {**{(s, "loss_mask"): (p, 2) for s, p in loss_mask.items()},
                   **{(s, "block_flops"): (0, 3) for s in loss_mask}}, rows
    feedback = {(r["student"], r["exercise"]): r["feedback"] for r in rows}
    notes = {r["student"]: r["notes"] for r in rows}
    assert "did the exercise cell change the grader's checks?" in feedback["a1_patches_checker",
                                                                           "loss_mask"]
    assert "did the exercise cell change the grader's checks?" in feedback["a2_forges_record",
                                                                           "loss_mask"]
    assert "nothing outside the private folder was reachable" in feedback["a3_files", "loss_mask"]
    assert "malformed record" in feedback["a4_garbage", "block_flops"]
    assert "BlockingIOError" in feedback["a6_forks", "loss_mask"]
    assert "MemoryError" in feedback["a7_memory", "loss_mask"]
    assert ("not a readable notebook" in notes["odd_json"]
            and feedback["bob", "block_flops"].startswith("submitted: missing"))
    assert notes["odd_meta"] == "no exercises in odd_meta.ipynb"
    assert all(r["notes"].startswith("confinement root: uid drop + chroot + Landlock ABI")
               for r in rows if r["notebook"])
    assert (subs / "bob.ipynb").read_bytes() == bob_before  # the classmate's file is untouched
    assert sorted(p.name for p in tmp_path.rglob("*")) == sorted(files_before + ["grades.csv"])
    time.sleep(1.5)  # the forked child, had there been one, would have written this by now
    assert not outside.exists()


def _record(name, fn):
    """The JSON record a worker makes of ``fn`` under exercise ``name``'s checks."""
    from minispdf.assignments.replay import Recorder

    rec = Recorder(fn)
    for i, (_, run) in enumerate(A.EXERCISES[name].checks(rec)):
        rec.start(i)
        try:
            run()
        except Exception:
            pass
    return json.loads(json.dumps({"defined": True, "checks": rec.records}))


def test_the_grader_decides_from_the_record_and_rejects_what_its_encoding_cannot_make():
    import copy

    from minispdf.assignments.grading import judge
    from minispdf.assignments.replay import Malformed, decode, encode

    record = _record("loss_mask", lambda p, n: [0] * (p - 1) + [1] * (n - p))
    # only the calls count
    assert judge("loss_mask", {**record, "points": 1000, "passed": False})["points"] == 2
    tampered = copy.deepcopy(record)
    tampered["checks"][0][0]["out"] = encode([1, 1, 1, 1, 1])
    r = judge("loss_mask", tampered)
    assert (r["points"] == 0
            and "got [1, 1, 1, 1, 1], expected [0, 0, 1, 1, 1]" in r["checks"][0]["message"]), r
    for junk in ({"t": "tensor", "dtype": "bool", "shape": [4], "data": "AAA="},
                 {"t": "pickle", "v": "gASV"},
                 {"t": "int", "v": "1e9"}, {"t": "list", "v": [{"t": "list", "v": []}] * 2 + [7]},
                 [0, 1]):
        bad = copy.deepcopy(record)
        bad["checks"][1][0]["out"] = junk
        r = judge("loss_mask", bad)
        assert r["points"] == 0 and "malformed record" in r["checks"][1]["message"], (junk, r)
    for value in (None, True, 3, -2.5, float("inf"), "s", (1, [2.0]),
                  torch.arange(6).view(2, 3) > 2,
                  torch.randn(3, dtype=torch.bfloat16), torch.empty(0, 4)):
        back = decode(json.loads(json.dumps(encode(value))))
        assert type(back) is type(value) and (torch.equal(back, value)
                                              if isinstance(value, torch.Tensor)
                                               else back == value), value
    assert repr(decode(encode({1, 2}))) == "<set object>"  # messages still name what was returned
    assert decode(json.loads(json.dumps(encode({3: 0.25, "a": [1]})))) == {3: 0.25, "a": [1]}
    # keys other than ints and strings: opaque
    assert repr(decode(encode({(1, 2): 0}))) == "<dict object>"
    for junk in ({"t": "dict", "v": [[{"t": "float", "v": "0x1p+0"}, {"t": "none"}]]},
                 {"t": "dict", "v": [[1]]}):
        with pytest.raises(Malformed):
            decode(junk)
    r = judge("equal_flop_steps",
              _record("equal_flop_steps", lambda steps, sparse, dense: steps * sparse / dense))
    assert "(an int), got 750.0 (float)" in r["checks"][0]["message"]
    r = judge("masked_step", _record("masked_step", masked_adamw_step))
    assert r["passed"] and r["points"] == 3, r
    r = judge("masked_step", _record("masked_step", forgot_the_moments))
    assert "step 1: the exp_avg of parameter 0" in r["checks"][0]["message"] and r["points"] == 0
    r = judge("loss_mask", _record("loss_mask", lambda p, n: 1 / 0))
    assert r["checks"][0]["message"].startswith("ZeroDivisionError: division by zero (line ")


LINK = re.compile(r"\]\(([^)\s]+)\)|(?:href|src)=[\"']([^\"']+)[\"']")


def test_every_link_in_the_released_bundle_resolves_inside_it(tmp_path):
    """A class opens the bundle offline: every relative link of every notebook and of the README
    points at a file the bundle ships (the executed references, which show the solutions, are named
    without a link), and none leaves the bundle."""
    out = tmp_path / "handout"
    A.release(str(out), src=str(NB))
    checked = 0
    for page in [*out.rglob("*.ipynb"), out / "README.txt"]:
        text = "\n".join(c.source for c in A.read_notebook(page).cells
                         if c.cell_type == "markdown") \
            if page.suffix == ".ipynb" else page.read_text()
        for target in (a or b for a, b in LINK.findall(text)):
            if re.match(r"[a-z]+:", target) or target.startswith("#"):
                continue  # the web (arXiv, docs) and anchors in the page
            where = (page.parent / target.split("#")[0]).resolve()
            assert (where.is_file()
                    and where.is_relative_to(out.resolve())), f"{page.name} links {target}"
            checked += 1
    assert checked >= 7  # every lesson's header links the page of measured run times
    assert (out / "results" / "lesson_times.md").is_file()
    header = A.read_notebook(out / "notebooks" / "03_sparse_pretraining.ipynb").cells[0].source
    assert "](reference/" not in header and (
        "Reference run with outputs (in your instructor's copy)") in " ".join(
        header.split())


def test_the_student_bundle_ships_notebooks_not_their_py_twins(tmp_path):
    """The lessons' jupytext .py sources sit next to the notebooks in the repository; a student
    opening the bundle sees only the .ipynb (and the study results lesson 05 reads)."""
    assert list(NB.glob("[0-9][0-9]_*.py")), "the repository keeps the .py sources"
    files = A.release(str(tmp_path / "handout"), src=str(NB))
    assert not [f for f in files if f.endswith(".py")], files
    assert sorted(f for f in files if f.startswith("notebooks/")) == sorted(
        f"notebooks/{p.name}" for p in NB.glob("[0-9][0-9]_*.ipynb"))
