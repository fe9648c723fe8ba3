"""Static unstructured sparsity masks: make them, keep them, drop them.

SPDF's recipe (and the authors' Cerebras stack):

1. :func:`sparsify` draws a fixed mask for every sparsified weight: by default the q/k/v,
   attention-output and MLP matrices of every block (embeddings, the LM head, LayerNorms and
   biases stay dense). A mask is a bool buffer ``<param>_mask`` on the owning module (True =
   kept), saved in checkpoints with the weights; the pruned weights are set to exactly zero.
2. The masks keep themselves: hooks that ``sparsify`` installs hold the pruned weights, their
   gradients and their optimizer state (AdamW moments, SGD momentum) at exactly zero under any
   ordinary PyTorch loop -- weight decay, gradient clipping, accumulation, DDP -- with no
   masking call in the loop (see "keeping the zeros" below).
3. :func:`densify` drops the masks for dense fine-tuning: the pruned weights start at 0.0 and
   become trainable. Not calling it is sparse fine-tuning (SPSF).

Methods: ``random`` (uniform random scores, keep the top (1-s) fraction: an exact count) and
``magnitude`` (keep the largest |w| of the current weights, per tensor or globally).
Distributions: ``uniform`` (every sparsified tensor at the same sparsity, the paper's choice) and
``erk`` (Erdos-Renyi-Kernel, RigL's: density proportional to (n_in + n_out) / (n_in * n_out)).
"""

from __future__ import annotations

import math
import re
import weakref

import torch
import torch.nn as nn
from torch.optim.optimizer import register_optimizer_step_post_hook

from .errors import MiniSPDFError

# The paper's choice: q/k/v (c_attn), attention output and MLP matrices of every block.
DEFAULT_INCLUDE = (
    r"^transformer\.h\.\d+\.(attn\.c_attn|attn\.c_proj|mlp\.c_fc|mlp\.c_proj)\.weight$")
METHODS = ("random", "magnitude")
DISTRIBUTIONS = ("uniform", "erk")
MASK_SUFFIX = "_mask"


def check_sparsity(sparsity) -> float:
    if (isinstance(sparsity, bool) or not isinstance(sparsity, (int, float))
        or not 0.0 <= sparsity < 1.0):
        raise MiniSPDFError(
            f"sparsity={sparsity!r} is outside [0, 1): give the fraction of weights held at "
            f"zero, e.g. 0.75"
        )
    return float(sparsity)


def check_mask_options(method: str, distribution: str = "uniform", scope: str = "tensor",
                       include: str | None = None) -> None:
    _include_pattern(include)
    if method not in METHODS:
        raise MiniSPDFError(f"unknown mask method {method!r}: choose one of {', '.join(METHODS)}")
    if distribution not in DISTRIBUTIONS:
        raise MiniSPDFError(
            f"unknown distribution {distribution!r}: choose one of {', '.join(DISTRIBUTIONS)}")
    if scope not in ("tensor", "global"):
        raise MiniSPDFError(f"unknown scope {scope!r}: choose 'tensor' or 'global'")
    if scope == "global" and (method != "magnitude" or distribution != "uniform"):
        raise MiniSPDFError(
            "scope='global' works only with method='magnitude' and the default distribution")


def _owner(model: nn.Module, param_name: str) -> tuple[nn.Module, str]:
    module_name, _, attr = param_name.rpartition(".")
    return (model.get_submodule(module_name) if module_name else model), attr


def _include_pattern(include: str | None) -> re.Pattern:
    try:
        return re.compile(include or DEFAULT_INCLUDE)
    except re.error as e:
        raise MiniSPDFError(f"include={include!r} is not a valid regular expression ({e}): fix "
                            f"the pattern, "
                            f"e.g. {DEFAULT_INCLUDE!r}") from None


