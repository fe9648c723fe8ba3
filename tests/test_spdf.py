"""Tests for minispdf.spdf.finetune, checked on the model and against independent counts:
SPDF really trains the formerly pruned weights and SPSF keeps them at zero; the tokens and FLOPs a
fine-tuning run logs equal a count of its target tokens and a FlopCounterMode measurement; a
fine-tuning run with dropout and gradient accumulation resumes bit for bit."""

import os

os.environ["HF_HUB_OFFLINE"] = "1"

import copy
import json

import pytest
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

import minispdf.batches as batches_lib
from minispdf import spdf
from conftest import REF_LEN, RandomBatches, small_task
from minispdf.checkpoint import read_checkpoint
from minispdf.errors import MiniSPDFError
from minispdf.model import GPT, preset_config
from minispdf.sparsity import mask_state_keys, masked_parameters, sparsify
from minispdf.spdf import finetune
from minispdf.train import TrainConfig, train

FT = dict(batch_size=3, lr=3e-3, warmup_steps=1, eval_interval=0, eval_iters=1, device="cpu",
          progress=False,
          seed=5)


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
    """A 75%-sparse nano checkpoint with dropout 0.1, as ``pretrain`` leaves it (2 steps)."""
    out = str(tmp_path_factory.mktemp("pre"))
    torch.manual_seed(0)
    model = GPT(preset_config("nano", dropout=0.1))
    sparsify(model, 0.75, seed=0)
    cfg = TrainConfig(max_steps=2, batch_size=2, eval_interval=0, eval_iters=1, device="cpu",
                      progress=False)
    train(model, RandomBatches(257, 32, 2), cfg, out_dir=out,
          meta=dict(phase="pretrain", tokenizer="char", sparsity=0.75))
    return out


def _saved(pre):
    ckpt = read_checkpoint(pre)
    return ckpt["model"], mask_state_keys(ckpt["model"])


# ---------------------------------------------------------------- SPDF vs SPSF, on the model


def test_spdf_trains_the_formerly_pruned_weights(pretrained):
    before, masks = _saved(pretrained)
    assert len(masks) == 8
    res = finetune(init_from=pretrained, task=small_task(), max_steps=3, **FT)
    model = res["model"]
    assert not masked_parameters(model) and not any(k.endswith("_mask") for k in model.state_dict())
    params = dict(model.named_parameters())
    for name, mask in masks.items():
        assert torch.all(before[name][~mask] == 0), name  # they start at zero ...
        revived = torch.count_nonzero(params[name].detach()[~mask]).item()
        # ... and dense fine-tuning trains them
        assert revived > 0.9 * int((~mask).sum()), (name, revived)


def test_spsf_keeps_the_masks_and_the_pruned_weights_exactly_zero(pretrained):
    before, masks = _saved(pretrained)
    res = finetune(init_from=pretrained, task=small_task(), keep_masks=True, max_steps=3, **FT)
    model = res["model"]
    now = {name: mask for name, _, mask in masked_parameters(model)}
    assert now.keys() == masks.keys()
    params = dict(model.named_parameters())
    for name, mask in masks.items():
        assert torch.equal(now[name], mask), name
        assert torch.all(params[name].detach()[~mask] == 0), name
        # the kept ones trained
        assert not torch.equal(params[name].detach()[mask], before[name][mask]), name
    assert res["flops"] < res["flops_dense"]  # and it is accounted as sparse


# ------------------------------------------------------------ tokens and FLOPs of a fine-tuning run


class RecordingTaskBatches(batches_lib.TaskBatches):
    """The task's own batches, remembering the shape of every training batch served."""

    shapes: list = []

    def get_batch(self, split, generator, device="cpu"):
        x, y, m = super().get_batch(split, generator, device)
        if split == "train":
            RecordingTaskBatches.shapes.append(tuple(x.shape))
        return x, y, m


def measured_train_flops(model, T):
    """Training FLOPs of one sequence of T tokens, measured: FlopCounterMode over a forward and
    backward pass with the math attention backend (so the scores and values matmuls are seen),
    plus the softmax, which is no matmul and which FlopCounterMode does not count: by the module
    convention 3 FLOPs per attention score and head, forward only, times 3 for training."""
    m = copy.deepcopy(model)
    x = torch.randint(0, m.config.vocab_size, (1, T), generator=torch.Generator().manual_seed(T))
    with sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:
        _, loss = m(x, x)
        loss.backward()
    c = m.config
    return counter.get_total_flops() + 3 * c.n_layer * 3 * c.n_head * T * T


