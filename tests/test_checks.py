"""Bad input never gives a silent wrong answer or a raw torch error (issue 15): each case gets a
clear ``TypeError`` / ``ValueError`` / ``RuntimeError`` whose message names the parameter, or the
correct result.  One test per case of the issue's list (the experiment loops, metrics, viz and the
CLI have their own tests next to their modules)."""
from __future__ import annotations

import pytest
import torch
from archs import arch_model, tiny
from tolerances import SAME_FUNCTION_F64

from lrp_utils import checks, explain, loo, loo_by_layer, rules

IDS = torch.tensor([[5, 6, 7, 8]])


@pytest.fixture(scope="module", params=["bert", "gpt2", "llama", "tiny"])
def model(request):
    return tiny() if request.param == "tiny" else arch_model(request.param)


# -- attention masks: only 0 / 1, contiguous tokens ----------------------------------------------------
@pytest.mark.parametrize("mask", [
    torch.tensor([[1, 2, 1, 1]]),                   # a 2 used to double that token's relevance
    torch.tensor([[1, -1, 1, 1]]),                  # a -1 used to flip signs
    torch.tensor([[1.0, float("nan"), 1.0, 1.0]]),  # NaN used to give R ~ -2.6e13
    torch.tensor([[1.0, 0.5, 1.0, 1.0]]),           # 0.5 used to fail as "row of zeros"
])
def test_mask_values_must_be_0_or_1(model, mask):
    with pytest.raises(ValueError, match="attention_mask values must be 0 or 1"):
        explain(model, IDS, "attnlrp", attention_mask=mask)
    with pytest.raises(ValueError, match="attention_mask values must be 0 or 1"):
        loo(model, IDS, attention_mask=mask)


def test_mask_with_a_hole_is_refused(model):
    with pytest.raises(ValueError, match="padding between tokens"):
        explain(model, IDS, "gi", attention_mask=torch.tensor([[1, 0, 1, 1]]))


@pytest.mark.parametrize("mask", [torch.tensor([[1, 1, 1, 0]], dtype=torch.bool), torch.tensor([[1.0, 1.0, 1.0, 0.0]]),
                                  torch.tensor([[0, 1, 1, 1]], dtype=torch.uint8)])
def test_exact_0_1_masks_of_any_dtype_are_accepted(model, mask):
    ref = explain(model, IDS, "attnlrp", attention_mask=mask.long())
    out = explain(model, IDS, "attnlrp", attention_mask=mask)
    assert torch.equal(out.tokens, ref.tokens)


# -- ids ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", [torch.uint8, torch.int16, torch.int32])
def test_any_integer_id_dtype_is_cast(model, dtype):
    assert torch.equal(explain(model, IDS.to(dtype), "gi").tokens, explain(model, IDS, "gi").tokens)


def test_bool_ids_refused(model):
    with pytest.raises(TypeError, match="input_ids must hold integer token ids"):
        explain(model, IDS.bool(), "gi")


# -- targets and layers: integers only ----------------------------------------------------------------
@pytest.mark.parametrize("target, words", [
    (1.7, "target must be an integer"),
    (torch.tensor([0.9, 1.9]), "target must hold integer ids"),
    ("1", "target must be an integer"),
    (True, "target must be an integer"),
    ([1, 0.5], "target entry must be an integer"),
])
def test_targets_must_be_integers(target, words):
    with pytest.raises(TypeError, match=words):
        explain(tiny(), torch.tensor([[5, 6, 7], [1, 2, 3]]), "gi", target=target)
    with pytest.raises(TypeError, match=words):
        loo(tiny(), torch.tensor([[5, 6, 7], [1, 2, 3]]), target=target)


def test_integer_like_targets_are_accepted():
    import numpy as np

    ids = torch.tensor([[5, 6, 7], [1, 2, 3]])
    ref = explain(tiny(), ids, "gi", target=1).tokens
    for t in (np.int64(1), torch.tensor(1), torch.tensor([1, 1]), [1, 1], np.array([1, 1])):
        assert torch.equal(explain(tiny(), ids, "gi", target=t).tokens, ref)


@pytest.mark.parametrize("layer, err", [(1.5, TypeError), (True, TypeError), ("1", TypeError), (-1, ValueError), (3, ValueError)])
def test_loo_layer_must_be_an_integer_in_range(layer, err):
    with pytest.raises(err, match="layer"):
        loo(tiny(), IDS, layer=layer)


def test_layers_list_must_be_non_empty_integers():
    with pytest.raises(ValueError, match="layers must not be empty"):
        loo_by_layer(tiny(), IDS, layers=[])
    with pytest.raises(TypeError, match="layers entry must be an integer"):
        loo_by_layer(tiny(), IDS, layers=[0, 1.0])


