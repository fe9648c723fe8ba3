"""The whole GPT in one file: GPT-2 architecture, with the places a sparsity mask acts marked.

Architecture (GPT-2, as in the SPDF paper): token + learned position embeddings, ``n_layer``
pre-LayerNorm blocks of causal self-attention and a GELU MLP, a final LayerNorm, and an LM head
that shares its weight with the token embedding. Init: std 0.02 everywhere, 0.02/sqrt(2*n_layer)
on the two residual output projections of every block.

Where the mask acts: the four weight matrices of every block -- the fused q/k/v projection
``attn.c_attn``, the attention output ``attn.c_proj``, and the MLP's ``mlp.c_fc`` and
``mlp.c_proj`` -- are :class:`MaskedLinear` layers. Sparse pre-training gives each of them a
fixed boolean ``weight_mask`` (see ``minispdf.sparsity``). Everything else (embeddings, the LM
head, LayerNorms, biases) stays dense, as in the paper.

Decoding: :meth:`GPT.decode_step` with a :class:`KVCache` feeds each token through the network
once, keeping every layer's keys and values (used by ``minispdf.evaluate``).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields

import torch
import torch.nn as nn
from torch.nn import functional as F

from .settings import Settings, setting
from .errors import MiniSPDFError


@dataclass
class GPTConfig(Settings):
    """The architecture: a preset's values, any of which a run may change."""
    block_size: int = setting(64, "context length T (tokens)", min=1)
    vocab_size: int = setting(257,
                              "vocabulary: 257 is the byte-level char tokenizer, 50257 GPT-2's BPE",
                              min=1)
    n_layer: int = setting(4, "transformer blocks", min=1)
    n_head: int = setting(4, "attention heads per block", min=1)
    n_embd: int = setting(128, "width of the residual stream (a multiple of n_head)", min=1)
    dropout: float = setting(0.0, "dropout probability", min=0, below=1)
    bias: bool = setting(True, "biases in Linear layers and LayerNorms, as GPT-2")

    def __post_init__(self):
        super().__post_init__()  # the bounds above
        if self.n_embd % self.n_head:
            raise MiniSPDFError(
                f"n_embd={self.n_embd} is not divisible by n_head={self.n_head}: "
                "choose n_embd as a multiple of n_head"
            )

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "GPTConfig":
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})


# Named model sizes. "tiny" is nanoGPT's CPU configuration with a byte-level vocabulary; gpt2
# and gpt3-xl are the paper's models (the large ones are mostly for FLOP accounting on a CPU).
PRESETS: dict[str, dict] = {
    "nano": dict(n_layer=2, n_head=2, n_embd=64, block_size=64, vocab_size=257),  # ~0.1M
    "tiny": dict(n_layer=4, n_head=4, n_embd=128, block_size=64, vocab_size=257),  # ~0.8M
    "mini": dict(n_layer=6, n_head=6, n_embd=192, block_size=128, vocab_size=257),  # ~2.7M
    "small": dict(n_layer=8, n_head=8, n_embd=320, block_size=256, vocab_size=257),  # ~9.9M
    "gpt2": dict(n_layer=12, n_head=12, n_embd=768, block_size=1024, vocab_size=50257),  # 124M
    "gpt2-medium": dict(n_layer=24, n_head=16, n_embd=1024, block_size=1024, vocab_size=50257),
    "gpt3-xl": dict(n_layer=24, n_head=16, n_embd=2048, block_size=2048, vocab_size=50257),  # 1.3B
    "gpt3-6.7b": dict(n_layer=32, n_head=32, n_embd=4096, block_size=2048, vocab_size=50257),
}


# Presets with OpenAI weights on the Hugging Face hub (``GPT.from_pretrained``).
PRETRAINED = ("gpt2", "gpt2-medium")


def preset_config(name: str, **overrides) -> GPTConfig:
    if name not in PRESETS:
        raise MiniSPDFError(f"unknown preset {name!r}: choose one of {', '.join(PRESETS)}")
    return GPTConfig(**{**PRESETS[name], **overrides})