def test_finetune_logs_target_tokens_and_measured_flops(pretrained, tmp_path, monkeypatch):
    monkeypatch.setattr(spdf, "TaskBatches", RecordingTaskBatches)
    RecordingTaskBatches.shapes = []
    out = str(tmp_path / "ft")
    steps, accum, B = 4, 2, FT["batch_size"]
    res = finetune(init_from=pretrained, task=small_task(), out=out, max_steps=steps,
                   grad_accum=accum, **FT)
    shapes = RecordingTaskBatches.shapes
    assert len(shapes) == steps * accum and all(b == B for b, _ in shapes)
    assert len({t for _, t in shapes}) > 1  # batches of different lengths: padding was processed

    records = [json.loads(line) for line in open(os.path.join(out, "log.jsonl"))]
    logged = [r for r in records if "loss" in r]
    assert [r["step"] for r in logged] == list(range(1, steps + 1))
    # tokens: the targets only (every reference is REF_LEN bytes, plus its end of text)
    assert ([r["tokens"] for r in logged]
            == [s * accum * B * (REF_LEN + 1) for s in range(1, steps + 1)])
    assert res["tokens"] == steps * accum * B * (REF_LEN + 1)
    # FLOPs: every position processed (prompt and padding too), at the measured cost per sequence
    per_seq = {t: measured_train_flops(res["model"], t) for _, t in shapes}
    total = 0
    for s, r in enumerate(logged):
        total += sum(B * per_seq[t] for _, t in shapes[s * accum:(s + 1) * accum])
        assert r["flops"] == pytest.approx(total, rel=1e-9), r["step"]
        assert r["flops_dense"] == r["flops"]  # SPDF fine-tuning is dense
    assert res["flops"] == pytest.approx(total, rel=1e-9)


# ---------------------------------------------------------------- resume


def test_finetune_resume_with_dropout_and_grad_accum_is_bit_exact(pretrained, tmp_path):
    # dropout draws from torch's RNG
    assert read_checkpoint(pretrained)["model_config"]["dropout"] == 0.1
    kw = dict(init_from=pretrained, task=small_task(), max_steps=6, grad_accum=2,
              **{**FT, "eval_interval": 2})
    full, split = str(tmp_path / "full"), str(tmp_path / "split")
    res_full = finetune(out=full, **kw)
    res_half = finetune(out=split, stop_after=3, **kw)
    assert res_half["step"] == 3 and not res_half["finished"]
    res_split = finetune(out=split, resume=True, **kw)
    assert res_split["step"] == 6 and res_split["finished"]

    def log(folder):
        with open(os.path.join(folder, "log.jsonl")) as f:
            return [{k: v for k, v in json.loads(line).items() if k != "step_ms"} for line in f]

    assert log(full) == log(split)
    assert sum("val_loss" in r for r in log(full)) == 3  # steps 2, 4 and the end
    sd_full, sd_split = res_full["model"].state_dict(), res_split["model"].state_dict()
    assert sd_full.keys() == sd_split.keys()
    for k in sd_full:
        assert torch.equal(sd_full[k], sd_split[k]), k
    opt_full, opt_split = (read_checkpoint(full)["optimizer"]["state"],
                           read_checkpoint(split)["optimizer"]["state"])
    for i in opt_full:
        for k in ("exp_avg", "exp_avg_sq"):
            assert torch.equal(opt_full[i][k], opt_split[i][k]), (i, k)


# ---------------------------------------------------------------- settings: objects or keywords


def test_settings_objects_and_keywords_are_the_same_run():
    from minispdf.schedules import SparsityConfig
    from minispdf.spdf import ModelConfig, RunConfig, pretrain

    train_kw = dict(max_steps=2, batch_size=2, eval_iters=1, eval_interval=0, device="cpu",
                    progress=False)
    by_keyword = pretrain(preset="nano", block_size=32, sparsity=0.5, mask_seed=3, **train_kw)
    by_object = pretrain(model_config=ModelConfig("nano", arch=dict(block_size=32)),
                         sparsity_config=SparsityConfig(0.5, mask_seed=3),
                         training=TrainConfig(**train_kw), run=RunConfig())
    assert by_object["model"].config.block_size == 32
    assert (by_object["val_loss"], by_object["flops"]) == (by_keyword["val_loss"],
                                                           by_keyword["flops"])
    with pytest.raises(MiniSPDFError, match="unknown setting.*colour"):
        pretrain(preset="nano", colour="red")
    with pytest.raises(MiniSPDFError, match="unknown architecture setting.*vocab_size"):
        ModelConfig("nano", arch=dict(vocab_size=300))  # the tokenizer's, not a setting
    with pytest.raises(MiniSPDFError, match="unknown mask method 'lottery'"):
        SparsityConfig(0.5, method="lottery")
