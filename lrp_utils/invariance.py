"""Implementation invariance of attributions (You et al. 2025, claim i).

Two models that compute the same function must get the same attribution (Sundararajan et al.
2017).  Linear attention ``Y = phi(Q) phi(K)^T V`` can be computed as ``(phi(Q) phi(K)^T) V`` or as
``phi(Q) (phi(K)^T V)`` (:data:`ASSOCIATIONS`): same outputs, but AttnLRP's uniform rule splits
relevance per product node, so the total relevance reaching Q : K : V is 1/4 : 1/4 : 1/2 in the
first order and 1/2 : 1/4 : 1/4 in the second (:func:`qkv_shares`).

* :func:`other_order`, :func:`random_pair`, :func:`train_pair`: a ``TinyTransformer`` (random or
  trained) and its copy in the other order.
* :func:`relevance_maps`: a method's relevance at every level (``"tokens"``, ``"layer l"``), LOO
  included, through :mod:`lrp_utils.runner`; :func:`compare_maps`: how far two maps diverge.
* :func:`implementation_invariance`: both, for two models that must compute the same logits.

Shapes: ``B`` examples, ``S`` positions, ``L`` blocks; relevance ``[B, S]`` per level.
"""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import pandas as pd
import torch

from . import metrics, ops, runner
from .adapters import get_adapter
from .methods import get_method
from .models import TinyConfig, TinyTransformer, train

#: the two association orders of linear attention (``TinyConfig.order``)
ASSOCIATIONS = ("(qk)v", "q(kv)")
#: (feature map, normalize) of the two linear-attention variants
FEATURE_MAPS = {"identity": False, "elu1": True}
#: relative tolerance for "the two models compute the same logits" (float64 rounding only)
SAME_LOGITS_RTOL = 1e-9
#: a level whose L1 norm is below this fraction of the example's largest level norm is "zero"
ZERO_MAP_REL = 1e-6


def qkv_shares(order: str, method: str = "attnlrp", seq: int = 8, head_dim: int = 4, seed: int = 0,
               feature_map: str = "identity", normalize: bool = False) -> dict:
    """Share of the output relevance that reaches Q, K and V of one random single-head layer.

    ``q, k, v [1, 1, seq, head_dim]`` are drawn N(0, 1) in float64; the explained scalar is a
    random read-out ``y = sum(W * Y)`` of ``Y = linear_attention(q, k, v, order)``, so the output
    relevance is ``y``.  Returns ``{"q": R_q / y, "k": ..., "v": ..., "total": ...}`` with
    ``R_t = sum(t * modified grad of y w.r.t. t)`` under ``method``.
    """
    g = torch.Generator().manual_seed(seed)
    q, k, v, w = (torch.randn(1, 1, seq, head_dim, generator=g, dtype=torch.float64) for _ in range(4))
    q, k, v = (t.requires_grad_() for t in (q, k, v))
    with ops.session(get_method(method)), torch.enable_grad():
        y = (ops.linear_attention(q, k, v, order=order, fmap=feature_map, normalize=normalize) * w).sum()
        grads = torch.autograd.grad(y, (q, k, v), allow_unused=True)  # CP-LRP: none into q, k
    y = float(y.detach())
    out = {name: 0.0 if gt is None else float((t.detach() * gt).sum()) / y
           for name, t, gt in zip("qkv", (q, k, v), grads)}
    out["total"] = out["q"] + out["k"] + out["v"]
    return out


def qkv_share_table(methods=("attnlrp", "gi", "cp-lrp"), **kwargs) -> pd.DataFrame:
    """:func:`qkv_shares` for every method and order: one row each (columns q, k, v, total)."""
    rows = [{"method": m, "order": o, **qkv_shares(o, m, **kwargs)} for m in methods for o in ASSOCIATIONS]
    return pd.DataFrame(rows)


def random_pair(seed: int = 0, std: float = 0.5, **kwargs) -> dict:
    """``{order: model}``: one random float64 linear-attention layer (embedding, single head, no
    MLP, norm or bias, mean read-out) in both orders with the same weights; ``kwargs`` override
    :class:`~lrp_utils.models.TinyConfig` fields."""
    cfg = dict(vocab_size=50, d_model=16, n_layers=1, n_heads=1, attention="linear", mlp="none",
               norm="none", position="none", bias=False, readout="mean", max_len=64)
    cfg = TinyConfig(**{**cfg, **kwargs, "order": ASSOCIATIONS[0]})
    models = {ASSOCIATIONS[0]: TinyTransformer(cfg).double().reset_parameters(std, seed=seed).eval()}
    models[ASSOCIATIONS[1]] = other_order(models[ASSOCIATIONS[0]])
    return models


