"""Shared fixtures: seeds and tiny models (float64, O(1) weights so that methods differ)."""
from __future__ import annotations

import pytest
import torch
from transformers import (BertConfig, BertForSequenceClassification, GPT2Config, GPT2ForSequenceClassification,
                          GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM, LlamaForSequenceClassification)

from lrp_utils.models import TinyConfig, TinyTransformer

torch.set_num_threads(1)  # tiny models: threading overhead dominates


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def tiny(std=0.5, seed=0, **kwargs) -> TinyTransformer:
    """A float64 TinyTransformer with N(0, std) weights (seeded)."""
    cfg = dict(vocab_size=50, d_model=16, n_layers=2, n_heads=4, d_ff=32)
    cfg.update(kwargs)
    return TinyTransformer(TinyConfig(**cfg)).double().reset_parameters(std, seed=seed).eval()


def _rescale(model, std=0.4, seed=1):
    """O(1) random weights for HF models (default init std 0.02 makes attention near uniform)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name.lower() and name.endswith("weight"):
                p.copy_(1 + 0.1 * torch.randn(p.shape, generator=gen, dtype=p.dtype))
            else:
                p.copy_(std * torch.randn(p.shape, generator=gen, dtype=p.dtype))
    return model.eval()


def hf_model(kind: str):
    """Tiny random float64 HF models: "bert", "gpt2", "llama" (grouped-query attention)."""
    if kind == "bert":
        cfg = BertConfig(vocab_size=60, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                         intermediate_size=64, num_labels=3)
        model = BertForSequenceClassification(cfg)
    elif kind == "gpt2":
        cfg = GPT2Config(vocab_size=60, n_embd=32, n_layer=2, n_head=4, bos_token_id=0, eos_token_id=0)
        model = GPT2LMHeadModel(cfg)
    else:
        cfg = LlamaConfig(vocab_size=60, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                          num_key_value_heads=2, intermediate_size=64, bos_token_id=0, eos_token_id=0)
        model = LlamaForCausalLM(cfg)
    return _rescale(model.double())


HF_KINDS = ["bert", "gpt2", "llama"]


def _decoder_classifier(kind: str):
    """GPT-2 / LLaMA (grouped-query) sequence classifiers, 3 classes, tiny, float64."""
    if kind == "gpt2":
        cfg = GPT2Config(vocab_size=60, n_embd=32, n_layer=2, n_head=4, num_labels=3, pad_token_id=0,
                         bos_token_id=0, eos_token_id=0)
        return _rescale(GPT2ForSequenceClassification(cfg).double())
    cfg = LlamaConfig(vocab_size=60, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                      num_key_value_heads=2, intermediate_size=64, num_labels=3, pad_token_id=0)
    return _rescale(LlamaForSequenceClassification(cfg).double())


#: a small random model per class name of ``lrp_utils.adapters._REGISTRY`` (every architecture)
REGISTERED_MODELS = {
    "TinyTransformer": lambda: tiny(task="causal", position="rotary", n_kv_heads=2),
    "BertForSequenceClassification": lambda: hf_model("bert"),
    "GPT2LMHeadModel": lambda: hf_model("gpt2"),
    "GPT2ForSequenceClassification": lambda: _decoder_classifier("gpt2"),
    "LlamaForCausalLM": lambda: hf_model("llama"),
    "LlamaForSequenceClassification": lambda: _decoder_classifier("llama"),
}


@pytest.fixture(params=HF_KINDS)
def hf(request):
    return hf_model(request.param)


@pytest.fixture
def left_padded_ids():
    """A batch of 3 sequences of length 9, the last two left-padded (mask 0)."""
    ids = torch.randint(1, 50, (3, 9))
    mask = torch.ones_like(ids)
    mask[1, :3] = 0
    mask[2, :5] = 0
    return ids, mask


@pytest.fixture
def padded_ids():
    """A batch of 3 sequences of length 9, the last two right-padded (mask 0)."""
    ids = torch.randint(1, 50, (3, 9))
    mask = torch.ones_like(ids)
    mask[1, 6:] = 0
    mask[2, 4:] = 0
    return ids, mask