def target_parameters(model: nn.Module,
                      include: str | None = None) -> list[tuple[str, nn.Parameter]]:
    """The (name, parameter) pairs a mask would act on: names matching the regex ``include``."""
    pattern = _include_pattern(include)
    targets = [(n, p) for n, p in model.named_parameters() if pattern.search(n)]  # tied: once
    if not targets:
        raise MiniSPDFError(
            f"no parameter name matches include={pattern.pattern!r}: check the regex")
    return targets


def erk_densities(shapes: list[torch.Size], density: float) -> list[float]:
    """Per-tensor densities of the ERK distribution whose total density is ``density``.

    Raw scores (sum of dims / product of dims) are scaled by one factor; tensors that would go
    above density 1 are made dense and the factor is solved again for the rest (as RigL does).
    """
    numels = [s.numel() for s in shapes]
    raw = [sum(s) / s.numel() for s in shapes]
    dense: set[int] = set()
    while True:
        budget = density * sum(numels) - sum(numels[i] for i in dense)
        free = [i for i in range(len(shapes)) if i not in dense]
        eps = budget / sum(raw[i] * numels[i] for i in free)
        over = [i for i in free if eps * raw[i] > 1.0]
        if not over:
            return [1.0 if i in dense else eps * raw[i] for i in range(len(shapes))]
        dense.update(over)


def _keep_topk(scores: torch.Tensor, n_keep: int) -> torch.Tensor:
    mask = torch.zeros(scores.numel(), dtype=torch.bool, device=scores.device)
    if n_keep > 0:
        mask[torch.topk(scores.flatten(), n_keep, sorted=False).indices] = True
    return mask.view_as(scores)


@torch.no_grad()
def sparsify(model: nn.Module, sparsity: float, method: str = "random",
             distribution: str = "uniform",
             include: str | None = None, scope: str = "tensor",
             seed: int = 0) -> dict[str, torch.Tensor]:
    """Give the model fixed unstructured masks and zero the pruned weights. Returns the masks.

    ``scope="global"`` (magnitude only) keeps the largest |w| across all target tensors together,
    so layers end at different sparsities. Random masks depend only on ``seed`` and the tensor
    order, so every data-parallel rank draws the same ones. Existing masks are replaced (for
    magnitude the current weights decide, so re-sparsifying a trained model prunes its smallest).
    """
    sparsity = check_sparsity(sparsity)
    check_mask_options(method, distribution, scope)
    return draw_masks(model, sparsity, method, distribution, include, scope, seed)


@torch.no_grad()
def draw_masks(model: nn.Module, sparsity: float, method: str = "random",
               distribution: str = "uniform", include: str | None = None, scope: str = "tensor",
               seed: int = 0) -> dict[str, torch.Tensor]:
    """:func:`sparsify` for settings already checked (a ``schedules.SparsityConfig``'s)."""
    targets = target_parameters(model, include)
    density = 1.0 - sparsity

    if scope == "global":
        flat = torch.cat([p.detach().abs().flatten().float() for _, p in targets])
        keep = _keep_topk(flat, round(density * flat.numel()))
        chunks = keep.split([p.numel() for _, p in targets])
        new_masks = [c.view_as(p) for c, (_, p) in zip(chunks, targets)]
    else:
        if distribution == "uniform":
            densities = [density] * len(targets)
        else:
            densities = erk_densities([p.shape for _, p in targets], density)
        gen = torch.Generator().manual_seed(seed)
        new_masks = []
        for (_, p), d in zip(targets, densities):
            if method == "random":
                scores = torch.rand(p.shape, generator=gen)  # drawn on the CPU: same on every rank
            else:
                scores = p.detach().abs().float().cpu()
            new_masks.append(_keep_topk(scores, round(d * p.numel())).to(p.device))

    for (name, _), mask in zip(targets, new_masks):
        _attach(model, name, mask)
    return {name: mask for (name, _), mask in zip(targets, new_masks)}


@torch.no_grad()
def _attach(model: nn.Module, name: str, mask: torch.Tensor) -> None:
    """Give parameter ``name`` the bool ``mask`` (a buffer), zero its pruned weights, hook it up."""
    module, attr = _owner(model, name)
    module.register_buffer(attr + MASK_SUFFIX, mask)  # replaces an old mask, or fills an empty slot
    _zero_pruned(module._parameters[attr], mask)
    _keep(module)


