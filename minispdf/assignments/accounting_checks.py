"""The checks of the exercises that count what the method costs and gains: one block's forward
FLOPs (lesson 02, against ``flop_report``), the dense steps of equal FLOPs (lesson 06, against the
study's plan) and L, the benefit of pre-training lost (lesson 05, against ``study.claims``).

Like the checks of :mod:`.checks`, each ``*_checks(fn)`` returns ``[(description, run), ...]``
and makes the same inputs each time (the grader runs it twice).
"""

from __future__ import annotations

import math

import torch

from .checks import Checks, require

# ---- block_flops (lesson 02): the forward FLOPs of one sparse block

FLOP_CASES = [  # (d_model, seq_len, n_head, sparsity)
    (64, 64, 2, 0.0), (128, 256, 4, 0.75), (768, 1024, 12, 0.5), (2048, 2048, 16, 0.75), (96, 100,
                                                                                          3, 0.9),
]


def block_flops_checks(fn) -> Checks:
    from .answers import block_forward_flops as library_block  # flop_report's count of one block

    def dense_case():
        d, T, h = 64, 64, 2
        got = fn(d, T, h, 0.0)
        want = library_block(d, T, h, 0.0)
        require(isinstance(got, (int, float)),
                f"block_forward_flops must return a number, got {type(got).__name__}")
        require(math.isclose(got, want, rel_tol=1e-9),
                f"dense block, d={d}, T={T}, heads={h}: got {got:.6g} FLOPs, the library "
                f"counts {want:.6g} "
                "(qkv + attention scores + softmax + attention x values + output projection + MLP, "
                "one sequence)")

    def sparse_cases():
        for d, T, h, s in FLOP_CASES:
            got = fn(d, T, h, s)
            want = library_block(d, T, h, s)
            require(math.isclose(got, want, rel_tol=1e-9),
                    f"d={d}, T={T}, heads={h}, sparsity {s}: got {got:.6g}, the library counts "
                    f"{want:.6g}; "
                    "only the weight matmuls (qkv, output projection, MLP) shrink with density, "
                    "the attention matmuls between activations and the softmax stay dense")

    return [("dense block matches flop_report", dense_case),
            ("sparse blocks (up to GPT-3 XL size) match flop_report", sparse_cases)]


# ---- equal_flop_steps (lesson 06): the dense steps that cost the FLOPs of a sparse run

EQFLOP_BY_HAND = [(1000, 3.0, 4.0, 750), (7, 1.0, 3.0, 2), (5, 1.0, 3.0, 2), (100, 5.0, 5.0, 100),
                  (1, 2.0, 2.0, 1)]
# real model configs
EQFLOP_GRIDS = {"default": ("small", "nano", "large"), "gpu": ("10M", "40M", "124M")}
EQFLOP_SPARSITIES = (0.0, 0.5, 0.75, 0.9)


def equal_flop_cases():
    """The cases the equal_flop_steps check takes from the study, for the models of ``EQFLOP_GRIDS``
    at ``EQFLOP_SPARSITIES``: (grid, size, sparsity, sparse steps, sparse and dense FLOPs per step,
    the study's eqflop steps)."""
    from ..flops import flop_report
    from ..study.grids import resolve_grid
    from ..study.plan import model_config, pretrain_spec, pretrain_steps

    for name, sizes in EQFLOP_GRIDS.items():
        grid = resolve_grid(name)
        tokens = grid["pretrain"]["batch_size"]  # sequences per step
        for size in sizes:
            cfg = model_config(grid, size)
            # counted once, not per sparsity
            grid["sizes"][size]["pretrain_steps"] = pretrain_steps(grid, size)
            for s in EQFLOP_SPARSITIES:
                rep = flop_report(cfg, sparsity=s, seq_len=grid["block_size"])
                want = pretrain_spec(grid, size, {"sparsity": s, "equal_flops": True},
                                     seed=0)["steps"]
                (yield name, size, s, pretrain_steps(grid, size), rep.train_sparse * tokens,
                 rep.train_dense * tokens, want)


