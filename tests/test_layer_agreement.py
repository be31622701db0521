"""lrp_utils.layer_agreement and lrp_utils.studies.loo_layers: layer relevance vs layer LOO, on tiny
float64 models; the 2x2 decomposition and the paired comparison."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import tiny
from tolerances import CORRELATION_EXACT_ATOL, HAND_FLOAT64_ATOL, SAME_FUNCTION_F64

from lrp_utils import explain, loo_by_layer
from lrp_utils import layer_agreement as la
from lrp_utils.studies import loo_layers


@pytest.fixture
def ragged():
    """5 sequences of lengths 9, 6, 8, 5, 9 (right-padded), so length batches crop differently."""
    ids = torch.randint(2, 50, (5, 9))
    mask = torch.ones_like(ids)
    for b, n in enumerate((9, 6, 8, 5, 9)):
        mask[b, n:] = 0
    return ids, mask


def test_linear_readout_last_layer_correlates_perfectly_with_loo(ragged):
    # No norms, mean read-out: the logit is affine in each h_L[i], so every method's layer-L
    # relevance w.h_i / n and both LOO variants (w.h_i - w.mean) / (n - 1) are affinely related.
    model = tiny(norm="none", readout="mean", n_layers=2)
    df = la.loo_agreement(model, *ragged, methods=("gi", "cp-lrp", "attnlrp"), removal=("mask", "zero"),
                          batch_size=2, progress=False)
    last = df[df.layer == 2]
    assert len(last) == 5 * 3 * 2
    np.testing.assert_allclose(last[["pearson", "spearman"]].to_numpy(), 1.0, atol=CORRELATION_EXACT_ATOL)
    assert (df[df.layer < 2].pearson < 1 - 1e-6).any()  # earlier layers are not trivially perfect
    assert (last.n_positions.to_numpy() == np.repeat([8, 5, 7, 4, 8], 6).reshape(5, 6).T.ravel()).all()


def test_batched_maps_equal_single_example_runs(ragged):
    ids, mask = ragged
    model = tiny(n_layers=2)
    maps = la.compute_maps(model, ids, mask, methods=("cp-lrp", "attnlrp"), removal=("mask", "zero"),
                           layers=[0, 2], batch_size=2, progress=False)
    for b in range(len(ids)):
        n = int(mask[b].sum())
        one = ids[b:b + 1, :n]
        for name in ("cp-lrp", "attnlrp"):
            e = explain(model, one, name)
            ref = torch.stack(e.layers)[:, 0]
            torch.testing.assert_close(maps.relevance[name][:, b, :n], ref, rtol=SAME_FUNCTION_F64, atol=SAME_FUNCTION_F64)
            assert (maps.relevance[name][:, b, n:] == 0).all()
        for r in ("mask", "zero"):
            ref = loo_by_layer(model, one, [0, 2], removal=r)[:, 0]
            torch.testing.assert_close(maps.loo[r][:, b, :n], ref, rtol=SAME_FUNCTION_F64, atol=SAME_FUNCTION_F64,
                                       equal_nan=True)
            assert maps.loo[r][:, b, n:].isnan().all() and maps.loo[r][:, b, 0].isnan().all()  # padding, [CLS]
    assert set(maps.timing.name) == {"cp-lrp", "attnlrp", "mask", "zero"}


def test_loo_correlates_with_itself_at_a_layer_subset(ragged):
    ids, mask = ragged
    model = tiny(n_layers=3)
    maps = la.compute_maps(model, ids, mask, methods=("gi",), layers=[0, 2], batch_size=3, progress=False)
    rel = torch.zeros_like(maps.relevance["gi"])
    for j, layer in enumerate(maps.layers):  # "relevance" = LOO itself, at the matching layer
        rel[layer] = maps.loo["mask"][j].nan_to_num()
    maps.relevance = {"loo": rel, "gi": maps.relevance["gi"]}
    df = la.per_example(maps)
    self_r = df[df.method == "loo"]
    assert sorted(self_r.layer.unique()) == [0, 2]
    np.testing.assert_allclose(self_r[["pearson", "spearman"]].to_numpy(), 1.0, atol=CORRELATION_EXACT_ATOL)
    assert (df[df.method == "gi"].pearson.abs() < 1 - 1e-6).all()


def test_cls_readout_last_layer_is_undefined_and_summarised_as_nan(ragged):
    model = tiny(n_layers=2)  # [CLS] read-out: at layer L only position 0 (excluded) matters
    df = la.loo_agreement(model, *ragged, methods=("gi", "cp-lrp"), batch_size=5, progress=False)
    df["model"] = "tiny"
    summ = la.summarise(df, n_boot=200)
    last = summ[summ.layer == 2]
    assert (last.n == 0).all() and last.pearson.isna().all() and (last.n_total == 5).all()
    first = summ[summ.layer == 0]
    assert (first.n == 5).all()
    assert ((first.pearson_ci_low <= first.pearson) & (first.pearson <= first.pearson_ci_high)).all()
    assert (first.ci_low == first.pearson_ci_low).all() and (first.ci_high == first.pearson_ci_high).all()
    assert {"model", "layer", "method", "removal", "spearman_ci_low", "spearman_ci_high"} <= set(summ.columns)


def _factorial_frame(values: dict, n: int = 6) -> pd.DataFrame:
    rows = [{"model": "m", "layer": 1, "removal": "mask", "example": b, "method": k, "pearson": v}
            for k, v in values.items() for b in range(n)]
    return pd.DataFrame(rows)


def test_decompose_and_compare_hand_computed():
    # a = attnlrp, b = no-softmax, c = full-value, d = cp-lrp
    df = _factorial_frame({"attnlrp": 0.1, "attnlrp-no-softmax": 0.3, "attnlrp-full-value": 0.2, "cp-lrp": 0.5})
    dec = loo_layers.decompose(df, n_boot=50).set_index("component")["mean"]
    expected = {"gap": 0.4, "value": 0.15, "softmax": 0.25, "interaction": 0.1}
    for k, v in expected.items():
        assert dec[k] == pytest.approx(v, abs=HAND_FLOAT64_ATOL)
    assert loo_layers.decompose(df, n_boot=10).layer.dtype.kind == "i"  # group keys keep their types
    comp = loo_layers.compare(df, n_boot=50).iloc[0]
    assert comp["diff"] == pytest.approx(0.4, abs=HAND_FLOAT64_ATOL)
    assert comp["rel_pct"] == pytest.approx(400.0, abs=1e-9)
    assert comp["n"] == 6


def test_decompose_drops_examples_with_an_undefined_corner():
    df = _factorial_frame({"attnlrp": 0.1, "attnlrp-no-softmax": 0.3, "attnlrp-full-value": 0.2, "cp-lrp": 0.5})
    df.loc[(df.example == 0) & (df.method == "cp-lrp"), "pearson"] = np.nan
    dec = loo_layers.decompose(df, n_boot=50)
    assert (dec.n == 5).all()


def test_train_keyword_tiny_is_deterministic():
    a, test_a, _ = loo_layers.train_keyword_tiny(n_layers=1, n_train=128, n_test=16, epochs=1, seed=3)
    b, test_b, _ = loo_layers.train_keyword_tiny(n_layers=1, n_train=128, n_test=16, epochs=1, seed=3)
    assert torch.equal(test_a.input_ids, test_b.input_ids)
    for (k, p), q in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(p, q), k


def test_study_defaults_to_the_five_methods(ragged):
    model = tiny(n_layers=1)
    df = loo_layers.loo_agreement(model, *ragged, batch_size=5, progress=False)
    assert tuple(df.method.unique()) == loo_layers.LOO_METHODS
    assert set(loo_layers.FACTORIAL) <= set(loo_layers.LOO_METHODS)
