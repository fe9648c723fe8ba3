"""``minispdf bench --kernels``: the timed sparse kernels compute the right thing, the report has
the promised structure, speedups are dense time over the arm's time, and the step estimate is
Amdahl's law over the measured shares."""

import json

import pytest
import torch

from minispdf.bench import kernels as K, profile, shapes, summary
from minispdf.cli import main
from minispdf.errors import MiniSPDFError
from minispdf.model import preset_config
from minispdf.sparsity import random_mask

pytestmark = pytest.mark.filterwarnings("ignore:Sparse CSR tensor support is in beta")


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def _setup(shape=(24, 16), tokens=10, sparsity=0.75, seed=0):
    g = torch.Generator().manual_seed(seed)
    ops = K.Operands(shape, tokens, "cpu", torch.float32, g)
    weight = torch.randn(shape, generator=g)
    mask = random_mask(shape, sparsity, g)
    return ops, weight, mask


@pytest.mark.parametrize("shape", [(24, 16), (16, 64), (12, 12)])
@pytest.mark.parametrize("sparsity", [0.5, 0.9, 0.99])
def test_csr_kernels_equal_the_dense_matmul(shape, sparsity):
    ops, weight, mask = _setup(shape, sparsity=sparsity)
    w = weight * mask
    csr = K.kernels("csr", weight, mask, ops)
    zeros = K.kernels("zeros", weight, mask, ops)
    y, dx, dw = csr["forward"](), csr["grad_input"](), csr["grad_weight"]()
    # forward and grad_input come back feature-major (transposed); the weight gradient as CSR
    torch.testing.assert_close(y.t(), ops.x @ w.t())
    torch.testing.assert_close(dx.t(), ops.dy @ w)
    assert dw.layout == torch.sparse_csr
    torch.testing.assert_close(dw.to_dense(), (ops.dy.t() @ ops.x) * mask)
    # the zeros-in-dense arm computes the same (masked training's gradient, masked)
    torch.testing.assert_close(zeros["forward"](), ops.x @ w.t())
    torch.testing.assert_close(zeros["grad_input"](), ops.dy @ w)
    torch.testing.assert_close(zeros["grad_weight"](), dw.to_dense())
    assert (zeros["grad_weight"]()[~mask] == 0).all()
    # the CSR really is sparse: exactly the kept entries are stored
    assert dw.values().numel() == int(mask.sum()) == round((1 - sparsity) * mask.numel())


def test_csr_transpose_follows_new_weight_values():
    """A trainer changes W's values every step: grad_input must use the current ones."""
    ops, weight, mask = _setup()
    csr = K.kernels("csr", weight, mask, ops)
    w_csr = (weight * mask).to_sparse_csr()
    crow, col, order = K.csr_transpose_plan(w_csr)
    expected = (weight * mask).t().to_sparse_csr()
    assert torch.equal(crow, expected.crow_indices()) and torch.equal(col, expected.col_indices())
    assert torch.equal(w_csr.values()[order], expected.values())
    first = csr["grad_input"]().clone()
    second = csr["grad_input"]()
    torch.testing.assert_close(first, second)


def test_masks():
    g = torch.Generator().manual_seed(0)
    m = random_mask((40, 10), 0.9, g)
    assert int(m.sum()) == 40
    m24 = K.two_four_mask((8, 16), g)
    assert (m24.view(8, 4, 4).sum(-1) == 2).all()
    with pytest.raises(MiniSPDFError):
        K.two_four_mask((8, 6), g)


