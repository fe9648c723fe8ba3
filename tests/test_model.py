"""Tests for minispdf.model: sizes, tying, init, causality, loss masking, generation, errors."""

import os

os.environ["HF_HUB_OFFLINE"] = "1"

import math
import sys

import pytest
import torch
import torch.nn.functional as F

from minispdf.errors import MiniSPDFError
from minispdf.model import GPT, PRESETS, GPTConfig, MaskedLinear, preset_config


def hand_count(cfg: GPTConfig) -> int:
    """GPT-2 parameter count written out term by term (tied head counted once, biases on)."""
    d, V, T, L = cfg.n_embd, cfg.vocab_size, cfg.block_size, cfg.n_layer
    block = (
        2 * d  # ln_1 weight + bias
        + d * 3 * d + 3 * d  # c_attn
        + d * d + d  # attn c_proj
        + 2 * d  # ln_2
        + d * 4 * d + 4 * d  # c_fc
        + 4 * d * d + d  # mlp c_proj
    )
    return V * d + T * d + L * block + 2 * d  # wte (= lm_head), wpe, blocks, ln_f


def make(name="nano", seed=0, **overrides):
    torch.manual_seed(seed)
    return GPT(preset_config(name, **overrides))


# ---------------------------------------------------------------- sizes


def test_tiny_param_count():
    assert make("tiny").num_params() == 834432


def test_num_params_matches_hand_count_on_small_preset():
    model = make("small")
    cfg = model.config
    assert model.num_params() == hand_count(cfg)
    non_emb = hand_count(cfg) - cfg.vocab_size * cfg.n_embd - cfg.block_size * cfg.n_embd
    assert model.num_params(non_embedding=True) == non_emb


def test_gpt2_preset_config_has_gpt2_size_without_instantiating():
    cfg = preset_config("gpt2")
    assert (cfg.n_layer, cfg.n_head, cfg.n_embd, cfg.block_size, cfg.vocab_size) == (12, 12, 768,
                                                                                     1024, 50257)
    assert hand_count(cfg) == 124_439_808  # OpenAI GPT-2 small, tied head counted once
    xl = preset_config("gpt3-xl")
    assert 1.30e9 < hand_count(xl) < 1.33e9


def test_presets_build_through_gptconfig():
    for name, spec in PRESETS.items():
        cfg = preset_config(name)
        assert isinstance(cfg, GPTConfig)
        for k, v in spec.items():
            assert getattr(cfg, k) == v
    assert preset_config("nano", block_size=32).block_size == 32


def test_unknown_preset_raises():
    with pytest.raises(MiniSPDFError, match="unknown preset"):
        preset_config("gpt5")


@pytest.mark.parametrize("bad", [
    dict(n_layer=0), dict(n_head=-1), dict(n_embd=1.5), dict(block_size=True),
    dict(vocab_size="257"),
    dict(n_embd=64, n_head=3), dict(dropout=1.0), dict(dropout=-0.1),
])
def test_gptconfig_bad_values_raise(bad):
    with pytest.raises(MiniSPDFError):
        GPTConfig(**bad)


def test_gptconfig_dict_round_trip_ignores_unknown_keys():
    cfg = preset_config("nano", dropout=0.1)
    assert GPTConfig.from_dict({**cfg.to_dict(), "junk": 1}) == cfg


# ---------------------------------------------------------------- structure and init


def test_head_is_tied_to_token_embedding():
    model = make("nano")
    assert model.lm_head.weight is model.transformer.wte.weight
    names = [n for n, _ in model.named_parameters()]
    assert "lm_head.weight" not in names  # counted once


def test_block_matrices_are_masked_linears_without_masks():
    model = make("nano")
    masked = [n for n, m in model.named_modules() if isinstance(m, MaskedLinear)]
    assert len(masked) == 4 * model.config.n_layer
    assert all(m.weight_mask is None for m in model.modules() if isinstance(m, MaskedLinear))


