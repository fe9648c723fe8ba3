"""Decoding (KV cache, batching, beam search), BLEU, perplexity and evaluate_task on tiny random
models."""

import json
import math
import os

os.environ["HF_HUB_OFFLINE"] = "1"

import pytest
import sacrebleu
import torch
from torch.nn import functional as F

from minispdf import decoding, evaluate
from minispdf.errors import MiniSPDFError
from minispdf.model import GPT, GPTConfig, KVCache
from minispdf.tasks import Example, encode_example, encode_prompt
from minispdf.tokenizers import CharTokenizer

TOK = CharTokenizer()
INPUTS = [
    "name[Aromi], food[Thai]",
    "a",
    "name[The Copper Kettle], eatType[pub], priceRange[cheap]",
    "x y z",
    "name[Zizzi], area[riverside]",
]


def tiny_model(block_size=64, seed=0):
    torch.manual_seed(seed)
    return GPT(GPTConfig(n_layer=2, n_head=2, n_embd=32, block_size=block_size,
                         vocab_size=257)).eval()


def naive_greedy(model, prompt, eot, max_new_tokens=None):
    """The reference: no cache, the whole sequence through model() at every step."""
    seq, out = list(prompt), []
    with torch.no_grad():
        while (len(seq) < model.config.block_size
               and (max_new_tokens is None or len(out) < max_new_tokens)):
            logits, _ = model(torch.tensor([seq]))
            tok = int(logits[0, -1].argmax())
            if tok == eot:
                break
            out.append(tok)
            seq.append(tok)
    return out


def total_logprob(model, prompt, continuation, eot=None):
    """log p(continuation [+ eot] | prompt), scored without the cache."""
    targets = list(continuation) + ([eot] if eot is not None else [])
    seq = list(prompt) + targets
    with torch.no_grad():
        logits, _ = model(torch.tensor([seq[:-1]]), torch.tensor([seq[1:]]))
    logp = F.log_softmax(logits[0].double(), dim=-1)
    start = len(prompt) - 1
    return sum(float(logp[start + i, t]) for i, t in enumerate(targets))


def prompts_for(model, inputs=INPUTS):
    return [encode_prompt(TOK, s, max_tokens=model.config.block_size - 1) for s in inputs]


# ------------------------------------------------------------------------------------------
# KV cache and greedy decoding
# ------------------------------------------------------------------------------------------


def test_decode_step_logits_match_forward():
    model = tiny_model()
    seq = torch.randint(0, 256, (2, 20), generator=torch.Generator().manual_seed(1))
    cache = KVCache(model.config, 2, 20)
    with torch.no_grad():
        got = [model.decode_step(seq[:, :12], cache)]
        got += [model.decode_step(seq[:, t:t + 1], cache) for t in range(12, 20)]
        for i, t in enumerate(range(11, 20)):
            want, _ = model(seq[:, :t + 1])
            torch.testing.assert_close(got[i], want[:, -1], rtol=1e-5, atol=1e-5)


def test_cached_greedy_equals_naive_argmax_loop_up_to_full_context():
    model = tiny_model(block_size=64)
    prompts = prompts_for(model)
    with torch.no_grad():
        got = decoding.greedy_tokens(model, prompts, TOK.eot_id, max_new_tokens=None, batch_size=8)
    want = [naive_greedy(model, p, TOK.eot_id) for p in prompts]
    assert got == want
    # No eot from a random model: every row fills its context exactly.
    assert [len(p) + len(g) for p, g in zip(prompts, got)] == [64] * len(prompts)


def test_cached_greedy_equals_naive_with_max_new_tokens():
    model = tiny_model(block_size=128, seed=3)
    prompts = prompts_for(model)
    with torch.no_grad():
        got = decoding.greedy_tokens(model, prompts, TOK.eot_id, max_new_tokens=10)
    assert got == [naive_greedy(model, p, TOK.eot_id, 10) for p in prompts]
    assert all(len(g) == 10 for g in got)


