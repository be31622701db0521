"""Our explanations against the reference library lxt on the committed fixtures (notebook 02)."""
from __future__ import annotations

import pandas as pd
import torch

from ..engine import explain
from .loader import NAMES, load_fixture


def agreement(names=NAMES) -> pd.DataFrame:
    """Our relevance vs lxt's on the committed fixtures, one row per (model, method): token relevance
    (pixel relevance for the vision fixture), ``cosine`` (the whole batch flattened),
    ``max_rel_error`` (max |ours - lxt| / max |lxt|) and ``logit_abs_error``; the fixtures hold
    float64 tiny random models (see :mod:`lrp_utils.lxt`)."""
    rows = []
    for name in names:
        model, fix = load_fixture(name)
        for method, ref in fix["relevance"].items():
            if "pixel_values" in fix:
                exp = explain(model, pixel_values=fix["pixel_values"], method=method, target=fix["target"])
                ours = exp.pixels
            else:
                exp = explain(model, fix["input_ids"], method, target=fix["target"],
                              attention_mask=fix["attention_mask"])
                ours = exp.tokens
            ours, ref = ours.flatten().double(), ref.flatten().double()
            rows.append({"model": name, "method": method, "lxt_version": fix.get("lxt_version"),
                         "cosine": float(torch.nn.functional.cosine_similarity(ours, ref, dim=0)),
                         "max_rel_error": float((ours - ref).abs().max() / ref.abs().max()),
                         "logit_abs_error": float((exp.logit.double() - fix["logit"].double()).abs().max())})
    return pd.DataFrame(rows)
