"""Tasks from the Hugging Face hub: ``e2e`` (tuetschek/e2e_nlg), ``dart`` (Yale-LILY/dart) and
``curation`` (d0rj/curation-corpus). Offline, or with the hub unreachable, it fails at once with
the local-file alternative.
"""

from __future__ import annotations

from minispdf.errors import MiniSPDFError, one_line
from minispdf.hub import hub_unreachable

from .core import Example, Task, clean, counts_text, group, split_task
from .triples import dart_meta, linearize_triples

_HUB_EXAMPLE_FILE = {
    "e2e": "e2e:path/to/devset.csv",
    "dart": "dart:path/to/dart-v1.1.1-full-dev.json",
    "curation": "curation:path/to/curation.csv",
}


def _check_hub(repo: str, name: str) -> None:
    """Fail at once, with the fix, when the hub cannot be reached (offline flag or no network)."""
    reason = hub_unreachable()
    if reason:
        raise MiniSPDFError(f"{reason}: cannot fetch {repo} from the Hugging Face hub; "
                            f"pass a local file instead: --task {_HUB_EXAMPLE_FILE[name]}")


def _hub_load(repo: str, name: str, data_files: dict[str, str] | None = None):
    _check_hub(repo, name)
    try:
        from datasets import load_dataset

        if data_files is None:
            return load_dataset(repo)
        return load_dataset("parquet", data_files=data_files)
    except Exception as e:  # network, schema and cache errors all have one fix
        raise MiniSPDFError(
            f"could not load {repo} from the Hugging Face hub ({one_line(e, 300)}); "
            f"pass a local file instead: --task {_HUB_EXAMPLE_FILE[name]}"
        ) from None


def _parquet_export(repo: str) -> dict[str, str]:
    base = f"hf://datasets/{repo}@refs%2Fconvert%2Fparquet/default"
    return {s: f"{base}/{s}/0000.parquet" for s in ("train", "validation", "test")}


_HUB_SPLITS = {"train": "train", "validation": "val", "dev": "val", "test": "test"}


def _hub_pairs_to_examples(inputs: list, refs: list, metas: list | None = None) -> list[Example]:
    """Group hub rows, silently dropping rows with an empty input or reference (not
    user-fixable)."""
    metas = metas or [{}] * len(inputs)
    pairs = [(clean(i), clean(r), None, m) for i, r, m in zip(inputs, refs, metas)]
    return group(p for p in pairs if p[0] and p[1])


def load_hub(name: str, seed: int) -> Task:
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
                texts = (ann.get("text", []) if isinstance(ann, dict)
                         else [a.get("text") for a in ann])
                sources = (ann.get("source", []) if isinstance(ann, dict)
                           else [a.get("source") for a in ann])
                inp, meta = linearize_triples(ts), dart_meta(sources)
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
    task = Task(name, metric, splits["train"], splits["val"], splits["test"],
                f"{repo} from the Hugging Face hub")
    if not task.val and not task.test:  # a hub copy with only a train split: cut val/test from it
        task = split_task(task, val_fraction=0.05, test_fraction=0.05, seed=seed)
        task.description = (f"{repo} from the Hugging Face hub (its one split cut 90/5/5 with "
                            f"seed {seed})")
    task.description += f": {counts_text(task)}"
    return task

