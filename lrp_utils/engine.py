"""``explain()``: one forward and one backward pass with the method's rules swapped in.

The forward runs through the adapter's pieces (embeddings, blocks, read-out) so that every
residual stream is at hand; the backward is a single ``torch.autograd.grad`` from the explained
logits to the embedding parts, the residual streams and (PA-LRP with RoPE) the per-layer cos/sin
tables.  Relevance is ``tensor * modified gradient`` summed over features.  Nothing outlives the
call: hooks are removed, the attention function, grad mode and every module's train/eval flag are
restored, and no parameter's ``.grad`` is touched.
"""
from __future__ import annotations

import contextlib

import torch
import torch.utils.checkpoint

from . import ops
from .adapters import get_adapter
from .explanation import Explanation
from .methods import OTHER_METHODS, get_method


def explain(model, input_ids, method: str = "attnlrp", target=None, attention_mask=None,
            checkpoint: bool = False, **kwargs):
    """Explain the model's output for ``input_ids`` with ``method``.

    Args:
        model: ``TinyTransformer``, ``BertForSequenceClassification``, ``GPT2LMHeadModel`` or
            ``LlamaForCausalLM`` (grouped-query attention included).
        input_ids: LongTensor ``[B, S]`` (``[S]`` is treated as batch 1).
        method: ``"gi"``, ``"cp-lrp"``, ``"cp-lrp-ah"``, ``"attnlrp"``, ``"pa-lrp"``,
            ``"pa-cp-lrp"``, the ablations ``"attnlrp-no-softmax"`` and ``"attnlrp-full-value"``
            (see ``lrp_utils.methods``), or the baselines ``"ig"``, ``"rollout"``, ``"random"``.
        target: class index (classifiers) or next-token id (causal LMs), an int or LongTensor
            ``[B]``; ``None`` explains the model's own argmax.
        attention_mask: ``[B, S]``, 1 = token, 0 = padding (right or left padding).
        checkpoint: recompute each block in the backward pass instead of storing its
            activations (``torch.utils.checkpoint``): less memory for long inputs, same relevance.
        **kwargs: for ``"ig"``: ``n_steps`` (default 32), ``ig_layers`` (also explain every
            residual stream; default False).

    Returns:
        :class:`Explanation` with CPU tensors.
    """
    adapter = get_adapter(model)
    input_ids, attention_mask = check_inputs(adapter, input_ids, attention_mask)
    name = method.lower() if isinstance(method, str) else method
    if name in OTHER_METHODS:
        from . import baselines

        return baselines.explain_baseline(adapter, input_ids, attention_mask, name, target, **kwargs)
    m = get_method(method)
    if kwargs:
        raise TypeError(f"unexpected keyword arguments for method {m.name!r}: {sorted(kwargs)}")
    with frozen(adapter), adapter.rules(m), torch.enable_grad():
        with ops.session(m, rotary_positions=m.positions and adapter.positions == "rotary"):
            return _explain(adapter, m, input_ids, attention_mask, target, checkpoint)


def _explain(adapter, m, input_ids, attention_mask, target, checkpoint=False) -> Explanation:
    ctx = adapter.prepare(input_ids, attention_mask)
    parts = {k: v.detach().requires_grad_() for k, v in adapter.embed_parts(input_ids, ctx).items()
             if v is not None}
    h = adapter.combine(parts)
    ctx.rope = adapter.rope_tables(h, ctx)
    ropes = [_leaf_rope(ctx.rope, m) for _ in range(adapter.n_layers)] if ctx.rope else []
    states = [h]
    for i in range(adapter.n_layers):
        rope = ropes[i] if ropes else None
        if checkpoint:
            h = torch.utils.checkpoint.checkpoint(_block_fn(adapter, i, ctx), h, rope, use_reentrant=False)
        else:
            h = adapter.block(i, h, ctx, rope=rope)
        states.append(h)
    logits = adapter.readout(h, ctx)
    target = check_target(adapter, logits, target)
    logit = logits.gather(1, target[:, None])[:, 0]
    flat_ropes = [t for pair in ropes for t in pair] if m.positions else []
    inputs = [*parts.values(), *states, *flat_ropes]
    grads = torch.autograd.grad(logit.sum(), inputs, allow_unused=True)
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
    )


