"""Agreement of layer relevance with layer leave-one-out, for any model and methods (You et al.
2025, claim ii; notebook 04 and the ``loo_agreement`` experiment of :mod:`lrp_utils.run`).

For every layer ``l`` and method, the residual-stream relevance ``Explanation.layers[l]`` (summed
over features, ``[B, S]``) is correlated per example with layer-``l`` LOO (:func:`lrp_utils.loo_by_layer`,
``removal="mask"`` or ``"zero"``), over the positions where LOO is defined (not padding, not the
read-out position)::

    maps = compute_maps(model, ids, mask, methods, removal=("mask", "zero"))  # lrp_utils.runner
    df = per_example(maps)        # one row per example x layer x method x removal
    summ = summarise(df)          # mean Pearson / Spearman with 95% bootstrap CIs

:func:`loo_agreement` runs the first two steps.  Shapes: ``B`` examples, ``S`` positions, ``L`` blocks.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from . import metrics, profiling, runner
from .adapters import get_adapter

MEASURES = ("pearson", "spearman")


@dataclass
class LooMaps:
    """Raw maps of one run: ``relevance[method]`` ``[L+1, B, S]`` (0 at padding), ``loo[removal]``
    ``[len(layers), B, S]`` (NaN at padding and the read-out position), the LOO ``layers``,
    ``target`` / ``logit`` ``[B]``, and ``timing`` (one row per method / removal: wall and CPU s)."""

    relevance: dict
    loo: dict
    layers: list
    attention_mask: torch.Tensor
    target: torch.Tensor
    logit: torch.Tensor
    timing: pd.DataFrame


def compute_maps(model, input_ids, attention_mask=None, methods=("cp-lrp", "attnlrp"), removal=("mask",),
                 layers=None, target=None, batch_size: int = 16, loo_batch_size: int = 128,
                 progress: bool = True) -> LooMaps:
    """Relevance of every method at every layer and LOO at ``layers`` (default all ``0..L``), through
    :func:`lrp_utils.runner.explain_many` and :func:`lrp_utils.runner.loo_many`.

    Args:
        input_ids, attention_mask: ``[B, S]`` (padding on either side).
        methods: names accepted by :func:`lrp_utils.explain` that return layer relevance.
        removal: LOO operators, ``"mask"`` and/or ``"zero"`` (see ``lrp_utils.loo``).
        target: ``None`` (the model's argmax) or ``[B]``; LOO explains the same target.
        batch_size: examples per length-sorted batch (explanations and LOO prefixes);
            ``loo_batch_size`` bounds the removed copies per LOO suffix batch.
    """
    mask = torch.ones_like(input_ids) if attention_mask is None else attention_mask
    L = get_adapter(model).n_layers
    layers = list(range(L + 1)) if layers is None else [int(l) for l in layers]
    removal = (removal,) if isinstance(removal, str) else tuple(removal)
    clock = profiling.Clock()
    exps = runner.explain_many(model, input_ids, mask, methods, target, batch_size=batch_size, progress=progress,
                               clock=clock)
    first = exps[methods[0]]
    loo = {r: runner.loo_many(model, input_ids, mask, layers, first.target, r, batch_size, loo_batch_size, progress,
                              clock) for r in removal}
    timing = pd.DataFrame({
        "kind": ["explain"] * len(methods) + ["loo"] * len(removal), "name": [*methods, *removal],
        "wall_s": [clock.wall[k] for k in (*methods, *removal)], "cpu_s": [clock.cpu[k] for k in (*methods, *removal)],
        "layers": [L + 1] * len(methods) + [len(layers)] * len(removal)})
    return LooMaps({m: torch.stack(e.layers) for m, e in exps.items()}, loo, layers, mask.cpu(), first.target,
                   first.logit, timing)


def per_example(maps: LooMaps) -> pd.DataFrame:
    """One row per example x LOO layer x method x removal: ``pearson``, ``spearman`` (NaN where
    undefined: fewer than 3 positions or a constant map; :func:`lrp_utils.metrics.row_correlations`)
    and ``n_positions`` (positions compared)."""
    frames = []
    for r, scores in maps.loo.items():
        for j, layer in enumerate(maps.layers):
            valid = scores[j].isfinite()
            for name, R in maps.relevance.items():
                p, s = metrics.row_correlations(R[layer], scores[j], valid)
                frames.append(pd.DataFrame({"example": np.arange(len(p)), "layer": layer, "method": name, "removal": r,
                                            "pearson": p, "spearman": s, "n_positions": valid.sum(1).numpy()}))
    return pd.concat(frames, ignore_index=True)


def loo_agreement(model, input_ids, attention_mask=None, methods=("cp-lrp", "attnlrp"), removal=("mask",),
                  layers=None, return_maps: bool = False, **kwargs):
    """Per-example correlation of each method's layer relevance with layer LOO (tidy DataFrame, see
    :func:`per_example`); with ``return_maps=True`` also the :class:`LooMaps`. ``kwargs`` go to
    :func:`compute_maps` (``target``, ``batch_size``, ``loo_batch_size``, ``progress``)."""
    maps = compute_maps(model, input_ids, attention_mask, methods, removal, layers, **kwargs)
    df = per_example(maps)
    return (df, maps) if return_maps else df


def group_keys(df, by) -> list:
    """The grouping columns: ``by``, or those of model, layer, method, removal that ``df`` has."""
    return [k for k in (by or ("model", "layer", "method", "removal")) if k in df.columns]


def summarise(df: pd.DataFrame, by=None, n_boot: int = 1000, seed: int = 0) -> pd.DataFrame:
    """Mean Pearson / Spearman over examples with 95% percentile-bootstrap CIs, per group of ``by``
    (default the present columns of model, layer, method, removal). ``n`` counts examples with a
    defined correlation, ``n_total`` all; ``ci_low`` / ``ci_high`` repeat the Pearson interval."""
    out = []
    for key, g in df.groupby(group_keys(df, by), sort=True):
        row = dict(zip(group_keys(df, by), key))
        for meas in MEASURES:
            ci = metrics.bootstrap_ci(g[meas].to_numpy(), n_boot=n_boot, seed=seed)
            row.update({meas: ci.mean, f"{meas}_ci_low": ci.low, f"{meas}_ci_high": ci.high})
        row.update(ci_low=row["pearson_ci_low"], ci_high=row["pearson_ci_high"],
                   n=int(g["pearson"].notna().sum()), n_total=len(g))
        out.append(row)
    return pd.DataFrame(out)
