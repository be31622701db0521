"""PA-LRP (Bakish et al. 2025): the exact identities of PAPERS.md section 002, in float64.

* additive PE, bias-free, CP rules: sum(tokens) + sum(positions) = logit;
* RoPE, linear attention (no softmax), bias-free, AttnLRP rules: sum(tokens) + sum(positions) = logit;
* RoPE, per layer and position: position relevance = 1/2 of the relevance at the rotated q and k
  (checked against :func:`lrp_utils.reference.rope_reference`, a replica written from the
  definition that applies the uniform rule at the rotation products itself);
* CP-LRP with RoPE: positions exactly 0; RoPE as a constant rotation (plain AttnLRP): no positions;
* additive PE: PA-LRP's token relevance is AttnLRP's, bit for bit (the split only adds a field).
"""
from __future__ import annotations

import pytest
import torch
from conftest import HF_KINDS, hf_model, tiny
from tolerances import EXACT_REL, IDENTITY_RULE_REL, SAME_FUNCTION_F64

from lrp_utils import Explanation, explain
from lrp_utils.reference import rope_reference

ROPE_SOFTMAX = [dict(), dict(task="causal", n_kv_heads=2, mlp="swiglu", norm="rmsnorm")]
ROPE_LINEAR = [dict(attention="linear"), dict(attention="linear", task="causal", order="q(kv)", n_kv_heads=2)]


def _close(a, b, rel, scale=None):
    a, b = torch.as_tensor(a).detach(), torch.as_tensor(b).detach()
    scale = scale if scale is not None else max(float(b.abs().max()), 1e-12)
    assert float((a - b).abs().max()) <= rel * scale, f"max diff {float((a - b).abs().max()):.3e}"


def _rope_total(ref: dict) -> torch.Tensor:
    return ref["tokens"].sum(-1) + sum(p.sum(-1) for p in ref["positions_by_layer"])


# -- additive position encodings -------------------------------------------------------------------
@pytest.mark.parametrize("task", ["classify", "causal"])
@pytest.mark.parametrize("position", ["learned", "sinusoidal"])
def test_pa_cp_lrp_additive_conserves_bias_free(position, task, padded_ids):
    model, (ids, mask) = tiny(bias=False, position=position, task=task), padded_ids
    pa = explain(model, ids, "pa-cp-lrp", attention_mask=mask)
    _close(pa.tokens.sum(-1) + pa.positions.sum(-1), pa.logit, IDENTITY_RULE_REL)
    _close(pa.total, pa.logit, IDENTITY_RULE_REL)
    cp = explain(model, ids, "cp-lrp", attention_mask=mask)
    assert torch.equal(cp.tokens, pa.tokens) and cp.positions is None
    assert float((cp.tokens.sum(-1) - cp.logit).abs().max()) > 1e-3  # token-only misses the positions' share


@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("position", ["learned", "sinusoidal"])
def test_pa_lrp_tokens_equal_attnlrp_tokens_additive(position, bias, padded_ids):
    model, (ids, mask) = tiny(bias=bias, position=position), padded_ids
    a = explain(model, ids, "attnlrp", attention_mask=mask)
    p = explain(model, ids, "pa-lrp", attention_mask=mask)
    assert torch.equal(a.tokens, p.tokens) and torch.equal(a.logit, p.logit)
    assert all(torch.equal(x, y) for x, y in zip(a.layers, p.layers))
    assert a.positions is None and p.positions is not None and p.positions_by_layer is None
    # the split at the sum is exact: tokens + positions = relevance of the embedding sum (layer 0)
    _close(p.tokens + p.positions, p.layers[0], SAME_FUNCTION_F64, float(p.layers[0].abs().max()))


@pytest.mark.parametrize("kind", ["bert", "gpt2"])
def test_pa_lrp_tokens_equal_attnlrp_tokens_hf_additive(kind, padded_ids):
    model, (ids, mask) = hf_model(kind), padded_ids
    a = explain(model, ids, "attnlrp", attention_mask=mask)
    p = explain(model, ids, "pa-lrp", attention_mask=mask)
    assert torch.equal(a.tokens, p.tokens)


