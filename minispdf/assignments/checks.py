"""The checks of each exercise: the student's function against the library's own implementation.

Each ``*_checks(fn)`` returns ``[(description, run), ...]``; ``run()`` raises :class:`CheckFailed`
with a message that says what was expected and why (:func:`require`). The oracles are the
library: ``sparsify`` for the masks and the share of zeros, ``nm_mask`` for the 2:4 mask,
``tasks.encode_example`` for the loss mask and an AdamW step on masked gradients for the masked
step. This module holds what every check uses and the checks of masks; the checks of what the
method costs and gains (FLOPs, equal-FLOP steps, L) are in :mod:`.accounting_checks`.

Every input a check makes must be the same each time it is made (its own seeded generators, never
torch's global one): the grader runs the checks twice, in its worker on the student's function and
in its own process on the worker's record of that function's calls (see :mod:`.replay`).
"""

from __future__ import annotations

import copy
import math
from typing import Callable

import torch
import torch.nn as nn

Checks = list[tuple[str, Callable[[], None]]]


class CheckFailed(AssertionError):
    pass


class StudentRaised(Exception):
    """What the student's function raised in the grader's worker, replayed in the grader: the
    exception's type name, message and line, as data (the exception itself never leaves the
    worker)."""

    def __init__(self, kind: str, message: str, where: str):
        super().__init__(message)
        self.kind, self.message, self.where = kind, message, where


def require(cond: bool, message: str) -> None:
    """Fail the check with ``message`` (what was expected, and why) unless ``cond``."""
    if not cond:
        raise CheckFailed(message)


def library_mask(shape, sparsity: float, method: str,
                 weight: torch.Tensor | None = None) -> torch.Tensor:
    """The mask the library's ``sparsify`` draws for one weight of this shape (the oracle)."""
    from ..sparsity import sparsify

    layer = nn.Linear(shape[1], shape[0], bias=False)
    if weight is not None:
        with torch.no_grad():
            layer.weight.copy_(weight)
    masks = sparsify(layer, sparsity, method=method, include=r"^weight$", seed=0)
    return masks["weight"]


def as_bool_mask(out, shape, what: str) -> torch.Tensor:
    """``out`` if it is a bool tensor of ``shape``; else the check fails, naming ``what`` returned
    it."""
    require(isinstance(out, torch.Tensor),
            f"{what} must return a torch.Tensor, got {type(out).__name__}")
    require(out.dtype == torch.bool,
            f"{what} must return a bool tensor (True = kept), got dtype {out.dtype}")
    require(tuple(out.shape) == tuple(shape),
            f"{what} returned shape {tuple(out.shape)}, expected {tuple(shape)}")
    return out


MASK_CASES = [((16, 16), 0.5), ((48, 16), 0.75), ((7, 13), 0.3), ((64, 192), 0.9), ((10, 10), 0.0),
              ((5, 3), 0.99)]


def random_mask_checks(fn) -> Checks:
    def exact_count():
        for shape, s in MASK_CASES:
            out = as_bool_mask(fn(shape, s, torch.Generator().manual_seed(1)), shape, "random_mask")
            want = int(library_mask(shape, s, "random").sum())
            require(int(out.sum()) == want,
                    f"shape {shape}, sparsity {s}: kept {int(out.sum())} weights, the library "
                    f"keeps exactly {want} "
                    "(round((1 - sparsity) * numel)); a Bernoulli draw such as rand() > sparsity "
                    "only gets it on average")

    def seeded():
        a = fn((32, 32), 0.75, torch.Generator().manual_seed(7))
        b = fn((32, 32), 0.75, torch.Generator().manual_seed(7))
        c = fn((32, 32), 0.75, torch.Generator().manual_seed(8))
        require(torch.equal(a, b), "the same generator seed must give the same mask: draw all "
                                   "randomness from `generator`")
        require(not torch.equal(a, c),
                "different generator seeds gave the same mask: the mask must be random")

    def uniform():
        g = torch.Generator().manual_seed(3)
        draws = 400
        freq = torch.zeros(8, 8)
        for _ in range(draws):
            freq += fn((8, 8), 0.75, g).float()
        freq /= draws
        # each position is kept with probability 0.25; 0.12 and 0.40 are ~6 standard deviations away
        require(float(freq.min()) > 0.12 and float(freq.max()) < 0.40,
                f"over {draws} masks some positions were kept with frequency "
                f"{float(freq.min()):.2f} or "
                f"{float(freq.max()):.2f}, not ~0.25: every weight must be equally "
                f"likely to be kept "
                "(unstructured), not e.g. the first columns of each row")

    return [("exact count of kept weights, as the library's sparsify", exact_count),
            ("reproducible from the generator, different for another seed", seeded),
            ("every position equally likely to be kept (unstructured)", uniform)]


