"""Where a run happens: the device named by ``--device`` (checked, then picked), whether the
model and batch fit its memory, the ranks under ``torchrun`` and the autocast each device trains
with. :mod:`minispdf.train` uses these and re-exports them.
"""

from __future__ import annotations

import contextlib
import os
import re

import torch

from .errors import MiniSPDFError, counted


def check_device_name(name) -> None:
    if not (name in ("auto", "cpu", "cuda", "mps") or re.fullmatch(r"cuda:\d+", str(name))):
        raise MiniSPDFError(f"device={name!r}: choose auto, cpu, cuda, cuda:N or mps")


def pick_device(name: str = "auto") -> str:
    check_device_name(name)
    if (name.startswith("cuda:") and torch.cuda.is_available()
        and int(name[5:]) >= torch.cuda.device_count()):
        raise MiniSPDFError(f"device={name} but only {counted(torch.cuda.device_count(), 'GPU')} "
                            f"visible: use --device cuda")
    if name != "auto":
        if name.startswith("cuda") and not torch.cuda.is_available():
            raise MiniSPDFError(
                f"device={name} but no CUDA GPU is visible: use --device cpu or auto")
        if name == "mps" and not torch.backends.mps.is_available():
            raise MiniSPDFError("device=mps but MPS is not available: use --device cpu or auto")
        return name
    if torch.cuda.is_available():
        return "cuda"
    if torch.backends.mps.is_available():
        return "mps"
    return "cpu"


def check_fits(config, cfg) -> None:
    """Refuse, before anything is allocated, a model and batch whose training cannot fit in the
    memory of ``cfg.device`` (``cfg``: a ``TrainConfig``): the weights, their gradients and AdamW's
    two moments (16 bytes a parameter) and the activations (Korthikanti et al.'s per-layer count,
    in float32) -- a lower bound, so a refusal is certain and a pass is no promise."""
    T, d, h, L = config.block_size, config.n_embd, config.n_head, config.n_layer
    # the matrices and embeddings (not biases, LayerNorms)
    n = 12 * L * d * d + (config.vocab_size + T) * d
    need = 16 * n + 4 * cfg.batch_size * T * L * (34 * d + 5 * h * T)
    device = pick_device(cfg.device)
    if device.startswith("cuda"):
        have = torch.cuda.get_device_properties(torch.device(device)).total_memory
    else:
        have = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    if need > have:
        raise MiniSPDFError(f"training ~{n:,} parameters at batch_size {cfg.batch_size} x "
                            f"block_size {T} needs at "
                            f"least {need / 2**30:,.1f} GiB; {device} has {have / 2**30:,.1f} GiB: "
                            f"use a smaller "
                            "model or a smaller --batch_size (with --grad_accum for "
                            "the same batch)")


def dist_info() -> tuple[int, int, int]:
    """(rank, local_rank, world_size) under torchrun, else (0, 0, 1)."""
    if "RANK" in os.environ and "WORLD_SIZE" in os.environ:
        return (int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", 0)),
                int(os.environ["WORLD_SIZE"]))
    return 0, 0, 1


def autocast_for(device: str):
    """bf16 autocast on CUDA; full fp32 elsewhere."""
    if device.startswith("cuda"):
        return lambda: torch.autocast(device_type="cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext
