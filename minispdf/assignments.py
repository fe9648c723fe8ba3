"""Assignment mode: student copies of the notebooks and a grader for their exercises.

Some code cells of the notebooks are exercises: a function that is a real part of the method
(a random mask with an exact count, a magnitude mask, the sparse FLOPs of one block, the loss
mask of fine-tuning). Such a cell carries ``{"minispdf": {"exercise": NAME}}`` in its metadata
and nbgrader-style markers around the reference solution::

    def random_mask(shape, sparsity, generator=None):
        ### BEGIN SOLUTION
        ...
        ### END SOLUTION

* :func:`make_student_copies` writes copies of every notebook in which each marked block is
  replaced by ``raise NotImplementedError("exercise: ...")`` (same indentation).
* :func:`grade` runs only the exercise cells of a notebook in a fresh namespace (no training,
  seconds) and checks each exercise's function against the library's own implementation:
  ``sparsify`` for the masks, ``flop_report`` for the FLOPs, ``tasks.encode_example`` for the
  loss mask. The same checks run inside the notebook, in the cell under each exercise
  (:func:`check`), so the tests a student is graded by are visible to them.
* :func:`check_student_copies` says whether the committed student copies are in sync.

Command line (the kit's CLI exposes the same as ``minispdf assign ...``)::

    python -m minispdf.assignments student [--src notebooks] [--dst notebooks/student]
    python -m minispdf.assignments grade [NOTEBOOK ...] [--json]
    python -m minispdf.assignments check [--src notebooks] [--dst notebooks/student]
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
import torch.nn as nn

from .errors import MiniSPDFError

BEGIN = "### BEGIN SOLUTION"
END = "### END SOLUTION"
META_KEY = "minispdf"  # cell.metadata["minispdf"]["exercise"] = exercise name
DEFAULT_SRC = "notebooks"
DEFAULT_DST = "notebooks/student"
STUDENT_NOTE_ID = "student-copy-note"
STUDENT_NOTE = (
    "**Student copy.** The exercise cells below raise `NotImplementedError` until you write them; "
    "the cell under each exercise checks your function against the library's own implementation. "
    "Grade the whole notebook from a terminal with\n"
    "`python -m minispdf.assignments grade path/to/{path}`."
)


# ------------------------------------------------------------------------------ the checks


class CheckFailed(AssertionError):
    pass


def _require(cond: bool, message: str) -> None:
    if not cond:
        raise CheckFailed(message)


def _library_mask(shape, sparsity: float, method: str, weight: torch.Tensor | None = None) -> torch.Tensor:
    """The mask the library's ``sparsify`` draws for one weight of this shape (the oracle)."""
    from .sparsity import sparsify

    layer = nn.Linear(shape[1], shape[0], bias=False)
    if weight is not None:
        with torch.no_grad():
            layer.weight.copy_(weight)
    masks = sparsify(layer, sparsity, method=method, include=r"^weight$", seed=0)
    return masks["weight"]


def _as_bool_mask(out, shape, what: str) -> torch.Tensor:
    _require(isinstance(out, torch.Tensor), f"{what} must return a torch.Tensor, got {type(out).__name__}")
    _require(out.dtype == torch.bool, f"{what} must return a bool tensor (True = kept), got dtype {out.dtype}")
    _require(tuple(out.shape) == tuple(shape), f"{what} returned shape {tuple(out.shape)}, expected {tuple(shape)}")
    return out


MASK_CASES = [((16, 16), 0.5), ((48, 16), 0.75), ((7, 13), 0.3), ((64, 192), 0.9), ((10, 10), 0.0), ((5, 3), 0.99)]


