"""Tests for minispdf.data: tokenizers, corpora, prepared token files and batches."""

import os

os.environ["HF_HUB_OFFLINE"] = "1"  # never touch the network from tests

import collections
import json
import math
import sys
import time
import types
import urllib.error
from pathlib import Path

import numpy as np
import pytest
import torch

from minispdf import data, fileio, tokenizers
from minispdf.data import (
    TokenData,
    corpus_stats,
    describe_sources,
    get_tokenizer,
    load_corpus,
    prepare_data,
)
from minispdf.errors import MiniSPDFError
from minispdf.tokenizers import CharTokenizer, GPT2Tokenizer
from minispdf.tasks import TASK_NAMES


@pytest.fixture(autouse=True)
def _offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


@pytest.fixture
def small_file(tmp_path):
    path = tmp_path / "tiny.txt"
    path.write_text("First Citizen:\nBefore we proceed any further, hear me speak.\n" * 40,
                    encoding="utf-8")
    return path


# ---------------------------------------------------------------- tokenizers


def test_char_round_trip_including_non_ascii():
    tok = get_tokenizer("char")
    assert isinstance(tok, CharTokenizer)
    assert (tok.name, tok.vocab_size, tok.eot_id) == ("char", 257, 256)
    text = "Hello, wörld! 日本語 🙂 <|endoftext|>"
    ids = tok.encode(text)
    assert ids[:5] == [72, 101, 108, 108, 111]  # ASCII: one token per char
    assert len(ids) == len(text.encode("utf-8"))
    assert all(0 <= i < 256 for i in ids)
    assert tok.decode(ids) == text
    assert tok.decode(torch.tensor(ids + [tok.eot_id])) == text  # eot skipped, tensor ok
    assert tok.decode([0xE6]) == "\ufffd"  # broken UTF-8 is replaced, not an error
    assert tok.encode_array(text).tolist() == ids


def test_gpt2_tokenizer():
    tok = get_tokenizer("gpt2")
    assert isinstance(tok, GPT2Tokenizer)
    assert (tok.name, tok.vocab_size, tok.eot_id) == ("gpt2", 50257, 50256)
    assert tok.encode("Hello world") == [15496, 995]
    text = "Hello world, naïve café 🙂\n\n  indented"
    assert tok.decode(tok.encode(text)) == text
    assert tok.decode(torch.tensor(tok.encode("Hi") + [50256])) == "Hi"
    # The special marker inside text is ordinary text, never the eot id.
    ids = tok.encode("a<|endoftext|>b")
    assert 50256 not in ids and tok.decode(ids) == "a<|endoftext|>b"


def test_gpt2_bulk_encoding_matches_encode(monkeypatch):
    tok = get_tokenizer("gpt2")
    text = load_corpus("builtin")[:120_000] + "\n\n\n  tail\n"
    monkeypatch.setattr(tokenizers, "ENCODE_CHUNK_CHARS", 5_000)  # force many chunk boundaries
    assert len(tokenizers.split_for_bpe(text, 5_000)) > 10
    assert tok.encode_array(text).tolist() == tok.encode(text)


def test_unknown_tokenizer():
    with pytest.raises(MiniSPDFError, match="char, gpt2"):
        get_tokenizer("bpe")


# ---------------------------------------------------------------- corpora


def test_builtin_corpus_is_big_and_deterministic():
    text = load_corpus("builtin")
    assert len(text) > 300_000
    assert text == load_corpus("builtin")
    assert load_corpus("builtin", max_chars=1000) == text[:1000]


def test_local_file(small_file):
    assert load_corpus(str(small_file)).startswith("First Citizen:")


def test_missing_empty_and_binary_files(tmp_path):
    with pytest.raises(MiniSPDFError, match="does not exist"):
        load_corpus(str(tmp_path / "nope.txt"))
    (tmp_path / "empty.txt").write_text("  \n")
    with pytest.raises(MiniSPDFError, match="empty"):
        load_corpus(str(tmp_path / "empty.txt"))
    (tmp_path / "bin.txt").write_bytes(b"\xff\xfe\x00\x81abc")
    with pytest.raises(MiniSPDFError, match="not UTF-8"):
        load_corpus(str(tmp_path / "bin.txt"))
    with pytest.raises(MiniSPDFError, match="directory"):
        load_corpus(str(tmp_path))


