"""Text corpora for pre-training and their prepared token files.

The pipeline has three steps:

1. ``load_corpus(source)`` turns a source name ("builtin", "shakespeare", "tinystories", ...)
   or a path to a local text file into one Python string.
2. ``prepare_data(source, tokenizer_name)`` tokenizes that string once and stores the ids as
   flat binary files ``train.bin`` / ``val.bin`` (plus ``meta.json``) in
   ``<data_dir>/<slug>-<tokenizer>/``.  Later calls reuse the files.
3. ``TokenData.get_batch(...)`` cuts random windows out of the memory-mapped token arrays;
   the targets ``y`` are the inputs ``x`` shifted by one token. The training loop reads them
   through :class:`minispdf.batches.TokenBatches`.

The tokenizers (``char`` and ``gpt2``) are in :mod:`minispdf.tokenizers`; ``get_tokenizer`` is
importable from here too.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import sys
import time
from dataclasses import dataclass
import urllib.error
import urllib.request
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch

from minispdf.errors import MiniSPDFError, one_line
from minispdf.settings import Settings, setting
from minispdf.fileio import file_problem, publish_folder, write_bytes, writer_lock
from minispdf.hub import hub_unreachable
from minispdf.tasks.spec import TASK_SPEC
from minispdf.tokenizers import TOKENIZERS, get_tokenizer

# Where prepared token files (and downloads) live; relative to the current directory.
DATA_DIR = os.environ.get("MINISPDF_DATA_DIR", "data")

# ----------------------------------------------------------------------------------------
# Corpora
# ----------------------------------------------------------------------------------------

SHAKESPEARE_URL = (
    "https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt"
)


class HubSource(NamedTuple):
    repo: str  # Hugging Face dataset repository
    config: str | None  # dataset configuration name
    sep: str  # joins consecutive rows
    about: str  # one-line description for --help


HUB_SOURCES = {
    "tinystories": HubSource("roneneldan/TinyStories", None, "\n\n", "simple short stories"),
    "wikitext2": HubSource("Salesforce/wikitext", "wikitext-2-raw-v1", "", "Wikipedia, ~11 MB"),
    "wikitext103": HubSource("Salesforce/wikitext", "wikitext-103-raw-v1", "",
                             "Wikipedia, ~540 MB"),
    "fineweb-edu": HubSource("HuggingFaceFW/fineweb-edu", "sample-10BT", "\n\n",
                             "educational web pages"),
}
HUB_DEFAULT_MAX_CHARS = 50_000_000  # hub corpora are cut to this many characters by default
BUILTIN_SOURCES = ("builtin", "shakespeare")


def describe_sources() -> str:
    """Help text for the CLI's --data option, one line per source."""
    lines = [
        "builtin       Python's own documentation prose (~466 kB, offline, always available)",
        "shakespeare   tiny shakespeare (~1.1 MB), downloaded once from GitHub",
    ]
    for name, hub in HUB_SOURCES.items():
        lines.append(f"{name:<13} {hub.about} (Hugging Face {hub.repo}; first "
                     f"{HUB_DEFAULT_MAX_CHARS // 1_000_000}M chars unless --max_chars)")
    lines.append("PATH          any local UTF-8 text file, e.g. path/to/input.txt")
    return "\n".join(lines)


def max_chars_setting():
    """The ``max_chars`` setting, alike in ``prepare`` and ``pretrain``."""
    return setting(None, f"cap on the characters read (hub corpora: the first "
                         f"{HUB_DEFAULT_MAX_CHARS // 1_000_000}M "
                         "unless given)", min=1)


@dataclass
class PrepareConfig(Settings):
    """Corpus or task."""
    data: str | None = setting(None, "corpus to tokenize (default builtin; the list is below)",
                               metavar="SOURCE")
    tokenizer: str = setting("char", "tokenizer", choices=TOKENIZERS)
    max_chars: int | None = max_chars_setting()
    task: str | None = setting(None, f"or load a task and count its splits: {TASK_SPEC}",
                               metavar="SPEC")


def _choices() -> str:
    return ", ".join([*BUILTIN_SOURCES, *HUB_SOURCES]) + " or a path to a .txt file"


def _load_builtin() -> str:
    """English prose that ships with every CPython: the topic pages of ``help()``."""
    from pydoc_data.topics import topics

    return "".join(topics[key] for key in sorted(topics))


