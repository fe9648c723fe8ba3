"""Checkpoints that resume exactly and never half-write.

A checkpoint is one ``torch.save`` file holding: the model weights *with their masks* (bool
buffers), the model config, the optimizer state, the step, cumulative FLOPs and tokens, the RNG
states (torch CPU/CUDA) and the data-sampler generator state of every rank, the training config,
the tokenizer name and where the data came from. It is written atomically
(:func:`minispdf.fileio.atomic_write_bytes`), so a crash mid-write leaves the previous checkpoint
intact.
"""

from __future__ import annotations

import errno
import os
import pickle
import tempfile
import warnings

import torch

from .errors import MiniSPDFError, one_line
from .fileio import atomic_write_bytes, file_problem, require_readable
from .model import GPT, GPTConfig
from .sparsity import mask_state_keys, register_masks

FORMAT = "minispdf-1"


def check_out_folder(out: str, flag: str = "--out") -> None:
    """Refuse, before any work, an output folder that cannot be made: ``out`` is a file, sits under
    a file, or lies where nothing can be written. Leaves nothing behind."""
    if os.path.exists(out) and not os.path.isdir(out):
        raise MiniSPDFError(f"{flag} {out} is a file, not a folder: choose another {flag}")
    parent = os.path.dirname(os.path.abspath(out))
    while not os.path.exists(parent):
        parent = os.path.dirname(parent)
    if not os.path.isdir(parent):
        raise MiniSPDFError(f"{flag} {out}: {parent} is a file, so the folder cannot be "
                            f"made there: "
                            f"choose another {flag}")
    try:  # probe: permission bits do not tell (root, read-only mounts, /proc)
        os.rmdir(tempfile.mkdtemp(prefix=".probe-", dir=out if os.path.isdir(out) else parent))
    except OSError as e:
        raise MiniSPDFError(
            f"cannot make the folder {out} ({e.strerror or e}): choose a writable {flag}") from None


def save_checkpoint(path: str, payload: dict) -> None:
    payload = {"format": FORMAT, **payload}

    def write(f):
        try:
            torch.save(payload, f)
        # torch's writer reports a failed write (disk full, file too large) so
        except RuntimeError as e:
            raise OSError(errno.EIO, f"torch.save failed: {one_line(e, 120)}") from None

    atomic_write_bytes(path, write)


def read_checkpoint(path: str, map_location="cpu") -> dict:
    """The raw checkpoint dict, with one-line errors for missing, corrupt or foreign files."""
    if os.path.isdir(path):
        path = os.path.join(path, "ckpt.pt")
    if file_problem(path) == "does not exist":
        raise MiniSPDFError(
            f"no checkpoint at {path}: pass the ckpt.pt (or run folder) that pretrain --out wrote")
    require_readable(path, "checkpoint",
                     "pass the ckpt.pt (or run folder) that pretrain --out wrote")
    try:
        with warnings.catch_warnings():  # the one-line error below is the whole message
            warnings.simplefilter("ignore")
            ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        if "unsupported global" not in str(e).lower():  # torch 2.13: "unsupported GLOBAL"
            raise MiniSPDFError(f"{path} is not a readable checkpoint (UnpicklingError): the file "
                                f"is corrupt or "
                                "truncated; re-run the training that wrote it") from None
        raise MiniSPDFError(
            f"{path} holds Python objects that a safe load refuses (loading them could run "
            f"code): minispdf "
            "checkpoints hold only tensors and plain values; load this file only if you "
            "trust it, with "
            "torch.load(weights_only=False), or re-run the training that wrote it"
        ) from None
    except Exception as e:
        raise MiniSPDFError(
            f"{path} is not a readable checkpoint ({type(e).__name__}): the file is corrupt or "
            "truncated; re-run the training that wrote it"
        ) from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise MiniSPDFError(f"{path} is not a minispdf checkpoint (no '{FORMAT}' format tag)")
    require_keys(ckpt, {"model": dict, "model_config": dict}, path)
    # read with .get(...) everywhere
    require_keys(ckpt, {k: dict for k in OPTIONAL_DICTS if k in ckpt}, path)
    # printed and summed, not only resumed
    require_keys(ckpt, {k: t for k, t in RESUME_KEYS.items() if k in ckpt}, path)
    return ckpt


OPTIONAL_DICTS = ("meta", "train_config", "rng")


# What ``--resume`` needs beyond the model: the rest of the training state.
RESUME_KEYS = {"optimizer": dict, "step": int, "flops": float, "flops_dense": float, "tokens": int,
               "rng": dict}


def require_keys(ckpt: dict, keys: dict, path: str) -> None:
    """One-line error for a checkpoint that lacks (or has a wrong-typed) entry it needs."""
    for key, typ in keys.items():
        value = ckpt.get(key)
        if (value is None or not isinstance(value, (int, float) if typ is float else typ)
            or isinstance(value, bool)):
            kind = {int: "an integer", float: "a number", dict: "a dictionary"}.get(typ,
                                                                                    typ.__name__)
            raise MiniSPDFError(f"{path} is damaged: its {key!r} entry is missing or not {kind}; "
                                "re-run the training that wrote it, or use another checkpoint")


def model_from_checkpoint(ckpt: dict, path: str = "checkpoint") -> GPT:
    config = GPTConfig.from_dict(ckpt["model_config"])
    model = GPT(config)
    state = ckpt["model"]
    register_masks(model, mask_state_keys(state))
    try:
        model.load_state_dict(state)
    except RuntimeError as e:
        raise MiniSPDFError(f"{path} does not match its own model config ({one_line(e)}): the "
                            f"file is damaged") from None
    return model


def load_checkpoint(path: str, map_location="cpu") -> tuple[GPT, dict]:
    """Load a checkpoint: returns ``(model, info)``; masks come back as they were saved.

    ``info`` holds the rest of the checkpoint (step, tokenizer, configs, flops, ...).
    """
    ckpt = read_checkpoint(path, map_location=map_location)
    model = model_from_checkpoint(ckpt, path)
    if not all(t.isfinite().all() for t in model.state_dict().values() if t.is_floating_point()):
        raise MiniSPDFError(f"{path} holds NaN or infinite weights (the training that wrote it "
                            f"diverged): use an "
                            "earlier checkpoint, or re-train with a lower --lr")
    info = {k: v for k, v in ckpt.items() if k not in ("model", "optimizer")}
    return model, info


def check_compatible(info: dict, config: GPTConfig | None = None, tokenizer: str | None = None,
                     path: str = "checkpoint") -> None:
    """Refuse a checkpoint from another architecture or vocabulary with a message that says so."""
    saved = GPTConfig.from_dict(info["model_config"])
    if config is not None:
        arch = ("n_layer", "n_head", "n_embd", "vocab_size")
        diff = [f"{k} {getattr(saved, k)} vs {getattr(config, k)}" for k in arch
                if getattr(saved, k) != getattr(config, k)]
        if diff:
            raise MiniSPDFError(f"{path} is from another architecture ({'; '.join(diff)}): "
                                "use the preset it was trained with or another checkpoint")
    if tokenizer is not None and info.get("tokenizer") not in (None, tokenizer):
        raise MiniSPDFError(f"{path} was trained with the {info.get('tokenizer')!r} tokenizer, not "
                            f"{tokenizer!r}: use --tokenizer {info.get('tokenizer')}")
