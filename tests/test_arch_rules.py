"""The rules of each architecture's own operations (``PAPERS.md`` terms), over the test zoo.

* every norm and nonlinearity module of every model is labelled for a rule by its adapter;
* CP-LRP conserves at every layer on the bias-free variant (zeroed biases) of every architecture,
  and PA-CP-LRP closes with the additive positions and token types;
* every method (incl. the ablations) explains every architecture;
* soft-capping ``c * tanh(x / c)`` takes the identity rule (and Gemma 2's attention receives it);
* partial rotary: PA-LRP's uniform rotation rule acts on the rotated share only, and each layer's
  position relevance is exactly half the relevance reaching that share of q and k;
* sliding windows reproduce Hugging Face's mask function; latent units are exposed.
"""
from __future__ import annotations

import pytest
import torch
import transformers
from archs import ARCHS, VISION_ARCHS, arch_model
from tolerances import EXACT_REL, HF_LLAMA_F32_NORM_REL, IDENTITY_RULE_REL, SAME_FUNCTION_F64

from lrp_utils import METHODS, explain, loo_by_layer, masks, ops
from lrp_utils.adapters import get_adapter

KINDS = list(ARCHS)
NEW_KINDS = [k for k in KINDS if k not in ("bert", "gpt2", "gpt2-cls", "llama", "llama-cls")]  # added in issue 20
ACTIVATIONS = (torch.nn.GELU, torch.nn.ReLU, torch.nn.Tanh, torch.nn.SiLU, torch.nn.Sigmoid)


def _close(a, b, rel, scale=None):
    scale = max(1.0, float(b.detach().abs().max())) if scale is None else scale
    assert float((a - b).abs().max()) <= rel * scale, f"max diff {float((a - b).abs().max()):.3e}"


def _ids(n=2, S=9, seed=0):
    return torch.randint(1, 50, (n, S), generator=torch.Generator().manual_seed(seed))


def _conservation_tol(model) -> float:
    """HF RMSNorms compute in float32 inside a float64 model (PAPERS.md); LayerNorm models are
    float64 throughout, up to the identity rule's 1e-10 stabiliser."""
    f32 = any(type(m).__name__.endswith("RMSNorm") for m in model.modules())
    return HF_LLAMA_F32_NORM_REL if f32 else IDENTITY_RULE_REL


@pytest.mark.parametrize("kind", [*KINDS, *VISION_ARCHS])
def test_every_norm_and_activation_module_is_labelled(kind):
    model = arch_model(kind)
    a = get_adapter(model)
    labelled = {id(m) for m in [*a.norm_modules(), *a.activation_modules(), *(g for g, _ in a.gate_modules())]}
    for name, m in model.named_modules():
        rule = isinstance(m, (torch.nn.LayerNorm, *ACTIVATIONS)) or type(m).__name__.endswith("RMSNorm") \
            or type(m).__module__ == "transformers.activations"
        assert not rule or id(m) in labelled, f"{kind}: {name} ({type(m).__name__}) gets no rule"


@pytest.mark.parametrize("kind", KINDS)
def test_cp_lrp_conserves_every_layer_bias_free(kind):
    model = arch_model(kind, bias=False)
    exp = explain(model, _ids(), "cp-lrp")
    tol = _conservation_tol(model)
    for layer_sum in exp.layer_sums():
        _close(layer_sum, exp.logit, tol)
    pa = explain(model, _ids(), "pa-cp-lrp")  # + additive positions and token types (RoPE: 0)
    _close(pa.total, pa.logit, tol)


@pytest.mark.parametrize("kind", KINDS)
def test_every_method_explains(kind):
    model, ids = arch_model(kind), _ids(1, 7)
    L = get_adapter(model).n_layers
    for method in sorted(METHODS):
        exp = explain(model, ids, method)
        assert exp.tokens.shape == (1, 7) and len(exp.layers) == L + 1
        assert torch.isfinite(exp.tokens).all() and all(torch.isfinite(r).all() for r in exp.layers)


@pytest.mark.parametrize("kind", NEW_KINDS)
def test_loo_by_layer_every_layer(kind):
    """``[L + 1, B, S]``; after the last block nothing reads the removed position any more, so LOO
    at layer L is 0 up to rounding (a read-out of one position); at the input it is not."""
    model, ids = arch_model(kind), _ids(1, 6)
    L = get_adapter(model).n_layers
    scores = loo_by_layer(model, ids)
    keep = ~scores[0].isnan()
    assert scores.shape == (L + 1, 1, 6) and torch.equal(scores.isnan(), keep.logical_not().expand_as(scores))
    assert float(scores[L][keep].abs().max()) <= SAME_FUNCTION_F64 and float(scores[0][keep].abs().max()) > 1e-6


# -- soft-capping ---------------------------------------------------------------------------------
def test_softcap_takes_the_identity_rule():
    """With k constant, ``sum(q * grad_q)`` is the relevance of the uncapped scores: under AttnLRP
    / CP-LRP it equals the relevance of the capped scores (identity rule), under gi it does not."""
    g = torch.Generator().manual_seed(0)
    q = torch.randn(1, 2, 5, 4, generator=g, dtype=torch.float64).requires_grad_()
    k = 3 * torch.randn(1, 2, 5, 4, generator=g, dtype=torch.float64)
    seed = torch.randn(1, 2, 5, 5, generator=g, dtype=torch.float64)
    for name, conserves in [("attnlrp", True), ("cp-lrp", True), ("gi", False)]:
        with ops.session(METHODS[name]):
            capped = ops.attention_scores(q, k, None, 0.5, 1, softcap=2.0)
        (gq,) = torch.autograd.grad(capped, q, seed)
        gap = float(((q * gq).sum() - (capped * seed).sum()).abs())
        assert (gap <= IDENTITY_RULE_REL * float((capped * seed).abs().sum())) == conserves, (name, gap)


