"""Metrics for relevance maps: agreement, bootstrap intervals, perturbation curves.

Everything here works on plain tensors/arrays and on callables supplied by the caller; nothing
depends on how the relevance was computed. Shapes: ``n`` examples, ``seq`` positions, ``F``
fractions, ``L + 1`` layers (layer 0 = input embeddings).

* Agreement (You et al. 2025): per-example Pearson / Spearman between two relevance maps
  (:func:`row_correlations`, vectorised), averaged, with a bootstrap interval over examples.
* Perturbation curves (Ali et al. 2022; Achtibat et al. 2024): :func:`perturbation_curve` is generic;
  :func:`auac`, :func:`au_mse` and :func:`morf_lerf` are the named protocols built on it.
* Bootstrap: :func:`bootstrap` is the one resampling loop (means, medians, ratios of means,
  paired designs); :func:`bootstrap_ci`, :func:`paired_bootstrap` and :func:`curve_band` use it.

All scores are returned raw; any normalisation for display belongs in :mod:`lrp_utils.viz`.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Callable, NamedTuple, Sequence

import numpy as np
import torch
from scipy.stats import rankdata

from . import checks

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
def row_correlations(A, B, mask=None) -> tuple[np.ndarray, np.ndarray]:
    """Pearson and Spearman correlation of each row of two relevance maps, vectorised.

    Args:
        A, B: ``[n, seq]`` relevance (tensor or array).
        mask: optional ``[n, seq]`` bool, True = position counts (False for padding etc.).

    Positions where ``A`` or ``B`` is NaN, or ``mask`` is False, are ignored. Spearman uses
    average ranks for ties. Returns ``(pearson [n], spearman [n])``, NaN in a row with fewer than
    3 positions left or a constant map on them (a correlation is undefined there, not 0).
    """
    A, B = to_numpy(A), to_numpy(B)
    if A.ndim != 2 or A.shape != B.shape:
        raise ValueError(f"expected two [n, seq] arrays of equal shape, got {A.shape} and {B.shape}")
    keep = np.isfinite(A) & np.isfinite(B)
    if mask is not None:
        M = to_numpy(mask, bool)
        _check_shape("mask", M, A.shape)
        keep &= M
    X, Y = np.where(keep, A, np.nan), np.where(keep, B, np.nan)
    ranks = [rankdata(Z, axis=1, nan_policy="omit") for Z in (X, Y)]
    return _row_pearson(X, Y), _row_pearson(*ranks)


def _row_pearson(X: np.ndarray, Y: np.ndarray) -> np.ndarray:
    """Row-wise Pearson of NaN-masked ``[n, seq]`` arrays (NaN: < 3 values or a constant row)."""
    with warnings.catch_warnings(), np.errstate(invalid="ignore", divide="ignore"):
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN rows
        ptp = lambda Z: np.nanmax(Z, 1) - np.nanmin(Z, 1)  # noqa: E731
        ok = (np.isfinite(X).sum(1) >= 3) & (ptp(X) > 0) & (ptp(Y) > 0)
        X, Y = X - np.nanmean(X, 1, keepdims=True), Y - np.nanmean(Y, 1, keepdims=True)
        r = np.clip(np.nansum(X * Y, 1) / np.sqrt(np.nansum(X * X, 1) * np.nansum(Y * Y, 1)), -1.0, 1.0)
    return np.where(ok, r, np.nan)


def correlations(a, b, mask=None) -> tuple[float, float]:
    """Pearson and Spearman correlation of two relevance vectors ``[seq]`` (``mask [seq]``
    optional): one row of :func:`row_correlations`."""
    a, b = to_numpy(a), to_numpy(b)
    if a.ndim != 1 or a.shape != b.shape:
        raise ValueError(f"expected two 1-D vectors of equal length, got {a.shape} and {b.shape}")
    p, s = row_correlations(a[None], b[None], None if mask is None else to_numpy(mask, bool)[None])
    return float(p[0]), float(s[0])


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
    pearson, spearman = row_correlations(A, B, mask)
    p_ci = bootstrap_ci(pearson, n_boot=n_boot, seed=seed)
    s_ci = bootstrap_ci(spearman, n_boot=n_boot, seed=seed)
    return Agreement(p_ci.mean, (p_ci.low, p_ci.high), s_ci.mean, (s_ci.low, s_ci.high),
                     len(pearson), pearson, spearman)


def precision_at_k(relevance, relevant, valid=None) -> np.ndarray:
    """``[n]``: the share of the ``k`` positions with the largest ``|relevance|`` that are
    ``relevant`` (``k`` = number of relevant positions of the example; ties by position).
    ``relevance [n, seq]`` (NaN counts as 0), ``relevant [n, seq]`` bool ground truth, ``valid``
    ``[n, seq]`` bool positions that may be picked (default all)."""
    R = torch.nan_to_num(torch.as_tensor(relevance)).abs()
    truth = torch.as_tensor(relevant).bool()
    if valid is not None:
        R = R.masked_fill(~torch.as_tensor(valid).bool(), -1.0)
    top = torch.argsort(R, dim=1, descending=True, stable=True)
    k = truth.sum(1)
    return np.array([truth[b, top[b, :k[b]]].float().mean().item() for b in range(len(R))])


# --------------------------------------------------------------------------- bootstrap
class Interval(NamedTuple):
    """An estimate and its confidence interval ``[low, high]`` (floats, or arrays for a vector
    statistic)."""

    mean: float
    low: float
    high: float


#: named statistics of :func:`bootstrap`: ``x [B, n, ...] -> [B, ...]`` (reduce the example axis 1)
STATISTICS = {
    "mean": lambda x: x.mean(axis=1),
    "median": lambda x: np.median(x, axis=1),
    "ratio_of_means": lambda x: x[..., 0].mean(1) / x[..., 1].mean(1),  # values [n, 2]: num, den
}


def bootstrap(values, stat="mean", n_boot: int = 1000, alpha: float = 0.05, seed: int = 0,
              chunk: int = 200) -> Interval:
    """Percentile bootstrap over examples: the one resampling loop of the package.

    Args:
        values: ``[n]`` or ``[n, k]`` (rows are examples and are resampled whole, so the columns
            of a paired design stay together); rows with a non-finite value are dropped.
        stat: ``"mean"``, ``"median"``, ``"ratio_of_means"`` (``values [n, 2]`` = numerator,
            denominator: ``mean(values[:, 0]) / mean(values[:, 1])``) or a function mapping
            resamples ``[B, n, ...]`` to ``[B, ...]``.
        n_boot: resamples (integer >= 1); alpha: level in (0, 1), the interval is the
            ``alpha / 2`` and ``1 - alpha / 2`` quantiles of the resampled statistic (NaNs ignored).
        seed: resamples are drawn from ``numpy.random.default_rng(seed)``, ``chunk`` at a time.

    Returns ``Interval(stat(values), low, high)``: floats, or arrays for a vector statistic.
    Deterministic for a given ``seed``; no rows left gives NaN, a single row a zero-width interval.
    """
    n_boot = checks.positive_int("n_boot", n_boot)
    alpha = checks.unit_interval("alpha", alpha)
    fn = STATISTICS[stat] if isinstance(stat, str) else stat
    v = to_numpy(values)
    v = v[np.isfinite(v.reshape(len(v), -1)).all(1)] if v.ndim else v.reshape(1)
    if len(v) == 0:
        return Interval(float("nan"), float("nan"), float("nan"))
    rng = np.random.default_rng(checks.integer("seed", seed))
    boots = np.concatenate([fn(v[rng.integers(0, len(v), size=(min(chunk, n_boot - start), len(v)))])
                            for start in range(0, n_boot, chunk)])
    low, high = np.nanquantile(boots, [alpha / 2, 1 - alpha / 2], axis=0)
    est = fn(v[None])[0]
    scalar = np.ndim(est) == 0
    return Interval(*(float(x) if scalar else x for x in (est, low, high)))


def bootstrap_ci(values, n_boot: int = 1000, alpha: float = 0.05, seed: int = 0) -> Interval:
    """Percentile-bootstrap interval of the mean of ``values`` ``[n]`` (NaNs dropped; see
    :func:`bootstrap`)."""
    return bootstrap(to_numpy(values).ravel(), "mean", n_boot, alpha, seed)


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
    _, low, high = bootstrap(s.T, "mean", n_boot, alpha, seed)
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

