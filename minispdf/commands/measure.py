"""``flops`` and ``bench``: what a run costs, counted and timed."""

from __future__ import annotations

from ..bench.bench_config import BenchConfig, KernelConfig
from ..config import build
from ..flops import FlopsConfig
from ..schedules import SparsityConfig
from ..spdf import ModelConfig
from . import emit

# the architecture flops may change
ARCH = ("n_layer", "n_head", "n_embd", "block_size", "vocab_size")


def flops(args):
    from ..flops import flop_report, flop_table
    from ..model import preset_config

    s = build(FlopsConfig, args)
    if s.table:
        rows = flop_table(seq_len=s.seq_len, count_embedding=s.count_embedding)
        text = "\n".join(f"{r['preset']:<8} T={r['seq_len']:<5} sparsity {r['sparsity']:>4.0%}: "
                         f"{r['train_dense']:.3e} dense, {r['train_sparse']:.3e} sparse FLOPs/seq, "
                         f"{r['reduction']:.2f}x" for r in rows)
        emit(args.json, {"rows": rows}, text)
        return
    # the overrides (vocab_size too) are read below
    preset = build(ModelConfig, args, arch={}).preset or "tiny"
    overrides = {k: getattr(args, k) for k in ARCH if getattr(args, k) is not None}
    masks = build(SparsityConfig, args)
    config = preset_config(preset, **overrides)
    report = flop_report(config, sparsity=masks.sparsity, seq_len=s.seq_len,
                         count_embedding=s.count_embedding)
    d, text = report.to_dict(), report.format()
    d["preset"] = preset
    if s.max_steps:
        d["run"], line = _run_flops(masks, config, s)
        text += "\n" + line
    emit(args.json, d, text)


def _run_flops(masks: SparsityConfig, config, s: FlopsConfig) -> tuple[dict, str]:
    """A whole pre-training run's FLOPs under the mask schedule (GMP's dense start, RigL's dense
    gradients, a dense tail), summed step by step."""
    from ..flops import pretraining_flops

    schedule = masks.make_schedule(s.max_steps) if masks.sparsity > 0 else None
    run = pretraining_flops(schedule, config, s.batch_size, s.seq_len, max_steps=s.max_steps)
    return run, (f"pre-training {s.max_steps} steps x {s.batch_size} sequences "
                 f"({masks.schedule_words() or 'static'}): "
                 f"{run['flops']:.4g} FLOPs, dense {run['flops_dense']:.4g}, "
                 f"{run['ratio']:.2f}x fewer")


def bench(args):
    from ..bench import bench, format_bench, format_kernel_bench, kernel_bench_presets

    # a setting of the other mode was refused when parsing (``applies``)
    s = build(BenchConfig, args)
    if s.kernels:
        result = kernel_bench_presets(settings=s, kernels=build(KernelConfig, args))
        emit(args.json, result, format_kernel_bench(result))
        return
    result = bench(settings=s)
    emit(args.json, result, format_bench(result))
