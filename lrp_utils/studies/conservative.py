"""Notebook 01: conservative propagation (Ali et al. 2022): the name-swap probe.

The notebook's other pieces are library calls: per-layer conservation (:func:`lrp_utils.audit.layer_sums`,
:func:`lrp_utils.audit.layer_ratio_summary`) and AUAC / AU-MSE faithfulness
(:func:`lrp_utils.perturbation.run_faithfulness`, the ``"unk"`` operator of
:class:`lrp_utils.perturbation.RemovalScorer`).
"""
from __future__ import annotations

import pandas as pd
import torch

from .. import claims, perturbation
from ..adapters import get_adapter
from ..engine import explain
from ..perturbation import RemovalScorer


def name_swap_probe(model, tokenizer, templates, names: dict, methods=("gi", "cp-lrp-ah", "cp-lrp", "attnlrp"),
                    target: int = 1) -> pd.DataFrame:
    """Relevance of a swapped-in name (bias probe in the spirit of Ali et al. 2022).

    Args:
        templates: sentences with one ``{}`` where the name goes, e.g. ``"{} was brilliant in this film"``.
        names: ``{name: group}``, e.g. ``{"John": "male", "Mary": "female"}``.
        target: the explained class (1 = positive for MiniLM-RT), the same for every sentence.
    Returns one row per (template, name, method): ``name_relevance`` (sum over the name's word
    pieces), ``name_share`` (that / sum of |R| over the sentence), ``logit`` of ``target``, ``prob``.
    """
    meta = [(tpl, name, group) for tpl in templates for name, group in names.items()]
    texts = [tpl.format(name) for tpl, name, _ in meta]
    enc = tokenizer(texts, padding=True, return_tensors="pt", return_offsets_mapping=True, padding_side="right")
    start = torch.tensor([tpl.index("{}") for tpl, _, _ in meta])[:, None]
    end = start + torch.tensor([len(name) for _, name, _ in meta])[:, None]
    o = enc["offset_mapping"]
    in_name = (o[..., 0] < end) & (o[..., 1] > start) & (o[..., 1] > o[..., 0])
    ids, mask = enc["input_ids"], enc["attention_mask"]
    probs = RemovalScorer(model, ids, mask, target, progress=False).prob(torch.zeros_like(ids, dtype=torch.bool))
    dev = get_adapter(model).device
    ids, mask = ids.to(dev), mask.to(dev)
    rows = []
    for m in methods:
        exp = explain(model, ids, m, target=target, attention_mask=mask)
        R = exp.tokens.double()
        name_rel = (R * in_name).sum(1)
        share = name_rel / R.abs().sum(1)
        for i, (tpl, name, group) in enumerate(meta):
            rows.append((tpl, name, group, m, float(name_rel[i]), float(share[i]), float(exp.logit[i]),
                         float(probs[i])))
    return pd.DataFrame(rows, columns=["template", "name", "group", "method", "name_relevance",
                                       "name_share", "logit", "prob"])


# --------------------------------------------------------------------------- tables written by the notebook
TINY_CSV = "01_conservation_tiny.csv"
MINILM_CSV = "01_conservation_minilm.csv"
PAIRED_CSV = "01_faithfulness_paired.csv"
#: the paper's methods in its order, worst to best (Ali et al. 2022, Table 2: AUAC and AU-MSE on IMDB and SST-2)
PAPER_ORDER = ("random", "rollout", "gi", "cp-lrp-ah", "cp-lrp")
#: which way is better per metric of Ali et al. (AUAC: higher, AU-MSE: lower), in the paper's order
HIGHER_IS_BETTER = {m: perturbation.HIGHER_IS_BETTER[m] for m in perturbation.PROTOCOLS["ali"]}


