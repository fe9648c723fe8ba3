"""Tests for minispdf.sparsity: exact masks, methods, distributions, the zeros-stay-zero
invariant."""

import os

os.environ["HF_HUB_OFFLINE"] = "1"

import re

import pytest
import torch
import torch.nn.utils.prune as prune

from conftest import RandomBatches
from minispdf.errors import MiniSPDFError
from minispdf.model import GPT, preset_config
from minispdf.sparsity import (
    DEFAULT_INCLUDE,
    check_mask_options,
    densify,
    erk_densities,
    format_sparsity_report,
    masked_parameters,
    register_masks,
    sparsify,
    sparsity_report,
    target_parameters,
)
from minispdf.train import TrainConfig, finish_step, make_optimizer, train

BLOCK_MATRICES = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight",
                  "mlp.c_proj.weight")


def make(name="nano", seed=0, **overrides):
    torch.manual_seed(seed)
    return GPT(preset_config(name, **overrides))


def params(model):
    return dict(model.named_parameters())


# ---------------------------------------------------------------- exact counts


@pytest.mark.parametrize("method", ["random", "magnitude"])
@pytest.mark.parametrize("s", [0.5, 0.75, 0.9])
def test_exact_zero_count_per_tensor(method, s):
    model = make()
    masks = sparsify(model, s, method=method, seed=3)
    assert len(masks) == 4 * model.config.n_layer
    p = params(model)
    for name, mask in masks.items():
        n_zero = round(s * mask.numel())
        assert mask.dtype == torch.bool and mask.shape == p[name].shape
        assert int((~mask).sum()) == n_zero, name
        assert int((p[name] == 0).sum()) == n_zero, name
        assert torch.all(p[name][~mask] == 0)
        assert torch.all(p[name][mask] != 0)


def test_random_masks_deterministic_per_seed_and_differ_across_seeds():
    a = sparsify(make(seed=0), 0.75, seed=11)
    b = sparsify(make(seed=99), 0.75, seed=11)  # different weights, same seed: same random mask
    c = sparsify(make(seed=0), 0.75, seed=12)
    for name in a:
        assert torch.equal(a[name], b[name])
        assert not torch.equal(a[name], c[name])
    # and not the same mask in every tensor of equal shape
    names = [n for n in a if n.endswith("attn.c_proj.weight")]
    assert not torch.equal(a[names[0]], a[names[1]])


def test_random_masks_are_the_same_on_every_rank(monkeypatch):
    # each data-parallel rank draws its own masks before any broadcast: they must agree by
    # construction
    drawn = []
    for rank in ("0", "1", "3"):
        for key, value in {"RANK": rank, "LOCAL_RANK": rank, "WORLD_SIZE": "4"}.items():
            monkeypatch.setenv(key, value)
        # a random mask ignores the weights
        drawn.append(sparsify(make(seed=int(rank)), 0.75, seed=11))
    for masks in drawn[1:]:
        assert masks.keys() == drawn[0].keys()
        for name in masks:
            assert torch.equal(masks[name], drawn[0][name]), name


def test_random_mask_does_not_consume_global_rng():
    torch.manual_seed(5)
    model = make()
    torch.manual_seed(5)
    before = torch.rand(3)
    torch.manual_seed(5)
    sparsify(model, 0.5, seed=0)
    assert torch.equal(torch.rand(3), before)


@pytest.mark.parametrize("s", [0.5, 0.9])
def test_magnitude_keeps_exactly_the_largest(s):
    model = make(seed=4)
    original = {n: p.detach().clone() for n, p in model.named_parameters()}
    masks = sparsify(model, s, method="magnitude")
    for name, mask in masks.items():
        w = original[name]
        n_keep = mask.numel() - round(s * mask.numel())
        # oracle 1: top-k of |w|
        top = torch.zeros(w.numel(), dtype=torch.bool)
        top[w.abs().flatten().topk(n_keep).indices] = True
        assert torch.equal(mask, top.view_as(w)), name
        # oracle 2: torch's own L1 unstructured pruning on a copy
        lin = torch.nn.Linear(w.shape[1], w.shape[0], bias=False)
        with torch.no_grad():
            lin.weight.copy_(w)
        prune.l1_unstructured(lin, "weight", amount=round(s * w.numel()))
        assert torch.equal(mask, lin.weight_mask.bool()), name
        # every kept |w| is at least every pruned |w|
        assert w[mask].abs().min() >= w[~mask].abs().max()


