"""minispdf.plots: every figure has a title, axis labels and (for several series) a legend; the
read-outs compute what they claim."""

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from minispdf import (GPT, densify, flop_report, plots, preset_config, sparsify,  # noqa: E402
                      sparsity_report)
from minispdf.bench import summary  # noqa: E402
from minispdf.masks import masked_block_matrices, regrowth  # noqa: E402
from minispdf.errors import MiniSPDFError  # noqa: E402


@pytest.fixture(autouse=True)
def _close():
    yield
    plt.close("all")


def _labelled(ax, legend=True):
    assert ax.get_title() and ax.get_xlabel() and ax.get_ylabel()
    if legend:
        assert ax.get_legend() is not None and ax.get_legend().get_texts()


def _history(n=10, offset=0.0):
    recs = []
    for i in range(1, n + 1):
        recs.append({"step": i, "loss": 3.0 - 0.1 * i + offset, "flops": 1e9 * i,
                     "tokens": 100 * i})
        if i % 5 == 0:
            recs.append({"step": i, "val_loss": 3.1 - 0.1 * i + offset, "flops": 1e9 * i,
                         "flops_dense": 2e9 * i})
    return {"history": recs}


def test_smooth_and_history():
    # bias-corrected: no drag to 0
    assert plots.smooth([2.0, 2.0, 2.0]) == pytest.approx([2.0, 2.0, 2.0])
    assert plots.smooth([1.0, 3.0], alpha=0.0) == [1.0, 3.0]
    with pytest.raises(MiniSPDFError):
        plots.smooth([1.0], alpha=1.0)
    xs, ys = plots.history(_history(), "val_loss", "flops")
    assert xs == [5e9, 1e10] and ys == pytest.approx([2.6, 2.1])
    assert plots.history(_history()["history"], "loss")[0] == list(range(1, 11))


@pytest.mark.parametrize("x", ["step", "flops"])
def test_plot_curves(x):
    ax = plots.plot_curves({"dense": _history(), "75% sparse": _history(offset=0.2)}, x=x,
                           logx=x == "flops")
    _labelled(ax)
    assert len(ax.get_lines()) == 4  # a train line and validation dots per run
    assert "FLOPs" in ax.get_xlabel() or "step" in ax.get_xlabel()
    shifted = plots.plot_curves({"a": _history()}, x="flops", offsets={"a": 5e9}, val=False)
    assert min(shifted.get_lines()[0].get_xdata()) == pytest.approx(6e9)


def test_show_mask_crops_and_reports_the_whole_mask():
    mask = torch.zeros(100, 80, dtype=torch.bool)
    mask[:, :20] = True  # 25% kept
    ax = plots.show_mask(mask, title="m", crop=64)
    assert ax.images[0].get_array().shape == (64, 64)
    assert "25% kept of 100x80" in ax.get_title()
    assert ax.get_xlabel() and ax.get_ylabel()
    with pytest.raises(MiniSPDFError):
        plots.show_mask(torch.ones(3, dtype=torch.bool))
    fig = plots.show_masks({"a": mask, "b": ~mask}, title="two")
    assert len(fig.axes) == 2 and [t.get_text() for t in fig.texts] == ["two"]  # the suptitle


def test_layer_sparsity_plot_and_short_names():
    torch.manual_seed(0)
    m1, m2 = GPT(preset_config("nano")), GPT(preset_config("nano"))
    sparsify(m1, 0.75)
    sparsify(m2, 0.75, distribution="erk")
    ax = plots.plot_layer_sparsity({"uniform": sparsity_report(m1), "erk": sparsity_report(m2)})
    _labelled(ax)
    assert len(ax.patches) == 2 * 8  # 2 layers x 4 matrices, two reports
    assert plots.short_name("transformer.h.3.attn.c_attn.weight") == "h3.attn.c_attn"
    assert "overall 75%" in ax.get_legend().get_texts()[0].get_text()