# -- rotary position encodings ---------------------------------------------------------------------
@pytest.mark.parametrize("kw", ROPE_LINEAR)
def test_rope_reference_linear_attention_conserves(kw, padded_ids):
    """The identity itself: with the uniform rule at the rotation, tokens + positions = logit."""
    model, (ids, mask) = tiny(bias=False, position="rotary", **kw), padded_ids
    ref = rope_reference(model, ids, mask)
    _close(_rope_total(ref), ref["logit"], IDENTITY_RULE_REL)
    assert float(sum(p.abs().sum() for p in ref["positions_by_layer"])) > 1e-3


@pytest.mark.parametrize("kw", ROPE_LINEAR)
def test_pa_lrp_rope_linear_attention_conserves(kw, padded_ids):
    model, (ids, mask) = tiny(bias=False, position="rotary", **kw), padded_ids
    exp = explain(model, ids, "pa-lrp", attention_mask=mask)
    _close(exp.tokens.sum(-1) + exp.positions.sum(-1), exp.logit, IDENTITY_RULE_REL)
    ref = rope_reference(model, ids, mask)
    _close(exp.tokens, ref["tokens"], SAME_FUNCTION_F64, float(ref["tokens"].abs().max()))
    assert float((exp.tokens.sum(-1) - exp.logit).abs().max()) > 1e-3  # tokens alone miss the positions' half


@pytest.mark.parametrize("kw", ROPE_SOFTMAX + ROPE_LINEAR)
def test_rope_position_relevance_is_half_of_rotated_qk(kw, padded_ids):
    model, (ids, mask) = tiny(position="rotary", **kw), padded_ids
    exp = explain(model, ids, "pa-lrp", attention_mask=mask)
    ref = rope_reference(model, ids, mask)
    assert len(exp.positions_by_layer) == model.config.n_layers
    for pos, rot, ref_pos in zip(exp.positions_by_layer, ref["rotated_by_layer"], ref["positions_by_layer"]):
        scale = float(rot.abs().max())
        _close(ref_pos, 0.5 * rot, EXACT_REL, scale)  # the replica obeys the rule ...
        _close(pos, 0.5 * rot, EXACT_REL, scale)  # ... and so does the engine, per layer and position
    _close(exp.tokens, ref["tokens"], SAME_FUNCTION_F64, float(ref["tokens"].abs().max()))
    _close(exp.positions, sum(exp.positions_by_layer), SAME_FUNCTION_F64, float(exp.positions.abs().max()))


@pytest.mark.parametrize("kw", ROPE_SOFTMAX + ROPE_LINEAR)
def test_pa_cp_lrp_rope_positions_exactly_zero(kw, padded_ids):
    model, (ids, mask) = tiny(position="rotary", **kw), padded_ids
    exp = explain(model, ids, "pa-cp-lrp", attention_mask=mask)
    assert exp.positions is not None and bool((exp.positions == 0).all())
    assert all(bool((p == 0).all()) for p in exp.positions_by_layer)
    assert torch.equal(exp.tokens, explain(model, ids, "cp-lrp", attention_mask=mask).tokens)


@pytest.mark.parametrize("method", ["attnlrp", "cp-lrp", "gi"])
def test_rope_as_constant_rotation_has_no_positions(method, padded_ids):
    model, (ids, mask) = tiny(position="rotary"), padded_ids
    exp = explain(model, ids, method, attention_mask=mask)
    assert exp.positions is None and exp.positions_by_layer is None and exp.token_types is None
    ref = rope_reference(model, ids, mask, positional=False) if method == "attnlrp" else None
    if ref is not None:  # cos/sin as constants in the replica = the engine's AttnLRP
        _close(exp.tokens, ref["tokens"], SAME_FUNCTION_F64, float(ref["tokens"].abs().max()))


