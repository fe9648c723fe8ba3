"""Downstream tasks for dense fine-tuning: loading, a built-in generator, and the fine-tuning format.

The SPDF paper fine-tunes its sparse pre-trained GPTs on three data-to-text tasks (E2E, WebNLG,
DART; metric BLEU) and one summarisation task (Curation Corpus; metric perplexity). This module
turns each of them into one small, uniform structure::

    Task(name, metric, train=[Example, ...], val=[...], test=[...], description)
    Example(input="name[The Copper Kettle], eatType[pub], ...", references=["...", "..."])

Task specs (what ``--task SPEC`` accepts, see :func:`load_task`)
-----------------------------------------------------------------
``builtin``, ``builtin:easy``, ``builtin:hard``
    A seeded generator of E2E-style restaurant meaning representations (MRs) with invented names
    and hand-written template references; needs no files and no network (:func:`make_builtin_task`).
``e2e:PATH`` / ``e2e``
    Official E2E CSV (columns ``mr,ref``, one row per reference), or the hub's Parquet export of
    ``tuetschek/e2e_nlg``.
``dart:PATH`` / ``dart``
    Official DART JSON or XML, or the hub's Parquet export of ``Yale-LILY/dart``.
``webnlg:PATH``
    Official WebNLG 2017 XML (there is no loadable hub copy, so a PATH is required).
``curation:PATH`` / ``curation``
    CSV or Parquet with ``article_content`` and ``summary`` columns, or hub ``d0rj/curation-corpus``.

PATH may be one file or a directory. A directory is searched for the official file names
(E2E: ``trainset.csv``, ``devset.csv``, ``testset_w_refs.csv`` or ``testset.csv``; DART:
``*-train.json``, ``*-dev.json``, ``*-test.json`` (or ``.xml``); WebNLG: ``train``/``dev``/``test``
sub-folders or XML files whose names contain those words; Curation: CSV/Parquet files whose names
contain train/dev/val/test). A single file goes entirely into ``test`` with ``train``/``val`` empty:
use :func:`load_task_files` to pick a file per split (e.g. fine-tune on E2E dev, evaluate on E2E
test) or :func:`split_task` to cut one file into three disjoint splits.

Grouping, and releases spread over several files
------------------------------------------------
Every loader groups references by their exact input string: all rows/entries whose input is the
same string become ONE Example, with its references in file order, placed where the input first
appeared. This matters for multi-reference BLEU and keeps inputs unique within a split. (For
XML/JSON entries that repeat an input, a reference string already given by an earlier entry is not
added again, so a duplicated entry does not double its references; duplicates inside one CSV
input are kept, as in the official E2E files.)

A split read from several files is merged the same way across files: the WebNLG 2017 test folder
holds ``testdata_with_lex.xml`` (every test input), ``testdata_unseen_with_lex.xml`` (the
unseen-category entries again) and ``testdata_no_lex.xml`` (no references). Each input is kept
once with exactly its own references (the larger file first, so its order is kept), and a file
with inputs but no references (also E2E's ``testset.csv``) is skipped. ``Task.notes`` says what
was merged or skipped; ``Task.description`` and :func:`split_counts` give the inputs and
references per split, to compare with the release's own numbers.

Subsets
-------
``Example.meta["subset"]`` is where the release marks one: WebNLG ``seen`` (the 2017 challenge's
10 training categories, :data:`WEBNLG_SEEN`) or ``unseen`` (its 5 test-only ones,
:data:`WEBNLG_UNSEEN`) from each entry's ``category``; DART the ``source`` of its annotations
(``e2e``, ``webnlg``, ``WikiSQL_*``, ``WikiTableQuestions_*``). ``minispdf.metrics`` scores each
subset and the whole split ("all").

Triples linearisation (WebNLG, DART)
------------------------------------
A tripleset is turned into one input string by :func:`linearize_triples`::

    [["Aarhus_Airport", "cityServed", "Aarhus"], ["Aarhus", "country", "Denmark"]]
    -> "Aarhus Airport : cityServed : Aarhus | Aarhus : country : Denmark"

Each triple is written ``subject : predicate : object``; triples are joined by `` | `` in their
file order; underscores (DBpedia-style names) become spaces and runs of whitespace collapse to one
space. Nothing else is changed (quotes, case and brackets such as ``[TABLECONTEXT]`` are kept).

Fine-tuning format
------------------
One training sequence is ``prompt + SEPARATOR + target + <eot>``, each piece encoded separately::

    tokens = enc(input) + enc(SEPARATOR) + enc(target) + [eot_id]

Decoding starts from :func:`encode_prompt` (``enc(input) + enc(SEPARATOR)``, the exact same
tokens) and stops at ``eot_id``. The loss mask of :func:`encode_example` is aligned with the
model's INPUT positions ``x = tokens[:-1]`` and next-token targets ``y = tokens[1:]``: it has
length ``len(tokens) - 1`` and ``mask[i]`` is 1 exactly when ``y[i] = tokens[i + 1]`` is a target
token or the final eot, i.e. for ``i >= len(prompt) - 1``. So the loss is averaged over the
``len(target) + 1`` predictions of the target and of the end of text, never over the prompt.
:func:`make_finetune_batches` uses the same contract for padded batches::

    x, y, mask = get_batch()                       # (B, T) long, long, bool
    logits = model(x)                              # (B, T, V)
    loss = F.cross_entropy(logits.view(-1, V), y.view(-1), reduction="none")[mask.view(-1)].mean()

(For a model whose forward computes the loss itself with ``ignore_index=-1``, pass
``y.masked_fill(~mask, -1)`` as its targets: the result is the same average.)
"""

from __future__ import annotations

import json
import math
import os
import random
import re
import socket
import threading
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Iterator, Sequence

import torch

from minispdf.errors import MiniSPDFError

__all__ = [
    "Example",
    "Task",
    "TASK_NAMES",
    "SEPARATOR",
    "load_task",
    "load_task_files",
    "split_task",
    "split_counts",
    "WEBNLG_SEEN",
    "WEBNLG_UNSEEN",
    "make_builtin_task",
    "task_stats",
    "linearize_triples",
    "parse_mr",
    "format_mr",
    "training_pairs",
    "encode_example",
    "encode_prompt",
    "make_finetune_batches",
    "FinetuneBatches",
]

#: The task names :func:`load_task` accepts (before an optional ``:PATH`` or ``:easy``/``:hard``).
TASK_NAMES = ("builtin", "e2e", "dart", "webnlg", "curation")

#: What separates the input from the target in a fine-tuning sequence (see the module docstring).
SEPARATOR = "\n"


# --------------------------------------------------------------------------------------------
# Data structures
# --------------------------------------------------------------------------------------------


@dataclass
class Example:
    """One input and all of its reference outputs.

    ``input`` is the source text: an E2E meaning representation, linearised triples
    (:func:`linearize_triples`) or a news article. ``references`` holds one or more reference
    outputs, in file order. ``meta`` holds what the release says about the input beyond that
    (WebNLG ``category``, DART ``source``) and ``subset``, the subset it is scored in (WebNLG
    ``seen``/``unseen``, DART its source); it does not take part in ``==``.
    """

    input: str
    references: list[str]
    meta: dict = field(default_factory=dict, compare=False)


