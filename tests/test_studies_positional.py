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
from lrp_utils.studies import positional_claims as PC


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
    assert set(areas.metric) == {*P.METRICS, "LeRF-MoRF"}
    w = areas.pivot_table(index=["example"], columns=["method", "metric"], values="value")
    np.testing.assert_allclose(w[("R", "MoRF")], w[("-R", "LeRF")], atol=1e-12)  # same removal order
    scorer = RemovalScorer.for_task(model, task)
    start = curves[(curves.metric == "MoRF") & (curves.fraction == 0.0)]["mean"]
    np.testing.assert_allclose(start, float(scorer.logprob(torch.zeros_like(task.valid)).mean()), atol=1e-12)
    assert areas.attrs["n_forward"] < 2 * 3 * 11 * len(task)  # shared removal sets were cached
    tab = P.paired_table(areas, "R", "-R", n_boot=200)
    assert set(tab.metric) == {*P.METRICS, "LeRF-MoRF"} and list(tab.columns[:5]) == ["task", "metric", "better", "R", "-R"]
    row = tab[tab.metric == "MoRF"].iloc[0]
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


# ------------------------------------------------------------------ attention sink
def test_top_position_and_sink_share_on_a_hand_made_tensor():
    R = torch.tensor([[5.0, 1.0, 2.0, 0.0],     # first position on top
                      [1.0, 3.0, -9.0, 0.0],    # signed: position 1 (the large |R| is negative)
                      [9.0, 1.0, 2.0, 7.0],     # first position on top, but not valid -> position 3
                      [2.0, 2.0, 1.0, 0.0]])    # tie: the first wins
    valid = torch.tensor([[1, 1, 1, 0], [1, 1, 1, 1], [0, 1, 1, 1], [1, 1, 1, 0]]).bool()
    assert P.top_position(R, valid).tolist() == [0, 1, 3, 0]
    tab = P.sink_table({"a": R, "b": -R}, valid, "t", n_boot=200)
    assert list(tab.columns) == ["task", "method", "share", "low", "high", "n"]
    a, b = tab.set_index("method").loc["a"], tab.set_index("method").loc["b"]
    assert a["share"] == 0.5 and a["n"] == 4 and a["low"] <= 0.5 <= a["high"]
    assert b["share"] == 0.0 and P.top_position(-R, valid).tolist() == [1, 2, 1, 2]
    with pytest.raises(ValueError, match="valid position"):
        P.top_position(R, torch.zeros_like(valid))


def test_first_position_kept_only_fixes_index_0():
    model = TASK_MODELS["tiny-rotary-causal"]()
    task = random_task(model, causal=True)
    kept = P.first_position_kept(task)
    assert not kept.valid[:, 0].any() and torch.equal(kept.valid[:, 1:], task.valid[:, 1:])
    assert kept.name.endswith("first position kept") and task.valid[:, 0].any()  # the original is untouched


# ------------------------------------------------------------------ claims from CSVs
def _frame(model, pe, ratios: dict) -> pd.DataFrame:
    """A conservation frame from ``{method: (ratio_tokens, ratio_total)}`` lists (logit 1)."""
    rows = []
    for m, (tok, tot) in ratios.items():
        for i, (a, b) in enumerate(zip(tok, tot)):
            rows.append({"task": model, "model": model, "pe": pe, "method": m, "example": i, "logit": 1.0,
                         "tokens": a, "positions": b - a, "types": 0.0, "ratio_tokens": a, "ratio_total": b})
    return pd.DataFrame(rows)


def test_budget_changes_by_hand():
    n = 20
    farther = _frame("real", "rotary", {"attnlrp": ([0.5] * n, [0.5] * n), "pa-lrp": ([0.4] * n, [0.3] * n),
                                        "cp-lrp": ([1.0] * n, [1.0] * n), "pa-cp-lrp": ([1.0] * n, [1.0] * n)})
    t = PC.budget_changes(farther, n_boot=100)
    assert len(t) == 1  # pa-cp-lrp without any position relevance: pair left out
    r = t.iloc[0]
    assert (r.without, r["with"], r.n) == ("attnlrp", "pa-lrp", n)
    assert r["median"] == pytest.approx(0.2) and r.low == pytest.approx(0.2) and r.high == pytest.approx(0.2)
    assert r.budget_without == pytest.approx(0.5) and r.budget_with == pytest.approx(0.3)


