"""loo(): equals a brute-force loop and captum's FeatureAblation; NaN where it must be."""
from __future__ import annotations

import pytest
import torch
from captum.attr import FeatureAblation
from conftest import HF_KINDS, hf_model, tiny
from tolerances import SAME_FUNCTION_F64

from lrp_utils import loo, loo_by_layer
from lrp_utils.adapters import get_adapter
from lrp_utils.masks import dense_keep
from lrp_utils.loo import logits_without, removable

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
