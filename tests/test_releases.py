"""Official releases read exactly: every input once per split with exactly its own references,
however the release spreads it over files; files without references skipped with a note;
subsets (WebNLG seen/unseen, DART source) taken from what the release marks."""

import json

import pytest

from minispdf.errors import MiniSPDFError
from minispdf.tasks import WEBNLG_SEEN, WEBNLG_UNSEEN, load_task, split_counts, split_task


def write(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def webnlg_xml(entries, original=None):
    """WebNLG 2017 XML; entries are (category, eid, [mtriple], [lex]); the original tripleset is
    the modified one unless ``original`` (one otriple for every entry) is given."""
    body = []
    for cat, eid, triples, lexes in entries:
        ot = "".join(f"<otriple>{t}</otriple>" for t in ([original] if original else triples))
        mt = "".join(f"<mtriple>{t}</mtriple>" for t in triples)
        lx = "".join(f'<lex comment="good" lid="Id{j}">{x}</lex>'
                     for j, x in enumerate(lexes, start=1))
        body.append(f'<entry category="{cat}" eid="{eid}" size="{len(triples)}">'
                    f"<originaltripleset>{ot}</originaltripleset>"
                    f"<modifiedtripleset>{mt}</modifiedtripleset>{lx}</entry>")
    return (f'<?xml version="1.0" '
            f'?>\n<benchmark>\n<entries>\n{"".join(body)}\n</entries>\n</benchmark>\n')


# The 2017 test set: the full file (seen and unseen categories), the unseen-categories file
# (repeating the full file's unseen entries, with its own eids) and the file without references.
SEEN = [("Airport", "Id1", ["Aarhus_Airport | cityServed | Aarhus"],
         ["Aarhus Airport serves Aarhus.",
                                                                      ("Aarhus is served by "
                                                                       "its airport.")]),
        ("Food", "Id2", ["Ajoblanco | country | Spain"], ["Ajoblanco is from Spain."]),
        ("City", "Id3", ["Abilene | isPartOf | Texas", "Texas | country | United_States"],
         ["Abilene is in Texas, USA.", "Abilene is a Texan city.", "Texas, USA, has Abilene."])]
UNSEEN = [("Artist", "Id4", ["Alan_Frew | genre | Rock_music"],
           ["Alan Frew plays rock.", "Alan Frew is a rocker."]),
          ("Politician", "Id5", ["Abdul_Taib | party | PBB"], ["Abdul Taib is in the PBB."])]


def make_webnlg_2017(root):
    write(root / "train" / "1triples" / "Airport.xml", webnlg_xml([
        ("Airport", "Id1", ["A | b | C"], ["A b C.", "C is b of A."]),
        ("Airport", "Id2", ["D | e | F"], ["D e F."])]))
    write(root / "train" / "2triples" / "Food.xml",
          webnlg_xml([("Food", "Id1", ["G | h | I", "I | j | K"], ["G h I j K."])]))
    write(root / "dev" / "1triples" / "City.xml",
          webnlg_xml([("City", "Id1", ["X | y | Z"], ["X y Z.", "Z of X."])]))
    write(root / "test" / "testdata_with_lex.xml",
          webnlg_xml(SEEN[:2] + UNSEEN[:1] + SEEN[2:] + UNSEEN[1:]))
    write(root / "test" / "testdata_unseen_with_lex.xml",
          webnlg_xml([(c, f"Id{i}", t, x) for i, (c, _, t, x) in enumerate(UNSEEN, start=1)]))
    write(root / "test" / "testdata_no_lex.xml",
          webnlg_xml([(c, e, t, []) for c, e, t, _ in SEEN + UNSEEN]))


def test_webnlg_2017_release_counts_each_test_input_once(tmp_path):
    make_webnlg_2017(tmp_path)
    task = load_task(f"webnlg:{tmp_path}")
    assert split_counts(task) == {"train": {"inputs": 3, "references": 4},
                                  "val": {"inputs": 1, "references": 2},
                                  "test": {"inputs": 5, "references": 9}}
    # the full file's order, and every input with exactly its own references (not twice)
    assert ([ex.references for ex in task.test]
            == [e[3] for e in SEEN[:2] + UNSEEN[:1] + SEEN[2:] + UNSEEN[1:]])
    assert "test 5 inputs / 9 references" in task.description
    assert task.notes == ["testdata_no_lex.xml has no references: skipped (it cannot be scored)",
                          "testdata_unseen_with_lex.xml: 2 of its 2 inputs are also in a larger "
                          "file of the split; "
                          "merged, their references not counted twice"]


def test_webnlg_subsets_by_category(tmp_path):
    make_webnlg_2017(tmp_path)
    task = load_task(f"webnlg:{tmp_path}")
    assert [ex.meta["subset"] for ex in task.test] == ["seen", "seen", "unseen", "seen", "unseen"]
    assert [ex.meta["category"] for ex in task.test] == ["Airport", "Food", "Artist", "City",
                                                         "Politician"]
    cut = split_task(task, 0.2, 0.2)  # a re-split keeps what the release said about each input
    assert sorted(ex.meta["category"] for s in (cut.train, cut.val, cut.test) for ex in s
                  if ex.input in {t.input for t in task.test}) == sorted(ex.meta["category"]
                                                                         for ex in task.test)
    assert cut.notes == task.notes
    assert (len(WEBNLG_SEEN) == 10 and len(WEBNLG_UNSEEN) == 5
            and not set(WEBNLG_SEEN) & set(WEBNLG_UNSEEN))
    # a category of a later release is in neither subset (scored in "all" only)
    path = write(tmp_path / "x.xml", webnlg_xml([("Company", "Id1", ["A | b | C"], ["A b C."])]))
    ex = load_task(f"webnlg:{path}").test[0]
    assert ex.meta == {"category": "Company"}


def test_overlapping_files_with_extra_references_are_merged_by_content(tmp_path):
    """An input repeated in a second file brings only the references the first file lacks."""
    write(tmp_path / "test" / "a_test.xml", webnlg_xml([SEEN[0], SEEN[1]]))
    write(tmp_path / "test" / "b_test.xml", webnlg_xml([
        ("Airport", "Id9", SEEN[0][2], ["Aarhus is served by its airport.", "A new reference."])]))
    task = load_task(f"webnlg:{tmp_path}")
    assert split_counts(task)["test"] == {"inputs": 2, "references": 4}
    assert task.test[0].references == ["Aarhus Airport serves Aarhus.",
                                       "Aarhus is served by its airport.",
                                       "A new reference."]


def test_single_reference_less_file_is_an_error_naming_the_fix(tmp_path):
    path = write(tmp_path / "testdata_no_lex.xml",
                 webnlg_xml([(c, e, t, []) for c, e, t, _ in SEEN]))
    with pytest.raises(MiniSPDFError, match=r"3 inputs but no references.*testdata_with_lex.xml"):
        load_task(f"webnlg:{path}")
    e2e = write(tmp_path / "testset.csv", 'mr\n"name[A]"\n"name[B]"\n')
    with pytest.raises(MiniSPDFError, match=r"no reference column.*use testset_w_refs.csv"):
        load_task(f"e2e:{e2e}")


E2E_DEV = ('mr,ref\n"name[A], food[Thai]",A is Thai.\n"name[A], food[Thai]",A serves Thai '
           'food.\n"name[B]",B.\n')
E2E_TEST = ('mr,ref\n"name[C], area[riverside]",C is by the river.\n"name[C], area[riverside]",C '
            'is riverside.\n'
            '"name[C], area[riverside]",C is by the river.\n"name[D]",D.\n')


def test_e2e_release_counts_and_reference_less_test_file(tmp_path):
    write(tmp_path / "trainset.csv", E2E_DEV)
    write(tmp_path / "devset.csv", E2E_DEV)
    write(tmp_path / "testset.csv", 'mr\n"name[C], area[riverside]"\n"name[D]"\n')
    write(tmp_path / "testset_w_refs.csv", E2E_TEST)
    task = load_task(f"e2e:{tmp_path}")
    # one row per reference; a reference repeated inside one MR is kept, as the official files have
    # it
    assert split_counts(task)["test"] == {"inputs": 2, "references": 4}
    assert task.notes == []
    (tmp_path / "testset_w_refs.csv").unlink()
    task = load_task(f"e2e:{tmp_path}")
    assert split_counts(task) == {"train": {"inputs": 2, "references": 3},
                                  "val": {"inputs": 2, "references": 3},
                                  "test": {"inputs": 0, "references": 0}}
    assert task.notes == ["testset.csv has no references: skipped (it cannot be scored)"]


DART = [
    {"tripleset": [["Jaws", "YEAR", "1975"]], "subtree_was_extended": False,
     "annotations": [{"source": "WikiTableQuestions_mturk", "text": "Jaws is from 1975."},
                     {"source": "WikiTableQuestions_mturk", "text": "Jaws came out in 1975."}]},
    {"tripleset": [["Aromi", "eatType", "pub"]], "subtree_was_extended": False,
     "annotations": [{"source": "e2e", "text": "Aromi is a pub."}]},
    {"tripleset": [["Mars", "colour", "red"]], "subtree_was_extended": True,
     "annotations": [{"source": "webnlg", "text": "Mars is red."}]},
    {"tripleset": [["Jaws", "YEAR", "1975"]], "subtree_was_extended": False,  # the same input again
     "annotations": [{"source": "WikiTableQuestions_mturk", "text": "Jaws came out in 1975."}]},
]


def test_dart_release_counts_and_source_subsets(tmp_path):
    write(tmp_path / "dart-v1.1.1-full-train.json", json.dumps(DART[1:3]))
    write(tmp_path / "dart-v1.1.1-full-dev.json", json.dumps(DART[2:3]))
    write(tmp_path / "dart-v1.1.1-full-test.json", json.dumps(DART))
    task = load_task(f"dart:{tmp_path}")
    assert split_counts(task) == {"train": {"inputs": 2, "references": 2},
                                  "val": {"inputs": 1, "references": 1},
                                  "test": {"inputs": 3, "references": 4}}
    assert [ex.meta["subset"] for ex in task.test] == ["WikiTableQuestions_mturk", "e2e", "webnlg"]
