"""FLOP accounting for sparse and dense training (Chinchilla-style, per component).

Forward FLOPs of one sequence of T tokens (d = n_embd, h = n_head, d_ff = 4d, L = n_layer,
V = vocab), with a multiply-add counted as 2 FLOPs:

    qkv projections      L * 2 * 3 * T * d * d        scaled by density
    attention scores     L * 2 * T * T * d            dense (activations x activations)
    softmax              L * 3 * h * T * T            dense
    attention x values   L * 2 * T * T * d            dense
    output projection    L * 2 * T * d * d            scaled by density
    mlp                  L * 2 * T * 2 * d * d_ff     scaled by density
    logits (LM head)     2 * T * d * V                dense
    embedding lookup     0, or 2 * T * V * d with count_embedding=True (Chinchilla counts it)

Training = 3 x forward (the backward pass costs twice the forward, sparse or dense). The
reduction reported is dense training FLOPs over sparse training FLOPs.

The saving is theoretical: a masked matmul on a GPU or CPU with dense kernels multiplies the
zeros too, so it costs the dense FLOPs and the dense time. Only hardware that skips zeros (the
Cerebras CS-2 the paper used) turns the sparse count into a speed-up.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .settings import MAX_STEPS, STEPS_HINT, Settings, setting
from .errors import MiniSPDFError
from .model import GPT, GPTConfig, preset_config
from .sparsity import check_sparsity, masked_parameters

# component -> (which weight matrices it multiplies, if any): used for measured densities
SPARSIFIABLE = {"qkv": "attn.c_attn", "attn_out": "attn.c_proj", "mlp": ("mlp.c_fc", "mlp.c_proj")}
HONESTY_NOTE = (
    "Sparse FLOPs are a theoretical count: masked training on dense hardware (GPU/CPU) still "
    "costs the dense FLOPs; the saving needs hardware that skips zeros."
)


@dataclass
class FlopReport:
    config: dict
    seq_len: int
    sparsity: float  # the nominal (or measured overall) sparsity of the sparsified matrices
    count_embedding: bool
    # name -> {dense, sparse, sparsified}: forward FLOPs per sequence
    components: dict = field(default_factory=dict)

    @property
    def forward_dense(self) -> int:
        return sum(c["dense"] for c in self.components.values())

    @property
    def forward_sparse(self) -> float:
        return sum(c["sparse"] for c in self.components.values())

    @property
    def train_dense(self) -> int:
        """Training FLOPs (forward + backward) for one sequence of seq_len tokens, dense."""
        return 3 * self.forward_dense

    @property
    def train_sparse(self) -> float:
        return 3 * self.forward_sparse

    @property
    def reduction(self) -> float:
        """Dense training FLOPs over sparse training FLOPs (the paper's "2.5x fewer")."""
        return self.train_dense / self.train_sparse

    def train_flops_per_token(self, sparse: bool = True) -> float:
        return (self.train_sparse if sparse else self.train_dense) / self.seq_len

    def to_dict(self) -> dict:
        return dict(
            config=self.config, seq_len=self.seq_len, sparsity=self.sparsity,
            count_embedding=self.count_embedding,
            components={k: dict(v) for k, v in self.components.items()},
            forward_dense=self.forward_dense, forward_sparse=self.forward_sparse,
            train_dense=self.train_dense, train_sparse=self.train_sparse,
            train_dense_per_token=self.train_flops_per_token(False),
            train_sparse_per_token=self.train_flops_per_token(True),
            reduction=self.reduction, note=HONESTY_NOTE,
        )

    def format(self) -> str:
        c = self.config
        head = (f"FLOPs per sequence of {self.seq_len} tokens: {c['n_layer']} layers, "
                f"d={c['n_embd']}, "
                f"heads={c['n_head']}, vocab={c['vocab_size']}, sparsity {self.sparsity:.0%}"
                f"{', embedding counted' if self.count_embedding else ''}")
        lines = [head,
                 f"{'component':<20} {'dense fwd':>12} {'sparse fwd':>12} {'share (dense)':>14}"]
        for name, v in self.components.items():
            lines.append(f"{name:<20} {v['dense']:>12.4g} {v['sparse']:>12.4g} "
                         f"{v['dense'] / self.forward_dense:>14.1%}")
        lines.append(
            f"{'forward total':<20} {self.forward_dense:>12.4g} {self.forward_sparse:>12.4g}")
        lines.append(
            f"{'training (3x fwd)':<20} {self.train_dense:>12.4g} {self.train_sparse:>12.4g}")
        lines.append(f"reduction: {self.reduction:.2f}x fewer training FLOPs than dense")
        lines.append(HONESTY_NOTE)
        return "\n".join(lines)


def _components(cfg: GPTConfig, T: int, dens: dict, count_embedding: bool) -> dict:
    """Forward FLOPs per component; ``dens`` gives the mean density of qkv, attn_out and mlp."""
    L, d, h, V, d_ff = cfg.n_layer, cfg.n_embd, cfg.n_head, cfg.vocab_size, 4 * cfg.n_embd
    raw = {
        "embedding": (2 * T * V * d if count_embedding else 0, None),
        "qkv": (L * 2 * 3 * T * d * d, "qkv"),
        "attn_scores": (L * 2 * T * T * d, None),
        "softmax": (L * 3 * h * T * T, None),
        "attn_values": (L * 2 * T * T * d, None),
        "attn_out": (L * 2 * T * d * d, "attn_out"),
        "mlp": (L * 2 * T * 2 * d * d_ff, "mlp"),
        "logits": (2 * T * d * V, None),
    }
    return {
        name: dict(dense=dense, sparse=dense * dens[key] if key else dense,
                   sparsified=key is not None)
        for name, (dense, key) in raw.items()
    }


def flop_report(model_or_config, sparsity: float | None = None, seq_len: int | None = None,
                count_embedding: bool = False) -> FlopReport:
    """FLOP report for a preset name, a :class:`GPTConfig` or a :class:`GPT`.

    For a config or preset, ``sparsity`` (default 0) is applied uniformly to the q/k/v,
    attention-output and MLP matrices. For a model, the densities are *measured* from its masks
    (so ERK or global-magnitude masks are counted as they are), unless ``sparsity`` is given.
    ``seq_len`` defaults to the context length.
    """
    model = None
    if isinstance(model_or_config, str):
        cfg = preset_config(model_or_config)
    elif isinstance(model_or_config, GPT):
        model, cfg = model_or_config, model_or_config.config
    elif isinstance(model_or_config, GPTConfig):
        cfg = model_or_config
    else:
        raise MiniSPDFError(f"flop_report needs a preset name, GPTConfig or GPT, not "
                            f"{type(model_or_config).__name__}")
    T = cfg.block_size if seq_len is None else int(seq_len)
    if T < 1:
        raise MiniSPDFError(f"seq_len={seq_len} must be a positive integer")

    if model is not None and sparsity is None:
        dens = measured_densities(model)
        kept = sum(dens[k] * w for k, w in _matrix_weights(cfg).items())
        nominal = 1.0 - kept / sum(_matrix_weights(cfg).values())
    else:
        nominal = check_sparsity(0.0 if sparsity is None else sparsity)
        dens = {k: 1.0 - nominal for k in SPARSIFIABLE}
    return FlopReport(config=cfg.to_dict(), seq_len=T, sparsity=nominal,
                      count_embedding=count_embedding,
                      components=_components(cfg, T, dens, count_embedding))


def _matrix_weights(cfg: GPTConfig) -> dict:
    d = cfg.n_embd
    return {"qkv": 3 * d * d, "attn_out": d * d, "mlp": 8 * d * d}


def measured_densities(model: GPT) -> dict:
    """Mean density (kept fraction) of the q/k/v, attention-output and MLP matrices, from masks."""
    masks = {name: mask for name, _, mask in masked_parameters(model)}
    out = {}
    for key, suffixes in SPARSIFIABLE.items():
        suffixes = (suffixes,) if isinstance(suffixes, str) else suffixes
        kept = total = 0
        for name, p in model.named_parameters():
            if (name.startswith("transformer.h.")
                and name.endswith(tuple(s + ".weight" for s in suffixes))):
                m = masks.get(name)
                kept += int(m.sum()) if m is not None else p.numel()
                total += p.numel()
        out[key] = kept / total
    return out


def weight_matmul_flops(cfg: GPTConfig, seq_len: int, batch_size: int = 1) -> int:
    """Forward FLOPs of the matmuls that involve a weight (q/k/v, attention out, MLP, LM head).

    This is what ``torch.utils.flop_counter.FlopCounterMode`` sees as the ``addmm``/``mm``
    operations of a dense forward pass; the attention matmuls between activations are separate.
    """
    comps = _components(cfg, seq_len, {k: 1.0 for k in SPARSIFIABLE}, False)
    return batch_size * sum(comps[k]["dense"] for k in ("qkv", "attn_out", "mlp", "logits"))


def flop_table(presets=("gpt2", "gpt3-xl"), sparsities=(0.0, 0.5, 0.75, 0.9), seq_len=None,
               count_embedding=False) -> list[dict]:
    """Rows of {preset, sparsity, train FLOPs per sequence (dense, sparse), reduction}."""
    rows = []
    for preset in presets:
        for s in sparsities:
            r = flop_report(preset, sparsity=s, seq_len=seq_len, count_embedding=count_embedding)
            rows.append(dict(preset=preset, seq_len=r.seq_len, sparsity=s,
                             train_dense=r.train_dense,
                             train_sparse=r.train_sparse, reduction=r.reduction))
    return rows


@dataclass
class FlopsConfig(Settings):
    """FLOP count."""
    seq_len: int | None = setting(None, "sequence length (default: the context length)", min=1)
    count_embedding: bool = setting(False, "count the embedding lookup as 2*T*V*d (Chinchilla)")
    table: bool = setting(False,
                          "print the reduction for the paper's models and sparsities instead")
    max_steps: int | None = setting(
        None, "also sum the training FLOPs of a pre-training run of this many steps "
                                          "(pretrain's --max_steps) under --schedule, step by step",
                                    metavar="N", min=1,
                                  max=MAX_STEPS, hint=STEPS_HINT)
    batch_size: int = setting(12, "with --max_steps: sequences per step (pretrain's --batch_size)",
                              min=1)


def pretraining_flops(schedule, config, batch_size: int, seq_len: int | None = None,
                      max_steps: int | None = None) -> dict:
    """Training FLOPs of a pre-training run under a mask ``schedule`` (a
    :class:`minispdf.schedules.MaskSchedule`; None: dense), summed step by step at each step's
    nominal density, with RigL's dense weight gradient on its update steps. Returns
    ``{"flops", "flops_dense", "ratio"}`` (dense over this schedule's)."""
    steps = schedule.max_steps if schedule is not None else max_steps
    dense = flop_report(config, sparsity=0.0, seq_len=seq_len)
    T = dense.seq_len
    per_seq: dict[float, float] = {}
    total = 0.0
    for step in range(1, steps + 1):
        d = schedule.density_at(step) if schedule is not None else 1.0
        if d not in per_seq:
            per_seq[d] = flop_report(config, sparsity=1.0 - d, seq_len=T).forward_sparse
        fwd = per_seq[d]
        total += (3 * fwd + (dense.forward_dense - fwd
                             if schedule and schedule.reads_dense_gradient_at(step) else 0))
    total *= batch_size
    flops_dense = steps * batch_size * dense.train_dense
    return {"flops": total, "flops_dense": flops_dense, "ratio": flops_dense / total}