def test_attnlrp_rope_linear_attention_conserves_on_tokens(padded_ids):
    """RoPE as a constant rotation is a linear map: AttnLRP's tokens already close the budget."""
    model, (ids, mask) = tiny(bias=False, position="rotary", attention="linear"), padded_ids
    exp = explain(model, ids, "attnlrp", attention_mask=mask)
    _close(exp.tokens.sum(-1), exp.logit, IDENTITY_RULE_REL)


# -- Hugging Face models ---------------------------------------------------------------------------
@pytest.mark.parametrize("kind", HF_KINDS)
def test_hf_pa_lrp_fields(kind, padded_ids):
    model, (ids, mask) = hf_model(kind), padded_ids
    exp = explain(model, ids, "pa-lrp", attention_mask=mask)
    assert exp.positions.shape == ids.shape and bool(exp.positions.isfinite().all())
    assert bool((exp.positions[mask == 0] == 0).all()) and float(exp.positions.abs().max()) > 0
    if kind == "bert":
        assert exp.token_types.shape == ids.shape and bool(exp.token_types.isfinite().all())
        assert float(exp.token_types.abs().max()) > 0
    else:
        assert exp.token_types is None
    if kind == "llama":
        n_layers = model.config.num_hidden_layers
        assert len(exp.positions_by_layer) == n_layers
        assert all(p.shape == ids.shape and bool(p.isfinite().all()) for p in exp.positions_by_layer)
        _close(exp.positions, sum(exp.positions_by_layer), SAME_FUNCTION_F64, float(exp.positions.abs().max()))
        cp = explain(model, ids, "pa-cp-lrp", attention_mask=mask)
        assert bool((cp.positions == 0).all())
    else:
        assert exp.positions_by_layer is None


# -- display map and contrasts ---------------------------------------------------------------------
def test_combined_heatmap_definition(padded_ids):
    model, (ids, mask) = tiny(position="rotary", task="causal"), padded_ids
    exp = explain(model, ids, "pa-lrp", attention_mask=mask)
    heat = exp.tokens + sum(p.abs() for p in exp.positions_by_layer)
    expected = heat / heat.abs().amax(-1, keepdim=True)
    _close(exp.combined(), expected, SAME_FUNCTION_F64, 1.0)
    assert bool((exp.combined().abs().amax(-1) == 1).all())
    add = explain(tiny(), ids, "pa-lrp", attention_mask=mask)  # additive: one position term
    heat = add.tokens + add.positions.abs()
    _close(add.combined(), heat / heat.abs().amax(-1, keepdim=True), SAME_FUNCTION_F64, 1.0)


def test_contrast_is_relevance_of_the_logit_difference(padded_ids):
    model, (ids, mask) = tiny(task="causal", position="learned"), padded_ids
    a = explain(model, ids, "gi", attention_mask=mask, target=3)
    b = explain(model, ids, "gi", attention_mask=mask, target=7)
    c = a.contrast(b)
    emb = model.tok_emb(ids).detach().requires_grad_()
    pos = (mask.cumsum(1) - 1).clamp(min=0)
    h = emb + model.pos_emb(pos)
    logits = model.head(model.norm_f(_blocks(model, h, mask)))
    last = mask.sum(1) - 1
    z = logits[torch.arange(len(ids)), last]
    grad, = torch.autograd.grad((z[:, 3] - z[:, 7]).sum(), emb)
    _close(c.tokens, (emb * grad).sum(-1) * mask, SAME_FUNCTION_F64)
    _close(c.logit, (z[:, 3] - z[:, 7]).detach(), SAME_FUNCTION_F64)
    assert torch.equal(c.target, a.target) and torch.equal(c.extras["contrast_target"], b.target)
    cons = Explanation.contrast(*(explain(tiny(bias=False, task="causal"), ids, "pa-cp-lrp", attention_mask=mask, target=t)
                      for t in (3, 7)))
    _close(cons.total, cons.logit, IDENTITY_RULE_REL)  # conservation carries over to the difference


def _blocks(model, h, mask):
    m = model.make_mask(mask)
    for block in model.blocks:
        h = block(h, m)
    return h
