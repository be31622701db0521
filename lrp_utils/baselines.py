"""Baselines that are not modified gradients: Integrated Gradients (captum), attention rollout
(Abnar & Zuidema 2020) and random relevance.  Reached through ``explain(method=...)``."""
from __future__ import annotations

import torch
from captum.attr import IntegratedGradients

from . import checks
from .explanation import Explanation
from .methods import METHODS


def explain_baseline(adapter, input_ids, attention_mask, name, target=None, **kwargs) -> Explanation:
    """``explain(model, ids, name)`` for ``name`` in ``ig``, ``rollout``, ``random``; ``target`` is
    ``None`` or ``[B]`` (see :func:`lrp_utils.checks.per_example`)."""
    if name == "ig":
        checks.grad_allowed()
    probs = []  # rollout: the attention probabilities of the forward pass below
    record = (lambda call: probs.append(call.probs())) if name == "rollout" else None
    with adapter.session(METHODS["gi"], on_attention=record):
        with torch.no_grad():
            logits = adapter.forward(input_ids, attention_mask)
        target = checks.resolve_target(logits, target, adapter.target_kind)
        if name == "ig":
            tokens, layers = integrated_gradients(adapter, input_ids, attention_mask, target, **kwargs)
        elif name == "rollout":
            tokens, layers = attention_rollout(adapter, attention_mask, probs, **kwargs)
        else:
            tokens, layers = random_relevance(attention_mask.shape, **kwargs)
    logit = logits.gather(1, target[:, None])[:, 0]
    mask = attention_mask.to(tokens.dtype)
    return Explanation(tokens=(tokens * mask).detach().cpu(), positions=None, layers=layers,
                       logit=logit.detach().cpu(), target=target.cpu(), method=name)


def _suffix_fn(adapter, layer: int):
    """``f(h_layer, input_ids, attention_mask) -> logits`` running blocks ``layer+1 .. L``; with
    ``layer = -1`` the argument is the token embedding and the other embedding parts are added."""

    def forward(h, input_ids, attention_mask):
        if layer < 0:
            _, h, ctx = adapter.start(input_ids, attention_mask, parts={"tokens": h})
        else:
            ctx = adapter.prepare(input_ids, attention_mask)
            ctx.rope = adapter.rope_tables(h, ctx)
        return adapter.readout(adapter.run(h, ctx, begin=max(layer, 0)), ctx)

    return forward


def integrated_gradients(adapter, input_ids, attention_mask, target, n_steps=32, ig_layers=False):
    """IG (Sundararajan et al. 2017) on the token embeddings with a zero baseline, through captum;
    with ``ig_layers`` also on every residual stream (zero baseline at that layer).  Returns
    ``(tokens [B, S], layers list of L+1 [B, S] or None)``."""
    n_steps = checks.positive_int("n_steps", n_steps)
    with torch.no_grad():
        states = []
        parts, h0, ctx = adapter.start(input_ids, attention_mask)
        if ig_layers:
            adapter.run(h0, ctx, states=states)
    args = (input_ids, attention_mask)

    def attribute(fn, x):
        with torch.enable_grad():
            attr = IntegratedGradients(fn).attribute(x, torch.zeros_like(x), target=target,
                                                     additional_forward_args=args, n_steps=n_steps)
        return (attr.sum(-1) * attention_mask.to(attr.dtype)).detach().cpu()

    tokens = attribute(_suffix_fn(adapter, -1), parts["tokens"])
    if not ig_layers:
        return tokens, None
    return tokens, [attribute(_suffix_fn(adapter, layer), s) for layer, s in enumerate([h0, *states])]


def attention_rollout(adapter, attention_mask, probs: list):
    """Attention rollout: ``prod_l (0.5 * mean_heads(A_l) + 0.5 * I)`` (rows renormalised); the
    read-out position's row is the token relevance (class-agnostic, non-negative).  ``probs``: the
    ``[B, H, S, S]`` probabilities of every block, in order (softmax attention only)."""
    if len(probs) != adapter.n_layers:
        raise ValueError("attention rollout needs softmax attention in every block")
    B, S = attention_mask.shape
    eye = torch.eye(S, dtype=probs[0].dtype, device=probs[0].device)
    roll = eye.expand(B, S, S)
    for a in probs:
        a = 0.5 * a.mean(1) + 0.5 * eye
        roll = (a / a.sum(-1, keepdim=True)) @ roll
    pos = adapter.readout_positions(attention_mask)
    return roll[torch.arange(B), pos].detach().cpu(), None


def random_relevance(shape, seed=0):
    """Uniform random relevance in [0, 1), seeded: the floor any method must beat."""
    gen = torch.Generator().manual_seed(checks.integer("seed", seed))
    return torch.rand(tuple(shape), generator=gen, dtype=torch.float64), None