def test_greedy_stops_at_eot_per_row():
    model = tiny_model(block_size=64, seed=1)
    prompts = prompts_for(model)
    with torch.no_grad():
        free = decoding.greedy_tokens(model, prompts, TOK.eot_id, max_new_tokens=20)
    # Pick as "eot" a token the model does produce, late enough in some row to stop it mid-way.
    eot = next(t for row in free for i, t in enumerate(row) if i >= 2 and t not in row[:i])
    with torch.no_grad():
        got = decoding.greedy_tokens(model, prompts, eot, max_new_tokens=20, batch_size=3)
    want = [naive_greedy(model, p, eot, 20) for p in prompts]
    assert got == want
    assert all(eot not in row for row in got)
    assert any(0 < len(row) < 20 for row in got)  # some row stopped early at the eot
    for row, f in zip(got, free):  # a row stops exactly before the first eot it would produce
        assert row == (f[:f.index(eot)] if eot in f else f)


def test_greedy_is_batch_invariant():
    model = tiny_model(block_size=128, seed=2)
    alone = [evaluate.decode(model, TOK, [s], max_new_tokens=30)[0] for s in INPUTS]
    for bs in (len(INPUTS), 2):
        assert evaluate.decode(model, TOK, INPUTS, max_new_tokens=30, batch_size=bs) == alone
    reordered = list(reversed(INPUTS))
    assert evaluate.decode(model, TOK, reordered, max_new_tokens=30) == list(reversed(alone))
    assert all(isinstance(s, str) and s == s.strip() for s in alone)


def test_prompt_longer_than_context_is_cut_at_the_end_of_the_input():
    model = tiny_model(block_size=64)
    long_input = "name[" + "abcdefghij" * 10 + "]"
    prompt = encode_prompt(TOK, long_input, max_tokens=63)
    assert len(prompt) == 63 and prompt[-1] == TOK.encode("\n")[0]
    with torch.no_grad():
        one = naive_greedy(model, prompt, TOK.eot_id)
    assert len(one) == 1  # exactly one token of room
    assert evaluate.decode(model, TOK, [long_input, "a"]) [0] == TOK.decode(one).strip()


def test_zero_new_tokens_and_bad_arguments():
    model = tiny_model()
    assert evaluate.decode(model, TOK, INPUTS[:2], max_new_tokens=0) == ["", ""]
    assert evaluate.decode(model, TOK, []) == []
    with pytest.raises(MiniSPDFError, match="method"):
        evaluate.decode(model, TOK, INPUTS, method="sample")
    with pytest.raises(MiniSPDFError, match="num_beams"):
        evaluate.decode(model, TOK, INPUTS, method="beam", num_beams=0)


def test_decode_restores_training_mode():
    model = tiny_model().train()
    evaluate.decode(model, TOK, INPUTS[:1], max_new_tokens=2)
    assert model.training
    model.eval()
    evaluate.decode(model, TOK, INPUTS[:1], method="beam", num_beams=2, max_new_tokens=2)
    assert not model.training


# ------------------------------------------------------------------------------------------
# Beam search
# ------------------------------------------------------------------------------------------


def test_beam_with_one_beam_equals_greedy():
    model = tiny_model(block_size=64, seed=4)
    greedy = evaluate.decode(model, TOK, INPUTS)
    assert evaluate.decode(model, TOK, INPUTS, method="beam", num_beams=1) == greedy
    with torch.no_grad():
        for p in prompts_for(model)[:3]:
            toks, _ = decoding.beam_tokens(model, p, TOK.eot_id, num_beams=1, max_new_tokens=15)
            assert toks == naive_greedy(model, p, TOK.eot_id, 15)


