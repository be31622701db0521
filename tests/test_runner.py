"""lrp_utils.runner: length batches, and the batched loops equal single-example calls."""
from __future__ import annotations

import pytest
import torch
from conftest import hf_model, tiny
from tolerances import SAME_FUNCTION_F64

SAME = dict(rtol=SAME_FUNCTION_F64, atol=SAME_FUNCTION_F64)

from lrp_utils import explain, loo_by_layer, runner
from lrp_utils.profiling import Clock


def _mask(lengths, S, left=False):
    m = torch.zeros(len(lengths), S, dtype=torch.long)
    for i, n in enumerate(lengths):
        if left:
            m[i, S - n:] = 1
        else:
            m[i, :n] = 1
    return m


@pytest.mark.parametrize("left", [False, True])
def test_batches_cover_every_example_once_and_crop_shared_padding(left):
    lengths, S = [5, 2, 7, 3, 2, 6], 9
    mask = _mask(lengths, S, left)
    batches = list(runner.length_batches(mask, 4))
    order = torch.cat([idx for idx, _ in batches])
    assert sorted(order.tolist()) == list(range(len(lengths)))
    assert [lengths[i] for i in order] == sorted(lengths)  # stable, shortest first
    for idx, cols in batches:
        longest = max(lengths[i] for i in idx)
        assert cols == (slice(S - longest, S) if left else slice(0, longest))
        assert int(mask[idx, cols].sum()) == int(mask[idx].sum())  # no token cropped away


def test_bad_batch_size_is_a_clear_error():
    with pytest.raises(ValueError, match="batch_size must be an integer in >= 1"):
        list(runner.length_batches(torch.ones(2, 3), 0))


def _padded(model, left, lengths=(9, 4, 7, 5, 9, 6), S=9, seed=0):
    ids = torch.randint(3, model.config.vocab_size, (len(lengths), S), generator=torch.Generator().manual_seed(seed))
    return ids, _mask(lengths, S, left)


@pytest.mark.parametrize("kind", ["tiny", "bert", "llama"])
@pytest.mark.parametrize("left", [False, True])
def test_explain_many_equals_single_example_explain(kind, left):
    """Every example of every length batch equals explain() on that example alone (no padding),
    with its relevance placed at its own columns and 0 at padding."""
    model = tiny(n_layers=2) if kind == "tiny" else hf_model(kind)
    ids, mask = _padded(model, left)
    exps = runner.explain_many(model, ids, mask, ["attnlrp", "pa-lrp", "gi"], batch_size=4)
    for b in range(len(ids)):
        cols = mask[b].bool()
        one = ids[b:b + 1, cols]
        for m, e in exps.items():
            ref = explain(model, one, m)
            torch.testing.assert_close(e.tokens[b, cols], ref.tokens[0].double(), **SAME)
            for got, want in zip(e.layers, ref.layers):
                torch.testing.assert_close(got[b, cols], want[0].double(), **SAME)
            assert (e.tokens[b, ~cols] == 0).all() and e.target[b] == ref.target[0]
            torch.testing.assert_close(e.logit[b], ref.logit[0].double(), **SAME)
    assert torch.equal(exps["gi"].target, exps["attnlrp"].target)  # the first method's targets, reused
    assert exps["attnlrp"].positions is None and exps["pa-lrp"].positions is not None
    assert exps["gi"].extras["wall_s"] > 0 and exps["gi"].extras["cpu_s"] >= 0


def test_explain_many_targets_contrast_and_method_kwargs():
    model = tiny(position="rotary", task="causal", n_kv_heads=2)
    ids, mask = _padded(model, left=False)
    clock = Clock()
    got = runner.explain_many(model, ids, mask, ["pa-lrp"], target=3, contrast=7, batch_size=2, clock=clock)["pa-lrp"]
    a = explain(model, ids, "pa-lrp", target=3, attention_mask=mask)
    b = explain(model, ids, "pa-lrp", target=7, attention_mask=mask)
    torch.testing.assert_close(got.tokens, (a.tokens - b.tokens).double(), **SAME)
    torch.testing.assert_close(got.logit, (a.logit - b.logit).double(), **SAME)
    assert (got.target == 3).all() and set(clock.wall) == {"pa-lrp"}
    with pytest.raises(ValueError, match="contrast needs explicit targets"):
        runner.explain_many(model, ids, mask, ["gi"], contrast=7)
    with pytest.raises(TypeError, match="unexpected keyword"):
        runner.explain_many(model, ids, mask, ["gi"], n_stpes=3)
    r1 = runner.explain_many(model, ids, mask, ["random"], batch_size=2, seed=5)["random"]
    r2 = runner.explain_many(model, ids, mask, ["random"], batch_size=2, seed=5)["random"]
    assert torch.equal(r1.tokens, r2.tokens) and (r1.tokens[mask == 0] == 0).all()
    ig = runner.explain_many(model, ids[:2], mask[:2], ["ig"], ig_batch_size=1, n_steps=4)["ig"]
    ref = explain(model, ids[:1, :int(mask[0].sum())], "ig", n_steps=4)
    torch.testing.assert_close(ig.tokens[0, :int(mask[0].sum())], ref.tokens[0].double(), rtol=1e-8, atol=1e-8)


@pytest.mark.parametrize("left", [False, True])
def test_loo_many_equals_single_example_loo(left):
    model = hf_model("gpt2") if left else tiny(n_layers=2)
    ids, mask = _padded(model, left)
    target = torch.arange(len(ids)) % 2
    got = runner.loo_many(model, ids, mask, [0, 2], target, removal="zero", batch_size=4, loo_batch_size=5)
    for b in range(len(ids)):
        cols = mask[b].bool()
        ref = loo_by_layer(model, ids[b:b + 1, cols], [0, 2], target=target[b:b + 1], removal="zero")[:, 0]
        torch.testing.assert_close(got[:, b, cols], ref.double(), **SAME, equal_nan=True)
        assert got[:, b, ~cols].isnan().all()


def test_predict_rows_in_input_order():
    model = hf_model("bert")
    ids, mask = _padded(model, left=False)
    logits = runner.predict(model, ids, mask, batch_size=2)
    with torch.no_grad():
        ref = model(input_ids=ids, attention_mask=mask).logits
    torch.testing.assert_close(logits, ref.double(), **SAME)
