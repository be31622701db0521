"""A small, readable transformer for experiments and exactness tests.

Every operation that needs an LRP rule goes through :mod:`lrp_utils.ops`, so the same model runs
plain PyTorch outside an explanation and carries the active method's rules inside one.  Configure it
with :class:`TinyConfig`; it runs in float64 with ``model.double()``.

Shapes: ``input_ids [B, S]``, ``attention_mask [B, S]`` (1 = token, 0 = padding), hidden states
``[B, S, d_model]``; ``forward`` returns ``[B, n_classes]`` (``task="classify"``) or
``[B, S, vocab_size]`` (``task="causal"``).
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from .. import masks, ops


@dataclass
class TinyConfig:
    """Architecture of a :class:`TinyTransformer` (every choice the tests sweep over)."""

    vocab_size: int = 64
    d_model: int = 32
    n_layers: int = 2
    n_heads: int = 4
    n_kv_heads: int | None = None  # grouped-query attention when < n_heads
    d_ff: int = 64
    max_len: int = 128
    task: str = "classify"  # "classify" (encoder + readout) or "causal" (next token)
    n_classes: int = 2
    readout: str = "cls"  # "cls" (position 0) or "mean" (over non-padding positions)
    attention: str = "softmax"  # "softmax" or "linear"
    order: str = "(qk)v"  # linear attention association order: "(qk)v" or "q(kv)"
    feature_map: str = "identity"  # linear attention: "identity" or "elu1"
    normalize: bool = False  # linear attention: divide by phi(q) . sum phi(k)
    position: str = "learned"  # "none", "learned", "sinusoidal" or "rotary"
    norm: str = "layernorm"  # "layernorm", "rmsnorm" or "none"
    mlp: str = "gelu"  # "gelu", "swiglu" or "none"
    bias: bool = True
    init_std: float = 0.02
    rope_theta: float = 10000.0
    extra: dict = field(default_factory=dict)

    def __post_init__(self):
        _check_choice("task", self.task, ("classify", "causal"))
        _check_choice("readout", self.readout, ("cls", "mean"))
        _check_choice("attention", self.attention, ("softmax", "linear"))
        _check_choice("order", self.order, ("(qk)v", "q(kv)"))
        _check_choice("feature_map", self.feature_map, ("identity", "elu1"))
        _check_choice("position", self.position, ("none", "learned", "sinusoidal", "rotary"))
        _check_choice("norm", self.norm, ("layernorm", "rmsnorm", "none"))
        _check_choice("mlp", self.mlp, ("gelu", "swiglu", "none"))
        kv = self.n_kv_heads or self.n_heads
        if self.d_model % self.n_heads or self.n_heads % kv:
            raise ValueError("d_model must be divisible by n_heads, and n_heads by n_kv_heads")

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_heads


def _check_choice(name, value, valid):
    if value not in valid:
        raise ValueError(f"TinyConfig.{name}={value!r} is not one of {valid}")


@dataclass
class Mask:
    """Who may read whom: ``key_keep [B, S]`` (False = padding), ``causal``, and an optional extra
    boolean ``keep [B, 1, Sq, S]`` (True = query i may read key j), used by leave-one-out, whose
    passes over some positions only set ``queries [B, Sq]`` (the positions of the query rows; the
    softmax attention then attends to keys its session supplies, see ``ops.key_values``)."""

    key_keep: torch.Tensor
    causal: bool = False
    keep: torch.Tensor | None = None
    queries: torch.Tensor | None = None

    def dense(self) -> torch.Tensor:
        """The full boolean mask ``[B, 1, Sq, S]`` (``Sq = S`` unless ``queries`` is set)."""
        return masks.dense_keep(self.key_keep, self.causal, self.keep, self.queries)


class Norm(nn.Module):
    """LayerNorm / RMSNorm / identity through the rule-aware ops."""

    def __init__(self, cfg: TinyConfig):
        super().__init__()
        self.kind = cfg.norm
        self.weight = nn.Parameter(torch.ones(cfg.d_model)) if cfg.norm != "none" else None
        use_bias = cfg.bias and cfg.norm == "layernorm"
        self.bias = nn.Parameter(torch.zeros(cfg.d_model)) if use_bias else None

    def forward(self, x):
        if self.kind == "layernorm":
            return ops.layer_norm(x, self.weight, self.bias)
        if self.kind == "rmsnorm":
            return ops.rms_norm(x, self.weight)
        return x


class Attention(nn.Module):
    def __init__(self, cfg: TinyConfig):
        super().__init__()
        self.cfg = cfg
        kv = cfg.n_kv_heads or cfg.n_heads
        self.q = nn.Linear(cfg.d_model, cfg.n_heads * cfg.head_dim, bias=cfg.bias)
        self.k = nn.Linear(cfg.d_model, kv * cfg.head_dim, bias=cfg.bias)
        self.v = nn.Linear(cfg.d_model, kv * cfg.head_dim, bias=cfg.bias)
        self.o = nn.Linear(cfg.d_model, cfg.d_model, bias=cfg.bias)
        self.n_rep = cfg.n_heads // kv

    def forward(self, x, mask: Mask, rope=None):
        B, S, _ = x.shape
        heads = lambda t: t.view(B, S, -1, self.cfg.head_dim).transpose(1, 2)  # noqa: E731
        q, k, v = heads(self.q(x)), heads(self.k(x)), heads(self.v(x))
        if rope is not None:
            q, k = ops.rope(q, *rope), ops.rope(k, *rope)
        c = self.cfg
        if c.attention == "softmax":
            out, _ = ops.softmax_attention(q, k, v, mask.dense(), n_rep=self.n_rep, module=self)
        else:
            out = ops.linear_attention(q, k, v, mask.key_keep, mask.causal, mask.keep, c.order,
                                       c.feature_map, c.normalize, n_rep=self.n_rep)
        return self.o(out.transpose(1, 2).reshape(B, S, -1))


class MLP(nn.Module):
    def __init__(self, cfg: TinyConfig):
        super().__init__()
        self.kind = cfg.mlp
        self.up = nn.Linear(cfg.d_model, cfg.d_ff, bias=cfg.bias)
        self.gate = nn.Linear(cfg.d_model, cfg.d_ff, bias=cfg.bias) if cfg.mlp == "swiglu" else None
        self.down = nn.Linear(cfg.d_ff, cfg.d_model, bias=cfg.bias)

    def forward(self, x):
        if self.kind == "swiglu":
            return self.down(ops.gated(F.silu, self.gate(x), self.up(x)))
        return self.down(ops.activation(F.gelu, self.up(x)))


class Block(nn.Module):
    """Pre-norm block: ``h + attn(norm(h))`` then ``h + mlp(norm(h))``."""

    def __init__(self, cfg: TinyConfig):
        super().__init__()
        self.norm1, self.attn = Norm(cfg), Attention(cfg)
        self.norm2 = Norm(cfg) if cfg.mlp != "none" else None
        self.mlp = MLP(cfg) if cfg.mlp != "none" else None

    def forward(self, h, mask: Mask, rope=None):
        h = h + self.attn(self.norm1(h), mask, rope)
        return h + self.mlp(self.norm2(h)) if self.mlp is not None else h


class TinyTransformer(nn.Module):
    """Encoder classifier or causal decoder built from :mod:`lrp_utils.ops` (see module doc)."""

    def __init__(self, config: TinyConfig | None = None, **kwargs):
        super().__init__()
        self.config = cfg = config or TinyConfig(**kwargs)
        self.tok_emb = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.pos_emb = nn.Embedding(cfg.max_len, cfg.d_model) if cfg.position == "learned" else None
        if cfg.position == "sinusoidal":
            self.register_buffer("sinusoid", sinusoidal_table(cfg.max_len, cfg.d_model), persistent=False)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layers))
        self.norm_f = Norm(cfg)
        n_out = cfg.n_classes if cfg.task == "classify" else cfg.vocab_size
        self.head = nn.Linear(cfg.d_model, n_out, bias=cfg.bias)
        self.reset_parameters(cfg.init_std)

    def reset_parameters(self, std: float, seed: int | None = None):
        """Re-draw all weights from N(0, std) (norm weights 1, biases N(0, std/10)); returns self."""
        gen = torch.Generator().manual_seed(seed) if seed is not None else None
        for name, p in self.named_parameters():
            with torch.no_grad():
                if "norm" in name and name.endswith("weight"):
                    p.fill_(1.0)
                else:
                    scale = std / 10 if name.endswith("bias") else std
                    p.copy_(torch.randn(p.shape, generator=gen, dtype=p.dtype) * scale)
        return self

    # -- the pieces the adapter and leave-one-out use -------------------------------------------
    def embed_parts(self, input_ids, position_ids):
        """``{"tokens": [B, S, D], "positions": [B, S, D] or None}``; ``h0`` is their sum."""
        pos = None
        if self.pos_emb is not None:
            pos = self.pos_emb(position_ids)
        elif self.config.position == "sinusoidal":
            pos = self.sinusoid[position_ids].to(self.tok_emb.weight.dtype)
        return {"tokens": self.tok_emb(input_ids), "positions": pos}

    def rope_tables(self, position_ids, dtype):
        """``(cos, sin)`` each ``[B, S, head_dim]`` for rotary models, else None."""
        if self.config.position != "rotary":
            return None
        return rope_tables(position_ids, self.config.head_dim, self.config.rope_theta, dtype)

    def make_mask(self, attention_mask) -> Mask:
        return Mask(attention_mask.bool(), causal=self.config.task == "causal")

    def readout(self, h, attention_mask, keep=None):
        """Logits ``[B, n_out]`` of the read-out position (classify: [CLS], the first token of each
        row whichever side the padding is on, or the masked mean over ``attention_mask & keep``;
        causal: the last token)."""
        h = self.norm_f(h)
        rows = torch.arange(h.shape[0], device=h.device)
        if self.config.task == "causal":
            return self.head(h[rows, masks.last_positions(attention_mask)])
        if self.config.readout == "cls":
            return self.head(h[rows, masks.first_positions(attention_mask)])
        w = attention_mask.to(h.dtype) if keep is None else (attention_mask.bool() & keep).to(h.dtype)
        return self.head((h * w[..., None]).sum(1) / w.sum(1, keepdim=True))

    def forward(self, input_ids, attention_mask=None, position_ids=None):
        """Plain forward: ``[B, n_classes]`` (classify) or ``[B, S, vocab]`` (causal)."""
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        if position_ids is None:
            position_ids = masks.position_ids(attention_mask)
        parts = self.embed_parts(input_ids, position_ids)
        h = parts["tokens"] + (parts["positions"] if parts["positions"] is not None else 0)
        mask, rope = self.make_mask(attention_mask), self.rope_tables(position_ids, h.dtype)
        for block in self.blocks:
            h = block(h, mask, rope)
        if self.config.task == "causal":
            return self.head(self.norm_f(h))
        return self.readout(h, attention_mask)

    def to_dict(self) -> dict:
        return asdict(self.config)


def sinusoidal_table(n: int, d: int) -> torch.Tensor:
    """Fixed sinusoidal position table ``[n, d]`` (Vaswani et al. 2017)."""
    pos = torch.arange(n, dtype=torch.float64)[:, None]
    freq = torch.exp(-math.log(10000.0) * torch.arange(0, d, 2, dtype=torch.float64) / d)
    table = torch.zeros(n, d, dtype=torch.float64)
    table[:, 0::2] = torch.sin(pos * freq)
    table[:, 1::2] = torch.cos(pos * freq[: d // 2])
    return table


def rope_tables(position_ids, head_dim: int, theta: float, dtype):
    """RoPE ``(cos, sin)`` ``[B, S, head_dim]`` in the LLaMA (half-split) convention."""
    inv = 1.0 / theta ** (torch.arange(0, head_dim, 2, dtype=torch.float64) / head_dim)
    ang = position_ids[..., None].to(torch.float64) * inv
    ang = torch.cat((ang, ang), dim=-1)
    return ang.cos().to(dtype), ang.sin().to(dtype)
