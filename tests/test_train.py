"""Tests for minispdf.train and minispdf.checkpoint: exact resume, atomic checkpoints, logs,
callbacks, the LR schedule and gradient accumulation."""

import os

os.environ["HF_HUB_OFFLINE"] = "1"

import json
import math

import pytest
import torch

from minispdf import callbacks
import minispdf.train as train_mod
from conftest import RandomBatches
from minispdf.checkpoint import check_compatible, load_checkpoint, read_checkpoint
from minispdf.errors import MiniSPDFError
from minispdf.flops import flop_report
from minispdf.model import GPT, preset_config
from minispdf.sparsity import masked_parameters, sparsify
from minispdf.train import TrainConfig, lr_at, train

T = 32


def sparse_nano(seed=0, sparsity=0.75, dropout=0.0):
    torch.manual_seed(seed)
    model = GPT(preset_config("nano", dropout=dropout))
    if sparsity:
        sparsify(model, sparsity, seed=0)
    return model


def cfg(**kw):
    base = dict(max_steps=10, batch_size=4, lr=3e-3, warmup_steps=3, eval_interval=0, eval_iters=2,
                device="cpu", progress=False, seed=7)
    return TrainConfig(**{**base, **kw})


def batches(bs=4, seq_len=T):
    return RandomBatches(257, seq_len, bs)


def read_log(path):
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


# ---------------------------------------------------------------- resume


def test_resume_reproduces_unsplit_run_exactly(tmp_path):
    # dropout on: its draws come from torch's RNG, which the checkpoint must carry over too
    full_dir, split_dir = str(tmp_path / "full"), str(tmp_path / "split")
    c = cfg(max_steps=20, eval_interval=5, warmup_steps=5, lr=1e-2, grad_accum=2)

    model_a = sparse_nano(dropout=0.1)
    res_a = train(model_a, batches(), c, out_dir=full_dir, meta={"tokenizer": "char"})

    model_b = sparse_nano(dropout=0.1)
    res_half = train(model_b, batches(),
                     cfg(max_steps=20, eval_interval=5, warmup_steps=5, lr=1e-2, grad_accum=2,
                                             stop_after=10), out_dir=split_dir,
                     meta={"tokenizer": "char"})
    assert res_half["step"] == 10 and not res_half["finished"]
    assert read_checkpoint(split_dir)["step"] == 10

    # fresh, dense, differently initialised: all state from ckpt
    model_c = GPT(preset_config("nano", dropout=0.1))
    assert masked_parameters(model_c) == []
    res_c = train(model_c, batches(), c, out_dir=split_dir, resume=True, meta={"tokenizer": "char"})
    assert res_c["step"] == 20 and res_c["finished"]

    log_a, log_c = (read_log(os.path.join(full_dir, "log.jsonl")),
                    read_log(os.path.join(split_dir, "log.jsonl")))
    strip = lambda recs: [{k: v for k, v in r.items() if k != "step_ms"} for r in recs]
    assert [r["step"] for r in log_a] == [r["step"] for r in log_c]
    assert [r.get("loss") for r in log_a] == [r.get("loss") for r in log_c]
    assert [r.get("val_loss") for r in log_a] == [r.get("val_loss") for r in log_c]
    assert strip(log_a) == strip(log_c)
    assert sum("val_loss" in r for r in log_a) == 4  # evals at 5, 10, 15 and the end
    assert res_a["flops"] == res_c["flops"] and res_a["tokens"] == res_c["tokens"]

    sd_a, sd_c = model_a.state_dict(), model_c.state_dict()
    assert sd_a.keys() == sd_c.keys()
    for k in sd_a:
        assert torch.equal(sd_a[k], sd_c[k]), k
    assert len(masked_parameters(model_c)) == 8
    for _, p, m in masked_parameters(model_c):
        assert torch.all(p[~m] == 0)
    # and the checkpoint on disk is the same too
    ckpt_a, ckpt_c = read_checkpoint(full_dir), read_checkpoint(split_dir)
    for k in ckpt_a["model"]:
        assert torch.equal(ckpt_a["model"][k], ckpt_c["model"][k]), k


def test_resume_without_checkpoint_raises(tmp_path):
    with pytest.raises(MiniSPDFError, match="cannot resume"):
        train(sparse_nano(), batches(), cfg(), out_dir=str(tmp_path / "empty"), resume=True)


