"""The metrics papers print (sacrebleu BLEU / chrF++ / TER, rouge-score ROUGE, official METEOR),
per subset; evaluate --metrics and the score command agree with each other."""

import json
import math
import subprocess

import pytest
import sacrebleu
from rouge_score import rouge_scorer

from minispdf import metrics
from minispdf.cli import main
from minispdf.errors import MiniSPDFError
from minispdf.evaluate import bleu, evaluate_task, perplexity, score_file
from minispdf.metrics import parse_metrics, score_predictions
from minispdf.tasks import Example

from test_releases import make_webnlg_2017

PREDS = ["The Eagle is a pub by the river.", "Aromi is a Thai restaurant.", "Zizzi is cheap.", ""]
REFS = [["Near the river, The Eagle is a pub.", "The Eagle is a pub near the river."],
        ["Aromi serves Thai food."],
        ["Zizzi is a cheap place.", "Zizzi has low prices.", "Cheap: Zizzi."],
        ["Wildwood is a coffee shop."]]
FAST = "bleu,chrf,ter,rouge"


def test_scores_are_the_packages_own():
    got = score_predictions(PREDS, REFS, FAST)
    # sacrebleu's plain API on single-reference data equals ours on the same data
    one = score_predictions(PREDS, [r[:1] for r in REFS], FAST)
    streams = [[r[0] for r in REFS]]
    assert one["chrf"] == pytest.approx(sacrebleu.corpus_chrf(PREDS, streams, word_order=2).score)
    assert one["ter"] == pytest.approx(sacrebleu.corpus_ter(PREDS, streams).score)
    assert one["bleu"] == pytest.approx(sacrebleu.corpus_bleu(PREDS, streams, lowercase=True).score)
    # BLEU is the kit's pinned BLEU; more references can only help chrF++ and TER here
    assert got["bleu"] == bleu(PREDS, REFS)
    assert got["chrf"] > one["chrf"] and got["ter"] < one["ter"]
    # ROUGE: per input the best F1 over its references, averaged
    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)
    best = [max(scorer.score(r, p)["rougeL"].fmeasure for r in refs)
            for p, refs in zip(PREDS, REFS)]
    assert got["rougeL"] == pytest.approx(100 * sum(best) / len(best))
    assert got["n_inputs"] == 4 and got["n_references"] == 7
    assert got["signatures"]["chrf"].startswith("nrefs:var") and "nw:2" in got["signatures"]["chrf"]
    perfect = score_predictions([r[0] for r in REFS], REFS, FAST)
    assert perfect["bleu"] == pytest.approx(100) and perfect["chrf"] == pytest.approx(100)
    assert perfect["ter"] == 0 and perfect["rougeL"] == pytest.approx(100)


def test_subsets_score_like_their_slices():
    labels = ["seen", "unseen", "seen", ["unseen", "extra"]]
    got = score_predictions(PREDS, REFS, FAST, subsets=labels)
    assert list(got["subsets"]) == ["extra", "seen", "unseen"]
    for name, idx in (("seen", [0, 2]), ("unseen", [1, 3]), ("extra", [3])):
        alone = score_predictions([PREDS[i] for i in idx], [REFS[i] for i in idx], FAST)
        row = got["subsets"][name]
        assert row["n_inputs"] == len(idx) and row["n_references"] == sum(len(REFS[i]) for i in idx)
        for key in ("bleu", "chrf", "ter", "rouge1", "rouge2", "rougeL"):
            assert row[key] == pytest.approx(alone[key]), (name, key)
    with pytest.raises(MiniSPDFError, match="2 subset labels for 4 predictions"):
        score_predictions(PREDS, REFS, FAST, subsets=["a", "b"])


def test_metric_names_and_defaults():
    assert parse_metrics(None, "e2e") == ["bleu", "chrf", "ter", "rouge", "meteor"]
    assert parse_metrics(None, "curation") == ["rouge"]
    assert parse_metrics(None, "curation:/data/curation") == ["rouge"]  # a task spec with a path
    assert parse_metrics(" TER, bleu ,ter", "") == ["ter", "bleu"]
    with pytest.raises(MiniSPDFError, match="unknown metric 'cider'"):
        parse_metrics("bleu,cider")
    with pytest.raises(MiniSPDFError, match="--metrics is empty"):
        parse_metrics(" , ")
    with pytest.raises(MiniSPDFError, match="3 predictions but 4 reference lists"):
        score_predictions(PREDS[:3], REFS, FAST)
    with pytest.raises(MiniSPDFError, match="input 1 has no references: BLEU needs at least one"):
        bleu(["a b", "c d"], [["a b"], []])