def equal_flop_steps_checks(fn) -> Checks:
    def call(steps, sparse, dense, want, where):
        got = fn(steps, sparse, dense)
        require(isinstance(got, int) and not isinstance(got, bool),
                f"{where}: must return a whole number of steps (an int), got {got!r} "
                f"({type(got).__name__})")
        require(got == want,
                f"{where}: expected {want} steps, got {got}; the dense run takes as many FLOPs in "
                              "all as the sparse run, rounded to the nearest step")

    def by_hand():
        for steps, sparse, dense, want in EQFLOP_BY_HAND:
            call(steps, sparse, dense, want, f"equal_flop_steps({steps}, {sparse}, {dense})")

    def study():
        for grid, size, s, steps, sparse, dense, want in equal_flop_cases():
            call(steps, sparse, dense, want,
                 f"grid {grid}, size {size}, sparsity {s}: equal_flop_steps({steps}, "
                                             f"{sparse:.6g}, {dense:.6g})")

    return [(("small cases by hand (an int, rounded to the nearest step; sparsity 0 "
              "keeps the steps)"), by_hand),
            ("the study's eqflop step counts for the grids' models at sparsity 0 to 0.9", study)]


# ---- benefit_lost (lesson 05): L per seed, as the study defines it

def _benefit_cases():
    """Per-seed values of arm, dense and scratch for both measures, from a seeded generator (the
    grader makes them again), with the study's own L (``study.claims.benefit_lost``) for each."""
    from ..study.claims import benefit_lost

    g = torch.Generator().manual_seed(23)
    for measure in ("test_loss", "bleu", "test_loss"):
        seeds = list(range(6))
        dense = {s: 1.0 + float(torch.rand((), generator=g)) for s in seeds}
        scratch = {s: dense[s] + 0.1 + float(torch.rand((), generator=g)) for s in seeds}
        arm = {s: dense[s] + 0.3 * float(torch.randn((), generator=g)) for s in seeds}
        if measure == "bleu":  # higher is better: scratch below dense
            scratch = {s: 10 * dense[s] - 10 * (scratch[s] - dense[s]) for s in seeds}
            dense = {s: 10 * v for s, v in dense.items()}
            arm = {s: 10 * v for s, v in arm.items()}
        # seed 4: pre-training did not help
        scratch[4] = dense[4] + (-0.05 if measure == "test_loss" else 0.5)
        del arm[5]  # seed 5: the arm's run is missing
        rows = [dict(seed=s, arm=name, task="t", size="s", set="full", **{measure: v})
                for name, values in (("arm", arm), ("dense", dense), ("scratch", scratch))
                for s, v in values.items()]
        (yield arm, dense, scratch, measure,
         benefit_lost(rows, measure, "arm", dict(task="t", size="s", set="full")))


def benefit_lost_checks(fn) -> Checks:
    def call(arm, dense, scratch, measure, want, where):
        got = fn(dict(arm), dict(dense), dict(scratch), measure)
        require(isinstance(got, dict),
                f"{where}: benefit_lost must return a dict seed -> L, got {type(got).__name__}")
        require(set(got) == set(want),
                f"{where}: L for seeds {sorted(got)}, expected seeds {sorted(want)}: only seeds "
                f"that have all "
                "three runs, and where dense pre-training beat scratch (L is undefined elsewhere)")
        for s in want:
            require(isinstance(got[s], (int, float))
                    and math.isclose(got[s], want[s], rel_tol=1e-9, abs_tol=1e-12),
                    f"{where}, seed {s}: L = {got[s]!r}, expected {want[s]:.6g}: the arm's gap "
                    f"to dense over "
                    "scratch's gap to dense, both measured so that positive means worse (on BLEU, "
                    "higher is better)")

    def by_hand():
        call({0: 1.2}, {0: 1.0}, {0: 2.0}, "test_loss", {0: 0.2},
             "test loss: arm 1.2, dense 1.0, scratch 2.0")
        call({0: 18.0}, {0: 20.0}, {0: 10.0}, "bleu", {0: 0.2},
             "BLEU: arm 18, dense 20, scratch 10")
        call({0: 0.9}, {0: 1.0}, {0: 2.0}, "test_loss", {0: -0.1},
             "test loss: an arm better than dense")

    def study():
        for i, (arm, dense, scratch, measure, want) in enumerate(_benefit_cases()):
            call(arm, dense, scratch, measure, want,
                 f"case {i + 1} ({measure}, 6 seeds, one missing, one where "
                                                     "scratch is not worse)")

    return [("small cases by hand (test loss and BLEU)", by_hand),
            ("equals the study's L per seed (study.claims.benefit_lost)", study)]
