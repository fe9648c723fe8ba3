"""The official triples formats: DART (JSON, or XML) and WebNLG 2017 (XML).

A tripleset becomes one input string by :func:`linearize_triples`::

    [["Aarhus_Airport", "cityServed", "Aarhus"], ["Aarhus", "country", "Denmark"]]
    -> "Aarhus Airport : cityServed : Aarhus | Aarhus : country : Denmark"

Each triple is written ``subject : predicate : object``, triples joined by `` | `` in file order;
underscores (DBpedia-style names) become spaces and whitespace runs collapse. Nothing else changes.

``Example.meta["subset"]`` is where the release marks one: WebNLG ``seen`` (the 2017 challenge's 10
training categories, :data:`WEBNLG_SEEN`) or ``unseen`` (its 5 test-only ones,
:data:`WEBNLG_UNSEEN`),
DART the ``source`` of its annotations (``e2e``, ``webnlg``, ``WikiSQL_*``, ...).
"""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Iterable, Sequence

from minispdf.errors import MiniSPDFError, one_line
from minispdf.fileio import valid_unicode

from .core import Example, NoReferencesError, clean, group, require_file


def _norm_name(text: object) -> str:
    return " ".join(str(text).replace("_", " ").split())


def linearize_triples(triples: Sequence[Sequence[str]]) -> str:
    """Linearise RDF triples into one input string: ``"s : p : o | s2 : p2 : o2"``.

    Underscores are replaced by spaces and whitespace runs collapse to one space; triple order is
    kept. Raises :class:`MiniSPDFError` for a triple that does not have exactly three parts.
    """
    parts = []
    for i, triple in enumerate(triples):
        if isinstance(triple, str) or len(triple) != 3:
            raise MiniSPDFError(
                f"triple {i} is {triple!r}, not [subject, predicate, object]; "
                "fix the tripleset so that every triple has exactly three parts"
            )
        parts.append(" : ".join(_norm_name(x) for x in triple))
    return " | ".join(parts)


def _load_dart_json(path: Path) -> list[Example]:
    require_file(path, "DART JSON")
    try:
        with open(path, encoding="utf-8-sig") as f:
            data = json.load(f)
    except json.JSONDecodeError as e:
        raise MiniSPDFError(
            f"{path} is not valid JSON ({one_line(e)}); pass the official DART JSON file") from None
    except UnicodeDecodeError as e:
        raise MiniSPDFError(
            f"{path} is not UTF-8 text ({one_line(e)}); pass the official DART JSON file") from None
    except RecursionError:
        raise MiniSPDFError(f"{path} is nested too deeply to be DART JSON; pass the official "
                            f"DART JSON file") from None
    if not valid_unicode(data):
        raise MiniSPDFError(f"{path} holds a lone surrogate (an unpaired \\ud800-\\udfff escape), "
                            f"which is not "
                            "text; fix that escape or pass the official DART JSON file")
    if not isinstance(data, list):
        raise MiniSPDFError(
            f"{path}: expected a JSON list of entries {{tripleset, annotations}}, found "
            f"{type(data).__name__}; "
            "pass the official DART JSON file"
        )
    if not data:
        raise MiniSPDFError(f"{path} has no entries; pass a DART JSON file that has data in it")
    pairs = []
    for i, entry in enumerate(data):
        if not isinstance(entry, dict) or "tripleset" not in entry or "annotations" not in entry:
            keys = ", ".join(entry) if isinstance(entry, dict) else type(entry).__name__
            raise MiniSPDFError(
                f"{path}: entry {i} lacks 'tripleset' or 'annotations' (found {keys}); "
                "pass the official DART JSON format"
            )
        try:
            inp = linearize_triples(entry["tripleset"])
        except (MiniSPDFError, TypeError) as e:
            raise MiniSPDFError(f"{path}: entry {i}: {one_line(e)}") from None
        anns = entry["annotations"] or []
        if not isinstance(anns, list):
            raise MiniSPDFError(f"{path}: entry {i} has 'annotations' {anns!r}, not a list of "
                                f"{{source, text}}; "
                                "fix or delete the entry")
        texts = [clean(a.get("text")) if isinstance(a, dict) else clean(a) for a in anns]
        texts = [t for t in texts if t]
        if not inp:
            raise MiniSPDFError(
                f"{path}: entry {i} has an empty tripleset; fix or delete the entry")
        if not texts:
            raise MiniSPDFError(
                f"{path}: entry {i} has no non-empty reference text; fix or delete the entry")
        sources = [a.get("source") for a in anns if isinstance(a, dict)]
        meta = dart_meta(sources)
        pairs.extend((inp, t, i, meta) for t in texts)
    return group(pairs, dedupe_from_other_entries=True)


