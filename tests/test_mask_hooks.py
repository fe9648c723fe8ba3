"""The mask owns its invariant: after ``sparsify`` any ordinary PyTorch loop keeps the pruned
weights, their gradients and their optimizer state at exactly zero.

The loops here are hand-written with torch only: no minispdf function is called after
``sparsify`` (the masks it returns are plain tensors, used only to check).
"""

import os

os.environ["HF_HUB_OFFLINE"] = "1"

import copy
import gc
import io
import textwrap
import weakref

import pytest
import torch

from conftest import RandomBatches
from minispdf.model import GPT, preset_config
from minispdf import sparsity
from minispdf.sparsity import densify, masked_parameters, sparsify

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def make(seed=0, dtype=torch.float32):
    torch.manual_seed(seed)
    return GPT(preset_config("nano")).to(dtype)


def micro_batches(n, seed=0):
    gen = torch.Generator().manual_seed(seed)
    batches = RandomBatches(257, 32, 4)
    return [batches.get_batch("train", gen) for _ in range(n)]


def record_raw_gradients(model):
    """{name: summed gradient as backward() computes it}, recorded by tensor hooks, which run
    before the mask's own (post-accumulation) hook: what the gradients would be without masks."""
    raw = {}

    def hook(name):
        def add(g):
            raw[name] = raw[name] + g if name in raw else g.clone()
        return add

    for n, p in model.named_parameters():
        p.register_hook(hook(n))
    return raw


def assert_pruned_zero(model, masks, optimizer, step):
    params = dict(model.named_parameters())
    for n, m in masks.items():
        assert torch.all(params[n][~m] == 0), (step, n)
        for key, value in optimizer.state[params[n]].items():
            if torch.is_tensor(value) and value.shape == m.shape:
                assert torch.all(value[~m] == 0), (step, n, key)
                assert torch.count_nonzero(value[m]) > 0, (step, n, key)  # the state is real


def test_hand_written_adamw_loop_with_decay_clipping_and_accumulation_keeps_zeros():
    model = make(dtype=torch.float64)  # float64: the clip norm compares to ~1e-12
    masks = sparsify(model, 0.75, seed=0)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.1)
    raw = record_raw_gradients(model)
    batches = micro_batches(2 * 6)
    for step in range(6):
        raw.clear()
        # gradient accumulation over 2 micro-batches
        for x, y, _ in batches[2 * step: 2 * step + 2]:
            _, loss = model(x, y)
            (loss / 2).backward()
        unpruned = [g.masked_fill(~masks[n], 0.0) if n in masks else g for n, g in raw.items()]
        everything = torch.linalg.vector_norm(torch.cat([g.flatten() for g in raw.values()]))
        expected = torch.linalg.vector_norm(torch.cat([g.flatten() for g in unpruned]))
        norm = torch.nn.utils.clip_grad_norm_(model.parameters(), 0.5)
        # pruned slots stay out of the norm
        assert norm.item() == pytest.approx(expected.item(), rel=1e-12)
        assert everything > 1.01 * expected  # ... and they did receive gradient
        optimizer.step()
        optimizer.zero_grad()
        assert_pruned_zero(model, masks, optimizer, step)
    for n, m in masks.items():
        # kept weights trained
        assert not torch.equal(before[n][m], dict(model.named_parameters())[n].detach()[m])


@pytest.mark.parametrize("nesterov", [False, True])
def test_hand_written_sgd_momentum_loop_keeps_zeros(nesterov):
    model = make()
    masks = sparsify(model, 0.5, seed=1)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, nesterov=nesterov,
                                weight_decay=1e-2)
    for step, (x, y, _) in enumerate(micro_batches(5)):
        optimizer.zero_grad(set_to_none=False)  # gradients zeroed in place, not dropped
        model(x, y)[1].backward()
        optimizer.step()
        assert_pruned_zero(model, masks, optimizer, step)


def test_sparsify_in_the_middle_of_training_clears_the_optimizer_state_it_had():
    model = make()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.1)
    for step, (x, y, _) in enumerate(micro_batches(6)):
        if step == 2:
            masks = sparsify(model, 0.5, seed=0)  # the moments are dense by now
        if step == 4:
            masks = sparsify(model, 0.75, seed=1)  # a new mask prunes slots whose moments are not 0
        model(x, y)[1].backward()
        optimizer.step()
        optimizer.zero_grad()
        if step >= 2:
            assert_pruned_zero(model, masks, optimizer, step)


def nan_at_zero_penalty(model):
    """sum(sqrt(|w|)) over the masked matrices, a sparsity-promoting L1/2 penalty: finite, but its
    gradient at w == 0 is NaN (sign(0) * inf), so backward() itself puts NaN in every pruned
    slot."""
    return sum(m.weight.abs().sqrt().sum() for m in model.modules()
               if getattr(m, "weight_mask", None) is not None)


def test_nan_gradients_in_pruned_slots_never_reach_a_weight():
    model = make()
    masks = sparsify(model, 0.75, seed=0)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.1)
    raw = record_raw_gradients(model)
    for step, (x, y, _) in enumerate(micro_batches(4)):
        raw.clear()
        loss = model(x, y)[1] + 1e-4 * nan_at_zero_penalty(model)
        assert torch.isfinite(loss)
        loss.backward()
        for n, m in masks.items():
            # the poison is real
            assert torch.isnan(raw[n][~m]).all() and torch.isfinite(raw[n][m]).all(), n
        norm = torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        assert torch.isfinite(norm)
        optimizer.step()
        optimizer.zero_grad()
        for n, p in model.named_parameters():
            assert torch.isfinite(p).all(), (step, n)
        assert_pruned_zero(model, masks, optimizer, step)


