"""Every number a lesson's prose and answer key state is a number the lesson printed (issue 32).

The prose of a lesson (its markdown cells, the "What you should see" notes, the questions and the
instructor's answers) is checked against what its executed reference printed
(``notebooks/reference/NAME.json``, written by ``python notebooks/references.py``), so that prose
cannot drift from output again. A stated number passes when

* the reference printed it, up to the rounding of the prose's last digit (``1.995`` matches a
  printed ``1.9953``, not ``1.997``; ``55.5%`` matches ``55.5%`` or ``0.555``; ``1.3B`` matches
  ``1.3e9``), or
* it is a setting in the lesson's own code (``600`` steps, ``0.75``), which the student sees, or
* it is on the short list below of numbers that are not outputs: the paper's own figures, facts
  of a model's configuration, definitions, and the hypothetical numbers of a question.

What is not a stated number: equations (``$...$``; their constants, 2T, 6N, ..., are the
formula's), code spans and links, the run-time line of the header (``sync.py`` writes it from
``results/lesson_times.json``), dates and versions, names with digits (GPT-2, gpt3-xl, 2:4), and
the numbering of lessons, sections, exercises, questions and list items.
"""

import json
import re
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
NB_DIR = ROOT / "notebooks"
REFERENCE = NB_DIR / "reference"
LESSONS = sorted(NB_DIR.glob("[0-9][0-9]_*.ipynb"))

# left out of the prose before numbers are read, each for the reason in the module docstring
SKIP = [
    (r"\$\$.*?\$\$", re.DOTALL),
    (r"\$[^$\n]+\$", 0),  # equations
    (r"```.*?```", re.DOTALL),
    (r"`[^`\n]*`", 0),  # code
    (r"\]\([^)]*\)", 0),
    (r"https?://\S+", 0),
    (r"<[^>]+>", 0),  # link targets, HTML tags
    (r"\*Runs in about .*?\*", re.DOTALL),  # the measured run time (sync.py)
    (r"\b\d{4}-\d{2}-\d{2}\b", 0),
    (r"\b(?:torch|Python)\s+\d+(?:\.\d+)+", 0),
    (r"arXiv:\d+\.\d+", 0),
]
STRUCTURE = re.compile(
    r"""(?ix)
    \b(?:exercises?|lessons?|notebooks?|sections?|questions?|items?|cells?)\s+\d+[a-z]?
        (?:\s*(?:,|and|or|-)\s*\d+)*                  # exercise 7, lessons 01 and 02
  | ^\s*\#+\s*\d+[a-z]?\s*·                          # ## 1b · a section heading
  | ^\s*\d+\.\s                                      # 1. a numbered item
  | \b[a-z_]+[-_]?\d[\w.-]*                          # GPT-2, gpt3-xl, c_fc, h3
  | \b\d+:\d+\b                                      # the 2:4 pattern
""",
    re.MULTILINE,
)
STATED = re.compile(
    r"(?<![\w.])[-+−]?(\d(?:[\d,]*\d)?(?:\.\d+)?(?:e[-+]?\d+)?)(\s*(?:%|x\b|×|[kMB]\b))?"
)
PRINTED = re.compile(r"\d(?:[\d,]*\d)?(?:\.\d+)?(?:e[-+]?\d+)?")  # no trailing comma
SUFFIX = {"k": 1e3, "M": 1e6, "B": 1e9}

_PAPER = {  # the paper's figures and the models it names: facts to teach, not outputs
    "2.5x": "the paper's FLOP reduction for GPT-3 XL at 75%",
    "125M": "the paper's smallest model",
    "1.3B": "GPT-3 XL, the paper's largest",
    "124M": "GPT-2 small's parameter count",
    "6.7B": "the model of the Variable SPDF follow-up",
    "64%": "the follow-up's FLOP saving at 6.7B",
    "2023": "the paper's year (UAI 2023)",
    "50257": "GPT-2's vocabulary",
    "50k": "GPT-2's vocabulary, rounded",
    "768": "GPT-2 small's width",
    "257": "the byte vocabulary (256 bytes and end-of-text)",
}
# lesson -> {number as the prose writes it: why it is not an output}
ALLOWED = {
    "00_quickstart": {
        **{k: _PAPER[k] for k in ("2023",)},
        "25%": "what a 75% mask keeps, by definition (1 - 75%)",
        "64": "the nano preset's width and block size (minispdf.model.PRESETS)",
        "81%": "what lesson 01 prints for the nano model at block size 64 (checked there)",
        "0.05": "question 9's hypothetical models",
        "0.9": "the Try-this sparsities to set",
        "0.5": "the Try-this sparsities to set",
        "90%": "the Try-this sparsity",
    },
    "01_gpt_and_masks": {k: _PAPER[k] for k in ("50k", "124M", "50257", "768", "257")},
    "02_flop_accounting": {
        **{k: _PAPER[k] for k in ("2.5x", "50257", "768", "257", "50k")},
        "6.9e10": "question 6's answer, worked from its d = 4096, T = 2048",
        "92%": "question 6's answer, worked from its d = 4096, T = 2048",
        "8.4e11": "question 6's answer, worked from its d = 4096, T = 2048",
    },
    "03_sparse_pretraining": {},
    "04_dense_finetuning": {k: _PAPER[k] for k in ("125M", "1.3B")},
    "05_paper_findings_small_scale": {
        **{k: _PAPER[k] for k in ("125M", "1.3B")},
        "1.30": "question 4's hypothetical test losses",
        "2.20": "question 4's hypothetical test losses",
        "2.365": "the t quantile for 8 seeds the Try-this task hands the student",
    },
    "06_beyond_the_paper": {k: _PAPER[k] for k in ("6.7B", "64%")},
}


def _prose(text: str) -> str:
    for pattern, flags in SKIP:
        text = re.sub(pattern, " ", text, flags=flags)
    return STRUCTURE.sub(" ", text)


def stated_numbers(cells) -> list[tuple[str, str, str]]:
    """``(as written, digits, unit)`` of every number the markdown cells state."""
    found = []
    for cell in cells:
        if cell["cell_type"] == "markdown":
            for m in STATED.finditer(_prose(cell["source"])):
                found.append(
                    (m.group(0).strip().lstrip("+-−"), m.group(1), (m.group(2) or "").strip())
                )
    return found


def _values(text: str) -> list[float]:
    return [float(n.replace(",", "")) for n in PRINTED.findall(text)]


def matches(digits: str, unit: str, pool: list[float]) -> bool:
    """Within half a unit of the prose's last digit of a number in ``pool``: the prose rounds what
    was printed, and nothing else (a percentage may also be printed as a fraction, and ``1.3B``
    as ``1.3e9`` or, suffix and all, as ``1.3B``)."""
    mantissa, _, exponent = digits.replace(",", "").partition("e")
    decimals = len(mantissa.split(".")[1]) if "." in mantissa else 0
    value = float(digits.replace(",", ""))
    tol = 0.5 * 10 ** (-decimals + int(exponent or 0)) * (1 + 1e-9)
    scale = SUFFIX.get(unit, 1.0)
    candidates = [(value * scale, tol * scale), (value, tol)]
    if unit == "%":
        candidates.append((value / 100, tol / 100))
    return any(abs(v - abs(p)) <= t for v, t in candidates for p in pool)


def drift(cells, record: dict, allowed: dict) -> list[str]:
    """The numbers the prose states that the reference did not print, the code does not set and
    ``allowed`` does not explain."""
    printed = _values(record["printed"])
    code = _values("\n".join(c["source"] for c in cells if c["cell_type"] == "code"))
    return [
        written
        for written, digits, unit in stated_numbers(cells)
        if not matches(digits, unit, printed)
        and not matches(digits, unit, code)
        and written not in allowed
    ]


