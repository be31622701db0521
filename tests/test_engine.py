"""explain(): oracles on tiny and Hugging Face models, reversibility, padding, bad input."""
from __future__ import annotations

import copy

import pytest
import torch
from conftest import HF_KINDS, hf_model, tiny
from tolerances import EXACT_REL, IDENTITY_RULE_REL, SAME_FUNCTION_F64

from lrp_utils import METHODS, explain
from lrp_utils.adapters import get_adapter

LRP_METHODS = sorted(METHODS)


def _close(a, b, rel, scale=None):
    a, b = a.detach(), b.detach()
    scale = scale if scale is not None else max(float(b.abs().max()), 1e-12)
    assert float((a - b).abs().max()) <= rel * scale, f"max diff {float((a - b).abs().max()):.3e}"


# -- adapters reproduce the models exactly --------------------------------------------------------
@pytest.mark.parametrize("kind", HF_KINDS)
def test_adapter_forward_equals_hf(kind, padded_ids):
    model, (ids, mask) = hf_model(kind), padded_ids
    with torch.no_grad():
        ours = get_adapter(model).forward(ids, mask)
        out = model(input_ids=ids, attention_mask=mask).logits
    if out.dim() == 3:
        out = out[torch.arange(len(ids)), mask.sum(1) - 1]
    _close(ours, out, SAME_FUNCTION_F64)


def test_adapter_forward_equals_tiny_forward(padded_ids):
    for kw in [dict(), dict(task="causal", position="rotary", n_kv_heads=2, mlp="swiglu", norm="rmsnorm")]:
        model, (ids, mask) = tiny(**kw), padded_ids
        with torch.no_grad():
            ours = get_adapter(model).forward(ids, mask)
            out = model(ids, attention_mask=mask)
        if out.dim() == 3:
            out = out[torch.arange(len(ids)), mask.sum(1) - 1]
        _close(ours, out, SAME_FUNCTION_F64)


# -- oracle d: gi is plain gradient x input -------------------------------------------------------
@pytest.mark.parametrize("kind", HF_KINDS)
def test_gi_equals_autograd(kind, padded_ids):
    model, (ids, mask) = hf_model(kind), padded_ids
    emb = get_adapter(model).word_embeddings(ids).detach().requires_grad_()
    out = model(inputs_embeds=emb, attention_mask=mask).logits
    if out.dim() == 3:
        out = out[torch.arange(len(ids)), mask.sum(1) - 1]
    target = out.argmax(-1)
    grad, = torch.autograd.grad(out.gather(1, target[:, None]).sum(), emb)
    exp = explain(model, ids, "gi", attention_mask=mask)
    _close(exp.tokens, (emb * grad).sum(-1) * mask, SAME_FUNCTION_F64)
    assert torch.equal(exp.target, target)


# -- oracle a: bias-free CP-LRP conserves at every layer ------------------------------------------
@pytest.mark.parametrize("kw", [
    dict(position="none"), dict(position="rotary", norm="rmsnorm", mlp="swiglu", n_kv_heads=2),
    dict(task="causal", position="rotary"), dict(readout="mean", position="none"),
    dict(attention="linear", order="q(kv)", feature_map="elu1", normalize=True, position="none"),
])
def test_cp_lrp_conserves_every_layer_bias_free(kw, padded_ids):
    model, (ids, mask) = tiny(bias=False, **kw), padded_ids
    exp = explain(model, ids, "cp-lrp", attention_mask=mask)
    for layer_sum in exp.layer_sums():
        _close(layer_sum, exp.logit, EXACT_REL)
    _close(exp.tokens.sum(-1), exp.logit, EXACT_REL)


def test_pa_cp_lrp_closes_additive_positions_bias_free(padded_ids):
    for position in ("learned", "sinusoidal"):
        model, (ids, mask) = tiny(bias=False, position=position), padded_ids
        exp = explain(model, ids, "pa-cp-lrp", attention_mask=mask)
        _close(exp.tokens.sum(-1) + exp.positions.sum(-1), exp.logit, IDENTITY_RULE_REL)
        no_pos = explain(model, ids, "cp-lrp", attention_mask=mask)
        assert (no_pos.tokens.sum(-1) - no_pos.logit).abs().max() > 1e-3  # positions matter


def test_llama_cp_lrp_conserves_bias_free():
    model = hf_model("llama")  # no biases in LLaMA; RMSNorm runs in float32 inside HF
    ids = torch.randint(0, 60, (2, 8))
    exp = explain(model, ids, "cp-lrp")
    _close(exp.tokens.sum(-1), exp.logit, 1e-6)


