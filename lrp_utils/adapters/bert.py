"""Adapter for ``BertForSequenceClassification`` (BERT, MiniLM): learned absolute positions and
token types added to the word embeddings, post-LN blocks, [CLS] pooler (dense + tanh).

The read-out is the first token of each row ([CLS]), also when the batch is left-padded: the
explained logit is the model's output on the unpadded sentence (Hugging Face's own forward reads
position 0, which is padding in a left-padded row)."""
from __future__ import annotations

import torch

from .base import Context
from .hf import HFAdapter


class BertAdapter(HFAdapter):
    name = "bert"
    task = "classify"
    positions = "additive"

    @property
    def bert(self):
        return self.model.bert

    @property
    def blocks(self):
        return list(self.bert.encoder.layer)

    @property
    def word_embeddings(self):
        return self.bert.embeddings.word_embeddings

    @property
    def max_positions(self):
        return self.config.max_position_embeddings

    @property
    def n_heads(self):
        return self.config.num_attention_heads

    def latent_modules(self):
        return [(layer.attention.output.dense, layer.output.dense) for layer in self.blocks]

    def prepare(self, input_ids, attention_mask, position_ids=None) -> Context:
        ctx = super().prepare(input_ids, attention_mask, position_ids)
        ctx.token_type_ids = torch.zeros_like(input_ids)
        return ctx

    def embed_parts(self, input_ids, ctx):
        e = self.bert.embeddings
        return {"tokens": e.word_embeddings(input_ids),
                "types": e.token_type_embeddings(ctx.token_type_ids),
                "positions": e.position_embeddings(ctx.position_ids)}

    def combine(self, parts):
        e = self.bert.embeddings
        return e.dropout(e.LayerNorm(parts["tokens"] + parts["types"] + parts["positions"]))

    def block(self, index, h, ctx, keep=None, rope=None):
        return self.blocks[index](h, attention_mask=self.mask(ctx, keep))

    def readout(self, h, ctx, removed=None):
        cls = self.gather(h, ctx)[:, None]  # [B, 1, D]: the pooler reads position 0 of what it gets
        pooled = self.bert.pooler(cls) if self.bert.pooler is not None else cls[:, 0]
        return self.model.classifier(self.model.dropout(pooled))

    def norm_modules(self):
        return [m for m in self.all_modules if isinstance(m, torch.nn.LayerNorm)]

    def activation_modules(self):
        acts = [layer.intermediate.intermediate_act_fn for layer in self.blocks]
        if self.bert.pooler is not None:
            acts.append(self.bert.pooler.activation)
        return acts