def other_order(model):
    """A float64 copy of ``model`` (same weights, same device) in the other association order."""
    order = ASSOCIATIONS[1] if model.config.order == ASSOCIATIONS[0] else ASSOCIATIONS[0]
    other = TinyTransformer(replace(model.config, order=order)).double()
    other.load_state_dict(model.state_dict())
    return other.to(next(model.parameters()).device).eval()


def train_pair(train_data, vocab_size: int, feature_map: str, recipe: dict, seed: int = 0, max_len: int = 32,
               device="cpu") -> dict:
    """Train a linear-attention classifier in order ``(qk)v`` (float32, seeded) on ``train_data``
    ``(ids, mask, labels)``, then return ``{"(qk)v": model, "q(kv)": copy}``: both float64, the copy
    built from the same ``state_dict`` in a config with the other association order.  ``recipe``:
    ``d_model``, ``n_layers``, ``n_heads``, ``d_ff``, ``epochs``, ``lr``."""
    r = recipe
    cfg = TinyConfig(vocab_size=vocab_size, d_model=r["d_model"], n_layers=r["n_layers"],
                     n_heads=r["n_heads"], d_ff=r["d_ff"], max_len=max_len, attention="linear",
                     order=ASSOCIATIONS[0], feature_map=feature_map, normalize=FEATURE_MAPS[feature_map])
    model = TinyTransformer(cfg).reset_parameters(cfg.init_std, seed=seed).to(device)
    ids, mask, labels = (t.to(device) for t in train_data)
    train(model, ids, labels, mask, epochs=r["epochs"], lr=r["lr"], seed=seed, progress=False)
    model = model.double().eval()
    return {ASSOCIATIONS[0]: model, ASSOCIATIONS[1]: other_order(model)}


def relevance_maps(model, input_ids, method: str, attention_mask=None, target=None,
                   batch_size: int | None = None, layers=None, loo_batch_size: int = 64, **kwargs) -> dict:
    """``{"tokens": [B, S], "layer 0": [B, S], ..., "layer L": [B, S]}`` (CPU float64) of ``method``.

    ``"loo"`` / ``"loo-zero"``: leave-one-out with ``removal="mask"`` / ``"zero"`` at ``layers``
    (default all; its layer 0 is also the token level; NaN at the read-out position and padding).
    ``"ig"`` has only the token level unless ``ig_layers=True`` is passed.  Other methods:
    :func:`lrp_utils.explain`.  Examples run in length batches of ``batch_size`` (default: all
    at once) through :mod:`lrp_utils.runner`; ``kwargs`` go to the method (``n_steps``, ...).
    """
    ids = input_ids[None] if input_ids.dim() == 1 else input_ids
    bs = batch_size or len(ids)
    if method in ("loo", "loo-zero"):
        layers = list(range(get_adapter(model).n_layers + 1)) if layers is None else list(layers)
        scores = runner.loo_many(model, ids, attention_mask, layers, target, "mask" if method == "loo" else "zero",
                                 bs, loo_batch_size)
        maps = {f"layer {l}": s for l, s in zip(layers, scores)}
        return {"tokens": maps["layer 0"], **maps} if 0 in layers else maps
    exp = runner.explain_many(model, ids, attention_mask, [method], target, batch_size=bs, **kwargs)[method]
    return {"tokens": exp.tokens, **{f"layer {l}": r for l, r in enumerate(exp.layers or [])}}


def same_logits(model_a, model_b, input_ids, attention_mask=None, rtol=SAME_LOGITS_RTOL) -> float:
    """Max ``|logits_a - logits_b|`` (``[B, n_out]`` read-out logits); raises ``ValueError`` when it
    exceeds ``rtol * max(1, max|logits_a|)``: the two models do not compute the same function."""
    mask = torch.ones_like(input_ids) if attention_mask is None else attention_mask
    la, lb = (runner.readout_logits(m, input_ids, mask) for m in (model_a, model_b))
    diff, scale = float((la - lb).abs().max()), max(1.0, float(la.abs().max()))
    if not diff <= rtol * scale:
        raise ValueError(f"the models compute different logits (max |diff| = {diff:.3g}); "
                         "implementation invariance compares two implementations of one function")
    return diff