def test_attnlrp_shortfall_is_softmax_absorption_in_linear_attention():
    """Without softmax and biases, AttnLRP is exactly conservative (every rule conserves)."""
    model = tiny(bias=False, attention="linear", position="none", norm="rmsnorm", mlp="swiglu")
    ids = torch.randint(0, 50, (2, 7))
    exp = explain(model, ids, "attnlrp")
    _close(exp.tokens.sum(-1), exp.logit, IDENTITY_RULE_REL)
    soft = explain(tiny(bias=False, position="none"), ids, "attnlrp")
    assert (soft.tokens.sum(-1) - soft.logit).abs().max() > 1e-3  # the softmax absorbs relevance


# -- layers, padding, batching --------------------------------------------------------------------
@pytest.mark.parametrize("method", ["gi", "cp-lrp", "attnlrp", "pa-lrp"])
@pytest.mark.parametrize("kind", HF_KINDS)
def test_padded_batch_equals_single_examples(kind, method, padded_ids):
    model, (ids, mask) = hf_model(kind), padded_ids
    batch = explain(model, ids, method, attention_mask=mask)
    scale = max(1.0, float(batch.logit.abs().max()))
    for b in range(len(ids)):
        n = int(mask[b].sum())
        single = explain(model, ids[b, :n], method)
        _close(batch.tokens[b, :n], single.tokens[0], SAME_FUNCTION_F64, scale)
        for lb, ls in zip(batch.layers, single.layers):
            _close(lb[b, :n], ls[0], SAME_FUNCTION_F64, scale)
        assert (batch.tokens[b, n:] == 0).all()


def test_left_padding_equals_single_for_causal_models():
    model = hf_model("llama")
    ids = torch.randint(1, 60, (1, 6))
    padded = torch.cat([torch.zeros(1, 3, dtype=torch.long), ids], 1)
    mask = torch.cat([torch.zeros(1, 3, dtype=torch.long), torch.ones(1, 6, dtype=torch.long)], 1)
    a, b = explain(model, ids, "attnlrp"), explain(model, padded, "attnlrp", attention_mask=mask)
    _close(b.tokens[:, 3:], a.tokens, 1e-9)


def test_explanation_shapes_and_fields(padded_ids):
    model, (ids, mask) = hf_model("bert"), padded_ids
    exp = explain(model, ids, "pa-lrp", attention_mask=mask, target=1)
    assert exp.tokens.shape == ids.shape and exp.positions.shape == ids.shape
    assert len(exp.layers) == 3 and all(l.shape == ids.shape for l in exp.layers)
    assert exp.target.tolist() == [1, 1, 1] and exp.logit.shape == (3,)
    assert exp.tokens.device.type == "cpu" and exp.method == "pa-lrp"
    assert explain(model, ids[0], "gi").tokens.shape == (1, 9)  # 1-D input is batch 1


# -- reversibility --------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", HF_KINDS + ["tiny"])
def test_model_bit_identical_after_explain(kind, padded_ids):
    model = tiny() if kind == "tiny" else hf_model(kind)
    ids, mask = padded_ids
    model.train()  # dropout flags must be restored exactly, too
    model.dropout_probe = True
    state = copy.deepcopy(model.state_dict())
    flags = [m.training for m in model.modules()]
    impl = getattr(getattr(model, "config", None), "_attn_implementation", None)
    hooks = [len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules()]
    model.eval()
    with torch.no_grad():
        before = model(ids, attention_mask=mask)
    model.train()
    with torch.no_grad():
        for method in ["gi", "cp-lrp", "attnlrp", "pa-lrp", "ig", "rollout"]:
            explain(model, ids, method, attention_mask=mask)
            assert not torch.is_grad_enabled()  # the caller's no_grad is still in force
    assert [m.training for m in model.modules()] == flags
    assert getattr(getattr(model, "config", None), "_attn_implementation", None) == impl
    assert [len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules()] == hooks
    assert all(p.grad is None for p in model.parameters())
    for k, v in model.state_dict().items():
        assert torch.equal(v, state[k]), k
    model.eval()
    with torch.no_grad():
        after = model(ids, attention_mask=mask)
    after, before = getattr(after, "logits", after), getattr(before, "logits", before)
    assert torch.equal(after, before)


def test_rules_restored_after_an_exception():
    model = hf_model("llama")
    impl = model.config._attn_implementation
    with pytest.raises(ValueError):
        explain(model, torch.randint(0, 60, (1, 5)), "attnlrp", target=10_000)
    assert model.config._attn_implementation == impl
    assert all(len(m._forward_hooks) == 0 for m in model.modules())


