"""Notebook 03: AttnLRP violates implementation invariance on trained linear-attention models
(You et al. 2025, claim i).

Setups: trained equal-function pairs (:func:`build_setups`: a ``TinyTransformer`` classifier per
task x feature map x seed, and its copy in the other association order), their relevance maps
(:func:`attribute`) and the study tables: divergence between the orders, agreement with LOO,
MoRF / LeRF faithfulness, keyword precision, findings.  The generic pieces live in
:mod:`lrp_utils.invariance` (pairs, maps, divergence), :mod:`lrp_utils.toy`, :mod:`lrp_utils.tasks`
(data), :mod:`lrp_utils.perturbation` and :mod:`lrp_utils.metrics`.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch
from ..progress import tqdm

from .. import claims, metrics, perturbation
from ..invariance import ASSOCIATIONS, FEATURE_MAPS, compare_maps, relevance_maps, same_logits, train_pair
from ..models import accuracy
from ..tasks import load_task
from ..toy import toy_table  # noqa: F401 (notebook 03 reads the toy table from this study)

#: methods run on both orders; "loo-zero" is leave-one-out that zeroes the hidden state of the
#: removed position, so it runs through each order's own arithmetic at every layer
INVARIANCE_METHODS = ("attnlrp", "gi", "ig", "cp-lrp", "loo-zero")
#: LOO with mask removal (DESIGN.md), the reference of the agreement study, is computed once per
#: pair (on the (qk)v model) and filed under this order label: with the extra removal mask both
#: models route attention through the same (qk)v code path, so a second run is bit-identical
ONCE = "once"
#: training recipes (quick = CI-sized: tiny model, few steps)
RECIPES = {
    "full": dict(d_model=32, n_layers=3, n_heads=4, d_ff=64, epochs=2, lr=3e-3, rt_train=None, kw_train=3000),
    "quick": dict(d_model=16, n_layers=2, n_heads=2, d_ff=32, epochs=1, lr=1e-2, rt_train=800, kw_train=800),
}
#: per-method keywords for :func:`attribute` (IG: 16 Riemann steps, invariance holds for any count;
#: LOO-zero, the invariance control, only at the token level)
ATTRIBUTE_KWARGS = {"ig": {"n_steps": 16}, "loo-zero": {"layers": [0]}}
FAITH_FRACTIONS = np.linspace(0.0, 1.0, 6)


@dataclass
class Setup:
    """A trained equal-function pair: ``models[order]`` (float64, same weights) and its test inputs.

    ``ids``, ``mask`` ``[B, S]``, ``labels``, ``target`` (the model's prediction) ``[B]``,
    ``relevant`` ``[B, S]`` bool (keyword task: ground-truth relevant positions, else None),
    ``tokens`` (per example, its token strings), ``encode`` (texts -> ids, mask; RT only),
    ``maps[(method, order)]`` (see :func:`attribute`)."""

    task: str
    feature_map: str
    seed: int
    models: dict
    ids: torch.Tensor
    mask: torch.Tensor
    labels: torch.Tensor
    target: torch.Tensor
    tokens: list
    accuracy: float
    max_logit_diff: float
    relevant: torch.Tensor | None = None
    encode: object = None
    maps: dict = field(default_factory=dict)

    @property
    def key(self) -> dict:
        return {"task": self.task, "feature_map": self.feature_map, "seed": self.seed}

    def model(self, order: str):
        """The model of ``order`` (``ONCE``: the ``(qk)v`` one)."""
        return self.models.get(order, self.models[ASSOCIATIONS[0]])


def build_setups(tasks=("rt", "keyword"), feature_maps=tuple(FEATURE_MAPS), seeds=(0,),
                 n_examples: int = 200, quick: bool = False, device="cpu", progress: bool = True) -> list:
    """Train one equal-function pair per task x feature map x seed; list of :class:`Setup`."""
    setups = []
    jobs = [(t, f, s) for t in tasks for f in feature_maps for s in seeds]
    r = RECIPES["quick" if quick else "full"]
    data = {t: load_task(t, n_examples, r["rt_train"] if t == "rt" else r["kw_train"]) for t in tasks}
    for task, fmap, seed in tqdm(jobs, desc="training pairs", disable=not progress):
        d = data[task]
        ids, mask, labels, relevant = d["test"]
        max_len = max(d["train"][0].shape[1], ids.shape[1])
        models = train_pair(d["train"], d["vocab_size"], fmap, r, seed, max_len, device)
        ids, mask = ids.to(device), mask.to(device)
        diff = same_logits(models[ASSOCIATIONS[0]], models[ASSOCIATIONS[1]], ids, mask)
        with torch.no_grad():
            target = models[ASSOCIATIONS[0]](ids, attention_mask=mask).argmax(-1)
        acc = accuracy(models[ASSOCIATIONS[0]], ids, labels.to(device), mask)
        tokens = [d["decode"](row[m.bool()]) for row, m in zip(ids.cpu(), mask.cpu())]
        setups.append(Setup(task, fmap, seed, models, ids, mask, labels, target, tokens, acc, diff,
                            relevant, d["encode"]))
    return setups


def _pairs(methods):
    """``(method, order)`` pairs: every method on both orders, ``"loo"`` once (see :data:`ONCE`)."""
    return [(m, o) for m in methods for o in ((ONCE,) if m == "loo" else ASSOCIATIONS)]


def attribute(setups, methods=(*INVARIANCE_METHODS, "loo"), batch_size: int = 25, progress: bool = True) -> None:
    """Fill ``setup.maps[(method, order)]`` (see :func:`relevance_maps`) for both orders (``"loo"``
    once), explaining the same target (the prediction); length-sorted chunks of ``batch_size``."""
    jobs = [(s, m, o) for s in setups for m, o in _pairs(methods)]
    for s, m, o in tqdm(jobs, desc="explaining", disable=not progress):
        s.maps[(m, o)] = relevance_maps(s.model(o), s.ids, m, s.mask, s.target, batch_size,
                                        **ATTRIBUTE_KWARGS.get(m, {}))


# ------------------------------------------------------------------------------ studies
def setup_table(setups) -> pd.DataFrame:
    """One row per setup: task, feature map, seed, test accuracy, max logit difference of the orders."""
    return pd.DataFrame([{**s.key, "n": len(s.ids), "accuracy": s.accuracy,
                          "max_logit_diff": s.max_logit_diff} for s in setups])


def divergence_study(setups, methods=INVARIANCE_METHODS) -> pd.DataFrame:
    """:func:`compare_maps` between the orders for every setup and method (tidy; see there)."""
    frames = []
    for s in setups:
        for m in methods:
            df = compare_maps(s.maps[(m, ASSOCIATIONS[0])], s.maps[(m, ASSOCIATIONS[1])], s.mask.cpu())
            frames.append(df.assign(**s.key, method=m))
    return pd.concat(frames, ignore_index=True)


def divergence_summary(div: pd.DataFrame, by=("task", "feature_map", "method"),
                       level: str | None = "tokens") -> pd.DataFrame:
    """Mean (and max) of the :func:`compare_maps` columns per group, at one ``level`` (None: all)."""
    d = div if level is None else div[div["level"] == level]
    return d.groupby(list(by)).agg(
        rel_l1=("rel_l1", "mean"), rel_l1_max=("rel_l1", "max"), l1_vs_largest_max=("l1_vs_largest", "max"),
        max_token_diff=("max_token_diff", "mean"), shape_l1=("shape_l1", "mean"),
        norm_ratio=("norm_ratio", "mean"), spearman=("spearman", "mean"),
        top1_same=("top1_same", "mean"), max_abs_diff=("max_abs_diff", "max"), n=("rel_l1", "size"))


def loo_study(setups, methods=("attnlrp", "gi", "cp-lrp"), n_boot: int = 200) -> pd.DataFrame:
    """Per-layer agreement of each method and order with LOO (mask removal) at the same layer.

    One row per setup x method x order x layer ``0 .. L-1`` (at layer ``L`` LOO is 0 everywhere):
    mean ``pearson`` / ``spearman`` over examples and the bootstrap interval of the Spearman mean."""
    rows = []
    for s in setups:
        loo = s.maps[("loo", ONCE)]
        for m, o in _pairs(methods):
            for l in range(len(s.models[ASSOCIATIONS[0]].blocks)):
                a = metrics.agreement(s.maps[(m, o)][f"layer {l}"], loo[f"layer {l}"], n_boot=n_boot)
                rows.append({**s.key, "method": m, "order": o, "layer": l, "pearson": a.pearson,
                             "spearman": a.spearman, "spearman_low": a.spearman_ci[0],
                             "spearman_high": a.spearman_ci[1]})
    return pd.DataFrame(rows)


def faithfulness_study(setups, methods=("attnlrp", "gi", "ig", "cp-lrp", "loo"), fractions=FAITH_FRACTIONS,
                       max_tokens: int = 4096) -> pd.DataFrame:
    """MoRF / LeRF token-removal curves (mask removal, score = the predicted class's logit; [CLS]
    is never removed; :func:`lrp_utils.perturbation.faithfulness`) for every setup x method x
    order: one row per curve point (``fraction``, mean ``score``) with the curve's ``area`` and
    ``area_between`` (LeRF area - MoRF area; larger = more faithful)."""
    rows = []
    for s in setups:
        valid = perturbation.valid_positions(s.model(ASSOCIATIONS[0]), s.ids, s.mask)
        res, scorers = {}, {}  # one scorer per model: ONCE shares the (qk)v model's removal sets
        for o in (*ASSOCIATIONS, ONCE):
            rel = {m: torch.nan_to_num(s.maps[(m, oo)]["tokens"]) for m, oo in _pairs(methods) if oo == o}
            if id(s.model(o)) not in scorers:
                scorers[id(s.model(o))] = perturbation.RemovalScorer(s.model(o), s.ids, s.mask, s.target,
                                                                     max_tokens=max_tokens, progress=False)
            res[o] = perturbation.faithfulness(scorers[id(s.model(o))], rel, valid, "morf_lerf", fractions,
                                               n_boot=1) if rel else None
        for m, o in _pairs(methods):
            area = res[o].areas[res[o].areas.method == m].groupby("metric")["value"].mean()
            for name in ("MoRF", "LeRF"):
                c = res[o].curves[(res[o].curves.method == m) & (res[o].curves.metric == name)]
                rows += [{**s.key, "method": m, "order": o, "curve": name.lower(), "fraction": f, "score": y,
                          "area": area[name], "area_between": area["LeRF-MoRF"]} for f, y in zip(c.fraction, c["mean"])]
    return pd.DataFrame(rows)


def keyword_hits(setups, methods=(*INVARIANCE_METHODS, "loo")) -> pd.DataFrame:
    """Ground-truth check (keyword task): per example, the fraction of the ``k`` positions with the
    largest ``|R|`` (``k`` = number of keywords, [CLS] excluded) that are keywords
    (:func:`lrp_utils.metrics.precision_at_k`).  Mean per setup x method x order (column
    ``precision_at_k``)."""
    rows = []
    for s in (s for s in setups if s.relevant is not None):
        valid = perturbation.valid_positions(s.model(ASSOCIATIONS[0]), s.ids, s.mask)
        for m, o in _pairs(methods):
            hit = metrics.precision_at_k(s.maps[(m, o)]["tokens"], s.relevant, valid)
            rows.append({**s.key, "method": m, "order": o, "precision_at_k": float(np.mean(hit))})
    return pd.DataFrame(rows)


def heatmap_rows(setup: Setup, i: int, methods=("attnlrp", "gi", "cp-lrp", "loo")):
    """``(tokens, {"method order": [n]})`` of example ``i`` for :func:`lrp_utils.viz.token_heatmap`
    (LOO is NaN at [CLS], which is never removed: the heatmap draws it hatched, apart from 0)."""
    n = int(setup.mask[i].sum())
    rows = {f"{m} {o}" if o != ONCE else m: setup.maps[(m, o)]["tokens"][i, :n] for m, o in _pairs(methods)}
    return setup.tokens[i], rows


def pick_example(div: pd.DataFrame, setup: Setup, method: str = "attnlrp", lengths=(8, 16),
                 quantile: float = 0.5) -> int:
    """Index of a typical example of ``setup`` for display: the ``quantile`` of ``method``'s token-level
    ``rel_l1`` among examples with ``lengths[0] .. lengths[1]`` tokens (all examples if none)."""
    d = div[(div["level"] == "tokens") & (div["method"] == method)]
    d = d[(d[list(setup.key)] == pd.Series(setup.key)).all(axis=1)]
    n = setup.mask.sum(1).cpu().numpy()[d["example"].to_numpy()]
    inside = d[(n >= lengths[0]) & (n <= lengths[1])]
    d = (inside if len(inside) else d).sort_values(["rel_l1", "example"])
    return int(d["example"].iloc[int(quantile * (len(d) - 1))])


def findings_table(div, agree, faith, hits) -> pd.DataFrame:
    """One row per task x feature map (means over seeds and examples): AttnLRP's divergence between
    the orders (token level), the largest divergence of the invariant methods, Spearman with LOO at
    layer 0 per order, area between the LeRF and MoRF curves per order, keyword precision per order."""
    by = ["task", "feature_map"]
    tok = div[div["level"] == "tokens"]
    att = tok[tok["method"] == "attnlrp"].groupby(by)
    out = pd.DataFrame({"attnlrp_rel_l1": att["rel_l1"].mean(),
                        "attnlrp_max_token_diff": att["max_token_diff"].mean(),
                        "attnlrp_shape_l1": att["shape_l1"].mean(),
                        "attnlrp_norm_ratio": att["norm_ratio"].mean(),
                        "attnlrp_spearman_ab": att["spearman"].mean(),
                        "attnlrp_top1_same": att["top1_same"].mean(),
                        "invariant_max_rel_l1": tok[tok["method"] != "attnlrp"].groupby(by)["rel_l1"].max()})
    a0 = agree[(agree["layer"] == 0) & (agree["method"] == "attnlrp")]
    area = faith[(faith["method"] == "attnlrp") & (faith["curve"] == "morf") & (faith["fraction"] == 0)]
    for o in ASSOCIATIONS:
        out[f"loo_spearman_L0 {o}"] = a0[a0["order"] == o].groupby(by)["spearman"].mean()
        out[f"area_between {o}"] = area[area["order"] == o].groupby(by)["area_between"].mean()
        if len(hits):
            h = hits[(hits["method"] == "attnlrp") & (hits["order"] == o)]
            out[f"keyword_p@k {o}"] = h.groupby(by)["precision_at_k"].mean()
    return out


# ------------------------------------------------------------------------------ tables written by the notebook
SHARES_CSV = "03_qkv_shares.csv"
DIVERGENCE_CSV = "03_divergence_summary.csv"
#: the random single-head layer of section 2 in the divergence table (``task``, ``feature_map``)
RANDOM_LAYER = ("random layer", "identity")


def divergence_table(div: pd.DataFrame, n_boot: int = 1000, seed: int = 0) -> pd.DataFrame:
    """Per task x feature map x method x level of a :func:`divergence_study` (or of
    :func:`lrp_utils.invariance.implementation_invariance` with ``task`` and ``feature_map`` columns):
    the mean ``rel_l1`` and ``max_token_diff`` over inputs (seeds pooled) with percentile-bootstrap 95%
    intervals (``*_low``, ``*_high``), the largest ``l1_vs_largest`` (``l1_vs_largest_max``) and ``n``."""
    rows = []
    for key, g in div.groupby(["task", "feature_map", "method", "level"], sort=True):
        row = dict(zip(("task", "feature_map", "method", "level"), key))
        for col in ("rel_l1", "max_token_diff"):
            ci = metrics.bootstrap_ci(g[col], n_boot=n_boot, seed=seed)
            row.update({col: ci.mean, f"{col}_low": ci.low, f"{col}_high": ci.high})
        rows.append({**row, "l1_vs_largest_max": g["l1_vs_largest"].max(), "n": len(g)})
    return pd.DataFrame(rows)


# ------------------------------------------------------------------------------ claims
PAPER = "You et al. 2025 (i)"
#: the shares AttnLRP's uniform rule gives Q, K, V per order (the proof in notebook 03, section 2)
PAPER_SHARES = {"(qk)v": (0.25, 0.25, 0.5), "q(kv)": (0.5, 0.25, 0.25)}
#: float64 rounding plus the identity rule's epsilon (1e-10): exact shares, exact invariance
SHARE_TOL, INVARIANT_SHARE_TOL, INVARIANT_TOL = 1e-8, 1e-12, 1e-10
#: "differ": mean relative L1 distance of the token maps above 10%; "per-token difference of the order
#: of 20% of the total" (the paper, one random 8-token layer): mean largest single-token difference above 5%
DIFFER, TOKEN_DIFFER = 0.1, 0.05
_FMAP_NAMES = {"identity": "phi = identity", "elu1": "phi = elu+1, normalised", "elu1, normalised":
               "phi = elu+1, normalised"}
_TASK_NAMES = {"rt": "Rotten Tomatoes", "keyword": "keyword task"}
_TRAINED_ALL = "trained linear-attention classifiers (Rotten Tomatoes, keyword task; both feature maps)"


def _share_claims(figures) -> list:
    from ..claims import Claim, Exact

    s = pd.read_csv(figures / SHARES_CSV).set_index(["feature_map", "method", "order"])[["q", "k", "v"]]
    rows = []
    for fmap in s.index.get_level_values("feature_map").unique():
        model = f"random single-head linear-attention layer, {_FMAP_NAMES.get(fmap, fmap)}"
        dev = max(float((s.loc[(fmap, "attnlrp", o)] - want).abs().max()) for o, want in PAPER_SHARES.items())
        rows.append(Claim("03", "qkv-shares-attnlrp", PAPER, "AttnLRP sends Q:K:V = 1/4:1/4:1/2 of the relevance "
                          "for (QK^T)V and 1/2:1/4:1/4 for Q(K^T V)", "max |share - 1/4 or 1/2| over Q, K, V "
                          "and both orders", model, dev, Exact(SHARE_TOL), n=1, checked_in_ci=True))
        for m, name in (("gi", "GI"), ("cp-lrp", "CP-LRP")):
            d = float((s.loc[(fmap, m, "(qk)v")] - s.loc[(fmap, m, "q(kv)")]).abs().max())
            rows.append(Claim("03", f"qkv-shares-{m}-invariant", PAPER,
                              f"{name} gives Q, K and V the same shares in both association orders",
                              "max |share (QK^T)V - share Q(K^T V)| over Q, K, V", model, d,
                              Exact(INVARIANT_SHARE_TOL), n=1, checked_in_ci=True))
    return rows


def _divergence_claims(figures) -> list:
    from ..claims import CISide, Claim, Exact

    d = pd.read_csv(figures / DIVERGENCE_CSV)
    rows = []
    task, fmap = RANDOM_LAYER
    r = d[(d.task == task) & (d.feature_map == fmap) & (d.method == "attnlrp") & (d.level == "tokens")].iloc[0]
    rows.append(Claim("03", "random-layer-token-difference", PAPER,
                      "In a random 8-token linear-attention layer AttnLRP's per-token relevance differs between "
                      "the two orders by a sizeable share of the total (about 20% in the paper)",
                      "mean over inputs of max_i |R_(qk)v,i - R_q(kv),i| / ||R_(qk)v||_1 (bootstrap 95% CI)",
                      "random single-head linear-attention layer, 8 tokens", r["max_token_diff"],
                      CISide(">", TOKEN_DIFFER), r["max_token_diff_low"], r["max_token_diff_high"], n=int(r["n"]),
                      checked_in_ci=True))
    trained = d[d.task != task]
    tok = trained[(trained.method == "attnlrp") & (trained.level == "tokens")]
    for _, r in tok.iterrows():
        rows.append(Claim("03", "trained-attnlrp-orders-differ", PAPER,
                          "On a trained linear-attention model with shared weights AttnLRP's token relevance "
                          "differs between the two association orders",
                          "mean over inputs of ||R_(qk)v - R_q(kv)||_1 / ||R_(qk)v||_1, token level "
                          "(bootstrap 95% CI)",
                          f"trained linear-attention classifier, {_TASK_NAMES.get(r.task, r.task)}, "
                          f"{_FMAP_NAMES.get(r.feature_map, r.feature_map)}", r["rel_l1"], CISide(">", DIFFER),
                          r["rel_l1_low"], r["rel_l1_high"], n=int(r["n"]), checked_in_ci=True))
    for m, name in (("gi", "GI"), ("ig", "IG"), ("cp-lrp", "CP-LRP"), ("loo-zero", "LOO (x_i := 0)")):
        g = trained[trained.method == m]
        rows.append(Claim("03", f"trained-{m}-invariant", PAPER,
                          f"{name} gives the same relevance in both association orders (implementation invariance)",
                          "largest ||R_(qk)v - R_q(kv)||_1 over the example's largest ||R||_1, every input and "
                          "level", _TRAINED_ALL, g["l1_vs_largest_max"].max(), Exact(INVARIANT_TOL),
                          n=int(g[g.level == "tokens"]["n"].sum()), checked_in_ci=True))
    return rows


@claims.register("03")
def claims_from_csvs(figures) -> list:
    """Notebook 03's claims from its figure CSVs: the toy (:func:`lrp_utils.toy.toy_claims`), the Q:K:V
    shares (:data:`SHARES_CSV`), and the divergence of the two orders on the random layer and the trained
    models, AttnLRP against the invariant methods (:data:`DIVERGENCE_CSV`)."""
    from pathlib import Path

    from ..toy import toy_claims

    figures = Path(figures)
    return toy_claims(figures) + _share_claims(figures) + _divergence_claims(figures)
