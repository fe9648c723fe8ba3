"""Edges of the fine-tuning format (minispdf.tasks.finetune): where truncation starts and stops,
the exact error messages, and what FinetuneBatches reports and honours (pad_id, truncate, counts).

Byte tokenizer of test_tasks: one token per character, "\\n" is 10, eot is 256. The pair
("ab", "xyz") is 2 input + 1 separator + 3 target + 1 eot = 7 tokens, so it fits block_size 6
exactly (a model sees 6 inputs and 6 shifted targets)."""

import pytest
import torch
from test_tasks import TOK

from minispdf.errors import MiniSPDFError
from minispdf.tasks import FinetuneBatches, encode_example, encode_prompt

EOT = TOK.eot_id


def _error(fn, *args, **kwargs) -> str:
    with pytest.raises(MiniSPDFError) as info:
        fn(*args, **kwargs)
    return str(info.value)


def test_prompt_max_tokens_keeps_one_input_token_at_the_limit():
    assert encode_prompt(TOK, "abc", max_tokens=2) == TOK.encode("a\n")
    assert _error(encode_prompt, TOK, "abc", max_tokens=1) == (
        "max_tokens=1 leaves no room for the input; use a larger --block_size")


def test_example_of_exactly_block_size_plus_one_tokens_is_not_cut():
    tokens, mask = encode_example(TOK, "ab", "xyz", block_size=6, truncate=False)
    assert TOK.decode(tokens) == "ab\nxyz" and tokens[-1] == EOT
    assert mask == [0, 0, 1, 1, 1, 1]


def test_one_token_too_long_cuts_the_input_down_to_one_token():
    # 7 tokens in block_size 5: the input keeps 5 + 1 - 1 - 3 - 1 = 1 token
    tokens, mask = encode_example(TOK, "ab", "xyz", block_size=5)
    assert TOK.decode(tokens) == "a\nxyz" and len(tokens) == 6
    assert mask == [0, 1, 1, 1, 1]


def test_too_long_without_truncation_names_the_example_and_the_fix():
    fix = "use a larger --block_size, or truncate=True to cut the end of the input"
    assert _error(encode_example, TOK, "ab", "xyz", block_size=5, truncate=False) == (
        f"example is 7 tokens, longer than the context block_size 5 (+1 for the shifted "
        f"target); {fix}")
    assert _error(encode_example, TOK, "ab", "xyz", block_size=5, truncate=False, index=3) == (
        f"example 3 is 7 tokens, longer than the context block_size 5 (+1 for the shifted "
        f"target); {fix}")


def test_reference_that_leaves_no_room_for_the_input():
    assert _error(encode_example, TOK, "ab", "xyz", block_size=4) == (
        "example: its reference alone is 3 tokens (+1 separator +1 eot), leaving no room "
        "for the input in block_size 4; use a larger --block_size")


def test_smallest_sizes_are_accepted_and_smaller_ones_refused():
    g = torch.Generator().manual_seed(0)
    batches = FinetuneBatches(TOK, [("abc", "")], block_size=2, batch_size=1, generator=g)
    x, y, mask = batches()
    assert (x.tolist() == [[97, 10]] and y.tolist() == [[10, EOT]]
            and mask.tolist() == [[False, True]])
    for block_size, batch_size in ((1, 2), (8, 0)):
        assert _error(FinetuneBatches, TOK, [("a", "b")], block_size, batch_size, g) == (
            f"block_size={block_size}, batch_size={batch_size} are too small; "
            "use block_size >= 2 and batch_size >= 1")
    assert _error(FinetuneBatches, TOK, [], 8, 1, g) == (
        "no fine-tuning pairs: the task split is empty; load a task that has training examples")


def test_batches_cut_long_inputs_by_default_and_count_them():
    build = FinetuneBatches
    pairs = [("0123456789", "xyz"), ("a", "xyz"), ("abcdefgh", "xyz")]  # the middle one fits
    batches = build(TOK, pairs, 5, 2, torch.Generator())
    assert batches.n_truncated == 2
    assert [TOK.decode(t.tolist()) for t in batches.tokens] == ["0\nxyz", "a\nxyz", "a\nxyz"]
    assert batches.n_target_tokens == 3 * 4  # 'xyz' + eot per pair, the prompt never counts
    assert batches.block_size == 5
    fitting = build(TOK, [("ab", "xyz"), ("q", "r")], 6, 2, torch.Generator())
    assert fitting.n_truncated == 0 and fitting.n_target_tokens == 4 + 2


def test_pad_id_is_used_in_x_and_y():
    build = FinetuneBatches
    batches = build(TOK, [("ab", "xyz"), ("q", "r")], 6, 2, torch.Generator(), pad_id=0)
    x, y, mask = batches.collate([0, 1])
    assert x[1].tolist() == [ord("q"), 10, ord("r"), 0, 0, 0]
    assert y[1].tolist() == [10, ord("r"), EOT, 0, 0, 0]
    assert mask[1].tolist() == [False, True, True, False, False, False]