def _lesson(path):
    cells = [
        {"cell_type": c.cell_type, "source": c.source}
        for c in nbformat.read(str(path), as_version=4).cells
    ]
    return cells, json.loads((REFERENCE / f"{path.stem}.json").read_text())


@pytest.mark.parametrize("path", LESSONS, ids=lambda p: p.stem)
def test_every_number_in_the_prose_was_printed(path):
    cells, record = _lesson(path)
    assert [c["source"] for c in cells] == [c["source"] for c in record["cells"]], (
        f"the reference of {path.stem} is stale: run python notebooks/references.py "
        "(--text if only prose changed)"
    )
    assert len(stated_numbers(cells)) > 20, (
        "the prose states few numbers: is the extraction broken?"
    )
    wrong = drift(cells, record, ALLOWED[path.stem])
    assert not wrong, (
        f"{path.stem} states {wrong}, which its reference run did not print: write what "
        "the lesson prints, or (for a number that is not an output) list it in ALLOWED with why"
    )


@pytest.mark.parametrize("path", LESSONS, ids=lambda p: p.stem)
def test_the_allow_list_holds_only_numbers_the_prose_states(path):
    """An allowed number the prose no longer states, or one the lesson prints, leaves the list."""
    cells, record = _lesson(path)
    written = {w for w, _, _ in stated_numbers(cells)}
    stale = [n for n in ALLOWED[path.stem] if n not in written]
    assert not stale, f"{path.stem}: ALLOWED lists {stale}, which its prose does not state"
    printed = _values(record["printed"])
    outputs = [
        n
        for n, d, u in stated_numbers(cells)
        if n in ALLOWED[path.stem]
        and matches(d, u, printed)
        and n not in _PAPER
        and not re.fullmatch(r"\d", n)
    ]
    assert not outputs, f"{path.stem}: {outputs} are printed by the lesson: take them off ALLOWED"


def test_the_check_fails_on_a_wrong_number_in_the_prose_or_the_answers():
    """Inject a wrong number (a transposed digit, a wrong percentage, a wrong ratio) into the
    prose and into the answer key of lesson 01: each is reported; the true ones are not."""
    path = NB_DIR / "01_gpt_and_masks.ipynb"
    cells, record = _lesson(path)
    assert drift(cells, record, ALLOWED[path.stem]) == []
    see = next(i for i, c in enumerate(cells) if "**What you should see.**" in c["source"])
    answers = max(i for i, c in enumerate(cells) if "Answers (instructor's copy)" in c["source"])
    for where, good, bad in [
        (see, "**2.116**", "**2.161**"),
        (see, "**81%**", "**18%**"),
        (answers, "third of the model", "third (37.5%) of the model"),
    ]:
        broken = [dict(c) for c in cells]
        assert good in broken[where]["source"], good
        broken[where]["source"] = broken[where]["source"].replace(good, bad, 1)
        found = drift(broken, record, ALLOWED[path.stem])
        assert found == [re.search(r"[\d.]+%?", bad).group(0)], (bad, found)


def test_what_counts_as_a_stated_number():
    cells = [
        {"cell_type": "markdown", "source": text}
        for text in (
            "## 2 · Exercise 7, lessons 01 and 02: GPT-2 and gpt3-xl, a 2:4 mask, $6N$, `0.75`.",
            "1. val loss **1.995**, 1.68x fewer FLOPs, 55.5% zero, a 1.3B model, 1,200 steps",
            "[reference](reference/01.html), torch 2.13.0, measured 2026-12-04, arXiv:2303.10464",
        )
    ]
    assert [w for w, _, _ in stated_numbers(cells)] == ["1.995", "1.68x", "55.5%", "1.3B", "1,200"]
    assert matches("1.995", "", [2.0, 1.9953]) and not matches("1.995", "", [1.997])
    assert (
        matches("55.5", "%", [0.5551])
        and matches("1.3", "B", [1.3e9])
        and matches("1,200", "", [1200.0])
    )
    assert matches("2.68e12", "", [2.68e12]) and not matches("0.461", "", [0.463, 18.6])
