"""``explain()``: one forward and one backward pass with the method's rules swapped in.

The forward runs through the adapter's pieces (embeddings, blocks, read-out) so that every
residual stream is at hand; the backward is a single ``torch.autograd.grad`` from the explained
logits to the embedding parts, the residual streams and (PA-LRP with RoPE) the per-layer cos/sin
tables (and, with ``latents=``, the inputs of every block's attention and MLP output projections,
captured by forward pre-hooks during the same forward).  Relevance is ``tensor * modified
gradient`` summed over features (over each head's features for heads).  Nothing outlives the
call: hooks are removed, the attention function, grad mode and every module's train/eval flag
are restored, and no parameter's ``.grad`` is touched.
"""
from __future__ import annotations

import torch

from . import baselines, checks
from . import latents as latent_units
from .adapters import get_adapter
from .explanation import Explanation
from .methods import OTHER_METHODS, get_method


def explain(model, input_ids=None, method: str = "attnlrp", target=None, attention_mask=None,
            checkpoint: bool = False, *, pixel_values=None, latents=False, **kwargs) -> Explanation:
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
        latents: relevance of the latent units from the same backward pass (modified-gradient
            methods only): ``True`` fills ``heads`` (list of L ``[B, H]``: each head's output, the
            input of the attention output projection split by head, summed over positions) and
            ``neurons`` (list of L ``[B, d_ff]``: the input of the MLP's output projection, summed
            over positions; ``None`` for a model without MLPs); ``"positions"`` also fills
            ``heads_by_position`` ``[B, S, H]`` and ``neurons_by_position`` ``[B, S, d_ff]``
            (memory grows with ``S``: ask only when needed).  ``False`` (default): neither.
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
    latents = checks.latents(latents)
    if name in OTHER_METHODS:
        if latents:
            raise ValueError(f"latents=... needs a modified-gradient method, not {name!r}")
        return baselines.explain_baseline(adapter, input_ids, attention_mask, name, target, **kwargs)
    m = get_method(method)
    if kwargs:
        raise TypeError(f"unexpected keyword arguments for method {m.name!r}: {sorted(kwargs)}")
    checks.grad_allowed()
    with adapter.session(m), torch.enable_grad():
        return _explain(adapter, m, input_ids, attention_mask, target, checkpoint, latents)


def _explain(adapter, m, input_ids, attention_mask, target, checkpoint=False, latents=None,
             features=()) -> Explanation:
    """One forward, one backward.  ``latents``: None, ``"sum"`` or ``"positions"`` (see
    :func:`explain`); ``features``: names whose relevance is also kept per feature ``[B, S, D]``
    in ``extras["features"]`` (``"tokens"`` and / or residual-stream indices ``l``, as in
    ``layers[l]``), for :mod:`lrp_utils.captum`."""
    with latent_units.capture(adapter, enabled=bool(latents)) as units:
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
    grads = list(torch.autograd.grad(logit.sum(), inputs + pixels + units.tensors(), allow_unused=True))
    pixel_grads, latent_grads = grads[len(inputs):len(inputs) + len(pixels)], grads[len(inputs) + len(pixels):]
    kept = _features(features, parts, states, grads, attention_mask)
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
        pixels=_pixel_relevance(pixels[0], pixel_grads[0]) if pixels else None,
        **units.relevance(latent_grads, attention_mask, adapter.n_heads if latents else 0,
                          latents == "positions"),
        extras={"features": kept} if features else {},
    )


def _leaf_rope(rope, m):
    """Per-layer copies of the (cos, sin) tables: inputs with their own relevance under PA-LRP."""
    if not m.positions:
        return rope
    return tuple(t.detach().clone().requires_grad_() for t in rope)


def _features(features, parts, states, grads, attention_mask) -> dict:
    """``{name: [B, S, D]}`` per-feature relevance (``x * g``, padding 0) of the requested inputs."""
    out = {}
    for name in features:
        j = 0 if name == "tokens" else len(parts) + name
        x = parts["tokens"] if name == "tokens" else states[name]
        out[name] = _relevance(x, grads[j], attention_mask, reduce=False)
    return out


def _pixel_relevance(x: torch.Tensor, g: torch.Tensor | None) -> torch.Tensor:
    """``[B, C, H, W] -> [B, H, W]``: pixel times modified gradient, summed over channels (float32
    for half precision, as :func:`_relevance`)."""
    work = torch.float32 if x.dtype in (torch.float16, torch.bfloat16) else x.dtype
    if g is None:
        return torch.zeros(x[:, 0].shape, dtype=work)
    return (x.detach().to(work) * g.to(work)).sum(1).detach().cpu()


def _relevance(x: torch.Tensor, g: torch.Tensor | None, attention_mask, reduce: bool = True) -> torch.Tensor:
    """``(x * g).sum(-1)`` -> ``[B, S]`` on CPU (``reduce=False``: ``x * g`` ``[B, S, D]``), padding
    set to 0 (zeros where no gradient)."""
    work = latent_units.work_dtype(x.dtype)
    if g is None:
        return torch.zeros(x.shape if not reduce else attention_mask.shape, dtype=work)
    r = x.detach().to(work) * g.to(work) * attention_mask.to(work)[..., None]
    return (r.sum(-1) if reduce else r).detach().cpu()
