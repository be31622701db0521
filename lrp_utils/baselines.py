"""Baselines that are not modified gradients: Integrated Gradients (captum), attention rollout
(Abnar & Zuidema 2020) and random relevance.  Reached through ``explain(method=...)``."""
from __future__ import annotations

import torch
from captum.attr import IntegratedGradients

from . import ops
from .engine import check_target, frozen
from .explanation import Explanation
from .methods import METHODS


def explain_baseline(adapter, input_ids, attention_mask, name, target=None, **kwargs) -> Explanation:
    fn = {"ig": integrated_gradients, "rollout": attention_rollout, "random": random_relevance}[name]
    with frozen(adapter), adapter.rules(METHODS["gi"]), ops.session():
        logits = _logits(adapter, input_ids, attention_mask)
        target = check_target(adapter, logits, target)
        tokens, layers = fn(adapter, input_ids, attention_mask, target, **kwargs)
    logit = logits.gather(1, target[:, None])[:, 0]
    mask = attention_mask.to(tokens.dtype)
    return Explanation(tokens=(tokens * mask).detach().cpu(), positions=None, layers=layers,
                       logit=logit.detach().cpu(), target=target.cpu(), method=name)


@torch.no_grad()
def _logits(adapter, input_ids, attention_mask):
    return adapter.forward(input_ids, attention_mask)


def _suffix_fn(adapter, layer: int):
    """``f(h_layer, input_ids, attention_mask) -> logits`` running blocks ``layer+1 .. L``; with
    ``layer = -1`` the argument is the token embedding and the other embedding parts are added."""

    def forward(h, input_ids, attention_mask):
        ctx = adapter.prepare(input_ids, attention_mask)
        if layer < 0:
            parts = adapter.embed_parts(input_ids, ctx)
            parts["tokens"] = h
            h = adapter.combine(parts)
        ctx.rope = adapter.rope_tables(h, ctx)
        for j in range(max(layer, 0), adapter.n_layers):
            h = adapter.block(j, h, ctx)
        return adapter.readout(h, ctx)

    return forward


def integrated_gradients(adapter, input_ids, attention_mask, target, n_steps=32, ig_layers=False):
    """IG (Sundararajan et al. 2017) on the token embeddings with a zero baseline, through captum;
    with ``ig_layers`` also on every residual stream (zero baseline at that layer).  Returns
    ``(tokens [B, S], layers list of L+1 [B, S] or None)``."""
    ctx = adapter.prepare(input_ids, attention_mask)
    with torch.no_grad():
        parts = adapter.embed_parts(input_ids, ctx)
    args = (input_ids, attention_mask)

    def attribute(fn, x):
        with torch.enable_grad():
            attr = IntegratedGradients(fn).attribute(x, torch.zeros_like(x), target=target,
                                                     additional_forward_args=args, n_steps=n_steps)
        return (attr.sum(-1) * attention_mask.to(attr.dtype)).detach().cpu()

    tokens = attribute(_suffix_fn(adapter, -1), parts["tokens"])
    if not ig_layers:
        return tokens, None
    with torch.no_grad():
        states = [adapter.combine(parts)]
        ctx.rope = adapter.rope_tables(states[0], ctx)
        for j in range(adapter.n_layers):
            states.append(adapter.block(j, states[-1], ctx))
    return tokens, [attribute(_suffix_fn(adapter, layer), s) for layer, s in enumerate(states)]


def attention_rollout(adapter, input_ids, attention_mask, target=None):
    """Attention rollout: ``prod_l (0.5 * mean_heads(A_l) + 0.5 * I)`` (rows renormalised); the
    read-out position's row is the token relevance (class-agnostic, non-negative)."""
    session = ops.current()
    session.probs = []
    with torch.no_grad():
        _logits(adapter, input_ids, attention_mask)
    probs, session.probs = session.probs, None
    B, S = input_ids.shape
    eye = torch.eye(S, dtype=probs[0].dtype, device=probs[0].device)
    roll = eye.expand(B, S, S)
    for a in probs:
        a = 0.5 * a.mean(1) + 0.5 * eye
        roll = (a / a.sum(-1, keepdim=True)) @ roll
    pos = adapter.readout_positions(attention_mask)
    return roll[torch.arange(B), pos].detach().cpu(), None


def random_relevance(adapter, input_ids, attention_mask, target=None, seed=0):
    """Uniform random relevance in [0, 1), seeded: the floor any method must beat."""
    gen = torch.Generator().manual_seed(seed)
    return torch.rand(input_ids.shape, generator=gen, dtype=torch.float64), None
