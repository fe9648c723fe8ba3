"""What the bench reports: the text summaries of ``minispdf bench`` (with and without
``--kernels``) and the two bench figures the lessons draw."""

from __future__ import annotations

from typing import Sequence

from ..canvas import axes, pyplot
from ..errors import MiniSPDFError, counted
from .shapes import KERNELS, TWO_FOUR

# ------------------------------------------------------------------------------ text


def format_bench(r: dict) -> str:
    lines = [
        f"bench {r['preset']} ({r['params']:,} params), batch {r['batch_size']} x "
        f"{r['block_size']}, "
        f"{r['device']}, {r['dtype']}{', compiled' if r['compile'] else ''}",
        f"  dense step        {r['dense_step_ms']:8.2f} ms   {r['tokens_per_s']:,.0f} tokens/s",
        f"  {r['sparsity']:.0%} masked step  {r['sparse_step_ms']:8.2f} ms   "
        f"({r['sparse_over_dense']:.3f}x dense)",
        (f"  theoretical FLOP reduction at {r['sparsity']:.0%}: "
         f"{r['theoretical_flop_reduction']:.2f}x"),
    ]
    if r["mfu"] is not None:
        lines.append(f"  MFU {r['mfu']:.1%} dense, {r['sparse_mfu']:.1%} masked "
                     f"(peak {r['peak_flops'] / 1e9:,.0f} GFLOP/s, {r['peak_source']})")
    else:
        lines.append("  MFU: not reported (unknown peak for this device; pass --peak_tflops)")
    if r["peak_memory_mb"]:
        m = r["peak_memory_mb"]
        lines.append(f"  peak memory ({r['memory_kind']}): dense {m['dense']:.0f} MB, masked "
                     f"{m['sparse']:.0f} MB; "
                     f"masks {r['mask_bytes'] / 2**20:.2f} MB")
    s = r["state_bytes"]
    lines.append(f"  training state (weights, masks, gradients, AdamW): dense "
                 f"{s['dense']['total'] / 2**20:.2f} MB, "
                 f"masked {s['sparse']['total'] / 2**20:.2f} MB ({r['state_ratio']:.3f}x)")
    lines.append("  " + r["note"])
    return "\n".join(lines)


def _x(v) -> str:
    return "   n/a " if v is None else f"{v:6.2f}x"


def _pct(s) -> str:
    return f"{s:.0%}" if round(100 * s, 6) == round(100 * s) else f"{100 * s:.1f}%"


def format_break_even(be: dict) -> str:
    if be["first_faster"] is None:
        return "never faster in the sparsities measured"
    if be["estimate"] is None:
        return f"faster from the lowest sparsity measured ({_pct(be['first_faster'])})"
    return f"faster from {_pct(be['first_faster'])} (about {_pct(be['estimate'])} interpolated)"


def format_kernel_bench(r: dict) -> str:
    if "presets" in r:
        return "\n\n".join(format_kernel_bench(v) for v in r["presets"].values())
    lines = _kernel_header(r)
    for shape, (o, i) in r["shapes"].items():
        lines += _kernel_shape_lines(r, shape, f"{o} x {i}")
    for reason in dict.fromkeys(r["skipped"].values()):
        lines.append(f"skipped: {reason}")
    if r.get("step"):
        lines += _kernel_step_lines(r)
    return "\n".join(lines)


def _kernel_header(r: dict) -> list[str]:
    """What was measured, how, and the column heads of the speedup table."""
    return [
        f"kernel bench {r['preset']}: the 4 masked matrix shapes at {r['tokens']} tokens "
        f"(batch {r['batch_size']} x {r['block_size']}), {r['device']} "
        f"({counted(r['threads'], 'thread')}), {r['dtype']}, "
        f"torch {r['torch']}, median of {r['repeats']} interleaved repeats",
        "measured: speedup over the dense matmul (>1 = faster); dense in ms",
        f"{'shape':<9} {'out x in':>11} {'matmul':<12} {'dense ms':>9} {'arm':<6}"
        + "".join(f"{_pct(s):>8}" for s in r["sparsities"]),
    ]


