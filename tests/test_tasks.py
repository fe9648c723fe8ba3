"""Tests for minispdf.tasks: loaders (official formats, written to tmp_path), the built-in
generator, and the fine-tuning format (loss-mask contract)."""

import os

os.environ["HF_HUB_OFFLINE"] = "1"

import json
import time

import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from test_releases import webnlg_xml, write

from minispdf.errors import MiniSPDFError
from minispdf.tasks import (
    SEPARATOR,
    Example,
    FinetuneBatches,
    Task,
    encode_example,
    encode_prompt,
    linearize_triples,
    load_task,
    load_task_files,
    make_builtin_task,
    parse_mr,
    split_task,
    training_pairs,
)


class ByteTokenizer:
    """Tiny byte-level tokenizer: one token per UTF-8 byte, eot = 256."""

    eot_id = 256

    def encode(self, text):
        return list(text.encode("utf-8"))

    def decode(self, ids):
        return bytes(i for i in ids if i < 256).decode("utf-8", errors="replace")


TOK = ByteTokenizer()


E2E_CSV = (
    'mr,ref\r\n'
    '"name[Alpha], area[city centre], familyFriendly[no]","Alpha is in the city centre."\r\n'
    '"name[Alpha], area[city centre], familyFriendly[no]","In the city centre, Alpha is not '
    'for kids."\r\n'
    '"name[Alpha], area[city centre], familyFriendly[no]",Alpha is an adult venue in '
    'the centre.\r\n'
    '"name[Beta], eatType[pub]","Beta is a pub, ""cosy"" and small."\r\n'
)


# ---------------------------------------------------------------------------------- E2E


def test_e2e_groups_rows_by_mr_in_order(tmp_path):
    task = load_task(f"e2e:{write(tmp_path / 'devset.csv', E2E_CSV)}")
    assert task.metric == "bleu" and task.train == [] and task.val == []
    assert [ex.input for ex in task.test] == [
        "name[Alpha], area[city centre], familyFriendly[no]",
        "name[Beta], eatType[pub]",
    ]
    assert task.test[0].references == [
        "Alpha is in the city centre.",
        "In the city centre, Alpha is not for kids.",
        "Alpha is an adult venue in the centre.",
    ]
    assert task.test[1].references == ['Beta is a pub, "cosy" and small.']
    assert len(training_pairs(task.test)) == 4
    assert parse_mr(task.test[0].input) == {"name": "Alpha", "area": "city centre",
                                            "familyFriendly": "no"}


def test_e2e_directory_maps_official_names(tmp_path):
    write(tmp_path / "trainset.csv", E2E_CSV)
    write(tmp_path / "devset.csv", 'mr,ref\n"name[Gamma]",Gamma.\n')
    write(tmp_path / "testset_w_refs.csv", '"mr","ref"\n"name[Delta]","Delta."\n')
    task = load_task(f"e2e:{tmp_path}")
    assert (len(task.train), len(task.val), len(task.test)) == (2, 1, 1)
    assert task.test[0].input == "name[Delta]"


def test_load_task_files_and_split_task(tmp_path):
    dev = write(tmp_path / "devset.csv", E2E_CSV)
    test = write(tmp_path / "testset_w_refs.csv", 'mr,ref\n"name[Delta]",Delta.\n')
    task = load_task_files("e2e", train=dev, test=test)
    assert (len(task.train), len(task.val), len(task.test)) == (2, 0, 1)

    pool = Task("x", "bleu", test=[Example(f"in{i}", [f"r{i}"]) for i in range(50)])
    s = split_task(pool, val_fraction=0.2, test_fraction=0.1, seed=1)
    assert (len(s.train), len(s.val), len(s.test)) == (35, 10, 5)
    ins = [set(e.input for e in split) for split in (s.train, s.val, s.test)]
    assert not (ins[0] & ins[1] or ins[0] & ins[2] or ins[1] & ins[2])
    assert split_task(pool, 0.2, 0.1, seed=1) == s
    assert split_task(pool, 0.2, 0.1, seed=2) != s


# ---------------------------------------------------------------------------------- DART / WebNLG