def test_print_shows_each_masked_layers_sparsity_before_and_after_densify():
    import re

    from minispdf.sparsity import densify, sparsify, sparsity_report

    model = make("nano")
    masks = sparsify(model, 0.75, distribution="erk", seed=0)  # ERK: the layers differ
    assert "sparsity=0.62" in str(model)  # print(model) folds equal blocks: look at each block
    for i, block in enumerate(model.transformer.h):
        shown = [float(s) for s in re.findall(r"MaskedLinear\(.*sparsity=([0-9.]+)\)", str(block))]
        expected = [1 - m.float().mean().item() for n, m in masks.items()
                    if n.startswith(f"transformer.h.{i}.")]
        # each layer, in order
        assert shown == [round(s, 2) for s in expected] and len(set(shown)) > 1
    densify(model)
    text = str(model)  # used to raise AttributeError: no attribute 'weight_mask'
    assert ("MaskedLinear(in_features=64, out_features=192, bias=True)" in text
            and "sparsity=" not in text)
    # the report of a densified model: nothing masked, the zeros measured from the weights
    rows = {r["name"]: r for r in sparsity_report(model)["layers"]}
    for name, mask in masks.items():
        assert rows[name]["masked"] == 0 and rows[name]["zeros"] == int((~mask).sum()), name


def test_init_stds_on_mini():
    model = make("mini", seed=123)
    L = model.config.n_layer
    resid = 0.02 / math.sqrt(2 * L)
    for name, p in model.named_parameters():
        if name.endswith("c_proj.weight"):
            assert p.std().item() == pytest.approx(resid, rel=0.03), name
        elif (name.endswith(("c_attn.weight", "c_fc.weight"))
              or name.startswith(("transformer.wte", "transformer.wpe"))):
            assert p.std().item() == pytest.approx(0.02, rel=0.03), name
        elif name.endswith(".bias") and "ln_" not in name:
            assert torch.count_nonzero(p) == 0, name
        if name.endswith("ln_1.weight") or name.endswith("ln_f.weight"):
            assert torch.all(p == 1)
    # the residual projections really are smaller than the others (not just within tolerance)
    assert resid < 0.01


# ---------------------------------------------------------------- forward


def test_causal_future_token_does_not_change_earlier_logits():
    model = make("nano").eval()
    T = 16
    idx = torch.randint(0, 257, (2, T), generator=torch.Generator().manual_seed(0))
    changed = idx.clone()
    changed[:, 10] = (changed[:, 10] + 1) % 257
    with torch.no_grad():
        a, _ = model(idx, idx)
        b, _ = model(changed, changed)
    assert torch.equal(a[:, :10], b[:, :10])
    assert not torch.allclose(a[:, 10:], b[:, 10:])