def magnitude_mask_checks(fn) -> Checks:
    def matches_library():
        g = torch.Generator().manual_seed(11)
        for shape, s in MASK_CASES:
            # columns of different scale
            w = torch.randn(shape, generator=g) * torch.rand(shape[1], generator=g)
            before = w.clone()
            out = as_bool_mask(fn(w, s), shape, "magnitude_mask")
            require(torch.equal(w, before), "magnitude_mask must not change the weight it is given")
            want = library_mask(shape, s, "magnitude", weight=w)
            require(int(out.sum()) == int(want.sum()),
                    f"shape {shape}, sparsity {s}: kept {int(out.sum())} weights, expected exactly "
                    f"{int(want.sum())}")
            require(torch.equal(out, want),
                    f"shape {shape}, sparsity {s}: kept the wrong weights; keep the largest |w| "
                    "(absolute value: a large negative weight matters as much as a large "
                    "positive one)")

    def keeps_largest():
        w = torch.tensor([[0.1, -3.0, 0.2, 2.0], [-0.05, 0.3, -1.0, 0.0]])
        out = as_bool_mask(fn(w, 0.5), w.shape, "magnitude_mask")
        want = torch.tensor([[False, True, False, True], [False, True, True, False]])
        require(torch.equal(out, want),
                "for w = [[0.1, -3.0, 0.2, 2.0], [-0.05, 0.3, -1.0, 0.0]] at 50% the kept "
                                         f"weights must be -3.0, 2.0, 0.3 and -1.0 (the 4 largest "
                                         f"|w|); got {out.tolist()}")

    return [("keeps the 4 largest |w| of a small example", keeps_largest),
            ("equals the library's magnitude mask, exact count", matches_library)]



def loss_mask_checks(fn) -> Checks:
    from ..data import get_tokenizer
    from ..tasks import encode_example, encode_prompt, make_builtin_task

    def against_library(examples, tokenizer_name="char"):
        tok = get_tokenizer(tokenizer_name)
        for inp, ref in examples:
            tokens, want = encode_example(tok, inp, ref, block_size=4096)
            prompt_len = len(encode_prompt(tok, inp))
            got = fn(prompt_len, len(tokens))
            require(isinstance(got, (list, tuple, torch.Tensor)),
                    f"loss_mask must return a list, got {type(got).__name__}")
            got = [int(v) for v in (got.tolist() if isinstance(got, torch.Tensor) else got)]
            require(len(got) == len(want),
                    f"prompt_len={prompt_len}, n_tokens={len(tokens)}: mask has {len(got)} "
                    f"entries, expected "
                    f"{len(want)} (one per input position x = tokens[:-1])")
            require(got == want,
                    f"prompt_len={prompt_len}, n_tokens={len(tokens)}: got {got}, expected "
                    f"{want}; position i "
                    "predicts tokens[i + 1], which counts when it is a target token or "
                    "the end-of-text")

    def tiny_case():
        against_library([("ab", "cd")])

    def task_cases():
        task = make_builtin_task(n_train=5, n_val=0, n_test=0, seed=0)
        against_library([(ex.input, ex.references[0]) for ex in task.train])

    return [("a 2-token input and 2-token target", tiny_case),
            ("equals tasks.encode_example on built-in task examples", task_cases)]