DART_JSON = [
    {"tripleset": [["Aarhus_Airport", "cityServed", "Aarhus, Denmark"]],
     "subtree_was_extended": False,
     "annotations": [{"source": "webnlg", "text": "Aarhus Airport serves Aarhus."}]},
    {"tripleset": [["[TABLECONTEXT]", "[TITLE]", "Films"], ["Jaws", "YEAR", "1975"]],
     "subtree_was_extended": True,
     "annotations": [{"source": "WikiTableQuestions_mturk", "text": "Jaws came out in 1975."},
                     {"source": "WikiTableQuestions_mturk",
                      "text": "The film Jaws is from 1975."}]},
    {"tripleset": [["Aarhus_Airport", "cityServed", "Aarhus, Denmark"]],
     "subtree_was_extended": False,
     "annotations": [{"source": "webnlg", "text": "Aarhus is served by Aarhus Airport."}]},
]


def test_linearize_triples():
    assert linearize_triples([["Aarhus_Airport", "cityServed", "Aarhus"],
                              ["Aarhus", "country", "Denmark"]]) == (
        "Aarhus Airport : cityServed : Aarhus | Aarhus : country : Denmark")
    with pytest.raises(MiniSPDFError):
        linearize_triples([["only", "two"]])


def test_dart_json(tmp_path):
    path = write(tmp_path / "dart-v1.1.1-full-test.json", json.dumps(DART_JSON))
    task = load_task(f"dart:{path}")
    assert [e.input for e in task.test] == [
        "Aarhus Airport : cityServed : Aarhus, Denmark",
        "[TABLECONTEXT] : [TITLE] : Films | Jaws : YEAR : 1975",
    ]
    assert task.test[0].references == ["Aarhus Airport serves Aarhus.",
                                       "Aarhus is served by Aarhus Airport."]
    assert task.test[1].references == ["Jaws came out in 1975.", "The film Jaws is from 1975."]
    # a directory with the official names maps to splits
    write(tmp_path / "dart-v1.1.1-full-train.json", json.dumps(DART_JSON[1:2]))
    d = load_task(f"dart:{tmp_path}")
    assert (len(d.train), len(d.val), len(d.test)) == (1, 0, 2)


def xml_doc(entries):
    """WebNLG-style XML of (triples, lexes) entries, category Airport; the original tripleset
    differs from the modified one, which is the one read."""
    return webnlg_xml([("Airport", f"Id{i}", t, lx) for i, (t, lx) in enumerate(entries, start=1)],
                      original="ignored | ignored | ignored")


def test_dart_xml(tmp_path):
    path = write(tmp_path / "dart-dev.xml", xml_doc([
        (["Jaws | YEAR | 1975"], ["Jaws came out in 1975."]),
        (["Mars | colour | red", "Mars | moons | 2"], ["Mars is red.", "Red Mars has two moons."]),
    ]))
    task = load_task(f"dart:{path}")
    assert [e.input for e in task.test] == ["Jaws : YEAR : 1975",
                                            "Mars : colour : red | Mars : moons : 2"]
    assert task.test[1].references == ["Mars is red.", "Red Mars has two moons."]


def test_webnlg_xml_groups_duplicated_entries(tmp_path):
    path = write(tmp_path / "testdata_with_lex.xml", xml_doc([
        (["Aarhus_Airport | cityServed | &quot;Aarhus, Denmark&quot;"],
         ["The Aarhus is the airport of Aarhus."]),
        (["Abilene | isPartOf | Texas"], ["Abilene is in\n   Texas."]),
        # the same entry again (as in the WebNLG 2017 test set), plus one new reference
        (["Aarhus_Airport | cityServed | &quot;Aarhus, Denmark&quot;"],
         ["The Aarhus is the airport of Aarhus.", "Aarhus Airport serves Aarhus, Denmark."]),
    ]))
    task = load_task(f"webnlg:{path}")
    assert task.metric == "bleu"
    assert [e.input for e in task.test] == ['Aarhus Airport : cityServed : "Aarhus, Denmark"',
                                            "Abilene : isPartOf : Texas"]
    assert task.test[0].references == ["The Aarhus is the airport of Aarhus.",
                                       "Aarhus Airport serves Aarhus, Denmark."]
    assert task.test[1].references == ["Abilene is in Texas."]


