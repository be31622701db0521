"""Shared helpers of the benchmark scripts: model builders, paired timing, a peak-memory probe."""
from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
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


def paired_times(fns: dict, budget_s: float = 3.0, min_rounds: int = 5, max_rounds: int = 40) -> dict:
    """Interleaved timing of several callables: in every round each runs once, in turn, so slow
    drifts of the machine hit all of them alike.  Returns ``{name: [seconds per round]}``; the
    number of rounds fills about ``budget_s`` (within ``min_rounds .. max_rounds``)."""
    for fn in fns.values():  # warm-up (allocator, thread pool, first-call caches)
        fn()
    t0 = time.perf_counter()
    for fn in fns.values():
        fn()
    per_round = time.perf_counter() - t0
    rounds = int(min(max_rounds, max(min_rounds, budget_s / max(per_round, 1e-9))))
    out = {name: [] for name in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            t = time.perf_counter()
            fn()
            out[name].append(time.perf_counter() - t)
    return out


def paired_ratio(times: dict, name: str, base: str) -> float:
    """Median over rounds of ``time[name] / time[base]`` (paired: same round, same machine state)."""
    return statistics.median(a / b for a, b in zip(times[name], times[base]))


def peak_rss_mb(script: str, *args) -> float:
    """Peak resident-memory increase (MiB) of one call, measured in a fresh process:
    ``python script --mem-child *args`` builds its model and prints :func:`rss_increase_mb` of the
    call.  The child runs with a fixed glibc mmap threshold, so every large tensor is its own
    mapping, given back to the system when freed: the resident set then follows the live tensors."""
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536"}
    out = subprocess.run([sys.executable, script, "--mem-child", *map(str, args)], check=True,
                         capture_output=True, text=True, env=env).stdout
    return float(out.strip().splitlines()[-1])


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status (Linux only)")


def rss_increase_mb(fn) -> float:
    """Peak of this process's resident set while ``fn()`` runs, minus the resident set before (MiB).
    Resets the kernel's high-water mark first (``/proc/self/clear_refs``, Linux)."""
    before = _status_kib("VmRSS")
    Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM to the current RSS
    fn()
    return (_status_kib("VmHWM") - before) / 1024