def test_unknown_source_lists_choices():
    with pytest.raises(MiniSPDFError, match="builtin.*shakespeare.*tinystories"):
        load_corpus("moby-dick")


@pytest.mark.parametrize("source", ["tinystories", "wikitext2", "wikitext103", "fineweb-edu"])
def test_hub_sources_fail_fast_offline(source, tmp_path):
    start = time.monotonic()
    with pytest.raises(MiniSPDFError, match="--data"):
        prepare_data(source, "char", data_dir=tmp_path)
    assert time.monotonic() - start < 5


def test_shakespeare_offline_fails_fast(tmp_path, monkeypatch):
    def no_network(*args, **kwargs):
        raise urllib.error.URLError("no route to host")

    monkeypatch.setattr(data.urllib.request, "urlopen", no_network)
    start = time.monotonic()
    with pytest.raises(MiniSPDFError, match="--data"):
        load_corpus("shakespeare", data_dir=str(tmp_path))
    assert time.monotonic() - start < 5


def test_shakespeare_uses_cached_download(tmp_path, monkeypatch):
    cached = tmp_path / "downloads" / "tinyshakespeare.txt"
    cached.parent.mkdir()
    cached.write_text("ROMEO:\nBut soft!\n")
    monkeypatch.setattr(data.urllib.request, "urlopen", None)  # must not be called
    assert load_corpus("shakespeare", data_dir=str(tmp_path)) == "ROMEO:\nBut soft!\n"


def test_describe_sources():
    help_text = describe_sources()
    for name in ["builtin", "shakespeare", "tinystories", "wikitext2", "wikitext103",
                 "fineweb-edu"]:
        assert name in help_text


# ---------------------------------------------------------------- prepared token files


@pytest.mark.parametrize("tok_name", ["char", "gpt2"])
def test_prepare_data_contents(tok_name, tmp_path):
    td = prepare_data("builtin", tok_name, data_dir=tmp_path, val_fraction=0.1, verbose=False)
    tok = get_tokenizer(tok_name)
    ids = tok.encode(load_corpus("builtin"))
    n_train = int(len(ids) * 0.9)
    assert td.train.dtype == np.uint16 and isinstance(td.train, np.memmap)
    assert td.train.tolist() == ids[:n_train]
    assert td.val.tolist() == ids[n_train:]
    assert (td.tokenizer_name, td.vocab_size, td.source) == (tok_name, tok.vocab_size, "builtin")
    assert sorted(os.listdir(td.path)) == ["meta.json", "train.bin", "val.bin"]
    assert os.path.basename(td.path) == f"builtin-{tok_name}"
    assert [p for p in os.listdir(tmp_path) if p.startswith(".tmp")] == []


def test_prepare_data_is_reused(small_file, tmp_path):
    out = tmp_path / "out"
    first = prepare_data(str(small_file), "char", data_dir=out, verbose=False)
    bin_path = os.path.join(first.path, "train.bin")
    mtime = os.stat(bin_path).st_mtime_ns
    time.sleep(0.01)
    second = prepare_data(str(small_file), "char", data_dir=out, verbose=False)
    assert second.path == first.path
    assert os.stat(bin_path).st_mtime_ns == mtime
    assert os.path.basename(first.path).startswith("tiny-")
    # Changing the text or the settings makes a fresh preparation.
    small_file.write_text("completely different text\n" * 50)
    third = prepare_data(str(small_file), "char", data_dir=out, verbose=False)
    assert third.path == first.path and third.train.tolist()[:10] == list(b"completely")
    other = prepare_data(str(small_file), "char", data_dir=out, val_fraction=0.5, verbose=False)
    assert len(other.val) > len(third.val)