def test_resume_refuses_other_architecture(tmp_path):
    out = str(tmp_path / "run")
    train(sparse_nano(), batches(), cfg(max_steps=2), out_dir=out)
    torch.manual_seed(0)
    other = GPT(preset_config("nano", n_layer=3))
    with pytest.raises(MiniSPDFError, match="n_layer"):
        train(other, batches(), cfg(max_steps=4), out_dir=out, resume=True)


# ---------------------------------------------------------------- checkpoint files


def test_checkpoint_write_is_atomic(tmp_path, monkeypatch):
    out = tmp_path / "run"
    real_save = torch.save
    calls = []

    def flaky_save(obj, f, *args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            f.write(b"PK\x03\x04 half a checkpoint")  # partial bytes, then the crash
            raise OSError("disk full (simulated)")
        return real_save(obj, f, *args, **kwargs)

    monkeypatch.setattr(torch, "save", flaky_save)
    with pytest.raises(MiniSPDFError, match=r"cannot write .*ckpt.pt \(disk full \(simulated\)\); "
                                            r"the previous version"):
        train(sparse_nano(), batches(), cfg(max_steps=10, checkpoint_interval=5), out_dir=str(out))
    assert len(calls) == 2
    monkeypatch.setattr(torch, "save", real_save)
    model, info = load_checkpoint(str(out / "ckpt.pt"))
    assert info["step"] == 5  # the first checkpoint survived intact
    assert len(masked_parameters(model)) == 8
    assert sorted(os.listdir(out)) == ["ckpt.pt", "log.jsonl"]  # no temp files left behind


def test_truncated_checkpoint_raises(tmp_path):
    out = tmp_path / "run"
    train(sparse_nano(), batches(), cfg(max_steps=2), out_dir=str(out))
    path = out / "ckpt.pt"
    load_checkpoint(str(path))  # loads before the damage
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(MiniSPDFError, match="corrupt or truncated"):
        load_checkpoint(str(path))
    with pytest.raises(MiniSPDFError):
        train(sparse_nano(), batches(), cfg(max_steps=4), out_dir=str(out), resume=True)


def test_foreign_file_raises(tmp_path):
    path = tmp_path / "other.pt"
    torch.save({"weights": torch.zeros(3)}, path)
    with pytest.raises(MiniSPDFError, match="not a minispdf checkpoint"):
        load_checkpoint(str(path))


def test_missing_checkpoint_raises(tmp_path):
    with pytest.raises(MiniSPDFError, match="no checkpoint"):
        load_checkpoint(str(tmp_path / "nope.pt"))
    with pytest.raises(MiniSPDFError, match="no checkpoint"):
        load_checkpoint(str(tmp_path))  # a folder without ckpt.pt


def test_checkpoint_round_trip_and_check_compatible(tmp_path):
    out = tmp_path / "run"
    model = sparse_nano()
    train(model, batches(), cfg(max_steps=3), out_dir=str(out),
          meta={"tokenizer": "char", "phase": "pretrain"})
    loaded, info = load_checkpoint(str(out))  # a run folder works too
    assert info["step"] == 3 and info["tokenizer"] == "char" and info["meta"]["phase"] == "pretrain"
    assert "model" not in info and "optimizer" not in info
    for k, v in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[k], v), k
    check_compatible(info, preset_config("nano"), "char")  # same: accepted
    check_compatible(info, preset_config("nano", block_size=32), None)  # context length may differ
    with pytest.raises(MiniSPDFError, match="n_layer"):
        check_compatible(info, preset_config("nano", n_layer=3))
    with pytest.raises(MiniSPDFError, match="vocab_size"):
        check_compatible(info, preset_config("nano", vocab_size=50257))
    with pytest.raises(MiniSPDFError, match="tokenizer"):
        check_compatible(info, preset_config("nano"), "gpt2")


# ---------------------------------------------------------------- logs and callbacks