def tiny_conservation(ids, mask, methods=("gi", "cp-lrp-ah", "cp-lrp"), norms=("layernorm", "none"),
                      seed: int = 0) -> pd.DataFrame:
    """Conservation on a bias-free one-block ``TinyTransformer`` (float64, O(1) weights, no positions).

    ``ids, mask [B, S]``. One row per (norm, method, example): ``sum`` of the token relevance, the explained
    ``logit`` and ``rel_error = |sum - logit| / |logit|``.
    """
    from ..audit import layer_sums
    from ..models import TinyConfig, TinyTransformer

    frames = []
    for norm in norms:
        cfg = TinyConfig(n_layers=1, bias=False, position="none", norm=norm, d_model=32, n_heads=4)
        tiny = TinyTransformer(cfg).double().reset_parameters(0.5, seed=seed).eval()
        s = layer_sums(tiny, ids, mask, list(methods), progress=False)
        frames.append(s[s.layer == -1].assign(norm=norm))
    df = pd.concat(frames, ignore_index=True)
    df = df.assign(rel_error=(df["sum"] - df["logit"]).abs() / df["logit"].abs())
    return df[["norm", "method", "example", "sum", "logit", "rel_error"]]


def paired_table(res, pairs=None, n_boot: int = 1000, seed: int = 0) -> pd.DataFrame:
    """Paired differences of the faithfulness areas of :func:`lrp_utils.perturbation.run_faithfulness`.

    ``pairs``: ``(method, reference)`` tuples (default: every ordered pair of the paper's methods,
    :data:`PAPER_ORDER`, plus every other method against ``cp-lrp``). One row per metric and pair:
    ``diff`` = mean of ``area(method) - area(reference)`` over the same sentences, its paired bootstrap 95%
    interval ``low, high`` and ``n``.
    """
    methods = list(res.areas["method"].unique())
    if pairs is None:
        pairs = [(a, b) for i, b in enumerate(PAPER_ORDER) for a in PAPER_ORDER[i + 1:]]
        pairs += [(m, "cp-lrp") for m in methods if m not in PAPER_ORDER]
    rows = []
    for metric in HIGHER_IS_BETTER:
        areas = res.areas[res.areas["metric"] == metric]
        for m, ref in pairs:
            d = perturbation.paired_differences(areas, ref, [m], n_boot=n_boot, seed=seed).iloc[0]
            rows.append({"metric": metric, "method": m, "reference": ref, "diff": d["diff"], "low": d["low"],
                         "high": d["high"], "n": int(d["n"])})
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------- claims
PAPER = "Ali et al. 2022"
MINILM = "MiniLM-RT"
_TINY_MODELS = {"layernorm": "bias-free 1-block TinyTransformer, LayerNorm",
                "none": "bias-free 1-block TinyTransformer, no normalisation"}
#: exact conservation in float64 (relative error); "does not conserve": relative error above 1%
EXACT_TOL, BROKEN = 1e-8, 0.01
#: MiniLM-RT: below the last LayerNorm, "almost no total relevance" (|sum / logit| < 0.2) and "most of it" (> 0.5)
LOST, KEPT = 0.2, 0.5


def _tiny_claims(figures) -> list:
    from ..claims import Claim, Exact, Threshold

    t = pd.read_csv(figures / TINY_CSV)
    err = t.groupby(["norm", "method"])["rel_error"].agg(["max", "min", "size"])
    rows = []

    def add(claim_id, claim, norm, method, rule, stat):
        r = err.loc[(norm, method)]
        measure = (f"{'largest' if stat == 'max' else 'smallest'} |sum of token relevance - logit| / |logit| "
                   f"of {method} over the sequences (float64)")
        rows.append(Claim("01", claim_id, PAPER, claim, measure, _TINY_MODELS[norm], r[stat], rule,
                          n=int(r["size"]), checked_in_ci=True))

    for norm in ("layernorm", "none"):
        add("cp-lrp-conserves", "LRP with the AH- and LN-rules (CP-LRP) is conservative: token relevance sums to "
            "the logit", norm, "cp-lrp", Exact(EXACT_TOL), "max")
    add("ah-rule-fixes-softmax", "The AH-rule (attention probabilities held constant) restores conservation "
        "through the softmax", "none", "cp-lrp-ah", Exact(EXACT_TOL), "max")
    add("ah-rule-breaks-at-layernorm", "Without the LN-rule, LayerNorm breaks conservation (AH-rule alone)",
        "layernorm", "cp-lrp-ah", Threshold(">", BROKEN), "min")
    for norm in ("none", "layernorm"):
        add("gi-not-conservative", "Gradient x Input is not conservative in a transformer (softmax and LayerNorm)",
            norm, "gi", Threshold(">", BROKEN), "min")
    return rows