def test_webnlg_directory_with_split_folders(tmp_path):
    write(tmp_path / "train" / "1triples" / "Airport.xml", xml_doc([(["A | b | C"], ["A b C."])]))
    write(tmp_path / "train" / "2triples" / "Airport.xml",
          xml_doc([(["D | e | F", "F | g | H"], ["D e F g H."])]))
    write(tmp_path / "dev" / "1triples" / "Airport.xml", xml_doc([(["X | y | Z"], ["X y Z."])]))
    write(tmp_path / "testdata_with_lex.xml", xml_doc([(["P | q | R"], ["P q R."])]))
    # inputs without references
    write(tmp_path / "testdata_no_lex.xml", xml_doc([(["P | q | R"], [])]))
    task = load_task(f"webnlg:{tmp_path}")
    assert (len(task.train), len(task.val), len(task.test)) == (2, 1, 1)
    assert task.notes == ["testdata_no_lex.xml has no references: skipped (it cannot be scored)"]


# ---------------------------------------------------------------------------------- Curation


def test_curation_csv_and_parquet(tmp_path):
    df = pd.DataFrame({"title": ["t1", "t2"], "summary": ["Short one.", "Short two."],
                       "url": ["u1", "u2"], "date": ["d", "d"],
                       "article_content": ["A long article, one.", "Another article."]})
    csv = tmp_path / "curation.csv"
    df.to_csv(csv, index=False)
    task = load_task(f"curation:{csv}")
    assert task.metric == "perplexity"
    assert [(e.input, e.references) for e in task.test] == [
        ("A long article, one.", ["Short one."]), ("Another article.", ["Short two."])]
    pq = tmp_path / "curation.parquet"
    df.to_parquet(pq)
    assert load_task(f"curation:{pq}").test == task.test


# ---------------------------------------------------------------------------------- builtin


def test_builtin_deterministic_and_seeded():
    a = load_task("builtin", seed=0)
    assert len(a.train) == 2000 and len(a.val) == 200 and len(a.test) == 200
    assert a == load_task("builtin", seed=0)
    b = load_task("builtin", seed=1)
    assert [e.input for e in a.train] != [e.input for e in b.train]
    assert a.metric == "bleu"


def test_builtin_references_consistent_and_splits_disjoint():
    task = make_builtin_task(n_train=500, n_val=100, n_test=100, seed=5)
    for ex in task.train + task.val + task.test:
        slots = parse_mr(ex.input)
        assert ex.input.startswith("name[")
        assert 3 <= len(slots) <= 8
        assert 3 <= len(ex.references) <= 5
        assert len(set(ex.references)) == len(ex.references)
        for ref in ex.references:
            assert slots["name"] in ref
            for slot in ("food", "near"):
                if slot in slots:
                    assert slots[slot] in ref
    ins = [set(e.input for e in s) for s in (task.train, task.val, task.test)]
    assert sum(map(len, ins)) == 700
    assert not (ins[0] & ins[1] or ins[0] & ins[2] or ins[1] & ins[2])


def test_builtin_difficulty_knobs():
    easy = load_task("builtin:easy", n_train=300)
    hard = load_task("builtin:hard", n_train=300)
    assert easy.name == "builtin:easy" and len(easy.train) == 300
    easy_counts = {len(parse_mr(e.input)) for e in easy.train}
    hard_counts = {len(parse_mr(e.input)) for e in hard.train}
    assert easy_counts == {3, 4} and hard_counts == {6, 7, 8}
    assert all(len(e.references) == 1 for e in easy.train)  # fixed wording: one canonical reference
    assert all(len(e.references) >= 3 for e in hard.train)
    with pytest.raises(MiniSPDFError, match="min_slots"):
        make_builtin_task(min_slots=5, max_slots=3)


# ------------------------------------------------------------------------------- fine-tuning format


