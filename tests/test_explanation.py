"""The Explanation object: selecting rows, assembling batches, contrast, the conservation gap."""
from __future__ import annotations

import torch
from archs import tiny
from tolerances import SAME_FUNCTION_F64

from lrp_utils import Explanation, explain


def _exp():
    ids = torch.randint(1, 50, (4, 7), generator=torch.Generator().manual_seed(0))
    return explain(tiny(position="rotary", task="causal"), ids, "pa-lrp"), ids


def test_indexing_keeps_the_batch_axis_and_every_field():
    e, _ = _exp()
    one, two = e[1], e[torch.tensor([0, 2])]
    assert one.tokens.shape == (1, 7) and len(two) == 2 and one.method == "pa-lrp"
    assert torch.equal(two.positions_by_layer[1], e.positions_by_layer[1][[0, 2]])
    assert torch.equal(e[1:3].logit, e.logit[1:3]) and torch.equal(e[e.logit > 0].target, e.target[e.logit > 0])


def test_assemble_puts_cropped_batches_back_in_place():
    e, _ = _exp()
    rows_a, rows_b = torch.tensor([3, 0]), torch.tensor([1, 2])
    parts = [(rows_a, slice(0, 5), e[rows_a]._map(lambda t: t[:, :5] if t.dim() == 2 else t)),
             (rows_b, slice(2, 7), e[rows_b]._map(lambda t: t[:, 2:] if t.dim() == 2 else t))]
    full = Explanation.assemble(parts, (4, 7))
    assert full.tokens.dtype == torch.float64 and full.target.dtype == torch.long
    assert torch.equal(full.tokens[3, :5], e.tokens[3, :5].double()) and (full.tokens[3, 5:] == 0).all()
    assert torch.equal(full.tokens[1, 2:], e.tokens[1, 2:].double()) and (full.tokens[1, :2] == 0).all()
    assert torch.equal(full.logit, e.logit.double()) and torch.equal(full.target, e.target)
    assert torch.equal(full.positions_by_layer[0][2, 2:], e.positions_by_layer[0][2, 2:].double())


def test_contrast_is_the_explanation_of_the_logit_difference():
    model, ids = tiny(task="causal", bias=False, position="none"), torch.randint(1, 50, (3, 6))
    a, b = explain(model, ids, "cp-lrp", target=4), explain(model, ids, "cp-lrp", target=9)
    c = a.contrast(b)
    assert torch.equal(c.target, a.target) and torch.equal(c.extras["contrast_target"], b.target)
    torch.testing.assert_close(c.tokens.sum(-1), c.logit, rtol=SAME_FUNCTION_F64, atol=SAME_FUNCTION_F64)


def test_delta_is_the_conservation_gap():
    model, ids = tiny(bias=False, position="learned"), torch.randint(1, 50, (3, 6))
    assert explain(model, ids, "pa-cp-lrp").delta.abs().max() < SAME_FUNCTION_F64 * 100
    assert explain(model, ids, "cp-lrp").delta.abs().max() > 1e-3  # positions' share is missing
