"""Agreement of relevance with LOO in notebook 04's definitions sweep
(:mod:`lrp_utils.studies.loo_variants`): which positions are compared (:func:`position_sets`),
per-example features of a relevance map against a LOO map, and the statistics computed from them,
bootstrapped over examples (every statistic, the pooled correlation included, from the same
resamples)."""
from __future__ import annotations

import string
import unicodedata

import numpy as np
import torch

from .. import metrics
from ..loo import removable
from ..loo_outputs import _first_positions

POSITIONS = ("all", "no-special", "no-first", "no-punct")
STATISTICS = ("pearson", "fisher-z", "pooled", "spearman", "top1", "top3")
FEATURES = ("npos", "sx", "sy", "sxx", "syy", "sxy", "pearson", "spearman", "top1", "top3")


def features(R, Y, keep) -> np.ndarray:
    """``[B, 10]`` per row of ``R, Y [B, S]`` over the positions ``keep [B, S]`` (and finite):
    :data:`FEATURES` = count, the five sums of a pooled correlation, Pearson, Spearman, top-1
    agreement (1.0 when the largest R and the largest Y are at the same position) and top-3 overlap
    (|top3(R) & top3(Y)| / 3).  Correlations and top-k are NaN with fewer than 3 positions."""
    R, Y = metrics.to_numpy(R), metrics.to_numpy(Y)
    k = metrics.to_numpy(keep, bool) & np.isfinite(R) & np.isfinite(Y)
    X, Z = np.where(k, R, 0.0), np.where(k, Y, 0.0)
    npos = k.sum(1)
    p, s = metrics.row_correlations(R, Y, k)
    Xm, Zm = np.where(k, R, -np.inf), np.where(k, Y, -np.inf)
    top1 = (Xm.argmax(1) == Zm.argmax(1)).astype(float)
    if R.shape[1] >= 3:
        tx, tz = np.argsort(-Xm, 1, kind="stable")[:, :3], np.argsort(-Zm, 1, kind="stable")[:, :3]
        top3 = (tx[:, :, None] == tz[:, None, :]).any(2).sum(1) / 3.0
    else:
        top3 = np.full(len(R), np.nan)
    few = npos < 3
    top1[few], top3[few] = np.nan, np.nan
    return np.stack([npos, X.sum(1), Z.sum(1), (X * X).sum(1), (Z * Z).sum(1), (X * Z).sum(1), p, s, top1, top3], 1)


def _stat(F: np.ndarray, statistic: str) -> np.ndarray:
    """``F [..., n, 10]`` per-example features -> ``[...]`` the statistic over the ``n`` examples."""
    import warnings

    with warnings.catch_warnings(), np.errstate(invalid="ignore", divide="ignore"):
        warnings.simplefilter("ignore", RuntimeWarning)
        col = {k: F[..., i] for i, k in enumerate(FEATURES)}
        if statistic in ("pearson", "spearman", "top1", "top3"):
            return np.nanmean(col[statistic], -1)
        if statistic == "fisher-z":
            return np.tanh(np.nanmean(np.arctanh(np.clip(col["pearson"], -0.999999, 0.999999)), -1))
        if statistic == "pooled":
            n, sx, sy, sxx, syy, sxy = (np.nansum(col[k], -1) for k in FEATURES[:6])
            return (n * sxy - sx * sy) / np.sqrt((n * sxx - sx ** 2) * (n * syy - sy ** 2))
    raise ValueError(f"unknown statistic {statistic!r}; valid: {', '.join(STATISTICS)}")


def _boot(F: np.ndarray, statistics, n_boot: int, seed: int, chunk: int = 100) -> dict:
    """``F [n, ...rest, 10]`` -> ``{statistic: (estimate [...rest], resamples [B, ...rest])}``, examples
    resampled (the same resamples for every statistic)."""
    Fm = np.moveaxis(F, 0, -2)  # [...rest, n, 10]
    est = {s: _stat(Fm, s) for s in statistics}
    rng = np.random.default_rng(seed)
    n, boots = F.shape[0], {s: [] for s in statistics}
    for start in range(0, n_boot, chunk):
        idx = rng.integers(0, n, size=(min(chunk, n_boot - start), n))
        Fb = np.moveaxis(F[idx], 1, -2)
        for s in statistics:
            boots[s].append(_stat(Fb, s))
    return {s: (est[s], np.concatenate(boots[s])) for s in statistics}


def _ci(b, alpha=0.05):
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanquantile(b, alpha / 2, 0), np.nanquantile(b, 1 - alpha / 2, 0)


def token_sets(tokenizer, input_ids) -> tuple[set, set]:
    """``(special, punctuation)`` token ids among those of ``input_ids``: the tokenizer's special
    ids, and ids whose text is punctuation only (Unicode category P*, or ASCII punctuation)."""
    special = set(getattr(tokenizer, "all_special_ids", []) or [])
    punct = set()
    for t in torch.as_tensor(input_ids).unique().tolist():
        text = tokenizer.decode([t]).strip()
        if text and t not in special and all(c in string.punctuation or unicodedata.category(c).startswith("P")
                                             for c in text):
            punct.add(t)
    return special, punct


def position_sets(adapter, input_ids, attention_mask, tokenizer=None) -> dict:
    """``{name: [B, S] bool}`` of :data:`POSITIONS` (all = removable positions); ``no-special`` and
    ``no-punct`` need a tokenizer, ``no-first`` a decoder: absent otherwise."""
    ids, mask = torch.as_tensor(input_ids).cpu(), torch.as_tensor(attention_mask).cpu()
    base = removable(adapter, mask)
    out = {"all": base}
    if tokenizer is not None:
        special, punct = token_sets(tokenizer, ids[mask.bool()])
        out["no-special"] = base & ~torch.isin(ids, torch.tensor(sorted(special) or [-1]))
        out["no-punct"] = base & ~torch.isin(ids, torch.tensor(sorted(punct) or [-1]))
    if adapter.causal:
        first = base.clone()
        first[torch.arange(len(first)), _first_positions(mask)] = False
        out["no-first"] = first
    return out
