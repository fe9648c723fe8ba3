"""Both kinds of batches the training loop reads follow the one protocol of minispdf.batches."""

import pytest
import torch

from conftest import small_task
from minispdf.batches import Batches, TaskBatches, TokenBatches
from minispdf.data import prepare_data
from minispdf.tokenizers import CharTokenizer
from minispdf.errors import MiniSPDFError


@pytest.fixture
def token_batches(tmp_path):
    path = tmp_path / "corpus.txt"
    path.write_text("a small corpus for windows of tokens\n" * 40, encoding="utf-8")
    return TokenBatches(prepare_data(str(path), "char", data_dir=tmp_path / "d", verbose=False), 4,
                        16)


@pytest.fixture
def task_batches():
    return TaskBatches(CharTokenizer(), small_task(), block_size=64, batch_size=4)


@pytest.mark.parametrize("kind", ["token_batches", "task_batches"])
def test_both_batch_kinds_follow_the_protocol(kind, request):
    batches = request.getfixturevalue(kind)
    assert isinstance(batches, Batches)
    for split in ("train", "val"):
        x, y, mask = batches.get_batch(split, torch.Generator().manual_seed(0), "cpu")
        assert x.dtype == y.dtype == torch.long and x.shape == y.shape and x.shape[0] == 4
        assert mask is None or (mask.dtype == torch.bool and mask.shape == x.shape and mask.any())
        assert torch.equal(y[:, :-1], x[:, 1:])  # next-token targets (padding is the eot in both)
        x2, y2, mask2 = batches.get_batch(split, torch.Generator().manual_seed(0), "cpu")
        assert torch.equal(x, x2) and torch.equal(y, y2)  # the generator alone decides the batch
        assert (mask is None and mask2 is None) or torch.equal(mask, mask2)


def test_token_batches_are_unmasked_and_task_batches_mask_the_prompt(token_batches, task_batches):
    assert token_batches.get_batch("train", torch.Generator())[2] is None
    x, y, mask = task_batches.get_batch("train", torch.Generator().manual_seed(1))
    assert not mask[:, 0].any()  # the first prediction is inside the prompt


def test_both_kinds_check_their_data_when_built(token_batches):
    with pytest.raises(MiniSPDFError, match="block_size"):
        TokenBatches(token_batches.data, 4, 10_000)
    with pytest.raises(MiniSPDFError, match="no training examples"):
        TaskBatches(CharTokenizer(), small_task(n_train=0), block_size=64, batch_size=4)
