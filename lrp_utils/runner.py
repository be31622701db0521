"""The one batched loop over a dataset: every study explains, scores and leaves one out through it.

Examples are sorted by length and taken ``batch_size`` at a time; each batch is cropped to the
columns any of its rows uses, so padding shared by the whole batch costs nothing (padding on the
left or on the right).  Per-batch results are put back into dataset-wide ``[n, S]`` tensors
(:meth:`lrp_utils.Explanation.assemble`), 0 (relevance) or NaN (LOO) at padding.

* :func:`explain_many`: ``{method: Explanation [n, S]}``; with ``target=None`` the first method
  explains the model's own argmax and the others the same targets; ``contrast`` explains the logit
  difference ``logit[target] - logit[contrast]``; wall and CPU seconds per method in
  ``exp.extras["wall_s"]`` / ``["cpu_s"]``.
* :func:`loo_many`: leave-one-out at several layers, ``[len(layers), n, S]``.
* :func:`predict`: read-out logits ``[n, n_out]``; :func:`readout_logits` for one batch.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from .progress import tqdm

from . import checks, masks, profiling
from .adapters import get_adapter
from .engine import explain
from .explanation import Explanation
from .loo import loo_by_layer
from .methods import METHODS

#: keyword arguments :func:`explain_many` passes on, and the methods that take them
METHOD_KWARGS = {"n_steps": ("ig",), "ig_layers": ("ig",), "seed": ("random",)}


def length_batches(attention_mask: torch.Tensor, batch_size: int):
    """Yield ``(indices, columns)``: examples sorted by length (stable), ``batch_size`` at a time,
    and the ``slice`` of columns any of them uses, so padding shared by the whole batch is cropped
    (right padding: ``slice(0, longest)``; left padding: the last ``longest`` columns).

    ``attention_mask [n, S]`` (1 = token); ``indices`` is a CPU LongTensor.  Index a batch as
    ``input_ids[indices, columns]``.
    """
    batch_size = checks.positive_int("batch_size", batch_size)
    m = attention_mask.bool().cpu()
    for idx in torch.argsort(m.sum(1), stable=True).split(batch_size):
        used = m[idx].any(0).nonzero()[:, 0]
        yield idx, slice(int(used[0]), int(used[-1]) + 1) if len(used) else slice(0, 0)


@dataclass
class Batch:
    """One length batch: ``rows`` (CPU LongTensor of example indices), ``cols`` (column slice) and
    the cropped ``input_ids`` / ``attention_mask`` ``[b, s]`` on the model's device."""

    rows: torch.Tensor
    cols: slice
    input_ids: torch.Tensor
    attention_mask: torch.Tensor


def batches(model, input_ids, attention_mask=None, batch_size: int = 16, progress: bool = False,
            desc: str = "batches"):
    """Iterate :class:`Batch` es of ``input_ids, attention_mask [n, S]`` (mask None = no padding)."""
    mask = torch.ones_like(input_ids) if attention_mask is None else torch.as_tensor(attention_mask)
    dev = get_adapter(model).device
    for rows, cols in tqdm(list(length_batches(mask, batch_size)), desc=desc, disable=not progress, leave=False):
        yield Batch(rows, cols, input_ids[rows, cols].to(dev), mask[rows, cols].to(dev))


@torch.no_grad()
def readout_logits(model, input_ids, attention_mask, position_ids=None) -> torch.Tensor:
    """Read-out logits ``[b, n_out]`` of one batch ``[b, s]`` through the adapter (the model's own
    function); ``position_ids [b, s]`` overrides the positions (a shortened sequence keeps its
    tokens' original positions)."""
    adapter = get_adapter(model)
    dev = adapter.device
    with adapter.session(METHODS["gi"]):
        pos = None if position_ids is None else position_ids.to(dev)
        return adapter.forward(input_ids.to(dev), attention_mask.to(dev), pos)


def predict(model, input_ids, attention_mask=None, batch_size: int = 32) -> torch.Tensor:
    """Read-out logits ``[n, n_out]`` (CPU float64, rows in input order) in length batches."""
    out = None
    for b in batches(model, input_ids, attention_mask, batch_size):
        logits = readout_logits(model, b.input_ids, b.attention_mask).double().cpu()
        out = logits.new_zeros(len(input_ids), logits.shape[1]) if out is None else out
        out[b.rows] = logits
    return out


@torch.no_grad()
def token_predictions(model, input_ids, attention_mask=None, batch_size: int = 16) -> torch.Tensor:
    """``[n, S]`` the causal LM's top-1 next token after every prefix (``out[b, k]`` predicts token
    ``k + 1``; -1 at padding), from the model's own forward (all positions at once), in length
    batches with right padding."""
    adapter = get_adapter(model)
    if adapter.task != "causal":
        raise ValueError("token_predictions needs a causal language model (next-token logits)")
    if attention_mask is not None and masks.left_padded(torch.as_tensor(attention_mask)):
        raise ValueError("token_predictions needs right padding (the model's own forward counts positions from 0)")
    out = torch.full(input_ids.shape, -1, dtype=torch.long)
    with checks.frozen(adapter.all_modules):
        for b in batches(model, input_ids, attention_mask, batch_size):
            logits = model(input_ids=b.input_ids, attention_mask=b.attention_mask)
            pred = getattr(logits, "logits", logits).argmax(-1).cpu()
            out[b.rows, b.cols] = pred.masked_fill(b.attention_mask.cpu() == 0, -1)
    return out