def test_log_records_flops_for_sparse_model(tmp_path):
    out = tmp_path / "run"
    model = sparse_nano()
    block = model.config.block_size  # full-context batches: flop_report's default seq_len
    res = train(model, batches(seq_len=block), cfg(max_steps=6, eval_interval=3), out_dir=str(out))
    recs = read_log(out / "log.jsonl")
    steps = [r for r in recs if "loss" in r]
    assert [r["step"] for r in steps] == list(range(1, 7))
    for r in recs:
        assert {"step", "flops", "flops_dense"} <= set(r)
    for r in steps:
        assert {"loss", "lr", "tokens"} <= set(r)
        assert math.isfinite(r["loss"])
    flops = [r["flops"] for r in steps]
    assert all(b > a for a, b in zip(flops, flops[1:]))
    reduction = flop_report(model).reduction
    assert reduction > 1.2
    for r in steps:
        assert r["flops_dense"] / r["flops"] == pytest.approx(reduction, rel=1e-12)
    # FLOPs per step: training FLOPs per token x tokens in the batch
    per_token = flop_report(model).train_flops_per_token(True)
    assert steps[0]["flops"] == pytest.approx(per_token * 4 * block)
    assert steps[-1]["tokens"] == 6 * 4 * block
    # a shorter sequence length is accounted at its own (smaller) attention cost
    res_short = train(sparse_nano(), batches(seq_len=16), cfg(max_steps=1))
    assert res_short["flops_dense"] / res_short["flops"] == pytest.approx(
        flop_report(model, seq_len=16).reduction, rel=1e-12)
    assert res["flops"] == steps[-1]["flops"]
    evals = [r for r in recs if "val_loss" in r]
    assert [r["step"] for r in evals] == [3, 6]


def test_dense_model_logs_equal_flops(tmp_path):
    res = train(sparse_nano(sparsity=0), batches(), cfg(max_steps=2), out_dir=str(tmp_path))
    assert res["flops"] == res["flops_dense"] > 0
    assert res["sparsity"] == 0.0


def test_callbacks_receive_events_and_can_stop(tmp_path):
    events = []

    def cb(event, record):
        events.append((event, record.get("step")))
        return event == "step" and record["step"] == 3

    res = train(sparse_nano(), batches(), cfg(max_steps=10, eval_interval=2), out_dir=str(tmp_path),
                callbacks=[cb])
    assert res["step"] == 3 and not res["finished"]
    assert events == [("step", 1), ("step", 2), ("eval", 2), ("step", 3), ("end", 3)]
    assert load_checkpoint(str(tmp_path))[1]["step"] == 3  # stopping writes a checkpoint


def test_eval_callback_can_stop():
    def cb(event, record):
        return event == "eval"

    res = train(sparse_nano(), batches(), cfg(max_steps=10, eval_interval=4), callbacks=[cb])
    assert res["step"] == 4


def test_non_finite_loss_raises():
    with pytest.raises(MiniSPDFError, match="loss became"):
        model = sparse_nano()
        with torch.no_grad():
            model.transformer.wpe.weight.fill_(float("nan"))
        train(model, batches(), cfg(max_steps=2))


# ---------------------------------------------------------------- LR schedule


def test_lr_schedule_warmup_then_cosine_to_min():
    c = TrainConfig(max_steps=100, warmup_steps=10, lr=1e-3, min_lr_ratio=0.1)
    assert lr_at(0, c) == pytest.approx(1e-4)
    assert lr_at(4, c) == pytest.approx(5e-4)
    assert lr_at(9, c) == pytest.approx(1e-3)
    assert lr_at(10, c) == pytest.approx(1e-3)
    assert lr_at(55, c) == pytest.approx(1e-3 * (0.1 + 0.9 * 0.5))  # half way through the cosine
    assert lr_at(100, c) == pytest.approx(1e-4)
    assert lr_at(150, c) == pytest.approx(1e-4)  # clamps past the end
    warm = [lr_at(s, c) for s in range(10)]
    assert all(b > a for a, b in zip(warm, warm[1:]))
    decay = [lr_at(s, c) for s in range(10, 101)]
    assert all(b < a for a, b in zip(decay, decay[1:]))
    c0 = TrainConfig(max_steps=10, warmup_steps=0, lr=2e-3, min_lr_ratio=0.0)
    assert lr_at(0, c0) == pytest.approx(2e-3)
    assert lr_at(10, c0) == pytest.approx(0.0, abs=1e-15)


def test_logged_lr_follows_schedule():
    c = cfg(max_steps=8, warmup_steps=3, lr=1e-2, min_lr_ratio=0.1)
    res = train(sparse_nano(), batches(), c)
    steps = [r for r in res["history"] if "lr" in r]
    assert [r["lr"] for r in steps] == [lr_at(s, c) for s in range(8)]