# ---- masked_step: pruned weights and AdamW moments stay exactly zero

MASKED_STEPS = 50
ADAMW = dict(lr=1e-2, betas=(0.9, 0.99), weight_decay=0.1)
# optimizer state key: non-zero pruned gradient slots the last step() saw
GRAD_SEEN = "pruned_grad_seen"
MASKED_ADVICE = {
    "gradient": "zero the pruned gradient slots (p.grad) before optimizer.step()",
    "gradient (as optimizer.step() read it)": "zero the pruned gradient slots (p.grad) before "
                                              "optimizer.step(), not after: "
                            "the step reads them (clearing or zeroing p.grad afterwards "
                            "is too late)",
    "weight": "after optimizer.step() set the pruned weights to zero: old moments still move them",
    "exp_avg": "after optimizer.step() zero optimizer.state[p]['exp_avg'] at the pruned slots",
    "exp_avg_sq": "after optimizer.step() zero optimizer.state[p]['exp_avg_sq'] at the "
                  "pruned slots",
}


class _WatchedAdamW(torch.optim.AdamW):
    """AdamW that notes, in its own state, how many pruned gradient slots were non-zero when
    ``step()`` ran: the one moment a masked step must have cleared them. (What a step leaves
    behind cannot tell: zeroing the weights and moments afterwards, or ``zero_grad()``, hides an
    unmasked gradient.) A 0-dim tensor, so it travels in the grader's record with the moments."""

    # (parameter, bool mask of its pruned slots), set once the masks exist
    pruned: list | tuple = ()

    @torch.no_grad()
    def step(self, closure=None):
        seen = [(p, int((p.grad[where] != 0).sum())) for p, where in self.pruned
                if p.grad is not None]
        out = super().step(closure)
        for p, n in seen:
            self.state[p][GRAD_SEEN] = torch.tensor(n)
        return out


def _masked_problem(seed: int):
    """Weights, masks from the library's ``sparsify`` and an AdamW whose moments are non-zero
    everywhere (three dense steps first, as when a mask is drawn for a model already training)."""
    from ..sparsity import sparsify

    g = torch.Generator().manual_seed(seed)
    model = nn.Sequential(nn.Linear(12, 16), nn.Linear(16, 8))
    params = list(model.parameters())
    # from g, not torch's global generator: the grader makes this problem again
    with torch.no_grad():
        for p in params:
            p.copy_(torch.randn(p.shape, generator=g) * 0.3)
    opt = _WatchedAdamW(params, **ADAMW)
    for _ in range(3):
        for p in params:
            p.grad = torch.randn(p.shape, generator=g)
        opt.step()
    # zeros the pruned weights
    masks = sparsify(model, 0.6, method="random", include=r"weight$", seed=seed)
    named = list(model.named_parameters())
    masks = [masks.get(n, torch.ones(p.shape, dtype=torch.bool)) for n, p in named]
    opt.pruned = [(p, ~m) for (_, p), m in zip(named, masks)]
    return [p for _, p in named], masks, opt, g


def _reference_step(params, masks, opt) -> None:
    with torch.no_grad():
        for p, m in zip(params, masks):
            p.grad = torch.where(m, p.grad, 0.0)
        opt.step()
        for p, m in zip(params, masks):
            for t in (p, opt.state[p]["exp_avg"], opt.state[p]["exp_avg_sq"]):
                t.copy_(torch.where(m, t, 0.0))


def _pruned_leaks(params, masks, opt) -> list[tuple[str, int, tuple, int, float]]:
    """(what, parameter index, shape, non-zero pruned slots, largest |value|) for every leak."""
    leaks = []
    for i, (p, m) in enumerate(zip(params, masks)):
        state = opt.state.get(p, {})
        seen = state.get(GRAD_SEEN)
        if isinstance(seen, torch.Tensor) and seen.numel() == 1 and int(seen) != 0:
            leaks.append(("gradient (as optimizer.step() read it)", i, tuple(p.shape), int(seen),
                          float("nan")))
        for what, t in (("gradient", p.grad), ("weight", p.detach()),
                        ("exp_avg", state.get("exp_avg")), ("exp_avg_sq", state.get("exp_avg_sq"))):
            if t is None:
                continue
            bad = t.detach()[~m] != 0
            if bool(bad.any()):
                leaks.append((what, i, tuple(p.shape), int(bad.sum()),
                              float(t.detach()[~m].abs().max())))
    return leaks


