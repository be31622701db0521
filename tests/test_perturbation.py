"""lrp_utils.perturbation: removal operators, the one cached scorer, the one driver, paired differences."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import TASK_MODELS, close, hf_model, random_task
from tolerances import SAME_FUNCTION_F64

from lrp_utils import loo
from lrp_utils import perturbation as F
from lrp_utils import tasks
from lrp_utils.adapters import get_adapter
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
    with pytest.raises(ValueError, match="right padding"):
        F.RemovalScorer(model, ids, mask.flip(1), 0, progress=False)
    with pytest.raises(ValueError, match="unknown removal"):
        F.RemovalScorer(model, ids, mask, 0, removal="zero", progress=False)


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
    with pytest.raises(ValueError, match="unknown protocol"):
        F.faithfulness(scorer, rel, valid, "alli")
    with pytest.raises(ValueError, match="unknown score"):
        F.faithfulness(scorer, rel, valid, "morf_lerf", score="logits")


def test_run_faithfulness_and_paired():
    model, (ids, mask) = hf_model("bert"), _batch()
    res, rel = F.run_faithfulness(model, ids, mask, ["gi", "cp-lrp", "random"], protocol="ali", n_boot=20,
                                  progress=False)
    d = res.paired("AUAC", "cp-lrp", n_boot=20)
    assert list(d["method"]) == ["gi", "random"] and "perturbation" in res.seconds
    wide = res.areas[res.areas.metric == "AUAC"].pivot(index="example", columns="method", values="value")
    assert d.iloc[0, 1] == pytest.approx((wide["gi"] - wide["cp-lrp"]).mean())




# ------------------------------------------------------------------ the scorer of a Task (notebook 05)
@pytest.mark.parametrize("name", list(TASK_MODELS))
def test_task_scorer_equals_shared_mask_removal(name):
    """Shortened sequence + original position ids == lrp_utils.loo.logits_without (full length)."""
    model = TASK_MODELS[name]()
    causal = get_adapter(model).task == "causal"
    task = tasks.set_targets(model, random_task(model, causal=causal))
    g = torch.Generator().manual_seed(1)
    removed = (torch.rand(task.valid.shape, generator=g) < 0.5) & task.valid
    scorer = F.RemovalScorer.for_task(model, task, max_tokens=20)  # small batches: exercises the batching
    ref = logits_without(model, task.input_ids, removed, task.attention_mask).double()
    close(scorer.logit(removed), ref.gather(1, task.target[:, None])[:, 0], SAME_FUNCTION_F64, 1.0)
    close(scorer.prob(removed), ref.softmax(-1).gather(1, task.target[:, None])[:, 0], SAME_FUNCTION_F64, 1.0)
    n = scorer.n_forward
    scorer.logit(removed)
    assert scorer.n_forward == n  # cached
    rec = F.RemovalScorer.for_task(model, task, max_tokens=1000)
    with rec.record():  # collect first, run on exit (one big batch)
        assert bool((rec.logit(removed) == 0).all()) and rec.n_forward == 0
    assert rec.n_forward == len(task)
    close(rec.logit(removed), scorer.logit(removed), SAME_FUNCTION_F64, 1.0)
    with pytest.raises(ValueError):
        scorer.logit(~task.valid & task.attention_mask.bool())  # read-out / padding may not go


def test_contrast_scores():
    model = TASK_MODELS["tiny-rotary-causal"]()
    task = random_task(model, causal=True).with_target(torch.full((6,), 3), torch.full((6,), 7))
    none = torch.zeros_like(task.valid)
    z = logits_without(model, task.input_ids, none, task.attention_mask).double()
    d = z[:, 3] - z[:, 7]
    scorer = F.RemovalScorer.for_task(model, task)
    close(scorer.logit(none), d, SAME_FUNCTION_F64)
    close(scorer.prob(none), torch.sigmoid(d), SAME_FUNCTION_F64, 1.0)
    with pytest.raises(ValueError, match="set_targets"):
        F.RemovalScorer.for_task(model, random_task(model, causal=True))


def test_driver_metric_lists_and_shared_end_points():
    model = TASK_MODELS["tiny-learned"]()
    task = tasks.set_targets(model, random_task(model))
    R = torch.randn(task.valid.shape, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    scorer = F.RemovalScorer.for_task(model, task)
    res = F.faithfulness(scorer, {"R": R, "-R": -R}, task.valid, ["MoRF", "LeRF", "insert-MoRF"], [0, 0.5, 1],
                         n_boot=50)
    assert set(res.areas.metric) == {"MoRF", "LeRF", "LeRF-MoRF", "insert-MoRF"} and res.n_forward == scorer.n_forward
    w = res.areas.pivot_table(index="example", columns=["method", "metric"], values="value")
    np.testing.assert_allclose(w[("R", "MoRF")], w[("-R", "LeRF")], atol=1e-12)  # reversing swaps the pair
    ends = res.curves[res.curves.fraction.isin([0.0, 1.0])].groupby(["metric", "fraction"])["mean"].agg(np.ptp)
    assert (ends < 1e-12).all()  # every ranking shares the end points (nothing / everything removed)
    default = F.faithfulness(scorer, {"R": R}, None, ["MoRF"], [0, 0.5, 1], n_boot=50)  # valid: the scorer's
    np.testing.assert_array_equal(default.areas.value, res.areas.query("method == 'R' and metric == 'MoRF'").value)
    d = F.paired_differences(res.areas, "-R", n_boot=50)
    assert set(d.metric) == set(res.areas.metric) and (d.method == "R").all()
    with pytest.raises(ValueError, match="unknown protocol"):
        F.faithfulness(scorer, {"R": R}, task.valid, ["MoRF", "AUC"])


def test_paired_differences_verdicts():
    rows = []
    for ex in range(20):
        rows += [("t", "a", "AUAC", ex, 1.0 + 0.01 * ex), ("t", "b", "AUAC", ex, 0.5 + 0.01 * ex),
                 ("t", "a", "AU-MSE", ex, 1.0 + 0.01 * ex), ("t", "b", "AU-MSE", ex, 0.5 + 0.01 * ex),
                 ("t", "a", "insert-LeRF", ex, (-1) ** ex), ("t", "b", "insert-LeRF", ex, 0.0)]
    areas = pd.DataFrame(rows, columns=["task", "method", "metric", "example", "value"])
    tab = F.paired_differences(areas, "b", ["a"], ("task", "metric"), n_boot=200).set_index("metric")
    assert tab.loc["AUAC", "verdict"] == "a better"  # higher AUAC is better
    assert tab.loc["AU-MSE", "verdict"] == "b better"  # lower AU-MSE is better
    assert tab.loc["insert-LeRF", "verdict"] == "no clear difference"
    assert tab.loc["AUAC", "diff"] == pytest.approx(0.5) and tab.loc["AUAC", "n"] == 20
