"""minispdf: Sparse Pre-training and Dense Fine-tuning (SPDF) of GPT models, small and readable.

The stable API for notebooks and users::

    from minispdf import GPT, GPTConfig, sparsify, densify, flop_report, load_checkpoint
"""

import importlib

__version__ = "0.1.0"
# name -> the module that defines it, imported on first use: `python -m minispdf` starts without
# torch,
# so that a Ctrl-C while torch loads ends in one line (see __main__), not a traceback
_API = {"GPT": "model", "GPTConfig": "model", "preset_config": "model", "sparsify": "sparsity",
        "densify": "sparsity", "sparsity_report": "sparsity", "flop_report": "flops",
        "load_checkpoint": "checkpoint", "MiniSPDFError": "errors"}
__all__ = list(_API)


def __getattr__(name):
    if name not in _API:
        raise AttributeError(f"module 'minispdf' has no attribute {name!r}")
    return getattr(importlib.import_module(f".{_API[name]}", __name__), name)
