"""Small random float64 models of every supported architecture, for the tests that must hold on
all of them ("every architecture" tests parametrise over :data:`ARCHS`).

Each builder returns a model with O(1) random weights (transformers' default init, std 0.02, makes
attention nearly uniform and the methods barely differ) and pad / eos ids set where the class
needs them.  Add one entry per new architecture; the registry test checks that every class in
``lrp_utils.adapters.supported()`` has one.
"""
from __future__ import annotations

import torch
from transformers import (BertConfig, BertForSequenceClassification, GPT2Config, GPT2ForSequenceClassification,
                          GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM, LlamaForSequenceClassification)

from lrp_utils.models import TinyConfig, TinyTransformer

VOCAB = 60


def rescale(model, std=0.4, seed=1):
    """O(1) random weights for HF models (norm weights near 1)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name.lower() and name.endswith("weight"):
                p.copy_(1 + 0.1 * torch.randn(p.shape, generator=gen, dtype=p.dtype))
            else:
                p.copy_(std * torch.randn(p.shape, generator=gen, dtype=p.dtype))
    return model.eval()


def _bert():
    cfg = BertConfig(vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                     intermediate_size=64, num_labels=3, max_position_embeddings=64)
    return BertForSequenceClassification(cfg)


def _gpt2(cls=GPT2LMHeadModel):
    cfg = GPT2Config(vocab_size=VOCAB, n_embd=32, n_layer=2, n_head=4, n_positions=64, bos_token_id=0,
                     eos_token_id=0, pad_token_id=0, num_labels=3)
    return cls(cfg)


def _llama(cls=LlamaForCausalLM):
    cfg = LlamaConfig(vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                      num_key_value_heads=2, intermediate_size=64, bos_token_id=0, eos_token_id=0,
                      pad_token_id=0, num_labels=3)
    return cls(cfg)


#: architecture name -> builder of a small random float64 model (eval mode)
ARCHS = {
    "bert": _bert,
    "gpt2": _gpt2,
    "gpt2-cls": lambda: _gpt2(GPT2ForSequenceClassification),
    "llama": _llama,
    "llama-cls": lambda: _llama(LlamaForSequenceClassification),
}


def arch_model(name: str):
    """The small random float64 model of architecture ``name`` (see :data:`ARCHS`)."""
    return rescale(ARCHS[name]().double())


def tiny(std=0.5, seed=0, **kwargs) -> TinyTransformer:
    """A float64 TinyTransformer with N(0, std) weights (seeded)."""
    cfg = dict(vocab_size=50, d_model=16, n_layers=2, n_heads=4, d_ff=32)
    cfg.update(kwargs)
    return TinyTransformer(TinyConfig(**cfg)).double().reset_parameters(std, seed=seed).eval()