def _kernel_shape_lines(r: dict, shape: str, dims: str) -> list[str]:
    """One shape's rows: each matmul's speedups per sparsity (zeros in dense, CSR), its 2:4 speedups
    where measured, and where CSR breaks even."""
    sp, lines = r["sparsities"], []
    dense = next(x for x in r["rows"] if x["shape"] == shape and x["arm"] == "dense")
    for n, k in enumerate((*KERNELS, "total")):
        label = k.replace("_", " ") if k != "total" else "all three"
        dense_ms = "n/a" if dense[f"{k}_ms"] is None else f"{dense[f'{k}_ms']:.3f}"
        for arm in ("zeros", "csr"):
            by_s = {x["sparsity"]: x[f"{k}_speedup"] for x in r["rows"]
                    if x["shape"] == shape and x["arm"] == arm}
            head = (f"{shape if n == 0 and arm == 'zeros' else '':<9} "
                    f"{dims if n == 0 and arm == 'zeros' else '':>11} "
                    f"{label if arm == 'zeros' else '':<12} "
                    f"{dense_ms if arm == 'zeros' else '':>9}")
            lines.append(f"{head} {arm:<6}" + "".join(f"{_x(by_s.get(s)):>8}" for s in sp))
    two = next((x for x in r["rows"] if x["shape"] == shape and x["arm"] == TWO_FOUR), None)
    if two:
        lines.append(f"{'':<9} {'':>11} 2:4 (50%): forward "
                     f"{_x(two['forward_speedup'])}, grad input "
                     f"{_x(two['grad_input_speedup'])} (grad weight: no 2:4 kernel, "
                     f"stays dense)")
    lines.append(f"{'':<9} break-even, CSR all three: "
                 f"{format_break_even(r['break_even'][shape]['total'])}")
    return lines


def _kernel_step_lines(r: dict) -> list[str]:
    """The measured training step, the share of it the masked matmuls take, and what the kernels
    would make of it (derived)."""
    p = r["step"]
    lines = [
        "",
        f"training step ({r['preset']}, dense, {p['tokens']} tokens): {p['step_ms']:.1f} ms, "
        f"of which the masked "
        f"matmuls take {p['masked_fraction']:.0%} ({p['masked_matmul_ms']:.1f} ms) -- "
        f"measured, {p['timer']}"
        + ("" if p["attribution_complete"]
           else " (some masked matmuls were not matched by shape)"),
        "what the kernels above would do to it -- derived (Amdahl: masked matmuls at their "
        "measured speedups, "
        "the rest unchanged):",
        (f"{'sparsity':>9} {'FLOPs (counted)':>16} {'step, CSR':>10} {'CSR where faster':>17} "
         f"{'FLOP-proportional':>18}"),
    ]
    for e in p["estimates"]:
        if e.get("arm") == TWO_FOUR:
            lines.append(f"{'2:4 50%':>9} {e['flop_reduction']:>15.2f}x {e[TWO_FOUR]:>9.2f}x  "
                         f"(2:4 forward and "
                         "grad input, dense grad weight)")
        else:
            lines.append(f"{_pct(e['sparsity']):>9} {e['flop_reduction']:>15.2f}x "
                         f"{e['csr']:>9.2f}x "
                         f"{e['csr_where_faster']:>16.2f}x {e['flop_proportional']:>17.2f}x")
    if p["limit"]:
        lines.append(f"limit if the masked matmuls cost nothing: {p['limit']:.2f}x (derived)")
    return lines


# ------------------------------------------------------------------------------ figures