@dataclass
class Task:
    """A downstream task: three splits of :class:`Example` and the metric it is judged by.

    ``metric`` is ``"bleu"`` for data-to-text tasks and ``"perplexity"`` for summarisation
    (Curation Corpus), as in the SPDF paper. A split may be empty (e.g. a task loaded from one
    file has only ``test``). ``notes`` says what the loader left out and why (a file without
    references, inputs that several files repeat).
    """

    name: str
    metric: str
    train: list[Example] = field(default_factory=list)
    val: list[Example] = field(default_factory=list)
    test: list[Example] = field(default_factory=list)
    description: str = ""
    notes: list[str] = field(default_factory=list, compare=False)


# --------------------------------------------------------------------------------------------
# Small helpers
# --------------------------------------------------------------------------------------------


def _one_line(text: object) -> str:
    """Collapse an exception message (which may span lines) into one line."""
    return " ".join(str(text).split())


def _clean(text: object) -> str:
    """A reference or input cell as a stripped string; '' for None/NaN."""
    if text is None:
        return ""
    if isinstance(text, float) and math.isnan(text):
        return ""
    return str(text).strip()


def _group(pairs: Iterable[tuple[str, str]], dedupe_from_other_entries: bool = False) -> list[Example]:
    """Group (input, reference) pairs by exact input string, keeping first-appearance order.

    Pairs may carry an entry id as a third item when ``dedupe_from_other_entries`` is set: then a
    reference already contributed by an EARLIER entry with the same input is dropped. A fourth
    item is the entry's ``meta``; the first entry of an input gives the Example's.
    """
    by_input: dict[str, Example] = {}
    owners: dict[str, dict[str, object]] = {}
    for item in pairs:
        inp, ref = item[0], item[1]
        ex = by_input.get(inp)
        if ex is None:
            ex = by_input[inp] = Example(inp, [], dict(item[3]) if len(item) > 3 else {})
            owners[inp] = {}
        if dedupe_from_other_entries:
            entry = item[2]
            first_owner = owners[inp].get(ref)
            if first_owner is not None and first_owner != entry:
                continue
            owners[inp].setdefault(ref, entry)
        ex.references.append(ref)
    return list(by_input.values())


def split_counts(task: Task) -> dict[str, dict[str, int]]:
    """``{split: {"inputs": n, "references": m}}`` for train, val and test."""
    return {s: {"inputs": len(getattr(task, s)), "references": sum(len(ex.references) for ex in getattr(task, s))}
            for s in ("train", "val", "test")}


def _split_counts(task: Task) -> str:
    c = split_counts(task)
    return ", ".join(f"{s} {c[s]['inputs']} inputs / {c[s]['references']} references" for s in c)


def task_stats(task: Task) -> dict:
    """Size of each split of ``task``: inputs, references and characters (inputs + references)."""
    splits = {}
    for split in ("train", "val", "test"):
        examples = getattr(task, split)
        splits[split] = {
            "inputs": len(examples),
            "references": sum(len(ex.references) for ex in examples),
            "characters": sum(len(ex.input) + sum(map(len, ex.references)) for ex in examples),
        }
    return {"task": task.name, "metric": task.metric, "description": task.description, "splits": splits}


def _require_file(path: Path, what: str) -> None:
    if not path.exists():
        raise MiniSPDFError(f"{what} file not found: {path}; check the path (--task NAME:PATH)")
    if path.is_file() and path.stat().st_size == 0:
        raise MiniSPDFError(f"{path} is empty; pass a {what} file that has data in it (in the official format)")


# --------------------------------------------------------------------------------------------
# Triples and meaning representations
# --------------------------------------------------------------------------------------------


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


_MR_SLOT = re.compile(r"\s*([^\[\],]+?)\s*\[([^\]]*)\]\s*(?:,|$)")

#: The E2E slots, in the order the official files write them.
E2E_SLOTS = ("name", "eatType", "food", "priceRange", "customer rating", "area", "familyFriendly", "near")


def parse_mr(mr: str) -> dict[str, str]:
    """Parse an E2E meaning representation ``"name[X], eatType[pub]"`` into ``{slot: value}``."""
    return {m.group(1): m.group(2) for m in _MR_SLOT.finditer(mr)}


def format_mr(slots: dict[str, str]) -> str:
    """Write ``{slot: value}`` in E2E's format, slots in the official order (unknown ones last)."""
    order = {s: i for i, s in enumerate(E2E_SLOTS)}
    keys = sorted(slots, key=lambda s: order.get(s, len(order)))
    return ", ".join(f"{k}[{slots[k]}]" for k in keys)


# --------------------------------------------------------------------------------------------
# The built-in generator: E2E-style MRs with invented values and template references
# --------------------------------------------------------------------------------------------

_NAMES = (
    "The Copper Kettle", "Bramble House", "The Salted Finch", "Juniper Lane", "The Gilded Spoon",
    "Marrow and Mint", "The Velvet Fig", "Old Lantern", "Saffron Wharf", "The Tin Whistle",
    "Hazel Grove", "Blue Heron", "The Crooked Oak", "Little Olive", "Quill and Ember",
    "The Amber Door", "Foxglove", "The Iron Ladle", "Pepper Mill", "The Wandering Goose",
    "Silver Birch", "The Painted Crow", "Clover Court", "The Lazy Otter", "Morning Glory",
    "The Brass Compass", "Wild Thyme", "The Paper Moon", "Cinder and Sage", "The Red Kite",
)
_NEAR = (
    "Harbour Bridge", "the Glass Market", "St Aldric's Church", "Kingsgate Station",
    "the Town Museum", "Willow Park", "the Old Mill", "Beacon Hill", "the Corn Exchange",
    "Lark Rise Theatre", "the Botanic Gardens", "Ferry Quay",
)
_EAT_TYPES = ("pub", "coffee shop", "restaurant", "bistro", "tea room", "wine bar")
_FOODS = ("Italian", "Thai", "Mexican", "Greek", "Korean", "Turkish", "Spanish", "Lebanese",
          "Vietnamese", "Peruvian")
_AREAS = ("city centre", "riverside", "old town", "harbour front", "university district")

# Each value maps to its verb phrases (subject "it"); the first one is the "fixed" wording.
_PRICE = {
    "cheap": ("has cheap prices", "is cheap", "is inexpensive", "offers cheap prices"),
    "moderate": ("has moderate prices", "is moderately priced", "is in the moderate price range"),
    "expensive": ("has expensive prices", "is expensive", "is on the expensive side"),
    "under £15": ("has prices under £15", "costs under £15 per person", "charges under £15"),
    "£15-30": ("has prices of £15-30", "costs £15-30 per person", "is in the £15-30 price range"),
    "over £30": ("has prices over £30", "costs over £30 per person", "charges over £30"),
}
_RATING_WORDS = ("poor", "average", "excellent")
_RATING_NUMS = ("2 out of 5", "4 out of 5", "5 out of 5")
_FAMILY = {
    "yes": ("is family friendly", "is kid friendly", "welcomes children", "is suitable for families"),
    "no": ("is not family friendly", "is not kid friendly", "does not welcome children",
           "is not suitable for families"),
}
_VALUES = {
    "eatType": _EAT_TYPES,
    "food": _FOODS,
    "priceRange": tuple(_PRICE),
    "customer rating": _RATING_WORDS + _RATING_NUMS,
    "area": _AREAS,
    "familyFriendly": tuple(_FAMILY),
    "near": _NEAR,
}
_OTHER_SLOTS = E2E_SLOTS[1:]