def test_kernel_bench_structure_and_speedups():
    r = K.kernel_bench("nano", sparsities=(0.5, 0.99), batch_size=1, block_size=8, repeats=2,
                       device="cpu",
                       step=True, step_steps=1)
    d = 64
    assert r["shapes"] == {"qkv": [3 * d, d], "attn_out": [d, d], "mlp_up": [4 * d, d],
                           "mlp_down": [d, 4 * d]}
    assert r["tokens"] == 8 and r["sparsities"] == [0.5, 0.99]
    arms = {(x["shape"], x["arm"], x["sparsity"]) for x in r["rows"]}
    for shape in r["shapes"]:
        assert {(shape, "dense", 0.0), (shape, "zeros", 0.5), (shape, "csr", 0.99)} <= arms
    assert len(r["rows"]) == 4 * (1 + 2 * 2)  # no 2:4 rows on a CPU ...
    assert "CUDA" in r["skipped"]["2:4"]  # ... and the reason says why
    for row in r["rows"]:
        dense = next(x for x in r["rows"] if x["shape"] == row["shape"] and x["arm"] == "dense")
        for k in (*shapes.KERNELS, "total"):
            assert row[f"{k}_ms"] > 0
            assert row[f"{k}_speedup"] == pytest.approx(dense[f"{k}_ms"] / row[f"{k}_ms"])
        assert row["total_ms"] == pytest.approx(sum(row[f"{k}_ms"] for k in shapes.KERNELS))
        if row["arm"] == "csr":
            assert row["nnz"] == round((1 - row["sparsity"]) * row["out"] * row["in"])
            # checked before timing
            assert all(row[f"{k}_rel_error"] < 1e-4 for k in shapes.KERNELS)
    assert (set(r["break_even"]) == set(r["shapes"])
            and set(r["break_even"]["qkv"]) == {*shapes.KERNELS, "total"})
    p = r["step"]
    assert p["attribution_complete"] and 0 < p["masked_fraction"] < 1
    assert (p["masked_fraction"]
            == pytest.approx(sum(sum(v.values()) for v in p["fraction"].values())))
    assert [e["sparsity"] for e in p["estimates"]] == [0.5, 0.99]
    for e in p["estimates"]:
        assert e["csr_where_faster"] >= max(1.0, e["csr"]) - 1e-12
        assert 1 < e["flop_proportional"] <= p["limit"]
    assert "measured" in r and "derived" in r
    text = summary.format_kernel_bench(r)
    assert ("break-even" in text and "measured" in text and "derived" in text
            and "skipped: 2:4" in text)


def test_a_wrong_sparse_kernel_is_reported_not_timed(monkeypatch):
    real = torch.sparse.sampled_addmm
    monkeypatch.setattr(torch.sparse, "sampled_addmm", lambda *a, **kw: real(*a, **kw).mul_(2))
    rows, skipped = K.bench_shape("qkv", (24, 16), 8, (0.5,), 1, "cpu", torch.float32,
                                  two_four=False)
    csr = next(x for x in rows if x["arm"] == "csr")
    assert csr["grad_weight_ms"] is None and csr["total_speedup"] is None and csr["forward_ms"] > 0
    assert "wrong result" in skipped["csr grad_weight"]


def test_two_four_arm_plumbing(monkeypatch):
    """The CUDA-only 2:4 arm, run on a CPU with a stand-in that keeps the weight dense: rows, the
    missing weight-gradient kernel and the step estimate come out as documented."""
    monkeypatch.setattr(torch.sparse, "to_sparse_semi_structured", lambda w: w.clone(),
                        raising=False)
    rows, skipped = K.bench_shape("qkv", (24, 16), 8, (0.5,), 1, "cpu", torch.float32,
                                  two_four=True)
    two = next(x for x in rows if x["arm"] == shapes.TWO_FOUR)
    assert two["sparsity"] == 0.5 and two["nnz"] == 24 * 16 // 2
    assert two["forward_ms"] > 0 and two["grad_input_ms"] > 0 and two["grad_weight_ms"] is None
    assert two["forward_rel_error"] < 1e-5 and not skipped
    frac = {s: {k: 0.0 for k in shapes.KERNELS} for s in shapes.SHAPE_NAMES}
    frac["qkv"]["forward"] = 0.5
    est = profile.step_estimates({"fraction": frac, "masked_fraction": 0.5}, rows,
                                 preset_config("nano"), (0.5,))
    assert est[-1]["arm"] == shapes.TWO_FOUR
    assert est[-1][shapes.TWO_FOUR] == pytest.approx(1 / (0.5 + 0.5 / two["forward_speedup"]))


def test_step_estimate_is_amdahl():
    frac = {s: {k: 0.0 for k in shapes.KERNELS} for s in shapes.SHAPE_NAMES}
    frac["qkv"]["forward"], frac["mlp_up"]["grad_weight"] = 0.3, 0.2
    rows = [{"shape": "qkv", "arm": "csr", "sparsity": 0.9, "forward_speedup": 3.0,
             "grad_input_speedup": 0.5,
             "grad_weight_speedup": 2.0},
            {"shape": "mlp_up", "arm": "csr", "sparsity": 0.9, "forward_speedup": 1.0,
             "grad_input_speedup": 1.0,
             "grad_weight_speedup": 0.5}]
    (e,) = profile.step_estimates({"fraction": frac, "masked_fraction": 0.5}, rows,
                                  preset_config("nano"), (0.9,))
    assert e["csr"] == pytest.approx(1 / (0.5 + 0.3 / 3 + 0.2 / 0.5))
    assert e["csr_where_faster"] == pytest.approx(1 / (0.5 + 0.3 / 3 + 0.2))
    assert e["flop_proportional"] == pytest.approx(1 / (0.5 + 0.5 * 0.1))
    assert e["flop_reduction"] > 1


