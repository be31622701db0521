"""``explain()``: one forward and one backward pass with the method's rules swapped in.

The forward runs through the adapter's pieces (embeddings, blocks, read-out) so that every
residual stream is at hand; the backward is a single ``torch.autograd.grad`` from the explained
logits to the embedding parts, the residual streams and (PA-LRP with RoPE) the per-layer cos/sin
tables.  Relevance is ``tensor * modified gradient`` summed over features.  Nothing outlives the
call: hooks are removed, the attention function, grad mode and every module's train/eval flag are
restored, and no parameter's ``.grad`` is touched.
"""
from __future__ import annotations

import torch

from . import baselines, checks
from .adapters import get_adapter
from .explanation import Explanation
from .methods import OTHER_METHODS, get_method


def explain(model, input_ids=None, method: str = "attnlrp", target=None, attention_mask=None,
            checkpoint: bool = False, *, pixel_values=None, **kwargs) -> Explanation:
    """Explain the model's output for ``input_ids`` with ``method``.

    Args:
        model: a supported Hugging Face model (``lrp_utils.adapters.supported()``: BERT classifier,
            GPT-2 LM / classifier, LLaMA LM / classifier incl. grouped-query attention, and the
            families of the supported-models table in the README) or a ``TinyTransformer``.
        input_ids: integer tensor ``[B, S]`` (``[S]`` is treated as batch 1).  Required, except for
            vision models, which take ``pixel_values`` instead.
        method: ``"gi"``, ``"cp-lrp"``, ``"cp-lrp-ah"``, ``"attnlrp"``, ``"pa-lrp"``,
            ``"pa-cp-lrp"``, the ablations ``"attnlrp-no-softmax"`` and ``"attnlrp-full-value"``
            (see ``lrp_utils.methods``), or the baselines ``"ig"``, ``"rollout"``, ``"random"``.
        target: class index (classifiers) or next-token id (causal LMs): an int or one per example
            (integers only); ``None`` explains the model's own argmax.
        attention_mask: ``[B, S]`` of 0 / 1, 1 = token, 0 = padding (left or right padding).
        checkpoint: recompute each block in the backward pass instead of storing its
            activations (``torch.utils.checkpoint``): less memory for long inputs, same relevance.
        pixel_values: vision models (``ViTForImageClassification``) only: images ``[B, C, H, W]``
            at the model's size; ``tokens`` is then per patch embedding (position 0: [CLS]) and
            ``pixels [B, H, W]`` the relevance at the pixel input, summed over channels.
        **kwargs: for ``"ig"``: ``n_steps`` (default 32), ``ig_layers`` (also explain every
            residual stream; default False); for ``"random"``: ``seed``.

    Returns:
        :class:`Explanation` with CPU tensors.
    """
    adapter = get_adapter(model)
    inputs = checks.model_inputs(adapter.modality, type(adapter.model).__name__, input_ids, pixel_values)
    input_ids, attention_mask = adapter.check_inputs(inputs, attention_mask)
    target = checks.per_example(target, len(input_ids))
    name = method.lower() if isinstance(method, str) else method
    if name in OTHER_METHODS:
        return baselines.explain_baseline(adapter, input_ids, attention_mask, name, target, **kwargs)
    m = get_method(method)
    if kwargs:
        raise TypeError(f"unexpected keyword arguments for method {m.name!r}: {sorted(kwargs)}")
    checks.grad_allowed()
    with adapter.session(m), torch.enable_grad():
        return _explain(adapter, m, input_ids, attention_mask, target, checkpoint)


def _explain(adapter, m, input_ids, attention_mask, target, checkpoint=False) -> Explanation:
    parts, h, ctx = adapter.start(input_ids, attention_mask, leaves=True)
    ropes = [_leaf_rope(adapter.layer_rope(i, ctx), m) for i in range(adapter.n_layers)] if ctx.rope else []
    states = [h]
    h = adapter.run(h, ctx, ropes=ropes, states=states, checkpoint=checkpoint)
    logits = adapter.readout(h, ctx)
    target = checks.resolve_target(logits, target, adapter.target_kind)
    logit = logits.gather(1, target[:, None])[:, 0]
    flat_ropes = [t for pair in ropes for t in pair] if m.positions else []
    inputs = [*parts.values(), *states, *flat_ropes]
    pixels = [ctx.pixels] if ctx.pixels is not None and ctx.pixels.requires_grad else []
    grads = torch.autograd.grad(logit.sum(), inputs + pixels, allow_unused=True)
    rel = [_relevance(x, g, attention_mask) for x, g in zip(inputs, grads)]
    by_name = dict(zip(parts, rel))
    n_parts, n_states = len(parts), len(states)
    layers = rel[n_parts:n_parts + n_states]
    rope_rel = [rel[j] + rel[j + 1] for j in range(n_parts + n_states, len(rel), 2)]
    positions = by_name.get("positions") if m.positions else None
    if rope_rel:
        positions = torch.stack(rope_rel).sum(0)
    return Explanation(
        tokens=by_name["tokens"], positions=positions, layers=layers,
        logit=logit.detach().cpu(), target=target.cpu(), method=m.name,
        token_types=by_name.get("types") if m.positions else None,
        positions_by_layer=rope_rel or None,
        pixels=_pixel_relevance(pixels[0], grads[-1]) if pixels else None,
    )


def _leaf_rope(rope, m):
    """Per-layer copies of the (cos, sin) tables: inputs with their own relevance under PA-LRP."""
    if not m.positions:
        return rope
    return tuple(t.detach().clone().requires_grad_() for t in rope)


def _pixel_relevance(x: torch.Tensor, g: torch.Tensor | None) -> torch.Tensor:
    """``[B, C, H, W] -> [B, H, W]``: pixel times modified gradient, summed over channels (float32
    for half precision, as :func:`_relevance`)."""
    work = torch.float32 if x.dtype in (torch.float16, torch.bfloat16) else x.dtype
    if g is None:
        return torch.zeros(x[:, 0].shape, dtype=work)
    return (x.detach().to(work) * g.to(work)).sum(1).detach().cpu()


def _relevance(x: torch.Tensor, g: torch.Tensor | None, attention_mask) -> torch.Tensor:
    """``(x * g).sum(-1)`` -> ``[B, S]`` on CPU, padding set to 0 (zeros where no gradient)."""
    work = torch.float32 if x.dtype in (torch.float16, torch.bfloat16) else x.dtype
    if g is None:
        return torch.zeros(attention_mask.shape, dtype=work)
    r = (x.detach().to(work) * g.to(work)).sum(-1) * attention_mask.to(work)
    return r.detach().cpu()
