"""The nine exercises: where each lives, what it is worth, its hint, and how it is checked."""

from __future__ import annotations

import traceback
from dataclasses import dataclass
from typing import Callable

from ..errors import MiniSPDFError
from . import borrowing
from . import accounting_checks as A
from . import checks as C


@dataclass(frozen=True)
class Exercise:
    name: str
    function: str  # the function the student writes
    notebook: str  # where it lives
    summary: str  # one line, also the stub's message
    checks: Callable  # fn -> list of (description, callable)
    points: int = 1  # awarded when every check passes
    hint: str = ""  # guides without giving the answer away (see hint())


EXERCISES: dict[str, Exercise] = {e.name: e for e in [
    Exercise("model_sparsity", "model_sparsity", "00_quickstart",
             "return the fraction of all the model's parameters that the masks set to zero",
             C.model_sparsity_checks, points=1, hint=(
                 "Go through the parameters one by one. A masked matrix of n weights keeps exactly "
                 "round((1 - sparsity) * n) of them (the same count random_mask keeps in lesson "
                 "01), so how many "
                 "does it zero? A parameter that is not masked zeroes none, but its weights still "
                 "count in the "
                 "total. The answer is zeros / total, a fraction between 0 and 1: math.prod gives "
                 "a shape's size.")),
    Exercise("random_mask", "random_mask", "01_gpt_and_masks",
             "return a bool mask keeping exactly round((1 - sparsity) * numel) random weights",
             C.random_mask_checks, points=2, hint=(
                 "Decide first how many weights to keep: round((1 - sparsity) * numel), exactly, "
                 "every time. "
                 "A coin flip per weight (torch.rand(shape) > sparsity) is right only on average. "
                 "Then choose "
                 "that many distinct positions, every position equally likely, drawing all "
                 "randomness from "
                 "`generator`: which torch function shuffles the integers 0..n-1? Fill a flat "
                 "bool tensor, "
                 "then give it the shape back.")),
    Exercise("magnitude_mask", "magnitude_mask", "01_gpt_and_masks",
             "return a bool mask keeping the largest |w|, exact count", C.magnitude_mask_checks,
             points=2, hint=(
                 "Keep the same number of weights as random_mask, but choose the largest in size: "
                 "a weight of "
                 "-3 matters more than one of 0.2. torch.topk on a flat view returns the "
                 "indices of the k "
                 "largest values; what should it rank? Do not change `weight` itself.")),
    Exercise("block_flops", "block_forward_flops", "02_flop_accounting",
             "return the forward FLOPs of one sparse transformer block for one sequence",
             A.block_flops_checks, points=3, hint=(
                 "Multiplying a (T x k) matrix by a (k x n) matrix costs 2*T*k*n FLOPs. List the "
                 "matmuls of one "
                 "block for T tokens: the q/k/v projection, the attention scores (q times k), the "
                 "scores times v, "
                 "the output projection and the two MLP matrices (4x wider). Which of them "
                 "multiply a weight "
                 "matrix, and so shrink with the density (1 - sparsity)? Which multiply two "
                 "activations and "
                 "stay dense? The softmax counts 3 FLOPs per score per head.")),
    Exercise("loss_mask", "loss_mask", "04_dense_finetuning",
             "return the fine-tuning loss mask (1 where the next token is target or end-of-text)",
             C.loss_mask_checks, points=2, hint=(
                 "The model reads x = tokens[:-1] and predicts y = tokens[1:], so the mask has "
                 "n_tokens - 1 "
                 "entries. Position i predicts tokens[i + 1]: count it when that token is part "
                 "of the target "
                 "(which starts at index prompt_len) or the end-of-text. Write out a 6-token "
                 "example with a "
                 "3-token prompt on paper before coding.")),
    Exercise("masked_step", "masked_adamw_step", "03_sparse_pretraining",
             "zero the pruned gradients, take the AdamW step, then zero the pruned "
             "weights and moments",
             C.masked_step_checks, points=3, hint=(
                 "Think about three moments. Before optimizer.step(): what must the pruned "
                 "slots of p.grad "
                 "hold? During the step, weight decay and the running moments from earlier "
                 "steps still move "
                 "a pruned weight, even with a zero gradient. After it: the weight and AdamW's "
                 "state for it, "
                 "optimizer.state[p]['exp_avg'] and ['exp_avg_sq'], must be zero where the "
                 "mask is False. "
                 "Work in place under torch.no_grad(); a bool mask can select (torch.where) "
                 "or multiply.")),
    Exercise("benefit_lost", "benefit_lost", "05_paper_findings_small_scale",
             "return L per seed: the arm's gap to dense over scratch's gap to dense",
             A.benefit_lost_checks, points=2, hint=(
                 "Work seed by seed, and only on seeds that have all three runs. Write each "
                 "gap so that "
                 "positive means worse: on test loss a worse run has a higher value, on BLEU a "
                 "lower one, so flip "
                 "the sign for BLEU. The benefit of pre-training is scratch's gap to dense; "
                 "where it is not "
                 "positive, pre-training did not help that seed and L is undefined: leave "
                 "that seed out.")),
    Exercise("equal_flop_steps", "equal_flop_steps", "06_beyond_the_paper",
             "return the dense steps that cost the FLOPs of the sparse run, rounded to the "
             "nearest step",
             A.equal_flop_steps_checks, points=1, hint=(
                 "A run's training FLOPs are its steps times its FLOPs per step. Write down "
                 "that the dense "
                 "run's total equals the sparse run's, and solve for the one unknown. A step "
                 "count is a whole "
                 "number: int() cuts 1.9 down to 1; which Python built-in goes to the "
                 "nearest one?")),
    Exercise("two_four_mask", "two_four_mask", "06_beyond_the_paper",
             "return the 2:4 mask of a weight: the 2 largest |w| of every 4 consecutive "
             "inputs of each row",
             C.two_four_mask_checks, points=2, hint=(
                 "A Linear weight is (out, in): the groups of 4 run along each row. Give the "
                 "magnitudes the "
                 "shape (out, in // 4, 4) with reshape, so that the last dimension is one "
                 "group; torch.topk "
                 "with dim=-1 finds the positions of the 2 largest in each group, and "
                 "scatter_ (or a "
                 "comparison with the group's second largest) turns positions into True. "
                 "Reshape back.")),
]}


