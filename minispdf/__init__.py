"""minispdf: Sparse Pre-training and Dense Fine-tuning (SPDF) of GPT models, small and readable.

The stable API for notebooks and users::

    from minispdf import GPT, GPTConfig, sparsify, densify, flop_report, load_checkpoint
"""

from .checkpoint import load_checkpoint
from .errors import MiniSPDFError
from .flops import flop_report
from .model import GPT, GPTConfig, preset_config
from .sparsity import densify, sparsify, sparsity_report

__version__ = "0.1.0"
__all__ = ["GPT", "GPTConfig", "sparsify", "densify", "flop_report", "load_checkpoint",
           "sparsity_report", "preset_config", "MiniSPDFError"]
