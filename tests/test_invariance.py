"""lrp_utils.invariance (Q:K:V shares, pairs, maps, divergence) and lrp_utils.studies.linear_attention
(the study loops of notebook 03)."""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch
from conftest import tiny
from tolerances import EXACT_REL, HAND_FLOAT64_ATOL, SAME_FUNCTION_F64

from lrp_utils import metrics
from lrp_utils.data import keyword_task
from lrp_utils import invariance as I
from lrp_utils.studies import linear_attention as inv
from lrp_utils.models import TinyTransformer


def linear_pair(std=0.5, seed=0, **kwargs):
    """A random float64 linear-attention model in order (qk)v and its q(kv) copy (same weights)."""
    a = tiny(std=std, seed=seed, attention="linear", order="(qk)v", **kwargs)
    b = TinyTransformer(replace(a.config, order="q(kv)")).double().eval()
    b.load_state_dict(a.state_dict())
    return a, b


@pytest.mark.parametrize("fmap,normalize", [("identity", False), ("elu1", True)])
def test_qkv_shares_attnlrp(fmap, normalize):
    expected = {"(qk)v": (0.25, 0.25, 0.5), "q(kv)": (0.5, 0.25, 0.25)}
    for order, shares in expected.items():
        got = I.qkv_shares(order, "attnlrp", seed=3, feature_map=fmap, normalize=normalize)
        for name, want in zip("qkv", shares):
            assert got[name] == pytest.approx(want, rel=1e-8)  # identity rule on elu1: eps 1e-10
        assert got["total"] == pytest.approx(1.0, rel=1e-8)


@pytest.mark.parametrize("method", ["gi", "cp-lrp"])
def test_qkv_shares_invariant_methods(method):
    a, b = (I.qkv_shares(o, method, seed=1) for o in I.ASSOCIATIONS)
    for name in ("q", "k", "v"):
        assert a[name] == pytest.approx(b[name], rel=EXACT_REL, abs=EXACT_REL)
    table = I.qkv_share_table()
    assert len(table) == 6 and set(table.columns) >= {"method", "order", "q", "k", "v", "total"}


def test_implementation_invariance_random_pair():
    a, b = linear_pair()
    ids = torch.randint(2, 50, (4, 9))
    mask = torch.ones_like(ids)
    mask[1, 6:] = 0
    for method in ("gi", "cp-lrp", "loo", "loo-zero"):
        df = I.implementation_invariance(a, b, ids, method, attention_mask=mask, batch_size=2)
        assert df.attrs["max_logit_diff"] < SAME_FUNCTION_F64
        assert df["rel_l1"].max() < SAME_FUNCTION_F64, method  # NaN (zero maps) skipped
    df = I.implementation_invariance(a, b, ids, "attnlrp", attention_mask=mask)
    assert set(df["level"]) == {"tokens", "layer 0", "layer 1", "layer 2"} and len(df) == 4 * 4
    tokens = df[df.level == "tokens"]
    assert (tokens["rel_l1"] > 0.01).all()
    assert (tokens["max_token_diff"] > 0).all()
    # after the last block nothing differs: the read-out is the same code in both models
    assert df[df.level == "layer 2"]["rel_l1"].max() < SAME_FUNCTION_F64


def test_implementation_invariance_rejects_different_functions():
    a, _ = linear_pair(seed=0)
    c, _ = linear_pair(seed=1)
    with pytest.raises(ValueError, match="different logits"):
        I.implementation_invariance(a, c, torch.randint(2, 50, (2, 6)), "gi")


def test_toy_table_and_random_pair():
    toy = inv.toy_table().set_index(["method", "order", "input"]).sort_index()["relevance"]
    assert toy["attnlrp", "left"].tolist() == [6, 6, 12] and toy["attnlrp", "right"].tolist() == [12, 6, 6]
    models = I.random_pair(seed=2)
    ids = torch.randint(0, 50, (3, 8))
    df = I.implementation_invariance(models["(qk)v"], models["q(kv)"], ids, "attnlrp")
    assert (df[df.level == "tokens"]["max_token_diff"] > 0.01).all()