@pytest.mark.parametrize("bad",
                         [dict(max_steps=0), dict(batch_size=-1), dict(grad_accum=0), dict(lr=0),
                                 dict(warmup_steps=-1), dict(device="tpu"), dict(eval_iters=1.5)])
def test_bad_train_config_raises(bad):
    with pytest.raises(MiniSPDFError):
        TrainConfig(**bad)


# ---------------------------------------------------------------- gradient clipping


def test_pruned_slots_are_masked_before_clipping_so_they_stay_out_of_the_norm():
    # backward() gives pruned slots gradient (here: large); the clip norm must be that of the masked
    # gradients
    model = sparse_nano().double()  # float64: w - (w - g) gives g back to ~1e-16
    masked = masked_parameters(model)
    gen = torch.Generator().manual_seed(0)
    grads = {n: 0.01 * torch.randn(p.shape, generator=gen, dtype=torch.float64)
             for n, p in model.named_parameters()}
    for n, _, m in masked:
        grads[n][~m] = 100.0
    # d/dp = grads[n], through the hooks
    sum((p * grads[n]).sum() for n, p in model.named_parameters()).backward()
    pruned = {n: ~m for n, _, m in masked}
    expected = {n: g.masked_fill(pruned[n], 0.0) if n in pruned else g for n, g in grads.items()}
    norm = torch.linalg.vector_norm(torch.cat([g.flatten() for g in expected.values()])).item()
    clip = norm / 4  # clipping is active: every gradient is scaled by clip / norm
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    train_mod.finish_step(model, torch.optim.SGD(model.parameters(), lr=1.0), clip)  # w -= g
    for n, p in model.named_parameters():
        # clip_grad_norm_ divides by norm + 1e-6
        assert torch.allclose(before[n] - p.detach(), expected[n] * (clip / norm), rtol=1e-5,
                              atol=1e-15), n


# ---------------------------------------------------------------- gradient accumulation


def _first_step_grads(monkeypatch, grad_accum, batch_size):
    captured = {}
    real_finish = train_mod.finish_step

    def spy(model, optimizer, grad_clip):
        if not captured:
            captured.update({n: p.grad.detach().clone() for n, p in model.named_parameters()})
        return real_finish(model, optimizer, grad_clip)

    monkeypatch.setattr(train_mod, "finish_step", spy)
    res = train(sparse_nano(), batches(batch_size),
                cfg(max_steps=1, grad_accum=grad_accum, batch_size=batch_size,
                                                         grad_clip=0.0))
    monkeypatch.setattr(train_mod, "finish_step", real_finish)
    return captured, res


def test_grad_accumulation_matches_big_batch(monkeypatch):
    g_acc, res_acc = _first_step_grads(monkeypatch, grad_accum=2, batch_size=4)
    g_big, res_big = _first_step_grads(monkeypatch, grad_accum=1, batch_size=8)
    assert g_acc.keys() == g_big.keys() and len(g_acc) > 0
    for n in g_big:
        assert torch.allclose(g_acc[n], g_big[n], atol=1e-6,
                              rtol=0), (n, (g_acc[n] - g_big[n]).abs().max())
    assert any(g.abs().max() > 1e-4 for g in g_big.values())  # not trivially zero
    assert res_acc["train_loss"] == pytest.approx(res_big["train_loss"], abs=1e-6)
    assert res_acc["tokens"] == res_big["tokens"] == 8 * T
    assert res_acc["flops"] == pytest.approx(res_big["flops"])


def _umask():
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def test_checkpoint_gets_the_usual_permissions_not_tempfiles_owner_only(tmp_path):
    # mkstemp makes 0600 files; a checkpoint renamed into place must look like any file the user
    # makes
    out = tmp_path / "run"
    train(sparse_nano(), batches(), cfg(max_steps=2), out_dir=str(out))
    assert (out / "ckpt.pt").stat().st_mode & 0o777 == 0o666 & ~_umask()


def test_optimizer_is_fused_where_torch_has_it_and_falls_back_where_not(monkeypatch):
    model = sparse_nano()
    opt = train_mod.make_optimizer(model, cfg())
    assert opt.defaults["fused"]  # torch >= 2.4 on CPU: the fast path the bench relies on
    assert [g["weight_decay"] for g in opt.param_groups] == [cfg().weight_decay, 0.0]

    real = torch.optim.AdamW

    def no_fused(*args, fused=None, **kw):
        if fused:
            raise RuntimeError("`fused=True` requires all the params to be floating point Tensors "
                               "of supported devices")
        return real(*args, **kw)

    monkeypatch.setattr(torch.optim, "AdamW", no_fused)
    opt = train_mod.make_optimizer(model, cfg())
    assert not opt.defaults["fused"]


