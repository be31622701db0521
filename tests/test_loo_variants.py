"""Notebook 04's definitions sweep (lrp_utils.studies.loo_variants): every LOO variant equals a
brute-force loop that edits the hidden state by hand; the outputs and statistics equal direct
computations."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import hf_model, tiny
from scipy.stats import spearmanr

from lrp_utils.adapters import get_adapter
from lrp_utils.loo import loo_by_layer, removable
from lrp_utils.methods import METHODS
from lrp_utils.studies import loo_variants as lv


def brute_force(model, ids, mask, layer, removal, fill=None):
    """``[B, S, 4]``: one full pass per removed position, blocks called one at a time, the hidden
    state edited by hand (zero / mean) or a hand-built key mask in the blocks that need it."""
    ad = get_adapter(model)
    L, S = ad.n_layers, ids.shape[1]
    out = torch.full((*ids.shape, 4), float("nan"), dtype=torch.float64)
    ok = removable(ad, mask)
    with ad.session(METHODS["gi"]), torch.no_grad():
        full = ad.forward(ids, mask)
        t = full.argmax(-1)
        for b in range(ids.shape[0]):
            _, h0, c = ad.start(ids[b:b + 1], mask[b:b + 1])
            for i in range(S):
                if not ok[b, i]:
                    continue
                h = h0
                for j in range(L + 1):
                    if j == layer and removal in ("zero", "mean"):
                        h = h.clone()
                        h[0, i] = 0.0 if removal == "zero" else fill
                    if j == L:
                        break
                    keep = None
                    if (removal == "mask" and j >= layer) or (removal == "mask-next" and j == layer):
                        keep = torch.ones(1, 1, S, S, dtype=torch.bool)
                        keep[..., i] = False
                        keep[0, 0, i, i] = True
                    h = ad.block(j, h, c, keep=keep)
                z = ad.readout(h, c)[0]
                ref = lambda v: torch.stack([v[t[b]], v[t[b]] - torch.logsumexp(torch.cat([v[:t[b]], v[t[b] + 1:]]), 0),  # noqa: E731
                                             torch.log_softmax(v, 0)[t[b]], torch.softmax(v, 0)[t[b]]])
                out[b, i] = (ref(full[b].double()) - ref(z.double()))
    return out


MODELS = {"tiny": lambda: tiny(), "tiny-causal": lambda: tiny(task="causal", position="rotary", n_kv_heads=2),
          "llama": lambda: hf_model("llama"), "bert": lambda: hf_model("bert")}


@pytest.mark.parametrize("removal", lv.REMOVALS)
@pytest.mark.parametrize("kind", list(MODELS))
def test_loo_variants_equal_brute_force(kind, removal, padded_ids):
    model, (ids, mask) = MODELS[kind](), padded_ids
    L = get_adapter(model).n_layers
    layers = list(range(L + 1))
    fill = lv.hidden_means(model, ids, mask, layers) if removal == "mean" else None
    ours = lv.loo_outputs(model, ids, layers, attention_mask=mask, removal=removal, fill=fill, batch_size=5)
    for j, layer in enumerate(layers):
        ref = brute_force(model, ids, mask, layer, removal, None if fill is None else fill[j].double())
        assert torch.equal(ours[j].isnan(), ref.isnan())
        torch.testing.assert_close(ours[j], ref, rtol=1e-6, atol=1e-8, equal_nan=True)


def test_mask_logit_equals_loo_by_layer_and_variants_differ(padded_ids):
    model, (ids, mask) = hf_model("llama"), padded_ids
    ours = {r: lv.loo_outputs(model, ids, [0, 1], attention_mask=mask, removal=r,
                              fill=torch.zeros(2, model.config.hidden_size) if r == "mean" else None)
            for r in lv.REMOVALS}
    torch.testing.assert_close(ours["mask"][..., 0], loo_by_layer(model, ids, [0, 1], attention_mask=mask),
                               equal_nan=True)
    # mean with a zero fill is zero ablation; mask-next differs from mask below the last block
    torch.testing.assert_close(ours["mean"], ours["zero"], equal_nan=True)
    assert not torch.allclose(ours["mask-next"][0].nan_to_num(), ours["mask"][0].nan_to_num())


def test_hidden_means_by_hand(padded_ids):
    model, (ids, mask) = tiny(), padded_ids
    ad = get_adapter(model)
    got = lv.hidden_means(model, ids, mask, [0, 2], batch_size=2)
    with ad.session(METHODS["gi"]), torch.no_grad():
        _, h, ctx = ad.start(ids, mask)
        states = [h]
        ad.run(h, ctx, states=states)
    rows = [(b, i) for b in range(len(ids)) for i in range(ids.shape[1])
            if mask[b, i] and i != int(mask[b].nonzero()[0])]
    for k, l in enumerate([0, 2]):
        want = torch.stack([states[l][b, i] for b, i in rows]).mean(0)
        torch.testing.assert_close(got[k].double(), want.double(), rtol=1e-5, atol=1e-6)


def test_outputs_from_logits_direct():
    z = torch.randn(5, 7, dtype=torch.float64)
    t = torch.tensor([0, 3, 6, 2, 2])
    o = lv.outputs_from_logits(z, t)
    for k in range(5):
        others = torch.cat([z[k, :t[k]], z[k, t[k] + 1:]])
        want = [z[k, t[k]], z[k, t[k]] - torch.log(torch.exp(others).sum()), torch.log_softmax(z[k], 0)[t[k]],
                torch.softmax(z[k], 0)[t[k]]]
        torch.testing.assert_close(o[k], torch.stack(want))
    # two classes: log-odds is the logit difference
    z2 = torch.randn(4, 2, dtype=torch.float64)
    o2 = lv.outputs_from_logits(z2, torch.zeros(4, dtype=torch.long))
    torch.testing.assert_close(o2[:, 1], z2[:, 0] - z2[:, 1])


def test_features_and_statistics_direct():
    rng = np.random.default_rng(0)
    R, Y = rng.normal(size=(6, 8)), rng.normal(size=(6, 8))
    keep = np.ones((6, 8), bool)
    keep[0, 5:] = False
    keep[1, 2:] = False  # two positions: correlations and top-k undefined
    F = lv.features(R, Y, keep)
    for b in range(6):
        k = keep[b]
        if k.sum() < 3:
            assert np.isnan(F[b, 6:]).all() and F[b, 0] == k.sum()
            continue
        x, y = R[b, k], Y[b, k]
        assert np.isclose(F[b, 6], np.corrcoef(x, y)[0, 1]) and np.isclose(F[b, 7], spearmanr(x, y)[0])
        assert F[b, 8] == float(np.argmax(x) == np.argmax(y))
        assert F[b, 9] == len(set(np.argsort(-x)[:3]) & set(np.argsort(-y)[:3])) / 3
        assert np.allclose(F[b, :6], [k.sum(), x.sum(), y.sum(), (x * x).sum(), (y * y).sum(), (x * y).sum()])
    ok = keep.sum(1) >= 3
    Fd = F[ok]
    assert np.isclose(lv._stat(F, "pearson"), np.mean(Fd[:, 6]))
    assert np.isclose(lv._stat(F, "fisher-z"), np.tanh(np.mean(np.arctanh(Fd[:, 6]))))
    assert np.isclose(lv._stat(F, "spearman"), np.mean(Fd[:, 7]))
    assert np.isclose(lv._stat(F, "top3"), np.mean(Fd[:, 9]))
    assert np.isclose(lv._stat(F, "pooled"), np.corrcoef(R[keep], Y[keep])[0, 1])


def test_summarise_variants_diff_and_verdict():
    rng = np.random.default_rng(1)
    rows = []
    for ex in range(40):
        for layer in (1, 2, 3):
            for m, shift in (("cp-lrp", 0.3), ("attnlrp", 0.0)):
                f = lv.features(rng.normal(size=(1, 6)) + shift * np.arange(6), np.arange(6.0)[None], np.ones((1, 6), bool))
                rows.append(dict(zip(lv.FEATURES, f[0]), example=ex, layer=layer, method=m, n_layers=4, model="toy",
                                 seed=0, output="logit", positions="all", relevance_point="block-output", loo="mask"))
    table, summ = lv.summarise_variants(pd.DataFrame(rows), n_boot=200)
    t = table[(table.statistic == "pearson")].set_index(["layer", "method"])
    for layer in (1, 2, 3):
        assert np.isclose(t.loc[(layer, "cp-lrp"), "diff_cp_minus_attnlrp"],
                          t.loc[(layer, "cp-lrp"), "value"] - t.loc[(layer, "attnlrp"), "value"])
    s = summ.set_index("statistic").loc["pearson"]
    assert s.layers == "2 3"  # ceil(4/3) <= l < 4
    assert np.isclose(s["diff"], t.loc[[(2, "cp-lrp"), (3, "cp-lrp")], "diff_cp_minus_attnlrp"].mean())
    assert s.verdict == "holds" and s.diff_ci_low > 0
    assert lv.verdict_map(summ, "toy")["holds"][0] == "main definition"


def test_variants_run_sharded():
    """The sweep through lrp_utils.run: two shards together give the whole table (the mean state is
    taken over all examples in every shard)."""
    from lrp_utils import run

    cfg = {"model": "tiny", "tiny": {"vocab_size": 40, "d_model": 16, "n_layers": 2, "n_heads": 2, "d_ff": 32},
           "dtype": "float64", "data": "random", "n_examples": 6, "max_length": 8,
           "methods": ["gi", "cp-lrp", "attnlrp"], "device": "cpu", "kwargs": {"progress": False}}
    whole = run._sort(run.run_shard("loo_variants", cfg, 0, 6))
    parts = run._sort(pd.concat([run.run_shard("loo_variants", cfg, 0, 3), run.run_shard("loo_variants", cfg, 3, 6)]))
    assert set(whole.loo) == set(lv.REMOVALS) and sorted(whole.example.unique()) == list(range(6))
    # float64 batching noise only: the shards batch other examples together (LOO near 0 -> r to ~1e-9)
    pd.testing.assert_frame_equal(whole, parts, rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("kind", ["llama", "bert"])
def test_reuse_path_equals_plain_path(kind, padded_ids):
    """zero and mean go through lrp_utils.reuse (causal prefix reuse, read-out-only last block)."""
    from lrp_utils.reuse import base_pass, usable

    model, (ids, mask) = MODELS[kind](), padded_ids
    ad = get_adapter(model)
    with ad.session(METHODS["gi"]), torch.no_grad():
        _, h, ctx = ad.start(ids, mask)
        assert usable(ad, base_pass(ad, h, ctx)[1])
    fill = lv.hidden_means(model, ids, mask, [0, 1])
    for r in ("mask", "zero", "mean"):
        a = lv.loo_outputs(model, ids, [0, 1], attention_mask=mask, removal=r, fill=fill, batch_size=4)
        b = lv.loo_outputs(model, ids, [0, 1], attention_mask=mask, removal=r, fill=fill, reuse=False)
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-8, equal_nan=True)


def _toy_rows(shift_by_seed):
    rng = np.random.default_rng(2)
    rows = []
    for seed, shift in shift_by_seed.items():
        for ex in range(30):
            for layer in (0, 1, 2, 3):
                for m, s in (("cp-lrp", shift), ("attnlrp", 0.0), ("gi", 0.1)):
                    f = lv.features(rng.normal(size=(1, 6)) + s * np.arange(6), np.arange(6.0)[None], np.ones((1, 6), bool))
                    rows.append(dict(zip(lv.FEATURES, f[0]), example=ex, layer=layer, method=m, n_layers=4, model="toy",
                                     seed=seed, output="logit", positions="all", relevance_point="block-output", loo="mask"))
    return pd.DataFrame(rows)


def test_claims_from_the_summary_csv(tmp_path):
    """The claims builder reads figures/04_variants_summary.csv only: one main row per model and seed
    (CISide on the middle-to-late difference) and one Count row per model."""
    table, summ = lv.summarise_variants(_toy_rows({0: 0.4, 1: -0.4}), n_boot=200)
    summ.round(6).to_csv(tmp_path / "04_variants_summary.csv", index=False)
    rows = {(c.claim_id, c.model): c for c in lv._claims(tmp_path)}
    assert set(rows) == {("cp-loo-mid-late", "toy"), ("cp-loo-mid-late", "toy (training seed 1)"),
                         ("cp-loo-definitions", "toy")}
    main = rows[("cp-loo-mid-late", "toy")]
    s = lv.one_axis(summ)
    s0 = s[(s.variant == "main definition") & (s.seed == 0)].iloc[0]
    assert np.isclose(main.value, s0["diff"], rtol=1e-5) and main.verdict == "reproduced"
    assert rows[("cp-loo-mid-late", "toy (training seed 1)")].verdict == "contradicted"
    count = rows[("cp-loo-definitions", "toy")]
    assert count.rule.m == (s.seed == 0).sum() and count.ci_low <= count.value <= count.ci_high
    assert lv._claims(tmp_path / "missing") == []


def test_plot_variants_marks_significant_cells():
    import matplotlib

    matplotlib.use("Agg")
    table, summ = lv.summarise_variants(_toy_rows({0: 0.4}), n_boot=100)
    labels, layers, D, sig = lv._heat_rows(table, summ, "toy")
    assert labels[0] == "main definition" and layers == [0, 1, 2, 3] and D.shape == (len(labels), 5)
    assert sig[0, -1] and np.isclose(D[0, -1], np.nanmean(D[0, 2:4]))
    fig = lv.plot_variants(table, summ, "toy")
    assert fig.axes and fig.axes[0].get_title().startswith("toy")
