"""Latent units (heads and MLP neurons): ``explain(..., latents=...)`` on every architecture of the
test zoo and on TinyTransformer variants, against plain autograd on the unmodified model (``gi``)
and against the relevance of the block's updates (CP-LRP, AttnLRP); padding, checkpointing,
assembling; and the reversible ablations of :mod:`lrp_utils.latents`."""
from __future__ import annotations

import copy

import pytest
import torch
from archs import ARCHS, arch_model, same_function_tol, tiny
from tolerances import SAME_FUNCTION_F64

from lrp_utils import Explanation, explain, latents
from lrp_utils.adapters import get_adapter

TINY = {
    "tiny": {},
    "tiny-causal-rope-gqa-swiglu": dict(task="causal", position="rotary", n_kv_heads=2, mlp="swiglu", norm="rmsnorm"),
    "tiny-linear-no-mlp": dict(attention="linear", mlp="none", readout="mean"),
}
MODELS = [*ARCHS, *TINY]


def _model(name):
    return tiny(**TINY[name]) if name in TINY else arch_model(name)


def _batch(side="right", lengths=(8, 5, 3), seed=0):
    g = torch.Generator().manual_seed(seed)
    S = max(lengths)
    ids, mask = torch.zeros(len(lengths), S, dtype=torch.long), torch.zeros(len(lengths), S, dtype=torch.long)
    for b, n in enumerate(lengths):
        cols = slice(0, n) if side == "right" else slice(S - n, S)
        ids[b, cols], mask[b, cols] = torch.randint(1, 40, (n,), generator=g), 1
    return ids, mask


def _close(a, b, scale, rel=SAME_FUNCTION_F64):
    assert float((a - b).abs().max()) <= rel * max(1.0, scale), f"max diff {float((a - b).abs().max()):.3e}"


def _readout(out):
    """The model's own output at its read-out position (unpadded inputs): ``[B, n_out]``."""
    out = out.logits if hasattr(out, "logits") else out
    return out[:, -1] if out.dim() == 3 else out


def _plain_latent_relevance(model, ids):
    """Activation x plain gradient at the inputs of the latent modules, by forward pre-hooks on the
    *unmodified* model and its own forward: per block ``(heads [B, S, H], neurons [B, S, F] | None)``."""
    adapter = get_adapter(model)
    seen, handles = {}, []
    for pair in adapter.latent_modules():
        for mod in pair:
            if mod is not None:
                handles.append(mod.register_forward_pre_hook(lambda m, a: seen.setdefault(m, a[0])))
    try:
        out = _readout(model(ids))
    finally:
        for h in handles:
            h.remove()
    logit = out.gather(1, out.argmax(-1, keepdim=True)).sum()
    mods = [m for pair in adapter.latent_modules() for m in pair if m is not None]
    grads = dict(zip(mods, torch.autograd.grad(logit, [seen[m] for m in mods])))
    B, S = ids.shape

    def rel(m, units):
        return None if m is None else (seen[m] * grads[m]).detach().view(B, S, units, -1).sum(-1)

    return [(rel(a, adapter.n_heads), rel(f, seen[f].shape[-1] if f is not None else 0))
            for a, f in adapter.latent_modules()]


@pytest.mark.parametrize("name", MODELS)
def test_gi_latents_equal_activation_times_plain_gradient(name):
    model = _model(name)
    ids, _ = _batch(lengths=(7, 7))
    exp = explain(model, ids, "gi", latents="positions")
    plain = _plain_latent_relevance(model, ids)
    scale, rel = float(exp.logit.abs().max()), SAME_FUNCTION_F64 if name in TINY else same_function_tol(name)
    assert len(exp.heads) == len(plain) == get_adapter(model).n_layers
    for layer, (heads, neurons) in enumerate(plain):
        _close(exp.heads_by_position[layer], heads, scale, rel)
        _close(exp.heads[layer], heads.sum(1), scale, rel)
        if neurons is None:
            assert exp.neurons is None
        else:
            _close(exp.neurons_by_position[layer], neurons, scale, rel)
            _close(exp.neurons[layer], neurons.sum(1), scale, rel)


def _bias_free(model):
    """The model with every linear / Conv1D bias set to zero (norm biases do not matter here)."""
    with torch.no_grad():
        for mod in model.modules():
            if type(mod).__name__ in ("Linear", "Conv1D") and getattr(mod, "bias", None) is not None:
                mod.bias.zero_()
    return model