@pytest.mark.parametrize("batch_size", [0, -3])
def test_batch_size_must_be_positive(batch_size):
    with pytest.raises(ValueError, match="batch_size must be an integer in"):
        loo(tiny(), IDS, batch_size=batch_size)


# -- lengths beyond the position table ----------------------------------------------------------------
@pytest.mark.parametrize("kind, limit", [("bert", 64), ("gpt2", 64), ("tiny", 128)])
def test_inputs_longer_than_the_position_table_are_refused(kind, limit):
    m = tiny() if kind == "tiny" else arch_model(kind)
    ids = torch.randint(1, 50, (1, limit + 1))
    with pytest.raises(ValueError, match=f"position table holds {limit}"):
        explain(m, ids, "attnlrp")
    with pytest.raises(ValueError, match=f"position table holds {limit}"):
        loo(m, ids)
    explain(m, ids[:, :limit], "gi")  # exactly the table: fine


def test_rotary_models_have_no_position_limit():
    explain(tiny(position="rotary", max_len=8), torch.randint(1, 50, (1, 12)), "attnlrp")


def test_left_padding_longer_than_table_counts_tokens_only():
    ids = torch.randint(1, 50, (2, 70))
    mask = torch.ones_like(ids)
    mask[1, :10] = 0  # 60 tokens, left-padded to 70 columns: the widest row decides
    with pytest.raises(ValueError, match="input has 70 tokens"):
        explain(arch_model("bert"), ids, "gi", attention_mask=mask)
    explain(arch_model("bert"), ids[1:, 6:], "gi", attention_mask=mask[1:, 6:])  # 60 tokens in 64 columns


# -- inference mode, IG layers ------------------------------------------------------------------------
def test_inference_mode_gets_a_clear_message():
    with torch.inference_mode(), pytest.raises(RuntimeError, match=r"torch.no_grad\(\)"):
        explain(tiny(), IDS, "attnlrp")
    with torch.inference_mode():  # LOO needs no gradient: fine
        assert loo(tiny(), IDS).shape == IDS.shape


def test_ig_layer_sums_without_ig_layers_is_a_clear_error():
    e = explain(tiny(), IDS, "ig", n_steps=4)
    with pytest.raises(ValueError, match="ig_layers=True"):
        e.layer_sums()
    assert explain(tiny(), IDS, "ig", n_steps=4, ig_layers=True).layer_sums().shape == (3, 1)


# -- LOO with nothing to remove -----------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["bert", "llama", "tiny"])
def test_loo_single_token_is_all_nan(kind):
    m = tiny() if kind == "tiny" else arch_model(kind)
    out = loo_by_layer(m, torch.tensor([[7]]))
    assert out.shape == (m.config.num_hidden_layers + 1 if kind != "tiny" else 3, 1, 1) and out.isnan().all()


def test_loo_row_with_only_its_readout_token_is_nan_and_others_unaffected():
    ids, mask = torch.tensor([[5, 6, 7, 8], [9, 1, 1, 1]]), torch.tensor([[1, 1, 1, 1], [1, 0, 0, 0]])
    out = loo(tiny(), ids, attention_mask=mask)
    assert out[1].isnan().all()
    torch.testing.assert_close(out[0], loo(tiny(), ids[:1])[0], rtol=0, atol=SAME_FUNCTION_F64, equal_nan=True)


# -- the identity rule's stabiliser -------------------------------------------------------------------
@pytest.mark.parametrize("method", ["attnlrp", "cp-lrp"])
def test_identity_rule_finite_at_minus_eps(method):
    x = torch.tensor([-rules.IDENTITY_EPS, 0.0, rules.IDENTITY_EPS, -1.0], dtype=torch.float64, requires_grad=True)
    y = rules.identity_rule(torch.nn.functional.gelu, x)
    (g,) = torch.autograd.grad(y.sum(), x)
    assert torch.isfinite(g).all(), g
    assert rules.stabilize(torch.tensor([-1e-10, 0.0])).abs().min() > 0  # never crosses 0


# -- the checks' own messages ------------------------------------------------------------------------
def test_check_helpers_name_the_parameter():
    with pytest.raises(ValueError, match="n_boot must be an integer in"):
        checks.positive_int("n_boot", 0)
    with pytest.raises(ValueError, match=r"alpha must lie in \(0, 1\)"):
        checks.unit_interval("alpha", 1.5)
    with pytest.raises(ValueError, match="target must be one integer or one per example"):
        checks.per_example([1, 2, 3], 2)
    assert checks.per_example(None, 3) is None and checks.per_example(2, 3).tolist() == [2, 2, 2]
