"""An interactive explorer: type a sentence, pick a model, a method and a layer, see the heatmap.

``explorer(models)`` returns an ipywidgets panel; every change of its controls re-renders an
``ipywidgets.HTML`` heatmap (the same HTML as :func:`lrp_utils.viz.token_html`). The same view is
available without a browser or a kernel as :func:`render_html`, which is what a headless (papermill)
run displays next to the widget, and what the tests call.

Explanations are cached per (model, sentence, method), so moving the layer control is instant.
"""
from __future__ import annotations

import html

import torch

from . import viz
from .adapters import get_adapter
from .engine import explain

#: the methods the panel offers (any name ``explain`` accepts works)
PANEL_METHODS = ("gi", "cp-lrp", "attnlrp", "pa-lrp", "ig")
#: the layer control's value for the input token embeddings (``Explanation.tokens``)
TOKENS = "tokens"
DEFAULT_TEXT = "a gorgeous , witty , seductive movie ."
MAX_LENGTH = 128


def encode(tokenizer, text: str, device=None):
    """``(input_ids [1, S], attention_mask [1, S], token strings [S])`` of one sentence."""
    enc = tokenizer(text, return_tensors="pt", truncation=True, max_length=MAX_LENGTH)
    ids = enc["input_ids"]
    mask = enc.get("attention_mask")
    mask = torch.ones_like(ids) if mask is None else mask
    tokens = tokenizer.convert_ids_to_tokens(ids[0].tolist())
    if device is not None:
        ids, mask = ids.to(device), mask.to(device)
    return ids, mask, tokens


def n_layers(model) -> int:
    """Number of blocks ``L`` of a supported model (from its adapter)."""
    return get_adapter(model).n_layers


def layer_options(model) -> list[tuple[str, object]]:
    """``(label, value)`` pairs for the layer control: the token embeddings, then layers ``0 .. L``."""
    L = n_layers(model)
    return [("input tokens", TOKENS), ("layer 0 (embeddings)", 0),
            *[(f"layer {l}" + (" (last)" if l == L else ""), l) for l in range(1, L + 1)]]


def target_name(model, tokenizer, target: int) -> str:
    """Readable name of the explained output: a class label or the predicted next token."""
    adapter = get_adapter(model)
    if adapter.task == "causal":
        return f"next token {viz.clean_token(tokenizer.convert_ids_to_tokens([target])[0])!r}"
    return f"class {adapter.target_name(tokenizer, target)!r}"


def relevance_at(exp, layer) -> torch.Tensor:
    """``[S]`` relevance of the first example at ``layer`` (``"tokens"`` = token embeddings)."""
    if layer == TOKENS:
        return exp.tokens[0]
    if exp.layers is None:
        raise ValueError(f"{exp.method!r} has no per-layer relevance")
    return exp.layers[int(layer)][0]


def render_html(model, tokenizer, text: str, method: str = "attnlrp", layer=TOKENS, name: str = "",
                cache: dict | None = None) -> str:
    """The panel's view as HTML: the heatmap of ``method`` at ``layer`` with a one-line summary.

    Args:
        model, tokenizer: a Hugging Face model (or ``TinyTransformer``) and a tokenizer with
            ``__call__(text, return_tensors="pt")`` and ``convert_ids_to_tokens``.
        text: the sentence; method: any name :func:`lrp_utils.explain` accepts;
        layer: ``"tokens"`` or an int in ``0 .. L``; name: the model's display name.
        cache: optional dict reused across calls (keys: name, text, method, need of layers).
    """
    if not text.strip():
        return "<div><i>Type a sentence to explain.</i></div>"
    device = next(model.parameters()).device
    ids, mask, tokens = encode(tokenizer, text, device)
    kwargs = {"ig_layers": True} if method == "ig" and layer != TOKENS else {}
    key = (name, text, method, bool(kwargs))
    cache = {} if cache is None else cache
    if key not in cache:
        cache[key] = explain(model, ids, method, attention_mask=mask, **kwargs)
    exp = cache[key]
    where = "input tokens" if layer == TOKENS else f"layer {layer}"
    title = f"{name or type(model).__name__} | {method} | {where}"
    heat = viz.token_html(tokens, relevance_at(exp, layer), title=title)
    rel = relevance_at(exp, layer)
    summary = (f"explained: {target_name(model, tokenizer, int(exp.target[0]))}, logit = "
               f"{float(exp.logit[0]):.3f}; sum of shown relevance = {float(rel.sum()):.3f}")
    if layer == TOKENS and exp.positions is not None:
        summary += f"; positions hold {float(exp.positions[0].sum()):.3f} more"
    return f'<div class="lrp-explorer-view">{heat}<div style="font-size:85%">{html.escape(summary)}</div></div>'


def explorer(models: dict, default_text: str = DEFAULT_TEXT, methods=PANEL_METHODS,
             default_method: str = "attnlrp", default_layer=TOKENS):
    """An ipywidgets panel to explore explanations interactively.

    Args:
        models: ``name -> (model, tokenizer)``; the first entry is selected at start.
        default_text: the sentence shown at start.
        methods: the method names offered; default_method / default_layer: the start values.

    Returns:
        an ``ipywidgets.VBox`` with attributes ``text``, ``model``, ``method``, ``layer`` (the
        controls) and ``html`` (the ``ipywidgets.HTML`` heatmap, re-rendered on every change).
    """
    import ipywidgets as w

    if not models:
        raise ValueError("explorer needs at least one model")
    first = next(iter(models))
    text = w.Textarea(value=default_text, description="sentence", continuous_update=False,
                      layout=w.Layout(width="95%"))
    pick_model = w.Dropdown(options=list(models), value=first, description="model")
    pick_method = w.Dropdown(options=list(methods), value=default_method, description="method")
    pick_layer = w.Dropdown(options=layer_options(models[first][0]), value=default_layer, description="layer")
    out = w.HTML()
    cache: dict = {}

    def update(_=None):
        model, tokenizer = models[pick_model.value]
        try:
            out.value = render_html(model, tokenizer, text.value, pick_method.value, pick_layer.value,
                                    pick_model.value, cache)
        except Exception as err:  # show the problem in the panel, keep the panel alive
            out.value = f'<div style="color:#b00">error: {html.escape(repr(err))}</div>'

    def model_changed(_=None):
        keep = pick_layer.value
        options = layer_options(models[pick_model.value][0])
        with pick_layer.hold_trait_notifications():
            pick_layer.options = options
            pick_layer.value = keep if keep in [v for _, v in options] else TOKENS
        update()

    pick_model.observe(model_changed, names="value")
    for control in (text, pick_method, pick_layer):
        control.observe(update, names="value")
    panel = w.VBox([text, w.HBox([pick_model, pick_method, pick_layer]), out])
    panel.text, panel.model, panel.method, panel.layer, panel.html = text, pick_model, pick_method, pick_layer, out
    update()
    return panel
