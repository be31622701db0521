"""loo(): equals a brute-force loop and captum's FeatureAblation; NaN where it must be; the reuse
path (causal prefix reuse, read-out-only last block) equals the plain path on every architecture."""
from __future__ import annotations

import pytest
import torch
from captum.attr import FeatureAblation
from archs import same_function_tol
from conftest import HF_KINDS, REGISTERED_MODELS, VISION_CLASSES, hf_model, tiny
from tolerances import SAME_FUNCTION_F64

from lrp_utils import loo, loo_by_layer, ops
from lrp_utils.adapters import _REGISTRY, get_adapter
from lrp_utils.masks import dense_keep
from lrp_utils.loo import REMOVALS, logits_without, removable
from lrp_utils.methods import METHODS
from lrp_utils.reuse import base_pass, plan_chunks, usable

MODELS = HF_KINDS + ["tiny-mean", "tiny-linear-q(kv)", "tiny-causal-rotary"]


def make(kind):
    if kind == "tiny-mean":
        return tiny(readout="mean")
    if kind == "tiny-linear-q(kv)":
        return tiny(attention="linear", order="q(kv)", feature_map="elu1", normalize=True)
    if kind == "tiny-causal-rotary":
        return tiny(task="causal", position="rotary", n_kv_heads=2)
    return hf_model(kind)


def brute_force(model, ids, mask, layer, removal):
    """Re-run the WHOLE model once per removed position, with an explicit full mask."""
    ad = get_adapter(model)
    with torch.no_grad():
        ctx = ad.prepare(ids, mask)
        parts = ad.embed_parts(ids, ctx)
        h0 = ad.combine(parts)
        ctx.rope = ad.rope_tables(h0, ctx)
        full = ad.forward(ids, mask)
        target = full.argmax(-1)
        out = torch.full(ids.shape, float("nan"), dtype=torch.float64)
        ok = removable(ad, mask)
        for b in range(ids.shape[0]):
            for i in range(ids.shape[1]):
                if not ok[b, i]:
                    continue
                c = ctx.select(torch.tensor([b]))
                h = h0[b:b + 1]
                removed = torch.zeros(1, ids.shape[1], dtype=torch.bool)
                removed[0, i] = True
                for j in range(ad.n_layers):
                    if j == layer and removal == "zero":
                        h = h.clone()
                        h[0, i] = 0
                    keep = None
                    if j >= layer and removal == "mask":
                        keep = torch.ones(1, 1, ids.shape[1], ids.shape[1], dtype=torch.bool)
                        keep[..., i] = False
                        keep[0, 0, i, i] = True
                    h = ad.block(j, h, c, keep=keep)
                if layer == ad.n_layers and removal == "zero":
                    h = h.clone()
                    h[0, i] = 0
                logit = ad.readout(h, c, removed=removed if removal == "mask" else None)[0, target[b]]
                out[b, i] = full[b, target[b]] - logit
    return out


@pytest.mark.parametrize("removal", ["mask", "zero"])
@pytest.mark.parametrize("kind", MODELS)
def test_loo_equals_brute_force(kind, removal, padded_ids):
    model, (ids, mask) = make(kind), padded_ids
    ours = loo_by_layer(model, ids, attention_mask=mask, removal=removal, batch_size=5)
    for layer in range(ours.shape[0]):
        ref = brute_force(model, ids, mask, layer, removal)
        assert torch.equal(ours[layer].isnan(), ref.isnan())
        torch.testing.assert_close(ours[layer], ref, rtol=0, atol=SAME_FUNCTION_F64, equal_nan=True)


def test_single_layer_matches_by_layer(padded_ids):
    model, (ids, mask) = hf_model("gpt2"), padded_ids
    torch.testing.assert_close(loo(model, ids, layer=1, attention_mask=mask),
                               loo_by_layer(model, ids, attention_mask=mask)[1], equal_nan=True)


def test_nan_positions_and_layer0_removes_token_everywhere(padded_ids):
    ids, mask = padded_ids
    bert, llama = hf_model("bert"), hf_model("llama")
    s = loo(bert, ids, attention_mask=mask)
    assert s[:, 0].isnan().all() and s[1, 6:].isnan().all() and not s[0, 1:].isnan().any()
    s = loo(llama, ids, attention_mask=mask)
    assert s[0, -1].isnan() and s[1, 5:].isnan().all() and not s[1, :5].isnan().any()
    # masking a token at layer 0 == dropping it from the sequence (BERT: positions of later tokens
    # shift, so use a causal model and remove a token whose successors are all removed too)
    full = get_adapter(llama).forward(ids[:1], mask[:1])
    t = full.argmax(-1)
    removed = torch.zeros_like(ids[:1], dtype=torch.bool)
    removed[0, 3] = True
    masked = logits_without(llama, ids[:1], removed)
    assert masked.shape == full.shape
    assert not torch.allclose(masked[0, t], full[0, t])