def _kwargs(method: str, batch_index: int, kwargs: dict) -> dict:
    """The keyword arguments of ``method`` (``random`` gets ``seed + batch_index``)."""
    out = {k: v for k, v in kwargs.items() if method in METHOD_KWARGS[k]}
    if method == "random":
        out["seed"] = kwargs.get("seed", 0) + batch_index
    return out


def explain_many(model, input_ids, attention_mask=None, methods=("attnlrp",), target=None, contrast=None,
                 batch_size: int = 16, ig_batch_size: int | None = None, progress: bool = False,
                 clock: profiling.Clock | None = None, latents=False, **method_kwargs) -> dict:
    """``{method: Explanation}`` of every example (fields ``[n, S]``, float64, 0 at padding).

    Args:
        input_ids, attention_mask: ``[n, S]`` (padding on either side; mask None = none).
        methods: names :func:`lrp_utils.explain` accepts.
        target: ``None`` (the first method explains the argmax, the others the same targets), an
            int or ``[n]``.  ``contrast``: ``[n]`` (or an int) second target: each explanation is
            that of ``logit[target] - logit[contrast]`` (:meth:`Explanation.contrast`).
        batch_size: examples per length batch (``ig_batch_size`` for IG, which captum expands
            ``n_steps`` times; default ``batch_size``).
        clock: a :class:`lrp_utils.profiling.Clock` to accumulate each method's seconds into.
        latents: ``True`` / ``"positions"``: also the latent units' relevance (see
            :func:`lrp_utils.explain`; modified-gradient methods only).
        **method_kwargs: ``n_steps`` / ``ig_layers`` (IG), ``seed`` (random: ``seed + batch``).
    """
    unknown = set(method_kwargs) - set(METHOD_KWARGS)
    if unknown:
        raise TypeError(f"unexpected keyword arguments {sorted(unknown)}; valid: {', '.join(METHOD_KWARGS)}")
    n, S = input_ids.shape
    target, contrast = checks.per_example(target, n), checks.per_example(contrast, n, "contrast")
    if target is None and contrast is not None:
        raise ValueError("a contrast needs explicit targets (e.g. from lrp_utils.tasks.set_targets)")
    clock = profiling.Clock() if clock is None else clock
    out = {}
    for m in methods:
        bs = ig_batch_size if m == "ig" and ig_batch_size is not None else batch_size
        parts = []
        with clock.measure(m):
            for j, b in enumerate(batches(model, input_ids, attention_mask, bs, progress, f"explaining {m}")):
                run = lambda t: explain(model, b.input_ids, m, target=None if t is None else t[b.rows],  # noqa: E731
                                        attention_mask=b.attention_mask, latents=latents,
                                        **_kwargs(m, j, method_kwargs))
                e = run(target)
                parts.append((b.rows, b.cols, e if contrast is None else e.contrast(run(contrast))))
        out[m] = Explanation.assemble(parts, (n, S))
        out[m].extras.update(wall_s=clock.wall[m], cpu_s=clock.cpu[m])
        target = out[m].target if target is None else target
    return out


def loo_many(model, input_ids, attention_mask=None, layers=None, target=None, removal: str = "mask",
             batch_size: int = 16, loo_batch_size: int = 128, progress: bool = False,
             clock: profiling.Clock | None = None) -> torch.Tensor:
    """Leave-one-out (:func:`lrp_utils.loo_by_layer`) at ``layers`` (default ``0 .. L``) for every
    example: ``[len(layers), n, S]`` float64, NaN at padding and read-out positions.  ``target``:
    None (argmax), an int or ``[n]``; ``loo_batch_size`` bounds the removed copies per suffix
    batch; ``clock`` accumulates the seconds under the key ``removal``."""
    n, S = input_ids.shape
    L = get_adapter(model).n_layers
    layers = list(range(L + 1)) if layers is None else checks.layers(layers, L)
    target = checks.per_example(target, n)
    out = torch.full((len(layers), n, S), float("nan"), dtype=torch.float64)
    clock = profiling.Clock() if clock is None else clock
    with clock.measure(removal):
        for b in batches(model, input_ids, attention_mask, batch_size, progress, f"LOO ({removal})"):
            t = None if target is None else target[b.rows]
            scores = loo_by_layer(model, b.input_ids, layers, target=t, attention_mask=b.attention_mask,
                                  removal=removal, batch_size=loo_batch_size)
            for j in range(len(layers)):
                out[j][b.rows, b.cols] = scores[j].double()
    return out
