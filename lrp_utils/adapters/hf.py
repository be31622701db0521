"""Shared plumbing for Hugging Face ``transformers`` models.

Attention of HF models (transformers 5) is dispatched by name through ``AttentionInterface``.  We
register one extra name, ``"lrp_utils"``, whose function is
:func:`lrp_utils.ops.softmax_attention`, and switch a model's configs to it only for the duration
of a call (:meth:`HFAdapter.attention_function`); the previous names are always restored.  The
registration itself only adds a key and changes no other model.
"""
from __future__ import annotations

import contextlib

import torch
from transformers import AttentionInterface

from .. import ops
from .base import ATTN_KEY, Adapter, additive_mask, dense_keep, last_positions


def _attention(module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kwargs):
    """Drop-in for HF ``eager_attention_forward``: ``q [B,H,S,D]``, ``k, v [B,Hkv,S,D]`` ->
    ``(out [B,S,H,D], probs)``; dropout is ignored (explanations run in eval mode)."""
    n_rep = getattr(module, "num_key_value_groups", 1)
    out, probs = ops.softmax_attention(query, key, value, attention_mask, scaling, n_rep)
    return out.transpose(1, 2).contiguous(), probs


AttentionInterface.register(ATTN_KEY, _attention)


class HFAdapter(Adapter):
    """Common parts of the BERT, GPT-2 and LLaMA adapters."""

    causal = False

    def mask(self, ctx, keep=None) -> torch.Tensor:
        """Additive ``[B, 1, S, S]`` mask in the model dtype (padding, causality, extra keep)."""
        return additive_mask(dense_keep(ctx.attention_mask, self.causal, keep), self.dtype)

    def _configs(self):
        seen = {}
        for m in self.all_modules:
            cfg = getattr(m, "config", None)
            if cfg is not None and hasattr(cfg, "_attn_implementation"):
                seen[id(cfg)] = cfg
        return list(seen.values())

    @contextlib.contextmanager
    def attention_function(self):
        configs = self._configs()
        saved = [c._attn_implementation_internal for c in configs]
        try:
            for c in configs:
                c._attn_implementation_internal = ATTN_KEY
            yield
        finally:
            for c, s in zip(configs, saved):
                c._attn_implementation_internal = s

    def norm_params(self, module):
        if isinstance(module, torch.nn.LayerNorm):
            return module.weight, module.eps, True
        return module.weight, getattr(module, "variance_epsilon", getattr(module, "eps", 1e-6)), False

    def gather_last(self, h, ctx) -> torch.Tensor:
        """``[B, S, D] -> [B, D]`` at the last non-padding position."""
        return h[torch.arange(h.shape[0], device=h.device), last_positions(ctx.attention_mask)]
