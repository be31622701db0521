"""Adapter for ``GPT2LMHeadModel`` and ``GPT2ForSequenceClassification``: learned positions added
to the token embeddings, pre-LN blocks, final LayerNorm; next-token logits (LM head) or class
logits (``score`` head) at the last non-padding position."""
from __future__ import annotations

import torch

from .hf import HFAdapter


class GPT2Adapter(HFAdapter):
    name = "gpt2"
    causal = True
    positions = "additive"

    def __init__(self, model):
        super().__init__(model)
        self.decoder_head()

    @property
    def blocks(self):
        return list(self.model.transformer.h)

    @property
    def word_embeddings(self):
        return self.model.transformer.wte

    @property
    def max_positions(self):
        return self.config.n_positions

    @property
    def n_heads(self):
        return self.config.n_head

    def latent_modules(self):
        return [(b.attn.c_proj, b.mlp.c_proj) for b in self.blocks]  # Conv1D: x W + b

    def embed_parts(self, input_ids, ctx):
        t = self.model.transformer
        return {"tokens": t.wte(input_ids), "positions": t.wpe(ctx.position_ids)}

    def combine(self, parts):
        return self.model.transformer.drop(parts["tokens"] + parts["positions"])

    def block(self, index, h, ctx, keep=None, rope=None):
        return self.blocks[index](h, attention_mask=self.mask(ctx, keep))

    def readout(self, h, ctx, removed=None):
        return self.head(self.model.transformer.ln_f(self.gather(h, ctx)))

    def norm_modules(self):
        return [m for m in self.all_modules if isinstance(m, torch.nn.LayerNorm)]

    def activation_modules(self):
        return [b.mlp.act for b in self.blocks]