@pytest.mark.parametrize("method", ["cp-lrp", "attnlrp"])
@pytest.mark.parametrize("name", MODELS)
def test_units_sum_to_the_relevance_of_the_block_updates(name, method):
    """Bias-free: sum over heads = relevance of the attention update (output of the output
    projection, ``update * modified gradient``), sum over neurons = that of the MLP update."""
    model = _bias_free(_model(name))
    adapter = get_adapter(model)
    update_rel, handles = {}, []

    def watch(mod, args, out):  # the update's relevance, read in explain's own backward pass
        out.register_hook(lambda g: update_rel.__setitem__(mod, (out * g * mask[..., None]).detach().sum((1, 2))))

    for pair in adapter.latent_modules():
        handles += [m.register_forward_hook(watch) for m in pair if m is not None]
    ids, mask = _batch("left")
    try:
        exp = explain(model, ids, method, attention_mask=mask, latents=True)
    finally:
        for h in handles:
            h.remove()
    scale = float(max(r.abs().max() for r in update_rel.values()))
    for layer, (attn, mlp) in enumerate(adapter.latent_modules()):
        _close(exp.heads[layer].sum(1), update_rel[attn], scale)
        if mlp is not None:
            _close(exp.neurons[layer].sum(1), update_rel[mlp], scale)


@pytest.mark.parametrize("side", ["right", "left"])
@pytest.mark.parametrize("name", MODELS)
def test_padded_latents_equal_single_examples(name, side):
    model, (ids, mask) = _model(name), _batch(side)
    batch = explain(model, ids, "attnlrp", attention_mask=mask, latents="positions")
    scale = float(batch.logit.abs().max())
    for b in range(len(ids)):
        keep = mask[b].bool()
        one = explain(model, ids[b][keep][None], "attnlrp", latents="positions")
        for field in ("heads", "neurons"):
            for x, y in zip(getattr(batch, field) or [], getattr(one, field) or []):
                _close(x[b], y[0], scale)
            for x, y in zip(getattr(batch, f"{field}_by_position") or [], getattr(one, f"{field}_by_position") or []):
                _close(x[b][keep], y[0], scale)
                assert (x[b][~keep] == 0).all()


@pytest.mark.parametrize("name", ["llama", "tiny-causal-rope-gqa-swiglu"])
def test_checkpointing_and_plain_explanations_agree(name):
    model, (ids, mask) = _model(name), _batch()
    a = explain(model, ids, "attnlrp", attention_mask=mask, latents="positions", checkpoint=True)
    b = explain(model, ids, "attnlrp", attention_mask=mask, latents="positions")
    c = explain(model, ids, "attnlrp", attention_mask=mask)
    for field in ("heads", "neurons", "heads_by_position", "neurons_by_position"):
        for x, y in zip(getattr(a, field), getattr(b, field)):
            _close(x, y, float(b.logit.abs().max()))
    assert torch.equal(b.tokens, c.tokens) and c.heads is None and c.neurons is None


def test_per_position_fields_only_on_request():
    model, (ids, mask) = _model("llama"), _batch()
    exp = explain(model, ids, "cp-lrp", attention_mask=mask, latents=True)
    assert exp.heads_by_position is None and exp.neurons_by_position is None
    assert [tuple(h.shape) for h in exp.heads] == [(3, 4)] * 2
    assert [tuple(n.shape) for n in exp.neurons] == [(3, 64)] * 2


def test_bad_latents_values_are_refused():
    model, (ids, _) = _model("tiny"), _batch()
    for bad in ("heads", 1, "pos"):
        with pytest.raises(ValueError, match="latents"):
            explain(model, ids, latents=bad)
    with pytest.raises(ValueError, match="latents"):
        explain(model, ids, "ig", latents=True)


def test_indexing_contrast_and_assemble_carry_the_latent_fields():
    model, (ids, mask) = _model("gpt2"), _batch()
    exp = explain(model, ids, "attnlrp", attention_mask=mask, latents="positions")
    sub = exp[[2, 0]]
    assert torch.equal(sub.heads[1], exp.heads[1][[2, 0]])
    assert torch.equal(sub.neurons_by_position[0], exp.neurons_by_position[0][[2, 0]])
    other = explain(model, ids, "attnlrp", target=3, attention_mask=mask, latents="positions")
    diff = exp.contrast(other)
    assert torch.equal(diff.neurons[1], exp.neurons[1] - other.neurons[1])
    rows = torch.tensor([2, 1])  # lengths 3 and 5: explained cropped to 5 columns
    crop = explain(model, ids[rows, :5], "attnlrp", attention_mask=mask[rows, :5], latents="positions")
    full = Explanation.assemble([(rows, slice(0, 5), crop), (torch.tensor([0]), slice(0, 8), exp[0])], (3, 8))
    for field in ("heads", "neurons", "heads_by_position", "neurons_by_position"):
        for x, y in zip(getattr(full, field), getattr(exp, field)):
            assert x.dtype == torch.float64 and x.shape == y.shape
            _close(x, y, float(exp.logit.abs().max()))