@torch.no_grad()
def _zero_pruned(tensor: torch.Tensor, mask: torch.Tensor) -> None:
    torch.where(mask, tensor, tensor.new_zeros(()), out=tensor)  # a select: clears a NaN or inf too


def _mask_slots(module: nn.Module):
    """(attribute, parameter, mask or None) for each ``<param>_mask`` buffer slot of one module."""
    for buf_name, mask in list(module._buffers.items()):
        attr = buf_name[: -len(MASK_SUFFIX)]
        if buf_name.endswith(MASK_SUFFIX) and module._parameters.get(attr) is not None:
            yield attr, module._parameters[attr], mask


def masked_parameters(model: nn.Module) -> list[tuple[str, nn.Parameter, torch.Tensor]]:
    """(parameter name, parameter, bool mask) for every parameter that currently has a mask."""
    return [(f"{module_name}.{attr}" if module_name else attr, param, mask)
            for module_name, module in model.named_modules()
            for attr, param, mask in _mask_slots(module) if mask is not None]


def register_masks(model: nn.Module, masks: dict[str, torch.Tensor]) -> None:
    """Attach saved masks (``{param name: bool tensor}``) to a fresh model, e.g. from a
    checkpoint."""
    params = dict(model.named_parameters())
    for name, mask in masks.items():
        if name not in params or params[name].shape != mask.shape:
            raise MiniSPDFError(f"mask for {name!r} does not fit this model: wrong checkpoint for "
                                f"this architecture?")
        _attach(model, name, mask.to(device=params[name].device, dtype=torch.bool))


def mask_state_keys(state_dict: dict) -> dict[str, torch.Tensor]:
    """The masks stored in a state dict, keyed by the parameter they belong to."""
    return {k[: -len(MASK_SUFFIX)]: v for k, v in state_dict.items() if k.endswith(MASK_SUFFIX)}


# ---------------------------------------------------------------- keeping the zeros
#
# The mask keeps its own invariant -- pruned weights, their gradients and their optimizer state
# exactly zero -- under any training loop, through three hooks:
#
# 1. a gradient hook on each masked weight clears the pruned slots of ``.grad`` as soon as
#    backward() has accumulated into it: before any clipping (so pruned slots stay out of the
#    norm), before DDP's all-reduce, after every micro-batch of gradient accumulation;
# 2. one optimizer step hook (torch's global one, so it sees every optimizer) re-zeros the
#    pruned weights after each step (as the authors' stack does), and the pruned slots of their
#    optimizer state (AdamW's moments, SGD's momentum) the first time it meets that state;
# 3. a forward pre-hook on each masked module gives hook 1 to its weight if that is a new tensor
#    (a ``copy.deepcopy`` of the model, a Parameter replaced by assignment).
#
# The hooks read the mask from the module on every call, so ``model.to(device)``,
# ``load_state_dict`` and a new ``sparsify`` need no re-registration. :func:`densify` removes them.

# id(parameter) -> (weakref to it, weakref to its module, its mask's buffer name, hook handle).
# Keyed by id:
# a plain dict lookup is ~20x faster than a WeakKeyDictionary's, and it is on every step's path.
_HOOKED: dict[int, tuple] = {}
_STEP_HOOK = None  # the handle of hook 2, registered once per process
# f(param, grad, mask), shown the gradient before hook 1 clears it (RigL)
_DENSE_GRADIENT_TAP = None


def tap_dense_gradients(fn) -> None:
    """Show every masked weight's gradient to ``fn(param, grad, mask)`` before its pruned slots are
    cleared (a mask schedule that regrows by gradient reads it); ``None`` stops it."""
    global _DENSE_GRADIENT_TAP
    _DENSE_GRADIENT_TAP = fn


