"""Helpers for positional-aware LRP (Bakish et al. 2025)."""
from __future__ import annotations

import torch


def combined_heatmap(exp) -> torch.Tensor:
    """Display map of the authors: token relevance + sum over layers of |position relevance|,
    divided by the max |value| per example.  ``[B, S]``.  For display only: conservation checks
    use the signed, un-normalised ``exp.tokens`` and ``exp.positions``."""
    pos = exp.positions_by_layer or ([exp.positions] if exp.positions is not None else [])
    heat = exp.tokens + sum((p.abs() for p in pos), torch.zeros_like(exp.tokens))
    scale = heat.abs().amax(-1, keepdim=True).clamp_min(torch.finfo(heat.dtype).tiny)
    return heat / scale


def contrast(a, b):
    """Explanation of the logit *difference* ``logit_a - logit_b`` from two explanations of the same
    inputs with the same method (e.g. the tokens " positive" and " negative" of a causal LM).

    Modified-gradient relevance is linear in the output seed (the forward pass, hence every rule's
    local factor, does not depend on the target), so the relevance of ``z_a - z_b`` is the
    difference of the two relevances, field by field.  ``target`` keeps ``a``'s; the other target
    is stored in ``extras["contrast_target"]``.  All fields ``[B, S]`` (lists of them per layer).
    """
    from .explanation import Explanation

    def diff(x, y):
        if x is None or y is None:
            return None
        if isinstance(x, (list, tuple)):
            return [u - v for u, v in zip(x, y)]
        return x - y

    return Explanation(
        tokens=a.tokens - b.tokens, positions=diff(a.positions, b.positions),
        layers=diff(a.layers, b.layers), logit=a.logit - b.logit, target=a.target, method=a.method,
        token_types=diff(a.token_types, b.token_types),
        positions_by_layer=diff(a.positions_by_layer, b.positions_by_layer),
        extras={"contrast_target": b.target},
    )


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
    from . import ops
    from .methods import METHODS
    from .rules import scale_grad

    cfg = model.config
    if cfg.position != "rotary":
        raise ValueError(f"rope_reference needs a rotary TinyTransformer, got position={cfg.position!r}")
    ids = input_ids if input_ids.dim() == 2 else input_ids[None]
    mask = torch.ones_like(ids) if attention_mask is None else attention_mask.reshape(ids.shape)
    half = (lambda t: scale_grad(t, 0.5)) if positional else (lambda t: t)

    def rotate(x, cos, sin):  # uniform rule on each product of the rotation
        return half(x * cos.unsqueeze(1)) + half(ops.rotate_half(x) * sin.unsqueeze(1))

    with torch.enable_grad(), ops.session(METHODS["attnlrp"]):
        position_ids = (mask.long().cumsum(1) - 1).clamp(min=0)
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
        target = logits.detach().argmax(-1) if target is None else torch.as_tensor(target).reshape(-1).expand(B)
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
