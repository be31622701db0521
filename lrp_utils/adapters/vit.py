"""Adapter for ``ViTForImageClassification`` (vision transformer, Dosovitskiy et al. 2021).

The input is an image batch ``pixel_values [B, C, H, W]`` at the model's size.  The "tokens" are
the [CLS] vector (position 0) and the ``N = (H / p) * (W / p)`` patch embeddings (a linear
``p x p`` convolution of the pixels, row-major patch order), so ``S = N + 1``; learned absolute
position embeddings are added to them.  Read-out: the classifier on the final LayerNorm of [CLS].

Rules (``PAPERS.md`` terms): the patch projection is linear (plain gradient; its bias absorbs its
share), so the relevance at the pixels, summed per patch, is the patch token's relevance less its
bias share; PA-LRP splits the embedding sum ``tokens + positions`` in proportion to its summands
(learned absolute positions, as BERT); LayerNorm LN-rule where the method holds norms constant;
GELU identity rule under AttnLRP / CP-LRP; attention as every other encoder (no mask, no padding).

Under ``explain`` the pixels are a leaf of the graph (``Context.pixels``) and the token embeddings
are computed from them, so one backward pass gives both ``tokens`` and ``pixels``.
"""
from __future__ import annotations

import torch

from .. import checks
from .base import Context
from .hf import HFAdapter


class ViTAdapter(HFAdapter):
    name = "vit"
    task = "classify"
    positions = "additive"
    modality = "image"

    @property
    def body(self):
        return self.model.vit

    @property
    def blocks(self):
        return list(self.body.layers)

    @property
    def patches(self):
        """The patch embedding module (``projection``: ``Conv2d(C, D, p, stride=p)``)."""
        return self.body.embeddings.patch_embeddings

    @property
    def dtype(self):
        return self.patches.projection.weight.dtype

    @property
    def device(self):
        return self.patches.projection.weight.device

    @property
    def n_heads(self):
        return self.config.num_attention_heads

    def latent_modules(self):
        return [(b.attention.o_proj, b.mlp.fc2) for b in self.blocks]

    @property
    def grid(self) -> tuple[int, int]:
        """Patches per column and per row ``(H / p, W / p)``."""
        (h, w), (ph, pw) = self.patches.image_size, self.patches.patch_size
        return h // ph, w // pw

    def check_inputs(self, pixel_values, attention_mask):
        """``(pixels [B, C, H, W], mask [B, N + 1] of ones)``; an attention mask is refused."""
        if attention_mask is not None:
            raise ValueError("attention_mask is not used by vision models (every patch is attended); pass None")
        x = checks.pixel_values(pixel_values, self.patches.num_channels, self.patches.image_size)
        x = x.to(self.device, self.dtype)
        n = self.grid[0] * self.grid[1] + 1
        return x, torch.ones(x.shape[0], n, dtype=torch.long, device=self.device)

    def target_name(self, tokenizer, target):
        return super().target_name(None, target)

    def prepare(self, pixel_values, attention_mask, position_ids=None) -> Context:
        ctx = super().prepare(pixel_values, attention_mask, position_ids)
        ctx.pixels = pixel_values
        return ctx

    def embed_parts(self, pixel_values, ctx):
        """``tokens = [CLS; patches(pixels)]`` and the position table, both ``[B, N + 1, D]``."""
        e = self.body.embeddings
        B = pixel_values.shape[0]
        tokens = torch.cat([e.cls_token.expand(B, -1, -1), self.patches(pixel_values)], dim=1)
        return {"tokens": tokens, "positions": e.position_embeddings.expand(B, -1, -1)}

    def start(self, pixel_values, attention_mask, position_ids=None, parts=None, leaves=False):
        """As :meth:`Adapter.start`; with ``leaves`` the *pixels* are the leaf the tokens are
        computed from (``ctx.pixels``), and the positions a leaf of their own."""
        if leaves:
            pixel_values = pixel_values.detach().requires_grad_()
        ctx = self.prepare(pixel_values, attention_mask, position_ids)
        own = {**self.embed_parts(pixel_values, ctx), **(parts or {})}
        if leaves:
            own["positions"] = own["positions"].detach().clone().requires_grad_()
        return own, self.combine(own), ctx

    def combine(self, parts):
        return self.body.embeddings.dropout(parts["tokens"] + parts["positions"])

    def block(self, index, h, ctx, keep=None, rope=None):
        return self.blocks[index](h, self.mask(ctx, keep))

    def readout(self, h, ctx, removed=None):
        return self.model.classifier(self.body.layernorm(self.gather(h, ctx)))

    def norm_modules(self):
        return [m for m in self.all_modules if isinstance(m, torch.nn.LayerNorm)]

    def activation_modules(self):
        return [b.mlp.activation_fn for b in self.blocks]

    def biased_linears(self):
        return [*super().biased_linears(), *([self.patches.projection] if self.patches.projection.bias is not None
                                             else [])]