def test_global_magnitude_total_exact_and_layers_differ():
    model = make(seed=6)
    original = {n: p.detach().clone() for n, p in model.named_parameters()}
    s = 0.75
    masks = sparsify(model, s, method="magnitude", scope="global")
    total = sum(m.numel() for m in masks.values())
    kept = sum(int(m.sum()) for m in masks.values())
    assert kept == round((1 - s) * total)
    per_layer = {n: 1 - m.float().mean().item() for n, m in masks.items()}
    assert len({round(v, 6) for v in per_layer.values()}) > 1
    # the residual projections are initialised smaller, so a global threshold prunes them more
    for i in range(model.config.n_layer):
        assert (per_layer[f"transformer.h.{i}.attn.c_proj.weight"]
                > per_layer[f"transformer.h.{i}.attn.c_attn.weight"])
    # one global threshold: every kept |w| >= every pruned |w| across tensors
    kept_min = min(original[n][m].abs().min().item() for n, m in masks.items())
    pruned_max = max(original[n][~m].abs().max().item() for n, m in masks.items())
    assert kept_min >= pruned_max


@pytest.mark.parametrize("s", [0.2, 0.5, 0.9])
def test_erk_total_density_and_smaller_tensors_denser(s):
    model = make()
    masks = sparsify(model, s, distribution="erk", seed=0)
    total = sum(m.numel() for m in masks.values())
    kept = sum(int(m.sum()) for m in masks.values())
    assert abs(kept - (1 - s) * total) <= 0.5 * len(masks) + 1e-9
    dens = {n: m.float().mean().item() for n, m in masks.items()}
    assert max(dens.values()) <= 1.0
    # ERK: density ~ (n_in + n_out) / (n_in * n_out): a higher score never gets a lower density
    p = params(model)
    score = {n: sum(p[n].shape) / p[n].numel() for n in masks}
    for a in masks:
        for b in masks:
            if score[a] > score[b]:
                assert dens[a] >= dens[b], (a, b)
    # the smallest matrix (attn.c_proj, d x d) is strictly denser than the largest (mlp)
    assert dens["transformer.h.0.attn.c_proj.weight"] > dens["transformer.h.0.mlp.c_fc.weight"]
    assert len({round(v, 4) for v in dens.values()}) > 1


def test_erk_clamps_overfull_tensors_to_dense():
    model = make()
    masks = sparsify(model, 0.2, distribution="erk")
    # at 20% sparsity the d x d attention projection would exceed density 1: it is made dense
    assert torch.all(masks["transformer.h.0.attn.c_proj.weight"])
    shapes = [torch.Size([10, 10]), torch.Size([1000, 1000])]
    d = erk_densities(shapes, 0.5)
    assert d[0] == 1.0
    assert d[1] * 1_000_000 + 100 == pytest.approx(0.5 * 1_000_100)


# ---------------------------------------------------------------- targets


def test_default_targets_are_exactly_the_block_matrices():
    model = make("tiny")
    L = model.config.n_layer
    names = [n for n, _ in target_parameters(model)]
    expected = [f"transformer.h.{i}.{m}" for i in range(L) for m in BLOCK_MATRICES]
    assert sorted(names) == sorted(expected)
    assert len(names) == 4 * L
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    sparsify(model, 0.9)
    for n, p in model.named_parameters():
        if n in expected:
            assert int((p == 0).sum()) == round(0.9 * p.numel())
        else:  # embeddings, lm_head (tied), LayerNorms, biases untouched
            assert torch.equal(p, before[n]), n
    masked = {n for n, _, _ in masked_parameters(model)}
    assert masked == set(expected)
    assert re.search(DEFAULT_INCLUDE, "transformer.h.0.attn.c_attn.bias") is None


def test_include_regex_can_sparsify_token_embedding():
    model = make()
    masks = sparsify(model, 0.5, include=r"^transformer\.wte\.weight$")
    assert list(masks) == ["transformer.wte.weight"]
    wte = model.transformer.wte.weight
    assert int((wte == 0).sum()) == round(0.5 * wte.numel())
    assert int((model.lm_head.weight == 0).sum()) == round(0.5 * wte.numel())  # tied: same tensor
    for n in BLOCK_MATRICES:
        assert int((params(model)[f"transformer.h.0.{n}"] == 0).sum()) == 0


def test_include_matching_nothing_raises():
    with pytest.raises(MiniSPDFError, match="include"):
        sparsify(make(), 0.5, include=r"no_such_param")


@pytest.mark.parametrize("bad", [1.0, 1.5, -0.1, "0.5", True, None, float("nan")])
def test_sparsity_outside_range_raises(bad):
    with pytest.raises(MiniSPDFError,
                       match=r"is outside \[0, 1\): give the fraction of weights held at zero"):
        sparsify(make(), bad)