def test_beam_search_finds_at_least_greedys_logprob():
    model = tiny_model(block_size=64, seed=5)
    outs = evaluate.decode(model, TOK, INPUTS, method="beam", num_beams=4, max_new_tokens=8)
    assert len(outs) == len(INPUTS) and all(isinstance(s, str) for s in outs)
    with torch.no_grad():
        for p in prompts_for(model):
            greedy = naive_greedy(model, p, TOK.eot_id, 8)
            beam, score = decoding.beam_tokens(model, p, TOK.eot_id, num_beams=4, max_new_tokens=8,
                                               length_penalty=0.0)
            # the long prompt fills the context first
            limit = min(8, model.config.block_size - len(p))
            # stopped by an eot (counted in its score) rather than the limit
            ended = len(beam) < limit
            beam_lp = total_logprob(model, p, beam, TOK.eot_id if ended else None)
            # length_penalty=0: score = total logprob
            assert score == pytest.approx(beam_lp, abs=1e-4)
            assert beam_lp >= total_logprob(model, p, greedy) - 1e-6


def test_beam_stops_at_eot():
    model = tiny_model(block_size=64, seed=6)
    p = prompts_for(model)[0]
    with torch.no_grad():
        free = naive_greedy(model, p, TOK.eot_id, 10)
        eot = free[3]
        toks, score = decoding.beam_tokens(model, p, eot, num_beams=1, max_new_tokens=10)
    assert toks == free[:free.index(eot)]
    assert score == pytest.approx(total_logprob(model, p, toks, eot) / (len(toks) + 1), abs=1e-4)


# ------------------------------------------------------------------------------------------
# BLEU
# ------------------------------------------------------------------------------------------


# Official E2E BLEU values: e2e-metrics (github.com/tuetschek/e2e-metrics, commit 1b9c4d8),
# measure_scores.run_mteval, i.e. NIST mteval-v13a-sig.pl (lowercases by default, 13a tokenization,
# closest reference length, empty padding references ignored), run by tests/e2e_official_bleu.py
# with perl 5.36 and XML::Twig 3.52 on 2026-12-01. It prints 4 decimals of a 0-1 score.
E2E_EXAMPLE = (
    ["The Eagle is a cheap coffee shop near Burger King.",
     "Fitzbillies is a family-friendly Italian restaurant with a price range of 20-25 pounds.",
     "Browns Cambridge serves french food."],
    [["The Eagle is a low-priced coffee shop near Burger King in the riverside area.",
      "Near Burger King by the riverside is The Eagle, a cheap coffee shop."],
     ["Fitzbillies is a kid-friendly Italian restaurant in the 20-25 pound price range.",
      "For 20-25 pounds, Fitzbillies offers Italian food and is family friendly.",
      "FITZBILLIES is an Italian restaurant, family-friendly, with prices of 20-25 pounds."],
     ["Browns Cambridge serves French food and is not family-friendly."]],
)
PADDING_EXAMPLE = (
    ["the cat sat on the mat", "a dog", "birds fly south in winter time"],
    [["the cat sat on a mat", "there is a cat on the mat", "a cat on the mat"],
     ["a dog runs in a park"],
     ["birds fly to the south in winter", "in winter birds fly south"]],
)
OFFICIAL_BLEU = {"E2E_EXAMPLE": 0.4868, "PADDING_EXAMPLE": 0.4308}  # "BLEU score = ..." of mteval


@pytest.mark.parametrize("name", sorted(OFFICIAL_BLEU))
def test_bleu_equals_the_official_e2e_script(name):
    preds, refs = globals()[name]
    assert evaluate.bleu(preds, refs) == pytest.approx(100 * OFFICIAL_BLEU[name], abs=0.005)