def _load_file(path: str) -> str:
    p = Path(path)
    what = file_problem(p)
    if what:
        raise MiniSPDFError(f"data file {path!r} {what}: pass a text file or one of: {_choices()}")
    try:
        text = p.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise MiniSPDFError(f"data file {path!r} is not UTF-8 text: re-save it as UTF-8") from exc
    if not text.strip():
        raise MiniSPDFError(f"data file {path!r} is empty: pass a file that contains text")
    return text


def _load_shakespeare(data_dir: str) -> str:
    cached = Path(data_dir) / "downloads" / "tinyshakespeare.txt"
    if not cached.is_file():
        try:
            with urllib.request.urlopen(SHAKESPEARE_URL, timeout=10) as response:
                raw = response.read()
        except (urllib.error.URLError, OSError) as exc:
            raise MiniSPDFError(
                f"no network: cannot download tiny shakespeare from {SHAKESPEARE_URL} ({exc}); "
                "download it yourself and pass --data path/to/input.txt"
            ) from exc
        write_bytes(str(cached), raw)  # atomic: never a half-downloaded cache file
    return _load_file(str(cached))


def _load_hub(name: str, max_chars: int) -> str:
    hub = HUB_SOURCES[name]
    reason = hub_unreachable()
    if reason:
        raise MiniSPDFError(
            f"cannot download {name} from Hugging Face ({reason}): go online, "
            "or pass a local text file with --data path/to/file.txt"
        )
    try:
        import datasets
    except ImportError as exc:
        raise MiniSPDFError(
            f"data source {name!r} needs the datasets package: pip install datasets") from exc
    pieces, total = [], 0
    try:
        # Streaming reads only as many rows as needed instead of the whole dataset.
        rows = datasets.load_dataset(hub.repo, hub.config, split="train", streaming=True)
        for row in rows:
            pieces.append(row["text"])
            total += len(row["text"]) + len(hub.sep)
            if total >= max_chars:
                break
    except Exception as exc:
        raise MiniSPDFError(
            f"loading {hub.repo} from Hugging Face failed ({type(exc).__name__}: {one_line(exc)}); "
            "check your connection, or pass a local text file with --data path/to/file.txt"
        ) from exc
    return hub.sep.join(pieces)[:max_chars]


def _default_max_chars(source: str) -> int | None:
    return HUB_DEFAULT_MAX_CHARS if source in HUB_SOURCES else None


def _is_path(source: str) -> bool:
    return os.path.exists(source) or os.sep in source or "/" in source or source.endswith(".txt")


def load_corpus(source: str, max_chars: int | None = None, data_dir: str | None = None) -> str:
    """Return the text of ``source`` (see ``describe_sources``), cut to ``max_chars`` if given.

    Named sources win over files of the same name; write ``./builtin`` to mean a file.
    """
    if not str(source).strip():
        raise MiniSPDFError(f"--data is empty: pass one of {_choices()}, or a path to a .txt file")
    data_dir = data_dir or os.environ.get("MINISPDF_DATA_DIR") or DATA_DIR
    max_chars = max_chars or _default_max_chars(source)
    if source == "builtin":
        text = _load_builtin()
    elif source == "shakespeare":
        text = _load_shakespeare(data_dir)
    elif source in HUB_SOURCES:
        text = _load_hub(source, max_chars)
    elif _is_path(source):
        text = _load_file(source)
    else:
        raise MiniSPDFError(f"unknown data source {source!r}: choose one of {_choices()}")
    return text[:max_chars] if max_chars else text


# ----------------------------------------------------------------------------------------
# Tokenized data on disk
# ----------------------------------------------------------------------------------------

META_FORMAT = 1