def compare_maps(maps_a: dict, maps_b: dict, attention_mask=None) -> pd.DataFrame:
    """Divergence of two relevance maps, one row per example x level.

    Columns: ``rel_l1`` = ``||R_a - R_b||_1 / ||R_a||_1``; ``l1_vs_largest`` = ``||R_a - R_b||_1``
    over the example's largest ``||R_a||_1`` of any level (well conditioned even where a level's map
    nearly cancels: the column to test invariance on); ``max_token_diff`` = ``max_i |R_a,i - R_b,i|
    / ||R_a||_1``; ``shape_l1`` = ``||R_a / ||R_a||_1 - R_b / ||R_b||_1||_1`` (0..2: what is left
    after matching the scales); ``norm_ratio`` = ``||R_b||_1 / ||R_a||_1``; ``spearman`` /
    ``pearson`` between ``R_a`` and ``R_b`` (NaN when undefined, e.g. a constant map); ``top1_same``
    (the same position has the largest ``|R|``); ``max_abs_diff``.  Positions count where
    ``attention_mask`` is 1 and both maps are finite.  A level whose ``||R_a||_1`` is below
    ``ZERO_MAP_REL`` times the example's largest level norm is zero up to rounding (e.g. GI just
    before a LayerNorm read-out): its relative columns are NaN there.
    """
    levels = [level for level in maps_a if level in maps_b]
    shape = maps_a[levels[0]].shape
    M0 = np.ones(shape, bool) if attention_mask is None else metrics.to_numpy(attention_mask, bool)
    masked = lambda maps, lv, M: np.where(M, maps[lv].numpy(), np.nan)  # noqa: E731
    scale = np.max([np.nansum(np.abs(masked(maps_a, lv, M0)), 1) for lv in levels], axis=0)  # [B]
    frames = []
    for level in levels:
        M = M0 & np.isfinite(maps_a[level].numpy()) & np.isfinite(maps_b[level].numpy())
        A, B = masked(maps_a, level, M), masked(maps_b, level, M)
        na, nb = np.nansum(np.abs(A), 1), np.nansum(np.abs(B), 1)
        norm = np.where(na > ZERO_MAP_REL * scale, na, np.nan)
        d = np.abs(A - B)
        pear, spear = metrics.row_correlations(A, B)
        with np.errstate(invalid="ignore", divide="ignore"):
            frames.append(pd.DataFrame({
                "example": np.arange(shape[0]), "level": level, "layer": _layer_index(level),
                "rel_l1": np.nansum(d, 1) / norm, "l1_vs_largest": np.nansum(d, 1) / scale,
                "max_token_diff": np.nanmax(d, 1) / norm,
                "shape_l1": np.nansum(np.abs(A / norm[:, None] - B / nb[:, None]), 1) * (nb / nb),
                "norm_ratio": nb / norm, "spearman": spear, "pearson": pear,
                "top1_same": _argmax_abs(A) == _argmax_abs(B), "max_abs_diff": np.nanmax(d, 1)}))
    return pd.concat(frames, ignore_index=True)


def _argmax_abs(X):
    return np.argmax(np.nan_to_num(np.abs(X), nan=-1.0), axis=1)


def _layer_index(level: str) -> int:
    """``"tokens"`` -> -1, ``"layer l"`` -> ``l``."""
    return -1 if level == "tokens" else int(level.split()[1])


def implementation_invariance(model_a, model_b, input_ids, method: str, attention_mask=None,
                              target=None, rtol: float = SAME_LOGITS_RTOL, **kwargs) -> pd.DataFrame:
    """How far ``method`` gives different relevance to two models computing the same function.

    Checks first that ``model_a`` and ``model_b`` give the same logits on ``input_ids [B, S]``
    (``ValueError`` otherwise), explains both for the same ``target`` (default: ``model_a``'s argmax)
    and returns :func:`compare_maps`: one row per example and level (``"tokens"``, ``"layer 0"`` ..
    ``"layer L"``) with ``rel_l1``, ``l1_vs_largest``, ``max_token_diff``, ``shape_l1``,
    ``norm_ratio``, ``spearman``, ``pearson``, ``top1_same``, ``max_abs_diff``.
    ``df.attrs["max_logit_diff"]`` holds the logit check.  An implementation-invariant method gives
    ``l1_vs_largest ~ 0`` (rounding) everywhere.  ``method``: any name
    :func:`lrp_utils.explain` accepts, or ``"loo"`` / ``"loo-zero"``; extra keywords go to it.
    """
    ids = input_ids[None] if input_ids.dim() == 1 else input_ids
    mask = torch.ones_like(ids) if attention_mask is None else torch.as_tensor(attention_mask).reshape(ids.shape)
    diff = same_logits(model_a, model_b, ids, mask, rtol)
    if target is None:
        target = runner.readout_logits(model_a, ids, mask).argmax(-1)
    maps = [relevance_maps(m, ids, method, mask, target, **kwargs) for m in (model_a, model_b)]
    df = compare_maps(*maps, attention_mask=mask.cpu())
    df.insert(0, "method", method)
    df.attrs["max_logit_diff"] = diff
    return df