@pytest.mark.parametrize("method", ["gi", "cp-lrp", "attnlrp", "pa-lrp"])
@pytest.mark.parametrize("softcap, rotary_dims", [(None, 2), (2.0, None), (2.0, 2)])
def test_attention_paths_agree(method, softcap, rotary_dims):
    """The attention function (rules as gradient scales on q, k, v; soft-capped: unfused) equals
    its explicit replica (each rule at its own product), partial rotary share included."""
    g = torch.Generator().manual_seed(1)
    q, k, v = (torch.randn(2, 4, 5, 4, generator=g, dtype=torch.float64).requires_grad_() for _ in range(3))
    mask = masks.dense_keep(torch.ones(2, 5), causal=True)
    seed = torch.randn(2, 4, 5, 4, generator=g, dtype=torch.float64)
    grads = []
    for fn in (ops.softmax_attention, ops.explicit_softmax_attention):
        with ops.session(METHODS[method], rotary_positions=METHODS[method].positions, rotary_dims=rotary_dims):
            out, _ = fn(q, k, v, mask, 0.5, 1, softcap=softcap)
        grads.append(torch.autograd.grad(out, (q, k, v), seed, allow_unused=True))
    constant = {0, 1} if method == "cp-lrp" else set()  # CP-LRP: q and k are constants
    for i, (a, b) in enumerate(zip(*grads)):
        assert (a is None) == (b is None) == (i in constant)
        if a is not None:
            _close(a, b, SAME_FUNCTION_F64)


def test_gemma2_attention_receives_its_softcap():
    model = arch_model("gemma2")
    caps = []
    with ops.session(on_attention=lambda call: caps.append(call.softcap)):
        explain(model, _ids(1), "attnlrp")
    assert caps == [model.config.attn_logit_softcapping] * 2


# -- partial rotary --------------------------------------------------------------------------------
def _qk_relevance(model, ids, method):
    """``(explanation, per layer [(q, grad q), (k, grad k)])`` at the attention function's input."""
    calls = []

    def record(call):
        rec = {"q": call.q, "k": call.k}
        call.q.register_hook(lambda g, r=rec: r.__setitem__("gq", g))
        call.k.register_hook(lambda g, r=rec: r.__setitem__("gk", g))
        calls.append(rec)

    with ops.session(on_attention=record):
        exp = explain(model, ids, method)
    return exp, calls


@pytest.mark.parametrize("kind", ["phi3", "gpt_neox", "qwen3", "gemma3"])
def test_rope_position_relevance_is_half_the_rotated_share(kind):
    """Per layer: R_pos = sum over the rotated share of (q * g_q + k * g_k), where g is the modified
    gradient after the rotation's uniform rule (so the other half went to the tokens' side)."""
    model, ids = arch_model(kind), _ids(2)
    r = get_adapter(model).rotary_dims
    exp, calls = _qk_relevance(model, ids, "pa-lrp")
    assert len(exp.positions_by_layer) == len(calls) == get_adapter(model).n_layers
    for pos, c in zip(exp.positions_by_layer, calls):
        share = sum((c[t] * c["g" + t])[..., :r].sum((1, 3)) for t in ("q", "k"))  # [B, S]
        _close(pos, share, SAME_FUNCTION_F64, float(pos.abs().max()))
        assert float(pos.abs().max()) > 1e-3


@pytest.mark.parametrize("kind", ["phi3", "gpt_neox"])
def test_partial_rotary_halves_only_the_rotated_share(kind):
    """Last layer (the gradient reaching its attention is the same under both methods): PA-LRP's
    gradient at q, k is AttnLRP's times 1/2 on the rotated features and times 1 on the rest."""
    model, ids = arch_model(kind), _ids(2)
    r = get_adapter(model).rotary_dims
    assert r is not None and 0 < r < model.config.hidden_size // model.config.num_attention_heads
    _, pa = _qk_relevance(model, ids, "pa-lrp")
    _, at = _qk_relevance(model, ids, "attnlrp")
    for t in ("gq", "gk"):
        p, a = pa[-1][t], at[-1][t]
        _close(p[..., :r], 0.5 * a[..., :r], EXACT_REL, float(a.abs().max()))
        _close(p[..., r:], a[..., r:], EXACT_REL, float(a.abs().max()))
        assert float(a[..., r:].abs().max()) > 1e-6


# -- masks and latents ----------------------------------------------------------------------------
@pytest.mark.parametrize("window", [1, 3, 8])
def test_sliding_window_is_hf_mask_function(window):
    S = 8
    hf = transformers.masking_utils.sliding_window_causal_mask_function(window)
    t = torch.tensor
    want = torch.tensor([[bool(hf(t(0), t(0), t(i), t(j))) for j in range(S)] for i in range(S)])
    ours = masks.sliding_window(S, window) & masks.dense_keep(torch.ones(1, S), causal=True)[0, 0]
    assert torch.equal(ours, want)


@pytest.mark.parametrize("kind", [*NEW_KINDS, *VISION_ARCHS])
def test_latent_modules(kind):
    """Per block the attention output projection (input ``n_heads * head_dim`` wide) and the MLP
    output projection, both inside that block."""
    a = get_adapter(arch_model(kind))
    latents = a.latent_modules()
    assert len(latents) == a.n_layers
    for i, (attn_out, mlp_out) in enumerate(latents):
        assert a.block_index(attn_out) == i and a.block_index(mlp_out) == i
        assert attn_out.in_features % a.n_heads == 0 and isinstance(mlp_out, torch.nn.Linear)
