"""Mask moves as pure functions of tensors: what a schedule (:mod:`minispdf.schedules`) does to
one tensor's mask when it moves it, and the ramps that say how much. Ties are broken by position
(the lower flat index first), so a move is exact."""

from __future__ import annotations

import math

import torch

from .errors import MiniSPDFError


def _lowest(scores: torch.Tensor, slots: torch.Tensor, k: int) -> torch.Tensor:
    """The ``k`` of ``slots`` (flat indices) with the lowest scores; ties: the lower index first."""
    return slots[torch.argsort(scores[slots], stable=True)[:k]]


def _highest(scores: torch.Tensor, slots: torch.Tensor, k: int) -> torch.Tensor:
    return slots[torch.argsort(scores[slots], descending=True, stable=True)[:k]]


def drop_and_grow(mask: torch.Tensor, weight: torch.Tensor, grow_score: torch.Tensor,
                  n_move: int) -> torch.Tensor:
    """One SET/RigL move of one tensor: drop the ``n_move`` kept slots of smallest |weight|, then
    grow
    the ``n_move`` slots of largest ``grow_score`` among those not kept after the drop (a slot just
    dropped may come back, keeping its weight). The number kept is unchanged."""
    flat = mask.flatten().clone()
    dropped = _lowest(weight.detach().abs().flatten().float(), flat.nonzero().squeeze(1), n_move)
    flat[dropped] = False
    grown = _highest(grow_score.flatten().float(), (~flat).nonzero().squeeze(1), n_move)
    flat[grown] = True
    return flat.view_as(mask)


def magnitude_keep(mask: torch.Tensor, weight: torch.Tensor, n_keep: int) -> torch.Tensor:
    """The ``n_keep`` kept slots of largest |weight| (GMP's prune step); never revives a pruned
    slot."""
    flat = torch.zeros(mask.numel(), dtype=torch.bool, device=mask.device)
    flat[_highest(weight.detach().abs().flatten().float(), mask.flatten().nonzero().squeeze(1),
                  n_keep)] = True
    return flat.view_as(mask)


def nm_mask(weight: torch.Tensor, n: int, m: int) -> torch.Tensor:
    """Keep the ``n`` largest |w| of every ``m`` consecutive weights along the input dimension (the
    last one: a Linear's weight is out x in); ties: the earlier weight first."""
    rows, cols = weight.shape[0], weight[0].numel()
    if cols % m:
        raise MiniSPDFError(f"a weight of shape {tuple(weight.shape)} has {cols} inputs, not a "
                            f"multiple of M={m}: "
                            "N:M needs every group of M whole")
    groups = weight.detach().abs().float().reshape(rows, cols // m, m)
    top = torch.argsort(groups, dim=-1, descending=True, stable=True)[..., :n]
    keep = torch.zeros_like(groups, dtype=torch.bool).scatter_(-1, top, True)
    return keep.reshape(weight.shape)


def check_nm(mask: torch.Tensor, n: int, m: int) -> None:
    """Raise unless every group of ``m`` consecutive inputs keeps exactly ``n``."""
    counts = mask.reshape(mask.shape[0], -1, m).sum(-1)
    if not bool((counts == n).all()):
        bad = int((counts != n).sum())
        raise MiniSPDFError(f"{bad} groups of {m} do not keep exactly {n}: not an {n}:{m} mask")


def cosine_fraction(step: int, drop_fraction: float, end: int) -> float:
    """RigL's cosine decay of the fraction moved: ``drop_fraction`` at step 0, 0 at ``end``."""
    return drop_fraction / 2 * (1 + math.cos(math.pi * min(step, end) / end))


def cubic_sparsity(step: int, final: float, start: int, end: int) -> float:
    """GMP's target sparsity at ``step``: 0 before ``start``, ``final`` from ``end``, cubic
    between."""
    progress = min(1.0, max(0.0, (step - start) / (end - start)))
    return final * (1 - (1 - progress) ** 3)
