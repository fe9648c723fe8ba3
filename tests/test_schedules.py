"""Mask schedules (static, SET, RigL, GMP, N:M, dense_from): each move checked against a hand
computation on small tensors, the zeros kept in a hand-written loop, bit-exact resume in the
middle of a schedule, and FLOPs equal to an independent sum over the steps."""

import os

os.environ["HF_HUB_OFFLINE"] = "1"

import math

import pytest
import torch

from conftest import RandomBatches
from minispdf import schedules as S
from minispdf import sparsity as sp
from minispdf.errors import MiniSPDFError
from minispdf.flops import pretraining_flops
from minispdf.model import GPT, preset_config
from minispdf.schedules import SparsityConfig
from minispdf.train import TrainConfig, train

CFG = preset_config("nano", block_size=16, vocab_size=32)
STEPS = 24


def model(seed=0):
    torch.manual_seed(seed)
    return GPT(CFG)


def schedule(kind, sparsity=0.75, steps=STEPS, **kw):
    kw.setdefault("update_interval", 4)
    return S.make_schedule(kind, 0.5 if kind == "nm" else sparsity, steps, **kw)


def fit(kind, out=None, stop_after=0, resume=False, **kw):
    net, sched = model(), schedule(kind, **kw)
    sched.start(net)
    cfg = TrainConfig(max_steps=STEPS, batch_size=2, eval_interval=0, eval_iters=1, progress=False,
                      stop_after=stop_after, lr=1e-2)
    return (train(net, RandomBatches(32, 16, 2), cfg, out_dir=out, resume=resume, schedule=sched),
            net, sched)


# ------------------------------------------------------------------------------ moves, by hand


def test_set_and_rigl_drop_the_smallest_kept_and_grow_the_highest_scored():
    mask = torch.tensor([[True, True, True, False], [False, True, False, False]])
    weight = torch.tensor([[0.5, -0.1, 0.3, 0.0], [0.0, 0.2, 0.0, 0.0]])
    # drop 2 of the 4 kept: |w| 0.1 (slot 1) and 0.2 (slot 5); grow 2 of the slots not kept after
    # the drop (0, 2 stay): scores by slot, the two largest are slots 7 and 1 (1 was just dropped)
    score = torch.tensor([[9.0, 5.0, 9.0, 1.0], [2.0, 0.5, 3.0, 6.0]])
    new = S.drop_and_grow(mask, weight, score, 2)
    assert new.tolist() == [[True, True, True, False], [False, False, False, True]]
    assert int(new.sum()) == int(mask.sum())
    # ties break by position: equal scores grow the lower slot first
    # ties break by position: slot 1 (0.1) is dropped, then, all scores equal, the lowest free slot
    # (1 again) is grown back, keeping its weight
    assert torch.equal(S.drop_and_grow(mask, weight, torch.ones(2, 4), 1), mask)


def test_set_moves_the_cosine_decayed_fraction_of_each_tensor():
    net, sched = model(), schedule("set", update_interval=4, drop_fraction=0.3, stop_fraction=0.75)
    sched.start(net)
    before = {n: m.clone() for n, _, m in sp.masked_parameters(net)}
    weights = {n: p.detach().clone() for n, p, _ in sp.masked_parameters(net)}
    assert sched.update(net, None, 3) is None  # not an update step
    rec = sched.update(net, None, 4)
    frac = 0.3 / 2 * (1 + math.cos(math.pi * 4 / 18))  # stop at round(0.75 * 24) = 18
    assert rec["step"] == 4 and rec["density"] == pytest.approx(0.25, abs=1e-3)
    for name, p, mask in sp.masked_parameters(net):
        old = before[name].flatten()
        n_move = round(frac * int(old.sum()))
        kept = old.nonzero().squeeze(1)
        smallest = set(
            kept[torch.argsort(weights[name].abs().flatten()[kept], stable=True)[:n_move]].tolist())
        new = mask.flatten()
        dropped = set((old & ~new).nonzero().squeeze(1).tolist())
        grown = set((new & ~old).nonzero().squeeze(1).tolist())
        # the count kept never changes
        assert int(new.sum()) == int(old.sum()) and len(dropped) == len(grown)
        # the smallest left or came back
        assert dropped <= smallest and all(new[i] for i in smallest - dropped)
        assert len(grown) + len(smallest - dropped) == n_move and not grown & set(kept.tolist())
    # none from step 18 on
    assert [t for t in range(1, STEPS + 1) if sched.is_update(t)] == [4, 8, 12, 16]