def test_input_checks_name_the_problem(monkeypatch):
    with pytest.raises(MiniSPDFError,
                       match="^unknown metric 'x': choose from bleu, chrf, ter, rouge, meteor "):
        parse_metrics("x")
    with pytest.raises(MiniSPDFError,
                       match="^--metrics is empty: give some of bleu, chrf, ter, rouge, meteor,"):
        parse_metrics(",")
    with pytest.raises(MiniSPDFError,
                       match="^no predictions to score: evaluate at least one input$"):
        score_predictions([], [], FAST)
    with pytest.raises(MiniSPDFError,
                       match="input 0 has no references: a metric needs at least one reference"):
        score_predictions(["a"], [[]], FAST)
    # a bare string is one reference, not a list of characters
    assert bleu(["the cat sat on the mat"], ["the cat sat on the mat"]) == pytest.approx(100)
    # the METEOR scorer (a Java process) starts only when METEOR is asked for
    monkeypatch.setattr(subprocess, "Popen",
                        lambda *a, **k: pytest.fail("METEOR started for bleu alone"))
    got = score_predictions(PREDS, REFS, "bleu,rouge")
    assert (got["signatures"]["rouge"]
            == "rouge-score F1, use_stemmer=True, best reference per input")
    assert "rouge" not in score_predictions(PREDS, REFS, "bleu")["signatures"]


def test_meteor_missing_is_a_note_by_default_and_an_error_when_asked(monkeypatch):
    monkeypatch.setattr(metrics, "meteor_available", lambda: "METEOR needs Java: install a JRE")
    got = score_predictions(PREDS, REFS)  # the defaults
    assert "meteor" not in got and got["metrics"] == ["bleu", "chrf", "ter", "rouge"]
    assert got["notes"] == ["meteor left out: METEOR needs Java: install a JRE"]
    with pytest.raises(MiniSPDFError, match="needs Java"):
        score_predictions(PREDS, REFS, "bleu,meteor")


@pytest.mark.slow
@pytest.mark.skipif(metrics.meteor_available() is not None, reason="pycocoevalcap or Java missing")
def test_meteor_runs_the_official_jar_per_subset():
    """One Java session (it takes seconds to start): the model's outputs and perfect ones as
    subsets."""
    perfect = [r[0] for r in REFS]
    got = score_predictions(PREDS + perfect, REFS + REFS, "meteor",
                            subsets=["model"] * 4 + ["perfect"] * 4)
    model, best = got["subsets"]["model"]["meteor"], got["subsets"]["perfect"]["meteor"]
    assert 0 < model < got["meteor"] < best and best > 99
    assert got["signatures"]["meteor"].startswith("meteor-1.5")


class ByteTokenizer:
    eot_id = 256
    name = "char"

    def encode(self, text):
        return list(text.encode("utf-8"))

    def decode(self, ids):
        return bytes(i for i in ids if i < 256).decode("utf-8", errors="replace")


def _tiny_model():
    import torch

    from minispdf.model import GPT, GPTConfig

    torch.manual_seed(0)
    return GPT(GPTConfig(n_layer=1, n_head=2, n_embd=16, block_size=96, vocab_size=257))