def test_bleu_of_the_e2e_example_by_hand():
    # mteval's report for E2E_EXAMPLE gives the n-gram precisions 0.9697 0.7333 0.5556 0.3750 =
    # 32/33,
    # 22/30, 15/27, 9/24. Lowercased 13a tokens ("20-25" -> "20 - 25", "." and "," split off):
    # predictions of 11, 16 and 6 tokens (33); closest references 14, 16 and 11 tokens (41), so
    # BLEU = exp(1 - 41/33) * (32/33 * 22/30 * 15/27 * 9/24) ** (1/4).
    expected = 100 * math.exp(1 - 41 / 33) * (32 / 33 * 22 / 30 * 15 / 27 * 9 / 24) ** 0.25
    assert evaluate.bleu(*E2E_EXAMPLE) == pytest.approx(expected, rel=1e-12)
    assert expected == pytest.approx(48.68, abs=0.005)
    # the example tells lowercasing apart: "french" matches "French" only when lowercased
    preds, refs = E2E_EXAMPLE
    streams = [[r[j] if j < len(r) else None for r in refs] for j in range(3)]
    assert sacrebleu.corpus_bleu(preds, streams).score < expected - 5


def test_bleu_perfect_predictions_score_100():
    refs = [["the cat sat on the mat today", "a cat was on the mat"],
            ["there is a dog in the big garden"]]
    assert evaluate.bleu([refs[0][1], refs[1][0]], refs) == pytest.approx(100.0)


def test_bleu_pads_reference_streams_with_none():
    # The 2nd input has one reference and a short prediction: a "" reference (length 0) would be
    # the closest reference length for it and shrink the brevity penalty; a None one is dropped.
    preds = ["the cat sat on the mat", "a dog", "birds fly south in winter time"]
    refs = [["the cat sat on a mat", "there is a cat on the mat", "a cat on the mat"],
            ["a dog runs in a park"],
            ["birds fly to the south in winter", "in winter birds fly south"]]
    streams_none = [[r[j] if j < len(r) else None for r in refs] for j in range(3)]
    streams_empty = [[r[j] if j < len(r) else "" for r in refs] for j in range(3)]
    with_none = sacrebleu.corpus_bleu(preds, streams_none, lowercase=True).score
    with_empty = sacrebleu.corpus_bleu(preds, streams_empty, lowercase=True).score
    assert with_none != pytest.approx(with_empty)  # the padding matters ...
    assert evaluate.bleu(preds, refs) == with_none  # ... and bleu() pads with None


def test_bleu_is_lowercased():
    refs = [["The Cat Sat On The Mat"], ["A Dog Runs In The Park"]]
    preds = ["the cat sat on the mat", "a dog runs in the park"]
    assert evaluate.bleu(preds, refs) == pytest.approx(100.0)
    assert sacrebleu.corpus_bleu(preds, [[r[0] for r in refs]]).score < 100.0


def test_bleu_rejects_mismatched_lengths_and_missing_references():
    with pytest.raises(MiniSPDFError, match="predictions"):
        evaluate.bleu(["a"], [["a"], ["b"]])
    with pytest.raises(MiniSPDFError, match="no references"):
        evaluate.bleu(["a", "b"], [["a"], []])


# ------------------------------------------------------------------------------------------
# Perplexity
# ------------------------------------------------------------------------------------------


def test_perplexity_equals_hand_computed_masked_cross_entropy():
    model = tiny_model(block_size=64, seed=7)
    examples = [Example("name[Aromi]", ["Aromi is here.", "It is Aromi."]), Example("x", ["y z"])]
    nll, n = 0.0, 0
    with torch.no_grad():
        for ex in examples:
            for ref in ex.references:
                tokens, mask = encode_example(TOK, ex.input, ref, 64)
                x, y = torch.tensor([tokens[:-1]]), torch.tensor([tokens[1:]])
                logits, _ = model(x, y)
                ce = F.cross_entropy(logits[0].double(), y[0], reduction="none")
                m = torch.tensor(mask, dtype=torch.bool)
                nll += float(ce[m].sum())
                n += int(m.sum())
    assert n == sum(len(r) + 1 for ex in examples for r in ex.references)  # target tokens + eot
    for bs in (1, 2, 32):
        got = evaluate.perplexity(model, TOK, examples, batch_size=bs)
        assert got["tokens"] == n
        assert got["loss"] == pytest.approx(nll / n, rel=1e-5)
        assert got["perplexity"] == pytest.approx(math.exp(nll / n), rel=1e-5)


