"""Adapter for the package's own :class:`~lrp_utils.models.TinyTransformer`.  Its modules call
:mod:`lrp_utils.ops` directly (the same interpreter the Hugging Face hooks call), so no hooks
are needed."""
from __future__ import annotations

from .base import Adapter


class TinyAdapter(Adapter):
    name = "tiny"

    def __init__(self, model):
        super().__init__(model)
        cfg = model.config
        self.task = cfg.task
        self.causal = cfg.task == "causal"
        self.positions = {"learned": "additive", "sinusoidal": "additive", "rotary": "rotary"}.get(cfg.position)
        self.query_subsets = cfg.attention == "softmax"  # linear attention takes whole sequences
        self.single_readout = cfg.task == "causal" or cfg.readout == "cls"

    @property
    def blocks(self):
        return list(self.model.blocks)

    @property
    def word_embeddings(self):
        return self.model.tok_emb

    @property
    def n_outputs(self):
        cfg = self.model.config
        return cfg.n_classes if cfg.task == "classify" else cfg.vocab_size

    @property
    def max_positions(self):
        return self.model.config.max_len if self.positions == "additive" else None

    @property
    def n_heads(self):
        return self.model.config.n_heads

    def latent_modules(self):
        return [(b.attn.o, b.mlp.down if b.mlp is not None else None) for b in self.blocks]

    def target_name(self, tokenizer, target):
        return str(int(target)) if tokenizer is None else super().target_name(tokenizer, target)

    def embed_parts(self, input_ids, ctx):
        return self.model.embed_parts(input_ids, ctx.position_ids)

    def rope_tables(self, h, ctx):
        return self.model.rope_tables(ctx.position_ids, h.dtype)

    def block(self, index, h, ctx, keep=None, rope=None):
        mask = self.model.make_mask(ctx.attention_mask)
        mask.keep, mask.queries = keep, ctx.queries
        return self.blocks[index](h, mask, rope if rope is not None else ctx.rope)

    def readout(self, h, ctx, removed=None):
        keep = ~removed if removed is not None else None
        return self.model.readout(h, ctx.attention_mask, keep)