def test_break_even():
    def rows(points):
        return [{"shape": "qkv", "arm": "csr", "sparsity": s, "total_speedup": v}
                for s, v in points]

    be = K.break_even(rows([(0.5, 0.5), (0.75, 0.8), (0.9, 1.2), (0.99, 5.0)]), "qkv")
    assert be["first_faster"] == 0.9 and be["estimate"] == pytest.approx(0.75 + 0.2 / 0.4 * 0.15)
    assert K.break_even(rows([(0.5, 0.5), (0.9, 0.9)]), "qkv") == {"first_faster": None,
                                                                   "estimate": None}
    assert K.break_even(rows([(0.5, 1.5), (0.9, 3.0)]), "qkv") == {"first_faster": 0.5,
                                                                   "estimate": None}
    # a dip back below 1 at a higher sparsity moves the break-even past it
    assert K.break_even(rows([(0.5, 1.1), (0.75, 0.9), (0.9, 2.0)]), "qkv")["first_faster"] == 0.9


def test_classify_profiled_matmuls():
    weights = {(192, 64): "qkv", (64, 64): "attn_out", (256, 64): "mlp_up", (64, 256): "mlp_down"}
    N = 40
    assert profile.classify_matmul("aten::addmm", [[192], [N, 64], [64, 192], [], []], weights,
                                   N) == ("qkv", "forward")
    assert profile.classify_matmul("aten::mm", [[N, 256], [256, 64]], weights, N) == ("mlp_up",
                                                                                      "grad_input")
    assert profile.classify_matmul("aten::mm", [[64, N], [N, 256]], weights, N) == ("mlp_down",
                                                                                    "grad_weight")
    # the LM head
    assert profile.classify_matmul("aten::mm", [[N, 64], [64, 257]], weights, N) is None
    assert profile.classify_matmul("aten::addmm", [[192], [N + 1, 64], [64, 192]], weights,
                                   N) is None


def test_cli_json_and_text(capsys):
    args = ["bench", "--kernels", "--preset", "nano", "--batch_size", "1", "--block_size", "8",
            "--sparsities", "0.5,0.99", "--repeats", "1", "--no-step", "--threads", "1"]
    code, out, err = run(capsys, *args, "--json")
    assert code == 0, err
    d = json.loads(out)
    assert (d["threads"] == 1 and d["step"] is None
            and {x["arm"] for x in d["rows"]} == {"dense", "zeros", "csr"})
    code, out, err = run(capsys, *args)
    assert code == 0, err
    assert "break-even, CSR all three" in out and "mlp_down" in out


def test_preset_all(capsys, monkeypatch):
    monkeypatch.setattr(K, "PRESETS", {"nano": {}, "tiny": {}})
    r = K.kernel_bench_presets("all", sparsities=(0.9,), batch_size=1, block_size=4, repeats=1,
                               device="cpu",
                               step=False)
    assert list(r["presets"]) == ["nano", "tiny"]
    assert r["presets"]["tiny"]["shapes"]["qkv"] == [384, 128]
    assert "kernel bench tiny" in summary.format_kernel_bench(r)


@pytest.mark.parametrize("argv, needle", [
    (["--sparsities", "1.5"], "--sparsities: 1.5 is outside (0, 1)"),
    (["--sparsities", "0.5,x"], "'x' is not a number"),
    (["--sparsities", ","], "--sparsities is empty"),
    (["--repeats", "0"], "repeats=0 must be a positive integer"),
    (["--threads", "0"], "threads=0 must be a positive integer"),
    (["--preset", "gpt5"], "unknown preset"),
    (["--dtype", "fp8"], "--dtype 'fp8'"),
    (["--steps", "3"], "unknown setting --steps"),
    (["--device", "cuda"], "no CUDA GPU"),
    (["--kernels=maybe"], "--kernels expects true or false"),
])
def test_bad_input_is_one_line(capsys, argv, needle):
    if argv == ["--device", "cuda"] and torch.cuda.is_available():
        pytest.skip("a GPU is present")
    code, out, err = run(capsys, "bench", "--kernels", *argv)
    assert code == 2 and out == ""
    assert err.startswith("error: ") and err.count("\n") == 1 and needle in err