def _block_fn(adapter, index, ctx):
    return lambda h, rope: adapter.block(index, h, ctx, rope=rope)


def _leaf_rope(rope, m):
    """Per-layer copies of the (cos, sin) tables: inputs with their own relevance under PA-LRP."""
    if not m.positions:
        return rope
    return tuple(t.detach().clone().requires_grad_() for t in rope)


def _relevance(x: torch.Tensor, g: torch.Tensor | None, attention_mask) -> torch.Tensor:
    """``(x * g).sum(-1)`` -> ``[B, S]`` on CPU, padding set to 0 (zeros where no gradient)."""
    work = torch.float32 if x.dtype in (torch.float16, torch.bfloat16) else x.dtype
    if g is None:
        return torch.zeros(attention_mask.shape, dtype=work)
    r = (x.detach().to(work) * g.to(work)).sum(-1) * attention_mask.to(work)
    return r.detach().cpu()


@contextlib.contextmanager
def frozen(adapter):
    """Eval mode for the duration (dropout off); restores every module's own flag afterwards.
    Only modules in training mode are touched.  ``adapter``: an adapter or a model."""
    training = [m for m in get_adapter(adapter).all_modules if m.training]
    for m in training:
        m.training = False
    try:
        yield
    finally:
        for m in training:
            m.training = True


def check_inputs(adapter, input_ids, attention_mask):
    """Validate and normalise ``input_ids [B, S]`` and ``attention_mask [B, S]``; clear errors."""
    if not isinstance(input_ids, torch.Tensor):
        raise TypeError(f"input_ids must be a torch.LongTensor, got {type(input_ids).__name__}")
    if input_ids.is_floating_point() or input_ids.dtype == torch.bool:
        raise TypeError(f"input_ids must hold integer token ids, got dtype {input_ids.dtype}")
    if input_ids.dim() == 1:
        input_ids = input_ids[None]
    if input_ids.dim() != 2 or input_ids.numel() == 0 or input_ids.shape[1] == 0:
        raise ValueError(f"input_ids must be a non-empty [batch, seq] tensor, got shape {tuple(input_ids.shape)}")
    vocab = adapter.word_embeddings.num_embeddings
    if int(input_ids.min()) < 0 or int(input_ids.max()) >= vocab:
        raise ValueError(f"input_ids must lie in [0, {vocab}) (the vocabulary size); got "
                         f"min {int(input_ids.min())}, max {int(input_ids.max())}")
    if adapter.dtype == torch.float16 and adapter.device.type == "cpu":
        raise TypeError("float16 models are not supported on CPU (half-precision matmuls there are "
                        "slow and inexact); use model.float(), model.to(torch.bfloat16) or a GPU")
    device = adapter.device
    if attention_mask is None:
        attention_mask = torch.ones_like(input_ids)
    else:
        attention_mask = torch.as_tensor(attention_mask)
        if attention_mask.dim() == 1:
            attention_mask = attention_mask[None]
        if attention_mask.shape != input_ids.shape:
            raise ValueError(f"attention_mask shape {tuple(attention_mask.shape)} does not match "
                             f"input_ids shape {tuple(input_ids.shape)}")
        if (attention_mask.long().sum(1) == 0).any():
            raise ValueError("every sequence needs at least one non-padding token (attention_mask row of zeros)")
    return input_ids.to(device), attention_mask.long().to(device)


def check_target(adapter, logits: torch.Tensor, target) -> torch.Tensor:
    """``target`` as LongTensor ``[B]`` on the logits' device (argmax when None); range-checked."""
    B, n_out = logits.shape
    if target is None:
        return logits.detach().argmax(-1)
    t = torch.as_tensor(target, device=logits.device).long().reshape(-1)
    if t.numel() == 1:
        t = t.expand(B)
    if t.numel() != B:
        raise ValueError(f"target must be an int or have one entry per example ({B}), got {t.numel()}")
    if int(t.min()) < 0 or int(t.max()) >= n_out:
        kind = "class" if adapter.task == "classify" else "token id"
        raise ValueError(f"target {kind} out of range: must lie in [0, {n_out}), got {t.tolist()}")
    return t.clone()
