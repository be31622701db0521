"""Latent units, attention heads and MLP neurons: capturing them, their relevance, and switching
them off.

A *head* is one slice of the input of a block's attention output projection (the concatenated
head outputs ``[B, S, H * head_dim]``); a *neuron* is one feature of the input of the MLP's output
projection ``[B, S, d_ff]`` (after the nonlinearity or gate product).  The adapter names the two
projections (:meth:`~lrp_utils.adapters.base.Adapter.latent_modules`).  Both are linear maps of
these inputs, so the relevance of a unit is ``activation * modified gradient`` summed over the
unit's features (and over positions), read from the same backward pass as the token relevance
(``explain(..., latents=True)``), as AttnLRP (Achtibat et al. 2024, Sec. 4) explains latent units.

Ablation (:func:`ablate`) zeroes units in the projection's input through forward pre-hooks that
are removed on exit, per example (``off [B, U]``) or for all examples (``off [1, U]``).  The
faithfulness of a ranking of units is the drop of the explained logit when its top-k units are
switched off (:func:`ablation_curve`, :func:`faithfulness`).

Shapes: ``L`` blocks, ``U`` units per block (``H`` heads or ``F`` neurons), ``N = L * U`` units
of one kind in a model; rankings and masks over all of them are ``[B, N]``, block-major.
"""
from __future__ import annotations

import contextlib
import functools

import pandas as pd
import torch

from . import checks, metrics
from .adapters import get_adapter
from .explanation import Explanation

KINDS = ("heads", "neurons")
#: rankings of units compared by :func:`faithfulness` (besides relevance of LRP methods)
BASELINES = ("grad x act", "|activation|", "random")


def work_dtype(dtype: torch.dtype) -> torch.dtype:
    """Relevance is accumulated in float32 for half-precision models, else in the model dtype."""
    return torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype


# -- capturing the units in a forward pass ------------------------------------------------------
class Captured:
    """Inputs of the latent modules seen in one forward pass: ``units[l] = [heads_in, neurons_in]``
    (``[B, S, H * head_dim]``, ``[B, S, F]`` or None).  Only the first call of each module is kept
    (a checkpointed block recomputed in the backward pass does not overwrite it)."""

    def __init__(self, n_layers: int):
        self.units = [[None, None] for _ in range(n_layers)]

    def tensors(self) -> list[torch.Tensor]:
        """The captured tensors, block by block (heads, then neurons), Nones skipped."""
        return [t for pair in self.units for t in pair if t is not None]

    def relevance(self, grads, attention_mask, n_heads: int, positions: bool) -> dict:
        """Explanation fields from the gradients of :meth:`tensors` (same order): ``heads``,
        ``neurons`` (lists of ``[B, U]``) and, with ``positions``, the ``*_by_position`` lists
        ``[B, S, U]``; ``{}`` when nothing was captured.  A kind missing from some block (a block
        without MLP) is None for the whole model."""
        if not self.tensors():
            return {}
        grads, out = iter(grads), {k: [] for k in ("heads", "neurons", "heads_by_position", "neurons_by_position")}
        for pair in self.units:
            for kind, x in zip(KINDS, pair):
                if x is None:
                    continue
                units = n_heads if kind == "heads" else x.shape[-1]
                total, by_pos = unit_relevance(x, next(grads), attention_mask, units)
                out[kind].append(total)
                out[f"{kind}_by_position"].append(by_pos if positions else None)
        return {k: (v if v and v[0] is not None and len(v) == len(self.units) else None) for k, v in out.items()}

    def _hook(self, layer: int, kind: int, module, args):
        if self.units[layer][kind] is None:
            self.units[layer][kind] = args[0]


@contextlib.contextmanager
def capture(adapter, enabled: bool = True):
    """Record the inputs of every latent module while the block runs (forward pre-hooks, always
    removed).  Enter it *inside* ``adapter.session(...)`` so that the rules' hooks run first and the
    captured tensor is the one the projection consumes.  Yields a :class:`Captured`."""
    got = Captured(adapter.n_layers if enabled else 0)
    handles = []
    try:
        for layer, pair in enumerate(adapter.latent_modules() if enabled else []):
            for kind, module in enumerate(pair):
                if module is not None:
                    handles.append(module.register_forward_pre_hook(functools.partial(got._hook, layer, kind)))
        yield got
    finally:
        for h in handles:
            h.remove()


def unit_relevance(x, g, attention_mask, n_units: int):
    """``x * g`` summed over each unit's features: ``([B, U], [B, S, U])`` on CPU, padding 0.
    ``x, g [B, S, U * width]`` (``g`` None: zeros)."""
    work = work_dtype(x.dtype)
    if g is None:
        r = torch.zeros(*x.shape[:2], n_units, dtype=work)
    else:
        r = (x.detach().to(work) * g.to(work)).unflatten(-1, (n_units, -1)).sum(-1)
        r = (r * attention_mask.to(work)[..., None]).detach().cpu()
    return r.sum(1), r


