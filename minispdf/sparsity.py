"""Static unstructured sparsity masks: make them, keep them, drop them.

SPDF's recipe (and the authors' Cerebras stack):

1. :func:`sparsify` draws a fixed mask for every sparsified weight: by default the q/k/v,
   attention-output and MLP matrices of every block (embeddings, the LM head, LayerNorms and
   biases stay dense). A mask is a bool buffer ``<param>_mask`` on the owning module (True =
   kept), saved in checkpoints with the weights; the pruned weights are set to exactly zero.
2. During sparse training the loop calls :func:`mask_gradients` after ``backward()`` and
   :func:`remask_weights` after ``optimizer.step()`` (and :func:`apply_masks`, which also clears
   the optimizer moments, once at the start). Together they keep the pruned weights, their
   gradients and the AdamW moments at exactly zero, with weight decay and clipping on.
3. :func:`densify` drops the masks for dense fine-tuning: the pruned weights start at 0.0 and
   become trainable. Not calling it is sparse fine-tuning (SPSF).

Methods: ``random`` (uniform random scores, keep the top (1-s) fraction: an exact count) and
``magnitude`` (keep the largest |w| of the current weights, per tensor or globally).
Distributions: ``uniform`` (every sparsified tensor at the same sparsity, the paper's choice) and
``erk`` (Erdos-Renyi-Kernel, RigL's: density proportional to (n_in + n_out) / (n_in * n_out)).
"""

from __future__ import annotations

import re

import torch
import torch.nn as nn

from .errors import MiniSPDFError

# The paper's choice: q/k/v (c_attn), attention output and MLP matrices of every block.
DEFAULT_INCLUDE = r"^transformer\.h\.\d+\.(attn\.c_attn|attn\.c_proj|mlp\.c_fc|mlp\.c_proj)\.weight$"
METHODS = ("random", "magnitude")
DISTRIBUTIONS = ("uniform", "erk")
MASK_SUFFIX = "_mask"


def check_sparsity(sparsity) -> float:
    if isinstance(sparsity, bool) or not isinstance(sparsity, (int, float)) or not 0.0 <= sparsity < 1.0:
        raise MiniSPDFError(
            f"sparsity={sparsity!r} is outside [0, 1): give the fraction of weights held at zero, e.g. 0.75"
        )
    return float(sparsity)


def check_mask_options(method: str, distribution: str = "uniform", scope: str = "tensor",
                       include: str | None = None) -> None:
    _include_pattern(include)
    if method not in METHODS:
        raise MiniSPDFError(f"unknown mask method {method!r}: choose one of {', '.join(METHODS)}")
    if distribution not in DISTRIBUTIONS:
        raise MiniSPDFError(f"unknown distribution {distribution!r}: choose one of {', '.join(DISTRIBUTIONS)}")
    if scope not in ("tensor", "global"):
        raise MiniSPDFError(f"unknown scope {scope!r}: choose 'tensor' or 'global'")
    if scope == "global" and (method != "magnitude" or distribution != "uniform"):
        raise MiniSPDFError("scope='global' works only with method='magnitude' and the default distribution")


def _owner(model: nn.Module, param_name: str) -> tuple[nn.Module, str]:
    module_name, _, attr = param_name.rpartition(".")
    return (model.get_submodule(module_name) if module_name else model), attr


def _include_pattern(include: str | None) -> re.Pattern:
    try:
        return re.compile(include or DEFAULT_INCLUDE)
    except re.error as e:
        raise MiniSPDFError(f"include={include!r} is not a valid regular expression ({e}): fix the pattern, "
                            f"e.g. {DEFAULT_INCLUDE!r}") from None


def target_parameters(model: nn.Module, include: str | None = None) -> list[tuple[str, nn.Parameter]]:
    """The (name, parameter) pairs a mask would act on: names matching the regex ``include``."""
    pattern = _include_pattern(include)
    targets = [(n, p) for n, p in model.named_parameters() if pattern.search(n)]  # tied: once
    if not targets:
        raise MiniSPDFError(f"no parameter name matches include={pattern.pattern!r}: check the regex")
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
def sparsify(model: nn.Module, sparsity: float, method: str = "random", distribution: str = "uniform",
             include: str | None = None, scope: str = "tensor", seed: int = 0) -> dict[str, torch.Tensor]:
    """Give the model fixed unstructured masks and zero the pruned weights. Returns the masks.

    ``scope="global"`` (magnitude only) keeps the largest |w| across all target tensors together,
    so layers end at different sparsities. Random masks depend only on ``seed`` and the tensor
    order, so every data-parallel rank draws the same ones. Existing masks are replaced (for
    magnitude the current weights decide, so re-sparsifying a trained model prunes its smallest).
    """
    sparsity = check_sparsity(sparsity)
    check_mask_options(method, distribution, scope)
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

    result = {}
    for (name, p), mask in zip(targets, new_masks):
        module, attr = _owner(model, name)
        if attr + MASK_SUFFIX in module._buffers:
            module._buffers[attr + MASK_SUFFIX] = mask
        else:
            module.register_buffer(attr + MASK_SUFFIX, mask)
        p.masked_fill_(~mask, 0.0)
        result[name] = mask
    return result