# Hidden checks (as nbgrader's hidden tests): the instructor's, run at grading only, never in the
# student copies; a hard-coded answer to the public checks then fails them. See use_hidden().
_HIDDEN: dict[str, list[Callable]] = {}


def use_hidden(path=None) -> list[str]:
    """Grade with the hidden checks in the Python file ``path`` (None: none); returns the exercises
    that have some. The file defines ``HIDDEN_CHECKS = {exercise: checks}``, each ``checks`` like
    :attr:`Exercise.checks`: the student's function -> a list of ``(description, callable)``."""
    import runpy

    _HIDDEN.clear()
    if path is None:
        return []
    try:
        found = runpy.run_path(str(path)).get("HIDDEN_CHECKS")
    except Exception as e:
        raise MiniSPDFError(
            f"cannot load the hidden checks {path} ({type(e).__name__}: {e})") from None
    if (not isinstance(found, dict)
        or not all(n in EXERCISES and callable(c) for n, c in found.items())):
        raise MiniSPDFError(f"{path} must define HIDDEN_CHECKS = {{exercise: checks}}, a dict from "
                            f"exercise names "
                            f"({', '.join(EXERCISES)}) to functions fn -> "
                            f"[(description, callable)]")
    for name, checks in found.items():
        _HIDDEN[name] = [checks]
    return sorted(_HIDDEN)


def all_checks(name: str, fn) -> list:
    """The public checks of exercise ``name`` on ``fn``, then its hidden ones (described as
    such)."""
    hidden = [(f"hidden: {desc}", run) for checks in _HIDDEN.get(name, [])
              for desc, run in checks(fn)]
    return list(EXERCISES[name].checks(fn)) + hidden


def _unknown(name) -> MiniSPDFError:
    return MiniSPDFError(f"unknown exercise {name!r}: choose one of {', '.join(EXERCISES)}")