@pytest.mark.parametrize("removal", ["mask", "zero"])
def test_layer0_equals_captum_feature_ablation(removal):
    """captum's FeatureAblation with the same removal operator as a per-position feature."""
    model = hf_model("llama")
    ids = torch.randint(0, 60, (2, 7))
    mask = torch.ones_like(ids)
    ad = get_adapter(model)

    def forward(h0_or_keep):
        ctx = ad.prepare(ids.expand(len(h0_or_keep), -1), mask.expand(len(h0_or_keep), -1))
        h = h0 if removal == "mask" else h0_or_keep
        h = h.expand(len(h0_or_keep), -1, -1)
        ctx.rope = ad.rope_tables(h, ctx)
        keep = None
        if removal == "mask":  # feature = "position i may be read by others" (1 kept, 0 removed)
            gone = h0_or_keep < 0.5
            eye = torch.eye(ids.shape[1], dtype=torch.bool)
            keep = (~gone[:, None, None, :]) | eye
        for j in range(ad.n_layers):
            h = ad.block(j, h, ctx, keep=keep)
        return ad.readout(h, ctx)

    with torch.no_grad():
        ctx = ad.prepare(ids, mask)
        h0 = ad.combine(ad.embed_parts(ids, ctx))
        target = ad.forward(ids, mask).argmax(-1)
        ours = loo(model, ids, removal=removal)
        for b in range(2):
            if removal == "mask":
                h0b = h0[b:b + 1]
                h0 = h0b
                inp, base = torch.ones(1, ids.shape[1], dtype=torch.float64), 0.0
                feature_mask = torch.arange(ids.shape[1])[None]
            else:
                inp, base = h0[b:b + 1], 0.0
                feature_mask = torch.arange(ids.shape[1])[None, :, None].expand_as(inp)
            ids_b = ids
            ids, mask_b = ids_b[b:b + 1], mask[b:b + 1]
            mask, mask_save = mask_b, mask
            attr = FeatureAblation(forward).attribute(inp, baselines=base, target=int(target[b]),
                                                      feature_mask=feature_mask)
            ids, mask = ids_b, mask_save
            if removal == "mask":
                h0 = ad.combine(ad.embed_parts(ids, ad.prepare(ids, mask)))
            ref = attr[0] if removal == "mask" else attr[0, :, 0]
            torch.testing.assert_close(ours[b, :-1], ref[:-1], rtol=0, atol=1e-10)


def test_bad_arguments():
    model = tiny()
    ids = torch.randint(0, 50, (1, 5))
    with pytest.raises(ValueError, match="removal"):
        loo(model, ids, removal="drop")
    with pytest.raises(ValueError, match="layer must be an integer in"):
        loo(model, ids, layer=3)


def test_dense_keep_shapes():
    m = torch.tensor([[1, 1, 0]])
    k = dense_keep(m, causal=True)
    assert k.shape == (1, 1, 3, 3) and k[0, 0].tolist() == [[True, False, False], [True, True, False], [True, True, False]]


# -- the reuse path (lrp_utils.reuse) -----------------------------------------------------------
#: TinyTransformer variants; the last three take the plain path (mean read-out, linear attention)
TINY = {"tiny-causal-learned": dict(task="causal"),
        "tiny-causal-rotary-gqa": dict(task="causal", position="rotary", n_kv_heads=2, norm="rmsnorm", mlp="swiglu"),
        "tiny-cls": dict(),
        "tiny-mean": dict(readout="mean"),
        "tiny-linear-(qk)v": dict(task="causal", attention="linear"),
        "tiny-linear-q(kv)": dict(task="causal", attention="linear", order="q(kv)", feature_map="elu1",
                                  normalize=True)}
PLAIN_ONLY = ("tiny-mean", "tiny-linear-(qk)v", "tiny-linear-q(kv)")
REUSE_KINDS = list(REGISTERED_MODELS) + list(TINY)


def build(kind):
    return tiny(**TINY[kind]) if kind in TINY else REGISTERED_MODELS[kind]()


def test_every_registered_architecture_is_tested():
    assert set(_REGISTRY) - VISION_CLASSES <= set(REGISTERED_MODELS), "add a small model to tests/archs.py"


@pytest.mark.parametrize("side", ["right", "left"])
@pytest.mark.parametrize("removal", REMOVALS)
@pytest.mark.parametrize("kind", REUSE_KINDS)
def test_reuse_equals_plain_path_and_brute_force(kind, removal, side, padded_ids, left_padded_ids):
    model = build(kind)
    ids, mask = padded_ids if side == "right" else left_padded_ids
    fast = loo_by_layer(model, ids, attention_mask=mask, removal=removal, batch_size=5)
    plain = loo_by_layer(model, ids, attention_mask=mask, removal=removal, batch_size=5, reuse=False)
    assert torch.equal(fast.isnan(), ~removable(get_adapter(model), mask).expand_as(fast))
    torch.testing.assert_close(fast, plain, rtol=0, atol=SAME_FUNCTION_F64, equal_nan=True)
    # Gemma 2's brute force differs from the batched path at float32 level (its tolerance in archs,
    # relative to the size of the LOO deltas)
    scale = float(fast.nan_to_num().abs().max().clamp(min=1.0))
    atol = same_function_tol("gemma2") * scale if kind == "Gemma2ForCausalLM" else SAME_FUNCTION_F64
    for layer in range(fast.shape[0]):
        ref = brute_force(model, ids, mask, layer, removal)
        torch.testing.assert_close(fast[layer], ref, rtol=0, atol=atol, equal_nan=True)


