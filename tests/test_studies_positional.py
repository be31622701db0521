"""lrp_utils.studies.positional on tiny models: conservation budgets, position profiles, faithfulness
tables (seconds)."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import TASK_MODELS, is_causal, random_task, tiny

from lrp_utils import explain, perturbation, tasks
from lrp_utils.perturbation import RemovalScorer
from lrp_utils.studies import positional as P


def test_conservation_frame_closes_with_positions_only():
    model = tiny(bias=False, position="learned")
    task = tasks.set_targets(model, random_task(model))
    exps = task.explain(model, ["cp-lrp", "pa-cp-lrp"])
    df = P.conservation_frame(exps, "t")
    pa, cp = df[df.method == "pa-cp-lrp"], df[df.method == "cp-lrp"]
    np.testing.assert_allclose(pa.ratio_total, 1.0, atol=1e-7)
    assert (cp.ratio_total - 1).abs().max() > 1e-3 and (cp.positions == 0).all()
    np.testing.assert_array_equal(cp.ratio_tokens.to_numpy(), pa.ratio_tokens.to_numpy())
    summ = P.conservation_summary(df, n_boot=200)
    row = summ[(summ.method == "pa-cp-lrp") & (summ.part == "tokens+positions")].iloc[0]
    assert abs(row["median"] - 1) < 1e-7 and abs(row["mean"] - 1) < 1e-7 and row["low"] <= row["median"] <= row["high"]
    row = summ[(summ.method == "cp-lrp") & (summ.part == "tokens")].iloc[0]
    assert row["median"] == pytest.approx(float(np.median(cp.ratio_tokens)))


@pytest.mark.parametrize("name", ["bert", "tiny-rotary-causal"])
def test_position_profile_shares(name):
    model = TASK_MODELS[name]()
    task = tasks.set_targets(model, random_task(model, causal=is_causal(model)))
    e = task.explain(model, ["pa-lrp"])["pa-lrp"]
    prof = P.position_profile(e, task.attention_mask, max_index=100)
    assert len(prof) == int(task.attention_mask.sum())
    types = e.token_types.abs().sum(-1) if e.token_types is not None else torch.zeros(len(task))
    budget = e.tokens.abs().sum(-1) + e.position_magnitude().sum(-1) + types
    share = prof.groupby("example")[["positions", "tokens"]].sum().sum(1).to_numpy()
    np.testing.assert_allclose(share, 1 - (types / budget).numpy(), atol=1e-12)
    assert (prof.from_end < 0).all() and (prof["index"] >= 0).all()
    assert set(prof[prof.from_end == -1]["index"]) == set((task.attention_mask.sum(1) - 1).tolist())
    if e.positions_by_layer is not None:
        lp = P.layer_profile(e)
        np.testing.assert_allclose(lp.groupby("example").share.sum(), 1.0, atol=1e-12)
        rows = P.display_rows(e, e, 0, 5)
        assert list(rows) == ["AttnLRP (tokens)", "PA-LRP combined", "PA-LRP positions"]
        assert float(rows["PA-LRP combined"].abs().max()) <= 1 + 1e-12


def test_faithfulness_protocols_and_paired_table():
    model = TASK_MODELS["tiny-learned"]()
    task = tasks.set_targets(model, random_task(model, n=6))
    R = explain(model, task.input_ids, "attnlrp", target=task.target, attention_mask=task.attention_mask).tokens
    R = R + 1e-3 * torch.arange(R.shape[1])  # no ties
    areas, curves = P.faithfulness(model, task, {"R": R, "-R": -R}, n_boot=100, progress=False)
    w = areas.pivot_table(index=["example"], columns=["method", "metric"], values="value")
    np.testing.assert_allclose(w[("R", "insert-MoRF")], w[("-R", "insert-LeRF")], atol=1e-12)
    np.testing.assert_allclose(w[("R", "AU-MSE")], w[("-R", "AU-MSE")], atol=1e-12)  # |R| order
    full = curves[(curves.metric == "insert-MoRF") & (curves.fraction == 1.0)]["mean"]
    z = RemovalScorer.for_task(model, task).logit(torch.zeros_like(task.valid))
    np.testing.assert_allclose(full, float(z.mean()), atol=1e-12)  # everything kept = unperturbed
    assert areas.attrs["n_forward"] < 4 * 4 * 11 * len(task)  # shared removal sets were cached
    tab = P.paired_table(areas, "R", "-R", n_boot=200)
    assert set(tab.metric) == set(P.METRICS) and list(tab.columns[:5]) == ["task", "metric", "better", "R", "-R"]
    row = tab[tab.metric == "insert-MoRF"].iloc[0]
    assert row["low"] <= row["diff"] <= row["high"]
    assert row["verdict"] in ("R better", "-R better", "no clear difference")


def test_paired_table_is_the_paired_difference_of_two_methods():
    g = np.random.default_rng(0)
    rows = [("t", m, k, ex, g.normal() + (m == "a")) for m in "ab" for k in P.METRICS for ex in range(10)]
    areas = pd.DataFrame(rows, columns=["task", "method", "metric", "example", "value"])
    tab = P.paired_table(areas, "a", "b", n_boot=100)
    ref = perturbation.paired_differences(areas, "b", ["a"], ("task", "metric"), n_boot=100)
    assert list(tab.columns) == ["task", "metric", "better", "a", "b", "diff", "low", "high", "verdict", "n"]
    np.testing.assert_array_equal(tab[["a", "b", "diff"]].to_numpy(), ref[["mean", "reference", "diff"]].to_numpy())
    assert list(tab.verdict) == list(ref.verdict) and list(tab.metric) == list(P.METRICS)