def test_rigl_grows_where_the_dense_gradient_is_largest_and_zeroes_moments_of_what_changed():
    net, sched = model(), schedule("rigl", update_interval=4)
    sched.start(net)
    opt = torch.optim.AdamW(net.parameters(), lr=1e-2)
    x, y, _ = RandomBatches(32, 16, 2).get_batch("train", torch.Generator().manual_seed(0))
    raw = {}
    for name, p in net.named_parameters():  # tensor hooks run before the mask's: the dense gradient
        p.register_hook(lambda g, name=name: raw.__setitem__(name, g.clone()))
    for step in range(1, 5):
        sched.prepare(step)
        net(x, y)[1].backward()
        opt.step()
        before = {n: (m.clone(), p.detach().clone()) for n, p, m in sp.masked_parameters(net)}
        grads = {n: raw[n].clone() for n in before}
        opt.zero_grad(set_to_none=True)
        rec = sched.update(net, opt, step)
    assert rec is not None and rec["step"] == 4
    fraction = S.cosine_fraction(4, 0.3, 18)
    for name, p, mask in sp.masked_parameters(net):
        old, w = before[name]
        expected = S.drop_and_grow(old, w, grads[name].abs(), round(fraction * int(old.sum())))
        assert torch.equal(mask, expected), name
        changed = mask ^ old
        assert changed.any()
        assert torch.all(p.detach()[changed] == 0)  # dropped and grown slots start at zero
        for v in opt.state[p].values():
            if torch.is_tensor(v) and v.shape == p.shape:
                assert torch.all(v[changed] == 0) and torch.all(v[~mask] == 0)


def test_gmp_density_follows_the_cubic_ramp_at_given_steps():
    steps = 100
    sched = S.make_schedule("gmp", 0.75, steps, update_interval=10, gmp_start=0.2, gmp_end=0.8)
    assert [t for t in range(1, steps + 1) if sched.is_update(t)] == [30, 40, 50, 60, 70, 80]
    assert S.cubic_sparsity(50, 0.75, 20, 80) == pytest.approx(0.75 * (1 - 0.5 ** 3))
    assert sched.density_at(30) == 1.0  # the move after step 30 counts from step 31
    assert sched.density_at(31) == pytest.approx(1 - 0.75 * (1 - (5 / 6) ** 3))
    assert sched.density_at(100) == pytest.approx(0.25)
    net = model()
    sched.start(net)
    assert sp.sparsity_report(net)["total"]["masked"] == 0  # starts dense, with masks of ones
    for step in range(1, steps + 1):
        sched.update(net, None, step)
        if step in (30, 50, 80):
            target = S.cubic_sparsity(step, 0.75, 20, 80)
            for _, p, mask in sp.masked_parameters(net):
                assert int(mask.sum()) == round((1 - target) * p.numel())
    assert sp.sparsity_report(net)["total"]["sparsity"] == pytest.approx(0.75, abs=1e-3)


def test_gmp_prunes_the_smallest_of_the_kept():
    mask = torch.tensor([True, True, False, True, True])
    w = torch.tensor([0.4, -0.05, 0.0, 0.3, -0.3])
    # tie 0.3 / -0.3: earlier
    assert S.magnitude_keep(mask, w, 2).tolist() == [True, False, False, True, False]


