"""The fused attention path of ``ops.softmax_attention`` against the written-out rules."""
from __future__ import annotations

import pytest
import torch

from lrp_utils import ops, rules
from lrp_utils.methods import METHODS
from lrp_utils.reference.rules import layer_norm_const, rms_norm_const

from tolerances import SAME_FUNCTION_F64


def _qkv(n_rep):
    g = torch.Generator().manual_seed(3)
    q = torch.randn(2, 2 * n_rep, 5, 4, generator=g, dtype=torch.float64)
    k, v = (torch.randn(2, 2, 5, 4, generator=g, dtype=torch.float64) for _ in range(2))
    return q, k, v


def _masks():
    keep = torch.ones(2, 1, 5, 5, dtype=torch.bool).tril()
    keep[1, :, :, 0] = False  # key 0 unreadable in example 1
    keep[1, :, 0, :] = False  # query 0 of example 1 reads nothing at all (padding query)
    return {"none": None, "bool": keep,
            "additive": torch.zeros(keep.shape, dtype=torch.float64).masked_fill(~keep, torch.finfo(torch.float64).min)}


@pytest.mark.parametrize("method", sorted(METHODS))
@pytest.mark.parametrize("mask_kind", ["none", "bool", "additive"])
@pytest.mark.parametrize("n_rep", [1, 3])
@pytest.mark.parametrize("rotary", [False, True])
def test_fused_attention_equals_explicit_rules(method, mask_kind, n_rep, rotary):
    """Same output and the same modified gradient into q, k, v for every method's rule map."""
    q, k, v = (t.requires_grad_() for t in _qkv(n_rep))
    mask = _masks()[mask_kind]
    seed = torch.randn(2, 2 * n_rep, 5, 4, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    # Query 0 of example 1 may read nothing (a padding query): both paths give it the same uniform
    # average, but the gradient *through* such a row is an artefact of finfo.min rounding and
    # differs between kernels.  In a model nothing reads a padding query's output, so its incoming
    # gradient is 0; the seed says the same.
    seed[1, :, 0] = 0
    results = []
    for fn in (ops.softmax_attention, ops.explicit_softmax_attention):
        with ops.session(METHODS[method], rotary_positions=rotary):
            out, _ = fn(q, k, v, mask, 0.7, n_rep)
        grads = torch.autograd.grad((out * seed).sum(), (q, k, v), allow_unused=True)
        results.append([out.detach(), *[g if g is not None else torch.zeros_like(x) for g, x in zip(grads, (q, k, v))]])
    assert torch.isfinite(results[0][0]).all()
    for fused, explicit in zip(*results):
        scale = max(float(explicit.abs().max()), 1.0)
        assert float((fused - explicit).abs().max()) <= SAME_FUNCTION_F64 * scale


def test_on_attention_sees_each_call_with_its_probabilities():
    """The session callback gets q, k, v and the output of every call; its probabilities are the
    explicit path's row-stochastic softmax; nested sessions inherit the callback."""
    q, k, v = _qkv(1)
    calls = []
    with ops.session(METHODS["gi"], on_attention=calls.append):
        out, _ = ops.softmax_attention(q, k, v)
        with ops.session(METHODS["attnlrp"]):
            ops.softmax_attention(q, k, v)
    ops.softmax_attention(q, k, v)  # outside: no callback
    assert len(calls) == 2 and calls[0].out is out and calls[1].method.name == "attnlrp"
    probs = calls[0].probs()
    _, explicit = ops.explicit_softmax_attention(q, k, v)
    assert float((probs.sum(-1) - 1).abs().max()) <= SAME_FUNCTION_F64
    assert float((probs - explicit).abs().max()) <= SAME_FUNCTION_F64


@pytest.mark.parametrize("kind", ["layernorm", "rmsnorm"])
@pytest.mark.parametrize("affine", [True, False])
def test_fused_norm_rule_equals_the_detached_denominator(kind, affine):
    """``norm_rule_on`` keeps the module's output bits and has the gradient of the norm written
    out with its std / rms detached (the reference formulas ``layer_norm_const`` / ``rms_norm_const``)."""
    g = torch.Generator().manual_seed(5)
    x = (3 * torch.randn(2, 5, 8, generator=g, dtype=torch.float64) + 1).requires_grad_()
    w = 1 + torch.randn(8, generator=g, dtype=torch.float64) if affine else None
    seed = torch.randn(2, 5, 8, generator=g, dtype=torch.float64)
    module = torch.nn.LayerNorm(8, dtype=torch.float64) if kind == "layernorm" else torch.nn.RMSNorm(8, eps=1e-6, dtype=torch.float64)
    if affine:
        module.weight.data.copy_(w)
    else:
        module.weight = None
    out = module(x)
    fused = rules.norm_rule_on(x, out, w, module.eps, center=kind == "layernorm")
    assert torch.equal(fused, out)
    written = layer_norm_const(x, w, None, module.eps) if kind == "layernorm" else rms_norm_const(x, w, module.eps)
    g_fused, g_written = (torch.autograd.grad((y * seed).sum(), x)[0] for y in (fused, written))
    assert float((g_fused - g_written).abs().max()) <= SAME_FUNCTION_F64 * float(g_written.abs().max())


def test_fused_norm_rule_half_precision_is_finite():
    x = torch.randn(2, 5, 8, dtype=torch.bfloat16).requires_grad_()
    out = torch.nn.functional.rms_norm(x, (8,), eps=1e-6)
    g = torch.autograd.grad(rules.norm_rule_on(x, out, None, 1e-6, center=False).sum(), x)[0]
    assert g.dtype == torch.bfloat16 and torch.isfinite(g).all()
