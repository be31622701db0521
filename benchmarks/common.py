"""Shared helpers of the benchmark scripts: model builders, timers, a CPU peak-memory probe."""
from __future__ import annotations

import statistics
import time

import torch
from torch.profiler import ProfilerActivity, profile
from transformers import BertConfig, BertForSequenceClassification, LlamaConfig, LlamaForCausalLM


def minilm_sized():
    """Random-weight BERT with MiniLM-L6's shape (6 layers, hidden 384, 12 heads)."""
    cfg = BertConfig(vocab_size=30522, hidden_size=384, num_hidden_layers=6, num_attention_heads=12,
                     intermediate_size=1536, max_position_embeddings=512, num_labels=2)
    return BertForSequenceClassification(cfg).eval()


def smollm2_sized():
    """Random-weight LLaMA with SmolLM2-135M's shape (30 layers, hidden 576, 9/3 heads)."""
    cfg = LlamaConfig(vocab_size=49152, hidden_size=576, num_hidden_layers=30, num_attention_heads=9,
                      num_key_value_heads=3, intermediate_size=1536, max_position_embeddings=2048,
                      tie_word_embeddings=True)
    return LlamaForCausalLM(cfg).eval()


def timeit(fn, reps: int = 3, warmup: int = 1) -> float:
    """Median wall time of ``fn()`` in seconds."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def peak_memory(fn) -> int:
    """Peak of the running sum of CPU tensor allocations (bytes) while ``fn()`` runs."""
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    running = peak = 0
    for e in sorted(prof.events(), key=lambda e: e.time_range.start):
        running += e.cpu_memory_usage if not e.cpu_children else 0
        peak = max(peak, running)
    return peak