def test_nm_keeps_exactly_n_of_every_m_along_the_input_dimension():
    w = torch.tensor([[0.1, -0.9, 0.5, 0.2, 3.0, 0.0, -1.0, 1.0],
                      [1.0, 1.0, 1.0, 1.0, 0.0, 0.0, 0.0, 0.0]])
    mask = S.nm_mask(w, 2, 4)
    assert mask.tolist() == [[False, True, True, False, True, False, True, False],
                             # ties: earlier first
                             [True, True, False, False, True, True, False, False]]
    S.check_nm(mask, 2, 4)
    with pytest.raises(MiniSPDFError, match="not an 2:4 mask"):
        S.check_nm(torch.ones(2, 8, dtype=torch.bool), 2, 4)
    with pytest.raises(MiniSPDFError, match="not a multiple of M=4"):
        S.nm_mask(torch.ones(3, 6), 2, 4)
    net = model()
    schedule("nm").start(net)
    for name, p, m in sp.masked_parameters(net):
        S.check_nm(m, 2, 4)
        assert torch.equal(m, S.nm_mask(p, 2, 4)) and torch.all(p.detach()[~m] == 0)


def test_dense_from_drops_the_masks_after_its_step():
    result, net, sched = fit("static", dense_from=0.5)
    moves = [h for h in result["history"] if "mask" in h]
    assert [h["step"] for h in moves] == [12] and moves[0]["mask"]["event"] == "dense"
    assert sp.masked_parameters(net) == [] and sp.sparsity_report(net)["total"]["zeros"] == 0
    assert sched.density_at(12) == 0.25 and sched.density_at(13) == 1.0


# ------------------------------------------------------------------------------ in a loop


@pytest.mark.parametrize("kind", ["static", "set", "rigl", "gmp", "nm"])
def test_a_hand_written_loop_keeps_the_zeros_of_every_schedule(kind):
    """AdamW with weight decay, clipping and 2 micro-batches; only the schedule's own calls."""
    net, sched = model(), schedule(kind, dense_from=0.0)
    sched.start(net)
    opt = torch.optim.AdamW(net.parameters(), lr=1e-2, weight_decay=0.1)
    gen = torch.Generator().manual_seed(0)
    batches = RandomBatches(32, 16, 2)
    moved = 0
    for step in range(1, STEPS + 1):
        sched.prepare(step)
        for _ in range(2):
            x, y, _ = batches.get_batch("train", gen)
            (net(x, y)[1] / 2).backward()
        for _, p, mask in sp.masked_parameters(net):
            assert torch.all(p.grad[~mask] == 0)  # before the step: pruned gradients are zero
        torch.nn.utils.clip_grad_norm_(net.parameters(), 0.5)
        opt.step()
        opt.zero_grad(set_to_none=True)
        moved += sched.update(net, opt, step) is not None
        for _, p, mask in sp.masked_parameters(net):
            assert torch.all(p.detach()[~mask] == 0), (kind, step)
            for v in opt.state[p].values():
                if torch.is_tensor(v) and v.shape == p.shape:
                    assert torch.all(v[~mask] == 0), (kind, step)
    assert moved == {"static": 0, "nm": 0, "set": 4, "rigl": 4, "gmp": 3}[kind]  # gmp: 10, 14, 18


@pytest.mark.parametrize("kind,kw",
                         [("set", {}), ("rigl", {}), ("gmp", {}), ("static", {"dense_from": 0.5}),
                                     ("rigl", {"dense_from": 0.75})])
def test_resume_in_the_middle_of_a_schedule_is_bit_exact(kind, kw, tmp_path):
    whole, net_a, sched_a = fit(kind, **kw)
    fit(kind, out=str(tmp_path), stop_after=10, **kw)  # stops between two moves
    split, net_b, sched_b = fit(kind, out=str(tmp_path), resume=True, **kw)
    assert split["train_loss"] == whole["train_loss"] and split["flops"] == whole["flops"]
    sa, sb = net_a.state_dict(), net_b.state_dict()
    assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)
    assert sched_a.history == sched_b.history