def test_leftover_temp_dir_and_interrupt(small_file, tmp_path, monkeypatch):
    # A killed run leaves a temp folder with a partial file behind: harmless.
    out = tmp_path / "out"
    name = data.corpus_slug(str(small_file), None) + "-char"
    leftover = out / f".tmp-{name}-xyz"
    leftover.mkdir(parents=True)
    (leftover / "train.bin").write_bytes(b"\x00" * 7)

    # An interrupt while writing leaves neither a final folder nor a temp folder.
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(fileio, "replace_folder", interrupted)
    with pytest.raises(KeyboardInterrupt):
        prepare_data(str(small_file), "char", data_dir=out, verbose=False)
    assert sorted(os.listdir(out)) == [leftover.name]
    monkeypatch.undo()

    td = prepare_data(str(small_file), "char", data_dir=out, verbose=False)
    assert len(td.train) + len(td.val) == len(small_file.read_bytes())
    assert os.path.basename(td.path) == name

    # A truncated bin file (e.g. edited by hand) is detected and rebuilt.
    with open(os.path.join(td.path, "val.bin"), "r+b") as f:
        f.truncate(4)
    again = prepare_data(str(small_file), "char", data_dir=out, verbose=False)
    assert len(again.val) == len(td.val)
    # Leftovers older than an hour are swept up by the next preparation.
    os.utime(leftover, (time.time() - 7200, time.time() - 7200))
    prepare_data(str(small_file), "char", data_dir=out, val_fraction=0.2, verbose=False)
    assert not leftover.exists()


def test_meta_json(small_file, tmp_path):
    td = prepare_data(str(small_file), "gpt2", data_dir=tmp_path, verbose=False)
    meta = json.loads(open(os.path.join(td.path, "meta.json")).read())
    assert meta["source"] == str(small_file.resolve())
    assert meta["tokenizer"] == "gpt2" and meta["vocab_size"] == 50257
    assert meta["train_tokens"] == len(td.train) and meta["val_tokens"] == len(td.val)


def test_bad_val_fraction(tmp_path):
    with pytest.raises(MiniSPDFError):
        prepare_data("builtin", "char", data_dir=tmp_path, val_fraction=1.0)


def test_data_dir_from_env(small_file, tmp_path, monkeypatch):
    monkeypatch.setenv("MINISPDF_DATA_DIR", str(tmp_path / "envdir"))
    td = prepare_data(str(small_file), "char", verbose=False)
    assert td.path.startswith(str(tmp_path / "envdir"))


# ---------------------------------------------------------------- batches


@pytest.fixture
def token_data(small_file, tmp_path):
    return prepare_data(str(small_file), "char", data_dir=tmp_path / "d", verbose=False)


def test_get_batch_shapes_and_shift(token_data):
    g = torch.Generator().manual_seed(0)
    x, y = token_data.get_batch("train", batch_size=4, block_size=16, generator=g)
    assert x.shape == y.shape == (4, 16)
    assert x.dtype == y.dtype == torch.int64
    assert torch.equal(x[:, 1:], y[:, :-1])
    train = torch.from_numpy(token_data.train.astype(np.int64))
    for row_x, row_y in zip(x, y):
        # each row is a real window of the train tokens, and y continues it by one
        starts = [i for i in range(len(train) - 16) if torch.equal(train[i:i + 16], row_x)]
        assert any(torch.equal(train[i + 1:i + 17], row_y) for i in starts)
    xv, yv = token_data.get_batch("val", 2, 8, g)
    assert xv.shape == (2, 8)


def test_get_batch_is_reproducible(token_data):
    g1 = torch.Generator().manual_seed(123)
    g2 = torch.Generator().manual_seed(123)
    a = token_data.get_batch("train", 8, 32, g1)
    b = token_data.get_batch("train", 8, 32, g2)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    # saving and restoring the generator state replays the next batch exactly
    state = g1.get_state()
    c = token_data.get_batch("train", 8, 32, g1)
    g1.set_state(state)
    d = token_data.get_batch("train", 8, 32, g1)
    assert torch.equal(c[0], d[0])