def hint(name: str) -> None:
    """Print the hint of exercise ``name`` (call it in the notebook: ``hint("random_mask")``)."""
    if name not in EXERCISES:
        raise _unknown(name)
    ex = EXERCISES[name]
    print(f"hint for {name} ({ex.function}, {ex.points} points): {ex.hint}")


def _run_check(desc: str, run) -> dict:
    try:
        run()
        return dict(check=desc, passed=True, message="")
    except NotImplementedError as e:
        return dict(check=desc, passed=False, message=f"not written yet ({e})")
    # the same two messages, for a call replayed from the grader's worker
    except C.StudentRaised as e:
        if e.kind == "NotImplementedError":
            return dict(check=desc, passed=False, message=f"not written yet ({e.message})")
        return dict(check=desc, passed=False, message=f"{e.kind}: {e.message} ({e.where})")
    except C.CheckFailed as e:
        return dict(check=desc, passed=False, message=str(e))
    except Exception as e:  # the student's code crashed
        where = traceback.extract_tb(e.__traceback__)[-1]
        return dict(check=desc, passed=False,
                    message=f"{type(e).__name__}: {e} (line {where.lineno} of {where.filename})")


BORROW_CHECK = "written without minispdf (the library is the answer key)"


def run_checks(name: str, fn, before=None) -> list[dict]:
    """Each check of exercise ``name`` on ``fn``; ``before(i)`` is called before the i-th (the
    grader's replay of a worker's record uses it to follow the checks). A function that reads
    ``minispdf`` fails at once (:mod:`.borrowing`)."""
    ex = EXERCISES[name]
    if not callable(fn):
        return [dict(check=f"{ex.function} is a function", passed=False,
                     message=f"{ex.function} is not defined as a function")]
    if uses := borrowing.function_uses(fn):
        return [dict(check=BORROW_CHECK, passed=False,
                     message=borrowing.refusal(ex.function, uses))]
    results = []
    for i, (desc, run) in enumerate(all_checks(name, fn)):
        if before is not None:
            before(i)
        results.append(_run_check(desc, run))
    return results


def result(name: str, checks: list[dict]) -> dict:
    """``{"name", "passed", "points", "max_points", "checks"}``: the points are the exercise's when
    every check passed, else 0."""
    points = EXERCISES[name].points
    passed = all(c["passed"] for c in checks)
    return dict(name=name, passed=passed, points=points if passed else 0, max_points=points,
                checks=checks)


def check_exercise(name: str, fn) -> dict:
    """Run the checks of exercise ``name`` on ``fn``: ``{"name", "passed", "points", "max_points",
    "checks"}``."""
    if name not in EXERCISES:
        raise _unknown(name)
    return result(name, run_checks(name, fn))


def format_result(result: dict) -> str:
    score = f" ({result['points']}/{result['max_points']} points)" if "max_points" in result else ""
    lines = [f"exercise {result['name']}: {'PASS' if result['passed'] else 'FAIL'}{score}"]
    for c in result["checks"]:
        lines.append(f"  [{'ok' if c['passed'] else 'FAIL'}] {c['check']}"
                     + (f"\n         {c['message']}" if c["message"] else ""))
    lines += [f"  warning: {w}" for w in result.get("warnings", [])]
    return "\n".join(lines)


def check(name: str, fn):
    """The visible test under an exercise cell: prints the checks and returns the function the
    lesson's next cells should use: ``fn`` once it passes, else the kit's own answer (said so), so
    that Run All on a student copy still reaches the last cell. It never raises on a failed check:
    ``random_mask = check("random_mask", random_mask)``."""
    from .answers import ANSWERS

    result = check_exercise(name, fn)
    print(format_result(result))
    if result["passed"]:
        return fn
    kit = ANSWERS[name]
    print(f"exercise {name}: not solved yet. The cells below use the kit's own "
          f"{EXERCISES[name].function} "
          f"({kit.__module__}.{kit.__name__}) until yours passes; stuck? hint({name!r}) "
          f"prints a hint.")
    return kit