@pytest.mark.parametrize("kwargs,needle", [
    (dict(method="topk"), "unknown mask method 'topk': choose one of random, magnitude"),
    (dict(distribution="normal"), "unknown distribution 'normal': choose one of uniform, erk"),
    (dict(scope="layer"), "unknown scope 'layer': choose 'tensor' or 'global'"),
    (dict(scope="global", method="random"), "scope='global' works only with method='magnitude'"),
    (dict(scope="global", method="magnitude", distribution="erk"),
     "scope='global' works only with method='magnitude' and the default distribution"),
])
def test_bad_method_distribution_scope_raise(kwargs, needle):
    with pytest.raises(MiniSPDFError, match="^" + re.escape(needle)):
        sparsify(make(), 0.5, **kwargs)


def test_check_mask_options_defaults_and_include():
    check_mask_options("random")  # the defaults (uniform, per tensor) are valid
    check_mask_options("magnitude", scope="global")
    with pytest.raises(MiniSPDFError, match="is not a valid regular expression"):
        check_mask_options("random", include="(")  # the CLI checks --include before any work


def test_register_masks_refuses_masks_that_do_not_fit():
    masks = sparsify(make(), 0.5, seed=0)
    name = "transformer.h.0.attn.c_attn.weight"
    with pytest.raises(MiniSPDFError, match="does not fit this model"):
        register_masks(make(), {name: masks[name].T})  # a wrong shape
    with pytest.raises(MiniSPDFError, match="does not fit this model"):
        register_masks(make(), {"transformer.h.7.attn.c_attn.weight": masks[name]})  # no such layer
    model = make()
    register_masks(model, {name: masks[name].to(torch.uint8)})  # 0/1 bytes become a bool mask
    [(n, _, m)] = masked_parameters(model)
    assert n == name and m.dtype == torch.bool and torch.equal(m, masks[name])


def test_any_module_even_with_other_buffers_and_a_single_kept_weight():
    # BatchNorm holds running statistics (buffers) before the mask, and its weight is top-level (no
    # module prefix in its name); pruning 15 of 16 keeps exactly one weight, the largest
    bn = torch.nn.BatchNorm1d(16)
    with torch.no_grad():
        bn.weight.copy_(torch.arange(1.0, 17.0))
    masks = sparsify(bn, 15 / 16, method="magnitude", include=r"^weight$")
    assert [n for n, _, _ in masked_parameters(bn)] == ["weight"] == list(masks)
    assert masks["weight"].nonzero().flatten().tolist() == [15]
    assert bn.weight.detach().nonzero().flatten().tolist() == [15]


def test_sparsity_zero_keeps_everything():
    model = make()
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    masks = sparsify(model, 0.0)
    assert all(torch.all(m) for m in masks.values())
    for n, p in model.named_parameters():
        assert torch.equal(p, before[n])


def test_resparsify_replaces_masks():
    model = make()
    sparsify(model, 0.5, seed=0)
    masks = sparsify(model, 0.75, seed=1)
    assert len(masked_parameters(model)) == len(masks)
    for name, _, mask in masked_parameters(model):
        assert mask is masks[name]
        assert int((~mask).sum()) == round(0.75 * mask.numel())


# ---------------------------------------------------------------- zeros stay zero


def _pruned(model):
    return [(n, p, ~m) for n, p, m in masked_parameters(model)]


def test_zeros_stay_zero_through_train_with_adamw():
    model = make()
    sparsify(model, 0.75, seed=0)
    cfg = TrainConfig(max_steps=10, batch_size=4, lr=1e-2, warmup_steps=2, weight_decay=0.1,
                      grad_clip=1.0,
                      eval_interval=0, eval_iters=1, device="cpu", progress=False)
    before = {n: p.detach().clone() for n, p, _ in masked_parameters(model)}
    train(model, RandomBatches(257, 32, 4), cfg)
    for n, p, pruned in _pruned(model):
        assert torch.all(p[pruned] == 0), n
        assert not torch.equal(p[~pruned], before[n][~pruned])  # the kept weights did train


def _raw_gradients(model):
    """Record each masked weight's gradient as backward() computes it, before the mask's hook."""
    raw = {}
    for n, p, _ in masked_parameters(model):
        p.register_hook(lambda g, n=n: raw.__setitem__(n, g.clone()))
    return raw