def test_studies_on_a_trained_keyword_pair():
    data = keyword_task(200, seq_len=10, seed=0)
    train_data = (data.input_ids, torch.ones_like(data.input_ids), data.labels)
    models = I.train_pair(train_data, 32, "elu1", inv.RECIPES["quick"], seed=0, max_len=10)
    a, b = models["(qk)v"], models["q(kv)"]
    assert a.config.order == "(qk)v" and b.config.order == "q(kv)" and a.config.normalize
    assert all(torch.equal(p, q) for p, q in zip(a.state_dict().values(), b.state_dict().values()))
    test = keyword_task(6, seq_len=10, seed=1)
    ids, mask = test.input_ids, torch.ones_like(test.input_ids)
    diff = I.same_logits(a, b, ids, mask)
    target = a(ids).argmax(-1)
    setup = inv.Setup("keyword", "elu1", 0, models, ids, mask, test.labels, target,
                      [[str(int(i)) for i in row] for row in ids], 0.0, diff, test.relevant)
    methods = ("attnlrp", "gi", "cp-lrp", "loo")
    inv.attribute([setup], methods, progress=False)
    div = inv.divergence_study([setup], methods[:3])
    assert div[div.method != "attnlrp"]["rel_l1"].max() < SAME_FUNCTION_F64
    assert div[(div.method == "attnlrp") & (div.level == "tokens")]["rel_l1"].mean() > 1e-3
    loo = inv.loo_study([setup], n_boot=20)
    assert len(loo) == 3 * 2 * 2 and loo["spearman"].between(-1, 1).all()
    same = loo.pivot_table(index=["method", "layer"], columns="order", values="spearman")
    assert (same.loc["gi", "(qk)v"] - same.loc["gi", "q(kv)"]).abs().max() < 1e-9
    faith = inv.faithfulness_study([setup], ("gi", "attnlrp"), fractions=[0.0, 0.5, 1.0])
    assert len(faith) == 2 * 2 * 2 * 3
    start = faith[faith.fraction == 0.0]["score"]
    assert (start - start.iloc[0]).abs().max() < 1e-9  # nothing removed: the same logit everywhere
    hits = inv.keyword_hits([setup], methods)
    assert len(hits) == 3 * 2 + 1 and hits["precision_at_k"].between(0, 1).all()  # LOO once


def test_relevance_maps_chunked_equals_whole():
    a, _ = linear_pair()
    ids = torch.randint(2, 50, (5, 8))
    mask = torch.ones_like(ids)
    mask[0, 3:], mask[2, 5:] = 0, 0
    for method in ("attnlrp", "loo"):
        whole = I.relevance_maps(a, ids, method, mask)
        chunked = I.relevance_maps(a, ids, method, mask, batch_size=2)
        for level in whole:
            torch.testing.assert_close(chunked[level], whole[level], rtol=SAME_FUNCTION_F64,
                                       atol=SAME_FUNCTION_F64, equal_nan=True)


def test_compare_maps_matches_a_per_row_replica():
    g = torch.Generator().manual_seed(0)
    a = {"tokens": torch.randn(30, 10, generator=g, dtype=torch.float64)}
    b = {"tokens": a["tokens"] + 0.3 * torch.randn(30, 10, generator=g, dtype=torch.float64)}
    b["tokens"][:, 4] = b["tokens"][:, 4].round()  # some ties for the ranks
    mask = torch.ones(30, 10, dtype=torch.long)
    mask[:8, 6:], mask[8, 2:] = 0, 0  # padding; example 8 keeps 2 positions: correlations undefined
    df = I.compare_maps(a, b, mask)
    for _, row in df.iterrows():
        m = mask[row.example].bool()
        x, y = a["tokens"][row.example][m].numpy(), b["tokens"][row.example][m].numpy()
        pearson, spearman = metrics.correlations(x, y)
        for want, got in ((pearson, row.pearson), (spearman, row.spearman)):
            assert (np.isnan(want) and np.isnan(got)) or abs(want - got) < HAND_FLOAT64_ATOL
        assert row.rel_l1 == pytest.approx(np.abs(x - y).sum() / np.abs(x).sum(), rel=1e-12)
        shape = np.abs(x / np.abs(x).sum() - y / np.abs(y).sum()).sum()
        assert row.shape_l1 == pytest.approx(shape, rel=1e-12)