def test_regrowth_counts_moved_pruned_weights():
    torch.manual_seed(0)
    model = GPT(preset_config("nano"))
    masks = {k: v.clone() for k, v in sparsify(model, 0.5).items()}
    densify(model)
    stats = regrowth(masks, model)
    # nothing trained yet: still zero
    assert all(r["nonzero_fraction"] == 0.0 for r in stats["layers"])
    name = next(iter(masks))
    with torch.no_grad():
        dict(model.named_parameters())[name][~masks[name]] = 0.01
    stats = regrowth(masks, model)
    row = next(r for r in stats["layers"] if r["name"] == name)
    assert row["nonzero_fraction"] == 1.0 and row["pruned_mean_abs"] == pytest.approx(0.01)
    assert row["pruned"] == int((~masks[name]).sum())
    assert stats["pruned_abs"].numel() == sum(int((~m).sum()) for m in masks.values())
    _labelled(plots.plot_regrowth(stats))
    with pytest.raises(MiniSPDFError):
        regrowth({"nope.weight": masks[name]}, model)


def test_flop_breakdown_and_lines():
    reports = {"GPT-3 XL": flop_report("gpt3-xl", 0.75), "tiny": flop_report("tiny", 0.75)}
    ax = plots.plot_flop_breakdown(reports)
    _labelled(ax)
    texts = [t.get_text() for t in ax.texts]
    assert any(t.startswith("2.49x") for t in texts)
    # the dense bars stack to exactly 1 (fractions of the model's own dense total)
    dense_heights = {}
    for p in ax.patches:
        x = round(p.get_x() + p.get_width() / 2, 3)
        dense_heights[x] = dense_heights.get(x, 0) + p.get_height()
    assert dense_heights[0.0] == pytest.approx(1.0)
    ax = plots.plot_lines([0, 0.5], {"a": [1, 2], "b": [1, 3]}, xlabel="s", ylabel="r", title="t")
    _labelled(ax)


def _bench(sparsity, ratio):
    return dict(preset="nano", sparsity=sparsity, dense_step_ms=10.0, sparse_step_ms=10.0 * ratio,
                sparse_over_dense=ratio, theoretical_flop_reduction=2.0, device="cpu (2 threads)")


def test_plot_bench_shows_measured_and_theoretical():
    ax = summary.plot_bench([_bench(0.5, 1.01), _bench(0.75, 0.99)])
    _labelled(ax)
    heights = sorted(round(p.get_height(), 3) for p in ax.patches)
    assert 5.0 in heights  # the zero-skipping bar: dense time / reduction
    assert "1.01x" in [t.get_text() for t in ax.texts]
    with pytest.raises(MiniSPDFError):
        summary.plot_bench([])


def test_plot_kernel_speedups_draws_the_measured_speedups():
    rows = [dict(shape=s, arm="dense", sparsity=0.0,
                 **{f"{k}_speedup": 1.0 for k in summary.KERNEL_PANELS})
            for s in ("qkv", "mlp_up")]
    rows += [dict(shape=s, arm=arm, sparsity=sp,
                  **{f"{k}_speedup": sp * 4 for k in summary.KERNEL_PANELS})
             for s in ("qkv", "mlp_up") for arm in ("zeros", "csr") for sp in (0.5, 0.9)]
    rows.append(dict(shape="qkv", arm="2:4", sparsity=0.5, forward_speedup=1.4,
                     grad_input_speedup=1.3,
                     grad_weight_speedup=None, total_speedup=1.2))
    r = dict(rows=rows, preset="nano", tokens=8, device="cpu", threads=1)
    axes = summary.plot_kernel_speedups(r)
    assert len(axes) == 4 and axes[0].get_legend() is not None and axes[0].get_ylabel()
    for ax in axes:
        assert ax.get_title() and ax.get_xlabel() == "sparsity" and ax.get_yscale() == "log"
    csr = [ln for ln in axes[0].lines if ln.get_label() == "qkv CSR"][0]
    assert list(csr.get_xdata()) == [0.5, 0.9] and list(csr.get_ydata()) == [2.0, 3.6]
    assert [ln.get_ydata()[0] for ln in axes[0].lines if ln.get_label() == "qkv 2:4"] == [1.4]
    # no 2:4 weight-gradient kernel
    assert not [ln for ln in axes[2].lines if ln.get_label() == "qkv 2:4"]
    with pytest.raises(MiniSPDFError):
        summary.plot_kernel_speedups(dict(rows=[]))