def plot_bench(results: Sequence[dict], ax=None, title: str | None = None):
    """Measured step time of dense vs masked training (``minispdf.bench.bench`` results), next
    to the time a zero-skipping device would need (dense time / theoretical FLOP reduction)."""
    ax = axes(ax)
    if not results:
        raise MiniSPDFError("plot_bench needs at least one bench result")
    w = 0.27
    for i, r in enumerate(results):
        ideal = r["dense_step_ms"] / r["theoretical_flop_reduction"]
        ax.bar(i - w, r["dense_step_ms"], w, color="C0",
               label="dense (measured)" if i == 0 else None)
        ax.bar(i, r["sparse_step_ms"], w, color="C3", label="masked (measured)" if i == 0 else None)
        ax.bar(i + w, ideal, w, color="none", edgecolor="C2", hatch="//",
               label="if zeros were skipped (theory)" if i == 0 else None)
        ax.text(i, r["sparse_step_ms"], f"{r['sparse_over_dense']:.2f}x", ha="center", va="bottom",
                fontsize=9)
    ax.set_xticks(range(len(results)))
    ax.set_xticklabels([f"{r['preset']}, {r['sparsity']:.0%}" for r in results])
    ax.set_xlabel("model, sparsity of the masked arm")
    ax.set_ylabel("median training step (ms)")
    r0 = results[0]
    ax.set_title(title or f"Training step time on {r0['device']}, dense vs masked")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=9)
    return ax


KERNEL_PANELS = {"forward": "forward: Y = X W^T", "grad_input": "backward: dX = dY W",
                 "grad_weight": "backward: dW = dY^T X (kept entries)", "total": "all three"}


def plot_kernel_speedups(result: dict, axes=None, title: str | None = None):
    """Measured speedup over the dense matmul against sparsity, one panel per matmul
    (``minispdf.bench.kernel_bench`` result): CSR solid, zeros-in-dense dotted, 2:4 a star."""
    rows = result.get("rows") or []
    if not rows:
        raise MiniSPDFError("plot_kernel_speedups needs a kernel_bench result with rows")
    if axes is None:
        # two panels a row: four side by side make a figure too wide to read at 100% zoom
        _, grid = pyplot().subplots(2, 2, figsize=(9.5, 7.4), sharey=True)
        axes = list(grid.flat)
    shapes = list(dict.fromkeys(r["shape"] for r in rows))
    for ax, (kernel, label) in zip(axes, KERNEL_PANELS.items()):
        ax.axhline(1.0, color="k", lw=0.8)
        for i, shape in enumerate(shapes):
            for arm, style in (("csr", "-o"), ("zeros", ":")):
                pts = sorted((r["sparsity"], r[f"{kernel}_speedup"]) for r in rows
                             if r["shape"] == shape and r["arm"] == arm
                             and r[f"{kernel}_speedup"] is not None)
                if pts:
                    ax.plot(*zip(*pts), style, color=f"C{i}", ms=3, lw=1.5 if arm == "csr" else 1,
                            label=f"{shape} CSR" if arm == "csr"
                            else ("zeros in dense (dotted)" if i == 0 else None))
            two = [r for r in rows
                   if r["shape"] == shape and r["arm"] == TWO_FOUR and r[f"{kernel}_speedup"]]
            for r in two:
                ax.plot([0.5], [r[f"{kernel}_speedup"]], "*", color=f"C{i}", ms=10,
                        label=f"{shape} 2:4")
        ax.set_yscale("log")
        ax.set_title(label, fontsize=9)
        ax.set_xlabel("sparsity")
        ax.grid(alpha=0.3, which="both")
    for ax in axes:  # the left column's panels name the shared y axis
        spec = ax.get_subplotspec()
        if spec is None or spec.is_first_col():
            ax.set_ylabel("speedup over dense (measured; >1 = faster)")
    axes[0].legend(fontsize=9)
    fig = axes[0].figure
    threads = counted(result['threads'], 'thread')
    fig.suptitle(title or f"{result['preset']}'s masked matmuls at {result['tokens']} tokens on "
                 f"{result['device']} ({threads}):\nwhen do sparse kernels pay?", fontsize=10)
    fig.tight_layout()
    return axes