#: Presets for ``builtin:LEVEL`` (keyword arguments of :func:`make_builtin_task`).
BUILTIN_LEVELS = {
    "": {},
    "easy": {"min_slots": 3, "max_slots": 4, "wording": "fixed"},
    "hard": {"min_slots": 6, "max_slots": 8, "wording": "varied"},
}


def _a(word: str) -> str:
    """'a' or 'an' for the word that follows."""
    return "an" if word[:1].lower() in "aeiou" else "a"


def _vp_options(slot: str, value: str) -> tuple[str, ...]:
    """Verb phrases (for the subject "it") stating one slot; the first is the fixed wording."""
    if slot == "eatType":
        return (f"is {_a(value)} {value}",)
    if slot == "food":
        return (f"serves {value} food", f"offers {value} food", f"serves {value} cuisine",
                f"has {_a(value)} {value} menu")
    if slot == "priceRange":
        return _PRICE[value]
    if slot == "customer rating":
        if value in _RATING_WORDS:
            return (f"has {_a(value)} {value} customer rating", f"is rated {value} by customers",
                    f"has {_a(value)} {value} rating")
        return (f"has a customer rating of {value}", f"is rated {value}", f"has a {value} rating")
    if slot == "area":
        return (f"is in the {value}", f"is located in the {value}", f"is in the {value} area",
                f"can be found in the {value}")
    if slot == "familyFriendly":
        return _FAMILY[value]
    if slot == "near":
        return (f"is near {value}", f"is close to {value}", f"is located near {value}",
                f"is not far from {value}")
    raise AssertionError(slot)


def _pp_options(slot: str, value: str) -> tuple[str, ...]:
    """Prepositional phrases that can follow the intro noun phrase (area and near only)."""
    if slot == "area":
        return (f"in the {value}", f"in the {value} area")
    return (f"near {value}", f"close to {value}")


def _join(vps: list[str], rng: random.Random | None = None) -> str:
    if len(vps) == 1:
        return vps[0]
    comma = "," if (rng is not None and rng.random() < 0.3 and len(vps) > 2) else ""
    return ", ".join(vps[:-1]) + f"{comma} and " + vps[-1]


def _sentence(text: str) -> str:
    return text[:1].upper() + text[1:] + "."


def _fixed_reference(slots: dict[str, str]) -> str:
    """The one canonical reference of ``wording="fixed"``: a fixed template and clause order."""
    name = slots["name"]
    noun = slots.get("eatType", "place")
    food = slots.get("food")
    intro = f"{name} is {_a(food or noun)} {food + ' ' if food else ''}{noun}"
    pps = [_pp_options(s, slots[s])[0] for s in ("area", "near") if s in slots]
    text = _sentence(" ".join([intro] + pps))
    rest = [_vp_options(s, slots[s])[0] for s in ("priceRange", "customer rating", "familyFriendly")
            if s in slots]
    if rest:
        text += " " + _sentence("It " + _join(rest))
    return text


def _varied_reference(slots: dict[str, str], rng: random.Random) -> str:
    """One randomly worded reference: intro style, phrasings, clause order and sentence split."""
    name = slots["name"]
    eat = slots.get("eatType")
    noun = eat or rng.choice(("place", "venue", "spot"))
    facts = [s for s in slots if s != "name"]
    style = rng.randrange(4)  # 0: "X is a ...", 1: "There is a ... called X", 2: "X <vps>", 3: "X, a ..., <vps>"
    if style == 3 and len([s for s in facts if s not in ("eatType", "food")]) == 0:
        style = 0
    sentences: list[str] = []
    if style in (0, 1, 3):
        food = slots.get("food") if rng.random() < 0.7 else None
        used = {"eatType"} | ({"food"} if food else set())
        np_ = f"{_a(food or noun)} {food + ' ' if food else ''}{noun}"
        pps = []
        if style != 3:
            for s in ("area", "near"):
                if s in slots and rng.random() < 0.5:
                    pps.append(rng.choice(_pp_options(s, slots[s])))
                    used.add(s)
            rng.shuffle(pps)
        rest = [s for s in facts if s not in used]
        rng.shuffle(rest)
        vps = [rng.choice(_vp_options(s, slots[s])) for s in rest]
        if style == 0:
            sentences.append(" ".join([f"{name} is {np_}"] + pps))
        elif style == 1:
            called = rng.choice(("called", "named"))
            sentences.append(" ".join([f"there is {np_} {called} {name}"] + pps))
        else:  # appositive: the first chunk of verb phrases completes the sentence
            k = rng.randint(1, min(3, len(vps)))
            sentences.append(f"{name}, {np_}, {_join(vps[:k], rng)}")
            vps = vps[k:]
    else:
        rest = list(facts)
        rng.shuffle(rest)
        if "eatType" in rest and rng.random() < 0.7:  # the kind of place usually comes first
            rest.remove("eatType")
            rest.insert(0, "eatType")
        vps = [rng.choice(_vp_options(s, slots[s])) for s in rest]
        if not vps:
            return _sentence(f"{name} is a place to eat")
        k = rng.randint(1, min(3, len(vps)))
        sentences.append(f"{name} {_join(vps[:k], rng)}")
        vps = vps[k:]
    subjects = ("it", "it", name, f"the {noun}")
    while vps:
        k = rng.randint(1, min(3, len(vps)))
        sentences.append(f"{rng.choice(subjects)} {_join(vps[:k], rng)}")
        vps = vps[k:]
    return " ".join(_sentence(s) for s in sentences)


def _random_mr(rng: random.Random, min_slots: int, max_slots: int) -> dict[str, str]:
    k = rng.randint(min_slots, max_slots)
    chosen = set(rng.sample(_OTHER_SLOTS, k - 1))
    slots = {"name": rng.choice(_NAMES)}
    for s in _OTHER_SLOTS:  # canonical E2E order
        if s in chosen:
            slots[s] = rng.choice(_VALUES[s])
    return slots