def test_bars_tables_and_samples():
    ax = plots.plot_bars({"dense": 1.0, "SPDF": 1.2}, ylabel="loss", title="t", reference=1.0,
                         reference_label="dense",
                         xlabel="arm")
    _labelled(ax)
    assert (ax.get_xlabel() == "arm"
            and [t.get_text() for t in ax.get_xticklabels()] == ["dense", "SPDF"])
    table = plots.format_table([{"arm": "dense", "loss": 1.23456, "n": 3},
                                {"arm": "SPDF", "loss": None, "n": 4}],
                               {"arm": "arm", "loss": "test loss"})
    lines = table.splitlines()
    assert (lines[0].split() == ["arm", "test", "loss"] and "1.235" in lines[2]
            and lines[3].endswith("-"))
    assert plots.format_table([]) == "(no rows)"
    text = plots.format_samples(["in1", "in2", "in3"], {"a": ["x1", "x2", "x3"]},
                                [["r1"], ["r2"], ["r3"]], n=2)
    assert "input: in1" in text and "reference: r2" in text and "in3" not in text


def _texts(ax):
    return [t.get_text() for t in ax.texts]


def test_draw_block_highlights_the_four_masked_matrices():
    assert masked_block_matrices() == ["attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj"]
    ax = plots.draw_block()
    _labelled(ax)
    texts = _texts(ax)
    masked = [t for t in texts if t.endswith("[masked]")]
    assert len(masked) == 4
    for name in ("attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj"):
        assert sum(name in t for t in masked) == 1, name
    dense = [t for t in texts if t.endswith("[dense]")]
    for part in ("LM head", "embedding", "ln_1", "ln_2", "final LayerNorm"):
        assert any(part in t for t in dense), part
    assert "biases" in ax.get_xlabel()
    hatched = [p for p in ax.patches if p.get_hatch()]
    assert len(hatched) == 4  # only the masked matrices are drawn hatched


def test_draw_schedules_shows_the_three_recipes_on_one_axis():
    ax = plots.draw_schedules(sparsity=0.75, vspdf_sparsity=0.9, dense_phase=0.15, finetune=0.25)
    _labelled(ax)
    assert [t.get_text() for t in ax.get_yticklabels()] == ["Variable SPDF", "SPSF", "SPDF"]
    texts = [t.replace("\n", " ") for t in _texts(ax)]
    assert (texts.count("sparse pre-training (75%)") == 2
            and texts.count("sparse pre-training (90%)") == 1)
    assert texts.count("dense fine-tuning") == 2 and texts.count("sparse fine-tuning") == 1
    assert texts.count("dense pre-training") == 1
    bars = {row: [b.get_paths()[0].get_extents().x1 for b in ax.collections if
                  abs(b.get_paths()[0].get_extents().y0 - (row - 0.35)) < 1e-9] for row in range(3)}
    # Variable SPDF: its dense phase lengthens it
    assert max(bars[0]) == pytest.approx(1.0 + 0.15 + 0.25)
    assert max(bars[2]) == pytest.approx(1.25)


# ---- legible at 100% zoom: no font below 9 pt as shown, nothing clipped (canvas.legibility)

