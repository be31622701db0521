"""What the engine needs to know about an architecture, in one small class per model family.

An adapter runs a model as ``embed -> block 1 .. block L -> readout`` so that the engine can read
every residual stream and leave-one-out can restart from any layer.  It also says which modules
need a rule (norms, activations, gated products) and installs those rules, reversibly, for the
duration of an explanation.

Shapes: ``input_ids, attention_mask, position_ids [B, S]``; hidden states ``[B, S, D]``;
``keep [B, 1, S, S]`` boolean (True = query i may read key j), an extra mask used by LOO;
``readout`` returns ``[B, n_out]``.
"""
from __future__ import annotations

import contextlib
import functools
from dataclasses import dataclass

import torch
from torch import nn

from ..methods import Method
from ..rules import identity_on, norm_rule_on, scale_grad

ATTN_KEY = "lrp_utils"  # name of our attention function in transformers' AttentionInterface


@dataclass
class Context:
    """Per-batch tensors shared by all blocks: padding mask, position ids, RoPE tables."""

    attention_mask: torch.Tensor
    position_ids: torch.Tensor
    rope: tuple | None = None
    token_type_ids: torch.Tensor | None = None

    def select(self, index: torch.Tensor) -> "Context":
        """Rows ``index`` of every batched tensor (for LOO's expanded batches)."""
        pick = lambda t: t[index] if isinstance(t, torch.Tensor) else t  # noqa: E731
        rope = tuple(pick(t) for t in self.rope) if self.rope is not None else None
        return Context(pick(self.attention_mask), pick(self.position_ids), rope, pick(self.token_type_ids))


class Adapter:
    """Base class; subclasses fill in the architecture facts."""

    name = "base"
    task = "classify"  # "classify" or "causal"
    positions = None  # None, "additive" or "rotary"

    def __init__(self, model: nn.Module):
        self.model = model

    # -- architecture facts -------------------------------------------------------------------
    @functools.cached_property
    def all_modules(self) -> list[nn.Module]:
        """Every module of the model, scanned once per adapter (an adapter lives for one call)."""
        return list(self.model.modules())

    @property
    def blocks(self) -> list[nn.Module]:
        raise NotImplementedError

    @property
    def n_layers(self) -> int:
        return len(self.blocks)

    @property
    def word_embeddings(self) -> nn.Embedding:
        raise NotImplementedError

    @property
    def n_outputs(self) -> int:
        raise NotImplementedError

    @property
    def dtype(self) -> torch.dtype:
        return self.word_embeddings.weight.dtype

    @property
    def device(self) -> torch.device:
        return self.word_embeddings.weight.device

    def readout_positions(self, attention_mask: torch.Tensor) -> torch.Tensor:
        """Index ``[B]`` of the position whose state is read out (LOO gives it NaN)."""
        if self.task == "causal":
            return last_positions(attention_mask)
        return torch.zeros(attention_mask.shape[0], dtype=torch.long, device=attention_mask.device)

    # -- the forward pass in pieces -----------------------------------------------------------
    def prepare(self, input_ids, attention_mask) -> Context:
        position_ids = (attention_mask.long().cumsum(1) - 1).clamp(min=0)
        return Context(attention_mask, position_ids)

    def embed_parts(self, input_ids, ctx: Context) -> dict:
        """``{"tokens": [B,S,D], "positions": [B,S,D] | None, "types": [B,S,D] | None}``."""
        raise NotImplementedError

    def combine(self, parts: dict) -> torch.Tensor:
        """The input of block 1 from the embedding parts (default: their sum)."""
        h = parts["tokens"]
        for key in ("types", "positions"):
            if parts.get(key) is not None:
                h = h + parts[key]
        return h

    def block(self, index: int, h, ctx: Context, keep=None, rope=None) -> torch.Tensor:
        raise NotImplementedError

    def readout(self, h, ctx: Context, removed=None) -> torch.Tensor:
        """Logits ``[B, n_out]``; ``removed [B, S]`` marks positions LOO removed (only a mean
        read-out needs it)."""
        raise NotImplementedError

    def rope_tables(self, h, ctx: Context):
        """``(cos, sin)`` ``[B, S, head_dim]`` for rotary models, else None."""
        return None

    def forward(self, input_ids, attention_mask) -> torch.Tensor:
        """Read-out logits ``[B, n_out]`` through the pieces (equals the model's own output)."""
        ctx = self.prepare(input_ids, attention_mask)
        h = self.combine(self.embed_parts(input_ids, ctx))
        ctx.rope = self.rope_tables(h, ctx)
        for i in range(self.n_layers):
            h = self.block(i, h, ctx)
        return self.readout(h, ctx)

    # -- rules ----------------------------------------------------------------------------------
    def norm_modules(self) -> list[nn.Module]:
        return []

    def activation_modules(self) -> list[nn.Module]:
        return []

    def gate_modules(self) -> list[tuple[nn.Module, nn.Module]]:
        """``(activation of the gate, module that consumes act(gate) * up)`` pairs."""
        return []

    def norm_params(self, module) -> tuple:
        """``(weight | None, eps, center)`` of a norm module (``center``: LayerNorm, not RMSNorm)."""
        raise NotImplementedError

    @contextlib.contextmanager
    def rules(self, method: Method):
        """Install ``method``'s rules on the model's modules; always removes them on exit."""
        handles = []
        try:
            if method.norm == "const":
                handles += [m.register_forward_hook(self._norm_hook) for m in self.norm_modules()]
            if method.act == "identity":
                handles += [m.register_forward_hook(_identity_hook) for m in self.activation_modules()]
            for act, consumer in self.gate_modules():
                handles += _gate_hooks(method.gate, act, consumer)
            with self.attention_function():
                yield
        finally:
            for h in handles:
                h.remove()

    def _norm_hook(self, module, inputs, output):
        return norm_rule_on(inputs[0], output, *self.norm_params(module))

    @contextlib.contextmanager
    def attention_function(self):
        """Route attention through :func:`lrp_utils.ops.softmax_attention` (HF models)."""
        yield


def _identity_hook(module, inputs, output):
    return identity_on(inputs[0], output)


def _gate_hooks(rule: str, act: nn.Module, consumer: nn.Module) -> list:
    if rule == "uniform":
        return [act.register_forward_hook(_identity_hook),
                consumer.register_forward_pre_hook(lambda m, a: (scale_grad(a[0], 0.5), *a[1:]))]
    if rule == "const":
        return [act.register_forward_pre_hook(lambda m, a: (a[0].detach(), *a[1:]))]
    return []


def last_positions(attention_mask: torch.Tensor) -> torch.Tensor:
    """``[B]`` index of the last non-padding position (right or left padding)."""
    S = attention_mask.shape[1]
    return S - 1 - attention_mask.long().flip(1).argmax(1)


def additive_mask(keep: torch.Tensor, dtype) -> torch.Tensor:
    """Boolean ``keep`` -> additive float mask (0 where kept, ``finfo.min`` elsewhere)."""
    zero = torch.zeros((), dtype=dtype, device=keep.device)
    return torch.where(keep, zero, torch.finfo(dtype).min)


def dense_keep(attention_mask, causal: bool, keep=None) -> torch.Tensor:
    """Boolean ``[B, 1, S, S]``: key padding, causality and an optional extra ``keep``."""
    B, S = attention_mask.shape
    m = attention_mask.bool()[:, None, None, :].expand(B, 1, S, S)
    if causal:
        m = m & torch.ones(S, S, dtype=torch.bool, device=m.device).tril()
    return m & keep if keep is not None else m