def test_a_resume_with_another_max_steps_is_refused_for_a_timed_schedule(tmp_path):
    fit("set", out=str(tmp_path), stop_after=6)
    net, sched = model(), S.make_schedule("set", 0.75, STEPS + 8, update_interval=4)
    sched.start(net)
    cfg = TrainConfig(max_steps=STEPS + 8, batch_size=2, eval_interval=0, eval_iters=1,
                      progress=False)
    with pytest.raises(MiniSPDFError, match=f"timed for max_steps {STEPS}"):
        train(net, RandomBatches(32, 16, 2), cfg, out_dir=str(tmp_path), resume=True,
              schedule=sched)


# ------------------------------------------------------------------------------ FLOPs


def _per_token(density_by_component: dict, T: int) -> float:
    """Training FLOPs per token, written out for nano (d=64, 2 layers, 2 heads, V=32)."""
    L, d, h, V = CFG.n_layer, CFG.n_embd, CFG.n_head, CFG.vocab_size
    weights = {"qkv": L * 2 * 3 * T * d * d, "attn_out": L * 2 * T * d * d,
               "mlp": L * 2 * T * 8 * d * d}
    other = L * 2 * T * T * d * 2 + L * 3 * h * T * T + 2 * T * d * V
    fwd = other + sum(weights[k] * density_by_component[k] for k in weights)
    dense_fwd = other + sum(weights.values())
    return 3 * fwd / T, 3 * dense_fwd / T  # training: the backward costs twice the forward


def _component_density(net) -> dict:
    kept, total = {}, {}
    for name, p, mask in sp.masked_parameters(net):
        key = "qkv" if "c_attn" in name else "attn_out" if "attn.c_proj" in name else "mlp"
        kept[key] = kept.get(key, 0) + int(mask.sum())
        total[key] = total.get(key, 0) + p.numel()
    return {k: kept.get(k, total.get(k, 1)) / total.get(k, 1) for k in ("qkv", "attn_out", "mlp")}


@pytest.mark.parametrize("kind,kw",
                         [("static", {}), ("set", {}), ("rigl", {}), ("gmp", {}), ("nm", {}),
                                     ("rigl", {"dense_from": 0.75})])
def test_logged_flops_equal_an_independent_sum_over_steps(kind, kw):
    """Replay the schedule's moves on a copy, reading each step's kept counts from its masks; RigL's
    update steps compute the dense weight gradient (one dense third of the weight matmuls)."""
    result, _, _ = fit(kind, **kw)
    net, sched = model(), schedule(kind, **kw)
    sched.start(net)
    T, tokens_per_step, total = 16, 2 * 16, 0.0
    opt = torch.optim.SGD(net.parameters(), lr=0.0)
    for step in range(1, STEPS + 1):
        dens = (_component_density(net) if sp.masked_parameters(net)
                else dict.fromkeys(("qkv", "attn_out", "mlp"), 1.0))
        sparse, dense = _per_token(dens, T)
        extra = (dense - sparse) / 3 if kind == "rigl" and sched.is_update(step) and not (
            sched.dense_step and step > sched.dense_step) else 0.0
        total += (sparse + extra) * tokens_per_step
        sched.prepare(step)
        net(*RandomBatches(32, 16, 2).get_batch("train", torch.Generator().manual_seed(step))[:2])[
            1].backward()
        opt.step()
        opt.zero_grad()
        sched.update(net, opt, step)
    assert result["flops"] == pytest.approx(total, rel=1e-12)
    assert result["flops_dense"] == pytest.approx(
        STEPS * tokens_per_step * _per_token(dict.fromkeys(
        ("qkv", "attn_out", "mlp"), 1.0), T)[0], rel=1e-12)
    analytic = pretraining_flops(schedule(kind, **kw), CFG, 2, 16)["flops"]
    # nominal densities: per-tensor rounding aside
    assert analytic == pytest.approx(total, rel=2e-3)