def _mask_of(param: torch.Tensor) -> torch.Tensor | None:
    """The current mask of a hooked parameter (None: not hooked, or densified)."""
    entry = _HOOKED.get(id(param))
    module = entry[1]() if entry and entry[0]() is param else None
    return None if module is None else module._buffers.get(entry[2])


# The integer dtype of each float dtype's size, to read a gradient's bits (see _mask_gradient).
_BITS = {torch.float64: torch.int64, torch.float32: torch.int32, torch.float16: torch.int16,
         torch.bfloat16: torch.int16}


def _mask_gradient(param: torch.Tensor) -> None:
    """Hook 1: zero the pruned slots of ``param.grad``, so that not even a NaN there can leak.
    (Autograd runs it in no-grad mode.)

    A select (``torch.where``) clears anything but is slow on a CPU; a float multiply by the mask
    is fast but keeps ``nan * 0 = nan``. So the multiply works on the gradient's bits, read as
    integers of the same size (a view, no copy): times 1 they are unchanged, times 0 they are all
    zero, which is +0.0. That is the select's result, NaN and inf included, at the cost of one
    multiply and with no finiteness check, on any device.
    """
    mask, grad = _mask_of(param), param.grad
    if mask is None or grad is None:
        return
    if _DENSE_GRADIENT_TAP is not None:
        _DENSE_GRADIENT_TAP(param, grad, mask)
    bits = _BITS.get(grad.dtype)
    if bits is None:  # no integer view for this dtype: the select
        _zero_pruned(grad, mask)
    else:
        grad.view(bits).mul_(mask.view(torch.uint8))


@torch.no_grad()
def _remask_after_step(optimizer: torch.optim.Optimizer, args, kwargs) -> None:
    """Hook 2: after any optimizer's step, re-zero the pruned weights it holds, and clear the
    pruned slots of optimizer state it has not cleared before for this mask.

    The weights get a multiply every step (cheap; it also undoes writes from outside). The state
    needs clearing only once: a zero moment fed zero gradients stays exactly zero (AdamW, SGD,
    RMSprop, ...). So only state new to this hook -- a loaded optimizer, state built while the
    model was dense, a new mask -- is cleared, which saves two passes over the weights per step.
    """
    weights, masks = [], []
    for group in optimizer.param_groups:
        for p in group["params"]:
            mask = _mask_of(p)
            if mask is None:
                continue
            weights.append(p)
            masks.append(mask.view(torch.uint8))
            for v in optimizer.state.get(p, {}).values():
                if torch.is_tensor(v) and v.shape == p.shape and not _cleared_for(v, mask):
                    _zero_pruned(v, mask)
    if weights:
        # one call for all tensors: per-op overhead dominates on a CPU
        torch._foreach_mul_(weights, masks)


# id(optimizer state tensor) -> (weakref to it, weakref to the mask)
_CLEARED: dict[int, tuple] = {}


def _cleared_for(state: torch.Tensor, mask: torch.Tensor) -> bool:
    """Whether ``state`` was already cleared for ``mask``; if not, record that it now will be."""
    entry = _CLEARED.get(id(state))
    if entry is not None and entry[0]() is state and entry[1]() is mask:
        return True
    _CLEARED[id(state)] = (_forget_when_freed(_CLEARED, state), weakref.ref(mask))
    return False


def _forget_when_freed(registry: dict, obj) -> weakref.ref:
    """A weak reference to ``obj`` that deletes ``registry[id(obj)]`` when ``obj`` is freed."""
    return weakref.ref(obj, lambda _, key=id(obj): registry.pop(key, None))


def _reattach(module: nn.Module, args=None) -> None:
    """Hook 3 (and the setup of hook 1): give each masked weight of ``module`` its gradient hook.
    A weight met for the first time (e.g. one loaded with ``load_state_dict(assign=True)``) has
    its pruned slots zeroed too."""
    if torch.compiler.is_compiling():  # a compiled forward runs on the weights hooked before
        return
    for attr, param, mask in _mask_slots(module):
        entry = _HOOKED.get(id(param))
        if mask is not None and param.requires_grad and (entry is None or entry[1]() is not module):
            _unhook(param)
            handle = param.register_post_accumulate_grad_hook(_mask_gradient)
            _HOOKED[id(param)] = (_forget_when_freed(_HOOKED, param), weakref.ref(module),
                                  attr + MASK_SUFFIX,
                                  handle)
            _zero_pruned(param, mask)