# -- ablation ---------------------------------------------------------------------------------------
def test_top_k_hand_case():
    s = torch.tensor([[0.1, 3.0, -1.0, 3.0], [5.0, 4.0, 3.0, 2.0]])
    assert latents.top_k(s, 2).tolist() == [[False, True, False, True], [True, True, False, False]]
    assert not latents.top_k(s, 0).any()


@pytest.mark.parametrize("name", ["bert", "gpt2-cls", "llama", "tiny-causal-rope-gqa-swiglu"])
def test_ablation_zeroes_exactly_the_chosen_units_and_is_reversible(name):
    model, (ids, mask) = _model(name), _batch()
    adapter = get_adapter(model)
    state = copy.deepcopy(model.state_dict())
    with torch.no_grad():
        base = adapter.forward(ids, mask)
    L, H = adapter.n_layers, adapter.n_heads
    none = torch.zeros(1, L * H, dtype=torch.bool)
    torch.testing.assert_close(latents.logits_with(model, ids, mask, "heads", none), base, rtol=0, atol=0)
    off = torch.zeros(len(ids), L * H, dtype=torch.bool)
    off[0, 1], off[2, H + 2] = True, True  # example 0: block 1 head 1; example 2: block 2 head 2
    got = latents.logits_with(model, ids, mask, "heads", off)
    attn = adapter.latent_modules()[1][0]  # reference: zero the slice by hand for example 2 only

    def hand(mod, args):
        x = args[0].clone()
        x[2, :, 2 * (x.shape[-1] // H):3 * (x.shape[-1] // H)] = 0
        return (x,)

    h = attn.register_forward_pre_hook(hand)
    try:
        with torch.no_grad():
            ref = adapter.forward(ids, mask)
    finally:
        h.remove()
    _close(got[2], ref[2], float(base.abs().max()))
    _close(got[1], base[1], float(base.abs().max()))
    assert float((got[0] - base[0]).abs().max()) > 0
    assert all(len(m._forward_pre_hooks) == 0 for pair in adapter.latent_modules() for m in pair if m is not None)
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())


def test_neuron_ablation_of_all_neurons_equals_a_model_without_mlp():
    model, (ids, mask) = _model("tiny"), _batch()
    adapter = get_adapter(model)
    F = adapter.latent_modules()[0][1].in_features
    with torch.no_grad():
        for b in model.blocks:
            b.mlp.down.bias.zero_()
    got = latents.logits_with(model, ids, mask, "neurons", torch.ones(1, 2 * F, dtype=torch.bool))
    ref = copy.deepcopy(model)
    for b in ref.blocks:
        b.mlp.down.weight.data.zero_()
    with torch.no_grad():
        _close(got, get_adapter(ref).forward(ids, mask), 1.0)


def test_ablation_curve_starts_at_zero_and_follows_the_scores():
    model, (ids, mask) = _model("llama-cls"), _batch()
    L, H = 2, 4
    scores = torch.arange(L * H, dtype=torch.float64).flip(0).expand(3, -1)  # unit 0 first, then 1, ...
    target = torch.tensor([0, 1, 2])
    drop = latents.ablation_curve(model, ids, mask, target, scores, [0, 1, 8], "heads")
    assert drop.shape == (3, 3) and torch.equal(drop[0], torch.zeros(3, dtype=drop.dtype))
    rows = torch.arange(3)
    base = latents.logits_with(model, ids, mask, "heads", torch.zeros(1, 8, dtype=torch.bool))[rows, target]
    first = latents.logits_with(model, ids, mask, "heads", latents.top_k(scores, 1))[rows, target]
    _close(drop[1], (base - first).double(), 1.0)


def test_rankings_and_faithfulness_table():
    model, (ids, mask) = _model("bert"), _batch()
    scores, target = latents.rankings(model, ids, mask, "neurons", methods=("attnlrp",), batch_size=2)
    assert set(scores) == {"attnlrp", "grad x act", "|activation|", "random"}
    assert all(s.shape == (3, 2 * 64) for s in scores.values())
    assert (scores["|activation|"] >= 0).all()
    exp = explain(model, ids, "gi", attention_mask=mask, latents=True)
    _close(scores["grad x act"], latents.flatten(exp.neurons).double(), float(exp.logit.abs().max()))
    table = latents.faithfulness(model, ids, mask, "neurons", scores, target, [0, 4], batch_size=2)
    assert len(table) == 4 * 2 * 3 and (table[table.k == 0]["drop"] == 0).all()
    summ = latents.curve_summary(table, n_boot=50)
    assert list(summ.columns) == ["ranking", "k", "drop", "low", "high", "n"] and (summ.low <= summ.high + 1e-12).all()


def test_logits_with_in_batches_equals_one_pass():
    model, (ids, mask) = _model("bert"), _batch()
    off = torch.zeros(1, 2 * 64, dtype=torch.bool)
    off[0, [3, 70, 71]] = True
    one = latents.logits_with(model, ids, mask, "neurons", off)
    _close(latents.logits_with(model, ids, mask, "neurons", off, batch_size=2), one, float(one.abs().max()))


def test_class_units_average_the_contrast_over_correct_examples_of_the_class():
    model = tiny(n_classes=2)
    ids = torch.randint(1, 40, (12, 6), generator=torch.Generator().manual_seed(3))
    labels = torch.tensor([0, 1] * 6)
    scores, n_used, acc = latents.class_units(model, ids, None, labels, cls=1, batch_size=5)
    pos, neg = (explain(model, ids, "attnlrp", target=t, latents=True) for t in (1, 0))
    pred = (pos.logit > neg.logit).long()
    used = (pred == labels) & (labels == 1)
    assert n_used == int(used.sum()) > 0 and acc == float((pred == labels).double().mean())
    diff = latents.flatten([p - n for p, n in zip(pos.neurons, neg.neurons)])
    _close(scores, diff[used].mean(0).double(), float(diff.abs().max()))


@pytest.mark.parametrize("name", ["bert", "gpt2", "llama-cls", "tiny-causal-rope-gqa-swiglu"])
def test_model_unchanged_after_latent_explanations(name):
    model, (ids, mask) = _model(name), _batch("left")
    hooks = [len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules()]
    state = copy.deepcopy(model.state_dict())
    for lat in (True, "positions"):
        explain(model, ids, "attnlrp", attention_mask=mask, latents=lat)
    latents.rankings(model, ids, mask, "heads", methods=("cp-lrp",), batch_size=2)
    assert [len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules()] == hooks
    assert all(p.grad is None for p in model.parameters()) and not model.training
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())


