"""Our explanations against the reference library lxt on the committed fixtures (notebook 02)."""
from __future__ import annotations

import pandas as pd
import torch

from ..engine import explain
from .loader import NAMES, load_fixture


def agreement(names=NAMES) -> pd.DataFrame:
    """Our token relevance vs lxt's on the committed fixtures, one row per (model, method):
    ``cosine`` (all tokens of the batch flattened), ``max_rel_error`` (max |ours - lxt| / max |lxt|)
    and ``logit_abs_error``; the fixtures hold float64 tiny random models (see :mod:`lrp_utils.lxt`)."""
    rows = []
    for name in names:
        model, fix = load_fixture(name)
        for method, ref in fix["relevance"].items():
            exp = explain(model, fix["input_ids"], method, target=fix["target"], attention_mask=fix["attention_mask"])
            ours, ref = exp.tokens.flatten().double(), ref.flatten().double()
            rows.append({"model": name, "method": method, "lxt_version": fix.get("lxt_version"),
                         "cosine": float(torch.nn.functional.cosine_similarity(ours, ref, dim=0)),
                         "max_rel_error": float((ours - ref).abs().max() / ref.abs().max()),
                         "logit_abs_error": float((exp.logit.double() - fix["logit"].double()).abs().max())})
    return pd.DataFrame(rows)