def _student_steps(fn, seed: int = 5):
    """Yield ``(step, params, masks, optimizer, grads)``: the start (step 0), then the state after
    each of the student's ``MASKED_STEPS`` calls, with fresh random gradients every step."""
    params, masks, opt, g = _masked_problem(seed)
    yield 0, params, masks, opt, None
    for step in range(1, MASKED_STEPS + 1):
        grads = [torch.randn(p.shape, generator=g) for p in params]
        for p, grad in zip(params, grads):
            p.grad = grad.clone()
            opt.state[p].pop(GRAD_SEEN, None)
        fn(params, [m.clone() for m in masks], opt)
        yield step, params, masks, opt, grads


def masked_step_checks(fn) -> Checks:
    def stays_zero():
        for step, params, masks, opt, _ in _student_steps(fn):
            if step and not any(GRAD_SEEN in opt.state.get(p, {}) for p in params):
                raise CheckFailed(f"step {step}: optimizer.step() was not called; call it "
                                  f"once, between "
                                  "masking the gradients and zeroing the weights and moments")
            leaks = _pruned_leaks(params, masks, opt)
            if step and leaks:
                what, i, shape, n, big = leaks[0]
                others = "".join(f", the {w} of parameter {j}" for w, j, *_ in leaks[1:4])
                size = "" if math.isnan(big) else f" (largest |value| {big:.3g})"
                raise CheckFailed(f"step {step}: the {what} of parameter {i} (shape {shape}) is "
                                  f"non-zero at {n} pruned "
                                  f"slots{size}{others}; {MASKED_ADVICE[what]}")

    def matches_reference():
        steps = _student_steps(fn)
        _, params, masks, opt, _ = next(steps)
        # same start, own optimizer
        ref_params = [p.detach().clone().requires_grad_() for p in params]
        ref_opt = torch.optim.AdamW(ref_params, **ADAMW)
        # load_state_dict would share the tensors
        ref_opt.load_state_dict(copy.deepcopy(opt.state_dict()))
        for step, params, masks, opt, grads in steps:
            for r, grad in zip(ref_params, grads):
                r.grad = grad.clone()
            _reference_step(ref_params, masks, ref_opt)
            for i, (p, r, m) in enumerate(zip(params, ref_params, masks)):
                got, want = p.detach()[m], r.detach()[m]
                if not torch.allclose(got, want, rtol=1e-6, atol=1e-9):
                    raise CheckFailed(f"step {step}: the kept weights of parameter {i} (shape "
                                      f"{tuple(p.shape)}) differ "
                                      f"by up to {float((got - want).abs().max()):.3g} from one "
                                      f"AdamW step on the "
                                      "masked gradients; call optimizer.step() exactly once, and "
                                      "change nothing "
                                      "else at the kept slots")

    return [(f"pruned gradients zero when optimizer.step() reads them; weights and AdamW moments "
             f"exactly zero "
             f"after each of {MASKED_STEPS} steps "
             f"(weight decay {ADAMW['weight_decay']})", stays_zero),
            ("kept weights equal an AdamW step on the masked gradients", matches_reference)]



NM_CASES = [(4, 8), (16, 16), (3, 12), (64, 192)]  # (out, in): groups of 4 along the inputs


def _two_four_weight(shape, seed: int) -> torch.Tensor:
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed))