def test_results_independent_of_attention_implementation():
    ids = torch.randint(0, 60, (2, 7))
    results = []
    for impl in ("eager", "sdpa"):
        model = hf_model("llama")
        model.set_attn_implementation(impl)
        results.append(explain(model, ids, "attnlrp").tokens)
    _close(results[0], results[1], SAME_FUNCTION_F64)


# -- oracle e: the toy product ---------------------------------------------------------------------
def test_toy_product_uniform_rule_orders():
    from lrp_utils.toy import toy_attributions

    res = toy_attributions((2.0, 3.0, 4.0))
    assert res["attnlrp"]["left"] == pytest.approx([6, 6, 12])
    assert res["attnlrp"]["right"] == pytest.approx([12, 6, 6])
    for method, expected in [("gi", [24, 24, 24]), ("ig", [8, 8, 8]),
                             ("loo-zero", [24, 24, 24]), ("loo-one", [12, 16, 18])]:
        assert res[method]["left"] == pytest.approx(expected, rel=1e-6), method
        assert res[method]["right"] == pytest.approx(expected, rel=1e-6), method


# -- bad input -------------------------------------------------------------------------------------
@pytest.fixture
def bert():
    return hf_model("bert")


@pytest.mark.parametrize("bad, err, words", [
    (torch.zeros(1, 0, dtype=torch.long), ValueError, "non-empty"),
    (torch.zeros(0, 4, dtype=torch.long), ValueError, "non-empty"),
    (torch.rand(1, 4), TypeError, "integer token ids"),
    (torch.tensor([[1, 2, 60]]), ValueError, "vocabulary"),
    (torch.tensor([[1, -2, 3]]), ValueError, "vocabulary"),
    ([[1, 2, 3]], TypeError, "torch tensor"),
])
def test_bad_input_ids(bert, bad, err, words):
    with pytest.raises(err, match=words):
        explain(bert, bad, "attnlrp")


def test_bad_target_mask_method_architecture_dtype(bert):
    ids = torch.tensor([[1, 2, 3, 4]])
    with pytest.raises(ValueError, match="out of range"):
        explain(bert, ids, "attnlrp", target=3)
    with pytest.raises(ValueError, match="out of range"):
        explain(hf_model("gpt2"), ids, "attnlrp", target=60)
    with pytest.raises(ValueError, match="does not match"):
        explain(bert, ids, "attnlrp", attention_mask=torch.ones(1, 5))
    with pytest.raises(ValueError, match="valid methods: .*attnlrp.*cp-lrp.*gi.*ig"):
        explain(bert, ids, "lrp-magic")
    with pytest.raises(TypeError, match="supported: .*BertForSequenceClassification.*LlamaForCausalLM"):
        explain(torch.nn.Linear(3, 3), ids, "attnlrp")
    with pytest.raises(TypeError, match="float16"):
        explain(hf_model("gpt2").half(), ids, "attnlrp")
    with pytest.raises(ValueError, match="at least one token"):
        explain(bert, ids, "attnlrp", attention_mask=torch.zeros(1, 4))


def test_method_names_case_insensitive(bert):
    ids = torch.tensor([[1, 2, 3, 4]])
    assert torch.equal(explain(bert, ids, "AttnLRP").tokens, explain(bert, ids, "attnlrp").tokens)


def test_bf16_gives_finite_relevance():
    model = hf_model("llama").to(torch.bfloat16)
    exp = explain(model, torch.randint(0, 60, (2, 8)), "attnlrp")
    assert torch.isfinite(exp.tokens.float()).all()


@pytest.mark.parametrize("kind", ["llama", "bert"])
def test_gradient_checkpointing_gives_identical_relevance(kind, padded_ids):
    model, (ids, mask) = hf_model(kind), padded_ids
    for method in ("attnlrp", "pa-lrp"):
        a = explain(model, ids, method, attention_mask=mask)
        b = explain(model, ids, method, attention_mask=mask, checkpoint=True)
        assert torch.equal(a.tokens, b.tokens) and all(torch.equal(x, y) for x, y in zip(a.layers, b.layers))


def test_identity_rule_is_finite_in_half_precision():
    from lrp_utils.rules import identity_rule

    for dtype in (torch.float16, torch.bfloat16):
        x = torch.tensor([0.0, 1e-4, -2.0, 3.0], dtype=dtype, requires_grad=True)
        y = identity_rule(torch.nn.functional.gelu, x)
        (g,) = torch.autograd.grad(y.sum(), x)
        assert torch.isfinite(g).all() and g.dtype == dtype