def test_weights_and_adam_moments_zero_after_every_step_of_the_kit_loop():
    model = make()
    sparsify(model, 0.75, seed=0)
    cfg = TrainConfig(lr=1e-2, weight_decay=0.1, grad_clip=1.0, device="cpu", progress=False)
    opt = make_optimizer(model, cfg)
    masked = masked_parameters(model)
    raw = _raw_gradients(model)
    batches = RandomBatches(257, 32, 4)
    gen = torch.Generator().manual_seed(0)
    model.train()
    for step in range(10):
        x, y, _ = batches.get_batch("train", gen, "cpu")
        _, loss = model(x, y)
        loss.backward()
        for n, p, m in masked:  # backward gives pruned slots gradient; the hook clears it in .grad
            assert torch.count_nonzero(raw[n][~m]) > 0 and torch.all(p.grad[~m] == 0), (step, n)
            assert torch.equal(p.grad[m], raw[n][m]), (step, n)
        finish_step(model, opt, cfg.grad_clip)
        for n, p, m in masked:
            assert torch.all(p[~m] == 0), (step, n)
            st = opt.state[p]
            assert torch.all(st["exp_avg"][~m] == 0), (step, n)
            assert torch.all(st["exp_avg_sq"][~m] == 0), (step, n)
            assert torch.count_nonzero(st["exp_avg_sq"][m]) > 0
    # weights written from outside, and optimizer state from a dense run, are re-zeroed by the next
    # step
    dense = make()
    dense_opt = make_optimizer(dense, cfg)
    dense(x, y)[1].backward()
    finish_step(dense, dense_opt, cfg.grad_clip)
    opt.load_state_dict(dense_opt.state_dict())
    n, p, m = masked[0]
    assert torch.all(opt.state[p]["exp_avg"] != 0)
    with torch.no_grad():
        p.fill_(1.0)
    model(x, y)[1].backward()
    finish_step(model, opt, cfg.grad_clip)
    for n, p, m in masked:
        for key in ("exp_avg", "exp_avg_sq"):
            assert (torch.all(opt.state[p][key][~m] == 0)
                    and torch.all(opt.state[p][key][m] != 0)), (n, key)
        assert torch.all(p[~m] == 0) and torch.count_nonzero(p[m]) > 0.99 * int(m.sum()), n


def _poison(model, bad, where):
    """A tensor hook (it runs before the mask's hook) that writes ``bad`` into the gradient that
    backward() computes: in every pruned slot, one pruned slot of the last tensor, or one kept
    slot."""
    masked = masked_parameters(model)
    for i, (_, p, m) in enumerate(masked):
        if where == "all-pruned":
            slots = (~m).view(-1).nonzero().flatten()
        elif i == len(masked) - 1:
            slots = (~m if where == "one-pruned" else m).view(-1).nonzero()[0]
        else:
            continue

        def hook(g, slots=slots):
            g = g.clone()
            g.view(-1)[slots] = bad
            return g

        p.register_hook(hook)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
@pytest.mark.parametrize("where", ["all-pruned", "one-pruned"])
def test_non_finite_pruned_gradient_does_not_leak(bad, where):
    # a float multiply would keep nan/inf * 0 = nan: the hook must clear them as a select does
    model = make()
    sparsify(model, 0.5, seed=0)
    raw = _raw_gradients(model)  # registered first, so it sees the gradient before the poison
    _poison(model, bad, where)
    x, y, _ = RandomBatches(257, 32, 4).get_batch("train", torch.Generator().manual_seed(0))
    model(x, y)[1].backward()
    for n, p, m in masked_parameters(model):
        assert torch.all(p.grad[~m] == 0), n
        assert torch.isfinite(p.grad).all(), n
        assert torch.equal(p.grad[m], raw[n][m]), n
        # bit for bit
        assert torch.equal(p.grad.view(torch.int32),
                           torch.where(m, raw[n], 0.0).view(torch.int32)), n


def test_a_kept_nan_stays_visible():
    # a NaN in a *kept* slot is the model's own problem: it stays in the gradient (as with
    # torch.where)
    model = make()
    sparsify(model, 0.75, seed=0)
    _poison(model, float("nan"), "one-kept")
    x, y, _ = RandomBatches(257, 32, 4).get_batch("train", torch.Generator().manual_seed(0))
    model(x, y)[1].backward()
    grads = [p.grad for _, p, _ in masked_parameters(model)]
    assert [int(torch.isnan(g).sum()) for g in grads] == [0] * (len(grads) - 1) + [1]


def test_register_masks_clears_nan_in_pruned_weights():
    masks = sparsify(make(), 0.5, seed=0)
    model = make()
    for n, p in model.named_parameters():
        if n in masks:
            with torch.no_grad():
                p[~masks[n]] = float("nan")
    register_masks(model, masks)
    for n, p, m in masked_parameters(model):
        assert torch.all(p[~m] == 0), n


