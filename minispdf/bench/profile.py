"""The training step behind the kernel bench: where a dense step's time goes, and what faster
kernels would do to it.

The step estimate (:func:`step_profile`, :func:`step_estimates`) is Amdahl's law: torch.profiler
*measures* which fraction of a dense training step each masked matmul takes; the estimate
*derives* the step speedup if those matmuls ran at the measured kernel speedups and everything
else (attention, LM head, LayerNorms, optimizer) stayed as it is.
"""


from __future__ import annotations

import statistics

from ..fileio import quiet_stderr
from ..flops import flop_report
from .bench_config import BenchConfig
from .shapes import KERNELS, SHAPE_NAMES, TWO_FOUR, matrix_shapes
from .step import Arm, step_autocast, time_steps


def classify_matmul(name: str, shapes_in: list, weights: dict, tokens: int):
    """(shape name, matmul) for a profiled aten::addmm/mm of a masked layer, else None.

    Forward is addmm(bias, X, W^T); backward is mm(dY, W) (grad_input) and mm(dY^T, X)
    (grad_weight).
    """
    mats = [s for s in shapes_in if len(s) == 2]
    if len(mats) < 2:
        return None
    (m, k), (k2, n) = mats[-2], mats[-1]
    if name == "aten::addmm" and m == tokens and (n, k) in weights:
        return weights[(n, k)], "forward"
    if name == "aten::mm":
        if k == tokens and (m, n) in weights:
            return weights[(m, n)], "grad_weight"
        if m == tokens and (k, n) in weights:
            return weights[(k, n)], "grad_input"
    return None


def step_profile(preset: str, batch_size: int, block_size: int | None, device: str,
                 dtype: str = "auto",
                 steps: int = 3, warmup: int = 1) -> dict:
    """Measured: the wall time of a dense training step and the share of it each masked matmul
    takes (torch.profiler, ``record_shapes``, matched by shape)."""
    from torch.profiler import ProfilerActivity, profile

    _, autocast = step_autocast(device, dtype)
    arm = Arm(preset, 0.0, batch_size, block_size, device, False)
    cfg = arm.model.config
    tokens = batch_size * cfg.block_size
    weights = {shape: name for name, shape in matrix_shapes(cfg).items()}
    for _ in range(max(1, warmup)):
        arm.step(autocast)
    activities = ([ProfilerActivity.CPU]
                  + ([ProfilerActivity.CUDA] if device.startswith("cuda") else []))
    with quiet_stderr(), profile(activities=activities, record_shapes=True) as prof:
        walls = time_steps({"dense": arm}, steps, device, autocast)["dense"]
    spent = {(s, k): 0.0 for s in SHAPE_NAMES for k in KERNELS}
    counts = dict.fromkeys(spent, 0)
    for e in prof.events():
        if e.name not in ("aten::addmm", "aten::mm"):
            continue
        key = classify_matmul(e.name, e.input_shapes, weights, tokens)
        if key is None:
            continue
        us = getattr(e, "device_time_total", 0) if device.startswith("cuda") else e.cpu_time_total
        spent[key] += us / 1e6
        counts[key] += 1
    total = sum(walls)
    fraction = {s: {k: spent[(s, k)] / total for k in KERNELS} for s in SHAPE_NAMES}
    expected = cfg.n_layer * steps
    return {
        "preset": preset, "tokens": tokens, "batch_size": batch_size, "block_size": cfg.block_size,
        "n_layer": cfg.n_layer, "steps": steps,
        "step_ms": 1000 * statistics.median(walls),
        "masked_matmul_ms": 1000 * sum(spent.values()) / steps,
        "masked_fraction": sum(spent.values()) / total,
        "fraction": fraction,
        # every masked matmul found once per layer and step: the attribution by shape is complete
        "attribution_complete": all(c == expected for c in counts.values()),
        "timer": "torch.profiler "
        + ("CUDA kernel time" if device.startswith("cuda") else "CPU op time")
                 + " over the wall time of profiled steps",
    }


def step_estimates(profile_: dict, rows: list[dict], cfg, sparsities) -> list[dict]:
    """Derived (Amdahl): the dense step's speedup if each masked matmul ran at its measured speedup.

    ``csr``: CSR kernels for every masked matmul; ``csr where faster``: the faster of CSR and dense
    per matmul; ``flop-proportional``: if masked matmul time fell with their FLOPs (what hardware
    that skips zeros promises); ``2:4``: 2:4 forward and grad_input, dense grad_weight.
    """
    frac = profile_["fraction"]
    rest = 1.0 - profile_["masked_fraction"]

    def speedups(arm, s):
        out = {}
        for r in rows:
            if r["arm"] == arm and abs(r["sparsity"] - s) < 1e-12:
                out.update({(r["shape"], k): r[f"{k}_speedup"] for k in KERNELS})
        return out

    def amdahl(sp, floor=0.0):
        # a matmul with no measured speedup (not timed, or not available) keeps its dense time
        return 1 / (rest + sum(frac[s][k] / max(sp.get((s, k)) or 1.0, floor) for s in SHAPE_NAMES
                               for k in KERNELS))

    out = []
    for s in sparsities:
        sp = speedups("csr", s)
        out.append({
            "sparsity": s, "flop_reduction": flop_report(cfg, sparsity=s).reduction,
            "csr": amdahl(sp), "csr_where_faster": amdahl(sp, floor=1.0),
            "flop_proportional": 1 / (rest + profile_["masked_fraction"] * (1 - s)),
        })
    two_four = speedups(TWO_FOUR, 0.5)
    if any(v is not None for v in two_four.values()):
        out.append({"sparsity": 0.5, "arm": TWO_FOUR,
                    "flop_reduction": flop_report(cfg, sparsity=0.5).reduction,
                    TWO_FOUR: amdahl(two_four)})
    return out


def profile_with_estimates(s: BenchConfig, steps: int, device: str, rows: list[dict], cfg,
                           sparsities) -> dict:
    """The dense step's profile (:func:`step_profile`) with its Amdahl estimates from the kernel
    ``rows`` and the limit if the masked matmuls cost nothing."""
    prof = step_profile(s.preset, s.batch_size, s.block_size, device, s.dtype, steps=steps)
    prof["estimates"] = step_estimates(prof, rows, cfg, sparsities)
    prof["limit"] = 1 / (1 - prof["masked_fraction"]) if prof["masked_fraction"] < 1 else None
    return prof