def _unhook(param: torch.Tensor) -> None:
    entry = _HOOKED.pop(id(param), None)
    if entry is not None:
        entry[3].remove()


def _keep(module: nn.Module) -> None:
    """Install the hooks that keep ``module``'s masks (idempotent)."""
    global _STEP_HOOK
    if _STEP_HOOK is None:
        _STEP_HOOK = register_optimizer_step_post_hook(_remask_after_step)
    if _reattach not in module._forward_pre_hooks.values():
        module.register_forward_pre_hook(_reattach)
    _reattach(module)


def densify(model: nn.Module) -> nn.Module:
    """Drop every mask (SPDF's switch to dense fine-tuning). The zeros stay as starting values.

    The mask slots stay, empty (``None``, as in a layer that was never masked), so the layers
    still display and describe themselves. The hooks that kept the masks go too."""
    for _, module in model.named_modules():
        for attr, param, _ in _mask_slots(module):
            module._buffers[attr + MASK_SUFFIX] = None
            _unhook(param)
        for key in [k for k, hook in module._forward_pre_hooks.items() if hook is _reattach]:
            del module._forward_pre_hooks[key]
    return model


def tracked_tensors() -> dict[str, int]:
    """How many tensors the mask hooks track in this process: ``weights`` (masked weights given
    the gradient hook) and ``optimizer_state`` (optimizer state tensors whose pruned slots were
    cleared). A leak check: each entry goes when its tensor is freed or :func:`densify` unhooks
    it, so once a sparse model and its optimizer are dropped both counts are back where they
    were."""
    return {"weights": len(_HOOKED), "optimizer_state": len(_CLEARED)}


def random_mask(shape, sparsity: float, generator: torch.Generator) -> torch.Tensor:
    """Exactly round((1 - sparsity) * numel) kept entries, uniformly at random (True = kept)."""
    return _keep_topk(torch.rand(shape, generator=generator),
                      round((1 - sparsity) * math.prod(shape)))


def sparsity_report(model: nn.Module, include: str | None = None) -> dict:
    """Per-tensor and overall sparsity of the target tensors, measured from the weights.

    ``zeros`` counts weights that are exactly zero; ``masked`` counts mask entries that are
    False (0 for a tensor without a mask). Returns {"layers": [...], "total": {...}}.
    """
    masks = {name: mask for name, _, mask in masked_parameters(model)}
    rows = []
    for name, p in target_parameters(model, include):
        mask = masks.get(name)
        rows.append(dict(
            name=name, shape=list(p.shape), numel=p.numel(),
            zeros=int((p.detach() == 0).sum()),
            masked=int((~mask).sum()) if mask is not None else 0,
        ))
    for row in rows:
        row["sparsity"] = row["zeros"] / row["numel"]
    numel = sum(r["numel"] for r in rows)
    zeros = sum(r["zeros"] for r in rows)
    masked = sum(r["masked"] for r in rows)
    total = dict(numel=numel, zeros=zeros, masked=masked, sparsity=zeros / numel,
                 params=sum(p.numel() for p in model.parameters()))
    return {"layers": rows, "total": total}


def format_sparsity_report(report: dict) -> str:
    lines = [f"{'tensor':<40} {'shape':>14} {'sparsity':>9}"]
    for r in report["layers"]:
        lines.append(f"{r['name']:<40} {'x'.join(map(str, r['shape'])):>14} {r['sparsity']:>9.1%}")
    t = report["total"]
    lines.append(f"{'all sparsified tensors':<40} {t['numel']:>14,} {t['sparsity']:>9.1%}")
    return "\n".join(lines)
