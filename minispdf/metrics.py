"""The metrics that papers on E2E, WebNLG, DART and Curation Corpus print, from well-kept packages.

:func:`score_predictions` scores a list of predictions against their references, overall and per
subset (WebNLG seen / unseen, DART source), with any of these metrics:

``bleu``
    sacrebleu corpus BLEU, lowercased: this reproduces the official E2E script's BLEU.
``chrf``
    sacrebleu chrF++ (character n-grams up to 6 plus word n-grams up to 2), sacrebleu's defaults.
``ter``
    sacrebleu TER (tercom's algorithm, sacrebleu's defaults: case-insensitive). Lower is better.
``rouge``
    Google's ``rouge-score``: ROUGE-1, ROUGE-2 and ROUGE-L F1 (Porter stemmer on), for each input
    the best over its references (``score_multi``), averaged over inputs.
``meteor``
    The official METEOR 1.5 jar (``-l en -norm``) after the Stanford PTB tokenizer, as the E2E
    challenge's script runs it (both ship in the ``pycocoevalcap`` package; Java needed).
    Optional: ``pip install pycocoevalcap`` and a ``java`` on PATH (see :func:`meteor_available`).

All scores are on a 0-100 scale. Inputs may have different numbers of references: the sacrebleu
reference streams are padded with ``None`` (padding with ``""`` would change the scores).
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
from typing import Sequence

from .errors import MiniSPDFError, one_line
from .fileio import quiet_stderr

__all__ = ["METRICS", "default_metrics", "parse_metrics", "meteor_available", "score_predictions",
           "bleu"]

METRICS = ("bleu", "chrf", "ter", "rouge", "meteor")
_ROUGE_TYPES = ("rouge1", "rouge2", "rougeL")


def default_metrics(task_name: str) -> tuple[str, ...]:
    """Each task's usual set: BLEU, METEOR, chrF++, TER, ROUGE for data-to-text; ROUGE for
    summaries."""
    if str(task_name).split(":")[0] == "curation":
        return ("rouge",)
    return ("bleu", "chrf", "ter", "rouge", "meteor")


def parse_metrics(spec: str | Sequence[str] | None, task_name: str = "") -> list[str]:
    """``"bleu,chrf"`` (or a list) as a checked list of metric names; None gives the task's
    defaults."""
    if spec is None:
        return list(default_metrics(task_name))
    names = [m.strip().lower() for m in (spec.split(",") if isinstance(spec, str) else spec)]
    names = [m for m in names if m]
    if not names:
        raise MiniSPDFError(
            f"--metrics is empty: give some of {', '.join(METRICS)}, separated by commas")
    for m in names:
        if m not in METRICS:
            raise MiniSPDFError(
                f"unknown metric {m!r}: choose from {', '.join(METRICS)} (comma-separated)")
    return list(dict.fromkeys(names))


def meteor_available() -> str | None:
    """None when METEOR can run here, else why not (and how to fix it)."""
    try:
        import pycocoevalcap.meteor.meteor  # noqa: F401
        import pycocoevalcap.tokenizer.ptbtokenizer  # noqa: F401
    except ImportError:
        return "METEOR needs the official meteor-1.5 jar: pip install pycocoevalcap (and Java)"
    if shutil.which("java") is None:
        return ("METEOR runs the official meteor-1.5 jar and needs Java: install a JRE (e.g. "
                "apt-get install default-jre-headless)")
    return None


# --------------------------------------------------------------------------------------------
# One metric each: predictions (list of str), references (list of non-empty lists of str)
# --------------------------------------------------------------------------------------------


def _streams(references: list[list[str]]) -> list[list[str | None]]:
    """sacrebleu's reference streams, the shorter ones padded with None."""
    n = max(len(r) for r in references)
    return [[r[j] if j < len(r) else None for r in references] for j in range(n)]


def _sacrebleu(metric, predictions, references) -> tuple[float, str]:
    score = metric.corpus_score(list(predictions), _streams(references))
    return float(score.score), str(metric.get_signature())


def _bleu(predictions, references):
    from sacrebleu.metrics import BLEU
    return _sacrebleu(BLEU(lowercase=True), predictions, references)