def test_vision_transformer_latents_and_ablation():
    """ViT (pixel input): gi latents are activation x plain gradient; ablating every head of the
    last block equals zeroing that block's attention output projection input by hand."""
    model = arch_model("vit")
    x = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    adapter = get_adapter(model)
    seen, handles = {}, [m.register_forward_pre_hook(lambda m, a: seen.setdefault(m, a[0]))
                         for pair in adapter.latent_modules() for m in pair]
    try:
        out = model(pixel_values=x).logits
    finally:
        for h in handles:
            h.remove()
    mods = [m for pair in adapter.latent_modules() for m in pair]
    grads = torch.autograd.grad(out.gather(1, out.argmax(-1, keepdim=True)).sum(), [seen[m] for m in mods])
    exp = explain(model, pixel_values=x, method="gi", latents="positions")
    scale = float(exp.logit.abs().max())
    for layer, (attn, mlp) in enumerate(adapter.latent_modules()):
        heads = (seen[attn] * grads[2 * layer]).detach().unflatten(-1, (adapter.n_heads, -1)).sum(-1)
        _close(exp.heads_by_position[layer], heads, scale)
        _close(exp.neurons[layer], (seen[mlp] * grads[2 * layer + 1]).detach().sum(1), scale)
    L, H = adapter.n_layers, adapter.n_heads
    off = torch.zeros(1, L * H, dtype=torch.bool)
    off[0, (L - 1) * H:] = True
    got = latents.logits_with(model, x, None, "heads", off)
    last = adapter.latent_modules()[-1][0]
    h = last.register_forward_pre_hook(lambda m, a: (torch.zeros_like(a[0]),))
    try:
        with torch.no_grad():
            ref = model(pixel_values=x).logits
    finally:
        h.remove()
    _close(got, ref, float(ref.abs().max()))
