"""The PA-LRP reference for rotary positions (Bakish et al. 2025), written from the definition:
the rotation ``q' = q cos + rot(q) sin`` computed here with the uniform rule on each product, every
layer with its own leaf copy of ``(cos, sin)``; independent of the engine's rotation rule."""
from __future__ import annotations

import torch

from .. import checks, masks, ops
from ..methods import METHODS
from ..rules import scale_grad


def rope_reference(model, input_ids, attention_mask=None, target=None, positional: bool = True) -> dict:
    """Slow reference replica of PA-LRP for a rotary :class:`~lrp_utils.models.TinyTransformer`,
    written straight from the definition (Bakish et al. 2025) and independent of the engine's
    implementation of the rotation rule.

    The blocks are re-run piece by piece under AttnLRP's rules (``ops.session("attnlrp")`` without
    ``rotary_positions``); the rotation ``q' = q * cos + rot(q) * sin`` (same for ``k``) is computed
    here with the uniform rule on each of its two products (each factor gets 1/2, i.e. the
    gradient into the product is halved; ``positional=False``: plain gradient, cos/sin constants =
    AttnLRP).  Every layer has its own leaf copy of ``(cos, sin)``.

    Returns a dict of CPU tensors: ``tokens [B, S]``, ``positions_by_layer`` (list of L ``[B, S]``:
    relevance of the layer's cos and sin, summed over features), ``rotated_by_layer`` (list of L
    ``[B, S]``: relevance ``q' * g + k' * g`` at the rotated query and key, summed over heads and
    features, ``g`` being the gradient the attention's rules deliver to them), ``logit [B]``.
    """
    cfg = model.config
    if cfg.position != "rotary":
        raise ValueError(f"rope_reference needs a rotary TinyTransformer, got position={cfg.position!r}")
    ids = input_ids if input_ids.dim() == 2 else input_ids[None]
    mask = torch.ones_like(ids) if attention_mask is None else attention_mask.reshape(ids.shape)
    half = (lambda t: scale_grad(t, 0.5)) if positional else (lambda t: t)

    def rotate(x, cos, sin):  # uniform rule on each product of the rotation
        return half(x * cos.unsqueeze(1)) + half(ops.rotate_half(x) * sin.unsqueeze(1))

    with torch.enable_grad(), ops.session(METHODS["attnlrp"]):
        position_ids = masks.position_ids(mask)
        tok = model.embed_parts(ids, position_ids)["tokens"].detach().requires_grad_()
        table = model.rope_tables(position_ids, tok.dtype)
        att_mask = model.make_mask(mask)
        h, tables, rotated = tok, [], []
        for block in model.blocks:
            cos, sin = (t.detach().clone().requires_grad_() for t in table)
            tables += [cos, sin]
            a, x = block.attn, block.norm1(h)
            B, S, _ = x.shape
            heads = lambda t: t.view(B, S, -1, cfg.head_dim).transpose(1, 2)  # noqa: E731
            q, k = rotate(heads(a.q(x)), cos, sin), rotate(heads(a.k(x)), cos, sin)
            rotated += [q, k]
            v = heads(a.v(x))
            if cfg.attention == "softmax":
                out, _ = ops.softmax_attention(q, k, v, att_mask.dense(), n_rep=a.n_rep)
            else:
                out = ops.linear_attention(q, k, v, att_mask.key_keep, att_mask.causal, None, cfg.order,
                                           cfg.feature_map, cfg.normalize, n_rep=a.n_rep)
            h = h + a.o(out.transpose(1, 2).reshape(B, S, -1))
            h = h + block.mlp(block.norm2(h)) if block.mlp is not None else h
        logits = model.readout(h, mask)
        target = checks.resolve_target(logits, checks.per_example(target, B))
        logit = logits.gather(1, target[:, None].to(logits.device))[:, 0]
        grads = torch.autograd.grad(logit.sum(), [tok, *tables, *rotated])
    keep = mask.to(tok.dtype)
    rel = lambda x, g, dims: ((x.detach() * g).sum(dims) * keep).cpu()  # noqa: E731
    n = len(model.blocks)
    g_tab, g_rot = grads[1:1 + 2 * n], grads[1 + 2 * n:]
    return {
        "tokens": rel(tok, grads[0], -1),
        "positions_by_layer": [rel(tables[2 * i], g_tab[2 * i], -1) + rel(tables[2 * i + 1], g_tab[2 * i + 1], -1)
                               for i in range(n)],
        "rotated_by_layer": [rel(rotated[2 * i], g_rot[2 * i], (1, 3)) + rel(rotated[2 * i + 1], g_rot[2 * i + 1], (1, 3))
                             for i in range(n)],
        "logit": logit.detach().cpu(),
    }