def test_encode_example_mask_alignment():
    tokens, mask = encode_example(TOK, "ab", "xyz", block_size=64)
    assert tokens == [97, 98, 10, 120, 121, 122, 256]
    assert len(mask) == len(tokens) - 1
    # position i predicts tokens[i+1]: prompt 'a','b' -> 0; '\n'->'x', 'x'->'y', 'y'->'z', 'z'->eot
    # -> 1
    assert mask == [0, 0, 1, 1, 1, 1]
    predicted = [tokens[i + 1] for i in range(len(mask)) if mask[i]]
    assert predicted == TOK.encode("xyz") + [TOK.eot_id]
    assert encode_prompt(TOK, "ab") == tokens[:3] == TOK.encode("ab" + SEPARATOR)


def test_encode_example_truncation():
    # 10 input + 1 sep + 3 target + 1 eot = 15 tokens; block 10 allows 11 -> keep 6 input tokens
    tokens, mask = encode_example(TOK, "0123456789", "xyz", block_size=10)
    assert len(tokens) == 11 and TOK.decode(tokens) == "012345\nxyz"
    assert mask == [0] * 6 + [1] * 4
    with pytest.raises(MiniSPDFError,
                       match=r"example 7 is 15 tokens.*--block_size, or truncate=True"):
        encode_example(TOK, "0123456789", "xyz", block_size=10, truncate=False, index=7)
    with pytest.raises(MiniSPDFError, match="block_size"):
        encode_example(TOK, "0123456789", "a much too long target", block_size=10)
    assert encode_prompt(TOK, "0123456789", max_tokens=5) == TOK.encode("0123\n")


def test_finetune_batches_loss_contract():
    pairs = [("ab", "xyz"), ("hello", "w"), ("q", "a long-ish target")]
    g = torch.Generator().manual_seed(0)
    get_batch = FinetuneBatches(TOK, pairs, block_size=32, batch_size=6, generator=g)
    assert len(get_batch) == 3
    x, y, mask = get_batch.collate([0, 1, 2])
    assert x.dtype == torch.long and y.dtype == torch.long and mask.dtype == torch.bool
    longest = max(len(encode_example(TOK, i, t, 32)[0]) for i, t in pairs) - 1
    assert x.shape == y.shape == mask.shape == (3, longest)
    for b, (inp, tgt) in enumerate(pairs):
        tokens, m = encode_example(TOK, inp, tgt, 32)
        n = len(tokens) - 1
        assert x[b, :n].tolist() == tokens[:-1] and y[b, :n].tolist() == tokens[1:]
        assert mask[b, :n].tolist() == [bool(v) for v in m] and not mask[b, n:].any()
        assert (x[b, n:] == TOK.eot_id).all()
    # masked mean == mean over (target tokens + eot) of every example, computed by hand
    V = 257
    logits = torch.randn(3, longest, V, generator=torch.Generator().manual_seed(1))
    loss = F.cross_entropy(logits.view(-1, V), y.view(-1), reduction="none")[mask.view(-1)].mean()
    terms = []
    for b, (inp, tgt) in enumerate(pairs):
        targets = TOK.encode(tgt) + [TOK.eot_id]
        start = len(TOK.encode(inp + SEPARATOR)) - 1
        for k, tok in enumerate(targets):
            terms.append(-torch.log_softmax(logits[b, start + k], -1)[tok])
    assert torch.allclose(loss, torch.stack(terms).mean())
    assert int(mask.sum()) == sum(len(t) + 1 for _, t in pairs)
    # restoring the generator state restores the data position
    state = g.get_state()
    first = get_batch()
    g.set_state(state)
    again = get_batch()
    assert all(torch.equal(a, b) for a, b in zip(first, again))
    assert first[0].shape[0] == 6


def test_finetune_batches_errors():
    g = torch.Generator().manual_seed(0)
    with pytest.raises(MiniSPDFError, match="empty"):
        FinetuneBatches(TOK, [], 16, 2, g)
    with pytest.raises(MiniSPDFError, match="example 1 is"):
        FinetuneBatches(TOK, [("a", "b"), ("a" * 40, "b")], 16, 2, g, truncate=False)


# ---------------------------------------------------------------------------------- errors


