"""``minispdf bench --kernels``: when does a sparse format make the masked matmuls faster?

``minispdf bench`` shows that a masked training step costs what a dense one costs: the kit
stores pruned weights as zeros inside dense matrices, and dense kernels multiply the zeros. This
module times the alternatives for the four masked matrix shapes of a preset (q/k/v, attention
out, MLP up, MLP down), at the training batch (tokens = batch x block), for each sparsity:

- ``dense``: the dense weight (the baseline; sparsity plays no part);
- ``zeros``: the dense weight holding the zeros (what minispdf trains with);
- ``csr``: the kept weights in ``torch.sparse`` CSR format;
- ``2:4``: ``torch.sparse.to_sparse_semi_structured`` weights (exactly 50%, two of every four
  consecutive weights kept), on a CUDA GPU of compute capability 8.0 or newer only.

Each arm times the three matmuls a linear layer does per training step (W is out x in, X the
N x in activations, dY the N x out gradient of the output):

- ``forward``     Y = X W^T.   CSR and 2:4 compute Y^T = W X^T (sparse times dense), with the
                  activations held feature-major (in x N);
- ``grad_input``  dX = dY W.   CSR computes dX^T = W^T dY^T with the CSR transpose of W, whose
                  structure is fixed by the static mask; its values are gathered from W's on
                  every call (a trainer has new values every step), and that gather is timed;
- ``grad_weight`` dW = dY^T X, needed only at the mask's nonzeros. ``zeros`` computes it dense
                  and then multiplies by the mask (what minispdf's training does);
                  ``csr`` uses ``torch.sparse.sampled_addmm``, which computes only the kept
                  entries (an SDDMM); ``2:4`` has no such kernel in torch (not timed, counted
                  as dense in the step estimate).

Times are medians of interleaved repeats: every repeat runs each (arm, sparsity, matmul) once
(a few calls, for small matmuls), so drift in clock speed or background load hits all alike.
Outputs are written into preallocated buffers, so only the kernels are timed, not the CPU
allocator. Before timing, each sparse kernel's result is checked against the dense matmul with
the zeros.

The step estimate lives in :mod:`minispdf.bench.profile`, the text in :mod:`minispdf.bench.summary`.
"""

from __future__ import annotations

import math
import statistics
import time
import warnings

import torch

from ..settings import from_keywords
from ..errors import MiniSPDFError, one_line
from ..model import PRESETS, preset_config
from ..sparsity import random_mask
from ..devices import pick_device
from .bench_config import BenchConfig, KernelConfig, parse_sparsities
from .profile import profile_with_estimates
from .shapes import KERNELS, SHAPE_NAMES, TWO_FOUR, matrix_shapes
from .step import step_autocast, sync

# one timed sample runs a small kernel this long, so timer overhead does not count
MIN_SAMPLE_S = 0.01