def _random_mask_checks(fn) -> list[tuple[str, Callable[[], None]]]:
    def exact_count():
        for shape, s in MASK_CASES:
            out = _as_bool_mask(fn(shape, s, torch.Generator().manual_seed(1)), shape, "random_mask")
            want = int(_library_mask(shape, s, "random").sum())
            _require(int(out.sum()) == want,
                     f"shape {shape}, sparsity {s}: kept {int(out.sum())} weights, the library keeps exactly {want} "
                     "(round((1 - sparsity) * numel)); a Bernoulli draw such as rand() > sparsity only gets it on average")

    def seeded():
        a = fn((32, 32), 0.75, torch.Generator().manual_seed(7))
        b = fn((32, 32), 0.75, torch.Generator().manual_seed(7))
        c = fn((32, 32), 0.75, torch.Generator().manual_seed(8))
        _require(torch.equal(a, b), "the same generator seed must give the same mask: draw all randomness from `generator`")
        _require(not torch.equal(a, c), "different generator seeds gave the same mask: the mask must be random")

    def uniform():
        g = torch.Generator().manual_seed(3)
        draws = 400
        freq = torch.zeros(8, 8)
        for _ in range(draws):
            freq += fn((8, 8), 0.75, g).float()
        freq /= draws
        # each position is kept with probability 0.25; 0.12 and 0.40 are ~6 standard deviations away
        _require(float(freq.min()) > 0.12 and float(freq.max()) < 0.40,
                 f"over {draws} masks some positions were kept with frequency {float(freq.min()):.2f} or "
                 f"{float(freq.max()):.2f}, not ~0.25: every weight must be equally likely to be kept "
                 "(unstructured), not e.g. the first columns of each row")

    return [("exact count of kept weights, as the library's sparsify", exact_count),
            ("reproducible from the generator, different for another seed", seeded),
            ("every position equally likely to be kept (unstructured)", uniform)]


def _magnitude_mask_checks(fn) -> list[tuple[str, Callable[[], None]]]:
    def matches_library():
        g = torch.Generator().manual_seed(11)
        for shape, s in MASK_CASES:
            w = torch.randn(shape, generator=g) * torch.rand(shape[1], generator=g)  # columns of different scale
            before = w.clone()
            out = _as_bool_mask(fn(w, s), shape, "magnitude_mask")
            _require(torch.equal(w, before), "magnitude_mask must not change the weight it is given")
            want = _library_mask(shape, s, "magnitude", weight=w)
            _require(int(out.sum()) == int(want.sum()),
                     f"shape {shape}, sparsity {s}: kept {int(out.sum())} weights, expected exactly {int(want.sum())}")
            _require(torch.equal(out, want),
                     f"shape {shape}, sparsity {s}: kept the wrong weights; keep the largest |w| "
                     "(absolute value: a large negative weight matters as much as a large positive one)")

    def keeps_largest():
        w = torch.tensor([[0.1, -3.0, 0.2, 2.0], [-0.05, 0.3, -1.0, 0.0]])
        out = _as_bool_mask(fn(w, 0.5), w.shape, "magnitude_mask")
        want = torch.tensor([[False, True, False, True], [False, True, True, False]])
        _require(torch.equal(out, want), "for w = [[0.1, -3.0, 0.2, 2.0], [-0.05, 0.3, -1.0, 0.0]] at 50% the kept "
                                         f"weights must be -3.0, 2.0, 0.3 and -1.0 (the 4 largest |w|); got {out.tolist()}")

    return [("keeps the 4 largest |w| of a small example", keeps_largest),
            ("equals the library's magnitude mask, exact count", matches_library)]


FLOP_CASES = [  # (d_model, seq_len, n_head, sparsity)
    (64, 64, 2, 0.0), (128, 256, 4, 0.75), (768, 1024, 12, 0.5), (2048, 2048, 16, 0.75), (96, 100, 3, 0.9),
]


def _block_flops_checks(fn) -> list[tuple[str, Callable[[], None]]]:
    from .flops import flop_report
    from .model import GPTConfig

    def library_block(d, T, h, s):
        cfg = GPTConfig(n_layer=1, n_embd=d, n_head=h, block_size=T, vocab_size=257)
        rep = flop_report(cfg, sparsity=s, seq_len=T)
        return sum(v["sparse"] for k, v in rep.components.items() if k not in ("embedding", "logits"))

    def dense_case():
        d, T, h = 64, 64, 2
        got = fn(d, T, h, 0.0)
        want = library_block(d, T, h, 0.0)
        _require(isinstance(got, (int, float)), f"block_forward_flops must return a number, got {type(got).__name__}")
        _require(math.isclose(got, want, rel_tol=1e-9),
                 f"dense block, d={d}, T={T}, heads={h}: got {got:.6g} FLOPs, the library counts {want:.6g} "
                 "(qkv + attention scores + softmax + attention x values + output projection + MLP, one sequence)")

    def sparse_cases():
        for d, T, h, s in FLOP_CASES:
            got = fn(d, T, h, s)
            want = library_block(d, T, h, s)
            _require(math.isclose(got, want, rel_tol=1e-9),
                     f"d={d}, T={T}, heads={h}, sparsity {s}: got {got:.6g}, the library counts {want:.6g}; "
                     "only the weight matmuls (qkv, output projection, MLP) shrink with density, "
                     "the attention matmuls between activations and the softmax stay dense")

    return [("dense block matches flop_report", dense_case),
            ("sparse blocks (up to GPT-3 XL size) match flop_report", sparse_cases)]