def masked_parameters(model: nn.Module) -> list[tuple[str, nn.Parameter, torch.Tensor]]:
    """(parameter name, parameter, bool mask) for every parameter that currently has a mask."""
    out = []
    for module_name, module in model.named_modules():
        for buf_name, mask in module._buffers.items():
            if mask is None or not buf_name.endswith(MASK_SUFFIX):
                continue
            attr = buf_name[: -len(MASK_SUFFIX)]
            param = module._parameters.get(attr)
            if param is not None:
                out.append((f"{module_name}.{attr}" if module_name else attr, param, mask))
    return out


def register_masks(model: nn.Module, masks: dict[str, torch.Tensor]) -> None:
    """Attach saved masks (``{param name: bool tensor}``) to a fresh model, e.g. from a checkpoint."""
    params = dict(model.named_parameters())
    for name, mask in masks.items():
        if name not in params or params[name].shape != mask.shape:
            raise MiniSPDFError(f"mask for {name!r} does not fit this model: wrong checkpoint for this architecture?")
        module, attr = _owner(model, name)
        module.register_buffer(attr + MASK_SUFFIX, mask.to(device=params[name].device, dtype=torch.bool))


def mask_state_keys(state_dict: dict) -> dict[str, torch.Tensor]:
    """The masks stored in a state dict, keyed by the parameter they belong to."""
    return {k[: -len(MASK_SUFFIX)]: v for k, v in state_dict.items() if k.endswith(MASK_SUFFIX)}


@torch.no_grad()
def mask_gradients(model: nn.Module, masked=None) -> None:
    """Zero the gradients of pruned weights, so that not even a NaN in a pruned slot can leak.

    The fast path multiplies each gradient by its mask, read as bytes (a ``uint8`` view of the
    bool mask: no copy, and on a CPU four times faster than a bool operand). A multiply alone
    is not enough: a NaN or inf in a pruned slot survives ``x * 0``. So the masked gradients'
    norm is checked, and only if it is not finite is the job redone with a select
    (``torch.where``), which clears anything. The result is always that of the select; the
    usual cost is the multiply and one norm (and, on a GPU, one synchronisation).

    ``masked`` is an optional precomputed ``masked_parameters(model)`` list (the training loop
    passes it to skip the module walk on every step).
    """
    pairs = [(p.grad, mask) for _, p, mask in (masked if masked is not None else masked_parameters(model))
             if p.grad is not None]
    if not pairs:
        return
    grads = [g for g, _ in pairs]
    torch._foreach_mul_(grads, [_as_bytes(m) for _, m in pairs])
    if not torch.stack(torch._foreach_norm(grads)).sum().isfinite():
        for g, mask in pairs:
            torch.where(mask, g, _zero(g), out=g)


@torch.no_grad()
def apply_masks(model: nn.Module, optimizer: torch.optim.Optimizer | None = None, masked=None) -> None:
    """Zero the pruned slots of the weights and, given an optimizer, of their moments
    (``exp_avg``, ``exp_avg_sq``, ...). A select, so it also clears a NaN or inf written there.

    Use it whenever weights or optimizer state come from outside the loop (a new mask, a loaded
    checkpoint); the training loop calls it once at the start of a run.
    """
    for _, p, mask in masked if masked is not None else masked_parameters(model):
        tensors = [p.data]
        if optimizer is not None:
            tensors += [v for v in optimizer.state.get(p, {}).values() if torch.is_tensor(v) and v.shape == p.shape]
        for t in tensors:
            torch.where(mask, t, _zero(t), out=t)


@torch.no_grad()
def remask_weights(masked) -> None:
    """The per-step re-mask of the training loop: multiply each weight by its mask.

    With masked gradients, AdamW's update of a pruned weight is exactly zero (zero gradient, zero
    moments, and decoupled decay multiplies 0), so the pruned weights and moments stay 0 without
    help; this cheap multiply only re-asserts it, as the authors' stack does after every step.
    ``masked`` is ``masked_parameters(model)``.
    """
    if masked:
        torch._foreach_mul_([p.data for _, p, _ in masked], [_as_bytes(m) for _, _, m in masked])


def _as_bytes(mask: torch.Tensor) -> torch.Tensor:
    """The bool mask's own storage seen as uint8 (0/1): a multiply operand that costs no copy and
    takes a faster CPU kernel than a bool one."""
    return mask.view(torch.uint8)


_ZEROS: dict = {}


def _zero(like: torch.Tensor) -> torch.Tensor:
    key = (like.dtype, like.device)
    if key not in _ZEROS:
        _ZEROS[key] = torch.zeros((), dtype=like.dtype, device=like.device)
    return _ZEROS[key]


def densify(model: nn.Module) -> nn.Module:
    """Drop every mask (SPDF's switch to dense fine-tuning). The zeros stay as starting values.

    The mask slots stay, empty (``None``, as in a layer that was never masked), so the layers
    still display and describe themselves."""
    for _, module in model.named_modules():
        for buf_name in [b for b in module._buffers if b.endswith(MASK_SUFFIX)]:
            module._buffers[buf_name] = None
    return model


def is_sparse(model: nn.Module) -> bool:
    return bool(masked_parameters(model))


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