def two_four_mask(shape, generator: torch.Generator) -> torch.Tensor:
    """Two of every four consecutive entries of each row kept, at random: the 2:4 pattern."""
    rows, cols = shape
    if cols % 4:
        raise MiniSPDFError(f"a 2:4 mask needs a column count divisible by 4, not {cols}")
    scores = torch.rand(rows, cols // 4, 4, generator=generator)
    top = scores.topk(2, dim=-1).indices
    return torch.zeros(rows, cols // 4, 4, dtype=torch.bool).scatter_(-1, top, True).view(rows,
                                                                                          cols)


def csr_transpose_plan(w_csr: torch.Tensor):
    """(crow, col, order) of the CSR of W^T, where W^T's values are ``w_csr.values()[order]``.

    The mask is static, so this structure is computed once; only the gather runs per step.
    """
    out_features, in_features = w_csr.shape
    crow, col = w_csr.crow_indices(), w_csr.col_indices()
    row = torch.repeat_interleave(torch.arange(out_features, device=col.device), crow.diff())
    order = torch.argsort(col * out_features + row)  # W's nonzeros in column-major order
    counts = torch.bincount(col, minlength=in_features)
    crow_t = torch.cat([counts.new_zeros(1), counts.cumsum(0)])
    return crow_t, row[order], order


class Operands:
    """The activations and output gradient of one shape at N tokens, in both layouts."""

    def __init__(self, shape, tokens: int, device: str, dtype, generator: torch.Generator):
        out_features, in_features = shape
        self.x = torch.randn(tokens, in_features, generator=generator).to(device, dtype)
        self.dy = torch.randn(tokens, out_features, generator=generator).to(device, dtype)
        self.xT = self.x.t().contiguous()
        self.dyT = self.dy.t().contiguous()


def kernels(arm: str, weight: torch.Tensor, mask: torch.Tensor | None, ops: Operands) -> dict:
    """{matmul name: a function computing it} for one arm; every function returns its result.

    ``weight`` is the dense weight (out x in); ``mask`` the kept entries (None for ``dense``).
    Outputs go to buffers allocated here (``out=``): a fresh CPU allocation's page faults cost
    more than a 99%-sparse matmul and depend on what ran before. ``grad_weight`` of ``2:4`` is
    None: torch has no 2:4 weight-gradient kernel.
    """
    x, dy, xT, dyT = ops.x, ops.dy, ops.xT, ops.dyT
    if arm in ("dense", "zeros"):
        w = weight if arm == "dense" else weight * mask
        y, dx, dw = (torch.empty_like(t) for t in (dy, x, weight))
        grad_weight = ((lambda: torch.mm(dyT, x, out=dw)) if arm == "dense"
                       # what masked training does
                       else (lambda: torch.mm(dyT, x, out=dw).mul_(mask)))
        return {"forward": lambda: torch.mm(x, w.t(), out=y),
                "grad_input": lambda: torch.mm(dy, w, out=dx),
                "grad_weight": grad_weight}
    w_zeros = weight * mask
    if arm == "csr":
        w_csr = w_zeros.to_sparse_csr()
        crow_t, col_t, order = csr_transpose_plan(w_csr)
        values_t = torch.empty_like(w_csr.values())
        w_t = torch.sparse_csr_tensor(crow_t, col_t, values_t, (weight.shape[1], weight.shape[0]),
                                      check_invariants=False)
        yT, dxT, dw = torch.empty_like(dyT), torch.empty_like(xT), w_csr.clone()

        def grad_input():
            # this step's values into W^T's layout
            torch.index_select(w_csr.values(), 0, order, out=values_t)
            return torch.mm(w_t, dyT, out=dxT)

        return {"forward": lambda: torch.mm(w_csr, xT, out=yT), "grad_input": grad_input,
                "grad_weight": lambda: torch.sparse.sampled_addmm(w_csr, dyT, x, beta=0.0, out=dw)}
    if arm == TWO_FOUR:
        # W and W^T each need their own 2:4 pattern along rows; ``mask`` is W's, W^T's is drawn
        # alike.
        # (CUDA's caching allocator makes fresh outputs cheap there, so no out= buffers.)
        w24 = torch.sparse.to_sparse_semi_structured(w_zeros)
        w24_t = torch.sparse.to_sparse_semi_structured(_two_four_transpose(weight))
        return {"forward": lambda: torch.mm(w24, xT), "grad_input": lambda: torch.mm(w24_t, dyT),
                "grad_weight": None}
    raise MiniSPDFError(f"unknown kernel arm {arm!r}: choose dense, zeros, csr or 2:4")


def _two_four_transpose(weight: torch.Tensor) -> torch.Tensor:
    """W^T with a 2:4 pattern of its own (a fixed draw, so kernels() and reference() agree)."""
    w_t = weight.t().contiguous()
    return w_t * two_four_mask(w_t.shape, torch.Generator().manual_seed(1)).to(weight.device)


def reference(arm: str, weight: torch.Tensor, mask: torch.Tensor, ops: Operands) -> dict:
    """What each of a sparse arm's matmuls must equal, in that arm's (feature-major) layout,
    computed with dense matmuls."""
    w_zeros = weight * mask
    if arm == TWO_FOUR:
        return {"forward": torch.mm(w_zeros, ops.xT),
                "grad_input": torch.mm(_two_four_transpose(weight), ops.dyT)}
    return {"forward": torch.mm(w_zeros, ops.xT), "grad_input": torch.mm(w_zeros.t(), ops.dyT),
            "grad_weight": torch.mm(ops.dyT, ops.x) * mask}


def relative_error(result: torch.Tensor, expected: torch.Tensor) -> float:
    if result.layout != torch.strided:
        result = result.to_dense()
    if result.dtype != expected.dtype or result.shape != expected.shape:
        result = result.to(expected.dtype).reshape(expected.shape)
    scale = expected.abs().max().clamp_min(1e-30)
    return float(((result.float() - expected.float()).abs().max() / scale.float()).item())


def _time_once(fn, inner: int, device: str) -> float:
    sync(device)
    t = time.perf_counter()
    for _ in range(inner):
        fn()
    sync(device)
    return (time.perf_counter() - t) / inner


def time_interleaved(tasks: dict, repeats: int, device: str) -> dict:
    """{key: median seconds per call}: every repeat calls every task (a few times when it is fast),
    in an order rotated from repeat to repeat."""
    inner = {}
    for key, fn in tasks.items():
        fn()  # warm-up
        once = _time_once(fn, 1, device)
        inner[key] = max(1, min(1000, math.ceil(MIN_SAMPLE_S / max(once, 1e-9))))
    keys = list(tasks)
    samples = {k: [] for k in keys}
    for r in range(repeats):
        for key in keys[r % len(keys):] + keys[:r % len(keys)]:
            samples[key].append(_time_once(tasks[key], inner[key], device))
    return {k: statistics.median(v) for k, v in samples.items()}


def two_four_support(device: str, dtype) -> str | None:
    """None if 2:4 kernels can run here, else the reason they are skipped."""
    if not device.startswith("cuda"):
        return (f"2:4 semi-structured kernels need a CUDA GPU of compute capability 8.0+ (this run "
                f"is on {device})")
    major, minor = torch.cuda.get_device_capability(device)
    if major < 8:
        return (f"2:4 semi-structured kernels need compute capability 8.0+ (this GPU is "
                f"{major}.{minor})")
    if dtype not in (torch.float16, torch.bfloat16):
        return "2:4 semi-structured kernels are timed in fp16/bf16 only: use --dtype bf16"
    return None


def _tolerance(dtype) -> float:
    return 1e-4 if dtype in (torch.float32, torch.float64) else 3e-2


def bench_shape(name: str, shape, tokens: int, sparsities, repeats: int, device: str, dtype,
                two_four: bool, seed: int = 0) -> tuple[list[dict], dict]:
    """Rows of {shape, arm, sparsity, <kernel>_ms, speedup, ...} for one matrix shape, and
    {arm: reason} for arms or kernels that could not run."""
    g = torch.Generator().manual_seed(seed)
    ops = Operands(shape, tokens, device, dtype, g)
    weight = (torch.randn(shape, generator=g) * 0.02).to(device, dtype)
    arms = [("dense", 0.0, None)]
    for s in sparsities:
        mask = random_mask(shape, s, g).to(device)
        arms += [("zeros", s, mask), ("csr", s, mask)]
    if two_four:
        arms.append((TWO_FOUR, 0.5, two_four_mask(shape, g).to(device)))

    tasks, skipped, errors = {}, {}, {}
    for arm, s, mask in arms:
        try:
            fns = kernels(arm, weight, mask, ops)
            expected = reference(arm, weight, mask, ops) if arm in ("csr", TWO_FOUR) else {}
        except (RuntimeError, NotImplementedError, ValueError, TypeError) as e:
            skipped[arm] = f"{arm} unavailable for {name} {shape[0]}x{shape[1]}: {one_line(e)}"
            continue
        for k, fn in fns.items():
            if fn is None:
                continue
            try:
                if k in expected:
                    err = errors[(arm, s, k)] = relative_error(fn(), expected[k])
                    if not err <= _tolerance(dtype):
                        skipped[f"{arm} {k}"] = (f"{arm} {k} gave a wrong result on {device} "
                                                 f"(relative error {err:.2g})")
                        continue
                else:
                    fn()
            except (RuntimeError, NotImplementedError, ValueError, TypeError) as e:
                skipped[f"{arm} {k}"] = f"{arm} {k} unavailable on {device}: {one_line(e)}"
                continue
            tasks[(arm, s, k)] = fn
    medians = time_interleaved(tasks, repeats, device)

    dense = {k: medians.get(("dense", 0.0, k)) for k in KERNELS}
    rows = []
    for arm, s, mask in arms:
        row = {"shape": name, "out": shape[0], "in": shape[1], "tokens": tokens, "arm": arm,
               "sparsity": s,
               "nnz": int(mask.sum()) if mask is not None else shape[0] * shape[1]}
        for k in KERNELS:
            t = medians.get((arm, s, k))
            row[f"{k}_ms"] = None if t is None else 1000 * t
            row[f"{k}_speedup"] = None if t is None or dense[k] is None else dense[k] / t
            row[f"{k}_rel_error"] = errors.get((arm, s, k))
        times = [medians.get((arm, s, k)) for k in KERNELS]
        row["total_ms"] = None if None in times else 1000 * sum(times)
        row["total_speedup"] = (None if None in times or None in dense.values()
                                else sum(dense.values()) / sum(times))
        rows.append(row)
    return rows, skipped


def break_even(rows: list[dict], shape: str, kernel: str = "total", arm: str = "csr") -> dict:
    """The lowest measured sparsity from which ``arm`` beats dense (and stays ahead at every higher
    sparsity measured), and a linear interpolation between the neighbouring measured sparsities."""
    pts = sorted((r["sparsity"], r[f"{kernel}_speedup"]) for r in rows
                 if r["shape"] == shape and r["arm"] == arm and r[f"{kernel}_speedup"] is not None)
    first = None
    for i, (s, sp) in enumerate(pts):
        if all(v > 1 for _, v in pts[i:]):
            first = i
            break
    if first is None:
        return {"first_faster": None, "estimate": None}
    s1, v1 = pts[first]
    if first == 0:
        # faster already at the lowest sparsity measured
        return {"first_faster": s1, "estimate": None}
    s0, v0 = pts[first - 1]
    estimate = s0 + (1 - v0) * (s1 - s0) / (v1 - v0)
    return {"first_faster": s1, "estimate": estimate}


def _time_shapes(cfg, tokens: int, sparsities, repeats: int, device: str,
                 torch_dtype) -> tuple[list, dict]:
    """Rows and skipped arms of every masked shape of ``cfg`` (2:4 only where it can run)."""
    reason = two_four_support(device, torch_dtype)
    skipped = {TWO_FOUR: reason} if reason else {}
    rows = []
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*Sparse CSR tensor support is in beta.*")
        warnings.filterwarnings("ignore", message=".*semi-structured.*prototype.*")
        for name, shape in matrix_shapes(cfg).items():
            shape_rows, shape_skipped = bench_shape(name, shape, tokens, sparsities, repeats,
                                                    device, torch_dtype,
                                                    two_four=reason is None)
            rows += shape_rows
            skipped.update({f"{name}: {k}": v for k, v in shape_skipped.items()})
    return rows, skipped


def _provenance(step: bool) -> dict:
    """What the result measured and what it derived."""
    return {
        "measured": "kernel times (median of interleaved repeats) and their speedups over dense"
                    + ("; the dense training step and each masked matmul's share of it "
                       "(torch.profiler)"
                       if step else ""),
        "derived": ("step speedups (Amdahl: the measured shares at the measured kernel "
                    "speedups, the rest "
                    "unchanged); FLOP reductions are counted (minispdf.flops), not timed") if step
        else
                   "FLOP reductions are counted (minispdf.flops), not timed",
    }


def kernel_bench(preset: str | None = None, *, settings: BenchConfig | None = None,
                 kernels: KernelConfig | None = None, **keywords) -> dict:
    """Time dense, zeros-in-dense, CSR (and on CUDA 2:4) matmuls for one preset's masked shapes;
    with ``step``, also profile a dense training step and derive its speedups (module docstring).

    The settings objects (what the CLI passes), or keywords named like their fields:
    ``kernel_bench("nano", sparsities=(0.5, 0.9), repeats=3)``.
    """
    s, k = from_keywords({**keywords, "preset": preset}, "bench", bench=(BenchConfig, settings),
                         kernels=(KernelConfig, kernels))
    sparsities = parse_sparsities(k.sparsities)
    cfg = preset_config(s.preset,
                        **({"block_size": s.block_size} if s.block_size is not None else {}))
    device = pick_device(s.device)
    # as the step runs
    torch_dtype = torch.bfloat16 if step_autocast(device, s.dtype)[0] else torch.float32
    saved_threads = torch.get_num_threads()
    if k.threads is not None:
        torch.set_num_threads(k.threads)
    try:
        tokens = s.batch_size * cfg.block_size
        rows, skipped = _time_shapes(cfg, tokens, sparsities, k.repeats, device, torch_dtype)
        return {
            "preset": s.preset, "batch_size": s.batch_size, "block_size": cfg.block_size,
            "tokens": tokens,
            "n_layer": cfg.n_layer, "sparsities": list(sparsities), "repeats": k.repeats,
            "device": torch.cuda.get_device_name(device) if device.startswith("cuda") else device,
            "threads": torch.get_num_threads(), "dtype": str(torch_dtype).replace("torch.", ""),
            "torch": torch.__version__,
            "shapes": {name: list(v) for name, v in matrix_shapes(cfg).items()},
            "rows": rows, "skipped": skipped,
            "break_even": {sh: {kn: break_even(rows, sh, kn) for kn in (*KERNELS, "total")}
                           for sh in SHAPE_NAMES},
            "step": profile_with_estimates(s, k.step_steps, device, rows, cfg, sparsities) if k.step
            else None,
            **_provenance(k.step),
        }
    finally:
        torch.set_num_threads(saved_threads)


def kernel_bench_presets(preset: str | None = None, **kwargs) -> dict:
    """``--preset all``: {"presets": {name: result}}; one preset: its result."""
    settings = kwargs.get("settings")
    name = preset or (settings.preset if settings else None)
    if name != "all":
        return kernel_bench(preset, **kwargs)
    if settings:
        from dataclasses import replace

        return {"presets": {p: kernel_bench(**{**kwargs, "settings": replace(settings, preset=p)})
                            for p in PRESETS}}
    return {"presets": {p: kernel_bench(p, **kwargs) for p in PRESETS}}