def test_checkpoint_carrying_code_is_named_as_such(tmp_path, capsys):
    path = tmp_path / "ckpt.pt"
    # a pickled function: could be any code
    torch.save({"format": "minispdf-1", "hook": os.path.join}, path)
    with pytest.raises(MiniSPDFError, match="Python objects that a safe load refuses") as e:
        load_checkpoint(str(path))
    assert "\n" not in str(e.value) and "corrupt" not in str(e.value)
    captured = capsys.readouterr()
    assert captured.err == "" and captured.out == ""  # no torch warning before the one error line
    path.write_bytes(b"\x80\x02garbage that is not a pickle")
    with pytest.raises(MiniSPDFError, match="corrupt or truncated"):
        load_checkpoint(str(path))


def test_a_finished_run_tells_callbacks_its_final_evaluation_once():
    events = []

    def cb(event, record):
        events.append((event, record.get("step")))

    train(sparse_nano(), batches(), cfg(max_steps=4, eval_interval=2), callbacks=[cb])
    assert events == [("step", 1), ("step", 2), ("eval", 2), ("step", 3), ("step", 4), ("eval", 4),
                      ("end", 4)]


# ------------------------------------------------------------- resume refusals and the progress bar


@pytest.fixture
def two_step_run(tmp_path):
    out = str(tmp_path / "run")
    train(sparse_nano(), batches(), cfg(max_steps=2), out_dir=out, meta={"tokenizer": "char"})
    return out, os.path.join(out, "ckpt.pt")


def _rewrite(ckpt_path, **changes):
    ckpt = torch.load(ckpt_path, weights_only=True)
    for key, value in changes.items():
        target = ckpt
        *parents, last = key.split("__")
        for p in parents:
            target = target[p]
        target[last] = value
    torch.save(ckpt, ckpt_path)


def test_resume_refusals_name_the_file_and_the_fix(two_step_run):
    out, ckpt = two_step_run
    with pytest.raises(MiniSPDFError) as e:
        train(sparse_nano(), batches(), cfg(max_steps=4), out_dir=out, resume=True,
              meta={"tokenizer": "gpt2"})
    assert (str(e.value)
            == f"{ckpt} was trained with the 'char' tokenizer, not 'gpt2': use --tokenizer char")
    torch.manual_seed(0)
    longer = GPT(preset_config("nano", block_size=128))
    with pytest.raises(MiniSPDFError) as e:
        train(longer, batches(), cfg(max_steps=4), out_dir=out, resume=True)
    saved = preset_config("nano").block_size
    assert str(e.value) == (f"cannot resume: {ckpt} was trained with block_size {saved}, not 128: "
                            f"pass --block_size {saved}")
    with pytest.raises(MiniSPDFError) as e:  # step 2 of 2: nothing left to train
        train(sparse_nano(), batches(), cfg(max_steps=2), out_dir=out, resume=True)
    assert str(e.value) == (f"cannot resume: the run in {out} already reached step 2 of "
                            f"max_steps 2: "
                            "pass a larger --max_steps to train on")


def test_resume_of_a_damaged_checkpoint_says_so(two_step_run):
    out, ckpt = two_step_run
    _rewrite(ckpt, rng__data="not a list of states")
    with pytest.raises(MiniSPDFError) as e:
        train(sparse_nano(), batches(), cfg(max_steps=4), out_dir=out, resume=True)
    assert str(e.value) == (f"{ckpt} cannot be resumed ('str' object has no attribute 'cpu'): the "
                            f"file is damaged "
                            "or from another version; start a new run without --resume")
    _rewrite(ckpt, step="2")
    with pytest.raises(MiniSPDFError, match=f"^{ckpt} "):  # require_keys names the file
        train(sparse_nano(), batches(), cfg(max_steps=4), out_dir=out, resume=True)


