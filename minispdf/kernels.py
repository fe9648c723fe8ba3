"""The kernel bench's old home: it is :mod:`minispdf.bench` now. Kept only while lesson 06 imports
from here (notebooks/06_beyond_the_paper.py: ``from minispdf.kernels import format_break_even,
kernel_bench``); when that line reads ``from minispdf.bench import ...``, delete this file."""

from .bench import format_break_even, kernel_bench  # noqa: F401
