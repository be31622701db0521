"""Batched leave-one-out (LOO) at any layer, as defined in ``DESIGN.md``.

``loo(model, ids, layer=l)[b, i] = logit(x) - logit(x with position i removed from layer l on)``.

* ``removal="mask"``: in blocks ``l+1 .. L`` no other position may read position ``i`` (its key
  and value are masked for every query but its own); ``i`` itself still computes.
* ``removal="zero"``: the hidden state of position ``i`` at layer ``l`` is set to zero.

The prefix (embeddings and blocks ``1 .. l``) is computed once; the removals run as batches of
``batch_size`` copies through the remaining blocks.  Read-out positions and padding are NaN.
"""
from __future__ import annotations

import torch
from .progress import tqdm

from . import checks
from .adapters import get_adapter
from .methods import METHODS

#: removal operators of :func:`loo` (see the module docstring)
REMOVALS = ("mask", "zero")


def loo(model, input_ids=None, layer=0, target=None, attention_mask=None, removal="mask",
        batch_size=64, progress=False, *, pixel_values=None) -> torch.Tensor:
    """Leave-one-out scores ``[B, S]`` at ``layer`` (0 = input embeddings, ``L`` = last block).
    See the module docstring for the two removal operators.  CPU float64 tensor; NaN at the
    read-out position, at padding, and everywhere when nothing can be removed (one token).
    Vision models take ``pixel_values`` instead of ``input_ids`` (positions: [CLS] and patches)."""
    layer = checks.integer("layer", layer, 0, get_adapter(model).n_layers)
    return loo_by_layer(model, input_ids, [layer], target, attention_mask, removal, batch_size, progress,
                        pixel_values=pixel_values)[0]


def loo_by_layer(model, input_ids=None, layers=None, target=None, attention_mask=None, removal="mask",
                 batch_size=64, progress=False, *, pixel_values=None) -> torch.Tensor:
    """LOO at several layers (default all ``0 .. L``) sharing one prefix pass: ``[len(layers), B, S]``."""
    adapter = get_adapter(model)
    inputs = checks.model_inputs(adapter.modality, type(adapter.model).__name__, input_ids, pixel_values)
    input_ids, attention_mask = adapter.check_inputs(inputs, attention_mask)
    target = checks.per_example(target, len(input_ids))
    L = adapter.n_layers
    layers = list(range(L + 1)) if layers is None else checks.layers(layers, L)
    if removal not in REMOVALS:
        raise ValueError(f"unknown removal {removal!r}; valid: {', '.join(REMOVALS)}")
    batch_size = checks.positive_int("batch_size", batch_size)
    with adapter.session(METHODS["gi"]), torch.no_grad():
        states, ctx, logits = _prefix(adapter, input_ids, attention_mask)
        target = checks.resolve_target(logits, target, adapter.target_kind)
        base = logits.gather(1, target[:, None])[:, 0]
        out = [_loo_at(adapter, states, ctx, l, target, base, removal, batch_size, progress) for l in layers]
    return torch.stack(out)


def _prefix(adapter, input_ids, attention_mask):
    _, h, ctx = adapter.start(input_ids, attention_mask)
    states = [h]
    h = adapter.run(h, ctx, states=states)
    return states, ctx, adapter.readout(h, ctx)


def removable(adapter, attention_mask: torch.Tensor) -> torch.Tensor:
    """``[B, S]`` bool: positions LOO removes (not padding, not the read-out position)."""
    ok = attention_mask.bool().clone()
    ok[torch.arange(ok.shape[0], device=ok.device), adapter.readout_positions(attention_mask)] = False
    return ok


def _loo_at(adapter, states, ctx, layer, target, base, removal, batch_size, progress):
    B, S = ctx.attention_mask.shape
    pairs = removable(adapter, ctx.attention_mask).nonzero()  # [(b, i)]
    scores = torch.full((B, S), float("nan"), dtype=torch.float64)
    chunks = pairs.split(batch_size) if len(pairs) else ()  # nothing removable: all NaN
    for chunk in tqdm(chunks, desc=f"LOO layer {layer}", disable=not progress, leave=False):
        b, i = chunk[:, 0], chunk[:, 1]
        removed = torch.zeros(len(b), S, dtype=torch.bool, device=b.device)
        removed[torch.arange(len(b)), i] = True
        logits = run_suffix(adapter, states[layer][b], ctx.select(b), layer, removed, removal)
        scores[b.cpu(), i.cpu()] = (base[b] - logits.gather(1, target[b][:, None])[:, 0]).double().cpu()
    return scores


def run_suffix(adapter, h, ctx, layer: int, removed: torch.Tensor, removal: str = "mask"):
    """Logits ``[n, n_out]`` after removing the positions marked in ``removed [n, S]`` from the
    hidden states ``h [n, S, D]`` of ``layer`` on (blocks ``layer+1 .. L``, then the read-out)."""
    keep, readout_removed = None, None
    if removal == "zero":
        h = h.masked_fill(removed[..., None], 0.0)
    else:
        readout_removed = removed
        S = removed.shape[1]
        eye = torch.eye(S, dtype=torch.bool, device=removed.device)
        keep = (~removed[:, None, None, :]) | eye  # nobody reads i, except i itself
    h = adapter.run(h, ctx, begin=layer, keep=keep)
    return adapter.readout(h, ctx, removed=readout_removed)


def logits_without(model, input_ids, removed, attention_mask=None, removal="mask", layer=0):
    """Read-out logits ``[B, n_out]`` with several positions removed at once (``removed [B, S]``
    bool), using the same removal operators as :func:`loo`; the perturbation curves use it."""
    adapter = get_adapter(model)
    input_ids, attention_mask = adapter.check_inputs(input_ids, attention_mask)
    layer = checks.integer("layer", layer, 0, adapter.n_layers)
    if removal not in REMOVALS:
        raise ValueError(f"unknown removal {removal!r}; valid: {', '.join(REMOVALS)}")
    removed = torch.as_tensor(removed).to(input_ids.device).bool() & attention_mask.bool()
    with adapter.session(METHODS["gi"]), torch.no_grad():
        _, h, ctx = adapter.start(input_ids, attention_mask)
        h = adapter.run(h, ctx, end=layer)
        return run_suffix(adapter, h, ctx, layer, removed, removal)