def magnitudes(model, input_ids, attention_mask=None, kind: str = "heads") -> list[torch.Tensor]:
    """Activation magnitude of every unit: per block ``[B, U]``, the sum over positions of the L2
    norm of the unit's features (``|a|`` for a neuron).  One plain forward pass, no gradient."""
    adapter, kind = get_adapter(model), _kind(kind)
    ids, mask = adapter.check_inputs(input_ids, attention_mask)
    with checks.frozen(adapter.all_modules), torch.no_grad(), capture(adapter) as got:
        adapter.forward(ids, mask)
    j = KINDS.index(kind)
    width = lambda x: adapter.n_heads if kind == "heads" else x.shape[-1]  # noqa: E731
    return [(x.unflatten(-1, (width(x), -1)).norm(dim=-1) * mask[..., None]).sum(1).cpu()
            for x in (pair[j] for pair in got.units)]


# -- switching units off ------------------------------------------------------------------------
def _kind(kind: str) -> str:
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    return kind


def flatten(per_block: list[torch.Tensor]) -> torch.Tensor:
    """L tensors ``[B, U]`` -> ``[B, L * U]`` (block-major)."""
    return torch.cat(list(per_block), dim=1)


def _zero_units(module, args, keep):
    x = args[0]
    k = keep.to(x.device, x.dtype).repeat_interleave(x.shape[-1] // keep.shape[-1], dim=-1)
    return (x * k[:, None], *args[1:])


@contextlib.contextmanager
def ablate(model, kind: str, off: torch.Tensor):
    """Switch units off while the block runs: ``off`` bool ``[B, N]`` or ``[1, N]`` (True = zero this
    unit at every position; ``N = L * U``, see :func:`flatten`).  Forward pre-hooks on the latent
    modules, removed on exit: the model is unchanged afterwards."""
    adapter, j = get_adapter(model), KINDS.index(_kind(kind))
    mods = [pair[j] for pair in adapter.latent_modules()]
    off = torch.as_tensor(off, dtype=torch.bool)
    if off.dim() != 2 or off.shape[1] % len(mods):
        raise ValueError(f"off must be [B, n_layers * units] boolean, got shape {tuple(off.shape)}")
    handles = []
    try:
        for mod, block_off in zip(mods, off.chunk(len(mods), dim=1)):
            if mod is not None and block_off.any():
                handles.append(mod.register_forward_pre_hook(functools.partial(_zero_units, keep=~block_off)))
        yield
    finally:
        for h in handles:
            h.remove()


def top_k(scores: torch.Tensor, k: int) -> torch.Tensor:
    """bool ``[B, N]``: the ``k`` highest ``scores [B, N]`` of each row (ties: lower index first)."""
    order = torch.argsort(scores, dim=1, descending=True, stable=True)
    return torch.zeros_like(scores, dtype=torch.bool).scatter_(1, order[:, :k], True)


def logits_with(model, input_ids, attention_mask, kind: str, off, batch_size: int | None = None) -> torch.Tensor:
    """Read-out logits ``[B, n_out]`` with the units ``off`` (see :func:`ablate`) switched off; with
    ``batch_size``, in length-sorted batches (``off`` then ``[1, N]``: the same units for all)."""
    adapter = get_adapter(model)
    if batch_size is not None:
        from .runner import predict  # runner -> engine -> this module

        with checks.frozen(adapter.all_modules), ablate(adapter, kind, off):
            return predict(adapter.model, input_ids, attention_mask, batch_size)
    ids, mask = adapter.check_inputs(input_ids, attention_mask)
    with checks.frozen(adapter.all_modules), torch.no_grad(), ablate(adapter, kind, off):
        return adapter.forward(ids, mask)


def ablation_curve(model, input_ids, attention_mask, target, scores, ks, kind: str, base=None) -> torch.Tensor:
    """Drop of the explained logit when each example's top-k units by ``scores [B, N]`` are off:
    ``[len(ks), B]`` = ``logit(x) - logit(x, top-k off)`` (float64, CPU); ``target [B]``;
    ``base [B]``: the logits without ablation, if already at hand."""
    rows = torch.arange(len(target))
    if base is None:
        none = torch.zeros(1, scores.shape[1], dtype=torch.bool)
        base = logits_with(model, input_ids, attention_mask, kind, none)[rows, target]
    base, out = base.double().cpu(), []
    for k in ks:
        if int(k) == 0:
            out.append(torch.zeros_like(base))
            continue
        logit = logits_with(model, input_ids, attention_mask, kind, top_k(scores, int(k)))[rows, target]
        out.append(base - logit.double().cpu())
    return torch.stack(out)


# -- rankings and faithfulness curves over a dataset --------------------------------------------
def explain_units(model, input_ids, attention_mask, method: str, target=None, batch_size: int = 16,
                  contrast=None) -> Explanation:
    """``explain(..., latents=True)`` over a dataset (:func:`lrp_utils.runner.explain_many`)."""
    from .runner import explain_many  # runner -> engine -> this module

    return explain_many(model, input_ids, attention_mask, (method,), target, contrast, batch_size,
                        latents=True)[method]


def rankings(model, input_ids, attention_mask, kind: str, methods=("attnlrp", "cp-lrp"), target=None,
             batch_size: int = 16, seed: int = 0):
    """Scores ``{name: [n, N]}`` ranking every unit of ``kind`` per example: the relevance of each
    LRP method in ``methods``, ``"grad x act"`` (``gi`` latents), ``"|activation|"``
    (:func:`magnitudes`) and ``"random"`` (seeded); and the explained ``target [n]``."""
    kind = _kind(kind)
    exps = {m: explain_units(model, input_ids, attention_mask, m, target, batch_size) for m in (*methods, "gi")}
    target = exps["gi"].target
    out = {m: flatten(getattr(exps[m], kind)) for m in methods}
    out["grad x act"] = flatten(getattr(exps["gi"], kind))
    mags = [magnitudes(model, input_ids[i:i + batch_size], None if attention_mask is None
                       else attention_mask[i:i + batch_size], kind) for i in range(0, len(input_ids), batch_size)]
    out["|activation|"] = torch.cat([flatten(m) for m in mags]).double()
    gen = torch.Generator().manual_seed(seed)
    out["random"] = torch.rand(out["grad x act"].shape, generator=gen, dtype=torch.float64)
    return out, target


def class_units(model, input_ids, attention_mask, labels, cls: int = 1, kind: str = "neurons",
                method: str = "attnlrp", batch_size: int = 16):
    """Units of a two-class classifier that carry class ``cls``: each unit's relevance for the logit
    difference ``cls - other`` (:meth:`Explanation.contrast`), averaged over the examples of
    ``labels == cls`` the model classifies correctly (an explanation is evidence about the model
    only where it is competent).  Returns ``(scores [N], n_used, accuracy on all examples)``."""
    diff = explain_units(model, input_ids, attention_mask, method, cls, batch_size, contrast=1 - cls)
    labels = torch.as_tensor(labels)
    correct = torch.where(diff.logit > 0, cls, 1 - cls) == labels  # diff.logit: logit[cls] - logit[other]
    used = correct & (labels == cls)
    return flatten(getattr(diff, _kind(kind)))[used].mean(0), int(used.sum()), float(correct.double().mean())


def faithfulness(model, input_ids, attention_mask, kind: str, scores: dict, target, ks,
                 batch_size: int = 32) -> pd.DataFrame:
    """Long table ``ranking, k, example, drop`` of :func:`ablation_curve` for every ranking
    (length-sorted batches, shared padding cropped)."""
    from .runner import length_batches  # runner -> engine -> this module

    mask = torch.ones_like(input_ids) if attention_mask is None else attention_mask
    rows = []
    for idx, cols in length_batches(mask, batch_size):
        ids, m, tgt = input_ids[idx, cols], mask[idx, cols], target[idx]
        none = torch.zeros(1, next(iter(scores.values())).shape[1], dtype=torch.bool)
        base = logits_with(model, ids, m, kind, none)[torch.arange(len(idx)), tgt]
        for name, s in scores.items():
            drop = ablation_curve(model, ids, m, tgt, s[idx], ks, kind, base=base)
            for i, k in enumerate(ks):
                rows += [(name, int(k), int(e), float(d)) for e, d in zip(idx, drop[i])]
    return pd.DataFrame(rows, columns=["ranking", "k", "example", "drop"]).sort_values(
        ["ranking", "k", "example"], kind="stable", ignore_index=True)


def curve_summary(table: pd.DataFrame, n_boot: int = 1000, seed: int = 0) -> pd.DataFrame:
    """Mean drop per ``(ranking, k)`` with a 95% bootstrap band over examples (the same resamples
    at every k, :func:`lrp_utils.metrics.curve_band`): columns ``ranking, k, drop, low, high, n``."""
    out = []
    for name, g in table.groupby("ranking", sort=False):
        wide = g.pivot(index="k", columns="example", values="drop")
        mean, low, high = metrics.curve_band(wide.to_numpy(), n_boot=n_boot, seed=seed)
        out.append(pd.DataFrame({"ranking": name, "k": wide.index, "drop": mean, "low": low, "high": high,
                                 "n": wide.shape[1]}))
    return pd.concat(out, ignore_index=True)
