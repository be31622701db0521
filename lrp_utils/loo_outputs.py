"""Layer-wise leave-one-out of every output, under four removals (notebook 04's definitions sweep,
:mod:`lrp_utils.studies.loo_variants`).

:func:`loo_outputs` removes position ``i`` at layer ``l`` and measures, from the same forward pass,
the explained class's logit, log-odds (logit minus the log-sum-exp of the other classes),
log-probability and probability (:data:`OUTPUTS`).  Removals (:data:`REMOVALS`): ``mask`` (``i``
masked as a key in blocks ``l+1 .. L``, as :func:`lrp_utils.loo_by_layer`), ``mask-next`` (in block
``l+1`` only), ``zero`` (``h^l_i := 0``) and ``mean`` (``h^l_i :=`` a given state, e.g. the dataset
mean from :func:`hidden_means`).  ``mask``, ``zero`` and ``mean`` take :mod:`lrp_utils.reuse`'s
fast path where it applies.
"""
from __future__ import annotations

import torch

from . import checks, runner
from .adapters import get_adapter
from .loo import removable
from .methods import METHODS
from .reuse import base_pass, plan_chunks, removal_states, spans, usable

OUTPUTS = ("logit", "log-odds", "log-prob", "prob")
REMOVALS = ("mask", "mask-next", "zero", "mean")


def outputs_from_logits(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """``[n, 4]`` float64: the target's logit, log-odds (logit - logsumexp of the other classes),
    log-probability and probability (:data:`OUTPUTS`) from ``logits [n, C]``."""
    z = logits.double()
    t = target[:, None].to(z.device)
    zt = z.gather(1, t)[:, 0]
    lse = torch.logsumexp(z, 1)
    others = torch.logsumexp(z.scatter(1, t, float("-inf")), 1)
    return torch.stack([zt, zt - others, zt - lse, torch.exp(zt - lse)], 1)


def _removed_logits(adapter, h, ctx, layer: int, i: torch.Tensor, removal: str, fill=None) -> torch.Tensor:
    """Logits ``[n, C]`` with position ``i[k]`` of row ``k`` removed at ``layer`` from the hidden
    states ``h [n, S, D]`` (plain path: every position of every later block recomputed)."""
    n, S = h.shape[:2]
    L = adapter.n_layers
    rows = torch.arange(n, device=h.device)
    if removal in ("zero", "mean"):
        h = h.clone()
        h[rows, i] = 0.0 if removal == "zero" else fill.to(h.dtype)
        return adapter.readout(adapter.run(h, ctx, begin=layer), ctx)
    removed = torch.nn.functional.one_hot(i, S).bool()
    keep = (~removed[:, None, None, :]) | torch.eye(S, dtype=torch.bool, device=h.device)
    if removal == "mask":
        return adapter.readout(adapter.run(h, ctx, begin=layer, keep=keep), ctx, removed=removed)
    if layer < L:  # mask-next: only block layer + 1 stops reading i
        h = adapter.run(h, ctx, begin=layer, end=layer + 1, keep=keep)
        h = adapter.run(h, ctx, begin=layer + 1)
    return adapter.readout(h, ctx)


@torch.no_grad()
def loo_outputs(model, input_ids, layers, target=None, attention_mask=None, removal: str = "mask", fill=None,
                batch_size: int = 64, reuse: bool = True) -> torch.Tensor:
    """Leave-one-out of every output: ``[len(layers), B, S, 4]`` float64 CPU, ``base - removed`` for
    each of :data:`OUTPUTS`; NaN at padding and the read-out position.  ``removal`` one of
    :data:`REMOVALS`; ``fill [len(layers), D]`` the replacement state of ``"mean"``.  ``mask``,
    ``zero`` and ``mean`` take :mod:`lrp_utils.reuse`'s path where it applies (same numbers as
    :func:`lrp_utils.loo_by_layer`), ``mask-next`` (and ``reuse=False``) the plain path."""
    adapter = get_adapter(model)
    input_ids, attention_mask = adapter.check_inputs(input_ids, attention_mask)
    L = adapter.n_layers
    layers = checks.layers(layers, L)
    if removal not in REMOVALS:
        raise ValueError(f"unknown removal {removal!r}; valid: {', '.join(REMOVALS)}")
    if removal == "mean" and (fill is None or len(fill) != len(layers)):
        raise ValueError("removal 'mean' needs fill [len(layers), D]")
    B, S = input_ids.shape
    out = torch.full((len(layers), B, S, len(OUTPUTS)), float("nan"), dtype=torch.float64)
    with adapter.session(METHODS["gi"]):
        _, h, ctx = adapter.start(input_ids, attention_mask)
        states, cache = base_pass(adapter, h, ctx)
        logits = adapter.readout(states[-1], ctx)
        target = checks.resolve_target(logits, target, adapter.target_kind)
        pairs = removable(adapter, attention_mask).nonzero()
        if len(pairs) == 0:
            return out
        if removal != "mask-next" and reuse and usable(adapter, cache):
            r = adapter.readout_positions(attention_mask)
            base = outputs_from_logits(adapter.readout_at(states[-1][torch.arange(B, device=r.device), r]), target)
            per_chunk = max(1, batch_size // len(set(layers) - {L} or {0}))
            for idx in plan_chunks(*spans(adapter, ctx.attention_mask, pairs[:, 0], pairs[:, 1]), per_chunk):
                b, i = pairs[idx.to(pairs.device)].unbind(1)
                hr = removal_states(adapter, states, cache, ctx, layers, b, i, removal, batch_size,
                                    None if fill is None else {l: fill[j].to(h.device) for j, l in enumerate(layers)})
                o = outputs_from_logits(adapter.readout_at(hr.flatten(0, 1)), target[b].repeat(len(layers)))
                out[:, b.cpu(), i.cpu()] = (base[b] - o.view(len(layers), len(b), -1)).cpu()
            return out
        base = outputs_from_logits(logits, target)
        for j, layer in enumerate(layers):
            for idx in torch.arange(len(pairs), device=pairs.device).split(batch_size):
                b, i = pairs[idx].unbind(1)
                z = _removed_logits(adapter, states[layer][b], ctx.select(b), layer, i, removal,
                                    None if fill is None else fill[j].to(h.device))
                out[j, b.cpu(), i.cpu()] = (base[b] - outputs_from_logits(z, target[b])).cpu()
    return out


@torch.no_grad()
def hidden_means(model, input_ids, attention_mask, layers, batch_size: int = 16) -> torch.Tensor:
    """``[len(layers), D]``: the mean residual stream at each layer over every token of the data
    but the first of each sequence (the [CLS] / attention-sink position, whose state is atypical)."""
    adapter = get_adapter(model)
    L = adapter.n_layers
    layers = checks.layers(layers, L)
    total, count = None, 0
    for b in runner.batches(model, input_ids, attention_mask, batch_size):
        with adapter.session(METHODS["gi"]):
            _, h, ctx = adapter.start(b.input_ids, b.attention_mask)
            states = [h]
            adapter.run(h, ctx, states=states)
        keep = b.attention_mask.bool().clone()
        keep[torch.arange(len(keep)), _first_positions(b.attention_mask)] = False
        s = torch.stack([states[l][keep].double().sum(0) for l in layers])
        total, count = (s if total is None else total + s), count + int(keep.sum())
    return (total / max(count, 1)).to(adapter.dtype)


def _first_positions(mask: torch.Tensor) -> torch.Tensor:
    return mask.bool().int().argmax(1)
