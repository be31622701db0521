"""Vision transformers (``ViTForImageClassification``): ``explain(model, pixel_values=...)``.

The adapter reproduces the model; ``gi`` at the pixels is plain Gradient x Input; the pixel map
summed per patch is the patch token's relevance (bias-free projection: exactly); CP-LRP conserves
at every layer on the bias-free variant and PA-CP-LRP closes with the learned positions; every
method runs; the model is left unchanged; wrong inputs get clear errors."""
from __future__ import annotations

import copy

import matplotlib
import pytest
import torch
from archs import arch_model
from tolerances import IDENTITY_RULE_REL, SAME_FUNCTION_F64

from lrp_utils import METHODS, explain, loo
from lrp_utils.adapters import get_adapter
from lrp_utils.viz import image_heatmap

matplotlib.use("Agg")
SIZE, PATCH = 16, 4  # the zoo ViT: 16 x 16 images, 4 x 4 patches -> 16 patches + [CLS]


def _pixels(n=2, seed=0):
    return torch.randn(n, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def _close(a, b, rel, scale=None):
    scale = max(1.0, float(b.detach().abs().max())) if scale is None else scale
    assert float((a - b).abs().max()) <= rel * scale, f"max diff {float((a - b).abs().max()):.3e}"


def _per_patch(pixels: torch.Tensor) -> torch.Tensor:
    """``[B, H, W] -> [B, n_patches]`` sums over each patch, row-major (the patch token order)."""
    B = pixels.shape[0]
    g = SIZE // PATCH
    return pixels.reshape(B, g, PATCH, g, PATCH).sum((2, 4)).reshape(B, g * g)


def test_adapter_forward_equals_the_model():
    model, x = arch_model("vit"), _pixels()
    a = get_adapter(model)
    xs, mask = a.check_inputs(x, None)
    with torch.no_grad():
        _close(a.forward(xs, mask), model(pixel_values=x).logits, SAME_FUNCTION_F64)


def test_gi_equals_plain_gradient_x_input_at_the_pixels():
    model, x = arch_model("vit"), _pixels().requires_grad_()
    out = model(pixel_values=x).logits
    target = out.argmax(-1)
    (grad,) = torch.autograd.grad(out.gather(1, target[:, None]).sum(), x)
    exp = explain(model, pixel_values=x.detach(), method="gi")
    _close(exp.pixels, (x * grad).sum(1), SAME_FUNCTION_F64)
    assert torch.equal(exp.target, target)


@pytest.mark.parametrize("method", ["gi", "cp-lrp", "attnlrp"])
def test_pixels_sum_per_patch_to_the_patch_tokens(method):
    """The patch projection is linear: without its bias, each patch's pixels carry exactly the
    patch token's relevance; with it, the bias absorbs the difference."""
    exp = explain(arch_model("vit", bias=False), pixel_values=_pixels(), method=method)
    _close(_per_patch(exp.pixels), exp.tokens[:, 1:], SAME_FUNCTION_F64, float(exp.tokens.abs().max()))
    biased = explain(arch_model("vit"), pixel_values=_pixels(), method=method)
    assert float((_per_patch(biased.pixels) - biased.tokens[:, 1:]).abs().max()) > 1e-3


def test_cp_lrp_conserves_every_layer_bias_free():
    exp = explain(arch_model("vit", bias=False), pixel_values=_pixels(), method="cp-lrp")
    for layer_sum in exp.layer_sums():
        _close(layer_sum, exp.logit, IDENTITY_RULE_REL)
    pa = explain(arch_model("vit", bias=False), pixel_values=_pixels(), method="pa-cp-lrp")
    _close(pa.total, pa.logit, IDENTITY_RULE_REL)  # [CLS] + patches + learned positions
    assert float((pa.tokens.sum(-1) - pa.logit).abs().max()) > 1e-3  # positions carry a share


@pytest.mark.parametrize("method", sorted(METHODS))
def test_every_method_shapes(method):
    x = _pixels(3)
    exp = explain(arch_model("vit"), pixel_values=x, method=method, target=1)
    n = (SIZE // PATCH) ** 2 + 1
    assert exp.tokens.shape == (3, n) and exp.pixels.shape == (3, SIZE, SIZE)
    assert len(exp.layers) == 3 and all(r.shape == (3, n) for r in exp.layers)
    assert (exp.positions is not None) == METHODS[method].positions
    assert exp.target.tolist() == [1, 1, 1] and torch.isfinite(exp.pixels).all()


def test_model_unchanged_and_baselines_run():
    model, x = arch_model("vit"), _pixels()
    state = copy.deepcopy(model.state_dict())
    with torch.no_grad():
        before = model(pixel_values=x).logits
    for method in ["gi", "cp-lrp", "attnlrp", "pa-lrp", "ig", "rollout", "random"]:
        exp = explain(model, pixel_values=x, method=method)
        assert exp.tokens.shape == (2, (SIZE // PATCH) ** 2 + 1)
    assert model.config._attn_implementation == "sdpa" and not model.training
    assert all(p.grad is None for p in model.parameters())
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())
    with torch.no_grad():
        assert torch.equal(model(pixel_values=x).logits, before)


def test_loo_over_patches():
    """LOO on a ViT removes [CLS] / patch tokens: NaN at the read-out ([CLS]) only."""
    model, x = arch_model("vit"), _pixels()
    scores = loo(model, pixel_values=x, layer=1)
    assert scores.shape == (2, (SIZE // PATCH) ** 2 + 1)
    assert scores[:, 0].isnan().all() and not scores[:, 1:].isnan().any()
    with pytest.raises(TypeError, match="pixel_values"):
        loo(model, x)


def test_input_errors():
    vit, text = arch_model("vit"), arch_model("bert")
    with pytest.raises(TypeError, match="pixel_values"):
        explain(vit, torch.randint(0, 50, (1, 5)))
    with pytest.raises(TypeError, match="vision model: pixel_values=.* is required"):
        explain(vit, method="gi")
    with pytest.raises(TypeError, match="only for vision models"):
        explain(text, pixel_values=_pixels())
    with pytest.raises(TypeError, match="input_ids is required"):
        explain(text, method="gi")
    with pytest.raises(ValueError, match=r"\[batch, 3, 16, 16\]"):
        explain(vit, pixel_values=torch.randn(1, 3, 8, 8, dtype=torch.float64))
    with pytest.raises(TypeError, match="floating"):
        explain(vit, pixel_values=torch.zeros(1, 3, SIZE, SIZE, dtype=torch.long))
    with pytest.raises(ValueError, match="attention_mask"):
        explain(vit, pixel_values=_pixels(), attention_mask=torch.ones(2, 17))


def test_image_heatmap():
    exp = explain(arch_model("vit"), pixel_values=_pixels(1), method="attnlrp")
    fig = image_heatmap(exp.pixels[0], image=_pixels(1)[0], title="pixels")
    assert len(fig.axes) == 2 and fig.axes[0].get_title() == "pixels"
    grid = image_heatmap(exp.tokens[0, 1:].reshape(4, 4))
    assert grid.axes[0].images[0].get_array().shape == (4, 4)
    with pytest.raises(ValueError, match="2-D"):
        image_heatmap(exp.pixels)
