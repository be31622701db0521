"""Adapters for BERT-like encoder classifiers: ``RobertaForSequenceClassification``,
``ElectraForSequenceClassification`` (both run BERT's blocks) and
``DistilBertForSequenceClassification``.

Learned absolute positions (and token types) are added to the word embeddings, so PA-LRP splits the
relevance of that sum in proportion to its summands (``tokens``, ``positions``, ``token_types``).
All read out the first token (``<s>`` / [CLS]), also in left-padded rows.  Rules (``PAPERS.md``):
LayerNorm LN-rule where the method holds norms constant; GELU and the heads' nonlinearities (RoBERTa
``tanh``, ELECTRA ``gelu``, DistilBERT ``relu``) the identity rule under AttnLRP / CP-LRP; ELECTRA's
``embeddings_project`` (embedding size -> hidden size) is linear.

RoBERTa counts positions from ``padding_idx + 1`` (fairseq's convention): ``ctx.position_ids``
stays 0-based (0 at the first token, whichever side the padding is on) and the offset is added at
the table, so the usable table is ``max_position_embeddings - padding_idx - 1`` long.
"""
from __future__ import annotations

import torch

from .. import ops
from .bert import BertAdapter
from .hf import HFAdapter


class _BertLike(BertAdapter):
    """BERT's blocks under another name (``self.body``), with a classification head on the
    first token instead of BERT's pooler."""

    @property
    def bert(self):
        return self.body

    @property
    def n_heads(self):
        return self.config.num_attention_heads

    def latent_modules(self):
        return [(layer.attention.output.dense, layer.output.dense) for layer in self.blocks]

    def activation_modules(self):
        return [layer.intermediate.intermediate_act_fn for layer in self.blocks]


class RobertaAdapter(_BertLike):
    name = "roberta"

    @property
    def body(self):
        return self.model.roberta

    @property
    def offset(self) -> int:
        """First row of the position table (``padding_idx + 1``)."""
        return self.body.embeddings.padding_idx + 1

    @property
    def max_positions(self):
        return self.config.max_position_embeddings - self.offset

    def embed_parts(self, input_ids, ctx):
        e = self.body.embeddings
        return {"tokens": e.word_embeddings(input_ids),
                "types": e.token_type_embeddings(ctx.token_type_ids),
                "positions": e.position_embeddings(ctx.position_ids + self.offset)}

    def readout(self, h, ctx, removed=None):
        """``out_proj(tanh(dense(x)))`` on the first token (the head's ``tanh`` is a function call,
        so it is routed through :func:`lrp_utils.ops.activation` here)."""
        head = self.model.classifier
        x = head.dense(head.dropout(self.gather(h, ctx)))
        return head.out_proj(head.dropout(ops.activation(torch.tanh, x)))


class ElectraAdapter(_BertLike):
    name = "electra"

    @property
    def body(self):
        return self.model.electra

    def combine(self, parts):
        h = super().combine(parts)
        project = getattr(self.body, "embeddings_project", None)
        return project(h) if project is not None else h

    def readout(self, h, ctx, removed=None):
        return self.model.classifier(self.gather(h, ctx)[:, None])  # the head reads position 0

    def activation_modules(self):
        return [*super().activation_modules(), self.model.classifier.activation]


class DistilBertAdapter(HFAdapter):
    """``DistilBertForSequenceClassification``: word + position embeddings (no token types),
    post-LN blocks, ``classifier(relu(pre_classifier(x)))`` on the first token."""

    name = "distilbert"
    task = "classify"
    positions = "additive"

    @property
    def body(self):
        return self.model.distilbert

    @property
    def blocks(self):
        return list(self.body.transformer.layer)

    @property
    def word_embeddings(self):
        return self.body.embeddings.word_embeddings

    @property
    def max_positions(self):
        return self.config.max_position_embeddings

    @property
    def n_heads(self):
        return self.config.n_heads

    def latent_modules(self):
        return [(b.attention.out_lin, b.ffn.lin2) for b in self.blocks]

    def embed_parts(self, input_ids, ctx):
        e = self.body.embeddings
        return {"tokens": e.word_embeddings(input_ids), "positions": e.position_embeddings(ctx.position_ids)}

    def combine(self, parts):
        e = self.body.embeddings
        return e.dropout(e.LayerNorm(parts["tokens"] + parts["positions"]))

    def block(self, index, h, ctx, keep=None, rope=None):
        return self.blocks[index](h, attention_mask=self.mask(ctx, keep))

    def readout(self, h, ctx, removed=None):
        m = self.model
        x = ops.activation(torch.relu, m.pre_classifier(self.gather(h, ctx)))
        return m.classifier(m.dropout(x))

    def norm_modules(self):
        return [m for m in self.all_modules if isinstance(m, torch.nn.LayerNorm)]

    def activation_modules(self):
        return [b.ffn.activation for b in self.blocks]
