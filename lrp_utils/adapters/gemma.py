"""Adapters for ``Gemma2ForCausalLM`` and ``Gemma3ForCausalLM`` (text).

Gemma's extra operations and their rules (``PAPERS.md`` terms):

* **embedding scale** ``sqrt(d)`` (inside ``embed_tokens``): linear, plain gradient.  ``tokens`` is
  the relevance of the *scaled* embedding, the input of block 1.
* **RMSNorm with (1 + w)**: the weight ``1 + w`` is a constant factor (linear); the rms is held
  constant where the method holds norms constant (LN-rule, ``ops.norm_out`` with weight ``1 + w``).
* **pre / post-block norms** (``input_layernorm``, ``post_attention_layernorm``,
  ``pre_feedforward_layernorm``, ``post_feedforward_layernorm``) and Gemma 3's per-head **q/k
  norms**: all RMSNorms, same rule.
* **GELU-tanh gate** ``gelu_tanh(gate) * up``: the gated-MLP rules (``ops.gate_*``).
* **soft-capping** ``c * tanh(x / c)`` of the final logits and (Gemma 2) of the attention scores:
  an element-wise nonlinearity, routed through ``ops.act_out``: identity rule under AttnLRP and
  CP-LRP (the relevance of the capped value passes unchanged to the uncapped one), plain gradient
  under ``gi``.  Score capping under CP-LRP is moot (q and k get no relevance).
* **sliding-window layers**: masks, built by the adapter exactly as Hugging Face does (see
  :mod:`lrp_utils.adapters.decoders`).  Gemma 3 also gives sliding and full layers different RoPE
  bases: each block uses its own layer type's ``(cos, sin)`` (:meth:`GemmaAdapter.layer_rope`), and
  PA-LRP reads each block's position relevance from its own copy.

Gemma 2 has no ``sdpa`` path (soft-capping): Hugging Face runs it with eager attention, whose
softmax is taken in float32; the lrp_utils attention runs in the model's dtype.
"""
from __future__ import annotations

import torch

from .. import ops
from .decoders import DecoderAdapter


class GemmaAdapter(DecoderAdapter):
    """Gemma 2 / Gemma 3 text decoders (see the module docstring)."""

    name = "gemma"

    def check_inputs(self, input_ids, attention_mask):
        if getattr(self.config, "use_bidirectional_attention", False):
            raise TypeError("Gemma with use_bidirectional_attention=True is not supported (causal decoders only)")
        return super().check_inputs(input_ids, attention_mask)

    def norm_params(self, module):
        """``(1 + w, eps, False)``: Gemma's RMSNorm scales by ``1 + w``."""
        return 1.0 + module.weight, module.eps, False

    def readout(self, h, ctx, removed=None):
        return self.head_output(super().readout(h, ctx, removed))

    def head_output(self, logits):
        """Soft-capping ``c * tanh(logits / c)`` of the final logits (identity rule, see above)."""
        cap = getattr(self.config, "final_logit_softcapping", None)
        if cap is None:
            return logits
        return ops.act_out(logits, torch.tanh(logits / cap) * cap)


class Gemma2Adapter(GemmaAdapter):
    """``Gemma2ForCausalLM``: alternating sliding / full layers, score and logit soft-capping."""

    name = "gemma2"


class Gemma3Adapter(GemmaAdapter):
    """``Gemma3ForCausalLM``: per-head q/k RMSNorm, one RoPE base per layer type."""

    name = "gemma3"

    @property
    def _types(self) -> list[str]:
        return sorted(set(self.config.layer_types))

    @property
    def rotary_dims(self):
        return None  # Gemma 3 rotates whole heads (its rotary module keeps one table per layer type)

    def rope_tables(self, h, ctx):
        """``(cos_0, sin_0, cos_1, sin_1, ...)``, one pair per layer type (sorted by name)."""
        pairs = [self.base.rotary_emb(h, ctx.position_ids, t) for t in self._types]
        return tuple(t for pair in pairs for t in pair)

    def layer_rope(self, index, ctx):
        j = self._types.index(self.config.layer_types[index])
        return ctx.rope[2 * j], ctx.rope[2 * j + 1]