def make_builtin_task(
    n_train: int = 2000,
    n_val: int = 200,
    n_test: int = 200,
    min_slots: int = 3,
    max_slots: int = 8,
    wording: str = "varied",
    n_refs: int | tuple[int, int] = (3, 5),
    seed: int = 0,
) -> Task:
    """Generate an E2E-style data-to-text task with invented restaurants; no files, no network.

    Each input is a meaning representation in E2E's format with the same slots as E2E (``name``
    always, plus ``min_slots - 1`` to ``max_slots - 1`` of eatType, food, priceRange, customer
    rating, area, familyFriendly, near), values drawn from vocabularies written for this kit.
    References come from hand-written template grammars and state every slot, never anything else:

    - ``wording="varied"``: ``n_refs`` (an int, or an inclusive ``(lo, hi)`` range drawn per input)
      distinct references, each with its own phrasing per slot, clause order and sentence split
      (fewer when a small MR has fewer distinct wordings).
    - ``wording="fixed"``: ONE reference per input from a single fixed template (more would be
      identical), so the mapping is deterministic: the easy end of the difficulty scale.

    Difficulty grows with the slot count and the variety of wording; size is ``n_train``. The
    three splits have distinct inputs, and the whole task is a pure function of the arguments.
    """
    if wording not in ("varied", "fixed"):
        raise MiniSPDFError(f"unknown wording {wording!r}; use wording='varied' or wording='fixed'")
    if not (2 <= min_slots <= max_slots <= len(E2E_SLOTS)):
        raise MiniSPDFError(
            f"min_slots={min_slots}, max_slots={max_slots} is not a valid range; "
            f"use 2 <= min_slots <= max_slots <= {len(E2E_SLOTS)}"
        )
    lo, hi = (n_refs, n_refs) if isinstance(n_refs, int) else tuple(n_refs)
    if not (1 <= lo <= hi):
        raise MiniSPDFError(f"n_refs={n_refs!r} is not valid; use an int >= 1 or a range (lo, hi) with 1 <= lo <= hi")
    sizes = (n_train, n_val, n_test)
    if min(sizes) < 0 or sum(sizes) == 0:
        raise MiniSPDFError(f"split sizes {sizes} are not valid; use n_train, n_val, n_test >= 0, not all 0")
    total = sum(sizes)
    rng = random.Random(f"minispdf-builtin:{seed}")
    seen: set[str] = set()
    examples: list[Example] = []
    attempts = 0
    max_attempts = 50 * total + 1000
    while len(examples) < total:
        attempts += 1
        if attempts > max_attempts:
            raise MiniSPDFError(
                f"could only make {len(examples)} distinct meaning representations of {total} asked for "
                f"with {min_slots}-{max_slots} slots; ask for fewer examples or allow more slots"
            )
        slots = _random_mr(rng, min_slots, max_slots)
        mr = format_mr(slots)
        if mr in seen:
            continue
        seen.add(mr)
        if wording == "fixed":
            refs = [_fixed_reference(slots)]
        else:
            want = rng.randint(lo, hi)
            refs = []
            for _ in range(8 * want):
                ref = _varied_reference(slots, rng)
                if ref not in refs:
                    refs.append(ref)
                    if len(refs) == want:
                        break
        examples.append(Example(mr, refs))
    train = examples[:n_train]
    val = examples[n_train:n_train + n_val]
    test = examples[n_train + n_val:]
    return Task(
        name="builtin",
        metric="bleu",
        train=train,
        val=val,
        test=test,
        description=(
            f"built-in E2E-style restaurant MRs (seed {seed}, {min_slots}-{max_slots} slots, "
            f"{wording} wording): {n_train}/{n_val}/{n_test} train/val/test inputs"
        ),
    )


# --------------------------------------------------------------------------------------------
# Tabular files: E2E CSV, Curation CSV/Parquet
# --------------------------------------------------------------------------------------------


def _read_table(path: Path, what: str):
    """Read a CSV or Parquet file into a pandas DataFrame of strings (empty cells stay '')."""
    import pandas as pd

    _require_file(path, what)
    try:
        if path.suffix.lower() in (".parquet", ".pq"):
            df = pd.read_parquet(path)
        else:
            df = pd.read_csv(path, dtype=str, keep_default_na=False, na_filter=False, encoding="utf-8-sig")
    except pd.errors.EmptyDataError:
        raise MiniSPDFError(f"{path} is empty; pass a file in the {what} format with a header row and data") from None
    except (pd.errors.ParserError, UnicodeDecodeError, ValueError, OSError) as e:
        raise MiniSPDFError(
            f"cannot read {path} as {'Parquet' if path.suffix.lower() in ('.parquet', '.pq') else 'CSV'} "
            f"({_one_line(e)}); pass a valid file in the {what} format"
        ) from None
    df.columns = [str(c).strip() for c in df.columns]
    return df


def _pick_columns(df, path: Path, wanted: dict[str, tuple[str, ...]]) -> dict[str, str]:
    """Map each logical column to the first of its accepted names present in ``df``."""
    found = {}
    missing = []
    for logical, names in wanted.items():
        hit = next((n for n in names if n in df.columns), None)
        if hit is None:
            missing.append(names[0])
        found[logical] = hit
    if missing:
        expected = ", ".join(names[0] for names in wanted.values())
        raise MiniSPDFError(
            f"{path} is missing column(s) {', '.join(missing)}: expected columns {expected}, "
            f"found {', '.join(map(str, df.columns)) or 'none'}; pass a file with those columns"
        )
    return found


def _table_pairs(path: Path, what: str, in_cols: tuple[str, ...], ref_cols: tuple[str, ...]) -> list[tuple[str, str]]:
    df = _read_table(path, what)
    if len(df.columns) and set(df.columns) <= set(in_cols):  # inputs only, as in the official testset.csv
        fix = "use testset_w_refs.csv" if path.name.lower() == "testset.csv" else "use the file with references"
        raise NoReferencesError(
            f"{path} has inputs ({'/'.join(in_cols)}) but no reference column ({'/'.join(ref_cols)}), "
            f"so it cannot be scored; {fix}"
        )
    cols = _pick_columns(df, path, {"input": in_cols, "ref": ref_cols})
    if len(df) == 0:
        raise MiniSPDFError(f"{path} has a header but no rows; pass a file in the {what} format that has data in it")
    inputs = [_clean(v) for v in df[cols["input"]].tolist()]
    refs = [_clean(v) for v in df[cols["ref"]].tolist()]
    for i, (inp, ref) in enumerate(zip(inputs, refs), start=1):
        if not inp:
            raise MiniSPDFError(
                f"{path}: data row {i} has an empty or missing '{cols['input']}' cell; fill it in or delete the row"
            )
        if not ref:
            raise MiniSPDFError(
                f"{path}: data row {i} has an empty or missing reference ('{cols['ref']}' cell); "
                "fill it in or delete the row"
            )
    return list(zip(inputs, refs))


_E2E_COLS = (("mr", "meaning_representation"), ("ref", "human_reference"))
_CURATION_COLS = (("article_content", "article"), ("summary",))


def _load_e2e_file(path: Path) -> list[Example]:
    return _group(_table_pairs(path, "E2E CSV (mr,ref)", *_E2E_COLS))


def _load_curation_file(path: Path) -> list[Example]:
    return _group(_table_pairs(path, "Curation CSV/Parquet (article_content,summary)", *_CURATION_COLS))


# --------------------------------------------------------------------------------------------
# DART JSON, DART / WebNLG XML
# --------------------------------------------------------------------------------------------


