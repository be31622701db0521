"""lrp_utils.captum: captum-style classes equal explain(); shapes and convergence deltas for batches
and padding; captum's visualize_text accepts the result."""
from __future__ import annotations

import pytest
import torch
from archs import arch_model, tiny
from tolerances import SAME_FUNCTION_F64

from lrp_utils import explain
from lrp_utils.captum import PALRP, AttnLRP, CPLRP, LayerAttnLRP, LayerCPLRP, LayerPALRP

CLASSES = {"attnlrp": AttnLRP, "cp-lrp": CPLRP, "pa-lrp": PALRP}
LAYER_CLASSES = {"attnlrp": LayerAttnLRP, "cp-lrp": LayerCPLRP, "pa-lrp": LayerPALRP}


def _padded(side="right"):
    ids = torch.randint(1, 40, (3, 7), generator=torch.Generator().manual_seed(1))
    mask = torch.ones_like(ids)
    if side == "right":
        mask[1, 5:], mask[2, 3:] = 0, 0
    else:
        mask[1, :2], mask[2, :4] = 0, 0
    return ids * mask, mask


def _close(a, b, scale):
    assert float((a - b).abs().max()) <= SAME_FUNCTION_F64 * max(1.0, scale), float((a - b).abs().max())


@pytest.mark.parametrize("method", list(CLASSES))
@pytest.mark.parametrize("kind", ["bert", "gpt2", "llama-cls"])
def test_attributions_sum_to_explain_tokens_with_padding(kind, method):
    model, (ids, mask) = arch_model(kind), _padded("left")
    attr, delta = CLASSES[method](model).attribute(ids, target=1, additional_forward_args=(mask,),
                                                   return_convergence_delta=True)
    exp = explain(model, ids, method, target=1, attention_mask=mask)
    D = model.get_input_embeddings().weight.shape[1]
    assert attr.shape == (3, 7, D) and delta.shape == (3,)
    scale = float(exp.logit.abs().max())
    _close(attr.sum(-1), exp.tokens, scale)
    assert (attr[~mask.bool()] == 0).all()
    _close(delta, exp.tokens.sum(-1) - exp.logit, scale)


def test_delta_is_zero_for_a_conservative_explanation_and_matches_compute():
    model = tiny(bias=False, position="none")  # bias-free, no position embeddings: CP-LRP conserves exactly
    ids, mask = _padded()
    cp = CPLRP(model)
    attr, delta = cp.attribute(ids, additional_forward_args=mask, return_convergence_delta=True)
    assert cp.has_convergence_delta() and float(delta.abs().max()) < 1e-10
    again = cp.compute_convergence_delta(attr, ids, additional_forward_args=mask)
    _close(again, delta, 1.0)
    lrp = AttnLRP(model)  # not conservative: the delta is what the softmax's Taylor terms absorb
    attr, delta = lrp.attribute(ids, target=[0, 1, 0], additional_forward_args=mask, return_convergence_delta=True)
    assert float(delta.abs().max()) > 1e-6
    _close(lrp.compute_convergence_delta(attr, ids, [0, 1, 0], mask), delta, 1.0)


@pytest.mark.parametrize("method", list(LAYER_CLASSES))
def test_layer_attributions_equal_explain_layers(method):
    model, (ids, mask) = arch_model("llama"), _padded()
    exp = explain(model, ids, method, attention_mask=mask)
    scale = float(exp.logit.abs().max())
    for layer in (0, 1, 2):
        attr = LAYER_CLASSES[method](model, layer).attribute(ids, additional_forward_args=mask)
        assert attr.shape == (3, 7, 32)
        _close(attr.sum(-1), exp.layers[layer], scale)
    block = model.model.layers[1]
    out = LAYER_CLASSES[method](model, block).attribute(ids, additional_forward_args=mask)
    inp = LAYER_CLASSES[method](model, block, attribute_to_layer_input=True).attribute(
        ids, additional_forward_args=mask)
    _close(out.sum(-1), exp.layers[2], scale)
    _close(inp.sum(-1), exp.layers[1], scale)


def test_bad_layer_and_arguments():
    model = arch_model("gpt2")
    with pytest.raises(ValueError, match="layer"):
        LayerAttnLRP(model, 3)
    with pytest.raises(ValueError, match="blocks"):
        LayerAttnLRP(model, model.lm_head)
    with pytest.raises(ValueError, match="attribute_to_layer_input"):
        LayerAttnLRP(model, 1, attribute_to_layer_input=True)
    ids, mask = _padded()
    with pytest.raises(ValueError, match="additional_forward_args"):
        AttnLRP(model).attribute(ids, additional_forward_args=(mask, mask))


def test_visualize_text_accepts_the_attributions():
    from captum.attr import visualization as viz

    model, (ids, mask) = arch_model("bert"), _padded()
    lrp = AttnLRP(model)
    attr, delta = lrp.attribute(ids, additional_forward_args=mask, return_convergence_delta=True)
    with torch.no_grad():
        probs = lrp.forward_func(ids, mask).softmax(-1)
    records = []
    for b in range(len(ids)):
        n = int(mask[b].sum())
        words = attr[b, :n].sum(-1)
        records.append(viz.VisualizationDataRecord(words / words.abs().max(), float(probs[b].max()),
                                                   int(probs[b].argmax()), 0, int(probs[b].argmax()),
                                                   float(words.sum()), [f"t{int(i)}" for i in ids[b, :n]],
                                                   float(delta[b])))
    html = viz.visualize_text(records)
    assert "t%d" % int(ids[0, 0]) in html.data and html.data.count("<tr>") >= 3