def _loss_mask_checks(fn) -> list[tuple[str, Callable[[], None]]]:
    from .data import get_tokenizer
    from .tasks import encode_example, encode_prompt, make_builtin_task

    def against_library(examples, tokenizer_name="char"):
        tok = get_tokenizer(tokenizer_name)
        for inp, ref in examples:
            tokens, want = encode_example(tok, inp, ref, block_size=4096)
            prompt_len = len(encode_prompt(tok, inp))
            got = fn(prompt_len, len(tokens))
            _require(isinstance(got, (list, tuple, torch.Tensor)), f"loss_mask must return a list, got {type(got).__name__}")
            got = [int(v) for v in (got.tolist() if isinstance(got, torch.Tensor) else got)]
            _require(len(got) == len(want),
                     f"prompt_len={prompt_len}, n_tokens={len(tokens)}: mask has {len(got)} entries, expected "
                     f"{len(want)} (one per input position x = tokens[:-1])")
            _require(got == want,
                     f"prompt_len={prompt_len}, n_tokens={len(tokens)}: got {got}, expected {want}; position i "
                     "predicts tokens[i + 1], which counts when it is a target token or the end-of-text")

    def tiny_case():
        against_library([("ab", "cd")])

    def task_cases():
        task = make_builtin_task(n_train=5, n_val=0, n_test=0, seed=0)
        against_library([(ex.input, ex.references[0]) for ex in task.train])

    return [("a 2-token input and 2-token target", tiny_case),
            ("equals tasks.encode_example on built-in task examples", task_cases)]


@dataclass(frozen=True)
class Exercise:
    name: str
    function: str  # the function the student writes
    notebook: str  # where it lives
    summary: str  # one line, also the stub's message
    checks: Callable  # fn -> list of (description, callable)


EXERCISES: dict[str, Exercise] = {e.name: e for e in [
    Exercise("random_mask", "random_mask", "01_gpt_and_masks",
             "return a bool mask keeping exactly round((1 - sparsity) * numel) random weights", _random_mask_checks),
    Exercise("magnitude_mask", "magnitude_mask", "01_gpt_and_masks",
             "return a bool mask keeping the largest |w|, exact count", _magnitude_mask_checks),
    Exercise("block_flops", "block_forward_flops", "02_flop_accounting",
             "return the forward FLOPs of one sparse transformer block for one sequence", _block_flops_checks),
    Exercise("loss_mask", "loss_mask", "04_dense_finetuning",
             "return the fine-tuning loss mask (1 where the next token is target or end-of-text)", _loss_mask_checks),
]}


# Minimal graders for the two exercises of issue 12's lessons (03: masked_step, 06: equal_flop_steps),
# added on the lessons branch so that its notebooks run; the assignments side brings the full ones.
def _reference_masked_step(params, masks, optimizer) -> None:
    with torch.no_grad():
        for p, m in zip(params, masks):
            p.grad.masked_fill_(~m, 0.0)
        optimizer.step()
        for p, m in zip(params, masks):
            for t in (p, optimizer.state[p]["exp_avg"], optimizer.state[p]["exp_avg_sq"]):
                t.masked_fill_(~m, 0.0)


def _masked_step_checks(fn) -> list[tuple[str, Callable[[], None]]]:
    def fifty_steps():
        g = torch.Generator().manual_seed(0)
        shapes = [(8, 6), (12,)]
        masks = [torch.rand(s, generator=g) > 0.75 for s in shapes]
        mine = [nn.Parameter(torch.randn(s, generator=g)) for s in shapes]  # pruned slots start nonzero
        ref = [nn.Parameter(p.detach().clone()) for p in mine]
        opt, ref_opt = (torch.optim.AdamW(ps, lr=1e-2, weight_decay=0.1) for ps in (mine, ref))
        for step in range(1, 51):
            for p, q in zip(mine, ref):
                p.grad = torch.randn(p.shape, generator=g)
                q.grad = p.grad.clone()
            fn(mine, masks, opt)
            _reference_masked_step(ref, masks, ref_opt)
            for p, q, m in zip(mine, ref, masks):
                _require(bool((p.detach()[~m] == 0).all()), f"step {step}: a pruned weight is not exactly 0")
                for key in ("exp_avg", "exp_avg_sq"):
                    _require(key in opt.state[p] and bool((opt.state[p][key][~m] == 0).all()),
                             f"step {step}: AdamW's {key} is not exactly 0 at a pruned slot")
                _require(torch.allclose(p.detach(), q.detach(), atol=1e-6),
                         f"step {step}: the kept weights differ from one AdamW step (call optimizer.step() once)")

    return [("pruned weights and AdamW moments stay exactly 0 for 50 steps, weight decay on", fifty_steps)]