def test_claims_from_csvs(tmp_path):
    n = 12
    tiny = pd.concat([
        _frame("tiny (learned PE, softmax)", "learned absolute",
               {"cp-lrp": ([0.7] * n, [0.7] * n), "pa-cp-lrp": ([0.7] * n, [1.0 + 1e-12] * n)}),
        _frame("tiny (RoPE, linear attention)", "rotary",
               {"attnlrp": ([1.0] * n, [1.0] * n), "pa-lrp": ([0.6] * n, [1.0] * n)}),
        _frame("real", "learned absolute", {"attnlrp": ([0.2] * n, [0.2] * n),
                                            "pa-lrp": ([0.2] * n, list(np.linspace(0.5, 0.7, n)))})])
    tiny.to_csv(tmp_path / P.CONSERVATION_CSV, index=False)
    table = pd.DataFrame({
        "task": ["t"] * 4, "metric": ["AUAC", "MoRF", "LeRF", "LeRF-MoRF"],
        "better": ["higher", "lower", "higher", "higher"], "pa-lrp": [0.0] * 4, "attnlrp": [0.0] * 4,
        "diff": [0.1, 0.1, 0.0, 0.0], "low": [0.05, 0.02, -0.1, -0.1], "high": [0.2, 0.3, 0.1, 0.1],
        "verdict": [""] * 4, "n": [30] * 4})
    table.to_csv(tmp_path / P.FAITHFULNESS_CSV, index=False)
    rows = {(c.claim_id, c.model): c for c in PC.claims_from_csvs(tmp_path)}
    assert rows["conservation-exact", "tiny (learned PE, softmax)"].verdict == "reproduced"
    assert rows["conservation-breaks", "tiny (learned PE, softmax)"].verdict == "reproduced"
    assert rows["conservation-exact", "tiny (RoPE, linear attention)"].verdict == "reproduced"
    assert rows["conservation-breaks", "tiny (RoPE, linear attention)"].verdict == "not reproduced"
    assert all(rows[k, m].checked_in_ci for k, m in rows if k.startswith("conservation-"))
    real = rows["conservation.attnlrp", "real"]  # the gap shrinks from 0.8 to 0.3..0.5
    assert real.verdict == "reproduced" and real.value < 0 and not real.checked_in_ci
    faith = rows["faithfulness", "t"]  # AUAC better, MoRF significantly worse (lower is better), LeRF unclear
    assert (faith.value, faith.ci_low, faith.ci_high) == (1, 1, 2) and faith.verdict == "partly"
    caption = PC.conservation_caption(tmp_path)
    assert "real attnlrp 0.200 -> pa-lrp 0.600" in caption and "closer to 1 in 1 " in caption


def test_claims_builder_is_registered():
    from lrp_utils import claims

    assert claims.builders()["05"] is PC.claims_from_csvs and claims.captions()["05"][0] == "05_conservation.png"


def test_plots_one_legend_palette_colours():
    import matplotlib

    matplotlib.use("Agg")
    from lrp_utils.palette import method_color

    n = 6
    frame = _frame("m", "rotary", {"attnlrp": ([0.2] * n, [0.2] * n), "pa-lrp": ([0.2] * n, [0.3] * n)})
    fig = P.plot_conservation(P.conservation_summary(frame, n_boot=50))
    assert len(fig.legends) == 1 and not any(ax.get_legend() for ax in fig.axes)
    colours = {matplotlib.colors.to_hex(p.get_facecolor()) for p in fig.axes[0].patches}
    assert colours == {method_color("attnlrp").lower(), method_color("pa-lrp").lower()}
    assert fig.axes[0].get_xlabel() and fig.axes[0].get_ylabel()
    table = pd.DataFrame({"task": ["a long task name: sentiment · first position kept", "b"] * 2,
                          "metric": ["AUAC", "AUAC", "MoRF", "MoRF"], "better": "higher", "diff": [0.1, -0.2, 0.0, 1.0],
                          "low": [0.0, -0.3, -0.1, 0.5], "high": [0.2, -0.1, 0.1, 1.5]})
    fig = P.plot_paired(table)
    assert len(fig.axes) == 2 and all(ax.get_xlabel() for ax in fig.axes)
    assert fig.axes[1].get_xlim()[1] >= 1.5  # the widest interval is inside the panel


def test_shared_scorer_gives_the_same_areas_and_counts_only_new_forwards():
    model = TASK_MODELS["tiny-rotary-causal"]()
    task = tasks.set_targets(model, random_task(model, n=5, causal=True))
    R = explain(model, task.input_ids, "pa-lrp", target=task.target, attention_mask=task.attention_mask).combined()
    kept = P.first_position_kept(task)
    fresh, _ = P.faithfulness(model, kept, {"pa": R}, n_boot=50, progress=False)
    scorer = RemovalScorer.for_task(model, task)
    first, _ = P.faithfulness(model, task, {"pa": R}, n_boot=50, progress=False, scorer=scorer)
    shared, _ = P.faithfulness(model, kept, {"pa": R}, n_boot=50, progress=False, scorer=scorer)
    pd.testing.assert_frame_equal(shared, fresh)
    assert shared.attrs["n_forward"] < fresh.attrs["n_forward"]  # the unperturbed inputs were cached
    assert scorer.n_forward == first.attrs["n_forward"] + shared.attrs["n_forward"]


def test_plot_profiles_one_colour_per_task_and_one_legend():
    import matplotlib

    matplotlib.use("Agg")
    model = TASK_MODELS["tiny-rotary-causal"]()
    task = tasks.set_targets(model, random_task(model, causal=True))
    e = task.explain(model, ["pa-lrp"])["pa-lrp"]
    profiles = {"a": P.position_profile(e, task.attention_mask), "b": P.position_profile(e, task.attention_mask)}
    layers = pd.concat({k: P.layer_profile(e) for k in profiles}, names=["task"]).reset_index()
    fig = P.plot_profiles(profiles, layers)
    assert len(fig.legends) == 1 and not any(ax.get_legend() for ax in fig.axes) and len(fig.axes) == 3
    line_colours = [matplotlib.colors.to_hex(line.get_color()) for line in fig.axes[0].lines[:2]]
    bar_colours = {matplotlib.colors.to_hex(p.get_facecolor()) for p in fig.axes[2].patches}
    assert len(set(line_colours)) == 2 and set(line_colours) <= bar_colours
    assert all(ax.get_xlabel() and ax.get_ylabel() for ax in fig.axes)