def test_forward_without_targets_gives_last_position_only():
    model = make("nano").eval()
    idx = torch.randint(0, 257, (3, 12), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        last, loss = model(idx)
        full, _ = model(idx, idx)
    assert loss is None
    assert last.shape == (3, 1, 257)
    torch.testing.assert_close(last[:, 0], full[:, -1])


def test_sequence_longer_than_block_raises():
    model = make("nano", block_size=8)
    with pytest.raises(MiniSPDFError, match="block_size"):
        model(torch.zeros(1, 9, dtype=torch.long))


def test_loss_mask_restricts_loss_to_masked_mean():
    model = make("nano").eval()
    g = torch.Generator().manual_seed(2)
    x = torch.randint(0, 257, (2, 10), generator=g)
    y = torch.randint(0, 257, (2, 10), generator=g)
    mask = torch.zeros(2, 10, dtype=torch.bool)
    mask[0, 3:7] = True
    mask[1, 8:] = True
    with torch.no_grad():
        logits, loss = model(x, y, mask)
        _, unmasked = model(x, y)
    per_token = F.cross_entropy(logits.reshape(-1, 257), y.reshape(-1), reduction="none").view(2,
                                                                                               10)
    expected = per_token[mask].mean()
    torch.testing.assert_close(loss, expected)
    torch.testing.assert_close(unmasked, per_token.mean())
    assert not torch.isclose(loss, unmasked)
    # changing targets outside the mask does not change the loss
    y2 = y.clone()
    y2[~mask] = (y2[~mask] + 1) % 257
    with torch.no_grad():
        _, loss2 = model(x, y2, mask)
    assert loss2.item() == loss.item()


def test_non_contiguous_targets_accepted():
    model = make("nano").eval()
    seq = torch.randint(0, 257, (2, 17), generator=torch.Generator().manual_seed(3))
    x, y = seq[:, :-1], seq[:, 1:]  # y is a strided view, as a naive get_batch would return
    with torch.no_grad():
        _, loss = model(x, y)
        _, ref = model(x, y.contiguous())
    assert loss.item() == ref.item()


# ---------------------------------------------------------------- generate


def test_generate_greedy_is_deterministic_and_extends_prompt():
    model = make("nano").eval()
    prompt = torch.tensor([[1, 2, 3, 4]])
    a = model.generate(prompt, 12, temperature=0)
    b = model.generate(prompt, 12, temperature=0)
    assert a.shape == (1, 16)
    assert torch.equal(a, b)
    assert torch.equal(a[:, :4], prompt)
    # greedy = argmax of the next-token logits, step by step
    with torch.no_grad():
        logits, _ = model(a[:, :4])
    assert a[0, 4].item() == logits[0, -1].argmax().item()


def test_generate_sampling_reproducible_with_generator():
    model = make("nano").eval()
    prompt = torch.tensor([[5, 6, 7]])
    a = model.generate(prompt, 10, temperature=1.0, top_k=20,
                       generator=torch.Generator().manual_seed(7))
    b = model.generate(prompt, 10, temperature=1.0, top_k=20,
                       generator=torch.Generator().manual_seed(7))
    assert torch.equal(a, b)


def test_generate_stops_early_at_eot():
    model = make("nano").eval()
    prompt = torch.tensor([[10, 20, 30]])
    full = model.generate(prompt, 12, temperature=0)
    new = full[0, 3:].tolist()
    eot = new[2]
    first = new.index(eot)
    out = model.generate(prompt, 12, temperature=0, eot_id=eot)
    assert out.shape[1] == 3 + first + 1 < full.shape[1]
    assert torch.equal(out[0], full[0, : 3 + first + 1])


def test_generate_pads_finished_rows_with_eot():
    model = make("nano").eval()
    prompts = torch.tensor([[10, 20, 30], [40, 50, 60]])
    full = model.generate(prompts, 12, temperature=0)
    row0 = full[0, 3:].tolist()
    eot = row0[0]  # row 0 ends immediately
    out = model.generate(prompts, 12, temperature=0, eot_id=eot)
    assert out[0, 3].item() == eot
    assert torch.all(out[0, 3:] == eot)  # after finishing, row 0 only repeats eot
    row1 = full[1, 3:].tolist()
    if eot in row1:
        assert out.shape[1] == 3 + row1.index(eot) + 1
    else:
        assert out.shape[1] == full.shape[1]
        assert torch.equal(out[1], full[1])


def test_generate_prompt_longer_than_block_raises():
    model = make("nano", block_size=8)
    with pytest.raises(MiniSPDFError, match="prompt"):
        model.generate(torch.zeros(1, 9, dtype=torch.long), 2, temperature=0)


def test_generate_prompt_of_exactly_block_size_crops_context():
    model = make("nano", block_size=8).eval()
    out = model.generate(torch.zeros(1, 8, dtype=torch.long), 3, temperature=0)
    assert out.shape == (1, 11)


# ---------------------------------------------------------------- from_pretrained


def test_from_pretrained_without_transformers_raises(monkeypatch):
    monkeypatch.setitem(sys.modules, "transformers", None)  # makes `import transformers` fail
    with pytest.raises(MiniSPDFError, match="transformers"):
        GPT.from_pretrained("gpt2")


def test_from_pretrained_unknown_name_raises():
    with pytest.raises(MiniSPDFError, match="no pretrained weights"):
        GPT.from_pretrained("gpt3-xl")
