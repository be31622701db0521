"""Cost of one explanation relative to a plain forward + backward, in the same run.

    python benchmarks/bench_explain.py [--quick] [--out benchmarks/results_explain.csv]

For a MiniLM-sized BERT and a SmolLM2-sized LLaMA (random weights: cost does not depend on the
weights) and sequence lengths 32..512, prints the median time of
* ``plain``: the Hugging Face model's own forward + ``autograd.grad`` of the target logit to the
  input embeddings (the cheapest way to get Gradient x Input),
* ``explain(attnlrp)`` and ``explain(cp-lrp)`` (which also return every layer's relevance),
and the ratios, plus the peak memory of one call (increase of the resident-set high-water mark,
each measured in a fresh process) for plain and attnlrp, and their ratio.  Timing is interleaved (plain, attnlrp, cp-lrp in turn, for several rounds) and the
ratios are medians of per-round ratios.  Goal: attnlrp / plain <= 1.15.

``--device cuda --dtype bfloat16`` (or ``float16``) runs the same table on a GPU, with the peak of
allocated device memory instead of the resident set; ``finite`` says whether every relevance of
the attnlrp explanation is finite (the half-precision check of issue 10).

``plain`` for the causal LM computes only the explained position's logits (``logits_to_keep=1``),
as ``explain`` does; the full ``[S, vocab]`` logits would make the baseline slower, not fairer.
"""
from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import pandas as pd
import torch

sys.path.insert(0, str(Path(__file__).parent))
from common import minilm_sized, smollm2_sized  # noqa: E402

from lrp_utils import explain  # noqa: E402
from lrp_utils.profiling import paired_ratio, paired_times, peak_rss_mb, rss_increase_mb  # noqa: E402


def plain(model, ids):
    emb = model.get_input_embeddings()(ids).detach().requires_grad_()
    kw = {"logits_to_keep": 1} if "CausalLM" in type(model).__name__ else {}  # only the explained position
    out = model(inputs_embeds=emb, **kw).logits
    logit = out[:, -1] if out.dim() == 3 else out
    g = torch.autograd.grad(logit.max(-1).values.sum(), emb)[0]
    if g.is_cuda:
        torch.cuda.synchronize()  # explain() returns CPU tensors, so it waits for the device too


MODELS = {"MiniLM-sized BERT": minilm_sized, "SmolLM2-sized LLaMA": smollm2_sized}


def _one_call(name: str, seq: int, kind: str, dtype: str):
    """``--mem-child``: build the model, then one call of ``kind`` on ``seq`` random tokens."""
    torch.manual_seed(0)
    model = MODELS[name]().to(getattr(torch, dtype))
    ids = torch.randint(0, 1000, (1, seq))
    fn = (lambda: plain(model, ids)) if kind == "plain" else (lambda: explain(model, ids, kind))
    print(rss_increase_mb(fn))


def _cuda_peak_mb(fn) -> float:
    """Peak of allocated device memory during ``fn()`` above what was allocated before (MiB)."""
    torch.cuda.synchronize()
    before = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    fn()
    torch.cuda.synchronize()
    return (torch.cuda.max_memory_allocated() - before) / 2**20


def run(quick: bool, device: str = "cpu", dtype: str = "float32") -> pd.DataFrame:
    torch.manual_seed(0)
    lengths = [32, 128] if quick else [32, 64, 128, 256, 512]
    rows = []
    for name, build in MODELS.items():
        model = build().to(device=device, dtype=getattr(torch, dtype))
        for S in lengths:
            ids = torch.randint(0, 1000, (1, S), device=device)
            fns = {"plain": lambda: plain(model, ids)}
            fns.update({m: (lambda m=m: explain(model, ids, m)) for m in ("attnlrp", "cp-lrp")})
            t = paired_times(fns, budget_s=2.0 if quick else 6.0)
            if device == "cpu":
                mem_plain, mem_lrp = (peak_rss_mb(__file__, name, S, kind, dtype) for kind in ("plain", "attnlrp"))
            else:
                mem_plain, mem_lrp = _cuda_peak_mb(fns["plain"]), _cuda_peak_mb(fns["attnlrp"])
            e = explain(model, ids, "attnlrp")
            finite = bool(torch.isfinite(e.tokens).all() and all(torch.isfinite(r).all() for r in e.layers))
            med = {k: statistics.median(v) for k, v in t.items()}
            rows.append(dict(model=name, device=device, dtype=dtype, seq=S, rounds=len(t["plain"]), plain_s=med["plain"],
                             attnlrp_s=med["attnlrp"], cp_lrp_s=med["cp-lrp"],
                             attnlrp_ratio=paired_ratio(t, "attnlrp", "plain"),
                             cp_lrp_ratio=paired_ratio(t, "cp-lrp", "plain"),
                             plain_peak_mb=mem_plain, attnlrp_peak_mb=mem_lrp, peak_mem_ratio=mem_lrp / mem_plain,
                             finite=finite))
            print(pd.DataFrame(rows[-1:]).round(3).to_string(index=False, header=len(rows) == 1), flush=True)
    return pd.DataFrame(rows)


def main():
    if sys.argv[1:2] == ["--mem-child"]:
        return _one_call(sys.argv[2], int(sys.argv[3]), sys.argv[4], sys.argv[5])
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true")
    p.add_argument("--device", default="cpu", help="e.g. cuda")
    p.add_argument("--dtype", default="float32", help="float32, bfloat16 or (GPU only) float16")
    p.add_argument("--out", type=Path, default=None, help="default benchmarks/results_explain[_DEVICE_DTYPE].csv")
    a = p.parse_args()
    default = "results_explain.csv" if (a.device, a.dtype) == ("cpu", "float32") else f"results_explain_{a.device}_{a.dtype}.csv"
    out = a.out or Path(__file__).parent / default
    df = run(a.quick, a.device, a.dtype)
    print("\n" + df.round(3).to_string(index=False))
    df.round(4).to_csv(out, index=False)


if __name__ == "__main__":
    main()
