"""Adapter for ``LlamaForCausalLM`` and ``LlamaForSequenceClassification`` (LLaMA, SmolLM2):
rotary positions, grouped-query attention, RMSNorm, gated SiLU MLP; next-token logits (LM head) or
class logits (``score`` head) at the last non-padding position."""
from __future__ import annotations

from .hf import HFAdapter


class LlamaAdapter(HFAdapter):
    name = "llama"
    causal = True
    positions = "rotary"

    def __init__(self, model):
        super().__init__(model)
        self.decoder_head()

    @property
    def blocks(self):
        return list(self.model.model.layers)

    @property
    def word_embeddings(self):
        return self.model.model.embed_tokens

    @property
    def n_heads(self):
        return self.config.num_attention_heads

    def latent_modules(self):
        return [(b.self_attn.o_proj, b.mlp.down_proj) for b in self.blocks]

    def embed_parts(self, input_ids, ctx):
        return {"tokens": self.model.model.embed_tokens(input_ids), "positions": None}

    def rope_tables(self, h, ctx):
        return self.model.model.rotary_emb(h, ctx.position_ids)

    def block(self, index, h, ctx, keep=None, rope=None):
        return self.blocks[index](h, attention_mask=self.mask(ctx, keep), position_ids=ctx.position_ids,
                                  position_embeddings=rope if rope is not None else ctx.rope)

    def readout(self, h, ctx, removed=None):
        return self.head(self.model.model.norm(self.gather(h, ctx)))

    def norm_modules(self):
        return [m for m in self.all_modules if type(m).__name__.endswith("RMSNorm")]

    def gate_modules(self):
        return [(b.mlp.act_fn, b.mlp.down_proj) for b in self.blocks]