# ----------------------------------------------------------------------------- notebook 03's claims
def _write_03(figures, attnlrp_l1=0.4, invariant_l1=1e-13):
    """Synthetic CSVs of notebook 03: the toy, exact Q:K:V shares, a divergence table."""
    import pandas as pd

    from lrp_utils import toy
    from lrp_utils.studies import linear_attention as inv

    toy.save_toy_table(figures)
    shares = [{"feature_map": f, "method": m, "order": o, "q": q, "k": k, "v": v, "total": q + k + v}
              for f in ("identity", "elu1, normalised") for o in inv.PAPER_SHARES
              for m, (q, k, v) in (("attnlrp", inv.PAPER_SHARES[o]), ("gi", (1, 1, 1)), ("cp-lrp", (0, 0, 1)))]
    pd.DataFrame(shares).to_csv(figures / inv.SHARES_CSV, index=False)
    rows = []
    groups = [inv.RANDOM_LAYER] + [(t, f) for t in ("rt", "keyword") for f in ("identity", "elu1")]
    for task, fmap in groups:
        for m in ("attnlrp", "gi", "ig", "cp-lrp", "loo-zero"):
            for level in ("tokens", "layer 0", "layer 1"):
                d = attnlrp_l1 if m == "attnlrp" else invariant_l1
                rows.append({"task": task, "feature_map": fmap, "method": m, "level": level, "rel_l1": d,
                             "rel_l1_low": d * 0.8, "rel_l1_high": d * 1.2, "max_token_diff": d / 3,
                             "max_token_diff_low": d / 4, "max_token_diff_high": d / 2,
                             "l1_vs_largest_max": d, "n": 20})
    pd.DataFrame(rows).to_csv(figures / inv.DIVERGENCE_CSV, index=False)


def test_claims_03_from_synthetic_csvs(tmp_path):
    from lrp_utils.studies import linear_attention as inv

    _write_03(tmp_path)
    rows = inv.claims_from_csvs(tmp_path)
    assert all(c.verdict == "reproduced" and c.checked_in_ci for c in rows), [(c.claim_id, c.verdict) for c in rows]
    ids = [c.claim_id for c in rows]
    assert ids.count("trained-attnlrp-orders-differ") == 4 and ids.count("qkv-shares-attnlrp") == 2
    assert ids[:5] == ["toy-attnlrp", "toy-gi-invariant", "toy-ig-invariant", "toy-loo-zero-invariant",
                       "toy-loo-one-invariant"]
    assert len({(c.claim_id, c.model) for c in rows}) == len(rows)


def test_claims_03_reversed(tmp_path):
    """AttnLRP that does not move between the orders contradicts the divergence claims; invariant methods
    that move are not reproduced; wrong shares are not reproduced."""
    import pandas as pd

    from lrp_utils.studies import linear_attention as inv

    _write_03(tmp_path, attnlrp_l1=0.01, invariant_l1=0.2)
    s = pd.read_csv(tmp_path / inv.SHARES_CSV)
    s.loc[s.method == "attnlrp", ["q", "k", "v"]] = 1 / 3
    s.to_csv(tmp_path / inv.SHARES_CSV, index=False)
    v = {}
    for c in inv.claims_from_csvs(tmp_path):
        v.setdefault(c.claim_id, set()).add(c.verdict)
    assert v["trained-attnlrp-orders-differ"] == v["random-layer-token-difference"] == {"contradicted"}
    assert v["trained-gi-invariant"] == v["trained-loo-zero-invariant"] == {"not reproduced"}
    assert v["qkv-shares-attnlrp"] == {"not reproduced"} and v["qkv-shares-gi-invariant"] == {"reproduced"}


def test_divergence_table_intervals():
    import pandas as pd

    from lrp_utils.studies import linear_attention as inv

    div = pd.DataFrame({"task": "rt", "feature_map": "identity", "method": "attnlrp", "level": "tokens",
                        "rel_l1": [0.1, 0.2, 0.3, float("nan")], "max_token_diff": [0.05, 0.05, 0.05, 0.05],
                        "l1_vs_largest": [0.1, 0.4, 0.2, 0.3]})
    t = inv.divergence_table(div, n_boot=100).iloc[0]
    assert t["rel_l1"] == pytest.approx(0.2) and t["rel_l1_low"] <= 0.2 <= t["rel_l1_high"]
    assert t["max_token_diff_low"] == t["max_token_diff_high"] == pytest.approx(0.05)
    assert t["l1_vs_largest_max"] == 0.4 and t["n"] == 4
