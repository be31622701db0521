"""Adapters for rotary decoder LMs built like LLaMA: ``MistralForCausalLM``, ``Qwen2ForCausalLM``
(and its classifier), ``Qwen3ForCausalLM``, ``Phi3ForCausalLM``, ``Olmo2ForCausalLM``.

All run ``embed_tokens -> decoder layers -> norm -> lm_head`` (or ``score``) with rotary positions,
grouped-query attention and RMSNorm; what differs is handled here and follows ``PAPERS.md``:

* **q/k biases** (Qwen2): linear maps, plain gradient (epsilon rule, eps = 0); the biases absorb
  their share, as every bias does.
* **q/k norms** (Qwen3 per head, OLMo 2 over the whole projection): RMSNorms like any other, so
  they take the LN-rule (rms held constant) where the method holds norms constant (``cp-lrp``,
  ``attnlrp``, ``pa-lrp``: ``ops.norm_out``) and the plain gradient under ``gi`` / ``cp-lrp-ah``.
* **post-norms** (OLMo 2 normalises the attention and MLP outputs before the residual sum): the
  same RMSNorm rule; the residual sum itself needs none.
* **fused projections** (Phi-3 ``qkv_proj``, ``gate_up_proj``): one linear map split by slicing,
  plain gradient; the gated product ``up * act(gate)`` gets the gate rules (``ops.gate_in /
  gate_act / gate_product``: uniform rule under AttnLRP, constant gate under CP-LRP).
* **partial rotary** (Phi-3 with ``partial_rotary_factor < 1``): RoPE rotates only the first
  ``rotary_dims`` features of each head; PA-LRP's uniform rule at the rotation products applies to
  that share only, so the position relevance comes from the rotated share and the rest of q / k
  keeps AttnLRP's rules (``Adapter.rotary_dims`` -> ``ops.Session.rotary_dims``).
* **sliding windows** (Mistral, Qwen2 layers of type ``"sliding_attention"``, Phi-3): masks.  The
  adapter builds them itself (:meth:`window` -> :func:`lrp_utils.masks.sliding_window`), exactly as
  Hugging Face's ``sliding_window_overlay`` (query ``i`` reads keys ``j`` with ``i - j < window``);
  a mask needs no rule.
"""
from __future__ import annotations

from .llama import LlamaAdapter


class DecoderAdapter(LlamaAdapter):
    """A LLaMA-like rotary decoder (see the module docstring); subclasses only name the family or
    point at differently named parts."""

    name = "decoder"

    # -- where the parts are ----------------------------------------------------------------------
    @property
    def base(self):
        """The decoder stack (``model.model``)."""
        return self.model.model

    @property
    def blocks(self):
        return list(self.base.layers)

    @property
    def word_embeddings(self):
        return self.base.embed_tokens

    @property
    def final_norm(self):
        return self.base.norm

    @property
    def n_heads(self):
        return self.config.num_attention_heads

    def latent_modules(self):
        """Per block ``(attention output projection, MLP output projection)``."""
        return [(b.self_attn.o_proj, b.mlp.down_proj) for b in self.blocks]

    # -- positions and masks -----------------------------------------------------------------------
    @property
    def rotary_dims(self):
        """Features of each q / k head that RoPE rotates, if fewer than the head (partial rotary)."""
        rotated = 2 * self.base.rotary_emb.inv_freq.numel()
        head = getattr(self.config, "head_dim", None) or self.config.hidden_size // self.n_heads
        return rotated if rotated < head else None

    def window(self, index: int) -> int | None:
        """Sliding window of block ``index`` (None: full causal attention).  Models with
        ``config.layer_types`` window only the ``"sliding_attention"`` layers; the others (Mistral,
        Phi-3) window every layer when ``config.sliding_window`` is set."""
        size = getattr(self.config, "sliding_window", None)
        types = getattr(self.config, "layer_types", None)
        if types is not None:
            return size if types[index] == "sliding_attention" else None
        return size

    def embed_parts(self, input_ids, ctx):
        return {"tokens": self.word_embeddings(input_ids), "positions": None}

    def rope_tables(self, h, ctx):
        return self.base.rotary_emb(h, ctx.position_ids)

    def block(self, index, h, ctx, keep=None, rope=None):
        rope = rope if rope is not None else self.layer_rope(index, ctx)
        return self.blocks[index](h, attention_mask=self.mask(ctx, keep, self.window(index)),
                                  position_ids=ctx.position_ids, position_embeddings=rope)

    def readout(self, h, ctx, removed=None):
        return self.head(self.final_norm(self.gather(h, ctx)))

    # -- rules -------------------------------------------------------------------------------------
    def gate_modules(self):
        """``(act, down_proj)`` per block: ``down_proj`` consumes ``act(gate) * up``."""
        return [(_act(b.mlp), b.mlp.down_proj) for b in self.blocks]


def _act(mlp):
    """The activation module of a gated MLP (``act_fn``; Phi-3: ``activation_fn``)."""
    return mlp.act_fn if hasattr(mlp, "act_fn") else mlp.activation_fn


class MistralAdapter(DecoderAdapter):
    """``MistralForCausalLM``: LLaMA plus a sliding window on every layer."""

    name = "mistral"


class Qwen2Adapter(DecoderAdapter):
    """``Qwen2ForCausalLM`` / ``Qwen2ForSequenceClassification``: q/k/v biases, optional sliding
    windows on the layers of type ``"sliding_attention"``."""

    name = "qwen2"


class Qwen3Adapter(DecoderAdapter):
    """``Qwen3ForCausalLM``: per-head RMSNorm on q and k (LN-rule where norms are constant)."""

    name = "qwen3"


class Phi3Adapter(DecoderAdapter):
    """``Phi3ForCausalLM``: fused qkv and gate-up projections, optional partial rotary and window."""

    name = "phi3"


class Olmo2Adapter(DecoderAdapter):
    """``Olmo2ForCausalLM``: RMSNorm after attention and MLP (post-norms) and on the full q / k
    projections."""

    name = "olmo2"
