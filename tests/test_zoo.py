"""The real-model zoo: offline loading, caching, and that the models do their job.

Tests marked ``real`` load the packaged models; the first run trains MiniLM on the *quick* recipe
(about 80 s on 2 CPU cores) and converts SmolLM2 (about 20 s), later runs reload the cache in seconds.
"""
import time

import pytest
import torch

from lrp_utils.models import zoo

SENTENCES = ["a gorgeous , moving and funny film .", "dull , lifeless and far too long .",
             "the plot is thin but the actors are terrific ."]


def test_unknown_name_lists_valid_names():
    with pytest.raises(ValueError, match="minilm-rt.*smollm2-135m"):
        zoo.load("bert-base")


def test_unknown_recipe_lists_valid_recipes():
    with pytest.raises(ValueError, match="quick.*full"):
        zoo.load("minilm-rt", recipe="huge")


def test_checkpoint_dir_names_recipe_and_hash():
    quick, full = zoo.checkpoint_dir("minilm-rt", "quick"), zoo.checkpoint_dir("minilm-rt", "full")
    assert quick.name.startswith("minilm-rt-quick-") and full.name.startswith("minilm-rt-full-")
    assert quick.name[-8:] != full.name[-8:]


@pytest.fixture(scope="module")
def minilm_quick():
    torch.manual_seed(0)
    return zoo.load("minilm-rt", recipe="quick", progress=False)


@pytest.mark.real
@pytest.mark.slow
def test_minilm_quick_accuracy_and_fast_identical_reload(minilm_quick, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    model, tok = minilm_quick
    info = zoo.recipe_info("minilm-rt", "quick")
    assert info["cached"] and info["n_train"] == 2000
    assert model.config.lrp_utils_accuracy == info["accuracy"] > 0.7
    assert not model.training and model.num_labels == 2
    start = time.perf_counter()
    again, _ = zoo.load("minilm-rt", recipe="quick", progress=False)
    assert time.perf_counter() - start < 30
    enc = tok(SENTENCES, padding=True, return_tensors="pt")
    with torch.no_grad():
        logits, logits_again = model(**enc).logits, again(**enc).logits
    assert torch.equal(logits, logits_again)
    assert logits[0].argmax() == 1 and logits[1].argmax() == 0


@pytest.mark.real
@pytest.mark.slow
def test_minilm_attention_implementation_does_not_matter(minilm_quick):
    model, tok = minilm_quick
    eager, _ = zoo.load("minilm-rt", recipe="quick", progress=False, attn_implementation="eager")
    enc = tok(SENTENCES, padding=True, return_tensors="pt")
    with torch.no_grad():
        # float32 kernels differ in summation order: agree to ~1e-7 (measured), not bit for bit
        torch.testing.assert_close(eager(**enc).logits, model(**enc).logits, rtol=1e-5, atol=1e-5)


@pytest.mark.real
def test_smollm2_loads_and_predicts_plausible_token(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    model, tok = zoo.load("smollm2-135m", progress=False)
    assert type(model).__name__ == "LlamaForCausalLM" and model.dtype == torch.float32
    assert model.config.num_key_value_heads < model.config.num_attention_heads  # grouped-query attention
    assert tok.pad_token_id is not None
    for prompt, expected in [("The capital of France is", " Paris"), ("One, two, three, four,", " five")]:
        ids = tok(prompt, return_tensors="pt").input_ids
        with torch.no_grad():
            next_id = model(ids).logits[0, -1].argmax()
        assert tok.decode([int(next_id)]) == expected
