"""Notebook 01: conservative propagation (Ali et al. 2022): the name-swap probe.

The notebook's other pieces are library calls: per-layer conservation (:func:`lrp_utils.audit.layer_sums`,
:func:`lrp_utils.audit.layer_ratio_summary`) and AUAC / AU-MSE faithfulness
(:func:`lrp_utils.perturbation.run_faithfulness`, the ``"unk"`` operator of
:class:`lrp_utils.perturbation.RemovalScorer`).
"""
from __future__ import annotations

import pandas as pd
import torch

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
