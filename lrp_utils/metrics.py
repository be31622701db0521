"""Metrics for relevance maps: agreement, bootstrap intervals, perturbation curves, conservation.

Everything here works on plain tensors/arrays and on callables supplied by the caller; nothing
depends on how the relevance was computed. Shapes: ``n`` examples, ``seq`` positions, ``F``
fractions, ``L + 1`` layers (layer 0 = input embeddings).

* Agreement (You et al. 2025): per-example Pearson / Spearman between two relevance maps, averaged,
  with a percentile-bootstrap confidence interval over examples.
* Perturbation curves (Ali et al. 2022; Achtibat et al. 2024): :func:`perturbation_curve` is generic;
  :func:`auac`, :func:`au_mse` and :func:`morf_lerf` are the named protocols built on it.
* Conservation: :func:`conservation_table` compares per-layer relevance sums with the logit.

All scores are returned raw; any normalisation for display belongs in :mod:`lrp_utils.viz`.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, NamedTuple, Sequence

import numpy as np
import pandas as pd
import torch
from scipy.stats import rankdata

DEFAULT_FRACTIONS = np.linspace(0.0, 1.0, 11)
ORDERS = ("morf", "lerf")
MODES = ("remove", "keep")


def to_numpy(x, dtype=np.float64) -> np.ndarray:
    """Tensor / array / list -> numpy array of ``dtype`` (detached, on CPU)."""
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu()
        x = x.float() if x.dtype == torch.bfloat16 else x
        x = x.numpy()
    return np.asarray(x, dtype=dtype)


def _check_shape(name: str, x: np.ndarray, shape: tuple) -> None:
    if x.shape != tuple(shape):
        raise ValueError(f"{name} has shape {x.shape}, expected {tuple(shape)}")


# --------------------------------------------------------------------------- correlations
def correlations(a, b, mask=None) -> tuple[float, float]:
    """Pearson and Spearman correlation of two relevance vectors.

    Args:
        a, b: ``[seq]`` relevance vectors (tensor or array).
        mask: optional ``[seq]`` bool, True = position counts (False for padding etc.).

    Positions where ``a`` or ``b`` is NaN, or ``mask`` is False, are ignored. Spearman uses
    average ranks for ties. Returns ``(nan, nan)`` when fewer than 3 positions remain or either
    vector has zero variance on them (a correlation is undefined there, not 0).
    """
    a, b = to_numpy(a), to_numpy(b)
    if a.ndim != 1 or a.shape != b.shape:
        raise ValueError(f"expected two 1-D vectors of equal length, got {a.shape} and {b.shape}")
    keep = np.isfinite(a) & np.isfinite(b)
    if mask is not None:
        m = to_numpy(mask, bool)
        _check_shape("mask", m, a.shape)
        keep &= m
    a, b = a[keep], b[keep]
    if a.size < 3 or np.ptp(a) == 0 or np.ptp(b) == 0:
        return float("nan"), float("nan")
    return _pearson(a, b), _pearson(rankdata(a), rankdata(b))


def _pearson(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a - a.mean(), b - b.mean()
    return float(np.clip((a @ b) / np.sqrt((a @ a) * (b @ b)), -1.0, 1.0))


@dataclass(frozen=True)
class Agreement:
    """Result of :func:`agreement`; also readable like a dict (``res["pearson_ci"]``).

    ``pearson`` / ``spearman``: mean over examples with a defined correlation; ``*_ci``:
    ``(low, high)`` percentile-bootstrap interval of that mean; ``n``: number of examples;
    ``per_example_pearson`` / ``per_example_spearman``: ``[n]`` arrays (NaN where undefined).
    """

    pearson: float
    pearson_ci: tuple[float, float]
    spearman: float
    spearman_ci: tuple[float, float]
    n: int
    per_example_pearson: np.ndarray
    per_example_spearman: np.ndarray

    def __getitem__(self, key: str):
        return getattr(self, key)


def agreement(A, B, mask=None, n_boot: int = 1000, seed: int = 0) -> Agreement:
    """Per-example Pearson/Spearman between two batches of relevance, with bootstrap CIs.

    Args:
        A, B: ``[n, seq]`` relevance of two methods (or a method and LOO) on the same inputs.
        mask: optional ``[n, seq]`` bool, True = position counts.
        n_boot, seed: percentile bootstrap over examples (see :func:`bootstrap_ci`).
    """
    A, B = to_numpy(A), to_numpy(B)
    if A.ndim != 2 or A.shape != B.shape:
        raise ValueError(f"expected two [n, seq] arrays of equal shape, got {A.shape} and {B.shape}")
    M = np.ones(A.shape, bool) if mask is None else to_numpy(mask, bool)
    _check_shape("mask", M, A.shape)
    pairs = np.array([correlations(a, b, m) for a, b, m in zip(A, B, M)]).reshape(-1, 2)
    p_ci = bootstrap_ci(pairs[:, 0], n_boot=n_boot, seed=seed)
    s_ci = bootstrap_ci(pairs[:, 1], n_boot=n_boot, seed=seed)
    return Agreement(p_ci.mean, (p_ci.low, p_ci.high), s_ci.mean, (s_ci.low, s_ci.high),
                     len(A), pairs[:, 0], pairs[:, 1])


# --------------------------------------------------------------------------- bootstrap
class Interval(NamedTuple):
    """A mean and its confidence interval ``[low, high]``."""

    mean: float
    low: float
    high: float


def _boot_means(values: np.ndarray, n_boot: int, seed: int, chunk: int = 200) -> np.ndarray:
    """``[n_boot, ...]`` means of resamples (with replacement) along axis 0 of ``values``."""
    rng = np.random.default_rng(seed)
    n, out = len(values), []
    for start in range(0, n_boot, chunk):
        idx = rng.integers(0, n, size=(min(chunk, n_boot - start), n))
        out.append(values[idx].mean(axis=1))
    return np.concatenate(out)


def bootstrap_ci(values, n_boot: int = 1000, alpha: float = 0.05, seed: int = 0) -> Interval:
    """Percentile-bootstrap interval of the mean of ``values`` ``[n]`` (NaNs dropped).

    Deterministic for a given ``seed``. Empty input gives all-NaN; a single value gives
    a zero-width interval.
    """
    v = to_numpy(values).ravel()
    v = v[np.isfinite(v)]
    if v.size == 0:
        return Interval(float("nan"), float("nan"), float("nan"))
    low, high = np.quantile(_boot_means(v, n_boot, seed), [alpha / 2, 1 - alpha / 2])
    return Interval(float(v.mean()), float(low), float(high))


def paired_bootstrap(a, b, n_boot: int = 1000, alpha: float = 0.05, seed: int = 0) -> Interval:
    """Paired bootstrap interval of ``mean(a - b)`` for two methods scored on the same examples.

    Args:
        a, b: ``[n]`` per-example scores (e.g. ``CurveResult.areas``) of two methods; pairs with a
            NaN on either side are dropped. Resampling is over examples, keeping pairs together.
    """
    a, b = to_numpy(a).ravel(), to_numpy(b).ravel()
    if a.shape != b.shape:
        raise ValueError(f"paired scores must have equal length, got {a.shape} and {b.shape}")
    return bootstrap_ci(a - b, n_boot=n_boot, alpha=alpha, seed=seed)


def curve_band(scores, n_boot: int = 1000, alpha: float = 0.05, seed: int = 0):
    """Mean and pointwise bootstrap band of per-example curves.

    Args:
        scores: ``[F, n]`` values per fraction and example.
    Returns:
        ``(mean, low, high)``, each ``[F]``; the same example resamples are used at every fraction.
    """
    s = to_numpy(scores)
    if s.ndim != 2:
        raise ValueError(f"scores must be [F, n], got shape {s.shape}")
    boots = _boot_means(s.T, n_boot, seed)  # [n_boot, F]
    low, high = np.quantile(boots, [alpha / 2, 1 - alpha / 2], axis=0)
    return s.mean(axis=1), low, high


# --------------------------------------------------------------------------- perturbation
def _ranks(relevance: np.ndarray, valid: np.ndarray, order: str, by_abs: bool) -> np.ndarray:
    """``[n, seq]`` rank of each position in perturbation order (0 = first); invalid ones last.

    Ties are broken by position (earlier first), so the result is deterministic.
    """
    key = np.abs(relevance) if by_abs else relevance.copy()
    key = -key if order == "morf" else key
    key[~valid] = np.inf
    pos = np.broadcast_to(np.arange(relevance.shape[1]), relevance.shape)
    perm = np.lexsort((pos, key), axis=-1)  # primary: key, secondary: position
    ranks = np.empty_like(perm)
    np.put_along_axis(ranks, perm, pos, axis=-1)
    return ranks


def _n_perturbed(fraction: float, n_valid: np.ndarray) -> np.ndarray:
    """``k = round(fraction * n_valid)``, rounding halves up (``np.round`` would round 0.5 to 0)."""
    return np.floor(fraction * n_valid + 0.5 + 1e-9).astype(int)


def _prepare(relevance, valid, fractions):
    """Validate inputs; return ``(relevance [n, seq], valid [n, seq], fractions [F], device)``."""
    device = relevance.device if isinstance(relevance, torch.Tensor) else torch.device("cpu")
    R = to_numpy(relevance)
    if R.ndim != 2:
        raise ValueError(f"relevance must be [n, seq], got shape {R.shape}")
    V = np.ones(R.shape, bool) if valid is None else to_numpy(valid, bool)
    _check_shape("valid", V, R.shape)
    if np.isnan(R[V]).any():
        raise ValueError("relevance is NaN at a valid position")
    fr = to_numpy(fractions).ravel()
    if fr.size < 2 or np.any(np.diff(fr) <= 0) or fr[0] < 0 or fr[-1] > 1:
        raise ValueError("fractions must be increasing, within [0, 1], at least two of them")
    return R, V, fr, device


def _call(score_fn: Callable, removed: np.ndarray, device) -> np.ndarray:
    with torch.no_grad():
        out = to_numpy(score_fn(torch.as_tensor(removed, device=device)))
    _check_shape("score_fn output", out, removed.shape[:1])
    return out


def perturbation_curve(score_fn: Callable, relevance, order: str = "morf",
                       fractions: Sequence[float] = DEFAULT_FRACTIONS, mode: str = "remove",
                       valid=None, by_abs: bool = False) -> np.ndarray:
    """Model score as a growing fraction of positions is perturbed in relevance order.

    Args:
        score_fn: ``removed: BoolTensor[n, seq] -> Tensor[n]``; runs the model with the marked
            positions removed (replaced by [UNK]/pad, masked, ...) and returns the score. Called once
            per fraction, under ``torch.no_grad()``; ``removed`` is on ``relevance``'s device.
        relevance: ``[n, seq]`` raw relevance.
        order: ``"morf"`` (most relevant first) or ``"lerf"`` (least relevant first).
        fractions: ``[F]`` increasing values in [0, 1].
        mode: ``"remove"``: the selected positions are removed; ``"keep"``: they are the only valid
            positions kept (all other valid positions removed).
        valid: ``[n, seq]`` bool, positions that may be perturbed (not padding, not [CLS]/[SEP] or
            read-out positions); may differ per example. Default: all positions.
        by_abs: rank by ``|relevance|`` instead of signed relevance.

    For fraction ``f`` the ``k = round(f * n_valid)`` (halves up) first positions in the order are
    selected, per example. Ties are broken by position. Returns ``[F, n]`` scores. Raises
    ``ValueError`` on shape mismatches, an unknown order/mode, bad fractions, or NaN relevance at a
    valid position.
    """
    if order not in ORDERS or mode not in MODES:
        raise ValueError(f"order must be one of {ORDERS} and mode one of {MODES}, got {order!r}, {mode!r}")
    R, V, fr, device = _prepare(relevance, valid, fractions)
    ranks, n_valid = _ranks(R, V, order, by_abs), V.sum(axis=1)
    curve = []
    for f in fr:
        selected = ranks < _n_perturbed(f, n_valid)[:, None]
        curve.append(_call(score_fn, selected if mode == "remove" else V & ~selected, device))
    return np.stack(curve)


def area(curve, fractions=DEFAULT_FRACTIONS):
    """Trapezoid area under ``curve`` ``[F]`` or ``[F, n]``, divided by the x-range.

    The division makes areas comparable across fraction grids (with the default 0..1 grid it
    changes nothing). Returns a float for ``[F]`` and an ``[n]`` array for ``[F, n]``.
    """
    y, x = to_numpy(curve), to_numpy(fractions).ravel()
    if y.shape[:1] != x.shape or x.size < 2:
        raise ValueError(f"curve has {y.shape[:1]} points along axis 0, fractions {x.shape}")
    res = np.trapezoid(y, x, axis=0) / (x[-1] - x[0])
    return float(res) if np.ndim(res) == 0 else res


@dataclass(frozen=True)
class CurveResult:
    """A perturbation curve over examples.

    ``fractions`` ``[F]``; ``scores`` ``[F, n]`` the per-example values whose mean is the curve
    (probability for AUAC, squared logit change for AU-MSE, raw score otherwise).
    """

    fractions: np.ndarray
    scores: np.ndarray

    @property
    def areas(self) -> np.ndarray:
        """``[n]`` per-example areas; their mean equals the area under the mean curve."""
        return area(self.scores, self.fractions)

    @property
    def area(self) -> float:
        """Area under the mean curve (the headline number)."""
        return float(np.mean(self.areas))

    def band(self, n_boot: int = 1000, alpha: float = 0.05, seed: int = 0):
        """``(fractions, mean, low, high)`` for :func:`lrp_utils.viz.plot_curves`."""
        return (self.fractions, *curve_band(self.scores, n_boot, alpha, seed))


def auac(score_fn_prob: Callable, relevance, valid=None,
         fractions: Sequence[float] = DEFAULT_FRACTIONS) -> CurveResult:
    """Area under the activation curve (Ali et al. 2022); higher is better.

    Keeps only the top-k valid positions by *signed* relevance (descending), removing all other
    valid ones, at each fraction; ``score_fn_prob`` (see :func:`perturbation_curve`) returns the
    true-class probability ``[n]``. ``relevance``/``valid``: ``[n, seq]``. ``.area`` is AUAC.
    """
    fr = to_numpy(fractions).ravel()
    scores = perturbation_curve(score_fn_prob, relevance, "morf", fr, "keep", valid, by_abs=False)
    return CurveResult(fr, scores)


def au_mse(score_fn_logit: Callable, relevance, valid=None, reference_logit=None,
           fractions: Sequence[float] = DEFAULT_FRACTIONS) -> CurveResult:
    """Area under the MSE-of-the-logit pruning curve (Ali et al. 2022); lower is better.

    Removes valid positions in ascending ``|relevance|``; at each fraction the value is
    ``(logit - reference_logit) ** 2`` per example, ``[F, n]``. ``reference_logit`` ``[n]`` is the
    unperturbed logit; by default the score at fraction 0 (nothing removed when the grid starts
    at 0). ``.area`` is AU-MSE.
    """
    fr = to_numpy(fractions).ravel()
    logits = perturbation_curve(score_fn_logit, relevance, "lerf", fr, "remove", valid, by_abs=True)
    ref = logits[0] if reference_logit is None else to_numpy(reference_logit).ravel()
    _check_shape("reference_logit", ref, logits.shape[1:])
    return CurveResult(fr, (logits - ref) ** 2)


@dataclass(frozen=True)
class MorfLerf:
    """Both removal curves; ``gaps`` ``[n]`` = LeRF area - MoRF area (higher = more faithful)."""

    morf: CurveResult
    lerf: CurveResult

    @property
    def gaps(self) -> np.ndarray:
        return self.lerf.areas - self.morf.areas

    @property
    def area_between(self) -> float:
        return float(np.mean(self.gaps))


def morf_lerf(score_fn: Callable, relevance, valid=None,
              fractions: Sequence[float] = DEFAULT_FRACTIONS, by_abs: bool = False) -> MorfLerf:
    """Most- and least-relevant-first removal curves and the area between them.

    ``score_fn``, ``relevance`` ``[n, seq]``, ``valid`` as in :func:`perturbation_curve`. A faithful
    map makes the score drop fast under MoRF and slowly under LeRF.
    """
    fr = to_numpy(fractions).ravel()
    curves = [perturbation_curve(score_fn, relevance, o, fr, "remove", valid, by_abs) for o in ORDERS]
    return MorfLerf(CurveResult(fr, curves[0]), CurveResult(fr, curves[1]))


def random_relevance(shape, seed: int = 0) -> torch.Tensor:
    """Random baseline: float64 standard-normal relevance of ``shape`` (e.g. ``[n, seq]``), seeded."""
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(tuple(shape), generator=gen, dtype=torch.float64)


# --------------------------------------------------------------------------- conservation
def conservation_table(layer_sums, logit) -> pd.DataFrame:
    """Per-layer relevance sums against the explained logit.

    Args:
        layer_sums: ``[L + 1, n]`` tensor/array, or a list of ``L + 1`` tensors ``[n]``: total
            relevance at each layer (0 = input) for each example.
        logit: ``[n]`` the explained logit.

    Returns one row per layer: ``layer``, ``mean_sum``, ``mean_logit``, ``mean_ratio`` (mean of
    sum / logit; inf/NaN where a logit is 0), ``median_ratio``, ``mean_abs_error`` (mean
    |sum - logit|), ``max_abs_error`` and ``mean_rel_error`` (mean |sum - logit| / |logit|).
    """
    if isinstance(layer_sums, (list, tuple)):
        layer_sums = np.stack([to_numpy(s).ravel() for s in layer_sums])
    S, z = to_numpy(layer_sums), to_numpy(logit).ravel()
    if S.ndim != 2 or S.shape[1] != z.size:
        raise ValueError(f"layer_sums must be [L+1, n] with n = {z.size}, got shape {S.shape}")
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio, err = S / z, np.abs(S - z)
        rel = err / np.abs(z)
    return pd.DataFrame({
        "layer": np.arange(len(S)), "mean_sum": S.mean(1), "mean_logit": z.mean(),
        "mean_ratio": ratio.mean(1), "median_ratio": np.median(ratio, axis=1),
        "mean_abs_error": err.mean(1), "max_abs_error": err.max(1), "mean_rel_error": rel.mean(1),
    })
