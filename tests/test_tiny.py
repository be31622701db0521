"""TinyTransformer: configurations, equal outputs of the two linear-attention orders, training."""
from __future__ import annotations

import itertools

import pytest
import torch
from conftest import tiny
from tolerances import SAME_FUNCTION_F64

from lrp_utils.models import TinyConfig, TinyTransformer, accuracy, train

SWEEP = [dict(position=p, norm=n, mlp=m, bias=b) for p, n, m, b in itertools.product(
    ["none", "learned", "sinusoidal", "rotary"], ["layernorm", "rmsnorm"], ["gelu", "swiglu"], [True, False])]


@pytest.mark.parametrize("kw", SWEEP[::3] + [dict(n_kv_heads=2), dict(task="causal"), dict(readout="mean")])
def test_configurations_run_and_are_finite(kw, padded_ids):
    ids, mask = padded_ids
    out = tiny(**kw)(ids, attention_mask=mask)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("kw", [dict(), dict(feature_map="elu1", normalize=True),
                                dict(task="causal"), dict(task="causal", feature_map="elu1", normalize=True),
                                dict(position="rotary", n_kv_heads=2)])
def test_linear_attention_orders_compute_the_same_function(kw, padded_ids):
    ids, mask = padded_ids
    a = tiny(attention="linear", order="(qk)v", **kw)
    b = TinyTransformer(TinyConfig(**{**a.config.__dict__, "order": "q(kv)"})).double()
    b.load_state_dict(a.state_dict())
    out_a, out_b = a(ids, attention_mask=mask), b(ids, attention_mask=mask)
    if out_a.dim() == 3:  # causal: compare non-padding positions only
        out_a, out_b = out_a[mask.bool()], out_b[mask.bool()]
    assert float((out_a - out_b).abs().max()) <= SAME_FUNCTION_F64 * float(out_a.abs().max())


def test_grouped_query_attention_equals_repeated_heads(padded_ids):
    """GQA with 2 kv heads == MHA whose k/v projections repeat each kv head twice."""
    ids, mask = padded_ids
    gqa = tiny(n_kv_heads=2)
    mha = TinyTransformer(TinyConfig(**{**gqa.config.__dict__, "n_kv_heads": None})).double()
    state = gqa.state_dict()
    hd = gqa.config.head_dim
    for key in list(state):
        if key.endswith((".k.weight", ".v.weight", ".k.bias", ".v.bias")):
            w = state[key].view(2, hd, *state[key].shape[1:])
            state[key] = w.repeat_interleave(2, dim=0).reshape(-1, *state[key].shape[1:])
    mha.load_state_dict(state)
    torch.testing.assert_close(gqa(ids, attention_mask=mask), mha(ids, attention_mask=mask))


def test_padding_does_not_change_outputs():
    model = tiny()
    ids = torch.randint(1, 50, (1, 6))
    padded = torch.cat([ids, torch.zeros(1, 3, dtype=torch.long)], 1)
    mask = torch.cat([torch.ones(1, 6), torch.zeros(1, 3)], 1).long()
    torch.testing.assert_close(model(ids), model(padded, attention_mask=mask))


def test_bad_config_names_the_field():
    with pytest.raises(ValueError, match="position"):
        TinyConfig(position="alibi")
    with pytest.raises(ValueError, match="divisible"):
        TinyConfig(d_model=30, n_heads=4)


def test_train_learns_a_simple_task():
    torch.manual_seed(0)
    ids = torch.randint(2, 20, (256, 8))
    ids[:, 0] = 1
    labels = (ids == 5).any(1).long()  # does token 5 occur?
    model = TinyTransformer(vocab_size=20, d_model=16, n_layers=1, n_heads=2, d_ff=32)
    history = train(model, ids, labels, epochs=30, lr=1e-2, progress=False)
    assert history[-1] < 0.5 * history[0]
    assert accuracy(model, ids, labels) > 0.9
    assert not model.training


def test_train_is_deterministic():
    ids = torch.randint(0, 20, (32, 6))
    runs = []
    for _ in range(2):
        torch.manual_seed(1)
        m = TinyTransformer(vocab_size=20, d_model=8, n_layers=1, n_heads=2, d_ff=16, task="causal")
        runs.append(train(m, ids, epochs=2, progress=False))
    assert runs[0] == runs[1]