def test_evaluate_task_scores_subsets_with_perplexity():
    model, tok = _tiny_model(), ByteTokenizer()
    exs = [Example("a : b : c", ["A b c.", "C of a."], {"subset": "seen"}),
           Example("d : e : f", ["D e f."], {"subset": "unseen"}),
           Example("g : h : i", ["G h i."], {"subset": "seen"})]
    res = evaluate_task(model, tok, exs, max_new_tokens=6, metrics=["bleu", "rouge"])
    assert {"bleu", "loss", "perplexity", "n_inputs", "rougeL"} <= set(res) and "chrf" not in res
    seen = res["subsets"]["seen"]
    assert seen["n_inputs"] == 2 and seen["n_references"] == 3
    assert (seen["perplexity"]
            == pytest.approx(perplexity(model, tok, [exs[0], exs[2]])["perplexity"]))
    # backward compatible: no metrics given is BLEU only, as before
    old = evaluate_task(model, tok, exs, max_new_tokens=6)
    assert old["bleu"] == res["bleu"] and "rougeL" not in old
    # summarisation: perplexity and ROUGE of generated summaries
    cur = evaluate_task(model, tok, exs[:2], metric="perplexity", metrics="default",
                        task="curation", max_new_tokens=6)
    assert cur["bleu"] is None and {"rouge1", "rouge2", "rougeL"} <= set(cur)
    assert math.isfinite(cur["perplexity"])


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_evaluate_and_score_commands_agree_on_a_webnlg_release(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    make_webnlg_2017(tmp_path / "webnlg")
    code, _, err = run(capsys, "pretrain", "--preset", "nano", "--block_size", "96",
                       "--max_steps", "1",
                       "--batch_size", "2", "--eval_iters", "1", "--out", "run", "--json")
    assert code == 0, err
    pred = tmp_path / "pred.jsonl"
    code, out, err = run(capsys, "evaluate", "--ckpt", "run",
                         "--task", f"webnlg:{tmp_path / 'webnlg'}",
                         "--max_new_tokens", "8", "--metrics", FAST, "--predictions", pred,
                         "--json")
    assert code == 0, err
    ev = json.loads(out)
    assert ev["counts"]["test"] == {"inputs": 5, "references": 9}
    assert ev["n_inputs"] == 5 and ev["n_references"] == 9
    assert {k: v["n_inputs"] for k, v in ev["subsets"].items()} == {"seen": 3, "unseen": 2}
    assert any("testdata_no_lex.xml has no references" in n for n in ev["notes"])
    lines = [json.loads(x) for x in pred.read_text().splitlines()]
    assert [x["subset"] for x in lines] == ["seen", "seen", "unseen", "seen", "unseen"]
    code, out, err = run(capsys, "score", pred, "--metrics", FAST, "--json")
    assert code == 0, err
    sc = json.loads(out)
    for key in ("bleu", "chrf", "ter", "rouge1", "rouge2", "rougeL"):
        assert sc[key] == ev[key]
        for name in ("seen", "unseen"):
            assert sc["subsets"][name][key] == ev["subsets"][name][key]
    assert {k: v for k, v in sc.items() if k != "predictions_path"} == score_file(pred, FAST)
    # the text reports name every subset with its counts, and evaluate what it read
    code, out, err = run(capsys, "score", pred, "--metrics", FAST)
    assert code == 0 and "seen" in out and "unseen" in out and "chrF++" in out and "ROUGE-L" in out
    code, out, err = run(capsys, "evaluate", "--ckpt", "run",
                         "--task", f"webnlg:{tmp_path / 'webnlg'}",
                         "--max_new_tokens", "8", "--metrics", "ter",
                         "--predictions", tmp_path / "p2.jsonl")
    assert code == 0, err
    assert ("test 5 inputs / 9 references" in out
            and "note: testdata_no_lex.xml has no references" in out)
    assert [line.split()[:3] for line in out.splitlines()[1:4]] == [
        ["all", "5", "inputs"], ["seen", "3", "inputs"], ["unseen", "2", "inputs"]]


@pytest.mark.parametrize("argv, needle", [
    (["score"], "score needs a predictions file"),
    (["score", "/no/such/file.jsonl"], "no predictions file"),
    (["score", "{p}", "--metrics", "bleu,cider"], "unknown metric 'cider'"),
    (["score", "{bad}"], "line 2 is not JSON"),
    (["score", "{p}", "--colour", "red"], "unknown setting"),
])
def test_score_bad_input_is_one_line_error(capsys, tmp_path, argv, needle):
    p = tmp_path / "p.jsonl"
    p.write_text(json.dumps({"prediction": "a b", "references": ["a b"], "subset": "seen"}) + "\n",
                 encoding="utf-8")
    bad = tmp_path / "bad.jsonl"
    bad.write_text(p.read_text() + '{"prediction": \n', encoding="utf-8")
    code, _, err = run(capsys, *[a.format(p=p, bad=bad) for a in argv])
    assert code == 2 and err.startswith("error: ") and len(err.strip().splitlines()) == 1, err
    assert needle in err


def test_score_reads_files_from_elsewhere(tmp_path, capsys):
    """A predictions file in the same format, written by another tool: no input field, no subset."""
    p = tmp_path / "other.jsonl"
    p.write_text("".join(json.dumps({"prediction": x, "references": r}) + "\n"
                         for x, r in zip(PREDS, REFS)),
                 encoding="utf-8")
    code, out, err = run(capsys, "score", p, "--metrics", FAST, "--json")
    assert code == 0, err
    d = json.loads(out)
    assert d["bleu"] == bleu(PREDS, REFS) and d["subsets"] == {}


def test_perplexity_leaves_out_references_longer_than_the_context():
    """A reference that cannot fit the context is counted, not a crash: E2E's test set has one of
    395 bytes, longer than a 384-byte context."""
    model, tok = _tiny_model(), ByteTokenizer()  # block_size 96
    fits = Example("a : b", ["A b.", "B of a."], {"subset": "s"})
    too_long = Example("c : d", ["C d. " * 30, "C is d."], {"subset": "s"})
    both = perplexity(model, tok, [fits, too_long])
    assert both["pairs_skipped"] == 1
    assert (both["loss"]
            == pytest.approx(perplexity(model, tok, [fits, Example("c : d", ["C is d."])])["loss"]))
    res = evaluate_task(model, tok, [fits, too_long], max_new_tokens=4, metrics=["bleu"])
    assert res["perplexity_pairs_skipped"] == 1 and "left out 1 of 4" in res["notes"][0]
    with pytest.raises(MiniSPDFError, match="no reference fits the context"):
        perplexity(model, tok, [Example("c", ["x" * 200])])
