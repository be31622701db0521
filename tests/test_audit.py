"""lrp_utils.audit: per-layer sums, conservation tables and the absorption audit."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import hf_model, tiny
from tolerances import EXACT_REL, HAND_FLOAT64_ATOL, HF_LLAMA_F32_NORM_REL, SAME_FUNCTION_F64
from transformers import AttentionInterface

from lrp_utils import explain
from lrp_utils.adapters import hf
from lrp_utils.adapters.hf import ATTN_KEY
from lrp_utils import audit as C


def _ids(vocab=50, seed=0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, vocab, (3, 7), generator=g)
    mask = torch.ones_like(ids)
    mask[2, 5:] = 0
    return ids, mask


def test_layer_sums_cp_conserves_gi_does_not():
    model = tiny(std=0.5, n_layers=1, bias=False, position="none")
    ids, mask = _ids()
    df = C.layer_sums(model, ids, mask, ["cp-lrp", "gi"], progress=False)
    cp, gi = df[df.method == "cp-lrp"], df[df.method == "gi"]
    assert set(df.layer) == {-1, 0, 1} and len(cp) == 3 * 3
    assert ((cp["ratio"] - 1).abs() < 1e-8).all()
    assert ((gi["ratio"] - 1).abs() > 1e-3).any()
    tab = C.conservation_tables(df)
    assert list(tab.method.unique()) == ["cp-lrp", "gi"] and tab[tab.method == "cp-lrp"].max_abs_error.max() < 1e-8


def test_audit_llama_closes_exactly():
    """LLaMA has no biases: everything attnlrp loses inside a block is the softmax term."""
    model, (ids, mask) = hf_model("llama"), _ids(60)
    a = C.absorption_audit(model, ids, mask, "attnlrp", progress=False)
    scale = a["logit"].abs().max()
    assert (a["bias"] == 0).all() and (a["products"].abs() < EXACT_REL * scale).all()
    assert (a["other"].abs() < HF_LLAMA_F32_NORM_REL * scale).all()
    assert a["softmax"].abs().max() > 1e-3 * scale
    cp = C.absorption_audit(model, ids, mask, "cp-lrp", progress=False)
    assert (cp["softmax"] == 0).all() and (cp["absorbed"].abs() < HF_LLAMA_F32_NORM_REL * scale).all()


def test_audit_bert_without_layernorm_bias():
    """With LayerNorm beta = 0 the block terms close (softmax + linear biases), for attnlrp and gi."""
    model, (ids, mask) = hf_model("bert"), _ids(60)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.LayerNorm):
                m.bias.zero_()
    for method in ("attnlrp", "cp-lrp"):
        a = C.absorption_audit(model, ids, mask, method, progress=False)
        blocks = a[a.stage.str.startswith("block") | (a.stage == "readout")]
        assert (blocks["other"].abs() < 1e-8 * a["logit"].abs().max()).all(), method
        assert (blocks["bias"].abs() > 0).any()


def test_audit_leaves_explanations_and_registry_unchanged():
    model, (ids, mask) = hf_model("gpt2"), _ids(60)
    a = C.absorption_audit(model, ids, mask, "attnlrp", batch_size=8, progress=False)
    assert AttentionInterface._global_mapping[ATTN_KEY] is hf._attention
    for i in range(3):
        n = int(mask[i].sum())
        exp = explain(model, ids[i:i + 1, :n], "attnlrp")
        got = a[a.example == i].set_index("stage_index")
        torch.testing.assert_close(torch.tensor(got.loc[0, "r_in"]), exp.tokens.sum().double(),
                                   rtol=SAME_FUNCTION_F64, atol=SAME_FUNCTION_F64)
        torch.testing.assert_close(torch.tensor(got.loc[1, "r_in"]), exp.layers[0].sum().double(),
                                   rtol=SAME_FUNCTION_F64, atol=SAME_FUNCTION_F64)
    s = C.audit_summary(a)
    assert list(s.stage) == ["readout", "block 2", "block 1", "embeddings"]


def test_conservation_table_by_hand():
    sums = torch.tensor([[2.0, 4.0], [1.0, 2.0]])  # [L+1 = 2, n = 2]
    df = C.conservation_table(sums, torch.tensor([2.0, 4.0]))
    assert isinstance(df, pd.DataFrame) and list(df["layer"]) == [0, 1]
    np.testing.assert_allclose(df["mean_ratio"], [1.0, 0.5], atol=HAND_FLOAT64_ATOL)
    np.testing.assert_allclose(df["mean_abs_error"], [0.0, 1.5], atol=HAND_FLOAT64_ATOL)
    np.testing.assert_allclose(df["mean_rel_error"], [0.0, 0.5], atol=HAND_FLOAT64_ATOL)
    pd.testing.assert_frame_equal(df, C.conservation_table(list(sums), [2.0, 4.0]))
    with pytest.raises(ValueError):
        C.conservation_table(sums, [1.0, 2.0, 3.0])


def test_layer_ratio_summary_is_a_ratio_of_means():
    rows = [("m", 0, e, s, z) for e, (s, z) in enumerate([(1.0, 2.0), (3.0, 2.0), (2.0, 4.0)])]
    sums = pd.DataFrame(rows, columns=["method", "layer", "example", "sum", "logit"])
    r = C.layer_ratio_summary(sums, n_boot=200).iloc[0]
    assert r["ratio"] == pytest.approx(6.0 / 8.0, abs=HAND_FLOAT64_ATOL)
    assert r["median_ratio"] == pytest.approx(0.5, abs=HAND_FLOAT64_ATOL)
    assert r["low"] <= r["ratio"] <= r["high"]