def _equal_flop_steps_checks(fn) -> list[tuple[str, Callable[[], None]]]:
    def cases():
        for steps, sparse, dense in [(1000, 1.0, 2.49), (400, 3.3e9, 5.6e9), (7, 2.0, 4.0), (1, 1.0, 1.0)]:
            got, want = fn(steps, sparse, dense), round(steps * sparse / dense)
            _require(isinstance(got, int) and got == want,
                     f"{steps} sparse steps of {sparse:g} FLOPs, dense steps of {dense:g} FLOPs: got {got!r}, "
                     f"expected {want} (total sparse FLOPs / dense FLOPs per step, rounded to the nearest int)")

    return [("dense steps with the sparse run's total FLOPs, rounded to nearest", cases)]


EXERCISES.setdefault("masked_step", Exercise(
    "masked_step", "masked_adamw_step", "03_sparse_pretraining",
    "one AdamW step that keeps pruned weights and moments at exactly zero", _masked_step_checks))
EXERCISES.setdefault("equal_flop_steps", Exercise(
    "equal_flop_steps", "equal_flop_steps", "06_beyond_the_paper",
    "return the dense steps whose FLOPs equal the sparse run's", _equal_flop_steps_checks))


def check_exercise(name: str, fn) -> dict:
    """Run the checks of exercise ``name`` on ``fn``; ``{"name", "passed", "checks": [...]}``."""
    if name not in EXERCISES:
        raise MiniSPDFError(f"unknown exercise {name!r}: choose one of {', '.join(EXERCISES)}")
    checks = []
    if not callable(fn):
        checks.append(dict(check=f"{EXERCISES[name].function} is a function", passed=False,
                           message=f"{EXERCISES[name].function} is not defined as a function"))
    else:
        for desc, run in EXERCISES[name].checks(fn):
            try:
                run()
                checks.append(dict(check=desc, passed=True, message=""))
            except NotImplementedError as e:
                checks.append(dict(check=desc, passed=False, message=f"not written yet ({e})"))
            except CheckFailed as e:
                checks.append(dict(check=desc, passed=False, message=str(e)))
            except Exception as e:  # the student's code crashed
                where = traceback.extract_tb(e.__traceback__)[-1]
                checks.append(dict(check=desc, passed=False,
                                   message=f"{type(e).__name__}: {e} (line {where.lineno} of {where.filename})"))
    return dict(name=name, passed=all(c["passed"] for c in checks), checks=checks)


def format_result(result: dict) -> str:
    lines = [f"exercise {result['name']}: {'PASS' if result['passed'] else 'FAIL'}"]
    for c in result["checks"]:
        lines.append(f"  [{'ok' if c['passed'] else 'FAIL'}] {c['check']}" + (f"\n         {c['message']}" if c["message"] else ""))
    return "\n".join(lines)


def check(name: str, fn) -> dict:
    """The visible test under an exercise cell: prints the checks, raises AssertionError on failure."""
    result = check_exercise(name, fn)
    print(format_result(result))
    if not result["passed"]:
        raise AssertionError(f"exercise {name} is not solved yet: see the failed checks above")
    return result


# ------------------------------------------------------------------------------ notebooks


def _read(path) -> "nbformat.NotebookNode":  # noqa: F821
    import nbformat

    try:
        nb = nbformat.read(str(path), as_version=4)
        nb.cells  # noqa: B018  (a JSON file that is not a notebook fails here)
        return nb
    except Exception as e:
        raise MiniSPDFError(f"{path} is not a readable notebook ({type(e).__name__}): pass an .ipynb file "
                            "saved by Jupyter") from None


