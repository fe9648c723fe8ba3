"""The bench's settings, declared once: the Python API (:func:`minispdf.bench.bench`,
:func:`minispdf.bench.kernel_bench`) takes these objects and the ``minispdf bench`` options are
generated from them.

A setting that belongs to one mode says so with ``applies`` (a class's ``APPLIES`` for all its
fields): the command line refuses it in the other mode (``minispdf bench --kernels --steps 3``),
where it would be silently ignored.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from ..settings import Settings, device_setting, setting
from ..errors import MiniSPDFError
from ..sparsity import check_sparsity

SPARSITIES = (0.5, 0.75, 0.9, 0.95, 0.99)  # the kernel bench's default sparsities
STEP_MODE, KERNEL_MODE = ("kernels", False), ("kernels", True)


@dataclass
class BenchConfig(Settings):
    """Training-step benchmark."""
    preset: str = setting("tiny", "model size (with --kernels also: all)", metavar="NAME")
    sparsity: float = setting(0.75, "the masked arm's sparsity", applies=STEP_MODE)
    batch_size: int = setting(12, "sequences per step", min=1)
    block_size: int | None = setting(None, "context length (default: the preset's)", min=1)
    steps: int = setting(30, "timed steps per arm (after the warmup)", applies=STEP_MODE, min=1)
    warmup: int = setting(5, "untimed steps first", applies=STEP_MODE, min=0)
    device: str = device_setting()
    compile: bool = setting(False, "torch.compile the model", applies=STEP_MODE)
    # checked where it is used
    dtype: str = setting("auto", "auto (bf16 on CUDA, fp32 elsewhere) | fp32 | bf16")
    peak_tflops: float | None = setting(None,
                                        "the device's peak TFLOP/s, if not in the built-in table",
                                        applies=STEP_MODE, above=0)
    kernels: bool = setting(False,
                            "time the masked matrices' matmuls (dense, zeros, CSR, 2:4) instead")


@dataclass
class KernelConfig(Settings):
    """With --kernels."""
    APPLIES: ClassVar = KERNEL_MODE  # every field
    sparsities: str = setting(",".join(f"{s:g}" for s in SPARSITIES), "comma-separated sparsities")
    repeats: int = setting(9, "interleaved repeats (the median is reported)", min=1)
    threads: int | None = setting(None, "CPU threads (default: torch's)", min=1)
    step: bool = setting(True,
                         "also profile a dense training step and derive its speedups (Amdahl)")
    step_steps: int = setting(3, "profiled training steps", min=1)


def parse_sparsities(text) -> tuple[float, ...]:
    """``"0.5,0.9"`` (or a sequence of numbers) as sorted distinct sparsities, each in (0, 1)."""
    items = (list(text) if isinstance(text, (list, tuple))
             else [t for t in str(text).replace(" ", "").split(",") if t])
    if not items:
        raise MiniSPDFError(
            "--sparsities is empty: give comma-separated fractions such as 0.5,0.9,0.99")
    out = []
    for t in items:
        try:
            s = float(t)
        except (TypeError, ValueError):
            raise MiniSPDFError(f"--sparsities: {t!r} is not a number; give fractions such as "
                                f"0.5,0.9,0.99") from None
        if not 0 < s < 1:
            raise MiniSPDFError(f"--sparsities: {t} is outside (0, 1); give the fraction of "
                                f"weights held at zero, "
                                "e.g. 0.5,0.9,0.99")
        out.append(check_sparsity(s))
    return tuple(sorted(set(out)))
