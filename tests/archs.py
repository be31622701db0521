"""Small random float64 models of every supported architecture, for the tests that must hold on
all of them ("every architecture" tests parametrise over :data:`ARCHS`).

Each builder returns a model with O(1) random weights (transformers' default init, std 0.02, makes
attention nearly uniform and the methods barely differ) and pad / eos ids set where the class
needs them.  Add one entry per new architecture; the registry test checks that every class in
``lrp_utils.adapters.supported()`` has one.
"""
from __future__ import annotations

import torch
import transformers as T
from transformers import (BertConfig, BertForSequenceClassification, GPT2Config, GPT2ForSequenceClassification,
                          GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM, LlamaForSequenceClassification)

from lrp_utils.models import TinyConfig, TinyTransformer
from tolerances import HF_F32_SOFTMAX_REL, SAME_FUNCTION_F64

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


#: shared sizes of the rotary decoders (2 layers, hidden 32, 4 query heads over 2 key/value heads)
DECODER = dict(vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
               intermediate_size=64, bos_token_id=0, eos_token_id=0, pad_token_id=0, num_labels=3)
#: shared sizes of the encoders
ENCODER = dict(vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
               num_labels=3, max_position_embeddings=64, pad_token_id=0)


def _decoder(cls, config, **kw):
    """A rotary decoder of class ``cls`` from ``config(**DECODER, **kw)``."""
    return cls(config(**DECODER, **kw))


# Sliding windows of 3-4 tokens (on 9-token test inputs) and soft-caps of 5-8 (scores and logits of
# O(1) random weights reach them, tanh is far from linear there) make windows and caps act in every test.
_NEW = {
    "mistral": lambda: _decoder(T.MistralForCausalLM, T.MistralConfig, sliding_window=3),
    "qwen2": lambda: _decoder(T.Qwen2ForCausalLM, T.Qwen2Config, use_sliding_window=True, sliding_window=3,
                              max_window_layers=1),
    "qwen2-cls": lambda: _decoder(T.Qwen2ForSequenceClassification, T.Qwen2Config),
    "qwen3": lambda: _decoder(T.Qwen3ForCausalLM, T.Qwen3Config, head_dim=8),
    "gemma2": lambda: _decoder(T.Gemma2ForCausalLM, T.Gemma2Config, head_dim=8, query_pre_attn_scalar=8,
                               sliding_window=3, attn_logit_softcapping=5.0, final_logit_softcapping=8.0),
    "gemma3": lambda: _decoder(T.Gemma3ForCausalLM, T.Gemma3TextConfig, head_dim=8, query_pre_attn_scalar=8,
                               sliding_window=3, final_logit_softcapping=8.0,
                               layer_types=["sliding_attention", "full_attention"]),
    "phi3": lambda: _decoder(T.Phi3ForCausalLM, T.Phi3Config, partial_rotary_factor=0.5, sliding_window=4),
    "olmo2": lambda: _decoder(T.Olmo2ForCausalLM, T.Olmo2Config),
    "gpt_neox": lambda: T.GPTNeoXForCausalLM(T.GPTNeoXConfig(
        vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
        rotary_pct=0.5, use_parallel_residual=True, bos_token_id=0, eos_token_id=0, pad_token_id=0)),
    "roberta": lambda: T.RobertaForSequenceClassification(T.RobertaConfig(**ENCODER)),
    "electra": lambda: T.ElectraForSequenceClassification(T.ElectraConfig(**ENCODER, embedding_size=16)),
    "distilbert": lambda: T.DistilBertForSequenceClassification(T.DistilBertConfig(
        vocab_size=VOCAB, dim=32, n_layers=2, n_heads=4, hidden_dim=64, num_labels=3, max_position_embeddings=64,
        pad_token_id=0)),
}

#: architecture name -> builder of a small random float64 model (eval mode)
ARCHS = {
    "bert": _bert,
    "gpt2": _gpt2,
    "gpt2-cls": lambda: _gpt2(GPT2ForSequenceClassification),
    "llama": _llama,
    "llama-cls": lambda: _llama(LlamaForSequenceClassification),
    **_NEW,
}

#: vision models (pixel input; their own tests in test_vision.py)
VISION_ARCHS = {
    "vit": lambda: T.ViTForImageClassification(T.ViTConfig(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64, image_size=16,
        patch_size=4, num_channels=3, num_labels=3)),
}


def same_function_tol(name: str) -> float:
    """Tolerance of "lrp_utils' attention computes the model's function" for architecture ``name``
    (relative): float64 rounding, except where Hugging Face's own attention runs in float32."""
    return HF_F32_SOFTMAX_REL if name in ("gemma2",) else SAME_FUNCTION_F64


def arch_model(name: str, bias: bool = True):
    """The small random float64 model of architecture ``name`` (see :data:`ARCHS` and
    :data:`VISION_ARCHS`); ``bias=False``: every bias (linear, LayerNorm, convolution) set to 0,
    the bias-free variant on which CP-LRP conserves exactly."""
    model = rescale({**ARCHS, **VISION_ARCHS}[name]().double())
    if not bias:
        with torch.no_grad():
            for pname, p in model.named_parameters():
                if pname.endswith("bias"):
                    p.zero_()
    return model


def tiny(std=0.5, seed=0, **kwargs) -> TinyTransformer:
    """A float64 TinyTransformer with N(0, std) weights (seeded)."""
    cfg = dict(vocab_size=50, d_model=16, n_layers=2, n_heads=4, d_ff=32)
    cfg.update(kwargs)
    return TinyTransformer(TinyConfig(**cfg)).double().reset_parameters(std, seed=seed).eval()