class MaskedLinear(nn.Linear):
    """A Linear layer that can hold a fixed unstructured sparsity mask.

    ``weight_mask`` is ``None`` (dense) or a bool tensor shaped like ``weight``: True = kept.
    The forward pass is an ordinary dense matmul: the pruned weights are *stored* as exact
    zeros, and the mask's hooks keep them there under any training loop (see
    ``minispdf.sparsity``). So a mask costs one
    byte per weight and no second copy of the weights, and -- on dense hardware -- no speed-up
    either: the matmul still multiplies the zeros.
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True):
        super().__init__(in_features, out_features, bias=bias)
        self.register_buffer("weight_mask", None)

    def extra_repr(self) -> str:
        s = super().extra_repr()
        if self.weight_mask is not None:
            density = self.weight_mask.float().mean().item()
            s += f", sparsity={1 - density:.2f}"
        return s


class CausalSelfAttention(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        self.n_head = config.n_head
        self.dropout = config.dropout
        self.c_attn = MaskedLinear(config.n_embd, 3 * config.n_embd, bias=config.bias)  # q, k, v
        self.c_proj = MaskedLinear(config.n_embd, config.n_embd, bias=config.bias)  # output
        self.resid_dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor, cache=None, layer: int = 0, attn_mask=None) -> torch.Tensor:
        B, T, C = x.shape
        q, k, v = self.c_attn(x).split(C, dim=2)
        # (B, T, C) -> (B, heads, T, head_size)
        q, k, v = (t.view(B, T, self.n_head, C // self.n_head).transpose(1, 2) for t in (q, k, v))
        if cache is None:
            y = F.scaled_dot_product_attention(
                q, k, v, is_causal=True, dropout_p=self.dropout if self.training else 0.0
            )
        else:  # decoding (GPT.decode_step): store the new keys/values, attend to all of them so far
            start, end = cache.length, cache.length + T
            cache.kv[layer, 0, :, :, start:end] = k
            cache.kv[layer, 1, :, :, start:end] = v
            k, v = cache.kv[layer, 0, :, :, :end], cache.kv[layer, 1, :, :, :end]
            # written out: on a CPU this beats the fused kernel for one query at a time
            att = (q @ k.transpose(-2, -1)) / math.sqrt(k.size(-1))
            y = att.masked_fill(~attn_mask, float("-inf")).softmax(dim=-1) @ v
        y = y.transpose(1, 2).contiguous().view(B, T, C)
        return self.resid_dropout(self.c_proj(y))


class MLP(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        self.c_fc = MaskedLinear(config.n_embd, 4 * config.n_embd, bias=config.bias)
        self.c_proj = MaskedLinear(4 * config.n_embd, config.n_embd, bias=config.bias)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.c_proj(F.gelu(self.c_fc(x))))


class Block(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        self.ln_1 = nn.LayerNorm(config.n_embd, bias=config.bias)
        self.attn = CausalSelfAttention(config)
        self.ln_2 = nn.LayerNorm(config.n_embd, bias=config.bias)
        self.mlp = MLP(config)

    def forward(self, x: torch.Tensor, cache=None, layer: int = 0, attn_mask=None) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x), cache, layer, attn_mask)
        return x + self.mlp(self.ln_2(x))


class KVCache:
    """The keys and values of every position fed so far, so decoding feeds each token only once.

    One preallocated tensor ``kv`` of shape (n_layer, 2, B, n_head, max_len, head_size); the first
    ``length`` positions are filled. ``reorder(rows)`` keeps (or repeats) rows of the batch: beam
    search re-picks its beams, batched decoding drops finished rows.
    """

    def __init__(self, config: GPTConfig, batch_size: int, max_len: int, device=None, dtype=None):
        head_size = config.n_embd // config.n_head
        self.kv = torch.zeros(config.n_layer, 2, batch_size, config.n_head, max_len, head_size,
                              device=device, dtype=dtype)
        self.length = 0

    def reorder(self, rows) -> None:
        self.kv = self.kv[:, :, torch.as_tensor(rows, device=self.kv.device)]


class GPT(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        self.config = config
        self.transformer = nn.ModuleDict(
            dict(
                wte=nn.Embedding(config.vocab_size, config.n_embd),
                wpe=nn.Embedding(config.block_size, config.n_embd),
                drop=nn.Dropout(config.dropout),
                h=nn.ModuleList([Block(config) for _ in range(config.n_layer)]),
                ln_f=nn.LayerNorm(config.n_embd, bias=config.bias),
            )
        )
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        self.transformer.wte.weight = self.lm_head.weight  # tied input/output embedding
        self.apply(self._init_weights)
        residual_std = 0.02 / math.sqrt(2 * config.n_layer)
        for name, p in self.named_parameters():
            if name.endswith("c_proj.weight"):
                nn.init.normal_(p, mean=0.0, std=residual_std)

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)

    def num_params(self, non_embedding: bool = False) -> int:
        """Parameters counted once (the tied head is the token embedding)."""
        n = sum(p.numel() for p in self.parameters())
        if non_embedding:
            n -= self.transformer.wpe.weight.numel() + self.transformer.wte.weight.numel()
        return n

    def forward(self, idx, targets=None, loss_mask=None):
        """Logits for ``idx`` (B, T); with ``targets`` also the mean cross-entropy.

        ``loss_mask`` (B, T, bool) restricts the loss to some positions (fine-tuning counts only
        the target tokens). Without targets only the last position's logits are computed.
        """
        B, T = idx.shape
        if T > self.config.block_size:
            raise MiniSPDFError(
                f"sequence of {T} tokens is longer than the context "
                f"block_size={self.config.block_size}"
            )
        pos = torch.arange(T, dtype=torch.long, device=idx.device)
        x = self.transformer.drop(self.transformer.wte(idx) + self.transformer.wpe(pos))
        for block in self.transformer.h:
            x = block(x)
        x = self.transformer.ln_f(x)
        if targets is None:
            return self.lm_head(x[:, [-1], :]), None
        logits = self.lm_head(x)
        if loss_mask is None:
            loss = F.cross_entropy(logits.reshape(-1, logits.size(-1)), targets.reshape(-1),
                                   ignore_index=-1)
        else:
            per_token = F.cross_entropy(
                logits.reshape(-1, logits.size(-1)), targets.reshape(-1), reduction="none"
            )
            m = loss_mask.reshape(-1).to(per_token.dtype)
            loss = (per_token * m).sum() / m.sum().clamp_min(1.0)
        return logits, loss

    @torch.no_grad()
    def decode_step(self, idx, cache: KVCache, pos=None, attn_mask=None):
        """Logits (B, vocab) of the token after ``idx`` (B, T), using and extending ``cache``.

        Feed the prompt once, then one new token per call. ``pos`` (B, T) are position ids and
        ``attn_mask`` (B, 1, T, cache.length + T) says which cached positions each new token may
        see (True = may); the defaults are ``cache.length + 0..T-1`` and causal. Per-row ``pos``
        and a mask let prompts of different lengths share a batch (see ``minispdf.evaluate``).
        """
        B, T = idx.shape
        end = cache.length + T
        if pos is None:
            pos = torch.arange(cache.length, end, device=idx.device).expand(B, T)
        if end > cache.kv.size(4) or int(pos.max()) >= self.config.block_size:
            raise MiniSPDFError(
                f"decoding past the context block_size={self.config.block_size}: stop earlier")
        if attn_mask is None:
            attn_mask = torch.ones(T, end, dtype=torch.bool,
                                   device=idx.device).tril(diagonal=cache.length)
        x = self.transformer.wte(idx) + self.transformer.wpe(pos)
        for layer, block in enumerate(self.transformer.h):
            x = block(x, cache, layer, attn_mask)
        cache.length = end
        return self.lm_head(self.transformer.ln_f(x[:, -1, :]))

    @torch.no_grad()
    def generate(self, idx, max_new_tokens: int, temperature: float = 1.0, top_k=None,
                 eot_id=None, generator=None):
        """Sample ``max_new_tokens`` tokens after ``idx`` (B, T). temperature=0 means greedy.

        Stops early when every row has produced ``eot_id``. A prompt longer than the context is
        an error rather than a silent crop.
        """
        if idx.size(1) > self.config.block_size:
            raise MiniSPDFError(
                f"prompt is {idx.size(1)} tokens but the context is {self.config.block_size}: "
                "shorten the prompt or use a model with a larger block_size"
            )
        done = torch.zeros(idx.size(0), dtype=torch.bool, device=idx.device)
        for _ in range(max_new_tokens):
            idx_cond = idx[:, -self.config.block_size:]
            logits, _ = self(idx_cond)
            logits = logits[:, -1, :]
            if not torch.isfinite(logits).all():
                raise MiniSPDFError("the model's logits are not finite (NaN/inf weights?): the "
                                    "checkpoint is "
                                    "damaged or training diverged; use another checkpoint")
            # 0 means greedy; so does a temperature too small for fp32 division
            if temperature < 1e-6:
                nxt = logits.argmax(dim=-1, keepdim=True)
            else:
                logits = logits / temperature
                if top_k is not None:
                    v, _ = torch.topk(logits, min(top_k, logits.size(-1)))
                    logits[logits < v[:, [-1]]] = -float("inf")
                probs = F.softmax(logits, dim=-1)
                nxt = torch.multinomial(probs, num_samples=1, generator=generator)
            if eot_id is not None:
                nxt = torch.where(done[:, None], torch.full_like(nxt, eot_id), nxt)
                done |= nxt[:, 0] == eot_id
            idx = torch.cat((idx, nxt), dim=1)
            if eot_id is not None and bool(done.all()):
                break
        return idx

    @classmethod
    def from_pretrained(cls, name: str = "gpt2") -> "GPT":
        """OpenAI's GPT-2 weights from the Hugging Face hub (needs ``transformers`` and a
        network)."""
        hf_names = {k: k for k in PRETRAINED}
        if name not in hf_names:
            raise MiniSPDFError(
                f"no pretrained weights for {name!r}: choose one of {', '.join(hf_names)}")
        try:
            from transformers import GPT2LMHeadModel
        except ImportError:
            raise MiniSPDFError(
                "loading OpenAI GPT-2 weights needs the transformers package: pip install "
                "transformers"
            ) from None
        try:
            hf = GPT2LMHeadModel.from_pretrained(hf_names[name])
        except Exception as e:  # offline, or hub refused
            raise MiniSPDFError(
                f"could not load {name} from the Hugging Face hub ({type(e).__name__}): "
                "go online once so it is cached, or train from scratch with --preset"
            ) from None
        model = cls(preset_config(name))
        sd, hf_sd = model.state_dict(), hf.state_dict()
        # OpenAI's checkpoints use Conv1D (weight stored as in x out): transpose those to Linear.
        transposed = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight",
                      "mlp.c_proj.weight")
        with torch.no_grad():
            for k, v in hf_sd.items():
                if k not in sd:  # HF's causal-mask buffers (attn.bias, attn.masked_bias)
                    continue
                sd[k].copy_(v.t() if k.endswith(transposed) else v)
        return model
