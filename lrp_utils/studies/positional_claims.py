"""Notebook 05's claims (Bakish et al. 2025), computed from its committed CSVs only: exact conservation
on the tiny bias-free models, the change of the conservation budget when position relevance is added
on the real models, and PA-LRP vs AttnLRP faithfulness; and the README caption of
``05_conservation.png``.  The experiments live in :mod:`lrp_utils.studies.positional`."""
from __future__ import annotations

import numpy as np
import pandas as pd

from .. import claims, metrics
from ..claims import Claim, CISide, Count, Exact, Threshold
from .positional import CONSERVATION_CSV, FAITHFULNESS_CSV, METRICS, PAIRS

PAPER = "Bakish et al. 2025"
#: (model, method with positions, method without): exact identities of the tiny bias-free models
_EXACT = {"tiny (learned PE, softmax)": ("pa-cp-lrp", "cp-lrp"), "tiny (RoPE, linear attention)": ("pa-lrp", "attnlrp")}
EXACT_TOL = 1e-8


def budget_changes(frame: pd.DataFrame, n_boot: int = 1000, seed: int = 0) -> pd.DataFrame:
    """Per (model, pe, pair of :data:`PAIRS`) of a :func:`conservation_frame`: the paired per-example
    change of the conservation gap when positions are added, ``d = |total(with) / logit - 1| -
    |total(without) / logit - 1|`` (negative = closer to conservation), its median with a 95%
    bootstrap interval, and the two medians of ``total / logit``.  Pairs whose method with positions
    has no position relevance at all (CP-LRP on RoPE: exactly 0) are left out."""
    rows = []
    for (model, pe), g in frame.groupby(["model", "pe"], sort=False):
        for without, with_ in PAIRS:
            a = g[g.method == without].set_index("example")
            b = g[g.method == with_].set_index("example")
            common = a.index.intersection(b.index)
            if not len(common) or bool((b.positions == 0).all()):
                continue
            a, b = a.loc[common], b.loc[common]
            d = ((b.ratio_total - 1).abs() - (a.ratio_total - 1).abs()).to_numpy(dtype=float)
            rows.append((model, pe, without, with_, *metrics.bootstrap(d, "median", n_boot, seed=seed),
                         float(np.median(a.ratio_total)), float(np.median(b.ratio_total)), len(d)))
    return pd.DataFrame(rows, columns=["model", "pe", "without", "with", "median", "low", "high",
                                       "budget_without", "budget_with", "n"])


def _exact_claims(frame: pd.DataFrame) -> list:
    rows = []
    for model, (with_, without) in _EXACT.items():
        g = frame[frame.model == model]
        if g.empty:
            continue
        pe = g.pe.iloc[0]
        dev = float((g[g.method == with_].ratio_total - 1).abs().max())
        miss = float((g[g.method == without].ratio_total - 1).abs().max())
        n = int((g.method == with_).sum())
        rows += [Claim("05", "conservation-exact", PAPER, "token + position relevance conserves the logit exactly",
                       f"max over inputs of |(tokens + positions) / logit - 1|, {with_}, {pe} PE", model, dev,
                       Exact(EXACT_TOL), n=n, checked_in_ci=True),
                 Claim("05", "conservation-breaks", PAPER, "LRP that ignores positions breaks conservation",
                       f"max over inputs of |tokens / logit - 1|, {without}, {pe} PE", model, miss,
                       Threshold(">=", 0.01), n=n, checked_in_ci=True)]
    return rows


def _budget_claims(frame: pd.DataFrame) -> list:
    real = frame[~frame.model.isin(list(_EXACT))]
    return [Claim("05", f"conservation.{r.without}", PAPER, "adding position relevance restores conservation",
                  f"median over inputs of |{r['with']} total / logit - 1| - |{r.without} total / logit - 1| "
                  f"({r.pe} PE), 95% bootstrap CI", r.model, r["median"], CISide("<", 0.0), r.low, r.high,
                  n=int(r.n), checked_in_ci=False)
            for _, r in budget_changes(real).iterrows()]


def faithfulness_claims(table: pd.DataFrame, a: str = "pa-lrp", b: str = "attnlrp") -> list:
    """One :class:`Count` claim per task of a :func:`paired_table`: on how many of :data:`METRICS`
    ``a`` beats ``b`` (point estimate / significantly / not significantly reversed)."""
    rows = []
    for task, g in table[table.metric.isin(METRICS)].groupby("task", sort=False):
        sign = np.where(g.better == "higher", 1.0, -1.0)
        lo, hi = np.where(sign > 0, g.low, -g.high), np.where(sign > 0, g.high, -g.low)
        tally = Count.tally(sign * g["diff"].to_numpy(), lo, hi)
        rows.append(Claim("05", "faithfulness", PAPER, f"{a} significantly outperforms {b} in perturbation tests",
                          f"metrics of {', '.join(METRICS)} (log-probability) where {a} beats {b}, "
                          "paired bootstrap 95% CIs", task, rule=Count(len(g)), n=int(g.n.min()), **tally))
    return rows


@claims.register("05")
def claims_from_csvs(figures) -> list:
    """Notebook 05's claims from ``05_conservation.csv`` and ``05_faithfulness.csv``."""
    frame = pd.read_csv(figures / CONSERVATION_CSV)
    rows = _exact_claims(frame) + _budget_claims(frame)
    if (figures / FAITHFULNESS_CSV).exists():
        rows += faithfulness_claims(pd.read_csv(figures / FAITHFULNESS_CSV))
    return rows


def conservation_caption(figures) -> str:
    """README caption of ``05_conservation.png`` from ``05_conservation.csv``."""
    frame = pd.read_csv(figures / CONSERVATION_CSV)
    real = budget_changes(frame[~frame.model.isin(list(_EXACT))])
    moves = "; ".join(f"{r.model} {r.without} {r.budget_without:.3f} -> {r['with']} {r.budget_with:.3f}"
                      for _, r in real.iterrows())
    closer, farther = int((real.high < 0).sum()), int((real.low > 0).sum())
    exact = max((c.value for c in _exact_claims(frame) if c.claim_id == "conservation-exact"), default=np.nan)
    return (f"Median sum(relevance) / logit without and with positional relevance: {moves}. Adding positions "
            f"brings the budget significantly closer to 1 in {closer} and significantly farther from 1 in "
            f"{farther} of {len(real)} (real model, method) pairs; on the bias-free tiny models tokens + "
            f"positions match the logit up to a relative {exact:.1e}.")


claims.register_caption("05", "05_conservation.png", conservation_caption)
