"""The bench wing: what sparsity costs and saves on this machine.

``bench_config``  BenchConfig, KernelConfig: the settings of ``minispdf bench``, declared once
``step``      dense vs masked training steps, interleaved: times, tokens/s, MFU, memory (``bench``)
``shapes``    the masked matrices of a block and the three matmuls of each
``kernels``   dense, zeros-in-dense, CSR and 2:4 matmuls, checked then timed (``kernel_bench``)
``profile``   where a dense step's time goes (torch.profiler) and the Amdahl step estimate
``summary``   the text summaries and the two bench figures
"""

from .kernels import kernel_bench, kernel_bench_presets
from .summary import (format_bench, format_break_even, format_kernel_bench, plot_bench,
                      plot_kernel_speedups)
from .bench_config import SPARSITIES, BenchConfig, KernelConfig
from .step import bench

__all__ = ["bench", "kernel_bench", "kernel_bench_presets", "format_bench", "format_kernel_bench",
           "format_break_even", "plot_bench", "plot_kernel_speedups", "BenchConfig", "KernelConfig",
           "SPARSITIES"]
