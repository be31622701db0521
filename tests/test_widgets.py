"""The explorer panel's logic, without a browser: construction, re-rendering on change, static HTML."""
from __future__ import annotations

import pytest
import torch

from conftest import hf_model
from lrp_utils import explain
from lrp_utils.widgets import TOKENS, explorer, layer_options, render_html

pytest.importorskip("ipywidgets")


class WordTokenizer:
    """Tokenizer stand-in: [CLS] + one id per word (a stable hash into the tiny vocabulary) + [SEP]."""

    def __init__(self, vocab_size: int = 60):
        self.vocab_size = vocab_size
        self.words = {"[CLS]": 1, "[SEP]": 2}

    def _id(self, word: str) -> int:
        if word not in self.words:
            self.words[word] = 3 + sum(map(ord, word)) % (self.vocab_size - 3)
        return self.words[word]

    def __call__(self, text, return_tensors="pt", **kwargs):
        ids = torch.tensor([[1, *[self._id(w) for w in text.split()], 2]])
        return {"input_ids": ids, "attention_mask": torch.ones_like(ids)}

    def convert_ids_to_tokens(self, ids):
        names = {v: k for k, v in self.words.items()}
        return [names.get(int(i), f"#{int(i)}") for i in ids]


@pytest.fixture
def models():
    return {"bert": (hf_model("bert"), WordTokenizer()), "bert-b": (hf_model("bert"), WordTokenizer())}


def test_panel_builds_with_initial_heatmap(models):
    panel = explorer(models, default_text="good fun film")
    assert panel.model.value == "bert" and panel.method.value == "attnlrp" and panel.layer.value == TOKENS
    assert panel.html.value.count("<span") == 5  # [CLS] good fun film [SEP]
    assert "attnlrp" in panel.html.value and "error" not in panel.html.value
    # the layer control offers the token embeddings and layers 0..L of the tiny 2-block BERT
    assert [v for _, v in panel.layer.options] == [TOKENS, 0, 1, 2]


def test_changing_method_updates_html(models):
    panel = explorer(models, default_text="good fun film")
    before = panel.html.value
    panel.method.value = "gi"
    assert panel.html.value != before and "| gi |" in panel.html.value
    model, tok = models["bert"]
    assert panel.html.value == render_html(model, tok, "good fun film", "gi", TOKENS, "bert")


def test_changing_layer_text_and_model_updates_html(models):
    panel = explorer(models, default_text="good fun film")
    panel.layer.value = 2
    assert "layer 2" in panel.html.value
    panel.text.value = "bad"
    assert panel.html.value.count("<span") == 3
    panel.model.value = "bert-b"
    assert panel.html.value.startswith('<div class="lrp-explorer-view">') and "bert-b" in panel.html.value
    panel.text.value = "   "
    assert "Type a sentence" in panel.html.value


def test_render_shows_the_raw_relevance_in_tooltips(models):
    model, tok = models["bert"]
    ids = tok("good fun film")["input_ids"]
    exp = explain(model, ids, "cp-lrp")
    view = render_html(model, tok, "good fun film", "cp-lrp", 1, "bert")
    for r in exp.layers[1][0]:
        assert f'title="R = {float(r):.4g}"' in view
    assert f"logit = {float(exp.logit[0]):.3f}" in view


def test_ig_layers_and_errors_are_shown_not_raised(models):
    panel = explorer(models, default_text="good fun film", methods=("ig", "no-such-method"), default_method="ig")
    panel.layer.value = 1  # IG per layer is computed on demand
    assert "| ig | layer 1" in panel.html.value
    panel.method.value = "no-such-method"
    assert "error" in panel.html.value and "unknown method" in panel.html.value


def test_layer_options_follow_the_model():
    options = layer_options(hf_model("llama"))
    assert options[0][1] == TOKENS and options[-1][1] == 2 and len(options) == 4