def two_four_mask_checks(fn) -> Checks:
    from ..schedules import nm_mask

    def by_hand():
        w = torch.tensor([[0.1, -0.9, 0.5, 0.2, 3.0, 0.0, -1.5, 1.0]])
        out = as_bool_mask(fn(w.clone()), w.shape, "two_four_mask")
        want = [[False, True, True, False, True, False, True, False]]
        require(out.tolist() == want,
                f"weight {w.tolist()[0]}: kept {out.int().tolist()[0]}, expected "
                                       f"{[int(v) for v in want[0]]} (the 2 largest |w| of each "
                                       f"group of 4: "
                                       "-0.9 and 0.5, then 3.0 and -1.5)")

    def pattern():
        for i, shape in enumerate(NM_CASES):
            w = _two_four_weight(shape, i)
            out = as_bool_mask(fn(w.clone()), shape, "two_four_mask")
            counts = out.reshape(shape[0], -1, 4).sum(-1)
            bad = int((counts != 2).sum())
            require(bad == 0, f"shape {shape}: {bad} of {counts.numel()} groups of 4 consecutive "
                              f"inputs (along each "
                               "row) do not keep exactly 2; a 2:4 mask keeps 2 in every group, "
                               "not 50% overall")
            require(torch.equal(out, nm_mask(w, 2, 4)),
                    f"shape {shape}: the right count in every group, but not the 2 largest "
                    f"|w| of each: "
                    f"{int((out != nm_mask(w, 2, 4)).sum())} slots differ (compare magnitudes, not "
                    f"signed values)")

    def untouched():
        w = _two_four_weight((8, 16), 9)
        copy_ = w.clone()
        fn(w)
        require(torch.equal(w, copy_),
                "two_four_mask changed `weight`: return a mask, leave the weight alone")

    return [("a row by hand: the 2 largest |w| of every 4 consecutive inputs", by_hand),
            ("exactly 2 of every 4 along each row, the largest by magnitude, on random weights",
             pattern),
            ("the weight is left unchanged", untouched)]


# ---- model_sparsity (lesson 00): the share of all parameters a mask zeroes

SPARSITY_MODELS = [("nano", 0.75), ("nano", 0.5), ("tiny", 0.9), ("nano", 0.3)]


def _model_sparsity_cases():
    """(shapes, masked names, sparsity, the zero share of the library's sparsified model)."""
    from ..model import GPT, preset_config
    from ..sparsity import sparsify

    for preset, s in SPARSITY_MODELS:
        torch.manual_seed(0)  # the weights do not matter: a random mask counts, it does not rank
        model = GPT(preset_config(preset, block_size=32))
        masks = sparsify(model, s, seed=0)
        params = dict(model.named_parameters())
        zeros = sum(int((~m).sum()) for m in masks.values())
        yield ({n: tuple(p.shape) for n, p in params.items()}, sorted(masks), s,
               zeros / sum(p.numel() for p in params.values()), preset)


def model_sparsity_checks(fn) -> Checks:
    def call(shapes, masked, s, want, where):
        got = fn(dict(shapes), list(masked), s)
        require(isinstance(got, (int, float)) and not isinstance(got, bool),
                f"{where}: model_sparsity must return a number (a fraction), got "
                f"{type(got).__name__}")
        require(math.isclose(got, want, rel_tol=0, abs_tol=1e-12),
                f"{where}: got {got:.6f}, expected {want:.6f}; each masked matrix keeps exactly "
                "round((1 - sparsity) * numel) weights, and the unmasked parameters (embeddings, "
                "norms, biases) count in the total but keep all their weights")

    def by_hand():
        shapes = {"a.weight": (7, 13), "a.bias": (7,), "b.weight": (3, 3)}
        # a: 91 weights, keeps round(0.7 * 91) = 64, zeroes 27 (not 27.3); 107 parameters in all
        call(shapes, ["a.weight"], 0.3, 27 / 107,
             "one 7 x 13 matrix masked at 30% (the bias and b stay dense)")
        call(shapes, [], 0.75, 0.0, "nothing masked")

    def models():
        for shapes, masked, s, want, preset in _model_sparsity_cases():
            call(shapes, masked, s, want, f"GPT preset {preset!r} at sparsity {s}")

    return [("small cases by hand (exact counts; unmasked parameters count in the total)", by_hand),
            ("the share of zeros in the library's sparsified GPTs", models)]