def _minilm_claims(figures) -> list:
    from ..claims import Claim, Threshold

    r = pd.read_csv(figures / MINILM_CSV)
    n = int(r["n"].iloc[0]) if "n" in r else None
    last = int(r["layer"].max())
    below = r[r["layer"] < last]  # every residual stream below the last LayerNorm (post-LN MiniLM)
    rows = []
    for m, name in (("gi", "GI"), ("cp-lrp-ah", "the AH-rule alone")):
        g = below[below["method"] == m]
        rows.append(Claim("01", f"{m}-lost-at-layernorm", PAPER,
                          f"Without the LN-rule, {name} passes almost no total relevance through LayerNorm",
                          f"largest |mean(sum of relevance) / mean(logit)| of {m} over the {len(g)} layers below "
                          "the last LayerNorm", MINILM, g["ratio"].abs().max(), Threshold("<", LOST), n=n,
                          checked_in_ci=True))
    g = r[r["method"] == "cp-lrp"]
    rows.append(Claim("01", "ln-rule-keeps-relevance", PAPER,
                      "With the LN-rule, CP-LRP keeps most of the logit's relevance at every layer",
                      f"smallest mean(sum of relevance) / mean(logit) of cp-lrp over the {len(g)} layers", MINILM,
                      g["ratio"].min(), Threshold(">", KEPT), n=n, checked_in_ci=True))
    return rows


def _ordering_claims(figures) -> list:
    from ..claims import Claim, Count

    p = pd.read_csv(figures / PAIRED_CSV).set_index(["metric", "method", "reference"])
    best, worse = PAPER_ORDER[-1], PAPER_ORDER[:-1]
    chain = list(zip(PAPER_ORDER[1:], PAPER_ORDER[:-1]))  # (better, worse) neighbours of the paper's order
    rows = []
    for metric, higher in HIGHER_IS_BETTER.items():
        word = "higher" if higher else "lower"
        for claim_id, claim, pairs in (
                (f"{metric.lower()}-cp-lrp-best", f"LRP (AH+LN) has the best {metric} of the paper's methods "
                 f"(random, rollout, GI, LRP (AH))", [(best, w) for w in worse]),
                (f"{metric.lower()}-ordering", f"{metric} orders the methods random < rollout < GI < LRP (AH) < "
                 "LRP (AH+LN) (worst to best)", chain)):
            d = p.loc[[(metric, a, b) for a, b in pairs]]
            t = Count.tally(d["diff"], d["low"], d["high"], direction=">" if higher else "<")
            listed = ", ".join(f"{a} vs {b}" for a, b in pairs)
            rows.append(Claim("01", claim_id, PAPER, claim,
                              f"pairs with {word} {metric} (paired bootstrap 95% CI of the difference): {listed}",
                              MINILM, t["value"], Count(len(pairs)), t["ci_low"], t["ci_high"], n=int(d["n"].min()),
                              checked_in_ci=False))
    return rows


@claims.register("01")
def claims_from_csvs(figures) -> list:
    """Notebook 01's claims from its figure CSVs: exact conservation on the bias-free tiny model
    (:data:`TINY_CSV`), relevance lost / kept at MiniLM-RT's LayerNorms (:data:`MINILM_CSV`), and the
    AUAC / AU-MSE orderings of Ali et al. (paired differences, :data:`PAIRED_CSV`)."""
    from pathlib import Path

    figures = Path(figures)
    return _tiny_claims(figures) + _minilm_claims(figures) + _ordering_claims(figures)


@claims.register_caption("01", "01_faithfulness_curves.png")
def faithfulness_caption(figures) -> str:
    """README caption of ``01_faithfulness_curves.png`` from ``01_faithfulness_summary.csv``."""
    from pathlib import Path

    s = pd.read_csv(Path(figures) / "01_faithfulness_summary.csv")
    auac = s[s["metric"] == "AUAC"].set_index("method")["mean"]
    mse = s[s["metric"] == "AU-MSE"].set_index("method")["mean"]
    return (f"AUAC (higher is better) and AU-MSE (lower is better) curves of {len(auac)} methods on "
            f"{int(s['n'].max())} MiniLM-RT test sentences; highest mean AUAC: {auac.idxmax()} ({auac.max():.3f}), "
            f"lowest mean AU-MSE: {mse.idxmin()} ({mse.min():.3f}).")