def dumps(nb) -> str:
    """The exact text a notebook is stored as (shared by the generator and the student copies)."""
    import nbformat

    text = nbformat.writes(nb)
    return text if text.endswith("\n") else text + "\n"


def exercise_name(cell) -> str | None:
    """The exercise a code cell holds: from its metadata, else from a ``def`` of a known exercise
    function in a cell with solution markers. None for an ordinary cell."""
    if cell.get("cell_type") != "code":
        return None
    name = cell.get("metadata", {}).get(META_KEY, {}).get("exercise")
    if name:
        return name
    if BEGIN in cell.source:
        for ex in EXERCISES.values():
            if re.search(rf"^\s*def\s+{ex.function}\s*\(", cell.source, re.M):
                return ex.name
    return None


def stub_source(source: str, name: str | None) -> str:
    """``source`` with every ``BEGIN``..``END`` block replaced by a NotImplementedError stub."""
    summary = EXERCISES[name].summary if name in EXERCISES else "write this part"
    out, inside = [], False
    for line in source.split("\n"):
        stripped = line.strip()
        if stripped == BEGIN:
            if inside:
                raise MiniSPDFError(f"nested {BEGIN!r} in exercise {name}")
            inside = True
            indent = line[: len(line) - len(line.lstrip())]
            out.append(f'{indent}raise NotImplementedError("exercise: {summary}")')
        elif stripped == END:
            if not inside:
                raise MiniSPDFError(f"{END!r} without {BEGIN!r} in exercise {name}")
            inside = False
        elif not inside:
            out.append(line)
    if inside:
        raise MiniSPDFError(f"{BEGIN!r} without {END!r} in exercise {name}")
    return "\n".join(out)


def student_notebook(nb, rel_path: str):
    """A student copy of notebook ``nb`` (not modified): solutions stubbed, outputs cleared."""
    import copy

    import nbformat

    nb = copy.deepcopy(nb)
    nb.cells = [c for c in nb.cells if "answer" not in c.get("metadata", {}).get("tags", [])]  # instructor's only
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.outputs = []
            cell.execution_count = None
            if BEGIN in cell.source:
                cell.source = stub_source(cell.source, exercise_name(cell))
    if any(exercise_name(c) for c in nb.cells):
        note = nbformat.v4.new_markdown_cell(STUDENT_NOTE.format(path=rel_path))
        note.id = STUDENT_NOTE_ID
        nb.cells.insert(1 if nb.cells and nb.cells[0].cell_type == "markdown" else 0, note)
    return nb


def _student_copies(src, dst) -> dict[Path, str]:
    src, dst = Path(src), Path(dst)
    sources = sorted(src.glob("*.ipynb"))
    if not sources:
        raise MiniSPDFError(f"no notebooks in {src}: pass --src, the folder that holds the source notebooks")
    return {dst / p.name: dumps(student_notebook(_read(p), p.name)) for p in sources}


def make_student_copies(src: str = DEFAULT_SRC, dst: str = DEFAULT_DST) -> list[str]:
    """Write a student copy of every notebook in ``src`` to ``dst``; returns the paths written.

    Student notebooks in ``dst`` without a source notebook are removed, so the folder mirrors ``src``.
    """
    copies = _student_copies(src, dst)
    Path(dst).mkdir(parents=True, exist_ok=True)
    for stale in Path(dst).glob("*.ipynb"):
        if stale not in copies:
            stale.unlink()
    for path, text in copies.items():
        path.write_text(text, encoding="utf-8")
    return [str(p) for p in copies]


def check_student_copies(src: str = DEFAULT_SRC, dst: str = DEFAULT_DST) -> list[str]:
    """Problems that make ``dst`` differ from fresh student copies of ``src`` (empty: in sync)."""
    copies = _student_copies(src, dst)
    problems = []
    for path, text in copies.items():
        if not path.exists():
            problems.append(f"{path} is missing")
        elif path.read_text(encoding="utf-8") != text:
            problems.append(f"{path} is out of date")
    for extra in sorted(Path(dst).glob("*.ipynb")):
        if extra not in copies:
            problems.append(f"{extra} has no source notebook in {src}")
    return problems


