"""What the kernel bench times: the four masked matrices of a block and the three matmuls of
each."""

from __future__ import annotations

KERNELS = ("forward", "grad_input", "grad_weight")  # Y = X W^T, dX = dY W, dW = dY^T X
SHAPE_NAMES = ("qkv", "attn_out", "mlp_up", "mlp_down")
TWO_FOUR = "2:4"  # the semi-structured arm: two of every four consecutive weights kept


def matrix_shapes(cfg) -> dict:
    """The masked weights of one block as nn.Linear stores them: name -> (out, in)."""
    d = cfg.n_embd
    return {"qkv": (3 * d, d), "attn_out": (d, d), "mlp_up": (4 * d, d), "mlp_down": (d, 4 * d)}
