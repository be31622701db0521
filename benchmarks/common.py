"""Shared model builders of the benchmark scripts (timing and memory: :mod:`lrp_utils.profiling`)."""
from __future__ import annotations

from transformers import BertConfig, BertForSequenceClassification, LlamaConfig, LlamaForCausalLM


def minilm_sized():
    """Random-weight BERT with MiniLM-L6's shape (6 layers, hidden 384, 12 heads)."""
    cfg = BertConfig(vocab_size=30522, hidden_size=384, num_hidden_layers=6, num_attention_heads=12,
                     intermediate_size=1536, max_position_embeddings=512, num_labels=2)
    return BertForSequenceClassification(cfg).eval()


def smollm2_sized(n_layers: int = 30):
    """Random-weight LLaMA with SmolLM2-135M's shape (30 layers, hidden 576, 9/3 heads; ``n_layers``
    blocks)."""
    cfg = LlamaConfig(vocab_size=49152, hidden_size=576, num_hidden_layers=n_layers, num_attention_heads=9,
                      num_key_value_heads=3, intermediate_size=1536, max_position_embeddings=2048,
                      tie_word_embeddings=True)
    return LlamaForCausalLM(cfg).eval()
