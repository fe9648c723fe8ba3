"""The built-in task: E2E-style restaurant meaning representations with invented names and
hand-written template references. Needs no files and no network; a pure function of its arguments.
"""

from __future__ import annotations

import functools
import random

from minispdf.errors import MiniSPDFError

from .core import Example, Task
from .tables import E2E_SLOTS, format_mr

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
    "yes": ("is family friendly", "is kid friendly", "welcomes children",
            "is suitable for families"),
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


# Verb phrases (subject "it") and the phrases after the intro noun phrase, per slot: "{v}" is
# the value and "{a}" its article; the first template is the "fixed" wording.
_VP_TEMPLATES = {
    "eatType": ("is {a} {v}",),
    "food": ("serves {v} food", "offers {v} food", "serves {v} cuisine", "has {a} {v} menu"),
    "rating word": ("has {a} {v} customer rating", "is rated {v} by customers",
                    "has {a} {v} rating"),
    "rating number": ("has a customer rating of {v}", "is rated {v}", "has a {v} rating"),
    "area": ("is in the {v}", "is located in the {v}", "is in the {v} area",
             "can be found in the {v}"),
    "near": ("is near {v}", "is close to {v}", "is located near {v}", "is not far from {v}"),
}
_PP_TEMPLATES = {"area": ("in the {v}", "in the {v} area"), "near": ("near {v}", "close to {v}")}


def _fill(templates: tuple[str, ...], value: str) -> tuple[str, ...]:
    return tuple(t.format(v=value, a=_a(value)) for t in templates)


@functools.cache  # a pure function of a few hundred (slot, value) pairs, called for every reference
def _vp_options(slot: str, value: str) -> tuple[str, ...]:
    """Verb phrases (for the subject "it") stating one slot; the first is the fixed wording."""
    if slot == "priceRange":
        return _PRICE[value]
    if slot == "familyFriendly":
        return _FAMILY[value]
    if slot == "customer rating":
        slot = "rating word" if value in _RATING_WORDS else "rating number"
    return _fill(_VP_TEMPLATES[slot], value)


@functools.cache
def _pp_options(slot: str, value: str) -> tuple[str, ...]:
    """Prepositional phrases that can follow the intro noun phrase (area and near only)."""
    return _fill(_PP_TEMPLATES[slot], value)


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
    # 0: "X is a ...", 1: "There is a ... called X", 2: "X <vps>", 3: "X, a ..., <vps>"
    style = rng.randrange(4)
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
    lo, hi = _check_builtin_args(wording, min_slots, max_slots, n_refs, (n_train, n_val, n_test))
    rng = random.Random(f"minispdf-builtin:{seed}")
    examples = _distinct_examples(rng, n_train + n_val + n_test, min_slots, max_slots, wording,
                                  (lo, hi))
    return Task(
        name="builtin",
        metric="bleu",
        train=examples[:n_train],
        val=examples[n_train:n_train + n_val],
        test=examples[n_train + n_val:],
        description=(
            f"built-in E2E-style restaurant MRs (seed {seed}, {min_slots}-{max_slots} slots, "
            f"{wording} wording): {n_train}/{n_val}/{n_test} train/val/test inputs"
        ),
    )


def _check_builtin_args(wording: str, min_slots: int, max_slots: int, n_refs,
                        sizes: tuple[int, int, int]
                        ) -> tuple[int, int]:
    """Refuse arguments of :func:`make_builtin_task` that make no task; the ``n_refs`` range."""
    if wording not in ("varied", "fixed"):
        raise MiniSPDFError(f"unknown wording {wording!r}; use wording='varied' or wording='fixed'")
    if not (2 <= min_slots <= max_slots <= len(E2E_SLOTS)):
        raise MiniSPDFError(
            f"min_slots={min_slots}, max_slots={max_slots} is not a valid range; "
            f"use 2 <= min_slots <= max_slots <= {len(E2E_SLOTS)}"
        )
    lo, hi = (n_refs, n_refs) if isinstance(n_refs, int) else tuple(n_refs)
    if not (1 <= lo <= hi):
        raise MiniSPDFError(f"n_refs={n_refs!r} is not valid; use an int >= 1 or a range (lo, hi) "
                            f"with 1 <= lo <= hi")
    if min(sizes) < 0 or sum(sizes) == 0:
        raise MiniSPDFError(
            f"split sizes {sizes} are not valid; use n_train, n_val, n_test >= 0, not all 0")
    return lo, hi


def _distinct_examples(rng: random.Random, total: int, min_slots: int, max_slots: int, wording: str,
                       n_refs: tuple[int, int]) -> list[Example]:
    """``total`` examples with distinct meaning representations, with their references."""
    seen: set[str] = set()
    examples: list[Example] = []
    attempts = 0
    max_attempts = 50 * total + 1000
    while len(examples) < total:
        attempts += 1
        if attempts > max_attempts:
            raise MiniSPDFError(
                f"could only make {len(examples)} distinct meaning representations of "
                f"{total} asked for "
                f"with {min_slots}-{max_slots} slots; ask for fewer examples or allow more slots"
            )
        slots = _random_mr(rng, min_slots, max_slots)
        mr = format_mr(slots)
        if mr in seen:
            continue
        seen.add(mr)
        examples.append(Example(mr, _references(slots, wording, n_refs, rng)))
    return examples


def _references(slots: dict[str, str], wording: str, n_refs: tuple[int, int],
                rng: random.Random) -> list[str]:
    """The references of one MR: the fixed one, or a number drawn from ``n_refs`` of distinct varied
    ones
    (fewer when 8 tries per reference find no more)."""
    if wording == "fixed":
        return [_fixed_reference(slots)]
    want = rng.randint(*n_refs)
    refs: list[str] = []
    for _ in range(8 * want):
        ref = _varied_reference(slots, rng)
        if ref not in refs:
            refs.append(ref)
            if len(refs) == want:
                break
    return refs