class TokenData:
    """Train/val token arrays of one prepared corpus (memory-mapped, read-only)."""

    def __init__(self, path: str):
        self.path = str(path)
        with open(os.path.join(self.path, "meta.json")) as f:
            self.meta = json.load(f)
        self.source = self.meta["source"]
        self.tokenizer_name = self.meta["tokenizer"]
        self.vocab_size = self.meta["vocab_size"]
        dtype = np.dtype(self.meta["dtype"])
        self.train = _open_tokens(os.path.join(self.path, "train.bin"), dtype)
        self.val = _open_tokens(os.path.join(self.path, "val.bin"), dtype)

    def __repr__(self):
        return (f"TokenData({self.source!r}, tokenizer={self.tokenizer_name!r}, "
                f"train={len(self.train):,} tokens, val={len(self.val):,} tokens, "
                f"path={self.path!r})")

    @property
    def tokenizer(self):
        return get_tokenizer(self.tokenizer_name)

    def _split(self, split: str) -> np.ndarray:
        if split not in ("train", "val"):
            raise ValueError(f"split must be 'train' or 'val', got {split!r}")
        return self.train if split == "train" else self.val

    def validate(self, block_size: int, splits=("train", "val")) -> None:
        """Raise MiniSPDFError if a split is too short for windows of ``block_size`` tokens."""
        for split in splits:
            n = len(self._split(split))
            if n < block_size + 1:
                raise MiniSPDFError(
                    f"corpus too small for block_size {block_size}: the {split} split has only "
                    f"{n} tokens; use a larger text or a smaller --block_size"
                )

    def get_batch(self, split: str, batch_size: int, block_size: int,
                  generator: torch.Generator, device="cpu") -> tuple[torch.Tensor, torch.Tensor]:
        """Random windows ``x`` (batch_size, block_size) and next-token targets ``y`` (int64).

        Offsets come from ``generator`` (a CPU generator), so restoring its state replays the
        exact same batches.
        """
        data = self._split(split)
        self.validate(block_size, splits=(split,))
        starts = torch.randint(len(data) - block_size, (batch_size,), generator=generator)
        rows = starts.numpy()[:, None] + np.arange(block_size + 1)  # (batch, block + 1)
        windows = torch.from_numpy(data[rows].astype(np.int64))
        x = windows[:, :-1].contiguous()
        y = windows[:, 1:].contiguous()
        return x.to(device), y.to(device)


def _open_tokens(path: str, dtype: np.dtype) -> np.ndarray:
    if os.path.getsize(path) == 0:  # numpy cannot memory-map an empty file
        return np.zeros(0, dtype=dtype)
    return np.memmap(path, dtype=dtype, mode="r")


def corpus_slug(source: str, max_chars: int | None) -> str:
    """Folder-name-safe id of a source: its name, or file stem + hash of the absolute path."""
    if source in BUILTIN_SOURCES or source in HUB_SOURCES:
        slug = source
    else:
        path = os.path.abspath(source)
        stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", Path(path).stem) or "file"
        slug = f"{stem}-{hashlib.sha1(os.fsencode(path)).hexdigest()[:8]}"
    if max_chars and max_chars != _default_max_chars(source):
        slug += f"-max{max_chars}"
    return slug


def _matches(folder: Path, expected: dict) -> bool:
    """True if ``folder`` holds complete token files made with the ``expected`` settings."""
    try:
        meta = json.loads((folder / "meta.json").read_text())
        itemsize = np.dtype(meta["dtype"]).itemsize
        return (all(meta.get(k) == v for k, v in expected.items())
                and (folder / "train.bin").stat().st_size == meta["train_tokens"] * itemsize
                and (folder / "val.bin").stat().st_size == meta["val_tokens"] * itemsize)
    except (OSError, ValueError, KeyError, TypeError):
        return False