def _load_dart_json(path: Path) -> list[Example]:
    _require_file(path, "DART JSON")
    try:
        with open(path, encoding="utf-8-sig") as f:
            data = json.load(f)
    except json.JSONDecodeError as e:
        raise MiniSPDFError(f"{path} is not valid JSON ({_one_line(e)}); pass the official DART JSON file") from None
    except UnicodeDecodeError as e:
        raise MiniSPDFError(f"{path} is not UTF-8 text ({_one_line(e)}); pass the official DART JSON file") from None
    if not isinstance(data, list):
        raise MiniSPDFError(
            f"{path}: expected a JSON list of entries {{tripleset, annotations}}, found {type(data).__name__}; "
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
            raise MiniSPDFError(f"{path}: entry {i}: {_one_line(e)}") from None
        anns = entry["annotations"] or []
        texts = [_clean(a.get("text")) if isinstance(a, dict) else _clean(a) for a in anns]
        texts = [t for t in texts if t]
        if not inp:
            raise MiniSPDFError(f"{path}: entry {i} has an empty tripleset; fix or delete the entry")
        if not texts:
            raise MiniSPDFError(f"{path}: entry {i} has no non-empty reference text; fix or delete the entry")
        sources = [a.get("source") for a in anns if isinstance(a, dict)]
        meta = _dart_meta(sources)
        pairs.extend((inp, t, i, meta) for t in texts)
    return _group(pairs, dedupe_from_other_entries=True)


def _dart_meta(sources: Iterable) -> dict:
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


class NoReferencesError(MiniSPDFError):
    """A file in the official format that holds inputs but no references (e.g. testdata_no_lex.xml)."""


def _load_xml(path: Path, what: str) -> list[Example]:
    """WebNLG-style XML: benchmark/entries/entry, modifiedtripleset/mtriple "s | p | o", lex texts.

    A file in which no entry has a <lex> (the test set without references) raises
    :class:`NoReferencesError`; a directory loader skips it with a note.
    """
    _require_file(path, what)
    try:
        root = ET.parse(path).getroot()
    except ET.ParseError as e:
        raise MiniSPDFError(f"{path} is not well-formed XML ({_one_line(e)}); pass the official {what} file") from None
    entries = root.findall("./entries/entry") if root.tag == "benchmark" else root.findall(".//entries/entry")
    if not entries:
        raise MiniSPDFError(
            f"{path} has no benchmark/entries/entry elements (root is <{root.tag}>); pass the official {what} file"
        )
    if not any(entry.find("./lex") is not None for entry in entries):
        raise NoReferencesError(
            f"{path} has {len(entries)} inputs but no references (no <lex> elements), so it cannot be scored; "
            "use the file with references (e.g. testdata_with_lex.xml)"
        )
    is_webnlg = what.startswith("WebNLG")
    pairs = []
    for i, entry in enumerate(entries):
        eid = entry.get("eid", str(i))
        mtriples = entry.findall("./modifiedtripleset/mtriple") or entry.findall("./originaltripleset/otriple")
        if not mtriples:
            raise MiniSPDFError(f"{path}: entry {eid} has no modifiedtripleset/mtriple; fix or delete the entry")
        triples = []
        for t in mtriples:
            parts = _split_mtriple(t.text or "")
            if len(parts) != 3:
                raise MiniSPDFError(
                    f"{path}: entry {eid} has triple {(t.text or '').strip()!r}, not 's | p | o'; fix the triple"
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
            raise MiniSPDFError(f"{path}: entry {eid} has no non-empty <lex> reference; fix or delete the entry")
        meta = _webnlg_meta(entry.get("category")) if is_webnlg else {}
        pairs.extend((inp, t, i, meta) for t in texts)
    return _group(pairs, dedupe_from_other_entries=True)


def _load_dart_file(path: Path) -> list[Example]:
    if path.suffix.lower() == ".xml":
        return _load_xml(path, "DART XML")
    return _load_dart_json(path)


def _load_webnlg_file(path: Path) -> list[Example]:
    return _load_xml(path, "WebNLG XML")


# --------------------------------------------------------------------------------------------
# Directories: map official file names to splits
# --------------------------------------------------------------------------------------------

_SPLIT_WORDS = {"train": ("train",), "val": ("dev", "val"), "test": ("test",)}


def _files_with_word(folder: Path, exts: tuple[str, ...], words: tuple[str, ...]) -> list[Path]:
    """Files under ``folder`` (recursively) with one of ``exts`` whose name contains one of ``words``."""
    out = []
    for p in sorted(folder.rglob("*")):
        name = p.name.lower()
        if p.is_file() and name.endswith(exts) and any(w in name for w in words):
            out.append(p)
    return out


def _split_files_generic(folder: Path, exts: tuple[str, ...]) -> dict[str, list[Path]]:
    """train/dev/test sub-folders if present (all their files), else files named after the split."""
    found: dict[str, list[Path]] = {}
    subdirs = {p.name.lower(): p for p in folder.iterdir() if p.is_dir()}
    for split, words in _SPLIT_WORDS.items():
        sub = next((subdirs[w] for w in (*words, "validation") if w in subdirs), None)
        if sub is not None:
            files = [p for p in sorted(sub.rglob("*")) if p.is_file() and p.name.lower().endswith(exts)]
        else:
            files = [p for p in _files_with_word(folder, exts, words)
                     if not any(p.is_relative_to(s) for s in subdirs.values()
                                if s.name.lower() in ("train", "dev", "val", "validation", "test"))]
        if files:
            found[split] = files
    return found


def _e2e_split_files(folder: Path) -> dict[str, list[Path]]:
    found = {}
    for split, names in (("train", ("trainset.csv",)), ("val", ("devset.csv",)),
                         ("test", ("testset_w_refs.csv", "testset.csv"))):
        hit = next((folder / n for n in names if (folder / n).is_file()), None)
        if hit is not None:
            found[split] = [hit]
    return found


def _dart_split_files(folder: Path) -> dict[str, list[Path]]:
    found = {}
    for ext in (".json", ".xml"):  # prefer the JSON release when both are there
        for split, word in (("train", "train"), ("val", "dev"), ("test", "test")):
            if split not in found:
                hits = sorted(folder.rglob(f"*-{word}{ext}"))
                if hits:
                    found[split] = hits
    return found


# --------------------------------------------------------------------------------------------
# Hugging Face hub
# --------------------------------------------------------------------------------------------

_HUB_EXAMPLE_FILE = {
    "e2e": "e2e:path/to/devset.csv",
    "dart": "dart:path/to/dart-v1.1.1-full-dev.json",
    "curation": "curation:path/to/curation.csv",
}


def _check_hub(repo: str, name: str) -> None:
    """Fail at once, with the fix, when the hub cannot be reached (offline flag or no network)."""
    local = _HUB_EXAMPLE_FILE[name]
    for var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"):
        if os.environ.get(var, "").strip().lower() in ("1", "true", "yes", "on"):
            raise MiniSPDFError(
                f"offline ({var}=1): cannot fetch {repo} from the Hugging Face hub; "
                f"pass a local file instead: --task {local}"
            )
    from urllib.parse import urlparse

    endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co")
    parsed = urlparse(endpoint)
    host = parsed.hostname or "huggingface.co"
    port = parsed.port or (80 if parsed.scheme == "http" else 443)
    result: list[object] = []

    def probe() -> None:  # in a thread so that a slow DNS lookup is bounded too
        try:
            socket.create_connection((host, port), timeout=3).close()
            result.append(True)
        except OSError as e:
            result.append(e)

    t = threading.Thread(target=probe, daemon=True)
    t.start()
    t.join(3.5)
    if not result or result[0] is not True:
        why = _one_line(result[0]) if result else "timed out"
        raise MiniSPDFError(
            f"cannot reach {host}:{port} ({why}) to fetch {repo} from the Hugging Face hub; "
            f"pass a local file instead: --task {local}"
        )


def _hub_load(repo: str, name: str, data_files: dict[str, str] | None = None):
    _check_hub(repo, name)
    try:
        from datasets import load_dataset

        if data_files is None:
            return load_dataset(repo)
        return load_dataset("parquet", data_files=data_files)
    except Exception as e:  # network, schema and cache errors all have one fix
        raise MiniSPDFError(
            f"could not load {repo} from the Hugging Face hub ({_one_line(e)[:300]}); "
            f"pass a local file instead: --task {_HUB_EXAMPLE_FILE[name]}"
        ) from None


def _parquet_export(repo: str) -> dict[str, str]:
    base = f"hf://datasets/{repo}@refs%2Fconvert%2Fparquet/default"
    return {s: f"{base}/{s}/0000.parquet" for s in ("train", "validation", "test")}


_HUB_SPLITS = {"train": "train", "validation": "val", "dev": "val", "test": "test"}


def _hub_pairs_to_examples(inputs: list, refs: list, metas: list | None = None) -> list[Example]:
    """Group hub rows, silently dropping rows with an empty input or reference (not user-fixable)."""
    metas = metas or [{}] * len(inputs)
    pairs = [(_clean(i), _clean(r), None, m) for i, r, m in zip(inputs, refs, metas)]
    return _group(p for p in pairs if p[0] and p[1])


def _load_hub(name: str, seed: int) -> Task:
    splits: dict[str, list[Example]] = {"train": [], "val": [], "test": []}
    if name == "e2e":
        repo = "tuetschek/e2e_nlg"
        ds = _hub_load(repo, name, _parquet_export(repo))
        for hub_split, rows in ds.items():
            splits[_HUB_SPLITS.get(hub_split, hub_split)] = _hub_pairs_to_examples(
                rows["meaning_representation"], rows["human_reference"])
        metric = "bleu"
    elif name == "dart":
        repo = "Yale-LILY/dart"
        ds = _hub_load(repo, name, _parquet_export(repo))
        for hub_split, rows in ds.items():
            pairs = []
            for ts, ann in zip(rows["tripleset"], rows["annotations"]):
                texts = ann.get("text", []) if isinstance(ann, dict) else [a.get("text") for a in ann]
                sources = ann.get("source", []) if isinstance(ann, dict) else [a.get("source") for a in ann]
                inp, meta = linearize_triples(ts), _dart_meta(sources)
                pairs.extend((inp, t, meta) for t in texts)
            splits[_HUB_SPLITS.get(hub_split, hub_split)] = _hub_pairs_to_examples(
                [p[0] for p in pairs], [p[1] for p in pairs], [p[2] for p in pairs])
        metric = "bleu"
    else:  # curation
        repo = "d0rj/curation-corpus"
        ds = _hub_load(repo, name)
        for hub_split, rows in ds.items():
            splits[_HUB_SPLITS.get(hub_split, hub_split)] = _hub_pairs_to_examples(
                rows["article_content"], rows["summary"])
        metric = "perplexity"
    task = Task(name, metric, splits["train"], splits["val"], splits["test"], f"{repo} from the Hugging Face hub")
    if not task.val and not task.test:  # a hub copy with only a train split: cut val/test from it
        task = split_task(task, val_fraction=0.05, test_fraction=0.05, seed=seed)
        task.description = f"{repo} from the Hugging Face hub (its one split cut 90/5/5 with seed {seed})"
    task.description += f": {_split_counts(task)}"
    return task


# --------------------------------------------------------------------------------------------
# Public loaders
# --------------------------------------------------------------------------------------------

_FILE_LOADERS: dict[str, Callable[[Path], list[Example]]] = {
    "e2e": _load_e2e_file,
    "dart": _load_dart_file,
    "webnlg": _load_webnlg_file,
    "curation": _load_curation_file,
}
_METRICS = {"e2e": "bleu", "dart": "bleu", "webnlg": "bleu", "curation": "perplexity"}
_DIR_FINDERS: dict[str, Callable[[Path], dict[str, list[Path]]]] = {
    "e2e": _e2e_split_files,
    "dart": _dart_split_files,
    "webnlg": lambda d: _split_files_generic(d, (".xml",)),
    "curation": lambda d: _split_files_generic(d, (".csv", ".parquet", ".pq")),
}
_DIR_EXPECTED = {
    "e2e": "trainset.csv, devset.csv, testset_w_refs.csv",
    "dart": "*-train.json, *-dev.json, *-test.json",
    "webnlg": "train/, dev/, test/ folders or *train*.xml, *dev*.xml, *test*.xml",
    "curation": "*train*.csv, *dev*.csv or *val*.csv, *test*.csv (or .parquet)",
}


def _load_many(name: str, files: list[Path], notes: list[str]) -> list[Example]:
    """The examples of all ``files`` of one split, each input once with exactly its own references.

    A release may give an input in several files (WebNLG 2017's testdata_unseen_with_lex.xml
    repeats entries of testdata_with_lex.xml): the inputs are merged by their text and a
    reference that another file already gave for that input is not added again. A file without
    references is skipped. Both are told in ``notes``. Larger files come first (stable), so the
    full test file gives the order and the subset file only confirms its inputs.
    """
    loaded = []
    for f in files:
        try:
            loaded.append((f, _FILE_LOADERS[name](f)))
        except NoReferencesError:
            notes.append(f"{f.name} has no references: skipped (it cannot be scored)")
    merged: dict[str, Example] = {}
    for f, examples in sorted(loaded, key=lambda fe: -len(fe[1])):
        repeated = 0
        for ex in examples:
            seen = merged.get(ex.input)
            if seen is None:
                merged[ex.input] = Example(ex.input, list(ex.references), dict(ex.meta))
                continue
            repeated += 1
            from_others = set(seen.references)
            seen.references.extend(r for r in ex.references if r not in from_others)
        if repeated:
            notes.append(f"{f.name}: {repeated} of its {len(examples)} inputs are also in a larger file of the split; "
                         "merged, their references not counted twice")
    return list(merged.values())


def load_task_files(
    name: str,
    train: str | os.PathLike | None = None,
    val: str | os.PathLike | None = None,
    test: str | os.PathLike | None = None,
) -> Task:
    """Build a task from one file per split, e.g. ``load_task_files("e2e", train="devset.csv",
    test="testset_w_refs.csv")`` to fine-tune on E2E dev and evaluate on E2E test.

    ``name`` is one of e2e, dart, webnlg, curation; splits left as None stay empty.
    """
    if name not in _FILE_LOADERS:
        raise MiniSPDFError(f"unknown file task {name!r}; use one of {', '.join(_FILE_LOADERS)}")
    paths = {"train": train, "val": val, "test": test}
    if all(p is None for p in paths.values()):
        raise MiniSPDFError(f"no files given for task {name}; pass at least one of train=, val=, test=")
    splits = {}
    for split, p in paths.items():
        if p is None:
            splits[split] = []
            continue
        path = Path(p)
        if path.is_dir():
            raise MiniSPDFError(f"{path} is a directory; pass one {name} file per split, or use --task {name}:{path}")
        splits[split] = _FILE_LOADERS[name](path)
    desc = ", ".join(f"{s}={paths[s]}" for s in paths if paths[s] is not None)
    task = Task(name, _METRICS[name], splits["train"], splits["val"], splits["test"], f"{name} files {desc}")
    task.description += f": {_split_counts(task)}"
    return task


def _load_path(name: str, path: Path) -> Task:
    if not path.exists():
        raise MiniSPDFError(f"{name} file not found: {path}; check the path in --task {name}:PATH")
    if path.is_file():
        task = Task(name, _METRICS[name], [], [], _FILE_LOADERS[name](path))
        task.description = f"{name} file {path} (all in test; see load_task_files/split_task): {_split_counts(task)}"
        return task
    found = _DIR_FINDERS[name](path)
    if not found:
        raise MiniSPDFError(
            f"no {name} files found in directory {path}; expected {_DIR_EXPECTED[name]}, "
            f"or pass one file as --task {name}:FILE"
        )
    notes: list[str] = []
    splits = {s: _load_many(name, found[s], notes) if s in found else [] for s in ("train", "val", "test")}
    task = Task(name, _METRICS[name], splits["train"], splits["val"], splits["test"], notes=notes)
    listing = "; ".join(f"{s}: {', '.join(p.name for p in found[s])}" for s in found)
    task.description = f"{name} directory {path} ({listing}): {_split_counts(task)}"
    return task


def load_task(spec: str, *, seed: int = 0, **builtin_kwargs) -> Task:
    """Load a task from a spec string such as ``builtin:hard``, ``e2e:data/devset.csv`` or ``dart``.

    ``NAME`` alone means the built-in generator (``builtin``) or the Hugging Face hub copy (e2e,
    dart, curation); ``NAME:PATH`` reads local files in the official format (a file, or a
    directory with the official file names). ``seed`` seeds the built-in generator and any split
    that has to be cut; ``builtin_kwargs`` go to :func:`make_builtin_task` and override the
    ``easy``/``hard`` presets.
    """
    spec = str(spec).strip()
    name, _, arg = spec.partition(":")
    name = name.strip().lower()
    if name not in TASK_NAMES:
        raise MiniSPDFError(
            f"unknown task {spec!r}; valid tasks: builtin, builtin:easy, builtin:hard, e2e[:PATH], "
            "dart[:PATH], webnlg:PATH, curation[:PATH]"
        )
    if name == "builtin":
        level = arg.strip().lower()
        if level not in BUILTIN_LEVELS:
            raise MiniSPDFError(f"unknown builtin level {arg!r}; use builtin, builtin:easy or builtin:hard")
        kwargs = {**BUILTIN_LEVELS[level], **builtin_kwargs}
        try:
            task = make_builtin_task(seed=seed, **kwargs)
        except TypeError as e:
            raise MiniSPDFError(f"bad builtin task option ({_one_line(e)}); see make_builtin_task for the options") from None
        task.name = f"builtin:{level}" if level else "builtin"
        return task
    if builtin_kwargs:
        raise MiniSPDFError(
            f"options {', '.join(sorted(builtin_kwargs))} only apply to the builtin task, not {name}; drop them"
        )
    if arg.strip():
        return _load_path(name, Path(arg.strip()).expanduser())
    if name == "webnlg":
        raise MiniSPDFError(
            "webnlg has no loadable hub copy; download the official WebNLG 2017 XML and pass --task webnlg:PATH"
        )
    return _load_hub(name, seed)


def resolve_task(spec, train_file=None, val_file=None, test_file=None, seed: int = 0) -> Task:
    """What ``--task SPEC [--train_file F] [--val_file F] [--test_file F]`` means.

    With any file given, SPEC must be a bare task name (e2e, dart, webnlg, curation) and each
    file fills one split (:func:`load_task_files`); otherwise it is :func:`load_task`. A
    :class:`Task` passes through unchanged.
    """
    if isinstance(spec, Task):
        return spec
    if any(f is not None for f in (train_file, val_file, test_file)):
        if ":" in str(spec):
            raise MiniSPDFError(f"--task {spec} already names a path: with --train_file/--val_file/--test_file "
                                "give the bare task name, e.g. --task e2e")
        return load_task_files(str(spec), train=train_file, val=val_file, test=test_file)
    return load_task(spec, seed=seed)


def split_task(task: Task, val_fraction: float = 0.1, test_fraction: float = 0.1, seed: int = 0) -> Task:
    """Pool all examples of ``task`` and cut them into disjoint train/val/test splits by input.

    Examples with the same input in different splits are merged first (their references
    concatenated), so no input can end up in two splits. The shuffle is seeded and the counts
    are ``round(n * fraction)`` for val and test; the rest is train. Returns a new Task.
    """
    for what, frac in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
        if not 0 <= frac < 1:
            raise MiniSPDFError(f"{what}={frac} is out of range; use a fraction in [0, 1)")
    if val_fraction + test_fraction >= 1:
        raise MiniSPDFError(
            f"val_fraction + test_fraction = {val_fraction + test_fraction} leaves nothing to train on; make them smaller"
        )
    pool = _group((ex.input, r, None, ex.meta) for ex in task.train + task.val + task.test for r in ex.references)
    if not pool:
        raise MiniSPDFError(f"task {task.name} has no examples to split; load a file with data first")
    order = list(range(len(pool)))
    random.Random(f"minispdf-split:{seed}").shuffle(order)
    n = len(pool)
    n_test = round(n * test_fraction)
    n_val = round(n * val_fraction)
    test = [pool[i] for i in order[:n_test]]
    val = [pool[i] for i in order[n_test:n_test + n_val]]
    train = [pool[i] for i in order[n_test + n_val:]]
    desc = f"{task.description} | re-split {1 - val_fraction - test_fraction:.2f}/{val_fraction:.2f}/{test_fraction:.2f} seed {seed}"
    return Task(task.name, task.metric, train, val, test, desc, notes=list(task.notes))


# --------------------------------------------------------------------------------------------
# Fine-tuning format
# --------------------------------------------------------------------------------------------


def training_pairs(task_split: Sequence[Example]) -> list[tuple[str, str]]:
    """One ``(input, reference)`` pair per reference, in split order."""
    return [(ex.input, ref) for ex in task_split for ref in ex.references]


def encode_prompt(tokenizer, input: str, max_tokens: int | None = None) -> list[int]:
    """The tokens decoding starts from: ``enc(input) + enc(SEPARATOR)``.

    With ``max_tokens``, the end of the input is cut (as :func:`encode_example` does) so that the
    prompt, separator included, has at most ``max_tokens`` tokens.
    """
    inp = list(tokenizer.encode(input))
    sep = list(tokenizer.encode(SEPARATOR))
    if max_tokens is not None:
        keep = max_tokens - len(sep)
        if keep < 1:
            raise MiniSPDFError(
                f"max_tokens={max_tokens} leaves no room for the input; use a larger --block_size"
            )
        inp = inp[:keep]
    return inp + sep


def encode_example(
    tokenizer,
    input: str,
    target: str,
    block_size: int,
    truncate: bool = True,
    index: int | None = None,
) -> tuple[list[int], list[int]]:
    """Encode one fine-tuning example; returns ``(tokens, loss_mask)``.

    ``tokens = enc(input) + enc(SEPARATOR) + enc(target) + [eot_id]``. ``loss_mask`` is aligned
    with ``x = tokens[:-1]`` / ``y = tokens[1:]``: ``len(loss_mask) == len(tokens) - 1`` and
    ``loss_mask[i] == 1`` iff ``tokens[i + 1]`` is a target token or the eot (0 for the prompt).

    A model sees ``x``, so ``len(tokens)`` may be at most ``block_size + 1``. A longer example
    raises :class:`MiniSPDFError` when ``truncate`` is False; when True the END of the input is cut
    so that separator, target and eot fit (and it raises if not even one input token would be left).
    ``index`` only names the example in error messages.
    """
    tokens, prompt_len, _ = _encode_ids(
        list(tokenizer.encode(input)), list(tokenizer.encode(SEPARATOR)), list(tokenizer.encode(target)),
        int(tokenizer.eot_id), block_size, truncate, index)
    mask = [0] * (prompt_len - 1) + [1] * (len(tokens) - prompt_len)
    return tokens, mask


def _encode_ids(inp: list[int], sep: list[int], tgt: list[int], eot: int, block_size: int,
                truncate: bool, index: int | None) -> tuple[list[int], int, bool]:
    """(tokens, prompt length after truncation, whether the input was cut): see encode_example."""
    n = len(inp) + len(sep) + len(tgt) + 1
    what = f"example {index}" if index is not None else "example"
    cut = n > block_size + 1
    if cut:
        if not truncate:
            raise MiniSPDFError(
                f"{what} is {n} tokens, longer than the context block_size {block_size} (+1 for the shifted target); "
                "use a larger --block_size or --truncate"
            )
        keep = block_size + 1 - len(sep) - len(tgt) - 1
        if keep < 1:
            raise MiniSPDFError(
                f"{what}: its reference alone is {len(tgt)} tokens (+{len(sep)} separator +1 eot), leaving no room "
                f"for the input in block_size {block_size}; use a larger --block_size"
            )
        inp = inp[:keep]
    return inp + sep + tgt + [eot], len(inp) + len(sep), cut


class FinetuneBatches:
    """Random padded batches of encoded (input, reference) pairs; see :func:`make_finetune_batches`.

    Call it (``get_batch()`` or ``get_batch(generator)``) or iterate over it (endless) to get
    ``(x, y, mask)``: ``x``, ``y`` LongTensors and ``mask`` a BoolTensor, all ``(B, T)`` with
    ``T`` = the longest ``len(tokens) - 1`` in the batch (<= block_size). ``y`` is ``x`` shifted by
    one; ``mask[b, t]`` is True iff ``y[b, t]`` is a target or eot token; padding (``pad_id`` in
    both ``x`` and ``y``) is masked out. Examples are drawn with ``torch.randint(generator=...)``,
    so saving and restoring the generator's state restores the data position.
    """

    def __init__(self, tokenizer, pairs: Sequence[tuple[str, str]], block_size: int, batch_size: int,
                 generator: torch.Generator, pad_id: int | None = None, truncate: bool = True):
        if block_size < 2 or batch_size < 1:
            raise MiniSPDFError(
                f"block_size={block_size}, batch_size={batch_size} are too small; use block_size >= 2 and batch_size >= 1"
            )
        if not pairs:
            raise MiniSPDFError("no fine-tuning pairs: the task split is empty; load a task that has training examples")
        self.block_size = block_size
        self.batch_size = batch_size
        self.generator = generator
        self.pad_id = int(tokenizer.eot_id if pad_id is None else pad_id)
        self.tokens: list[torch.Tensor] = []
        self.prompt_lens: list[int] = []
        self.n_truncated = 0
        sep = list(tokenizer.encode(SEPARATOR))
        eot = int(tokenizer.eot_id)
        for i, (inp, tgt) in enumerate(pairs):
            toks, prompt_len, cut = _encode_ids(list(tokenizer.encode(inp)), sep, list(tokenizer.encode(tgt)),
                                                eot, block_size, truncate, i)
            self.n_truncated += cut
            self.tokens.append(torch.tensor(toks, dtype=torch.long))
            self.prompt_lens.append(prompt_len)
        self.n_target_tokens = sum(len(t) - p for t, p in zip(self.tokens, self.prompt_lens))

    def __len__(self) -> int:
        """Number of encoded pairs (one per reference)."""
        return len(self.tokens)

    def __call__(self, generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        g = self.generator if generator is None else generator
        idx = torch.randint(len(self.tokens), (self.batch_size,), generator=g).tolist()
        return self.collate(idx)

    def collate(self, indices: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The padded ``(x, y, mask)`` batch of the given pair indices (deterministic)."""
        seqs = [self.tokens[i] for i in indices]
        T = max(len(s) for s in seqs) - 1
        B = len(seqs)
        x = torch.full((B, T), self.pad_id, dtype=torch.long)
        y = torch.full((B, T), self.pad_id, dtype=torch.long)
        mask = torch.zeros((B, T), dtype=torch.bool)
        for b, (i, s) in enumerate(zip(indices, seqs)):
            n = len(s) - 1
            x[b, :n] = s[:-1]
            y[b, :n] = s[1:]
            mask[b, self.prompt_lens[i] - 1:n] = True
        return x, y, mask

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        while True:
            yield self()


def make_finetune_batches(
    tokenizer,
    pairs: Sequence[tuple[str, str]],
    block_size: int,
    batch_size: int,
    generator: torch.Generator,
    pad_id: int | None = None,
    truncate: bool = True,
) -> FinetuneBatches:
    """Encode all pairs once (with :func:`encode_example`) and return a ``get_batch`` callable.

    ``get_batch()`` draws ``batch_size`` pairs with ``torch.randint(generator=generator)`` and
    returns ``(x, y, mask)`` of shape ``(B, T)``, padded to the longest pair in the batch with
    ``pad_id`` (default ``tokenizer.eot_id``). Averaging the per-position cross-entropy over
    ``mask`` gives the loss over target tokens and the eot only (see the module docstring).
    """
    return FinetuneBatches(tokenizer, pairs, block_size, batch_size, generator, pad_id, truncate)


class TaskBatches:
    """A task's train and val splits as batches for the training loop (``minispdf.train``).

    ``get_batch(split, generator, device)`` returns ``(x, y, mask)`` from the ``"train"`` or
    ``"val"`` split. A task with training examples but no val split gets a seeded 10% of the
    training *inputs* held out for validation (so no input is in both).
    """

    def __init__(self, tokenizer, task: Task, block_size: int, batch_size: int, truncate: bool = True,
                 seed: int = 0):
        if not task.train:
            raise MiniSPDFError(
                f"task {task.name} has no training examples ({_split_counts(task)}): pass a directory or "
                "train file (e.g. --train_file devset.csv), or a task with a train split"
            )
        train, val = task.train, task.val
        if not val:
            if len(train) < 2:
                raise MiniSPDFError(f"task {task.name} has a single training input: give a val file or more data")
            order = list(range(len(train)))
            random.Random(seed).shuffle(order)
            n_val = max(1, round(0.1 * len(train)))
            val = [train[i] for i in sorted(order[:n_val])]
            train = [train[i] for i in sorted(order[n_val:])]
        self.task = task
        dummy = torch.Generator()
        self.splits = {
            "train": FinetuneBatches(tokenizer, training_pairs(train), block_size, batch_size, dummy, truncate=truncate),
            "val": FinetuneBatches(tokenizer, training_pairs(val), block_size, batch_size, dummy, truncate=truncate),
        }

    def get_batch(self, split: str, generator: torch.Generator, device="cpu"):
        x, y, mask = self.splits[split](generator)
        return x.to(device), y.to(device), mask.to(device)

    def check(self) -> None:
        """Errors are raised while encoding, in ``__init__``; nothing more to check."""
