"""Adapter for ``GPTNeoXForCausalLM`` (Pythia, GPT-NeoX): parallel residual, partial rotary,
LayerNorm with biases, fused qkv projection, GELU MLP.

Rules (``PAPERS.md`` terms):

* **parallel residual** ``x + attn(ln1(x)) + mlp(ln2(x))``: a sum, which the plain gradient splits
  in proportion to its summands (epsilon rule, eps = 0); ``layers[l]`` is the relevance of that
  sum.  The sequential variant (``use_parallel_residual=False``) runs the same way.
* **partial rotary** (``rotary_pct`` / ``partial_rotary_factor``): RoPE rotates the first
  ``rotary_ndims`` features of each head; under PA-LRP only that share gets the rotation products'
  uniform rule, so position relevance comes from the rotated share (``ops.Session.rotary_dims``).
* LayerNorm: LN-rule (std constant, mean live) where the method holds norms constant; GELU: identity
  rule under AttnLRP / CP-LRP; the fused qkv projection is one linear map (plain gradient).
"""
from __future__ import annotations

import torch

from .decoders import DecoderAdapter


class GPTNeoXAdapter(DecoderAdapter):
    name = "gpt_neox"

    @property
    def base(self):
        return self.model.gpt_neox

    @property
    def word_embeddings(self):
        return self.base.embed_in

    @property
    def final_norm(self):
        return self.base.final_layer_norm

    def latent_modules(self):
        return [(b.attention.dense, b.mlp.dense_4h_to_h) for b in self.blocks]

    @property
    def rotary_dims(self):
        attn = self.blocks[0].attention
        return attn.rotary_ndims if attn.rotary_ndims < attn.head_size else None

    def window(self, index):
        return None

    def combine(self, parts):
        return self.base.emb_dropout(parts["tokens"])

    def norm_modules(self):
        return [m for m in self.all_modules if isinstance(m, torch.nn.LayerNorm)]

    def activation_modules(self):
        return [b.mlp.act for b in self.blocks]

    def gate_modules(self):
        return []