def prepare_data(source: str, tokenizer_name: str, data_dir: str | None = None,
                 val_fraction: float = 0.1, max_chars: int | None = None,
                 verbose: bool = True) -> TokenData:
    """Tokenize ``source`` once into ``<data_dir>/<slug>-<tokenizer>/`` and return its TokenData.

    The first ``1 - val_fraction`` of the tokens are the train split, the rest the val split.
    A folder whose meta.json matches the request is reused.  Files are written to a temporary
    folder that is renamed into place at the end, so an interrupted run leaves no half folder.
    """
    if not 0 <= val_fraction < 1:
        raise MiniSPDFError(f"val_fraction must be in [0, 1), got {val_fraction}: pick e.g. 0.1")
    if max_chars is not None and max_chars < 1:
        raise MiniSPDFError(
            f"max_chars={max_chars}: give a positive number of characters (or leave it out)")
    tokenizer = get_tokenizer(tokenizer_name)
    data_dir = Path(data_dir or os.environ.get("MINISPDF_DATA_DIR") or DATA_DIR)
    max_chars = max_chars or _default_max_chars(source)
    is_file = source not in BUILTIN_SOURCES and source not in HUB_SOURCES
    key = os.path.abspath(source) if is_file and _is_path(source) else source
    folder = data_dir / f"{corpus_slug(source, max_chars)}-{tokenizer.name}"
    expected = {"format": META_FORMAT, "source": key, "tokenizer": tokenizer.name,
                "vocab_size": tokenizer.vocab_size, "val_fraction": val_fraction,
                "max_chars": max_chars}

    # Hub corpora are big and stable, so reuse before downloading; local text is hashed.
    if source in HUB_SOURCES and _matches(folder, expected):
        return TokenData(folder)
    text = load_corpus(source, max_chars=max_chars, data_dir=str(data_dir))
    expected["text_sha256"] = hashlib.sha256(text.encode("utf-8")).hexdigest()
    if _matches(folder, expected):
        return TokenData(folder)

    if verbose:
        # a notebook shades stderr red like an error; elsewhere stdout may carry a command's JSON
        print(f"tokenizing {len(text):,} chars of {source!r} with {tokenizer.name} -> {folder}",
              file=sys.stdout if "ipykernel" in sys.modules else sys.stderr)
    ids = tokenizer.encode_array(text)
    dtype = np.uint16 if tokenizer.vocab_size <= 2**16 else np.uint32
    n_train = int(len(ids) * (1 - val_fraction))

    data_dir.mkdir(parents=True, exist_ok=True)
    # a shared cache: a second process waits, then reuses it
    with writer_lock(str(folder), "prepare", wait=True):
        if _matches(folder, expected):
            return TokenData(folder)
        _remove_stale_temp_dirs(data_dir, folder.name)
        _publish_tokens(folder, ids, n_train, dtype,
                        meta={**expected, "dtype": np.dtype(dtype).name,
                                                          "text_chars": len(text),
                                                           "train_tokens": n_train,
                                                          "val_tokens": len(ids) - n_train})
    return TokenData(folder)


def _publish_tokens(folder: Path, ids, n_train: int, dtype, meta: dict) -> None:
    with publish_folder(str(folder)) as tmp:  # an interrupted run leaves no half-written folder
        ids[:n_train].astype(dtype).tofile(os.path.join(tmp, "train.bin"))
        ids[n_train:].astype(dtype).tofile(os.path.join(tmp, "val.bin"))
        with open(os.path.join(tmp, "meta.json"), "w") as f:
            f.write(json.dumps(meta, indent=2) + "\n")


def _remove_stale_temp_dirs(data_dir: Path, name: str, max_age_s: float = 3600) -> None:
    """Delete temp folders of ``name`` left by killed runs (older than an hour, so that a
    prepare running at the same time in another process is left alone)."""
    for leftover in data_dir.glob(f".tmp-{name}-*"):
        try:
            if time.time() - leftover.stat().st_mtime > max_age_s:
                shutil.rmtree(leftover, ignore_errors=True)
        except OSError:
            pass


def corpus_stats(source: str, tokenizer_name: str = "char", max_chars=None, *,
                 data_dir: str | None = None) -> dict:
    """Prepare ``source`` (see ``prepare_data``) and describe it, from its token files.

    Returns ``characters`` (of the text), ``tokens`` ({"train": n, "val": n}), ``vocab_used``
    (distinct ids in train + val), ``vocab_size`` (the tokenizer's), ``unigram_entropy``
    (nats/token of the train split's token frequencies: the loss of a model that ignores
    context, so a trained model must go below it), ``tokenizer``, ``source`` and ``folder``.
    Counted afresh on every call (a bincount, well under a second for 50M tokens), so the
    numbers can never be stale.
    """
    td = prepare_data(source, tokenizer_name, data_dir=data_dir, max_chars=max_chars, verbose=False)
    train_counts = np.bincount(td.train, minlength=td.vocab_size)
    all_counts = train_counts + np.bincount(td.val, minlength=td.vocab_size)
    return {
        "source": td.source, "tokenizer": td.tokenizer_name, "folder": td.path,
        "characters": td.meta["text_chars"],
        "tokens": {"train": len(td.train), "val": len(td.val)},
        "vocab_used": int(np.count_nonzero(all_counts)), "vocab_size": td.vocab_size,
        "unigram_entropy": _entropy_nats(train_counts),
    }


def _entropy_nats(counts: np.ndarray) -> float:
    """Shannon entropy (natural log) of the distribution given by ``counts``; 0 for no data."""
    total = counts.sum()
    if total == 0:
        return 0.0
    p = counts[counts > 0] / total
    return float(-(p * np.log(p)).sum())