def test_resume_with_another_world_size_warns_that_the_data_order_changes(two_step_run, capsys):
    out, ckpt = two_step_run
    state = torch.load(ckpt, weights_only=True)["rng"]["data"][0]
    _rewrite(ckpt, rng__data=[state, state])  # as if written by two ranks
    train(sparse_nano(), batches(), cfg(max_steps=3), out_dir=out, resume=True)
    captured = capsys.readouterr()
    assert captured.err.strip() == ("warning: checkpoint has data positions for 2 ranks, running "
                                    "1: the data "
                                    "order is reseeded, so this run will not match an unsplit one")
    assert "warning" not in captured.out


def test_progress_bar_counts_steps_and_shows_the_loss(monkeypatch, capsys):
    from types import SimpleNamespace

    monkeypatch.delitem(__import__("sys").modules, "ipykernel", raising=False)
    state = SimpleNamespace(cfg=SimpleNamespace(max_steps=10), step=3, meta={"phase": "pretrain"})
    bar = callbacks.ProgressBar(state)
    # a saved notebook shows the end
    assert (bar.bar.total, bar.bar.n, bar.bar.desc, bar.bar.leave) == (10, 3, "pretrain", True)
    assert bar.bar.mininterval == 30  # not a terminal: a log file gets few updates
    bar("step", {"loss": 1.23456})
    bar("eval", {"val_loss": 9.0})
    assert bar.bar.n == 4 and bar.bar.postfix == "loss=1.235"
    bar.close()
    monkeypatch.setitem(__import__("sys").modules, "ipykernel", object())
    unnamed = callbacks.ProgressBar(SimpleNamespace(cfg=state.cfg, step=0, meta={})).bar
    assert unnamed.mininterval == 0.2 and unnamed.desc == "train"  # in a notebook: live updates
    train(sparse_nano(), batches(), cfg(max_steps=2, progress=True), meta={"phase": "finetune"})
    assert "finetune:" in capsys.readouterr().err


# ----------------------------------------------------- the loop's bookkeeping, devices, DDP helpers


