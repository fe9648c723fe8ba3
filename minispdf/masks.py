"""What the masks hold, read from a model: which block matrices ``sparsify`` masks, and what dense
training did to the weights a mask had held at zero (``regrowth``). Analyses only; the figures of
them are in :mod:`minispdf.plots`."""

from __future__ import annotations

from typing import Mapping

import torch

from .errors import MiniSPDFError
from .model import GPT, preset_config
from .sparsity import target_parameters


def masked_block_matrices() -> list[str]:
    """Names (``attn.c_attn``, ...) of the block matrices the library's ``sparsify`` masks by
    default,
    read from ``target_parameters`` of a model on the meta device (shapes only, no memory)."""
    with torch.device("meta"):
        model = GPT(preset_config("nano"))
    prefix = "transformer.h.0."
    return [n[len(prefix):-len(".weight")] for n, _ in target_parameters(model)
            if n.startswith(prefix)]


def regrowth(masks: Mapping[str, torch.Tensor], model) -> dict:
    """What dense training did to the weights a mask had held at zero.

    ``masks`` are the masks of the sparse model (``{param name: bool, True = kept}``, e.g. from
    ``sparsify`` or ``masked_parameters``); ``model`` is the densified model after training.
    Returns ``{"layers": [{name, pruned, nonzero_fraction, pruned_mean_abs, kept_mean_abs}],
    "pruned_abs": tensor, "kept_abs": tensor}`` (the last two pool all tensors).
    """
    params = dict(model.named_parameters())
    rows, pruned_all, kept_all = [], [], []
    for name, mask in masks.items():
        if name not in params:
            raise MiniSPDFError(
                f"model has no parameter {name!r}: pass masks of the same architecture")
        w = params[name].detach().float().cpu()
        m = mask.detach().bool().cpu()
        pruned, kept = w[~m].abs(), w[m].abs()
        pruned_all.append(pruned)
        kept_all.append(kept)
        rows.append(dict(
            name=name, pruned=int(pruned.numel()),
            nonzero_fraction=float((pruned != 0).float().mean()) if pruned.numel() else 0.0,
            pruned_mean_abs=float(pruned.mean()) if pruned.numel() else 0.0,
            kept_mean_abs=float(kept.mean()) if kept.numel() else 0.0,
        ))
    return {"layers": rows, "pruned_abs": torch.cat(pruned_all) if pruned_all else torch.zeros(0),
            "kept_abs": torch.cat(kept_all) if kept_all else torch.zeros(0)}