def test_missing_column(tmp_path):
    path = write(tmp_path / "devset.csv", "mr,text\n\"name[A]\",A.\n")
    with pytest.raises(MiniSPDFError,
                       match=r"missing column\(s\) ref.*expected columns mr, ref.*found mr, text"):
        load_task(f"e2e:{path}")
    cur = write(tmp_path / "cur.csv", "title,summary\nt,s\n")
    with pytest.raises(MiniSPDFError, match="article_content"):
        load_task(f"curation:{cur}")


def test_empty_reference_names_row(tmp_path):
    path = write(tmp_path / "devset.csv", 'mr,ref\n"name[A]",A.\n"name[A]",\n')
    with pytest.raises(MiniSPDFError, match=r"data row 2 .*empty or missing reference"):
        load_task(f"e2e:{path}")
    dart = write(tmp_path / "d.json", json.dumps([{"tripleset": [["a", "b", "c"]],
                                                   "annotations": [{"source": "x", "text": " "}]}]))
    with pytest.raises(MiniSPDFError, match="entry 0 has no non-empty reference"):
        load_task(f"dart:{dart}")
    web = write(tmp_path / "w.xml", xml_doc([(["A | b | C"], ["A b C."]), (["D | e | F"], [])]))
    with pytest.raises(MiniSPDFError, match="entry Id2 has no non-empty <lex>"):
        load_task(f"webnlg:{web}")


@pytest.mark.parametrize("name, file, text, message", [
    ("e2e", "devset.csv", "", "is empty"),
    ("e2e", "h.csv", "mr,ref\n", "no rows"),
    ("dart", "bad.json", '[{"tripleset": [', "not valid JSON"),
    ("webnlg", "bad.xml", "<benchmark><entries><entry>", "not well-formed XML"),
])
def test_empty_and_malformed_files(tmp_path, name, file, text, message):
    with pytest.raises(MiniSPDFError, match=message):
        load_task(f"{name}:{write(tmp_path / file, text)}")


def test_missing_files_and_folders_without_the_official_names(tmp_path):
    with pytest.raises(MiniSPDFError, match="not found"):
        load_task(f"e2e:{tmp_path / 'nope.csv'}")
    with pytest.raises(MiniSPDFError, match="not found"):
        load_task_files("dart", test=tmp_path / "nope.json")
    (tmp_path / "sub").mkdir()
    with pytest.raises(MiniSPDFError, match="no e2e files found in directory .*trainset.csv"):
        load_task(f"e2e:{tmp_path / 'sub'}")
    no_refs = write(tmp_path / "sub" / "testset.csv", 'mr\n"name[A]"\n')
    with pytest.raises(MiniSPDFError, match="use testset_w_refs.csv"):
        load_task(f"e2e:{no_refs}")


def test_unknown_task_and_webnlg_without_path():
    with pytest.raises(MiniSPDFError,
                       match=r"unknown task 'wikibio'.*builtin.*e2e.*dart.*webnlg.*curation"):
        load_task("wikibio")
    with pytest.raises(MiniSPDFError, match="builtin:easy"):
        load_task("builtin:medium")
    with pytest.raises(MiniSPDFError, match="webnlg:PATH"):
        load_task("webnlg")


def test_error_messages_are_one_line(tmp_path):
    bad_json = write(tmp_path / "bad.json", '[{"tripleset":\n\n [')
    with pytest.raises(MiniSPDFError) as info:
        load_task(f"dart:{bad_json}")
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("name", ["e2e", "dart", "curation"])
def test_offline_hub_fails_fast(name):
    t0 = time.perf_counter()
    with pytest.raises(MiniSPDFError, match=rf"offline \(HF_HUB_OFFLINE=1\).*--task {name}:"):
        load_task(name)
    assert time.perf_counter() - t0 < 2.0


def test_unreachable_hub_fails_fast(monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.delenv("HF_DATASETS_OFFLINE", raising=False)
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # nothing listens on the discard port
    t0 = time.perf_counter()
    with pytest.raises(MiniSPDFError, match=r"cannot reach 127.0.0.1:9 .*--task e2e:"):
        load_task("e2e")
    assert time.perf_counter() - t0 < 4.0