class FixedMaskedBatch:
    """The same loss-masked batch every time: the logged loss can be computed by hand."""

    def __init__(self):
        g = torch.Generator().manual_seed(3)
        self.x, self.y = (torch.randint(0, 257, (2, T), generator=g),
                          torch.randint(0, 257, (2, T), generator=g))
        self.m = torch.zeros(2, T)
        self.m[:, T // 2:] = 1.0  # the loss counts only the second half (the "target")

    def get_batch(self, split, generator, device="cpu"):
        return self.x, self.y, self.m


def test_logged_loss_is_the_masked_loss_of_the_batch_before_the_step():
    model, data = sparse_nano(), FixedMaskedBatch()
    with torch.no_grad():
        want = model(data.x, data.y, data.m)[1].item()
        unmasked = model(data.x, data.y)[1].item()
    steps = []
    train(model, data, cfg(max_steps=2, grad_accum=2),
          callbacks=[lambda e, r: steps.append(r) if e == "step" else None])
    assert steps[0]["loss"] == pytest.approx(want, rel=1e-6) and abs(want - unmasked) > 1e-3
    assert 0 < steps[0]["step_ms"] < 60_000
    assert steps[0]["tokens"] == 2 * 2 * (T - T // 2)  # target tokens only, both micro-batches


def test_the_optimizer_runs_at_the_scheduled_learning_rate(monkeypatch):
    seen, real = [], train_mod.finish_step

    def spy(model, optimizer, grad_clip):
        seen.append(optimizer.param_groups[0]["lr"])
        real(model, optimizer, grad_clip)

    monkeypatch.setattr(train_mod, "finish_step", spy)
    c = cfg(max_steps=6, warmup_steps=2)
    train(sparse_nano(), batches(), c)
    assert seen == [lr_at(step, c) for step in range(6)]


def test_log_keeps_every_interval_and_the_last_step_and_a_new_run_empties_it(tmp_path):
    out = str(tmp_path / "run")
    train(sparse_nano(), batches(), cfg(max_steps=10, log_interval=3), out_dir=out)
    log = os.path.join(out, "log.jsonl")
    assert [r["step"] for r in read_log(log) if "loss" in r] == [3, 6, 9, 10]
    assert [r for r in read_log(log) if "val_loss" in r][-1]["val_loss"] > 0  # the final evaluation
    with open(log, "a") as f:
        f.write("\n")  # a blank line (an editor's) is not a record
    state = train_mod.TrainState.__new__(train_mod.TrainState)
    state.cfg, state.rank, state.step = cfg(max_steps=20), 0, 6
    callbacks.RunLog(out, state, resume=True)
    assert [r["step"] for r in read_log(log) if "loss" in r] == [3, 6]
    callbacks.RunLog(out, state, resume=False)
    assert read_log(log) == []


def test_checkpoint_records_the_training_settings_and_every_rng(tmp_path):
    out = str(tmp_path / "run")
    c = cfg(max_steps=2)
    res = train(sparse_nano(), batches(), c, out_dir=out)
    ckpt = read_checkpoint(os.path.join(out, "ckpt.pt"))
    assert ckpt["train_config"]["max_steps"] == 2 and ckpt["train_config"]["lr"] == c.lr
    assert set(ckpt["rng"]) == {"torch", "cuda", "data"} and ckpt["rng"]["cuda"] is None
    assert res["val_loss"] > 0 and math.isfinite(res["val_loss"])


def test_compile_wraps_the_model_the_loop_calls(monkeypatch):
    compiled = []
    monkeypatch.setattr(torch, "compile", lambda m: compiled.append(m) or m)
    model = sparse_nano()
    train(model, batches(), cfg(max_steps=1, compile=True))
    assert compiled == [model]


def test_pick_device_explains_what_is_missing(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    assert train_mod.pick_device("auto") == "cpu" and train_mod.pick_device("cpu") == "cpu"
    with pytest.raises(MiniSPDFError) as e:
        train_mod.pick_device("cuda")
    assert str(e.value) == "device=cuda but no CUDA GPU is visible: use --device cpu or auto"
    with pytest.raises(MiniSPDFError) as e:
        train_mod.pick_device("mps")
    assert str(e.value) == "device=mps but MPS is not available: use --device cpu or auto"
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)
    assert train_mod.pick_device("auto") == "mps" and train_mod.pick_device("mps") == "mps"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert train_mod.pick_device("auto") == "cuda" and train_mod.pick_device("cuda:1") == "cuda:1"
    with pytest.raises(MiniSPDFError) as e:
        train_mod.pick_device("cuda:2")
    assert str(e.value) == "device=cuda:2 but only 2 GPUs visible: use --device cuda"


def test_dist_info_reads_torchrun_variables(monkeypatch):
    for k in ("RANK", "LOCAL_RANK", "WORLD_SIZE"):
        monkeypatch.delenv(k, raising=False)
    assert train_mod.dist_info() == (0, 0, 1)
    monkeypatch.setenv("RANK", "3")
    assert train_mod.dist_info() == (0, 0, 1)  # RANK alone is not torchrun
    monkeypatch.setenv("WORLD_SIZE", "4")
    assert train_mod.dist_info() == (3, 0, 4)
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert train_mod.dist_info() == (3, 1, 4)


def test_autocast_is_bf16_on_cuda_and_off_elsewhere():
    import contextlib
    import warnings

    assert train_mod.autocast_for("cpu") is contextlib.nullcontext
    assert train_mod.autocast_for("mps") is contextlib.nullcontext
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "CUDA is not available": the object is still made
        ctx = train_mod.autocast_for("cuda:1")()
    assert (isinstance(ctx, torch.autocast) and ctx.device == "cuda"
            and ctx.fast_dtype == torch.bfloat16)


@pytest.mark.parametrize("bad, message", [
    (dict(eval_iters=0), "eval_iters=0 must be between 1 and 10000 (each is a forward pass)"),
    (dict(log_interval=True), "log_interval=True must be a positive integer"),
    (dict(warmup_steps=-1), "warmup_steps=-1 must be a non-negative integer"),
    (dict(stop_after=1.5), "stop_after=1.5 must be a non-negative integer"),
    (dict(lr=float("inf")), "lr=inf must be a positive number"),
    (dict(lr="1e-3"), "lr='1e-3' must be a positive number"),
    (dict(min_lr_ratio=1.5), "min_lr_ratio=1.5 must be between 0 and 1"),
    (dict(min_lr_ratio=-0.1), "min_lr_ratio=-0.1 must be between 0 and 1"),
    (dict(beta1=1.0), "beta1=1.0 must be in [0, 1) (torch's AdamW default is 0.9)"),
    (dict(beta2=-0.5), ("beta2=-0.5 must be in [0, 1) (torch's AdamW default is 0.999; GPT "
                        "pre-training commonly uses 0.95)")),
    (dict(beta2=1.5), ("beta2=1.5 must be in [0, 1) (torch's AdamW default is 0.999; GPT "
                       "pre-training commonly uses 0.95)")),
    (dict(eps=0.0), "eps=0.0 must be a positive number (e.g. 1e-8)"),
    (dict(eps=False), "eps=False must be a positive number (e.g. 1e-8)"),
    (dict(weight_decay=-1e-3), "weight_decay=-0.001 must be a number >= 0 (0 turns it off)"),
    (dict(grad_clip=float("nan")), "grad_clip=nan must be a number >= 0 (0 turns it off)"),
    (dict(device="CUDA"), "device='CUDA': choose auto, cpu, cuda, cuda:N or mps"),
    (dict(device="cuda:x"), "device='cuda:x': choose auto, cpu, cuda, cuda:N or mps"),
])
def test_bad_training_settings_say_what_is_allowed(bad, message):
    with pytest.raises(MiniSPDFError) as e:
        TrainConfig(**bad)
    assert str(e.value) == message


def test_edge_values_that_are_allowed():
    for ok in (dict(min_lr_ratio=0.0), dict(min_lr_ratio=1.0), dict(beta1=0.0),
               dict(weight_decay=0, grad_clip=0),
               dict(device="cuda"), dict(device="mps"), dict(device="cuda:12"),
               dict(warmup_steps=0)):
        TrainConfig(**ok)


def test_optimizer_takes_every_adamw_setting():
    c = cfg(lr=2e-3, beta1=0.8, beta2=0.9, eps=1e-6, weight_decay=0.05)
    opt = train_mod.make_optimizer(sparse_nano(), c)
    for group in opt.param_groups:
        assert (group["lr"], group["betas"], group["eps"]) == (2e-3, (0.8, 0.9), 1e-6)
    # matrices, then biases and norms
    assert [g["weight_decay"] for g in opt.param_groups] == [0.05, 0.0]


def test_grad_clip_zero_leaves_gradients_alone_and_step_clears_them(monkeypatch):
    model = sparse_nano(sparsity=0.0)
    opt = train_mod.make_optimizer(model, cfg())
    clipped = []
    monkeypatch.setattr(torch.nn.utils, "clip_grad_norm_", lambda *a, **k: clipped.append(a))
    model(*batches().get_batch("train", torch.Generator().manual_seed(0))[:2])[1].backward()
    train_mod.finish_step(model, opt, 0.0)
    assert clipped == [] and all(p.grad is None for p in model.parameters())


def test_result_reports_the_run(tmp_path):
    res = train(sparse_nano(), batches(), cfg(max_steps=2))
    assert (res["step"], res["max_steps"], res["finished"], res["device"],
            res["world_size"]) == (2, 2, True, "cpu", 1)
    assert res["out_dir"] is None and [r["step"] for r in res["history"] if "loss" in r] == [1, 2]


def test_optimizer_without_fused_kernels_keeps_the_settings(monkeypatch):
    real = torch.optim.AdamW

    def no_fused(groups, fused=None, **kw):
        if fused:
            raise RuntimeError("fused=True requires ...")
        return real(groups, **kw)

    monkeypatch.setattr(torch.optim, "AdamW", no_fused)
    opt = train_mod.make_optimizer(sparse_nano(), cfg(lr=2e-3, beta1=0.8, beta2=0.9, eps=1e-6))
    assert all((g["lr"], g["betas"], g["eps"]) == (2e-3, (0.8, 0.9), 1e-6)
               for g in opt.param_groups)


def test_resume_keeps_the_runs_own_notes(two_step_run):
    out, ckpt = two_step_run
    _rewrite(ckpt, meta={"tokenizer": "char", "phase": "pretrain", "data": "builtin"})
    train(sparse_nano(), batches(), cfg(max_steps=3), out_dir=out, resume=True,
          meta={"phase": "again"})
    meta = read_checkpoint(ckpt)["meta"]
    # given notes win, the rest stay
    assert meta == {"tokenizer": "char", "phase": "again", "data": "builtin"}


def test_a_stop_asked_at_a_step_holds_through_that_steps_evaluation():
    events = []

    def stop_at_two(event, record):
        events.append((event, record["step"]))
        return event == "step" and record["step"] == 2

    res = train(sparse_nano(), batches(), cfg(max_steps=6, eval_interval=2),
                callbacks=[stop_at_two])
    assert res["step"] == 2 and ("eval", 2) in events
