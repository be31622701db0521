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
from transformers.pytorch_utils import Conv1D

from .. import masks, ops
from .base import Adapter

ATTN_KEY = "lrp_utils"  # name of our attention function in transformers' AttentionInterface


def _attention(module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kwargs):
    """Drop-in for HF ``eager_attention_forward``: ``q [B,H,S,D]``, ``k, v [B,Hkv,S,D]`` ->
    ``(out [B,S,H,D], None)``; dropout is ignored (explanations run in eval mode); Gemma 2's
    ``softcap`` is passed on; a ``sliding_window`` is already in the mask the adapter built."""
    n_rep = getattr(module, "num_key_value_groups", 1)
    out, probs = ops.softmax_attention(query, key, value, attention_mask, scaling, n_rep, module=module,
                                       softcap=kwargs.get("softcap"))
    return out.transpose(1, 2).contiguous(), probs


AttentionInterface.register(ATTN_KEY, _attention)


class HFAdapter(Adapter):
    """Common parts of the Hugging Face adapters."""

    query_subsets = True  # position-wise blocks around the routed attention (see base.py)

    def decoder_head(self) -> None:
        """Decoder LMs and their classifiers: ``head`` is ``lm_head`` (next-token logits, task
        ``"causal"``) or ``score`` (class logits, task ``"classify"``)."""
        lm = hasattr(self.model, "lm_head")
        self.head = self.model.lm_head if lm else self.model.score
        self.task = "causal" if lm else "classify"

    def mask(self, ctx, keep=None, window: int | None = None) -> torch.Tensor:
        """Additive ``[B, 1, Sq, Sk]`` mask in the model dtype (padding, causality, extra keep, and a
        sliding ``window``, see :func:`lrp_utils.masks.sliding_window`) for the query positions
        ``ctx.queries`` (default all: ``Sq = Sk``); padding queries read themselves
        (:func:`lrp_utils.masks.padding_reads_itself`)."""
        S = ctx.attention_mask.shape[1]
        near = masks.sliding_window(S, window, ctx.attention_mask.device, ctx.queries)
        if near is not None:
            keep = near if keep is None else keep & near
        dense = masks.dense_keep(ctx.attention_mask, self.causal, keep, ctx.queries)
        return masks.additive(masks.padding_reads_itself(dense, ctx.attention_mask, ctx.queries), self.dtype)

    @property
    def config(self):
        return self.model.config

    @property
    def n_outputs(self):
        return self.config.num_labels if self.task == "classify" else self.config.vocab_size

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

    def biased_linears(self):
        return [m for m in self.all_modules if isinstance(m, (torch.nn.Linear, Conv1D)) and m.bias is not None]

    def gather(self, h, ctx) -> torch.Tensor:
        """``[B, S, D] -> [B, D]`` at the read-out position."""
        return h[torch.arange(h.shape[0], device=h.device), self.readout_positions(ctx.attention_mask)]