# ------------------------------------------------------------------------------------------
# evaluate_task and score_file
# ------------------------------------------------------------------------------------------


EXAMPLES = [
    Example("name[Aromi], food[Thai]", ["Aromi serves Thai food.", "Aromi is a Thai place."]),
    Example("name[Zizzi]", ["Zizzi is a restaurant."]),
    Example("name[The Eagle], area[riverside]",
            ["The Eagle is by the river.", "The Eagle is riverside.", "X"]),
]


def test_evaluate_task_writes_jsonl_that_score_file_reproduces(tmp_path):
    model = tiny_model(block_size=128).train()
    path = tmp_path / "out" / "preds.jsonl"
    res = evaluate.evaluate_task(model, TOK, EXAMPLES, max_new_tokens=20,
                                 predictions_path=str(path))
    assert model.training
    assert res["n_inputs"] == 3 and res["n_references"] == 6 and res["method"] == "greedy"
    assert res["predictions_path"] == str(path)
    assert (isinstance(res["bleu"], float)
            and res["perplexity"] == pytest.approx(math.exp(res["loss"])))
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    assert [r["input"] for r in rows] == [ex.input for ex in EXAMPLES]
    assert [r["references"] for r in rows] == [ex.references for ex in EXAMPLES]
    assert [r["prediction"] for r in rows] == evaluate.decode(model, TOK,
                                                              [ex.input for ex in EXAMPLES],
                                                              max_new_tokens=20)
    assert evaluate.score_file(str(path), "bleu")["bleu"] == res["bleu"]
    assert [p.name for p in path.parent.iterdir()] == ["preds.jsonl"]  # no temp file left behind


def test_evaluate_task_limit_and_perplexity_metric(tmp_path):
    model = tiny_model(block_size=128)
    res = evaluate.evaluate_task(model, TOK, EXAMPLES, max_new_tokens=5, limit=2)
    assert res["n_inputs"] == 2 and res["n_references"] == 3 and res["predictions_path"] is None
    ppl = evaluate.evaluate_task(model, TOK, EXAMPLES, metric="perplexity",
                                 predictions_path=str(tmp_path / "p.jsonl"))
    assert ppl["bleu"] is None and ppl["n_inputs"] == 3
    assert (ppl["perplexity"]
            == pytest.approx(evaluate.perplexity(model, TOK, EXAMPLES)["perplexity"]))
    assert not (tmp_path / "p.jsonl").exists()
    with pytest.raises(MiniSPDFError, match="metric"):
        evaluate.evaluate_task(model, TOK, EXAMPLES, metric="rouge")
    with pytest.raises(MiniSPDFError, match="no examples"):
        evaluate.evaluate_task(model, TOK, [])


def test_score_file_missing_or_corrupt_file_raises(tmp_path):
    with pytest.raises(MiniSPDFError, match="no predictions file"):
        evaluate.score_file(str(tmp_path / "nope.jsonl"), "bleu")["bleu"]
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"input": "a", "prediction": "b", "references": ["b"]}\n{"input": "a", "predic',
                   encoding="utf-8")
    with pytest.raises(MiniSPDFError, match="corrupt"):
        evaluate.score_file(str(bad), "bleu")["bleu"]
    bad.write_text('{"input": "a", "references": ["b"]}\n', encoding="utf-8")
    with pytest.raises(MiniSPDFError, match="prediction"):
        evaluate.score_file(str(bad), "bleu")["bleu"]
    good = tmp_path / "good.jsonl"
    good.write_text('{"input": "a", "prediction": "the cat sat on the mat", "references": ["The '
                    'cat sat on the mat"]}\n',
                    encoding="utf-8")
    assert evaluate.score_file(str(good), "bleu")["bleu"] == pytest.approx(100.0)