def query_positions(model, **kwargs) -> int:
    """Query positions that went through softmax attention, summed over calls, in one
    loo_by_layer call (a pass stopped before attending does not count)."""
    seen = []
    with ops.session(on_attention=lambda call: seen.append(call.q.shape[0] * call.q.shape[2])):
        loo_by_layer(model, **kwargs)
    return sum(seen)


@pytest.mark.parametrize("kind", REUSE_KINDS)
def test_reuse_runs_fewer_positions_where_it_applies(kind):
    """The reuse path is taken (and saves work) exactly where the architecture allows it."""
    model, ids = build(kind), torch.randint(1, 50, (2, 16))
    ad = get_adapter(model)
    with ad.session(METHODS["gi"]), torch.no_grad():
        _, h, ctx = ad.start(ids, torch.ones_like(ids))
        assert usable(ad, base_pass(ad, h, ctx)[1]) == (kind not in PLAIN_ONLY)
    if kind in PLAIN_ONLY:
        return
    fast, plain = (query_positions(model, input_ids=ids, reuse=r) for r in (True, False))
    # 2 blocks, 16 tokens: decoders ~0.3 of the plain path's queries, encoders ~0.4 (last block)
    assert fast < (0.4 if ad.causal else 0.5) * plain, (fast, plain)


@pytest.mark.parametrize("kind", ["LlamaForCausalLM", "tiny-causal-rotary-gqa", "BertForSequenceClassification"])
def test_reuse_layer_subsets_and_batch_sizes(kind, padded_ids):
    """Any list of layers (unsorted, repeated) and any batch size give the plain path's numbers."""
    model, (ids, mask) = build(kind), padded_ids
    layers = [2, 0, 2, 1]
    plain = loo_by_layer(model, ids, layers, attention_mask=mask, reuse=False)
    for batch_size in (1, 3, 64):
        fast = loo_by_layer(model, ids, layers, attention_mask=mask, batch_size=batch_size)
        torch.testing.assert_close(fast, plain, rtol=0, atol=SAME_FUNCTION_F64, equal_nan=True)
    torch.testing.assert_close(loo(model, ids, layer=1, attention_mask=mask), plain[3], rtol=0,
                               atol=SAME_FUNCTION_F64, equal_nan=True)


def test_plan_chunks_cover_every_row_once():
    start = torch.randint(0, 30, (200,))
    end = start + torch.randint(1, 20, (200,))
    chunks = plan_chunks(start, end, 7)
    assert sorted(torch.cat(chunks).tolist()) == list(range(200))
    assert max(len(c) for c in chunks) <= 7


def test_query_subsets_mask_and_context():
    """A pass over some positions sees the rows of the full mask and the gathered positions."""
    mask = torch.tensor([[0, 1, 1, 1, 1], [1, 1, 1, 0, 0]])
    queries = torch.tensor([[4, 2], [1, 3]])
    full = dense_keep(mask, causal=True)
    sub = dense_keep(mask, causal=True, queries=queries)
    assert torch.equal(sub, torch.stack([full[b, :, queries[b]] for b in range(2)]))
    ad = get_adapter(tiny(task="causal", position="rotary"))
    ctx = ad.prepare(torch.ones_like(mask), mask)
    ctx.rope = ad.rope_tables(torch.zeros(2, 5, 16, dtype=torch.float64), ctx)
    at = ctx.at(torch.tensor([1, 0]), queries, 4)
    assert torch.equal(at.position_ids, torch.tensor([[2, 2], [0, 2]])) and at.attention_mask.shape == (2, 4)
    assert torch.equal(at.rope[0][0, 1], ctx.rope[0][1, 2]) and torch.equal(at.rope[1][1, 0], ctx.rope[1][0, 1])


def test_key_values_hook_is_scoped():
    """ops.key_values replaces keys and values only inside its block."""
    q = torch.randn(1, 2, 3, 4, dtype=torch.float64)
    k, v = torch.randn_like(q), torch.randn_like(q)
    with ops.key_values(lambda module, k_, v_: (k_, torch.zeros_like(v_))):
        assert ops.softmax_attention(q, k, v)[0].abs().max() == 0
    assert ops.softmax_attention(q, k, v)[0].abs().max() > 0