def test_densify_removes_masks_keeps_zeros_then_dense_step_fills_them():
    model = make()
    masks = sparsify(model, 0.75, seed=0)
    assert masked_parameters(model)
    densify(model)
    assert not masked_parameters(model)
    assert masked_parameters(model) == []
    assert not any(k.endswith("_mask") for k in model.state_dict())
    p = params(model)
    for n, m in masks.items():
        assert torch.all(p[n][~m] == 0)
    cfg = TrainConfig(lr=1e-3, device="cpu", progress=False)
    opt = make_optimizer(model, cfg)
    x, y, _ = RandomBatches(257, 32, 4).get_batch("train", torch.Generator().manual_seed(0))
    _, loss = model(x, y)
    loss.backward()
    finish_step(model, opt, 1.0)
    for n, m in masks.items():
        assert torch.count_nonzero(p[n][~m]) > 0.5 * int((~m).sum()), n


def test_sparsity_report_numbers():
    model = make()
    sparsify(model, 0.75, seed=0)
    rep = sparsity_report(model)
    assert len(rep["layers"]) == 4 * model.config.n_layer
    for row in rep["layers"]:
        assert row["zeros"] == row["masked"] == round(0.75 * row["numel"])
        assert row["sparsity"] == pytest.approx(0.75, abs=1 / row["numel"])
    d = model.config.n_embd
    t = rep["total"]
    assert t["numel"] == model.config.n_layer * 12 * d * d
    assert t["zeros"] == t["masked"] == sum(r["zeros"] for r in rep["layers"])
    assert t["sparsity"] == pytest.approx(0.75, abs=1e-4)
    assert t["params"] == model.num_params()
    dense = sparsity_report(make())
    assert dense["total"]["zeros"] == 0 and dense["total"]["masked"] == 0
    d = model.config.n_embd
    proj = sparsity_report(model, include=r"attn\.c_proj\.weight$")["layers"]
    assert ([(r["name"], r["shape"]) for r in proj]
            == [(f"transformer.h.{i}.attn.c_proj.weight", [d, d]) for i in (0, 1)])


def test_format_sparsity_report_lists_every_tensor_and_the_total():
    model = make()
    sparsify(model, 0.75, seed=0)
    lines = format_sparsity_report(sparsity_report(model)).split("\n")
    assert lines[0].split() == ["tensor", "shape", "sparsity"]
    assert [line.split() for line in lines[1:5]] == [
        ["transformer.h.0.attn.c_attn.weight", "192x64", "75.0%"],
        ["transformer.h.0.attn.c_proj.weight", "64x64", "75.0%"],
        ["transformer.h.0.mlp.c_fc.weight", "256x64", "75.0%"],
        ["transformer.h.0.mlp.c_proj.weight", "64x256", "75.0%"]]
    assert len(lines) == 1 + 8 + 1
    assert lines[-1].split() == ["all", "sparsified", "tensors", "98,304", "75.0%"]


def test_masks_saved_in_state_dict_as_bool_without_weight_copy(tmp_path):
    model = make()
    masks = sparsify(model, 0.75, seed=0)
    sd = model.state_dict()
    mask_keys = sorted(k for k in sd if k.endswith("_mask"))
    assert mask_keys == sorted(n + "_mask" for n in masks)
    for k in mask_keys:
        assert sd[k].dtype == torch.bool
        assert sd[k].element_size() == 1
        assert torch.equal(sd[k], masks[k[: -len("_mask")]])
    assert not any("orig" in k for k in sd)
    dense_keys = set(make().state_dict())
    assert set(sd) - dense_keys == set(mask_keys)
    # round trip through torch.save keeps them bool
    torch.save(sd, tmp_path / "sd.pt")
    back = torch.load(tmp_path / "sd.pt", weights_only=True)
    assert all(back[k].dtype == torch.bool for k in mask_keys)


def test_model_displays_and_reports_before_and_after_densify():
    from minispdf.model import GPT, preset_config
    from minispdf.sparsity import densify, sparsify, sparsity_report

    model = GPT(preset_config("nano"))
    sparsify(model, 0.5)
    assert "sparsity=0.50" in repr(model)
    densify(model)
    text = repr(model)  # used to raise AttributeError: no attribute 'weight_mask'
    assert "MaskedLinear" in text and "sparsity=" not in text
    report = sparsity_report(model)
    assert report["total"]["masked"] == 0 and abs(report["total"]["sparsity"] - 0.5) < 0.01
    assert not [k for k in model.state_dict() if k.endswith("_mask")]
    sparsify(model, 0.75)  # a densified model can be masked again
    assert "sparsity=0.75" in repr(model)