def _chrf(predictions, references):
    from sacrebleu.metrics import CHRF
    return _sacrebleu(CHRF(word_order=2), predictions, references)


def _ter(predictions, references):
    from sacrebleu.metrics import TER
    return _sacrebleu(TER(), predictions, references)


def _rouge(predictions, references) -> dict[str, float]:
    from rouge_score import rouge_scorer

    scorer = rouge_scorer.RougeScorer(list(_ROUGE_TYPES), use_stemmer=True)
    totals = dict.fromkeys(_ROUGE_TYPES, 0.0)
    for pred, refs in zip(predictions, references):
        best = scorer.score_multi(refs, pred)  # per type, the reference with the best F1
        for t in _ROUGE_TYPES:
            totals[t] += best[t].fmeasure
    return {t: 100 * totals[t] / len(predictions) for t in _ROUGE_TYPES}


class _Meteor:
    """The official METEOR 1.5 jar behind pycocoevalcap's wrapper, after its PTB tokenizer.

    One Java process serves every subset; segments are PTB-tokenized (lowercased, punctuation
    dropped) once, as the E2E challenge's script does before METEOR.
    """

    def __init__(self, predictions, references):
        from pycocoevalcap.meteor.meteor import Meteor
        from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

        log = {"text": ""}
        try:
            with quiet_stderr() as log:  # the Java tokenizer reports its speed on stderr
                tok = PTBTokenizer()
                self.refs = tok.tokenize({i: [{"caption": r} for r in refs]
                                          for i, refs in enumerate(references)})
                self.hyps = tok.tokenize({i: [{"caption": p}] for i, p in enumerate(predictions)})
            self.scorer = Meteor()
        except (OSError, ValueError, KeyError, subprocess.SubprocessError) as e:
            why = one_line(f"{e} {log['text']}", 300)
            raise MiniSPDFError(f"METEOR could not run ({why}); check Java and the "
                                f"pycocoevalcap install, "
                                "or leave meteor out of --metrics") from None

    def score(self, indices: list[int]) -> float:
        gts = {k: self.refs[i] for k, i in enumerate(indices)}
        res = {k: self.hyps[i] for k, i in enumerate(indices)}
        try:
            return 100 * float(self.scorer.compute_score(gts, res)[0])
        except (OSError, ValueError) as e:  # the Java process died or answered nonsense
            raise MiniSPDFError(f"METEOR failed ({one_line(e)}); check Java, "
                                "or leave meteor out of --metrics") from None

    def close(self) -> None:
        with contextlib.suppress(Exception):
            p = self.scorer.meteor_p
            p.stdin.close()
            p.kill()
            p.wait()


# --------------------------------------------------------------------------------------------
# Public entry point
# --------------------------------------------------------------------------------------------


def bleu(predictions: list[str], references: list[list[str]]) -> float:
    """Corpus BLEU (0-100) of ``predictions`` against their references; sacrebleu, lowercased.

    ``references[i]`` holds all references of input ``i``; inputs may have different numbers of
    them (the shorter reference streams are padded with ``None``).
    """
    preds, refs = _check(predictions, references, "BLEU")
    return _bleu(preds, refs)[0]


def _check(predictions, references, what: str = "a metric") -> tuple[list[str], list[list[str]]]:
    if len(predictions) != len(references):
        raise MiniSPDFError(
            f"{len(predictions)} predictions but {len(references)} reference lists: give one list "
            f"per prediction"
        )
    if not predictions:
        raise MiniSPDFError("no predictions to score: evaluate at least one input")
    refs = [[r] if isinstance(r, str) else list(r) for r in references]
    for i, r in enumerate(refs):
        if not r:
            raise MiniSPDFError(
                f"input {i} has no references: {what} needs at least one reference per input")
    return [str(p) for p in predictions], refs