def _figures():
    """The figures the lessons show, drawn by the library (the lessons lay out their own panels
    at most 10 in wide: test_notebooks checks their executed references' widths)."""
    g = torch.Generator().manual_seed(0)
    model = GPT(preset_config("tiny"))
    masks = sparsify(model, 0.75, seed=0)
    runs = {"dense": _history(), "75% sparse": _history(offset=0.2)}
    yield "curves", plots.plot_curves(runs, x="flops").figure
    corners = {f"layer {i} q/k/v": torch.rand(64, 64, generator=g) > 0.75 for i in range(4)}
    yield "masks", plots.show_masks(corners, title="75% masks (black = kept), top-left 64x64")
    yield "layers", plots.plot_layer_sparsity({"uniform": sparsity_report(model)}, title="t").figure
    densify(model)
    yield "regrowth", plots.plot_regrowth(regrowth(masks, model)).figure
    reports = {"GPT-2 small": flop_report("gpt2", 0.75, seq_len=2048),
               "GPT-3 XL": flop_report("gpt3-xl", 0.75, seq_len=2048),
               "tiny (bytes)": flop_report("tiny", 0.75)}
    yield "flops", plots.plot_flop_breakdown(reports).figure
    yield "block", plots.draw_block().figure
    schedules = plots.draw_schedules(sparsity=0.75, vspdf_sparsity=0.9, dense_phase=0.15)
    yield "schedules", schedules.figure
    scores = {"dense": 1.0, "SPDF": 1.2, "SPSF": 1.5, "scratch": 2.2}
    yield "bars", plots.plot_bars(scores, ylabel="test loss", title="t", reference=1.0,
                                  reference_label="dense", xlabel="arm").figure
    yield "bench", summary.plot_bench([_bench(0.5, 1.01), _bench(0.75, 0.99)]).figure
    speedups = {f"{k}_speedup": 2.0 for k in summary.KERNEL_PANELS}
    rows = [dict(shape=s, arm=arm, sparsity=sp, **speedups)
            for s in ("qkv", "mlp_up") for arm in ("zeros", "csr") for sp in (0.5, 0.9)]
    kernels = dict(rows=rows, preset="nano", tokens=4096, device="AMD EPYC 7B13 64-Core Processor",
                   threads=1)
    yield "kernels", summary.plot_kernel_speedups(kernels)[0].figure


@pytest.mark.parametrize("name", [n for n, _ in _figures()])
def test_lesson_figures_are_legible_at_100_percent(name):
    from minispdf.canvas import legibility

    fig = dict(_figures())[name]
    assert legibility(fig) == [], name  # shown inline at 100 dpi, cropped to the drawing


@pytest.mark.parametrize("folder", ["default", "quick", "methods", "frontier"])
def test_study_figures_are_legible_and_unclipped(folder, monkeypatch):
    """The figures ``minispdf reproduce`` saves (110 dpi, uncropped) for each committed study."""
    import json
    from pathlib import Path

    from minispdf.canvas import legibility
    from minispdf.study import frontier
    from minispdf.study import report as study_report

    figs = {}  # path -> the figure _save would write there (nothing is written)
    monkeypatch.setattr(study_report, "_save", lambda ax, path: figs.__setitem__(path, ax.figure))
    study = Path(__file__).resolve().parents[1] / "results" / folder
    results = json.loads((study / "results.json").read_text())
    study_report.plot_pretraining(results, "pretrain.png")
    study_report._save(study_report.plot_gaps(results).axes[0], "gaps.png")
    study_report.plot_claims(results, "claims.png")
    study_report._save(study_report.plot_lost_vs_flops(results).axes[0], "lost.png")
    if results.get("frontier"):
        frontier.plot(results, results["frontier"], "frontier.png")  # its _save is report's
    assert len(figs) == 4 + bool(results.get("frontier"))
    for path, fig in figs.items():
        fig.tight_layout()  # as _save does before it writes
        assert legibility(fig, dpi=110, saved=True) == [], (folder, path)


def test_legibility_finds_small_fonts_wide_figures_and_clipped_labels():
    from minispdf.canvas import legibility

    fig, ax = plt.subplots(figsize=(6, 4))
    ax.set_title("fine")
    assert legibility(fig) == []
    ax.legend(handles=ax.plot([0, 1], label="tiny legend"), fontsize=7)
    assert any("'tiny legend': 7.0 pt" in p for p in legibility(fig))
    wide, _ = plt.subplots(figsize=(15, 4))
    found = legibility(wide)  # 10-pt tick labels, shrunk with the figure to fit the column
    assert "shrunk to" in found[0] and any(p.endswith("pt as shown") for p in found[1:])
    clipped, ax = plt.subplots(figsize=(4, 3))
    ax.set_ylabel("a label far too long to fit on the left of a figure this small " * 2)
    ax.text(1.5, 0.5, "outside", transform=ax.transAxes)
    assert any("clipped" in p for p in legibility(clipped, saved=True))
    assert not any("clipped" in p for p in legibility(clipped))  # inline: cropped to the drawing