def test_corpus_too_small_for_block_size(token_data):
    g = torch.Generator().manual_seed(0)
    with pytest.raises(MiniSPDFError, match="corpus too small for block_size 100000.*--block_size"):
        token_data.get_batch("train", 2, 100_000, g)
    with pytest.raises(MiniSPDFError, match="val split"):
        token_data.validate(len(token_data.val))
    token_data.validate(len(token_data.val) - 1)


def test_token_data_reopens_from_folder(token_data):
    again = TokenData(token_data.path)
    assert again.train.tolist() == token_data.train.tolist()
    assert "char" in repr(again)


def test_prepared_hub_corpus_is_reused_offline(tmp_path, monkeypatch):
    fake_hub = types.ModuleType("datasets")  # the download, without the network
    fake_hub.load_dataset = (
        lambda *a, **k: iter([{"text": "Once upon a time there was a tiny robot."}] * 50))
    monkeypatch.setitem(sys.modules, "datasets", fake_hub)
    monkeypatch.setattr(data, "hub_unreachable", lambda: None)
    first = prepare_data("tinystories", "char", data_dir=tmp_path, max_chars=1000, verbose=False)
    assert os.path.basename(first.path) == "tinystories-max1000-char"
    assert len(first.train) + len(first.val) == 1000
    monkeypatch.undo()
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    # Already prepared: no download is attempted, so being offline does not matter.
    again = prepare_data("tinystories", "char", data_dir=tmp_path, max_chars=1000, verbose=False)
    assert again.path == first.path
    with pytest.raises(MiniSPDFError, match="HF_HUB_OFFLINE"):
        prepare_data("tinystories", "char", data_dir=tmp_path, max_chars=2000, verbose=False)


# ---------------------------------------------------------------- corpus statistics


def test_corpus_stats_match_an_independent_count(tmp_path):
    # Uneven letters and a two-byte character, so a wrong split or a wrong log base shows.
    raw = ("aaab ccd\n" * 30 + "é\n" * 7 + "zzzz\n" * 11).encode("utf-8")
    path = tmp_path / "uneven.txt"
    path.write_bytes(raw)
    stats = corpus_stats(str(path), "char", data_dir=str(tmp_path / "data"))

    train = raw[: int(len(raw) * 0.9)]  # char tokens are the UTF-8 bytes; the first 90% train
    counts = collections.Counter(train)
    expected = -sum(c / len(train) * math.log(c / len(train)) for c in counts.values())
    assert stats["unigram_entropy"] == pytest.approx(expected, rel=1e-12)
    assert stats["tokens"] == {"train": len(train), "val": len(raw) - len(train)}
    assert stats["characters"] == len(raw.decode("utf-8"))
    assert stats["vocab_used"] == len(set(raw))
    assert (stats["tokenizer"], stats["source"]) == ("char", str(path.resolve()))
    assert os.path.isfile(os.path.join(stats["folder"], "train.bin"))


def test_corpus_stats_gpt2_and_a_constant_text(tmp_path):
    path = tmp_path / "same.txt"
    path.write_text("x" * 100, encoding="utf-8")
    stats = corpus_stats(str(path), "char", data_dir=str(tmp_path))
    assert stats["unigram_entropy"] == 0.0 and stats["vocab_used"] == 1
    stats = corpus_stats("builtin", "gpt2", max_chars=5000, data_dir=str(tmp_path))
    ids = get_tokenizer("gpt2").encode(load_corpus("builtin")[:5000])
    assert sum(stats["tokens"].values()) == len(ids)
    assert stats["vocab_used"] == len(set(ids)) and stats["vocab_size"] == 50257
    assert 0 < stats["unigram_entropy"] <= math.log(stats["vocab_used"])
    assert os.path.basename(stats["folder"]) == "builtin-max5000-gpt2"


def test_data_readme_lists_every_corpus_and_task():
    root = Path(__file__).resolve().parents[1]
    text = (root / "data" / "README.md").read_text()
    for name in [*data.BUILTIN_SOURCES, *data.HUB_SOURCES, *TASK_NAMES]:
        assert f"`{name}" in text, name
    for hub in data.HUB_SOURCES.values():
        assert hub.repo in text and (hub.config is None or hub.config in text)
    assert data.SHAKESPEARE_URL in text and "minispdf prepare" in text