def _subset_indices(subsets, n: int) -> dict[str, list[int]]:
    """{subset name: input indices}; an input may be in several subsets (a str or a list of str)."""
    if subsets is None:
        return {}
    if len(subsets) != n:
        raise MiniSPDFError(
            f"{len(subsets)} subset labels for {n} predictions: give one label (or None) per input")
    out: dict[str, list[int]] = {}
    for i, label in enumerate(subsets):
        for name in ([label] if isinstance(label, str) else label or []):
            out.setdefault(str(name), []).append(i)
    return dict(sorted(out.items()))


def score_predictions(predictions: Sequence[str], references: Sequence[Sequence[str]],
                      metrics: str | Sequence[str] | None = None, subsets: Sequence | None = None,
                      task: str = "") -> dict:
    """Score predictions against references, overall and per subset.

    ``metrics`` is a list or comma-separated string of :data:`METRICS` (None: the defaults of
    ``task``, see :func:`default_metrics`). ``subsets[i]`` names the subset(s) of input ``i``
    (a string, a list of strings, or None). METEOR among the defaults is skipped with a note when
    it cannot run here; asked for by name, it raises :class:`MiniSPDFError` with the fix.

    Returns ``{"metrics": [...], "n_inputs", "n_references", <score keys>, "signatures": {...},
    "subsets": {name: {"n_inputs", "n_references", <score keys>}}, "notes": [...]}`` where the
    score keys are ``bleu``, ``chrf``, ``ter``, ``meteor`` and ``rouge1``/``rouge2``/``rougeL``.
    """
    asked = metrics is not None
    names = parse_metrics(metrics, task)
    preds, refs = _check(predictions, references)
    notes: list[str] = []
    if "meteor" in names and (why := meteor_available()) is not None:
        if asked:
            raise MiniSPDFError(why)
        names.remove("meteor")
        notes.append(f"meteor left out: {why}")
    groups = {"": list(range(len(preds))), **_subset_indices(subsets, len(preds))}
    meteor = _Meteor(preds, refs) if "meteor" in names else None
    signatures: dict[str, str] = {}
    scored: dict[str, dict] = {}
    try:
        for group, idx in groups.items():
            p = [preds[i] for i in idx]
            r = [refs[i] for i in idx]
            row: dict = {"n_inputs": len(idx), "n_references": sum(len(x) for x in r)}
            for name in names:
                if name == "rouge":
                    row.update(_rouge(p, r))
                elif name == "meteor":
                    row["meteor"] = meteor.score(idx)
                else:
                    row[name], sig = {"bleu": _bleu, "chrf": _chrf, "ter": _ter}[name](p, r)
                    signatures.setdefault(name, sig)  # the overall one (computed first)
            scored[group] = row
    finally:
        if meteor is not None:
            meteor.close()
    if meteor is not None:
        signatures["meteor"] = "meteor-1.5 -l en -norm (pycocoevalcap), PTB-tokenized"
    if "rouge" in names:
        signatures["rouge"] = "rouge-score F1, use_stemmer=True, best reference per input"
    result = {"metrics": names, **scored.pop(""), "signatures": signatures, "subsets": scored,
              "notes": notes}
    return result


_LABELS = (("bleu", "BLEU"), ("meteor", "METEOR"), ("chrf", "chrF++"), ("ter", "TER"),
           ("rouge1", "ROUGE-1"),
           ("rouge2", "ROUGE-2"), ("rougeL", "ROUGE-L"), ("perplexity", "perplexity"))


def format_scores(row: dict) -> str:
    """``BLEU 12.34, chrF++ 40.10, ...`` for the score keys present in ``row``."""
    return ", ".join(f"{label} {row[k]:.3f}" if k == "perplexity" else f"{label} {row[k]:.2f}"
                     for k, label in _LABELS if row.get(k) is not None)


def format_report(result: dict, title: str) -> str:
    """The overall line (``all``) and one line per subset of a :func:`score_predictions` result."""
    def line(name: str, row: dict) -> str:
        return (f"  {name:<10} {row['n_inputs']:>6} inputs {row['n_references']:>6} refs  "
                f"{format_scores(row)}")

    lines = [title, line("all", result)]
    lines += [line(name, row) for name, row in result.get("subsets", {}).items()]
    lines += [f"note: {n}" for n in result.get("notes", [])]
    return "\n".join(lines)