def test_rigl_costs_more_than_static_by_its_dense_gradient_steps():
    static = pretraining_flops(schedule("static"), CFG, 2, 16)
    rigl = pretraining_flops(schedule("rigl"), CFG, 2, 16)
    assert rigl["flops"] > static["flops"]
    per_update = (rigl["flops"] - static["flops"]) / 4  # updates at 4, 8, 12, 16
    L, d, T, batch = CFG.n_layer, CFG.n_embd, 16, 2
    # q/k/v, attention out, MLP: forward, dense
    weight_fwd = L * 2 * T * (3 + 1 + 8) * d * d * batch
    # the weight gradient's pruned 75%, dense
    assert per_update == pytest.approx(0.75 * weight_fwd, rel=1e-12)


def test_a_run_cut_short_on_an_update_step_leaves_no_gradient_reader():
    class FailsAtStep4(RandomBatches):
        calls = 0

        def get_batch(self, split, generator, device="cpu"):
            FailsAtStep4.calls += 1
            # step 4 is RigL's first update: it is reading gradients now
            if FailsAtStep4.calls == 4:
                raise RuntimeError("disk gone")
            return super().get_batch(split, generator, device)

    net, sched = model(), schedule("rigl")
    sched.start(net)
    cfg = TrainConfig(max_steps=STEPS, batch_size=2, eval_interval=0, eval_iters=1, progress=False)
    with pytest.raises(RuntimeError, match="disk gone"):
        train(net, FailsAtStep4(32, 16, 2), cfg, schedule=sched)
    other = model(1)
    sp.sparsify(other, 0.5)
    x, y, _ = RandomBatches(32, 16, 2).get_batch("train", torch.Generator().manual_seed(0))
    other(x, y)[1].backward()
    # it read none of other's gradients
    with pytest.raises(MiniSPDFError, match="found no dense gradient"):
        sched.update(other, None, 4)


# ---------------------------------------------------------------------- one carrier of the settings


def test_every_place_that_names_the_mask_settings_reads_them_from_sparsity_config():
    from dataclasses import fields

    from minispdf.run_folder import FIXED
    from minispdf.study.grids import SCHEDULE_KEYS

    names = [f.name for f in fields(SparsityConfig)]
    assert set(names) <= set(FIXED)  # the checkpoint fixes every one of them on --resume
    assert (list(SCHEDULE_KEYS)
            == [n for n in SparsityConfig.SCHEDULE_FIELDS if n not in ("schedule", "nm")])
    assert SCHEDULE_KEYS["update_interval"] is int and SCHEDULE_KEYS["drop_fraction"] is float
    assert S.applies_to("gmp") == ("schedule", "update_interval", "gmp_start", "gmp_end",
                                   "dense_from")


def test_a_bound_is_declared_once_and_checked_alike_everywhere(tmp_path, capsys):
    from minispdf.cli import main

    with pytest.raises(MiniSPDFError) as e:
        SparsityConfig(0.75, schedule="set", drop_fraction=1.5)
    said = ("drop_fraction=1.5 must be in (0, 1) (the fraction of kept weights moved at the first "
            "update, e.g. 0.3)")
    assert str(e.value) == said
    with pytest.raises(MiniSPDFError, match=r"^drop_fraction=1\.5 must be in \(0, 1\)"):
        S.make_schedule("set", 0.75, STEPS, drop_fraction=1.5)
    assert main(["flops", "--preset", "nano", "--sparsity", "0.75", "--schedule", "set",
                 "--drop_fraction", "1.5"]) == 2
    assert capsys.readouterr().err == f"error: {said}\n"
    grid = tmp_path / "g.toml"
    grid.write_text('inherit = "smoke"\n[schedules]\ndrop_fraction = 1.5\n')
    assert main(["reproduce", "--grid", str(grid), "--dry-run", "--out", str(tmp_path / "o")]) == 2
    assert capsys.readouterr().err == f"error: grid {grid.resolve()}: key schedules.{said}\n"
