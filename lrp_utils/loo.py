"""Batched leave-one-out (LOO) at any layer, as defined in ``DESIGN.md``.

``loo(model, ids, layer=l)[b, i] = logit(x) - logit(x with position i removed from layer l on)``.

* ``removal="mask"``: in blocks ``l+1 .. L`` no other position may read position ``i`` (its key
  and value are masked for every query but its own); ``i`` itself still computes.
* ``removal="zero"``: the hidden state of position ``i`` at layer ``l`` is set to zero.

The prefix (embeddings and blocks ``1 .. l``) is computed once; the removals run as batches of
at most ``batch_size`` copies through the remaining blocks.  Decoders recompute a removal of
position ``i`` only from ``i`` on, reading the keys and values of earlier positions from the
unperturbed pass, and the last block computes only the read-out position (:mod:`lrp_utils.reuse`;
architectures it does not cover take the plain path, with the same numbers).  Read-out positions
and padding are NaN.
"""
from __future__ import annotations

import torch
from .progress import tqdm

from . import checks
from .adapters import get_adapter
from .methods import METHODS
from .reuse import base_pass, plan_chunks, removal_states, spans, target_logits, usable

#: removal operators of :func:`loo` (see the module docstring)
REMOVALS = ("mask", "zero")


def loo(model, input_ids=None, layer=0, target=None, attention_mask=None, removal="mask",
        batch_size=64, progress=False, reuse=True, *, pixel_values=None) -> torch.Tensor:
    """Leave-one-out scores ``[B, S]`` at ``layer`` (0 = input embeddings, ``L`` = last block).
    See the module docstring for the two removal operators.  CPU float64 tensor; NaN at the
    read-out position, at padding, and everywhere when nothing can be removed (one token).
    Vision models take ``pixel_values`` instead of ``input_ids`` (positions: [CLS] and patches)."""
    layer = checks.integer("layer", layer, 0, get_adapter(model).n_layers)
    return loo_by_layer(model, input_ids, [layer], target, attention_mask, removal, batch_size, progress,
                        reuse, pixel_values=pixel_values)[0]


def loo_by_layer(model, input_ids=None, layers=None, target=None, attention_mask=None, removal="mask",
                 batch_size=64, progress=False, reuse=True, *, pixel_values=None) -> torch.Tensor:
    """LOO at several layers (default all ``0 .. L``) sharing one prefix pass: ``[len(layers), B, S]``.
    ``reuse=False`` forces the plain path (every removal runs all positions of the later blocks)."""
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
        _, h, ctx = adapter.start(input_ids, attention_mask)
        states, cache = base_pass(adapter, h, ctx)
        logits = adapter.readout(states[-1], ctx)
        target = checks.resolve_target(logits, target, adapter.target_kind)
        pairs = removable(adapter, attention_mask).nonzero()  # [(b, i)]
        chunks, run, base = _plan(adapter, states, cache, ctx, pairs, layers, target, removal, batch_size, reuse)
        if base is None:
            base = logits.gather(1, target[:, None])[:, 0]
        return _scores(run, pairs, chunks, base, (len(layers), *attention_mask.shape), progress)


def removable(adapter, attention_mask: torch.Tensor) -> torch.Tensor:
    """``[B, S]`` bool: positions LOO removes (not padding, not the read-out position)."""
    ok = attention_mask.bool().clone()
    ok[torch.arange(ok.shape[0], device=ok.device), adapter.readout_positions(attention_mask)] = False
    return ok


def _plan(adapter, states, cache, ctx, pairs, layers, target, removal, batch_size, reuse):
    """``(chunks, run, base)``: index tensors into the removal rows ``pairs [P, 2]``, the function
    ``run(b, i) -> target logits [len(layers), n]`` of one chunk, and the unperturbed target logits
    ``[B]`` computed the same way (None: the read-out's).  The reuse path where it applies (all
    layers' rows of a chunk run together, so a chunk has ``batch_size / len(layers)`` rows)."""
    if reuse and usable(adapter, cache):
        per_chunk = max(1, batch_size // len(set(layers) - {adapter.n_layers} or {0}))
        chunks = plan_chunks(*spans(adapter, ctx.attention_mask, pairs[:, 0], pairs[:, 1]), per_chunk)
        r = adapter.readout_positions(ctx.attention_mask)
        base = target_logits(adapter, states[-1][torch.arange(len(r), device=r.device), r], target)

        def run(b, i):
            h = removal_states(adapter, states, cache, ctx, layers, b, i, removal, batch_size)
            return target_logits(adapter, h.flatten(0, 1), target[b].repeat(len(layers))).view(len(layers), -1)
        return chunks, run, base
    S = ctx.attention_mask.shape[1]
    return list(torch.arange(len(pairs)).split(batch_size)), lambda b, i: torch.stack([run_suffix(
        adapter, states[l][b], ctx.select(b), l, _one_hot(i, S), removal).gather(1, target[b][:, None])[:, 0]
        for l in layers]), None


def _one_hot(i: torch.Tensor, S: int) -> torch.Tensor:
    """``[n, S]`` bool, True at position ``i[k]`` of row ``k``."""
    return torch.nn.functional.one_hot(i, S).bool()


def _scores(run, pairs, chunks, base, shape, progress) -> torch.Tensor:
    """``[n_layers, B, S]`` float64 CPU: ``base - logit`` for every removal row of ``pairs
    [(b, i)]``, run chunk by chunk (``chunks``: index tensors into ``pairs``; ``run(b, i)`` gives
    the target logits ``[n_layers, n]``), NaN elsewhere."""
    scores = torch.full(shape, float("nan"), dtype=torch.float64)
    for idx in tqdm(chunks, desc="LOO", disable=not progress, leave=False):
        b, i = pairs[idx.to(pairs.device)].unbind(1)
        scores[:, b.cpu(), i.cpu()] = (base[b] - run(b, i)).double().cpu()
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