def dart_meta(sources: Iterable) -> dict:
    """DART marks each annotation's source data set (webnlg, e2e, WikiSQL_*, WikiTableQuestions_*):
    an entry is scored in its source's subset (sources joined by '+' when they differ)."""
    names = sorted({str(x).strip() for x in sources if x is not None and str(x).strip()})
    return {"source": "+".join(names), "subset": "+".join(names)} if names else {}


def _split_mtriple(text: str) -> list[str]:
    parts = [p.strip() for p in text.split(" | ")]
    if len(parts) != 3:
        raw = [p.strip() for p in text.split("|")]
        parts = raw[:2] + ["|".join(raw[2:]).strip()] if len(raw) >= 3 else raw
    return parts


#: The WebNLG 2017 challenge's categories: the 10 of its train/dev data (its test file
#: testdata_with_lex.xml holds these and the unseen ones) and the 5 that appear only in the test
#: set (its file testdata_unseen_with_lex.xml), by the entries' ``category`` attribute.
WEBNLG_SEEN = ("Airport", "Astronaut", "Building", "City", "ComicsCharacter", "Food", "Monument",
               "SportsTeam", "University", "WrittenWork")
WEBNLG_UNSEEN = ("Artist", "Athlete", "CelestialBody", "MeanOfTransportation", "Politician")


def _webnlg_meta(category: str | None) -> dict:
    if not category:
        return {}
    subset = "seen" if category in WEBNLG_SEEN else "unseen" if category in WEBNLG_UNSEEN else None
    return {"category": category, **({"subset": subset} if subset else {})}


def _load_xml(path: Path, what: str) -> list[Example]:
    """WebNLG-style XML: benchmark/entries/entry, modifiedtripleset/mtriple "s | p | o", lex texts.

    A file in which no entry has a <lex> (the test set without references) raises
    :class:`NoReferencesError`; a directory loader skips it with a note.
    """
    require_file(path, what)
    try:
        root = ET.parse(path).getroot()
    except ET.ParseError as e:
        raise MiniSPDFError(f"{path} is not well-formed XML ({one_line(e)}); pass the "
                            f"official {what} file") from None
    entries = (root.findall("./entries/entry") if root.tag == "benchmark"
               else root.findall(".//entries/entry"))
    if not entries:
        raise MiniSPDFError(
            f"{path} has no benchmark/entries/entry elements (root is <{root.tag}>); pass the "
            f"official {what} file"
        )
    if not any(entry.find("./lex") is not None for entry in entries):
        raise NoReferencesError(
            f"{path} has {len(entries)} inputs but no references (no <lex> elements), so it "
            f"cannot be scored; "
            "use the file with references (e.g. testdata_with_lex.xml)"
        )
    is_webnlg = what.startswith("WebNLG")
    pairs = []
    for i, entry in enumerate(entries):
        eid = entry.get("eid", str(i))
        mtriples = (entry.findall("./modifiedtripleset/mtriple")
                    or entry.findall("./originaltripleset/otriple"))
        if not mtriples:
            raise MiniSPDFError(
                f"{path}: entry {eid} has no modifiedtripleset/mtriple; fix or delete the entry")
        triples = []
        for t in mtriples:
            parts = _split_mtriple(t.text or "")
            if len(parts) != 3:
                raise MiniSPDFError(
                    f"{path}: entry {eid} has triple {(t.text or '').strip()!r}, not 's | p | o'; "
                    f"fix the triple"
                )
            triples.append(parts)
        inp = linearize_triples(triples)
        texts = []
        for lex in entry.findall("./lex"):
            node = lex.find("./text")  # WebNLG 2.x+ nests <text>; 2017 has the text directly
            raw = (node.text if node is not None else lex.text) or ""
            text = " ".join(raw.split())
            if text:
                texts.append(text)
        if not texts:
            raise MiniSPDFError(
                f"{path}: entry {eid} has no non-empty <lex> reference; fix or delete the entry")
        meta = _webnlg_meta(entry.get("category")) if is_webnlg else {}
        pairs.extend((inp, t, i, meta) for t in texts)
    return group(pairs, dedupe_from_other_entries=True)


def load_dart_file(path: Path) -> list[Example]:
    if path.suffix.lower() == ".xml":
        return _load_xml(path, "DART XML")
    return _load_dart_json(path)


def load_webnlg_file(path: Path) -> list[Example]:
    return _load_xml(path, "WebNLG XML")