def test_hooks_survive_deepcopy_pickling_dtype_moves_and_reloads():
    original = make()
    masks = sparsify(original, 0.75, seed=0)
    copies = {"deepcopy": copy.deepcopy(original),
              "to(float64)": copy.deepcopy(original).to(torch.float64)}
    buffer = io.BytesIO()
    torch.save(original, buffer)
    copies["torch.save(model)"] = torch.load(io.BytesIO(buffer.getvalue()), weights_only=False)
    reloaded = copy.deepcopy(original)
    reloaded.load_state_dict(make(seed=5).state_dict() | {k: v
                                                          for k, v in original.state_dict().items()
                                                          if k.endswith("_mask")}, assign=True)
    copies["load_state_dict(assign=True)"] = reloaded  # new Parameters, pruned slots not zero
    for label, model in copies.items():
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.1)
        for step, (x, y, _) in enumerate(micro_batches(2)):
            model(x, y)[1].backward()
            # zero even before a step: the forward hooked them
            params = dict(model.named_parameters())
            assert all(torch.all(params[n][~m] == 0) for n, m in masks.items()), label
            optimizer.step()
            optimizer.zero_grad()
            assert_pruned_zero(model, masks, optimizer, (label, step))
    assert all(torch.all(p[~masks[n]] == 0) for n, p in original.named_parameters() if n in masks)


def test_densify_removes_the_hooks_and_the_formerly_pruned_weights_train():
    model = make()
    masks = sparsify(model, 0.75, seed=0)
    densify(model)
    assert all(not m._forward_pre_hooks for m in model.modules())
    assert all(not p._post_accumulate_grad_hooks for p in model.parameters())
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.1)
    x, y, _ = micro_batches(1)[0]
    model(x, y)[1].backward()
    params = dict(model.named_parameters())
    for n, m in masks.items():
        assert torch.count_nonzero(params[n].grad[~m]) > 0.5 * int((~m).sum()), n
    optimizer.step()
    for n, m in masks.items():
        assert torch.count_nonzero(params[n][~m]) > 0.5 * int((~m).sum()), n


def test_a_dense_model_and_its_optimizer_are_untouched():
    sparse, dense = make(seed=0), make(seed=0)
    sparsify(sparse, 0.75, seed=0)  # hooks exist in this process now
    reference = copy.deepcopy(dense)
    for model in (dense, reference):
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.1)
        x, y, _ = micro_batches(1)[0]
        model(x, y)[1].backward()
        optimizer.step()
    for (n, a), (_, b) in zip(dense.named_parameters(), reference.named_parameters()):
        assert torch.equal(a, b), n


def test_a_sparse_model_that_is_dropped_is_freed():
    gc.collect()  # earlier tests' sparse models, freed now, not during the counts below
    before = sparsity.tracked_tensors()
    model = make()
    sparsify(model, 0.75, seed=0)
    optimizer = torch.optim.AdamW(model.parameters())
    model(*micro_batches(1)[0][:2])[1].backward()
    optimizer.step()
    refs = [weakref.ref(model), *(weakref.ref(p) for p in model.parameters())]
    hooked = len(masked_parameters(model))
    after = sparsity.tracked_tensors()
    assert after["weights"] == before["weights"] + hooked
    assert after["optimizer_state"] > before["optimizer_state"]
    model(*micro_batches(1)[0][:2])  # a second forward re-hooks nothing: one entry per weight
    assert sparsity.tracked_tensors() == after
    del model, optimizer
    gc.collect()
    assert all(r() is None for r in refs)  # the hooks' registry holds the model only weakly
    # ... and forgets it: no entry is left to leak, or to match a new tensor at a reused address
    assert sparsity.tracked_tensors() == before


DDP_WORKER = textwrap.dedent('''
    import os, sys
    import torch
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel as DDP
    torch.set_num_threads(1)
    sys.path.insert(0, sys.argv[2])
    from conftest import RandomBatches
    from test_mask_hooks import make, nan_at_zero_penalty
    from minispdf.sparsity import sparsify

    dist.init_process_group("gloo")
    rank = dist.get_rank()
    model = make()
    masks = sparsify(model, 0.75, seed=0)
    ddp = DDP(model)
    optimizer = torch.optim.AdamW(ddp.parameters(), lr=1e-2, weight_decay=0.1)
    gen = torch.Generator().manual_seed(rank)
    for step in range(3):
        for micro in range(2):
            x, y, _ = RandomBatches(257, 32, 4).get_batch("train", gen)
            sync = ddp.no_sync() if micro == 0 else torch.enable_grad()
            with sync:
                _, loss = ddp(x, y)
                (loss / 2 + 1e-4 * nan_at_zero_penalty(model)).backward()
        torch.nn.utils.clip_grad_norm_(ddp.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad()
    torch.save(model.state_dict(), os.path.join(sys.argv[1], f"rank{rank}.pt"))
    dist.destroy_process_group()
''')


@pytest.mark.slow
def test_hand_written_ddp_loop_keeps_zeros_on_both_ranks(tmp_path):
    from test_ddp import run_two_ranks

    run_two_ranks(DDP_WORKER, tmp_path, os.path.join(ROOT, "tests"))
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(2))
    init = make().state_dict()
    for k in r0:
        assert torch.equal(r0[k], r1[k]), k
        if k.endswith("_mask"):
            w, m = r0[k[: -len("_mask")]], r0[k]
            assert torch.all(w[~m] == 0) and torch.isfinite(w).all(), k
            assert not torch.equal(w[m], init[k[: -len("_mask")]][m]), k  # trained