def grade(notebook_path) -> dict:
    """Run the exercise cells of a notebook and check each exercise; nothing else is executed.

    Returns ``{"notebook", "exercises": {name: {"passed", "checks": [...]}}, "passed", "total",
    "all_passed"}``. An exercise cell that does not run (a syntax error, a crash) fails its exercise.
    """
    path = Path(notebook_path)
    if not path.is_file():
        raise MiniSPDFError(f"no notebook at {path}: pass the .ipynb to grade")
    nb = _read(path)
    namespace: dict = {"__name__": "__exercise__"}
    exec("import math\nimport torch\nimport numpy as np", namespace)  # what the lessons import first
    cell_errors: dict[str, str] = {}
    names: list[str] = []
    for i, cell in enumerate(nb.cells):
        name = exercise_name(cell)
        if not name:
            continue
        if name not in names:
            names.append(name)
        source = "\n".join(line for line in cell.source.split("\n") if not line.lstrip().startswith(("%", "!")))
        try:
            exec(compile(source, f"<{path.name} cell {i} ({name})>", "exec"), namespace)
        except Exception as e:
            cell_errors[name] = f"the exercise cell does not run: {type(e).__name__}: {e}"
    exercises = {}
    for name in names:
        if name not in EXERCISES:
            exercises[name] = dict(name=name, passed=False,
                                   checks=[dict(check="known exercise", passed=False, message=f"unknown exercise {name!r}")])
        elif name in cell_errors:
            exercises[name] = dict(name=name, passed=False,
                                   checks=[dict(check="cell runs", passed=False, message=cell_errors[name])])
        else:
            exercises[name] = check_exercise(name, namespace.get(EXERCISES[name].function))
    passed = sum(e["passed"] for e in exercises.values())
    return dict(notebook=str(path), exercises=exercises, passed=passed, total=len(exercises),
                all_passed=passed == len(exercises))


# ------------------------------------------------------------------------------ command line


class _OneLineErrors(argparse.ArgumentParser):
    """argparse, but a usage mistake is the kit's one line ``error: ...`` (exit 2), not a usage dump."""

    def error(self, message):
        raise MiniSPDFError(f"{message}: see `minispdf assign --help`")


def main(argv=None) -> int:
    parser = _OneLineErrors(prog="python -m minispdf.assignments",
                            description="Student copies of the notebooks and a grader for their exercises.")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("student", help="write student copies (solutions replaced by stubs)")
    p.add_argument("--src", default=DEFAULT_SRC)
    p.add_argument("--dst", default=DEFAULT_DST)
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p = sub.add_parser("grade", help="run and check the exercises of notebooks")
    p.add_argument("notebooks", nargs="*", help=f"notebooks to grade (default: {DEFAULT_DST}/*.ipynb with exercises)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p = sub.add_parser("check", help="exit 1 unless the student copies are in sync with the sources")
    p.add_argument("--src", default=DEFAULT_SRC)
    p.add_argument("--dst", default=DEFAULT_DST)
    p.add_argument("--json", action="store_true", help="print one JSON object")
    try:
        args = parser.parse_args(argv)
        if args.command == "student":
            written = [str(p) for p in make_student_copies(args.src, args.dst)]
            if args.json:
                print(json.dumps({"written": written}, indent=2))
            for path in [] if args.json else written:
                print(f"wrote {path}")
            return 0
        if args.command == "check":
            problems = check_student_copies(args.src, args.dst)
            if args.json:
                print(json.dumps({"in_sync": not problems, "problems": problems, "src": args.src,
                                  "dst": args.dst}, indent=2))
                return 1 if problems else 0
            for line in problems:
                print(line)
            if problems:
                print(f"student copies are out of sync: run `python -m minispdf.assignments student "
                      f"--src {args.src} --dst {args.dst}`")
                return 1
            print(f"student copies in {args.dst} are in sync with {args.src}")
            return 0
        paths = args.notebooks or [str(p) for p in sorted(Path(DEFAULT_DST).glob("*.ipynb"))
                                   if any(exercise_name(c) for c in _read(p).cells)]
        if not paths:
            raise MiniSPDFError(f"no notebooks to grade: pass paths, or create {DEFAULT_DST} with `student`")
        results = [grade(p) for p in paths]
        if args.json:
            print(json.dumps(results if len(results) > 1 else results[0], indent=2))
        else:
            for r in results:
                print(f"{r['notebook']}: {r['passed']}/{r['total']} exercises pass")
                for e in r["exercises"].values():
                    print("  " + format_result(e).replace("\n", "\n  "))
        return 0 if all(r["all_passed"] for r in results) else 1
    except MiniSPDFError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
