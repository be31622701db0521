"""Properties every supported architecture must have, parametrised over the test zoo
(``tests/archs.py``: BERT classifier, GPT-2 LM and classifier, LLaMA LM and classifier with
grouped-query attention): the adapter reproduces the model, ``gi`` is plain Gradient x Input,
padded batches (left or right padding) equal single examples, LOO is NaN exactly at the read-out
position and padding, and the model is left unchanged."""
from __future__ import annotations

import copy

import pytest
import torch
from archs import ARCHS, VISION_ARCHS, arch_model, same_function_tol
from tolerances import SAME_FUNCTION_F64

from lrp_utils import explain, loo
from lrp_utils.adapters import get_adapter, supported

KINDS = list(ARCHS)
PAD = 0  # every zoo model's pad token id


def _close(a, b, rel, scale=None):
    scale = max(1.0, float(b.detach().abs().max())) if scale is None else scale
    assert float((a - b).abs().max()) <= rel * scale, f"max diff {float((a - b).abs().max()):.3e}"


def _batch(side: str, lengths=(9, 6, 4), seed=0):
    """Ids ``[3, 9]`` (no pad id inside a sequence) padded with the pad id on ``side``, and the mask."""
    g = torch.Generator().manual_seed(seed)
    S = max(lengths)
    ids = torch.full((len(lengths), S), PAD, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for b, n in enumerate(lengths):
        cols = slice(0, n) if side == "right" else slice(S - n, S)
        ids[b, cols] = torch.randint(1, 50, (n,), generator=g)
        mask[b, cols] = 1
    return ids, mask


def _own_logits(model, ids, mask=None):
    """The model's own output for unpadded ``ids [1, S]`` at its read-out position."""
    out = model(input_ids=ids, attention_mask=mask).logits
    return out[:, -1] if out.dim() == 3 else out


def test_every_supported_class_is_in_the_zoo():
    zoo = {type(arch_model(k)).__name__ for k in [*KINDS, *VISION_ARCHS]} | {"TinyTransformer"}
    assert set(supported()) <= zoo, set(supported()) - zoo


@pytest.mark.parametrize("kind", KINDS)
def test_adapter_forward_equals_the_model(kind):
    model = arch_model(kind)
    ids, _ = _batch("right", (9,))
    with torch.no_grad():
        _close(get_adapter(model).forward(ids, torch.ones_like(ids)), _own_logits(model, ids), SAME_FUNCTION_F64)


@pytest.mark.parametrize("side", ["right", "left"])
@pytest.mark.parametrize("kind", KINDS)
def test_padded_forward_equals_single_examples(kind, side):
    model, (ids, mask) = arch_model(kind), _batch(side)
    with torch.no_grad():
        batch = get_adapter(model).forward(ids, mask)
        for b in range(len(ids)):
            single = _own_logits(model, ids[b][mask[b].bool()][None])
            _close(batch[b:b + 1], single, SAME_FUNCTION_F64)


@pytest.mark.parametrize("kind", KINDS)
def test_gi_equals_plain_gradient_x_input(kind):
    model = arch_model(kind)
    ids, _ = _batch("right", (8,))
    emb = get_adapter(model).word_embeddings(ids).detach().requires_grad_()
    out = model(inputs_embeds=emb).logits
    out = out[:, -1] if out.dim() == 3 else out
    target = out.argmax(-1)
    (grad,) = torch.autograd.grad(out.gather(1, target[:, None]).sum(), emb)
    exp = explain(model, ids, "gi")
    _close(exp.tokens, (emb * grad).sum(-1), same_function_tol(kind))
    assert torch.equal(exp.target, target)


@pytest.mark.parametrize("method", ["gi", "cp-lrp", "attnlrp", "pa-lrp"])
@pytest.mark.parametrize("side", ["right", "left"])
@pytest.mark.parametrize("kind", KINDS)
def test_padded_explanation_equals_single_examples(kind, side, method):
    model, (ids, mask) = arch_model(kind), _batch(side)
    batch = explain(model, ids, method, attention_mask=mask)
    scale = max(1.0, float(batch.logit.abs().max()))
    for b in range(len(ids)):
        keep = mask[b].bool()
        single = explain(model, ids[b][keep][None], method)
        _close(batch.logit[b:b + 1], single.logit, SAME_FUNCTION_F64, scale)
        _close(batch.tokens[b][keep], single.tokens[0], SAME_FUNCTION_F64, scale)
        for lb, ls in zip(batch.layers, single.layers):
            _close(lb[b][keep], ls[0], SAME_FUNCTION_F64, scale)
        assert (batch.tokens[b][~keep] == 0).all()


@pytest.mark.parametrize("side", ["right", "left"])
@pytest.mark.parametrize("kind", KINDS)
def test_loo_nan_exactly_at_readout_and_padding(kind, side):
    model, (ids, mask) = arch_model(kind), _batch(side)
    scores = loo(model, ids, layer=1, attention_mask=mask)
    readout = get_adapter(model).readout_positions(mask)
    expected = ~mask.bool()
    expected[torch.arange(len(ids)), readout] = True
    assert torch.equal(scores.isnan(), expected)
    first, last = mask.long().argmax(1), mask.shape[1] - 1 - mask.long().flip(1).argmax(1)
    assert torch.equal(readout, last if get_adapter(model).causal else first)
    for b in range(len(ids)):  # and the padded batch equals the example alone
        keep = mask[b].bool()
        single = loo(model, ids[b][keep][None], layer=1)[0]
        torch.testing.assert_close(scores[b][keep], single, rtol=0, atol=SAME_FUNCTION_F64 * 10, equal_nan=True)


@pytest.mark.parametrize("kind", KINDS)
def test_model_unchanged_after_every_method(kind):
    model, (ids, mask) = arch_model(kind), _batch("left")
    state = copy.deepcopy(model.state_dict())
    hooks = [len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules()]
    impl = model.config._attn_implementation
    with torch.no_grad():
        before = model(input_ids=ids, attention_mask=mask).logits
    for method in ["gi", "cp-lrp", "attnlrp", "pa-lrp", "ig", "rollout"]:
        explain(model, ids, method, attention_mask=mask)
    loo(model, ids, layer=0, attention_mask=mask)
    assert [len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules()] == hooks
    assert model.config._attn_implementation == impl and not model.training
    assert all(p.grad is None for p in model.parameters())
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())
    with torch.no_grad():  # (NaN where the model's own eager attention has an empty row: Gemma 2)
        torch.testing.assert_close(model(input_ids=ids, attention_mask=mask).logits, before, rtol=0, atol=0,
                                   equal_nan=True)
